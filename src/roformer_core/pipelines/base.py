"""What every pipeline shares: the model and tokenizer checks, batching by length, the forward pass.

A pipeline holds a model of one backend, a :class:`~roformer_core.tokenizer.RoFormerTokenizer`
and the :class:`~roformer_core.backends.Backend` that runs the model on numpy arrays, so each
task is written once, in numpy, for PyTorch, Keras and Flax alike. Texts are encoded, sorted
by length, cut into batches of ``batch_size`` padded to the longest text of the batch, run,
and put back in their order.

Example:
    >>> from roformer_core import RoFormerConfig, RoFormerTokenizer
    >>> from roformer_core.backends import get_backend
    >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好", "天"])
    >>> cfg = RoFormerConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                      intermediate_size=16)
    >>> backend = get_backend("torch")
    >>> pipe = Pipeline(backend.from_config("model", cfg), tok, backend, batch_size=2)
    >>> rows = [{"input_ids": [2, 5, 3]}, {"input_ids": [2, 5, 6, 6, 3]}, {"input_ids": [2, 3]}]
    >>> [(index, batch["input_ids"].shape) for index, batch in pipe.batches(rows)]
    [([1, 0], (2, 5)), ([2], (1, 2))]
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from roformer_core.errors import InputError
from roformer_core.heads import HEAD_TABLE

#: tokenizer ``model_max_length`` values at or above this mean "no limit" (the reference writes 1e30)
NO_LIMIT = int(1e20)


def check_tokenizer(tokenizer, config) -> None:
    """One clear error when ``tokenizer`` would give ids the model has no embedding for.

    Example:
        >>> from roformer_core import RoFormerConfig, RoFormerTokenizer
        >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好"])
        >>> check_tokenizer(tok, RoFormerConfig(vocab_size=6))
        >>> check_tokenizer(tok, RoFormerConfig(vocab_size=5))
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: the tokenizer gives ids up to 5, but the model's vocab_size is 5: they do not belong together (give the tokenizer saved with this model)
    """
    from roformer_core.tokenizer import RoFormerTokenizer

    if not isinstance(tokenizer, RoFormerTokenizer):
        raise InputError(f"tokenizer must be a roformer_core.RoFormerTokenizer (or a folder or hub id to load one), "
                         f"got {type(tokenizer).__name__}")
    highest = max(tokenizer.get_vocab().values())
    if highest >= config.vocab_size:
        raise InputError(f"the tokenizer gives ids up to {highest}, but the model's vocab_size is {config.vocab_size}: "
                         f"they do not belong together (give the tokenizer saved with this model)")


def as_texts(inputs: Any, what: str = "text") -> tuple[list[str], bool]:
    """``(texts, single)``: one string or a list of them, each non-empty, else one clear error.

    Example:
        >>> as_texts("好"), as_texts(["好", "天"])
        ((['好'], True), (['好', '天'], False))
        >>> as_texts(["好", "  "])
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: text 1 is empty
    """
    if isinstance(inputs, str):
        texts, single = [inputs], True
    elif isinstance(inputs, (list, tuple)):
        texts, single = list(inputs), False
    else:
        raise InputError(f"give a {what} (a string) or a list of them, got {type(inputs).__name__}")
    if not texts:
        raise InputError(f"no {what} given (an empty list)")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{what} {i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise InputError(f"the {what} is empty" if len(texts) == 1 else f"{what} {i} is empty")
    return texts, single


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, summed in float64.

    Example:
        >>> softmax(np.array([0.0, 0.0])).tolist()
        [0.5, 0.5]
    """
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class Pipeline:
    """One task over a loaded model and tokenizer; subclasses implement ``__call__``.

    ``batch_size`` texts (or windows) go through the model at a time, padded to the longest
    of them; the tokenizer is checked against the model once, and ids before every forward.

    Example: see the module docstring.
    """

    #: the task name, as ``pipeline()`` takes it
    task = ""
    #: the head the task needs (``roformer_core.heads.HEAD_TABLE``)
    head = "model"

    def __init__(self, model, tokenizer, backend, batch_size: int = 8):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.backend = backend
        self.batch_size = batch_size
        self.config = model.config
        check_tokenizer(tokenizer, self.config)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(task={self.task!r}, backend={self.backend.name!r}, "
                f"model={type(self.model).__name__}, batch_size={self.batch_size})")

    # -- shared steps ----------------------------------------------------------------------
    @property
    def max_length(self) -> int | None:
        """The tokenizer's ``model_max_length`` when it sets one (texts are cut there), else None."""
        limit = self.tokenizer.model_max_length
        return limit if limit < NO_LIMIT else None

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None, **options) -> list[dict]:
        """Token rows of ``texts`` (and ``pairs``), cut at :attr:`max_length`; lists, not padded."""
        limit = self.max_length
        enc = self.tokenizer(list(texts), None if pairs is None else list(pairs),
                             truncation=limit is not None, max_length=limit, **options)
        return [{k: enc[k][i] for k in enc} for i in range(len(texts))]

    def batches(self, rows: Sequence[Mapping[str, Sequence[int]]]) -> Iterator[tuple[list[int], dict]]:
        """``(indices, batch)`` over ``rows`` sorted by length (longest first), ``batch_size`` at a time,
        each padded to its longest row: ``input_ids``, ``attention_mask``, ``token_type_ids`` as numpy."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]), reverse=True)
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            length = max(len(rows[i]["input_ids"]) for i in index)
            ids = np.full((len(index), length), pad, np.int64)
            mask = np.zeros((len(index), length), np.int64)
            types = np.zeros((len(index), length), np.int64)
            for r, i in enumerate(index):
                row = rows[i]
                n = len(row["input_ids"])
                ids[r, :n] = row["input_ids"]
                mask[r, :n] = 1
                if row.get("token_type_ids") is not None:
                    types[r, :n] = row["token_type_ids"]
            yield index, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def forward(self, batch: dict, fields: tuple[str, ...] = ("logits",)) -> dict[str, np.ndarray]:
        """The model's ``fields`` (float32 numpy) for a padded ``batch``; ids checked first, since a
        compiled forward pass would not notice an id outside the embedding table."""
        ids = batch["input_ids"]
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise InputError(f"input ids must lie in [0, {self.config.vocab_size}) (the model's vocab_size); "
                             f"got {int(ids.min())}..{int(ids.max())}")
        types = batch.get("token_type_ids")
        if types is not None and types.size and types.max() >= self.config.type_vocab_size:
            raise InputError(f"the model has type_vocab_size {self.config.type_vocab_size}: it cannot take text pairs")
        if self.model.head == self.head or self.head != "model":
            return self.backend.infer(self.model, batch, fields)
        # a head model serving feature extraction: its encoder's output is the last hidden state
        out = self.backend.run(self.model, batch, output_hidden_states=True)
        return {"last_hidden_state": out["hidden_states"][-1]}

    def __call__(self, inputs, **options):
        raise NotImplementedError


def head_label(head: str) -> str:
    """The class name of a head, for messages.

    Example:
        >>> head_label("masked_lm")
        'RoFormerForMaskedLM'
    """
    return HEAD_TABLE[head].class_name


__all__ = ["Pipeline", "check_tokenizer", "as_texts", "softmax", "head_label", "NO_LIMIT"]
