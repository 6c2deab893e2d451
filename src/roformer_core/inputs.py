"""Checks of model inputs shared by the backends, so bad input fails with one clear line."""

from __future__ import annotations

from roformer_core.errors import InputError


def check_ids_range(name: str, low: int, high: int, limit: int, config_field: str) -> None:
    """Raise :class:`InputError` unless every id lies in ``[0, limit)``.

    Example:
        >>> check_ids_range("input_ids", 0, 99, 100, "vocab_size")
        >>> check_ids_range("input_ids", 0, 120, 100, "vocab_size")
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: input_ids holds ids up to 120, outside [0, 100) (config vocab_size = 100)
    """
    if low < 0 or high >= limit:
        bad = low if low < 0 else high
        word = "down to" if low < 0 else "up to"
        raise InputError(f"{name} holds ids {word} {bad}, outside [0, {limit}) (config {config_field} = {limit})")


def check_shapes(input_shape: tuple, attention_mask_shape: tuple | None, past_length: int,
                 token_type_shape: tuple | None) -> None:
    """Raise :class:`InputError` when the mask or token types do not fit the input ids."""
    if len(input_shape) != 2:
        raise InputError(f"input_ids must be [batch, seq], got shape {tuple(input_shape)}")
    b, s = input_shape
    if token_type_shape is not None and tuple(token_type_shape) != (b, s):
        raise InputError(f"token_type_ids has shape {tuple(token_type_shape)}, input_ids has {(b, s)}")
    if attention_mask_shape is not None:
        shape = tuple(attention_mask_shape)
        want2 = (b, past_length + s)
        if not (shape == want2 or shape == (b, s, past_length + s)):
            raise InputError(f"attention_mask has shape {shape}; for input_ids {(b, s)} and {past_length} cached "
                             f"positions it must be {want2}")
