"""What every backend's trainer shares: the task, its batches, the recipe, and the history.

A :class:`Task` is a head (``sequence_classification`` or ``masked_lm``) with the token rows
to train and validate on; :class:`Recipe` the optimisation settings (AdamW, linear warmup then
cosine decay, gradient clipping), identical in Keras, PyTorch and Flax. Each backend module
(``train_keras``, ``train_torch``, ``train_flax``) exposes ``train(task, recipe, init, out)``.

Example:
    >>> recipe = Recipe(epochs=2, batch_size=4)
    >>> recipe.total_steps(steps_per_epoch=10), recipe.warmup_steps(20)
    (20, 2)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from roformer_core.config import RoFormerConfig
from roformer_core.errors import InputError
from roformer_core.tokenizer import RoFormerTokenizer
from roformer_demo import text

HEADS = ("sequence_classification", "masked_lm")


@dataclass
class Recipe:
    """Optimisation settings, the same for every backend.

    Example:
        >>> Recipe(epochs=3, max_steps=50).total_steps(steps_per_epoch=40)
        50
    """

    epochs: int = 1
    #: stop after this many optimizer steps in all (None: run every epoch to its end)
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run."""
        total = self.epochs * steps_per_epoch
        return max(1, min(total, self.max_steps) if self.max_steps else total)

    def warmup_steps(self, total: int) -> int:
        """Steps of the linear warmup."""
        return int(math.ceil(self.warmup_ratio * total))

    def learning_rate_at(self, step: int, total: int) -> float:
        """Linear warmup from 0, then cosine decay to 0 (what the Keras and torch schedules compute).

        Example:
            >>> r = Recipe(learning_rate=1.0, warmup_ratio=0.5)
            >>> [round(r.learning_rate_at(s, 4), 2) for s in range(5)]
            [0.0, 0.5, 1.0, 0.5, 0.0]
        """
        warmup = self.warmup_steps(total)
        if step < warmup:
            return self.learning_rate * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Task:
    """A head and its data: token rows (``[CLS] ... [SEP]`` arrays) and, to classify, labels.

    Example:
        >>> from roformer_core import RoFormerTokenizer
        >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好"])
        >>> cfg = RoFormerConfig(vocab_size=6, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                      intermediate_size=16)
        >>> rows = [np.array([2, 5, 3])] * 5
        >>> task = Task("sequence_classification", cfg, tok, rows, rows[:2], [1, 0, 1, 0, 1], [1, 0])
        >>> task.steps_per_epoch(2), next(task.val_batches(2))["labels"].tolist()
        (3, [1, 0])
    """

    head: str
    config: RoFormerConfig
    tokenizer: RoFormerTokenizer
    train_rows: list[np.ndarray]
    val_rows: list[np.ndarray]
    train_labels: list[int] | None = None
    val_labels: list[int] | None = None

    def __post_init__(self):
        if self.head not in HEADS:
            raise InputError(f"the demo trains {' or '.join(HEADS)}, not {self.head!r}")
        if self.head == "sequence_classification" and (self.train_labels is None or self.val_labels is None):
            raise InputError("a classification task needs train and validation labels")
        if not self.train_rows or not self.val_rows:
            raise InputError("the training and the validation data must not be empty")

    def steps_per_epoch(self, batch_size: int, drop_remainder: bool = False) -> int:
        """Batches in one pass over the training rows."""
        n = len(self.train_rows)
        return max(1, n // batch_size) if drop_remainder else -(-n // batch_size)

    def train_batches(self, batch_size: int, rng: np.random.Generator, drop_remainder: bool = False,
                      length: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """One shuffled pass (fresh masks for the masked LM)."""
        return self._batches(self.train_rows, self.train_labels, batch_size, rng, drop_remainder, length)

    def val_batches(self, batch_size: int, length: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """The validation rows in length order; masked-LM masks are the same on every call (seeded)."""
        return self._batches(self.val_rows, self.val_labels, batch_size, None, False, length)

    def _batches(self, rows, labels, batch_size, rng, drop_remainder, length):
        pad_id = self.tokenizer.pad_token_id
        if self.head == "sequence_classification":
            return text.classification_batches(rows, labels, batch_size, pad_id, rng, length, drop_remainder)
        if rng is None:  # fixed validation masks, so the validation loss compares across epochs
            return self._fixed_mlm_batches(rows, batch_size, length)
        return text.mlm_batches(rows, self.tokenizer, batch_size, rng, drop_remainder, length)

    def _fixed_mlm_batches(self, rows, batch_size, length):
        rng = np.random.default_rng(1234)
        for index in text.length_batches([len(r) for r in rows], batch_size):
            yield text.mask_tokens(text.pad([rows[i] for i in index], self.tokenizer.pad_token_id, length),
                                   self.tokenizer, rng)


@dataclass
class History:
    """Per epoch (or per logging point): training loss, validation loss and validation accuracy.

    Example:
        >>> History("keras", "masked_lm", epochs=[{"val_loss": 7.4}]).last("val_loss")
        7.4
    """

    backend: str
    head: str
    steps: int = 0
    seconds: float = 0.0
    epochs: list[dict[str, float]] = field(default_factory=list)
    #: the training loss of every step (backends that log per step)
    losses: list[float] = field(default_factory=list)

    def last(self, key: str) -> float | None:
        """The latest value of ``key`` (None if never logged)."""
        for row in reversed(self.epochs):
            if key in row:
                return row[key]
        return None

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


class Accuracy:
    """Running accuracy over (logits, labels) batches; labels of -100 (unpredicted MLM tokens) do not
    count. Only counts are kept: a masked LM's logits are far too big to keep for a whole epoch.

    Example:
        >>> acc = Accuracy()
        >>> acc.add(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([1, -100]))
        >>> acc.value
        1.0
    """

    def __init__(self):
        self.right = self.total = 0

    def add(self, logits: np.ndarray, labels: np.ndarray) -> None:
        """Count one batch."""
        keep = labels != -100
        self.right += int((np.asarray(logits).argmax(-1)[keep] == labels[keep]).sum())
        self.total += int(keep.sum())

    @property
    def value(self) -> float:
        """The accuracy so far (0 before any labelled token)."""
        return self.right / self.total if self.total else 0.0
