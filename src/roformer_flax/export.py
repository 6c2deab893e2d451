"""Serving exports of the Flax models: ``jax.export`` (serialized StableHLO) with a symbolic batch size and length.

:func:`export_model` lowers a model's inference forward once, for every batch size and every
sequence length up to ``max_length`` (the shapes are symbolic: ``batch``, ``seq``, and ``choices``
for multiple choice), into a ``jax.export.Exported``. Its function takes the params and the
inputs, ``f(params, input_ids, attention_mask, token_type_ids)``, and returns ``{field: array}``
(the head's fields of ``roformer_core.heads.HEAD_TABLE``, plus ``pooler_output`` when the model
has a pooler). :func:`save_exported` writes the serialized bytes, :func:`load_exported` reads them
back in any JAX process (no roformer code needed to run it), :func:`run_exported` runs numpy inputs.

The params are an argument, not constants of the graph, so the file stays small and serves any
checkpoint of the architecture: load them with ``from_pretrained(...).params``. The rotary table is
the eager model's (float64 rows cast once) for ``max_length`` positions; longer inputs are refused
by the exported function's shape check.

Example:
    >>> import os, tempfile
    >>> from roformer_core import RoFormerConfig
    >>> from roformer_flax import RoFormerForMaskedLM
    >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
    ...                      num_attention_heads=4, intermediate_size=64)
    >>> model = RoFormerForMaskedLM.from_config(cfg)
    >>> path = save_exported(export_model(model), os.path.join(tempfile.mkdtemp(), "mlm.jax"))
    >>> exported = load_exported(path)
    >>> ids = np.array([[2, 5, 7, 9, 3]])
    >>> out = run_exported(exported, model.params, {"input_ids": ids})
    >>> out["logits"].shape, bool(np.abs(out["logits"] - np.asarray(model(ids).logits)).max() < 1e-6)
    ((1, 5, 100), True)
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from roformer_core.errors import InputError
from roformer_core.heads import HEAD_TABLE
from roformer_core.io import atomic_path
from roformer_core.rotary import table_rows

#: the inputs of every exported function after the params, in this order
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def output_fields(model) -> tuple[str, ...]:
    """The fields an exported ``model`` returns: its head's (``HEAD_TABLE``), then ``pooler_output``
    when the model has a pooler.

    Example:
        >>> from roformer_core import RoFormerConfig
        >>> from roformer_flax import RoFormerForQuestionAnswering
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
        >>> output_fields(RoFormerForQuestionAnswering.from_config(cfg))
        ('start_logits', 'end_logits')
    """
    fields = HEAD_TABLE[model.head].output_fields
    if model.config.add_pooling_layer and model.head in ("model", "causal_lm"):
        fields = fields + ("pooler_output",)
    return fields


def export_model(model, *, max_length: int | None = None, platforms: list[str] | None = None):
    """``jax.export`` of ``model``'s inference forward with symbolic batch and sequence sizes
    (``seq <= max_length``; default: ``max(512, max_position_embeddings)``), for ``platforms``
    (default: the default backend's; e.g. ``["cpu", "cuda"]`` for both). Example: see the module docstring.
    """
    if not hasattr(model, "module") or model.head not in HEAD_TABLE:
        raise InputError(f"export_model takes a roformer_flax model, got {type(model).__name__}")
    if max_length is None:
        max_length = table_rows(0, model.config.max_position_embeddings)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise InputError(f"max_length must be a positive integer, got {max_length!r}")
    # the rotary table is sized from max_position_embeddings: with it at max_length, every length the
    # shape constraint allows is known to fit, and the table's rows stay the eager model's
    module = model.module.clone(config=model.config.replace(max_position_embeddings=max_length))
    fields = output_fields(model)
    extra = {"use_cache": False} if model.head == "causal_lm" else {}

    def forward(params, input_ids, attention_mask, token_type_ids):
        out = module.apply({"params": params}, input_ids, attention_mask, token_type_ids, **extra)
        return {field: getattr(out, field) for field in fields}

    names = "batch, choices, seq" if model.head == "multiple_choice" else "batch, seq"
    shape = jax_export.symbolic_shape(names, constraints=(f"seq <= {max_length}",))
    ids = jax.ShapeDtypeStruct(shape, jnp.int32)
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), model.params)
    try:
        return jax_export.export(jax.jit(forward), platforms=platforms)(params, ids, ids, ids)
    except ValueError as e:  # e.g. an unknown platform name
        raise InputError(f"cannot export for platforms {platforms}: {str(e).splitlines()[0]}") from None


def save_exported(exported, path: str | os.PathLike) -> str:
    """Write ``exported.serialize()`` to ``path`` (a temporary name renamed when complete); returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(exported.serialize())
    return os.fspath(path)


def load_exported(path: str | os.PathLike):
    """The ``jax.export.Exported`` saved at ``path``."""
    if not os.path.isfile(path):
        raise InputError(f"no exported model at {os.fspath(path)!r}")
    with open(path, "rb") as fh:
        blob = fh.read()
    try:
        return jax_export.deserialize(bytearray(blob))
    except Exception as e:  # flatbuffers raise assorted errors on bytes that are not an export
        raise InputError(f"{os.fspath(path)!r} is not a serialized jax.export ({type(e).__name__})") from None


def run_exported(exported, params, inputs: dict) -> dict[str, np.ndarray]:
    """Call an exported model on numpy ``inputs`` (``input_ids``; ``attention_mask`` and
    ``token_type_ids`` default to ones and zeros): ``{field: numpy array}``."""
    if inputs.get("input_ids") is None:
        raise InputError("give input_ids")
    unknown = sorted(set(inputs) - set(INPUT_NAMES))
    if unknown:
        raise InputError(f"an exported model takes {', '.join(INPUT_NAMES)}; not {', '.join(unknown)}")
    ids = np.asarray(inputs["input_ids"], dtype=np.int32)
    mask = np.asarray(inputs.get("attention_mask", np.ones_like(ids)), dtype=np.int32)
    types = np.asarray(inputs.get("token_type_ids", np.zeros_like(ids)), dtype=np.int32)
    try:
        out = exported.call(params, ids, mask, types)
    except ValueError as e:  # jax's own words are about refining shapes
        raise InputError(f"inputs of shape {ids.shape} do not fit the exported shapes {exported.in_avals[-3].shape} "
                         f"(a length past the max_length it was exported for?): {str(e).splitlines()[0]}") from None
    return {k: np.asarray(v) for k, v in out.items()}


__all__ = ["export_model", "save_exported", "load_exported", "run_exported", "output_fields", "INPUT_NAMES"]
