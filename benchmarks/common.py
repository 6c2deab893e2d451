"""What the benchmarks share: timing helpers, the training model size, the batch, and the PyTorch step
the training benchmarks race.

Example:
    >>> best_time(lambda: None, repeats=3) >= 0.0
    True
    >>> config = bench_config(vocab_size=100)
    >>> features, labels = make_batch(config, batch=2, seq=8)
    >>> features["input_ids"].shape, labels.shape
    ((2, 8), (2, 8))
"""

from __future__ import annotations

import time

import numpy as np


def best_time(fn, repeats: int, warmup: bool = True) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` (after one untimed call when ``warmup``): the
    least disturbed run on a shared machine."""
    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def steps_per_second(run, steps: int) -> float:
    """``run(steps)`` timed once: steps per second."""
    start = time.perf_counter()
    run(steps)
    return steps / (time.perf_counter() - start)


def bench_config(vocab_size: int = 12000):
    """The 4-layer, 256-hidden RoFormer both training benchmarks use."""
    from roformer_core import RoFormerConfig

    return RoFormerConfig(vocab_size=vocab_size, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                          intermediate_size=1024, max_position_embeddings=512)


def make_batch(config, batch: int, seq: int, seed: int = 0):
    """Random ids, no padding, 15% of the labels real and the rest -100: ``(features, labels)``."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config.vocab_size, size=(batch, seq), dtype=np.int64)
    features = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    labels = np.where(rng.random((batch, seq)) < 0.15, ids, -100)
    return features, labels


def torch_trainer(config, features, labels):
    """``run(steps)``: that many training steps of roformer_torch (forward, backward, Adam lr 1e-4)."""
    import torch

    from roformer_torch import RoFormerForMaskedLM

    torch.manual_seed(0)
    model = RoFormerForMaskedLM(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    feed = {k: torch.as_tensor(v) for k, v in features.items()}
    target = torch.as_tensor(labels)

    def run(steps: int) -> None:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            model(**feed, labels=target).loss.backward()
            optimizer.step()

    return run
