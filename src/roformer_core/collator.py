"""Masked-LM batches the way BERT pre-training makes them, with static shapes, numpy only.

:class:`MaskedLMCollator` turns texts or token ids into a masked batch: of the tokens that are
neither special nor padding, ``mlm_probability`` (15%) are selected; of those, ``mask_fraction``
(80%) become ``[MASK]``, ``random_fraction`` (10%) a random token (uniform over the vocabulary
without the special tokens) and the rest (10%) stay as they are. With ``whole_word_mask`` the
unit of selection is an rjieba word (the words the tokenizer cut the text into) and ``##``
WordPiece continuations: a word is selected or not as a whole, never split.

Every array has a static shape: ``[B, max_length]`` for the sequence arrays and
``[B, max_predictions]`` for the gathered ones, ``max_predictions`` (P) being
``ceil(mlm_probability * max_length)`` rounded up to a multiple of 8 (24 for 128, 80 for 512). A
model can then gather the hidden states at ``masked_positions`` and project only those onto the
vocabulary under XLA / ``jit`` / ``pmap`` without recompiling.

How many tokens a row gets: ``n * mlm_probability`` for its ``n`` eligible tokens, rounded up or
down at random so that the expectation is exact (2.55 gives 3 with probability 0.55, else 2). That
never exceeds the default P (a smaller ``max_predictions`` caps it), so nothing is cut to fit, and
the fraction selected over a corpus is 15% with far less spread than a coin per token. The
80/10/10 split is made the same way over the selected tokens of each batch. With whole words,
words are taken in a random order while they fit the row's count; the first word that does not
fit is taken with the probability that keeps the expected count exact, and the row stops. A word
that would take the row past P is skipped, so a row never holds more than P positions and no word
is ever split (words of many tokens are, as in BERT's whole-word masking, a little less likely to
be chosen than words of one).

Output (numpy): ``input_ids`` [B, S] int32 (after masking), ``attention_mask``, ``token_type_ids``,
``labels`` [B, S] int32 (the original id where a token was selected, -100 elsewhere: the
full-sequence form), ``masked_positions`` [B, P] int32 (ascending, padded with 0),
``masked_labels`` [B, P] int32 (original ids, -100 at padding) and ``masked_weights`` [B, P]
float32 (1.0 real, 0.0 padding).

Using it:

- a plain numpy loop::

      collator = MaskedLMCollator(tokenizer, max_length=128, whole_word_mask=True, seed=0)
      for i in range(0, len(texts), 32):
          batch = collator(texts[i:i + 32])

- PyTorch: ``__call__`` takes a list of examples, so it is a ``collate_fn``::

      loader = torch.utils.data.DataLoader(texts, batch_size=32, shuffle=True, collate_fn=collator)
      for batch in loader:
          batch = {k: torch.from_numpy(v) for k, v in batch.items()}
          labels = batch["labels"].long()  # torch's cross_entropy wants int64 targets

  With ``num_workers > 0`` each worker process masks with its own stream, drawn from
  ``np.random.default_rng([worker seed, worker id, seed])`` on its first batch (torch's worker
  seed changes every epoch and follows ``torch.manual_seed`` / the loader's ``generator``), so
  workers and epochs never repeat each other's masks and a seeded run is reproducible.

- ``tf.data``::

      S, P = collator.max_length, collator.max_predictions
      spec = {k: tf.TensorSpec([None, S], tf.int32)
              for k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
      spec.update(masked_positions=tf.TensorSpec([None, P], tf.int32),
                  masked_labels=tf.TensorSpec([None, P], tf.int32),
                  masked_weights=tf.TensorSpec([None, P], tf.float32))
      ds = tf.data.Dataset.from_generator(
          lambda: (collator(texts[i:i + 32]) for i in range(0, len(texts), 32)), output_signature=spec)

  (``drop_remainder``-like static batch sizes: make the generator yield full batches only, and
  write the batch size instead of ``None``.)

Randomness comes from ``np.random.default_rng(seed)`` held by the collator: successive calls
differ, a run is reproducible, and :meth:`MaskedLMCollator.state` /
:meth:`MaskedLMCollator.set_state` save and restore the generator to resume a run exactly.

Example:
    >>> from roformer_core import RoFormerTokenizer
    >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    ...                                "今", "天", "气", "非常", "好", "。"])
    >>> collator = MaskedLMCollator(tok, max_length=16, seed=0)
    >>> batch = collator(["今天天气非常好。", "好天气"])
    >>> {k: v.shape for k, v in batch.items()}["masked_positions"], collator.max_predictions
    ((2, 8), 8)
    >>> bool(((batch["labels"] != -100).sum(1) == batch["masked_weights"].sum(1)).all())
    True
"""

from __future__ import annotations

import bisect
import copy
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import rjieba

from roformer_core.errors import InputError

if TYPE_CHECKING:
    from roformer_core.tokenizer import RoFormerTokenizer

#: The label of positions that carry no loss (PyTorch's and the reference's ``ignore_index``).
IGNORE_INDEX = -100

_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def _product(n: Any, p: float) -> Any:
    # n * p without float dust: 0.15 * 160 is 24.000000000000004, whose ceiling would be 25.
    return np.round(np.asarray(n, dtype=np.float64) * p, 9)


def default_max_predictions(max_length: int, mlm_probability: float = 0.15) -> int:
    """P, the static number of predicted positions per row: ``ceil(mlm_probability * max_length)``
    rounded up to a multiple of 8.

    Example:
        >>> [default_max_predictions(s) for s in (32, 64, 128, 160, 512)]
        [8, 16, 24, 24, 80]
    """
    needed = max(1, math.ceil(float(_product(max_length, mlm_probability))))
    return -(-needed // 8) * 8


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass
class MaskedLMCollator:
    """Texts or token ids to masked-LM batches (BERT's 15% and 80/10/10), static shapes, numpy only.

    Args:
        tokenizer: a :class:`~roformer_core.tokenizer.RoFormerTokenizer`; needed for texts and for
            whole-word masking, and the source of the defaults below.
        vocab_size: the number of ids (default ``len(tokenizer)``); random replacements and input
            checks use it.
        mask_token_id, pad_token_id: default from the tokenizer.
        special_ids: ids never selected nor drawn as random replacements (default the tokenizer's
            ``all_special_ids``; ``[PAD]`` and ``[MASK]`` are always added). Without a tokenizer
            they must be given, so that ``[CLS]``/``[SEP]`` are never masked by accident.
        mlm_probability: the fraction of eligible (non-special, non-padding) tokens selected.
        mask_fraction, random_fraction: of the selected tokens, the part put to ``[MASK]`` and
            the part put to a random token; the rest keep their id.
        whole_word_mask: select whole rjieba words (and whole ``##`` WordPiece runs). From ids
            alone only ``##`` runs can be told apart: give texts for Chinese words.
        max_length: S, the length every row is padded or truncated to.
        max_predictions: P (default :func:`default_max_predictions`).
        seed: the seed of the collator's ``np.random.default_rng``; None for a fresh one.

    The fields are read once, when the collator is made.

    ``examples`` may be a list of texts; a list of id sequences (lists or 1-D arrays, already
    with ``[CLS]``/``[SEP]``); a list of dicts with ``input_ids`` (and optionally
    ``attention_mask``, ``token_type_ids``), as a dataset of encodings gives a ``DataLoader``;
    or one dict of such lists / 2-D arrays. Without an ``attention_mask``, ``pad_token_id``
    marks padding. Longer rows are truncated to S (their padding first, and a final special
    token such as ``[SEP]`` is kept last); shorter ones are padded on the right.

    Example:
        >>> collator = MaskedLMCollator(vocab_size=50, mask_token_id=4, pad_token_id=0,
        ...                             special_ids=(0, 1, 2, 3, 4), max_length=48, seed=1)
        >>> batch = collator([[2] + list(range(10, 30)) + [3], [2] + list(range(10, 50)) + [3]])
        >>> batch["input_ids"].shape, batch["masked_positions"].shape, batch["masked_weights"].dtype
        ((2, 48), (2, 8), dtype('float32'))
        >>> [int(n) for n in batch["masked_weights"].sum(1)]   # 15% of 20 tokens, of 40 tokens
        [3, 6]
        >>> state = collator.state()
        >>> a = collator([[2, 11, 12, 13, 3]]); collator.set_state(state)
        >>> b = collator([[2, 11, 12, 13, 3]])
        >>> all((a[k] == b[k]).all() for k in a)
        True
    """

    tokenizer: RoFormerTokenizer | None = None
    vocab_size: int | None = None
    mask_token_id: int | None = None
    pad_token_id: int | None = None
    special_ids: tuple = ()
    mlm_probability: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1
    whole_word_mask: bool = False
    max_length: int = 128
    max_predictions: int | None = None
    seed: int | None = 0

    def __post_init__(self) -> None:
        tok = self.tokenizer
        if not _is_int(self.max_length) or self.max_length < 3:
            raise InputError(f"max_length must be an integer of at least 3 ([CLS], one token, [SEP]), "
                             f"got {self.max_length!r}")
        self.max_length = int(self.max_length)
        for name in ("mlm_probability", "mask_fraction", "random_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise InputError(f"{name} must be a number between 0 and 1, got {value!r}")
        if self.mlm_probability == 0:
            raise InputError("mlm_probability must be above 0")
        if self.mask_fraction + self.random_fraction > 1 + 1e-12:
            raise InputError(f"mask_fraction + random_fraction must be at most 1, got "
                             f"{self.mask_fraction} + {self.random_fraction}")
        if tok is not None:
            for attr in ("mask_token_id", "pad_token_id", "all_special_ids", "convert_ids_to_tokens"):
                if not hasattr(tok, attr):
                    raise InputError(f"tokenizer must be a roformer_core.RoFormerTokenizer, got {type(tok).__name__}")
            if self.vocab_size is None:
                self.vocab_size = len(tok)
            if self.mask_token_id is None:
                self.mask_token_id = tok.mask_token_id
            if self.pad_token_id is None:
                self.pad_token_id = tok.pad_token_id
            if not self.special_ids:
                self.special_ids = tuple(tok.all_special_ids)
        else:
            missing = [n for n in ("vocab_size", "mask_token_id", "pad_token_id") if getattr(self, n) is None]
            if not self.special_ids:
                missing.append("special_ids")
            if missing:
                raise InputError(f"without a tokenizer, give {', '.join(missing)} "
                                 "(special_ids: every id never to mask, [CLS] and [SEP] included)")
            if self.whole_word_mask:
                raise InputError("whole_word_mask needs the tokenizer (for rjieba words and ## pieces)")
        if not _is_int(self.vocab_size) or not 0 < self.vocab_size < 2**31:
            raise InputError(f"vocab_size must be a positive integer below 2**31, got {self.vocab_size!r}")
        self.vocab_size = int(self.vocab_size)
        for name, value in (("mask_token_id", self.mask_token_id), ("pad_token_id", self.pad_token_id)):
            if not _is_int(value) or not 0 <= value < self.vocab_size:
                raise InputError(f"{name} must be an id below vocab_size {self.vocab_size}, got {value!r}")
        if isinstance(self.special_ids, (str, bytes)) or not all(_is_int(i) for i in self.special_ids):
            raise InputError(f"special_ids must be a sequence of integer ids, got {self.special_ids!r}")
        self.special_ids = tuple(sorted({int(i) for i in self.special_ids}
                                        | {int(self.mask_token_id), int(self.pad_token_id)}))
        bad = [i for i in self.special_ids if not 0 <= i < self.vocab_size]
        if bad:
            raise InputError(f"special_ids {bad} are outside the vocabulary (size {self.vocab_size})")
        if self.max_predictions is None:
            self.max_predictions = default_max_predictions(self.max_length, self.mlm_probability)
        elif not _is_int(self.max_predictions) or self.max_predictions < 1:
            raise InputError(f"max_predictions must be a positive integer, got {self.max_predictions!r}")
        self.max_predictions = int(self.max_predictions)
        if self.seed is not None and not (_is_int(self.seed) and self.seed >= 0):
            raise InputError(f"seed must be a non-negative integer or None, got {self.seed!r}")

        self._special = np.zeros(self.vocab_size, dtype=bool)
        self._special[list(self.special_ids)] = True
        self._pool = np.flatnonzero(~self._special)
        if not len(self._pool):
            raise InputError("every id is special: nothing can be masked or drawn as a random token")
        self._continuation = None  # which ids are ## pieces; built on the first whole-word batch
        self._rng = np.random.default_rng(self.seed)
        self._worker = None  # (id, seed) of the torch DataLoader worker whose stream _rng is

    # -- the random state -----------------------------------------------------------------

    def state(self) -> dict:
        """The random generator's state (a dict of plain values, picklable and JSON-able), to resume
        with :meth:`set_state`.

        Example:
            >>> c = MaskedLMCollator(vocab_size=20, mask_token_id=4, pad_token_id=0, special_ids=(0, 1, 2, 3))
            >>> c.state()["bit_generator"]
            'PCG64'
        """
        return copy.deepcopy(self._rng.bit_generator.state)

    def set_state(self, state: Mapping) -> None:
        """Put the random generator back to a :meth:`state`: the next batches repeat those that
        followed it.

        Example:
            >>> c = MaskedLMCollator(vocab_size=20, mask_token_id=4, pad_token_id=0, special_ids=(0, 1, 2, 3))
            >>> s = c.state(); first = c([list(range(5, 20))])
            >>> c.set_state(s); bool((c([list(range(5, 20))])["labels"] == first["labels"]).all())
            True
        """
        try:
            self._rng.bit_generator.state = copy.deepcopy(dict(state))
        except (TypeError, ValueError, KeyError) as e:
            raise InputError(f"not a state of this collator's {type(self._rng.bit_generator).__name__} "
                             f"generator: {e}") from None

    def _follow_worker(self) -> None:
        # In a torch DataLoader worker this object is a copy of the main process's: without a
        # stream of its own, every worker (and every epoch) would draw the same masks.
        torch = sys.modules.get("torch")
        data = getattr(getattr(torch, "utils", None), "data", None)
        info = data.get_worker_info() if data is not None and hasattr(data, "get_worker_info") else None
        if info is not None and self._worker != (info.id, info.seed):
            self._worker = (info.id, info.seed)
            self._rng = np.random.default_rng([info.seed, info.id] + ([self.seed] if self.seed is not None else []))

    # -- batching -------------------------------------------------------------------------

    def __call__(self, examples: Any) -> dict[str, np.ndarray]:
        """A masked batch from ``examples`` (see the class docstring for what they may be)."""
        self._follow_worker()
        ids, attention, types, words = self._encode(examples)
        eligible = (attention == 1) & ~self._special[ids]
        if self.whole_word_mask:
            if words is None:
                words = self._piece_words(ids, eligible)
            selected = self._select_words(eligible, words)
        else:
            selected = self._select_tokens(eligible)
        return self._output(ids, attention, types, selected)

    def _row_counts(self, n: np.ndarray) -> np.ndarray:
        # n * p rounded down or up at random, expectation exactly n * p; never above P.
        target = _product(n, self.mlm_probability)
        counts = np.floor(target + self._rng.random(len(n))).astype(np.int64)
        return np.minimum(np.minimum(counts, n), self.max_predictions)

    def _select_tokens(self, eligible: np.ndarray) -> np.ndarray:
        counts = self._row_counts(eligible.sum(1))
        keys = self._rng.random(eligible.shape)
        keys[~eligible] = np.inf
        order = np.argsort(keys, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
        return eligible & (rank < counts[:, None])

    def _select_words(self, eligible: np.ndarray, words: np.ndarray) -> np.ndarray:
        counts = self._row_counts(eligible.sum(1))
        selected = np.zeros_like(eligible)
        limit = self.max_predictions
        for b in range(len(eligible)):
            if counts[b] == 0:
                continue
            positions = np.flatnonzero(eligible[b])
            _, group = np.unique(words[b, positions], return_inverse=True)
            members = np.split(positions[np.argsort(group, kind="stable")],
                               np.cumsum(np.bincount(group))[:-1])
            total, want = 0, int(counts[b])
            for w in self._rng.permutation(len(members)):
                size = len(members[w])
                if total + size <= want:
                    take, stop = True, total + size == want
                elif total + size <= limit:
                    # Taken with the chance that makes the row's expected count exactly `want`.
                    take, stop = self._rng.random() < (want - total) / size, True
                else:
                    continue
                if take:
                    selected[b, members[w]] = True
                    total += size
                if stop:
                    break
        return selected

    def _output(self, ids, attention, types, selected) -> dict[str, np.ndarray]:
        rng = self._rng
        batch, length = ids.shape
        labels = np.where(selected, ids, IGNORE_INDEX)
        masked = ids.copy()
        rows, cols = np.nonzero(selected)
        m = len(rows)
        # The 80/10/10 split over the batch's selected tokens, each count rounded at random with
        # one shared draw, so that each token's chances are exactly the fractions.
        u = rng.random()
        n_mask = int(math.floor(float(_product(m, self.mask_fraction)) + u))
        n_change = min(m, int(math.floor(float(_product(m, self.mask_fraction + self.random_fraction)) + u)))
        order = rng.permutation(m)
        to_mask, to_random = order[:n_mask], order[n_mask:n_change]
        masked[rows[to_mask], cols[to_mask]] = self.mask_token_id
        masked[rows[to_random], cols[to_random]] = self._pool[rng.integers(len(self._pool), size=len(to_random))]

        width = self.max_predictions
        counts = selected.sum(1)
        # Stable sort of "not selected" puts each row's selected positions first, in order.
        first = np.argsort(~selected, axis=1, kind="stable")[:, :width]
        if first.shape[1] < width:
            first = np.pad(first, ((0, 0), (0, width - first.shape[1])))
        real = np.arange(width) < counts[:, None]
        positions = np.where(real, first, 0)
        return {
            "input_ids": masked.astype(np.int32),
            "attention_mask": attention.astype(np.int32),
            "token_type_ids": types.astype(np.int32),
            "labels": labels.astype(np.int32),
            "masked_positions": positions.astype(np.int32),
            "masked_labels": np.where(real, np.take_along_axis(ids, positions, axis=1), IGNORE_INDEX).astype(np.int32),
            "masked_weights": real.astype(np.float32),
        }

    # -- inputs ---------------------------------------------------------------------------

    def _encode(self, examples: Any):
        """(ids, attention, token types, word ids or None), each [B, S] int64."""
        if isinstance(examples, Mapping):
            return self._from_columns(examples, "the batch")
        if not isinstance(examples, (list, tuple)) and hasattr(examples, "__array__"):  # a 2-D id array
            return self._from_columns({"input_ids": examples}, "the batch")
        if isinstance(examples, (str, bytes)) or not isinstance(examples, (list, tuple)):
            raise InputError("examples must be a list of texts, of id sequences or of dicts with input_ids, "
                             f"or a dict of input_ids; got {type(examples).__name__}")
        if not examples:
            raise InputError("examples is empty: a batch needs at least one example")
        if all(isinstance(e, str) for e in examples):
            return self._from_texts(list(examples))
        if all(isinstance(e, Mapping) for e in examples):
            columns: dict[str, list] = {}
            for i, e in enumerate(examples):
                if "input_ids" not in e:
                    raise InputError(f"example {i} has no input_ids")
                for key in _KEYS:
                    if key in e:
                        columns.setdefault(key, []).append(e[key])
            for key, column in columns.items():
                if len(column) != len(examples):
                    raise InputError(f"{key} is given for some examples and not for others")
            return self._from_columns(columns, "the examples")
        if any(isinstance(e, (str, Mapping)) for e in examples):
            raise InputError("examples mixes texts, dicts and id sequences: give one kind")
        return self._from_columns({"input_ids": examples}, "the examples")

    def _from_texts(self, texts: list[str]):
        tok = self.tokenizer
        if tok is None:
            raise InputError("texts need a tokenizer: MaskedLMCollator(tokenizer=RoFormerTokenizer(...))")
        enc = tok(texts, truncation=True, max_length=self.max_length, padding="max_length",
                  return_offsets_mapping=self.whole_word_mask)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        self._check_range(ids, "the tokenizer's ids")  # when vocab_size was set below len(tokenizer)
        attention = np.asarray(enc["attention_mask"], dtype=np.int64)
        types = np.asarray(enc["token_type_ids"], dtype=np.int64)
        words = None
        if self.whole_word_mask:
            words = np.full(ids.shape, -1, dtype=np.int64)
            for b, (text, offsets) in enumerate(zip(texts, enc["offset_mapping"])):
                words[b] = self._text_words(text, offsets, ids[b])
        return ids, attention, types, words

    def _from_columns(self, columns: Mapping, what: str):
        if "input_ids" not in columns:
            raise InputError(f"{what} has no input_ids")
        rows = {key: self._rows(columns[key], key) for key in _KEYS if columns.get(key) is not None}
        n = len(rows["input_ids"])
        if n == 0:
            raise InputError(f"{what} holds no example: a batch needs at least one")
        for key, value in rows.items():
            if len(value) != n:
                raise InputError(f"{key} has {len(value)} rows but input_ids has {n}")
            for i, (row, ref) in enumerate(zip(value, rows["input_ids"])):
                if len(row) != len(ref):
                    raise InputError(f"example {i}: {key} has {len(row)} values but input_ids has {len(ref)}")
        S = self.max_length
        out = {key: np.zeros((n, S), dtype=np.int64) for key in _KEYS}
        out["input_ids"][:] = self.pad_token_id
        for i in range(n):
            ids = rows["input_ids"][i]
            self._check_range(ids, f"example {i}")
            mask = (rows["attention_mask"][i] if "attention_mask" in rows
                    else (ids != self.pad_token_id).astype(np.int64))
            if mask.size and not np.isin(mask, (0, 1)).all():
                raise InputError(f"example {i}: attention_mask must hold only 0 and 1")
            types = rows["token_type_ids"][i] if "token_type_ids" in rows else np.zeros_like(ids)
            if types.size and types.min() < 0:
                raise InputError(f"example {i}: token_type_ids must not be negative")
            keep = np.arange(len(ids))
            if len(keep) > S:
                keep = keep[mask == 1]  # the padding goes first
            if len(keep) > S:
                # Keep a closing special token ([SEP]) at the end, as the tokenizer's truncation does.
                keep = np.concatenate([keep[:S - 1], keep[-1:]]) if self._special[ids[keep[-1]]] else keep[:S]
            out["input_ids"][i, :len(keep)] = ids[keep]
            out["attention_mask"][i, :len(keep)] = mask[keep]
            out["token_type_ids"][i, :len(keep)] = types[keep]
        return out["input_ids"], out["attention_mask"], out["token_type_ids"], None

    @staticmethod
    def _rows(value: Any, key: str) -> list[np.ndarray]:
        if not isinstance(value, (list, tuple)) and hasattr(value, "__array__"):  # numpy, torch, tf, jax
            value = np.asarray(value)
            if value.ndim != 2:
                raise InputError(f"{key} must be 2-D [batch, length] or a list of sequences, got shape {value.shape}")
            value = list(value)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise InputError(f"{key} must be a list of sequences or a 2-D array, got {type(value).__name__}")
        rows = []
        for i, row in enumerate(value):
            if isinstance(row, (str, bytes, Mapping)):
                raise InputError(f"{key}[{i}] must be a sequence of integer ids, got {type(row).__name__}")
            try:
                arr = np.asarray(row)
            except (TypeError, ValueError, OverflowError) as e:
                raise InputError(f"{key}[{i}] cannot be read as ids: {e}") from None
            if arr.size == 0:
                arr = arr.reshape(0).astype(np.int64)
            if arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise InputError(f"{key}[{i}] must be a 1-D sequence of integers, got "
                                 f"{'shape ' + str(arr.shape) if arr.ndim != 1 else 'dtype ' + str(arr.dtype)}")
            rows.append(arr.astype(np.int64))
        return rows

    def _check_range(self, ids: np.ndarray, what: str) -> None:
        bad = ids[(ids < 0) | (ids >= self.vocab_size)]
        if bad.size:
            raise InputError(f"{what} holds id {int(bad[0])}, outside the vocabulary (0..{self.vocab_size - 1})")

    # -- words ----------------------------------------------------------------------------

    def _text_words(self, text: str, offsets, ids: np.ndarray) -> np.ndarray:
        """The word of each token of one encoded text (-1 for added special tokens and padding):
        the rjieba words the tokenizer cut the text into, found again by cutting the text the
        tokenizer's way, matched to tokens through their character offsets."""
        tok = self.tokenizer
        lower = getattr(tok, "do_lower_case", True) and getattr(tok, "do_basic_tokenize", True)
        specials = sorted(set(tok.all_special_tokens), key=len, reverse=True)
        special_re = re.compile("|".join(map(re.escape, specials)))
        # Lowercased outside the special tokens written in the text, one character at a time
        # as the reference does; origin[j] is where character j of the result came from.
        chars: list[str] = []
        origin: list[int] = []
        last = 0
        for m in list(special_re.finditer(text)) + [None]:
            stop = m.start() if m else len(text)
            for j in range(last, stop):
                low = text[j].lower() if lower else text[j]
                chars.append(low)
                origin.extend([j] * len(low))
            if m:
                chars.append(m.group())
                origin.extend(range(m.start(), m.end()))
                last = m.end()
        low_text = "".join(chars)
        starts: list[int] = []
        last = 0
        for m in list(special_re.finditer(low_text)) + [None]:
            stop = m.start() if m else len(low_text)
            if stop > last:
                pos = last
                for word in rjieba.cut(low_text[last:stop], False):
                    starts.append(origin[pos])
                    pos += len(word)
            if m:
                starts.append(origin[m.start()])
                last = m.end()
        words = np.full(len(ids), -1, dtype=np.int64)
        first_token_of = {}
        for t, (s, e) in enumerate(offsets):
            if e <= s:  # added [CLS]/[SEP] and padding
                continue
            w = bisect.bisect_right(starts, s) - 1
            w_end = bisect.bisect_right(starts, e - 1) - 1
            # A token over two words (never, when the cut matches the tokenizer's) joins them.
            for v in range(w + 1, w_end + 1):
                first_token_of.setdefault(v, w)
            words[t] = first_token_of.get(w, w)
        return self._join_pieces(ids, words)

    def _piece_words(self, ids: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        words = np.where(eligible, np.arange(ids.shape[1]), -1)
        return np.stack([self._join_pieces(ids[b], words[b]) for b in range(len(ids))])

    def _join_pieces(self, ids: np.ndarray, words: np.ndarray) -> np.ndarray:
        # A ## piece belongs to the word of the token before it.
        if self._continuation is None:
            tokens = self.tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))
            self._continuation = np.array([t.startswith("##") and len(t) > 2 for t in tokens], dtype=bool)
        words = words.copy()
        for t in np.flatnonzero(self._continuation[ids]):
            if t > 0 and words[t] >= 0 and words[t - 1] >= 0:
                words[t] = words[t - 1]
        return words
