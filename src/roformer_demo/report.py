"""Printing and saving what the main job did: stage banners, plain-text tables, JSON reports, timers.

Example:
    >>> print(table(["backend", "accuracy"], [["torch", 0.871], ["keras", 0.871]]))
    backend  accuracy
    -------  --------
    torch      0.8710
    keras      0.8710
"""

from __future__ import annotations

import json
import os
import time
import unicodedata
from collections.abc import Sequence

from roformer_core.io import atomic_write_text


def banner(number: int | str, title: str) -> None:
    """The heading of a stage on stdout.

    Example:
        >>> banner(1, "vocabulary")
        <BLANKLINE>
        == 1 · vocabulary ==
    """
    print(f"\n== {number} · {title} ==", flush=True)


def _cell(value) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.4f}"
    return str(value)


def width(text: str) -> int:
    """Columns ``text`` takes in a terminal: Chinese characters and full-width punctuation take two.

    Example:
        >>> width("好评!"), width("ok")
        (5, 2)
    """
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A plain-text table: text left-aligned, numbers right-aligned (Chinese text aligned too);
    example: see the module docstring."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [bool(rows) and all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in rows)
               for i in range(len(header))]
    widths = [max([width(h)] + [width(r[i]) for r in cells]) for i, h in enumerate(header)]

    def line(values):
        padded = [" " * (w - width(v)) + v if n else v + " " * (w - width(v))
                  for v, w, n in zip(values, widths, numeric)]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in cells])


def write_json(path: str, data) -> None:
    """Pretty JSON, through a temporary file.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "r.json")
        >>> write_json(path, {"accuracy": 0.9})
        >>> read_json(path)
        {'accuracy': 0.9}
    """
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable) + "\n")


def read_json(path: str) -> dict | None:
    """The JSON object at ``path``, or None when there is no such file (example: see :func:`write_json`)."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class Timer:
    """Adds the wall time of a ``with`` block to ``store[name]``.

    Example:
        >>> times = {}
        >>> with Timer(times, "stage"):
        ...     pass
        >>> list(times)
        ['stage']
    """

    def __init__(self, store: dict, name: str):
        self.store, self.name = store, name

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.store[self.name] = self.store.get(self.name, 0.0) + time.perf_counter() - self.start
        return False
