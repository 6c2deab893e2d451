"""Serving: classify sentences and fill in [MASK] tokens with any backend, from text, a file or stdin.

Example:
    >>> runner = load_runner("keras", "runs/demo/classifier", "sequence_classification")  # doctest: +SKIP
    >>> tok = RoFormerTokenizer.from_pretrained("runs/demo/classifier")  # doctest: +SKIP
    >>> classify(runner, tok, ["质量很好，推荐购买"]).round(3)  # doctest: +SKIP
    array([[0.041, 0.959]], dtype=float32)
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from roformer_core.errors import CheckpointError, InputError
from roformer_core.tokenizer import RoFormerTokenizer
from roformer_demo import text
from roformer_demo.backends import Runner


def read_texts(texts: Sequence[str], file: str | None = None, stdin: io.TextIOBase | None = None) -> list[str]:
    """The texts to serve: the arguments, then the lines of ``file`` (``-`` is stdin), one text per
    non-blank line. With neither, stdin is read when it is not a terminal.

    Example:
        >>> read_texts(["好评", "  "], stdin=io.StringIO("差评\\n\\n还行\\n"))
        ['好评']
        >>> read_texts([], file="-", stdin=io.StringIO("差评\\n\\n还行\\n"))
        ['差评', '还行']
    """
    stdin = stdin if stdin is not None else sys.stdin
    out = [t.strip() for t in texts if t.strip()]
    source = None
    if file == "-" or (file is None and not texts and stdin is not None and not stdin.isatty()):
        source, name = stdin, "stdin"
    elif file is not None:
        try:
            source, name = open(file, encoding="utf-8"), file
        except OSError as e:
            raise InputError(f"cannot read {file}: {e.strerror or e}") from None
    if source is not None:
        try:
            lines = [line.strip() for line in source]
        except UnicodeDecodeError as e:
            raise InputError(f"{name} is not UTF-8 text: {e.reason}") from None
        finally:
            if source is not stdin:
                source.close()
        lines = [line for line in lines if line]
        if not lines:
            raise InputError(f"{name} is empty: give one text per line")
        out += lines
    if not out:
        raise InputError("no text given: pass sentences as arguments, --file PATH, or pipe them on stdin")
    return out


def check_tokenizer(tokenizer: RoFormerTokenizer, config, folder: str = "the checkpoint") -> RoFormerTokenizer:
    """``tokenizer`` if every id it can give is a row of the model's vocabulary, else one
    :class:`CheckpointError`: past the end, compiled forward passes (``jax.jit``, XLA) read
    garbage instead of failing, and the demo would print NaN probabilities.

    Example:
        >>> from roformer_core import RoFormerConfig
        >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好"])
        >>> check_tokenizer(tok, RoFormerConfig(vocab_size=6)) is tok
        True
        >>> check_tokenizer(tok, RoFormerConfig(vocab_size=5), "ckpt")
        Traceback (most recent call last):
        ...
        roformer_core.errors.CheckpointError: the tokenizer in ckpt gives token ids up to 5, but the model's vocabulary has 5 rows (vocab_size in its config.json): the tokenizer and the weights do not belong together
    """
    highest = max(tokenizer.get_vocab().values(), default=-1)
    if highest >= config.vocab_size:
        raise CheckpointError(f"the tokenizer in {folder} gives token ids up to {highest}, but the model's "
                              f"vocabulary has {config.vocab_size} rows (vocab_size in its config.json): the "
                              "tokenizer and the weights do not belong together")
    return tokenizer


def finite(values: np.ndarray, backend: str, folder: str) -> np.ndarray:
    """``values`` when every one is finite; else one :class:`CheckpointError` rather than NaN in the
    output (which is not even valid JSON).

    Example:
        >>> finite(np.array([0.5, 0.5]), "torch", "ckpt").tolist()
        [0.5, 0.5]
    """
    if not np.isfinite(values).all():
        raise CheckpointError(f"the {backend} model of {folder} gave NaN or infinite scores: its weights are "
                              "damaged or were trained into NaN")
    return values


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 for the sums, returned as float32.

    Example:
        >>> softmax(np.array([[0.0, 0.0]]))
        array([[0.5, 0.5]], dtype=float32)
    """
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def encode_rows(tokenizer: RoFormerTokenizer, texts: Sequence[str], max_length: int | None = None,
                progress: bool | None = False) -> list[np.ndarray]:
    """Token rows of ``texts``, cut at ``max_length`` (default: the tokenizer's model_max_length).

    Example:
        >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好"], model_max_length=8)
        >>> encode_rows(tok, ["好好"])[0].tolist()
        [2, 5, 5, 3]
    """
    limit = max_length or tokenizer.model_max_length
    if limit > 100_000:
        raise InputError("the tokenizer has no model_max_length: pass max_length")
    return text.encode(tokenizer, texts, limit, progress=progress)


def all_logits(runner: Runner, rows: Sequence[np.ndarray], pad_id: int, batch_size: int = 64,
               length: int | None = None) -> np.ndarray:
    """Classification logits of every row, in order; every batch has one fixed shape (one compilation),
    so each backend sees exactly the same padded batches.

    Example:
        >>> all_logits(runner, rows, pad_id=0).shape  # doctest: +SKIP
        (1736, 2)
    """
    length = length or text.round_length(max(len(r) for r in rows))
    batch_size = min(batch_size, len(rows))
    out = []
    for index, batch in text.fixed_batches(rows, batch_size, pad_id, length):
        out.append(runner.logits(batch)[:len(index)])
    return np.concatenate(out)


def classify(runner: Runner, tokenizer: RoFormerTokenizer, texts: Sequence[str], max_length: int | None = None
             ) -> np.ndarray:
    """Class probabilities [len(texts), num_labels] (example: see the module docstring)."""
    rows = encode_rows(tokenizer, texts, max_length)
    return softmax(all_logits(runner, rows, tokenizer.pad_token_id))


@dataclass
class Filled:
    """One text's fill-mask result: for each [MASK], the top (token, probability) pairs.

    Example:
        >>> Filled("今天[MASK]气很好", [[("天", 0.9), ("的", 0.1)]]).best
        '今天天气很好'
    """

    text: str
    candidates: list[list[tuple[str, float]]]

    @property
    def best(self) -> str:
        """The text with every [MASK] replaced by its most likely token."""
        out = self.text
        for options in self.candidates:
            token = options[0][0]
            out = out.replace("[MASK]", token[2:] if token.startswith("##") else token, 1)
        return out


def fill_mask(runner: Runner, tokenizer: RoFormerTokenizer, texts: Sequence[str], top_k: int = 5,
              max_length: int | None = None) -> list[Filled]:
    """The ``top_k`` tokens for every ``[MASK]`` of every text (special tokens are never proposed).

    The model computes vocabulary logits only at the masked positions (``prediction_mask``).

    Example:
        >>> runner = load_runner("keras", "runs/demo/mlm", "masked_lm")  # doctest: +SKIP
        >>> fill_mask(runner, tok, ["今天[MASK]气很好"], top_k=2)[0].candidates  # doctest: +SKIP
        [[('天', 0.41), ('的', 0.05)]]
    """
    mask_token = tokenizer.mask_token
    missing = [t for t in texts if mask_token not in t]
    if missing:
        raise InputError(f"no {mask_token} in {missing[0]!r}: write {mask_token} where a token is missing, "
                         f"e.g. 今天{mask_token}气很好")
    if top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {top_k}")
    rows = encode_rows(tokenizer, texts, max_length)
    for t, r in zip(texts, rows):
        if t.count(mask_token) != int((r == tokenizer.mask_token_id).sum()):
            raise InputError(f"{t!r} is longer than the model's {len(r)} tokens: a [MASK] was cut off")
    special = np.asarray(tokenizer.all_special_ids)
    results = []
    for row, t in zip(rows, texts):
        batch = text.pad([row], tokenizer.pad_token_id)
        logits = np.array(runner.logits(batch, prediction_mask=batch["input_ids"] == tokenizer.mask_token_id))
        logits[:, special] = -np.inf
        probs = softmax(logits)
        candidates = []
        for p in probs:
            best = np.argsort(-p, kind="stable")[:top_k]
            candidates.append([(tokenizer.convert_ids_to_tokens(int(i)), float(p[i])) for i in best])
        results.append(Filled(t, candidates))
    return results
