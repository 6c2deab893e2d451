"""Checks of model inputs shared by the backends, so bad input fails with one clear line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

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


#: the label that marks a position without one (the reference's ignore_index)
IGNORE_INDEX = -100


@dataclass(frozen=True)
class ArrayFacts:
    """What validation needs to know of one input array, in no framework's terms.

    ``shape`` entries may be None (unknown while tracing); ``low``/``high`` are the smallest
    and largest value when the array is concrete and integer, else None (labels: of the values
    other than -100, which marks a position without a label).

    Example:
        >>> ArrayFacts.of(np.array([[2, 7]]))
        ArrayFacts(shape=(1, 2), integer=True, low=2, high=7)
        >>> ArrayFacts.of(np.array([-100, 3]), name="labels").low
        3
    """

    shape: tuple
    integer: bool
    low: int | None = None
    high: int | None = None

    @classmethod
    def of(cls, values, shape=None, integer: bool | None = None, name: str = "") -> "ArrayFacts":
        """Facts of ``values``: anything numpy can read, or None when they are not known (traced);
        a backend passes ``shape``/``integer`` from its own array when it knows them better."""
        if shape is None:
            shape = tuple(np.shape(values))
        if integer is None:
            integer = values is not None and np.issubdtype(np.asarray(values).dtype, np.integer)
        low = high = None
        if values is not None and integer:
            values = np.asarray(values)
            if name in LABEL_INPUTS:
                values = values[values != IGNORE_INDEX]
            if values.size:
                low, high = int(values.min()), int(values.max())
        return cls(tuple(shape), bool(integer), low, high)


#: every head's label arguments
LABEL_INPUTS = ("labels", "start_positions", "end_positions")
#: the masked LM's fixed-shape training inputs: positions [batch, P], their labels and weights
MASKED_INPUTS = ("masked_positions", "masked_labels", "masked_weights")


#: inputs whose values are indices, whatever the head
_INDEX_INPUTS = ("input_ids", "token_type_ids", "start_positions", "end_positions")


def validate_inputs(config, head: str, facts: Mapping[str, ArrayFacts | None], past_length: int | None = 0,
                    has_cross_attention_input: bool = False) -> None:
    """The input checks every backend runs before its forward pass, with one message each.

    ``facts`` maps argument names to :class:`ArrayFacts` (None or absent: not given).
    Raises :class:`InputError` when neither or both of ``input_ids``/``inputs_embeds`` are
    given, an index input is not integer or out of range, encoder states meet a config with
    no cross-attention, multiple-choice inputs are not ``[batch, choices, seq]``, or the mask
    or token types do not fit the ids. Unknown (traced) shapes and values are not checked.

    Example:
        >>> from roformer_core import RoFormerConfig
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=8, num_attention_heads=2)
        >>> validate_inputs(cfg, "model", {"input_ids": ArrayFacts.of(np.array([[2, 5]]))})
        >>> validate_inputs(cfg, "model", {})
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: give input_ids or inputs_embeds
    """
    from roformer_core.heads import get_head

    spec = get_head(head)
    ids, embeds = facts.get("input_ids"), facts.get("inputs_embeds")
    if ids is None and embeds is None:
        raise InputError("give input_ids or inputs_embeds")
    if ids is not None and embeds is not None:
        raise InputError("give input_ids or inputs_embeds, not both")
    index_inputs = _INDEX_INPUTS + (() if spec.float_labels_allowed else tuple(spec.label_keys))
    for name in index_inputs:
        value = facts.get(name)
        if value is not None and not value.integer:
            raise InputError(f"{name} must hold integers (an integer array)")
    unknown_labels = [k for k in LABEL_INPUTS if facts.get(k) is not None and k not in spec.label_keys]
    if unknown_labels:
        takes = " and ".join(spec.label_keys) if spec.label_keys else "no labels"
        raise InputError(f"{unknown_labels[0]} given, but the {head} head takes {takes}")
    if has_cross_attention_input and not (config.is_decoder and config.add_cross_attention):
        raise InputError("encoder_hidden_states given, but the config has no cross-attention "
                         "(set is_decoder=True and add_cross_attention=True)")
    shape = ids.shape if ids is not None else embeds.shape[:-1]
    mask_shape = None if facts.get("attention_mask") is None else facts["attention_mask"].shape
    types_shape = None if facts.get("token_type_ids") is None else facts["token_type_ids"].shape
    if spec.input_rank == 3:  # checked as the [batch * choices, seq] the encoder sees
        if len(shape) != 3:
            raise InputError(f"multiple choice inputs must be [batch, num_choices, seq], got shape {tuple(shape)}")
        shape, mask_shape, types_shape = (_merge_choices(s) for s in (shape, mask_shape, types_shape))
    if len(shape) >= 2 and shape[-1] == 0 and not past_length:
        # one rule for every backend: an empty batch gives empty outputs, an empty sequence is an error
        raise InputError("input_ids has no tokens (sequence length 0): give at least one token per row")
    known = past_length is not None and None not in tuple(shape) + tuple(mask_shape or ()) + tuple(types_shape or ())
    if known:
        check_shapes(tuple(shape), mask_shape, past_length, types_shape)
    for name, limit, field in (("input_ids", config.vocab_size, "vocab_size"),
                               ("token_type_ids", config.type_vocab_size, "type_vocab_size")):
        value = facts.get(name)
        if value is not None and value.low is not None:
            check_ids_range(name, value.low, value.high, limit, field)
    _check_labels(config, spec, facts, tuple(ids.shape if ids is not None else embeds.shape[:-1]))


def _check_labels(config, spec, facts, shape) -> None:
    """Labels of the shape the head wants, and class indices within its range (-100: no label)."""
    labels = facts.get("labels")
    if labels is None:
        return
    batch = shape[0] if shape else None
    token_level = spec.loss in ("token_cross_entropy", "shifted_token_cross_entropy")
    if token_level:
        wants, limit, field = [tuple(shape)], config.vocab_size, "vocab_size"
        if spec.name == "token_classification":
            limit, field = config.num_labels, "num_labels"
    elif spec.name == "multiple_choice":
        wants, limit, field = [(batch,)], (shape[1] if len(shape) > 1 else None), "the number of choices"
    else:  # sequence classification: class indices, or float targets per label
        wants = [(batch,), (batch, config.num_labels)] + ([(batch, 1)] if config.num_labels == 1 else [])
        limit, field = config.num_labels, "num_labels"
        if not labels.integer or config.problem_type in ("regression", "multi_label_classification"):
            limit = None
    if token_level and facts.get("prediction_mask") is not None:
        wants.append(tuple(labels.shape[:1]))  # the labels of the masked positions only: [count]
    known = None not in tuple(labels.shape) + tuple(shape)
    if known and tuple(labels.shape) not in wants:
        raise InputError(f"labels has shape {tuple(labels.shape)}; the {spec.name} head wants "
                         + " or ".join(str(w) for w in wants))
    if limit is not None and labels.low is not None and (labels.low < 0 or labels.high >= limit):
        bad = labels.low if labels.low < 0 else labels.high
        raise InputError(f"labels holds {bad}, outside [0, {limit}) ({field} = {limit}); "
                         f"{IGNORE_INDEX} marks a position without a label")


def _merge_choices(shape):
    if shape is None or len(shape) < 2:
        return shape
    merged = None if None in shape[:2] else shape[0] * shape[1]
    return (merged,) + tuple(shape[2:])


def check_masked_inputs(config, facts: dict, input_shape: tuple, labels_given: bool = False,
                        prediction_mask_given: bool = False) -> None:
    """One clear :class:`InputError` for bad ``masked_positions`` / ``masked_labels`` / ``masked_weights``
    (``facts``: :class:`ArrayFacts`, the labels' without -100) for inputs of ``input_shape`` [batch, seq].

    Example:
        >>> from roformer_core import RoFormerConfig
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_attention_heads=4)
        >>> check_masked_inputs(cfg, {"masked_positions": ArrayFacts.of(np.array([[1, 9]]))}, (1, 8))
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: masked_positions holds 9, outside [0, 8) (the sequence length)
    """
    positions, labels, weights = (facts.get(k) for k in MASKED_INPUTS)
    if positions is None:
        if labels is not None or weights is not None:
            raise InputError("masked_labels and masked_weights need masked_positions (the positions they label)")
        return
    if prediction_mask_given:
        raise InputError("give prediction_mask or masked_positions, not both")
    if labels_given and labels is None:
        raise InputError("with masked_positions give the labels per position as masked_labels ([batch, P], "
                         "-100 at padding), not labels")
    if not positions.integer:
        raise InputError("masked_positions must hold integers (an integer array)")
    batch, seq = input_shape
    if len(positions.shape) != 2 or None not in (batch, positions.shape[0]) and positions.shape[0] != batch:
        raise InputError(f"masked_positions must be [batch, P] with batch {batch}, got shape {tuple(positions.shape)}")
    for name, other in (("masked_labels", labels), ("masked_weights", weights)):
        if other is not None and None not in tuple(other.shape) + tuple(positions.shape) \
                and tuple(other.shape) != tuple(positions.shape):
            raise InputError(f"{name} has shape {tuple(other.shape)}; masked_positions has {tuple(positions.shape)}")
    if labels is not None and not labels.integer:
        raise InputError("masked_labels must hold integers (an integer array)")
    if positions.low is not None and seq is not None and (positions.low < 0 or positions.high >= seq):
        bad = positions.low if positions.low < 0 else positions.high
        raise InputError(f"masked_positions holds {bad}, outside [0, {seq}) (the sequence length)")
    if labels is not None and labels.low is not None and (labels.low < 0 or labels.high >= config.vocab_size):
        bad = labels.low if labels.low < 0 else labels.high
        raise InputError(f"masked_labels holds {bad}, outside [0, {config.vocab_size}) (vocab_size = "
                         f"{config.vocab_size}); -100 marks padding")
