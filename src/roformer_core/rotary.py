"""Rotary position embeddings (RoPE, arXiv 2104.09864) in the reference RoFormer layout.

The table is computed once in float64 and cast at the end: computing the angles in
float32 is off by up to 7e-5, which is larger than the parity tolerance of this project.
Any number of positions and any start offset are allowed; a sequence longer than
``max_position_embeddings`` simply gets more rows.

Layout (head size ``d``): ``table[p, :d/2] = sin(p * 10000**(-2i/d))`` and
``table[p, d/2:] = cos(...)`` of the same angles, ``i`` in ``[0, d/2)``. The rotation acts
on interleaved pairs ``(2i, 2i+1)``::

    x'[2i]   = x[2i]   * cos(theta_i) - x[2i+1] * sin(theta_i)
    x'[2i+1] = x[2i+1] * cos(theta_i) + x[2i]   * sin(theta_i)

Backends use :func:`rotary_sin_cos`, which spreads each angle over its pair so the rotation
is ``x * cos + rotate_pairs(x) * sin`` with ``rotate_pairs(x) = (-x1, x0, -x3, x2, ...)``.
"""

from __future__ import annotations

import functools

import numpy as np

#: Backends precompute at least this many rows and grow the table when a longer
#: sequence (or a long cache) needs more.
MIN_TABLE_ROWS = 512


@functools.lru_cache(maxsize=32)
def _table64(num_positions: int, head_dim: int) -> np.ndarray:
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"rotary head size must be a positive even number, got {head_dim}")
    if num_positions < 0:
        raise ValueError(f"number of positions must be >= 0, got {num_positions}")
    inv_freq = np.power(10000.0, -2.0 * np.arange(head_dim // 2, dtype=np.float64) / head_dim)
    angles = np.arange(num_positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    table = np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)
    table.setflags(write=False)
    return table


def sinusoidal_table(num_positions: int, head_dim: int, offset: int = 0, dtype=np.float32) -> np.ndarray:
    """Rows ``offset .. offset + num_positions`` of the reference table, shape ``[n, head_dim]``.

    Example:
        >>> sinusoidal_table(2, 6, dtype=np.float64).round(4).tolist()
        [[0.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0.8415, 0.0464, 0.0022, 0.5403, 0.9989, 1.0]]
    """
    return _table64(offset + num_positions, head_dim)[offset:].astype(dtype)


def rotary_sin_cos(num_positions: int, head_dim: int, offset: int = 0, dtype=np.float32):
    """``(sin, cos)``, each ``[n, head_dim]``, with every angle repeated over its pair.

    Example:
        >>> sin, cos = rotary_sin_cos(3, 4)
        >>> sin.shape, bool((sin[:, 0] == sin[:, 1]).all())
        ((3, 4), True)
    """
    table = _table64(offset + num_positions, head_dim)[offset:]
    half = head_dim // 2
    sin = np.repeat(table[:, :half], 2, axis=-1)
    cos = np.repeat(table[:, half:], 2, axis=-1)
    return sin.astype(dtype), cos.astype(dtype)


def rotate_pairs(x: np.ndarray) -> np.ndarray:
    """``(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)`` on the last axis (numpy)."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return np.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)


def apply_rotary(x: np.ndarray, offset: int = 0) -> np.ndarray:
    """Rotate ``x`` of shape ``[..., seq, head_dim]`` for positions ``offset, offset+1, ...``.

    The numpy reference of what each backend does inside attention.

    Example:
        >>> x = np.ones((1, 2, 4), np.float32)
        >>> apply_rotary(x)[0, 0].tolist()  # position 0 is the identity
        [1.0, 1.0, 1.0, 1.0]
    """
    sin, cos = rotary_sin_cos(x.shape[-2], x.shape[-1], offset, dtype=np.float64)
    out = x.astype(np.float64) * cos + rotate_pairs(x.astype(np.float64)) * sin
    return out.astype(x.dtype)


def table_rows(needed: int, max_position_embeddings: int) -> int:
    """How many rows a backend should precompute to hold ``needed`` positions.

    Grows by powers of two past ``max_position_embeddings`` so a long generation
    rebuilds its table only a handful of times.
    """
    rows = max(MIN_TABLE_ROWS, max_position_embeddings)
    while rows < needed:
        rows *= 2
    return rows
