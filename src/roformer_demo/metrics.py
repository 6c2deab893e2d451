"""Classification metrics, in numpy: accuracy, F1 of the positive class, macro F1.

Example:
    >>> scores([1, 0, 1, 1], [1, 0, 0, 1])
    {'accuracy': 0.75, 'f1': 0.8, 'macro_f1': 0.7333333333333334}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """The fraction of predictions equal to the labels.

    Example:
        >>> accuracy([1, 0], [1, 1])
        0.5
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return float((labels == predictions).mean()) if labels.size else 0.0


def f1(labels: Sequence[int], predictions: Sequence[int], positive: int = 1) -> float:
    """F1 of one class: 2·precision·recall / (precision + recall); 0 when it is never predicted nor present.

    Example:
        >>> f1([1, 1, 0], [1, 0, 0]), f1([1, 1, 0], [1, 0, 0], positive=0)
        (0.6666666666666666, 0.6666666666666666)
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    tp = int(((predictions == positive) & (labels == positive)).sum())
    fp = int(((predictions == positive) & (labels != positive)).sum())
    fn = int(((predictions != positive) & (labels == positive)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def scores(labels: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """Accuracy, F1 of the positive class and macro F1 (the mean over both classes); example above."""
    return {"accuracy": accuracy(labels, predictions), "f1": f1(labels, predictions, 1),
            "macro_f1": (f1(labels, predictions, 0) + f1(labels, predictions, 1)) / 2}
