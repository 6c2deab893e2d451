"""The baseline the RoFormer has to beat: bag-of-words logistic regression, in numpy.

The features are the same tokens the RoFormer sees (each token present or not), without
their order or context. Trained with minibatch Adam on the training split; the L2 strength
is chosen on the validation split, so the test split is never looked at.

Example:
    >>> rows = [np.array([5, 6]), np.array([7, 6]), np.array([5]), np.array([7])]
    >>> model = BagOfWordsLogisticRegression(vocab_size=8, epochs=50).fit(rows, [1, 0, 1, 0])
    >>> model.predict(rows).tolist()
    [1, 0, 1, 0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from roformer_demo.metrics import accuracy


class BagOfWordsLogisticRegression:
    """Binary logistic regression on token presence; rows are token-id arrays.

    Ids listed in ``ignore`` (the special tokens) are not features.

    Example:
        >>> m = BagOfWordsLogisticRegression(vocab_size=8, epochs=50).fit([np.array([5]), np.array([6])], [1, 0])
        >>> m.predict_proba([np.array([5])]) > 0.5
        array([ True])
    """

    def __init__(self, vocab_size: int, l2: float = 1e-4, epochs: int = 8, batch_size: int = 128,
                 learning_rate: float = 0.05, seed: int = 0, ignore: Sequence[int] = ()):
        self.vocab_size, self.l2, self.epochs = vocab_size, l2, epochs
        self.batch_size, self.learning_rate, self.seed = batch_size, learning_rate, seed
        self.ignore = np.asarray(sorted(set(ignore)), dtype=np.int64)
        self.weights = np.zeros(vocab_size)
        self.bias = 0.0

    def _features(self, rows: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.setdiff1d(np.unique(r), self.ignore, assume_unique=True) for r in rows]

    @staticmethod
    def _flat(features: list[np.ndarray], index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, row of each id) of the rows in ``index``: a sparse matrix in two arrays."""
        parts = [features[i] for i in index]
        segment = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
        return (np.concatenate(parts) if parts else np.zeros(0, np.int64)), segment

    def _logits(self, ids: np.ndarray, segment: np.ndarray, rows: int) -> np.ndarray:
        return np.bincount(segment, weights=self.weights[ids], minlength=rows) + self.bias

    def fit(self, rows: Sequence[np.ndarray], labels: Sequence[int]) -> "BagOfWordsLogisticRegression":
        """Minibatch Adam on the mean log loss + ``l2``/2 ||w||²."""
        features = self._features(rows)
        y = np.asarray(labels, dtype=np.float64)
        rng = np.random.default_rng(self.seed)
        w, b = np.zeros(self.vocab_size), 0.0
        m, v = np.zeros_like(w), np.zeros_like(w)
        mb = vb = 0.0
        beta1, beta2, eps, t = 0.9, 0.999, 1e-8, 0
        for _ in range(self.epochs):
            order = rng.permutation(len(features))
            for start in range(0, len(order), self.batch_size):
                index = order[start:start + self.batch_size]
                ids, segment = self._flat(features, index)
                self.weights, self.bias = w, b
                p = 1.0 / (1.0 + np.exp(-self._logits(ids, segment, len(index))))
                err = p - y[index]
                grad_w = np.bincount(ids, weights=err[segment], minlength=self.vocab_size) / len(index) + self.l2 * w
                grad_b = float(err.mean())
                t += 1
                m = beta1 * m + (1 - beta1) * grad_w
                v = beta2 * v + (1 - beta2) * grad_w ** 2
                mb = beta1 * mb + (1 - beta1) * grad_b
                vb = beta2 * vb + (1 - beta2) * grad_b ** 2
                correction = np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                w = w - self.learning_rate * correction * m / (np.sqrt(v) + eps)
                b = b - self.learning_rate * correction * mb / (np.sqrt(vb) + eps)
        self.weights, self.bias = w, b
        return self

    def predict_proba(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """P(positive) of each row."""
        features = self._features(rows)
        ids, segment = self._flat(features, np.arange(len(features)))
        return 1.0 / (1.0 + np.exp(-self._logits(ids, segment, len(features))))

    def predict(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """0/1 predictions."""
        return (self.predict_proba(rows) > 0.5).astype(np.int64)


def fit_baseline(train_rows, train_labels, val_rows, val_labels, vocab_size: int, ignore: Sequence[int] = (),
                 l2_grid: Sequence[float] = (1e-5, 1e-4, 1e-3), seed: int = 0
                 ) -> tuple[BagOfWordsLogisticRegression, dict[float, float]]:
    """Fit one model per L2 strength; return the best on validation and every validation accuracy.

    Example:
        >>> rows = [np.array([5]), np.array([6])] * 4
        >>> model, val = fit_baseline(rows, [1, 0] * 4, rows, [1, 0] * 4, vocab_size=8)
        >>> sorted(val.values())[-1]
        1.0
    """
    scores, best = {}, None
    for l2 in l2_grid:
        model = BagOfWordsLogisticRegression(vocab_size, l2=l2, seed=seed, ignore=ignore).fit(train_rows, train_labels)
        scores[l2] = accuracy(val_labels, model.predict(val_rows))
        if best is None or scores[l2] > scores[best.l2]:
            best = model
    return best, scores
