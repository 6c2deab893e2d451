"""Autoregressive generation, written once for every backend.

A backend hands :func:`generate` a ``step`` function that runs its causal LM on the new
tokens with its key/value cache and returns the last position's logits as numpy. Token
choice (greedy, temperature, top-k, top-p sampling) and stopping happen here, in numpy,
so the three backends pick the same tokens from the same logits.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from roformer_core.errors import InputError

#: step(new_ids [B, s], attention_mask [B, past + s], past) -> (logits [B, V] of the last position, new past)
StepFn = Callable[[np.ndarray, np.ndarray, Any], "tuple[np.ndarray, Any]"]


def select_next(logits: np.ndarray, *, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                top_p: float = 1.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Choose one token per row of ``logits`` ``[B, V]``.

    Example:
        >>> select_next(np.array([[0.1, 2.0, -1.0]])).tolist()
        [1]
        >>> rng = np.random.default_rng(0)
        >>> select_next(np.array([[0.0, 5.0, 4.9]]), do_sample=True, top_k=1, rng=rng).tolist()
        [1]
    """
    logits = np.asarray(logits, dtype=np.float64)
    if not do_sample:
        return logits.argmax(-1)
    if temperature <= 0:
        raise InputError(f"temperature must be > 0 when sampling, got {temperature}")
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    if top_p < 1.0:
        order = np.argsort(-logits, axis=-1)
        sorted_logits = np.take_along_axis(logits, order, -1)
        probs = np.exp(sorted_logits - sorted_logits[:, :1])
        probs /= probs.sum(-1, keepdims=True)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        drop_sorted = np.cumsum(probs, -1) - probs >= top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, -1)
        logits = np.where(drop, -np.inf, logits)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    rng = rng or np.random.default_rng()
    u = rng.random((logits.shape[0], 1))
    return np.minimum((np.cumsum(probs, -1) < u).sum(-1), logits.shape[-1] - 1)


def generate(step: StepFn, input_ids, attention_mask=None, *, max_new_tokens: int = 20, do_sample: bool = False,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, eos_token_id: int | None = None,
             pad_token_id: int = 0, seed: int | None = None) -> np.ndarray:
    """Extend ``input_ids`` ``[B, S]`` by up to ``max_new_tokens`` tokens; returns ``[B, S + n]``.

    The prompt runs once; every later step feeds one token and reuses the cache. Rows that
    produced ``eos_token_id`` are padded with ``pad_token_id`` until all rows are done.

    Example (a fake model that always prefers token 3):
        >>> def step(ids, mask, past):
        ...     return np.eye(5)[np.full(len(ids), 3)], None
        >>> generate(step, np.array([[1, 2]]), max_new_tokens=2).tolist()
        [[1, 2, 3, 3]]
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"input_ids must be an integer array [batch, seq], got shape {ids.shape} dtype {ids.dtype}")
    if ids.shape[1] == 0:
        raise InputError("input_ids is empty: generation needs at least one prompt token")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask).astype(ids.dtype)
    rng = np.random.default_rng(seed)
    done = np.zeros(ids.shape[0], dtype=bool)
    past, new = None, ids
    for _ in range(max_new_tokens):
        logits, past = step(new, mask, past)
        nxt = select_next(logits, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, rng=rng)
        nxt = np.where(done, pad_token_id, nxt).astype(ids.dtype)
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
        mask = np.concatenate([mask, np.ones_like(nxt)[:, None]], axis=1)
        if eos_token_id is not None:
            done |= nxt == eos_token_id
            if done.all():
                break
        new = nxt[:, None]
    return ids
