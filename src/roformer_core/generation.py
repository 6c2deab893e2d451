"""Autoregressive generation, written once for every backend, and the UniLM (seq2seq) helpers.

A backend hands :func:`generate` a ``step`` function that runs its causal LM on the new
tokens with its key/value cache and returns the last position's logits as numpy. Token
choice (greedy, temperature, top-k, top-p sampling), several samples per prompt and stopping
happen here, in numpy, so the three backends pick the same tokens from the same logits.

UniLM (RoFormer-Sim's seq2seq, ``config.unilm``): the source is segment 0 (token type 0),
the target segment 1; :func:`unilm_attention_mask` is the mask every backend builds from the
token types, :func:`seq2seq_labels` the labels of the one-pass seq2seq loss, and
``generate(..., new_token_type=1)`` gives generated tokens type 1.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from roformer_core.errors import InputError

#: step(new_ids [B, s], attention_mask [B, past + s], past) -> (logits [B, V] of the last position, new past);
#: called with a fourth keyword argument ``token_type_ids`` [B, s] when :func:`generate` is given token types
StepFn = Callable[..., "tuple[np.ndarray, Any]"]


def unilm_attention_mask(token_type_ids, attention_mask=None) -> np.ndarray:
    """The UniLM mask ``[batch, query, key]`` (1 = may attend) from token types (and padding).

    Position i may attend j when ``cumsum(token_type_ids)[j] <= cumsum(token_type_ids)[i]``
    and j is not padding: segment 0 (the source) is bidirectional, segment 1 (the target)
    sees the source and its own past. Every backend builds this inside the model when
    ``config.unilm`` is on; this numpy form is for checking it and for software that takes
    an explicit 3-D mask.

    Example:
        >>> unilm_attention_mask(np.array([[0, 0, 1, 1]])).astype(int).tolist()
        [[[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]]
    """
    types = np.asarray(token_type_ids)
    if types.ndim != 2:
        raise InputError(f"token_type_ids must be [batch, seq], got shape {types.shape}")
    idx = np.cumsum(types, axis=1)
    allowed = idx[:, None, :] <= idx[:, :, None]
    if attention_mask is not None:
        allowed &= np.asarray(attention_mask).astype(bool)[:, None, :]
    return allowed


def seq2seq_labels(input_ids, token_type_ids, attention_mask=None) -> np.ndarray:
    """Labels for one-pass UniLM seq2seq training: the ids of segment 1, -100 elsewhere.

    Give them as ``labels`` to ``RoFormerForCausalLM`` of a config with ``unilm`` on: its loss
    is shifted like every causal LM (position t predicts token t+1), so the loss counts exactly
    the target tokens, each predicted from the source and the target before it. Padding and
    the source are -100 (ignored).

    Example:
        >>> seq2seq_labels(np.array([[2, 7, 3, 8, 9, 3]]), np.array([[0, 0, 0, 1, 1, 1]])).tolist()
        [[-100, -100, -100, 8, 9, 3]]
    """
    ids, types = np.asarray(input_ids), np.asarray(token_type_ids)
    if ids.shape != types.shape:
        raise InputError(f"token_type_ids has shape {types.shape}, input_ids has {ids.shape}")
    keep = types == 1
    if attention_mask is not None:
        keep &= np.asarray(attention_mask).astype(bool)
    return np.where(keep, ids, -100)


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
             pad_token_id: int = 0, seed: int | None = None, token_type_ids=None, new_token_type: int | None = None,
             num_return_sequences: int = 1) -> np.ndarray:
    """Extend ``input_ids`` ``[B, S]`` by up to ``max_new_tokens`` tokens; returns ``[B * n, S + new]``.

    The prompt runs once; every later step feeds one token and reuses the cache. Rows that
    produced ``eos_token_id`` are padded with ``pad_token_id`` until all rows are done.
    ``num_return_sequences`` (n, sampling only) continues every prompt n times: rows
    ``i*n .. i*n+n-1`` belong to prompt i. ``token_type_ids`` (the prompt's, default 0) and
    ``new_token_type`` (the type of every generated token, default 0; 1 for UniLM seq2seq,
    where the prompt is the source and the generated text the target) make the loop pass
    ``token_type_ids=`` to ``step``.

    Example (a fake model that always prefers token 3):
        >>> def step(ids, mask, past):
        ...     return np.eye(5)[np.full(len(ids), 3)], None
        >>> generate(step, np.array([[1, 2]]), max_new_tokens=2).tolist()
        [[1, 2, 3, 3]]
        >>> def typed_step(ids, mask, past, token_type_ids):   # echoes the token type it is given
        ...     return np.eye(5)[token_type_ids[:, -1] + 3], None
        >>> generate(typed_step, np.array([[1, 2]]), max_new_tokens=2, new_token_type=1, do_sample=True,
        ...          top_k=1, num_return_sequences=2).tolist()
        [[1, 2, 3, 4], [1, 2, 3, 4]]
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"input_ids must be an integer array [batch, seq], got shape {ids.shape} dtype {ids.dtype}")
    if ids.shape[1] == 0:
        raise InputError("input_ids is empty: generation needs at least one prompt token")
    if isinstance(num_return_sequences, bool) or not isinstance(num_return_sequences, (int, np.integer)) \
            or num_return_sequences < 1:
        raise InputError(f"num_return_sequences must be a positive integer, got {num_return_sequences!r}")
    if num_return_sequences > 1 and not do_sample:
        raise InputError("num_return_sequences > 1 needs do_sample=True: greedy decoding gives the same "
                         "sequence every time")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask).astype(ids.dtype)
    if mask.shape != ids.shape:
        raise InputError(f"attention_mask has shape {mask.shape}, input_ids has {ids.shape}")
    typed = token_type_ids is not None or new_token_type is not None
    types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids).astype(ids.dtype)
    if types.shape != ids.shape:
        raise InputError(f"token_type_ids has shape {types.shape}, input_ids has {ids.shape}")
    if num_return_sequences > 1:
        ids, mask, types = (np.repeat(a, num_return_sequences, axis=0) for a in (ids, mask, types))
    new_type = 0 if new_token_type is None else int(new_token_type)
    rng = np.random.default_rng(seed)
    done = np.zeros(ids.shape[0], dtype=bool)
    past, new, new_types = None, ids, types
    for _ in range(max_new_tokens):
        if typed:
            logits, past = step(new, mask, past, token_type_ids=new_types)
        else:
            logits, past = step(new, mask, past)
        nxt = select_next(logits, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, rng=rng)
        nxt = np.where(done, pad_token_id, nxt).astype(ids.dtype)
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
        mask = np.concatenate([mask, np.ones_like(nxt)[:, None]], axis=1)
        if eos_token_id is not None:
            done |= nxt == eos_token_id
            if done.all():
                break
        new, new_types = nxt[:, None], np.full_like(nxt[:, None], new_type)
    return ids
