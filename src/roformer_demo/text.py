"""Text to model inputs: the vocabulary, batch tokenization, length-bucketed batches, MLM masking.

Every backend trains and predicts from the same numpy batches built here, so the three
backends see identical inputs.

Example:
    >>> tok = build_tokenizer(["今天天气很好", "今天天气不好"], vocab_size=40, min_frequency=1)
    >>> ids = encode(tok, ["今天天气很好"], max_length=16, progress=False)
    >>> tok.convert_ids_to_tokens(ids[0].tolist())
    ['[CLS]', '今天天气', '很', '好', '[SEP]']
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from roformer_core.errors import InputError
from roformer_core.tokenizer import RoFormerTokenizer
from roformer_core.vocab_builder import build_vocab

#: Batches are padded to a multiple of this many tokens: few distinct shapes to trace or compile.
PAD_MULTIPLE = 16


def build_tokenizer(texts: Sequence[str], vocab_size: int, min_frequency: int = 2,
                    max_length: int | None = None) -> RoFormerTokenizer:
    """A :class:`RoFormerTokenizer` over a vocabulary built from ``texts`` by the project's builder.

    Example:
        >>> tok = build_tokenizer(["好评", "好评", "差评"], vocab_size=20, min_frequency=2)
        >>> tok.tokenize("好评差评")
        ['好评', '差', '评']
    """
    vocab = build_vocab(texts, vocab_size, min_frequency=min_frequency)
    return RoFormerTokenizer(vocab=vocab, **({"model_max_length": max_length} if max_length else {}))


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool | None = None):
    """A tqdm bar on stderr when it is a terminal (tqdm comes with the ``data`` extra), else None.

    Example:
        >>> progress_bar(10, "tokenizing", enabled=False) is None
        True
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def encode(tokenizer: RoFormerTokenizer, texts: Sequence[str], max_length: int, desc: str = "tokenizing",
           chunk: int = 2048, progress: bool | None = None) -> list[np.ndarray]:
    """``[CLS] ids [SEP]`` of every text, truncated to ``max_length``, as int32 arrays.

    Texts go to the tokenizer's batch path a chunk at a time so the bar can move.

    Example: see the module docstring.
    """
    if max_length < 3:
        raise InputError(f"max_length must be at least 3 ([CLS] a token [SEP]), got {max_length}")
    bar = progress_bar(len(texts), desc, "texts", progress)
    out: list[np.ndarray] = []
    try:
        for start in range(0, len(texts), chunk):
            part = list(texts[start:start + chunk])
            rows = tokenizer(part, truncation=True, max_length=max_length, return_token_type_ids=False,
                             return_attention_mask=False)["input_ids"]
            out.extend(np.asarray(r, dtype=np.int32) for r in rows)
            if bar is not None:
                bar.update(len(part))
    finally:
        if bar is not None:
            bar.close()
    return out


def length_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator | None = None,
                   drop_remainder: bool = False) -> list[np.ndarray]:
    """Index batches of similar length (less padding), in a random order when ``rng`` is given.

    With ``rng`` the examples are shuffled, cut into pools of 50 batches, each pool sorted
    by length, so batches differ between epochs but stay tight. Without it the order is by
    length (for evaluation). ``drop_remainder`` drops a last batch smaller than ``batch_size``.

    Example:
        >>> [b.tolist() for b in length_batches([5, 1, 4, 2], 2)]
        [[1, 3], [2, 0]]
    """
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
    else:
        order = rng.permutation(len(lengths))
        pool = batch_size * 50
        order = np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")]
                                for chunk in np.split(order, range(pool, len(order), pool))]) if len(order) else order
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if drop_remainder and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if rng is not None:
        rng.shuffle(batches)
    return batches


def round_length(longest: int) -> int:
    """The padded length of a batch whose longest row has ``longest`` tokens (a multiple of 16).

    Example:
        >>> round_length(17), round_length(32)
        (32, 32)
    """
    return -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE


def power_of_two_length(longest: int) -> int:
    """A coarser padded length, the next power of two from 16: fewer shapes for XLA to compile.

    Example:
        >>> power_of_two_length(5), power_of_two_length(33)
        (16, 64)
    """
    return max(PAD_MULTIPLE, 1 << (max(longest, 1) - 1).bit_length())


def pad(rows: Sequence[np.ndarray], pad_id: int, length: int | Callable[[int], int] | None = None
        ) -> dict[str, np.ndarray]:
    """``input_ids`` and ``attention_mask`` [batch, length]; ``length`` is a number, or a function
    of the longest row (default :func:`round_length`). Longer rows are cut.

    Example:
        >>> pad([np.array([2, 7, 3]), np.array([2, 3])], 0, length=4)["input_ids"].tolist()
        [[2, 7, 3, 0], [2, 3, 0, 0]]
    """
    if length is None or callable(length):
        length = (length or round_length)(max(len(r) for r in rows))
    ids = np.full((len(rows), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(rows), length), dtype=np.int32)
    for i, r in enumerate(rows):
        r = r[:length]
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def classification_batches(rows: Sequence[np.ndarray], labels: Sequence[int], batch_size: int, pad_id: int,
                           rng: np.random.Generator | None = None, length: int | None = None,
                           drop_remainder: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Padded batches ``{"input_ids", "attention_mask", "labels"}`` (see :func:`length_batches`).

    Example:
        >>> [b["labels"].tolist() for b in classification_batches([np.array([2, 3])] * 3, [1, 0, 1], 2, 0)]
        [[1, 0], [1]]
    """
    labels = np.asarray(labels, dtype=np.int32)
    for index in length_batches([len(r) for r in rows], batch_size, rng, drop_remainder):
        batch = pad([rows[i] for i in index], pad_id, length)
        batch["labels"] = labels[index]
        yield batch


def mask_tokens(batch: dict[str, np.ndarray], tokenizer: RoFormerTokenizer, rng: np.random.Generator,
                probability: float = 0.15) -> dict[str, np.ndarray]:
    """BERT's masking: 15% of the real tokens are predicted; of those 80% become [MASK], 10% a
    random token, 10% stay. ``labels`` holds the original id there and -100 elsewhere;
    ``prediction_mask`` is True there (backends that can compute vocabulary logits only at
    those positions use it: most of the cost of a masked LM is its vocabulary projection).

    Example:
        >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好", "天"])
        >>> b = mask_tokens(pad([np.array([2, 5, 6, 5, 3])], 0), tok, np.random.default_rng(0), 0.5)
        >>> int((b["labels"] != -100).sum()) >= 1
        True
    """
    ids = batch["input_ids"]
    special = np.isin(ids, tokenizer.all_special_ids) | (batch["attention_mask"] == 0)
    chosen = (rng.random(ids.shape) < probability) & ~special
    # At least one prediction per row that has a real token: a row without any adds nothing.
    for row in np.flatnonzero(~chosen.any(axis=1) & (~special).any(axis=1)):
        chosen[row, rng.choice(np.flatnonzero(~special[row]))] = True
    labels = np.where(chosen, ids, -100).astype(np.int32)
    draw = rng.random(ids.shape)
    inputs = ids.copy()
    inputs[chosen & (draw < 0.8)] = tokenizer.mask_token_id
    randomised = chosen & (draw >= 0.8) & (draw < 0.9)
    first_plain = max(tokenizer.all_special_ids) + 1  # never put a special token in by chance
    inputs[randomised] = rng.integers(first_plain, tokenizer.vocab_size, size=int(randomised.sum()))
    return {"input_ids": inputs, "attention_mask": batch["attention_mask"], "labels": labels,
            "prediction_mask": chosen}


def mlm_batches(rows: Sequence[np.ndarray], tokenizer: RoFormerTokenizer, batch_size: int,
                rng: np.random.Generator, drop_remainder: bool = False, length: int | None = None
                ) -> Iterator[dict[str, np.ndarray]]:
    """Masked-LM batches of ``rows`` (fresh masks on every pass); see :func:`mask_tokens`.

    Example:
        >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好"])
        >>> b = next(mlm_batches([np.array([2, 5, 5, 3])], tok, 4, np.random.default_rng(0)))
        >>> sorted(b)
        ['attention_mask', 'input_ids', 'labels', 'prediction_mask']
    """
    for index in length_batches([len(r) for r in rows], batch_size, rng, drop_remainder):
        yield mask_tokens(pad([rows[i] for i in index], tokenizer.pad_token_id, length), tokenizer, rng)



def fixed_batches(rows: Sequence[np.ndarray], batch_size: int, pad_id: int, length: int
                  ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """``(indices, batch)`` in the given order, every batch exactly ``[batch_size, length]`` (the last
    one filled up with copies of its first row, whose outputs are dropped): one shape, so a compiled
    function is compiled once.

    Example:
        >>> [(i.tolist(), b["input_ids"].shape) for i, b in fixed_batches([np.array([2, 3])] * 3, 2, 0, 4)]
        [([0, 1], (2, 4)), ([2], (2, 4))]
    """
    for start in range(0, len(rows), batch_size):
        index = np.arange(start, min(start + batch_size, len(rows)))
        part = [rows[i] for i in index]
        part += [part[0]] * (batch_size - len(part))
        yield index, pad(part, pad_id, length)
