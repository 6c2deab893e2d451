"""Serving exports of the PyTorch models: ONNX files with a dynamic batch size and sequence length.

:func:`export_onnx` writes any head (``RoFormerModel``, every task head) as one ONNX file whose
inputs are ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, ``[batch, seq]``;
``[batch, choices, seq]`` for multiple choice) and whose outputs are the head's fields
(``roformer_core.heads.HEAD_TABLE``: ``logits``, or ``start_logits`` and ``end_logits``, or
``last_hidden_state``; plus ``pooler_output`` when the model has a pooler). The rotary table is
computed inside the graph from the sequence length, in float64 like the eager model, so one file
serves every batch size and every length, longer than ``max_position_embeddings`` too, with the
eager model's numbers. :func:`onnx_session` opens a file with onnxruntime and :func:`run_onnx`
runs it on numpy inputs.

The graph is the inference graph (no dropout, no labels, no key/value cache; a causal LM keeps
its causal mask). It is traced by ``torch.onnx.export``'s TorchScript exporter, which needs only
the ``onnx`` package.

Example:
    >>> import os, tempfile, torch
    >>> from roformer_core import RoFormerConfig
    >>> from roformer_torch import RoFormerForMaskedLM
    >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
    ...                      num_attention_heads=4, intermediate_size=64)
    >>> model = RoFormerForMaskedLM(cfg).eval()
    >>> path = export_onnx(model, os.path.join(tempfile.mkdtemp(), "mlm.onnx"))
    >>> ids = np.array([[2, 5, 7, 9, 11, 3]])
    >>> out = run_onnx(onnx_session(path), {"input_ids": ids})
    >>> with torch.no_grad():
    ...     want = model(torch.as_tensor(ids)).logits.numpy()
    >>> out["logits"].shape, bool(np.abs(out["logits"] - want).max() < 1e-5)
    ((1, 6, 100), True)
"""

from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
import torch
from torch import nn

from roformer_core.errors import InputError
from roformer_core.heads import HEAD_TABLE
from roformer_core.io import atomic_path

#: the inputs of every exported graph, in this order
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: the ONNX opset written by default (LayerNormalization needs 17)
DEFAULT_OPSET = 17


class _Serving(nn.Module):
    """The model's inference forward with positional inputs and a tuple of output fields (what a tracer wants)."""

    def __init__(self, model: nn.Module, fields: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.fields = fields

    def forward(self, input_ids, attention_mask, token_type_ids):
        kwargs = {"use_cache": False} if self.model.head == "causal_lm" else {}
        # forward, not __call__: the value checks of __call__ need concrete ids
        out = self.model.forward(input_ids, attention_mask, token_type_ids, **kwargs)
        return tuple(getattr(out, f) for f in self.fields)


def output_fields(model: nn.Module) -> tuple[str, ...]:
    """The fields an exported ``model`` returns: its head's (``HEAD_TABLE``), then ``pooler_output``
    when the model has a pooler.

    Example:
        >>> from roformer_core import RoFormerConfig
        >>> from roformer_torch import RoFormerForQuestionAnswering
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
        >>> output_fields(RoFormerForQuestionAnswering(cfg))
        ('start_logits', 'end_logits')
    """
    fields = HEAD_TABLE[model.head].output_fields
    if model.config.add_pooling_layer and model.head in ("model", "causal_lm"):
        fields = fields + ("pooler_output",)
    return fields


def _dynamic_axes(head: str, fields: tuple[str, ...]) -> dict:
    rows = {0: "batch", 1: "choices", 2: "sequence"} if head == "multiple_choice" else {0: "batch", 1: "sequence"}
    axes = {name: dict(rows) for name in INPUT_NAMES}
    for field in fields:
        if field in ("pooler_output",) or head in ("sequence_classification",):
            axes[field] = {0: "batch"}
        elif head == "multiple_choice":
            axes[field] = {0: "batch", 1: "choices"}
        else:
            axes[field] = {0: "batch", 1: "sequence"}
    return axes


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def export_onnx(model: nn.Module, path: str | os.PathLike, *, opset_version: int = DEFAULT_OPSET,
                example_length: int = 8) -> str:
    """Write ``model`` (any RoFormer head, float32 or float16) to ``path`` as ONNX, with dynamic batch and
    sequence axes (and choices for multiple choice); returns the path. Written to a temporary name
    and renamed when complete. The model's train/eval mode is left as it was.

    ``example_length`` is the length of the example traced; the file serves any length.
    Example: see the module docstring.
    """
    if not hasattr(model, "head") or model.head not in HEAD_TABLE:
        raise InputError(f"export_onnx takes a roformer_torch model, got {type(model).__name__}")
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.float16):
        raise InputError(f"export a float32 or float16 model (onnxruntime has no {dtype} kernels for most "
                         f"operators); call model.float() first")
    if example_length < 2:
        raise InputError(f"example_length must be at least 2, got {example_length}")
    fields = output_fields(model)
    device = next(model.parameters()).device
    shape = (2, 2, example_length) if model.head == "multiple_choice" else (2, example_length)
    ids = torch.full(shape, 5, dtype=torch.long, device=device) % model.config.vocab_size
    example = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    with _eval_mode(model), atomic_path(path) as tmp, warnings.catch_warnings():
        # the TorchScript exporter's deprecation notice, and tracer notes about the shape checks
        # (values the graph recomputes from its inputs)
        warnings.simplefilter("ignore")
        torch.onnx.export(_Serving(model, fields).eval(), example, tmp, dynamo=False, input_names=list(INPUT_NAMES),
                          output_names=list(fields), dynamic_axes=_dynamic_axes(model.head, fields),
                          opset_version=opset_version, do_constant_folding=True)
    return os.fspath(path)


def onnx_session(path: str | os.PathLike, threads: int | None = None, providers: list[str] | None = None):
    """An ``onnxruntime.InferenceSession`` on ``path`` (CPU unless ``providers`` say otherwise;
    ``threads`` caps its intra-op threads).

    Example: see the module docstring.
    """
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise InputError("running ONNX files needs onnxruntime: pip install onnxruntime") from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    if not os.path.isfile(path):
        raise InputError(f"no ONNX file at {os.fspath(path)!r}")
    return ort.InferenceSession(os.fspath(path), options, providers=providers or ["CPUExecutionProvider"])


def run_onnx(session, inputs: dict) -> dict[str, np.ndarray]:
    """Run an exported graph on numpy ``inputs`` (``input_ids``; ``attention_mask`` and ``token_type_ids``
    default to ones and zeros): ``{field: array}``.

    Example: see the module docstring.
    """
    if inputs.get("input_ids") is None:
        raise InputError("give input_ids")
    ids = np.asarray(inputs["input_ids"], dtype=np.int64)
    feed = {"input_ids": ids,
            "attention_mask": np.asarray(inputs.get("attention_mask", np.ones_like(ids)), dtype=np.int64),
            "token_type_ids": np.asarray(inputs.get("token_type_ids", np.zeros_like(ids)), dtype=np.int64)}
    unknown = sorted(set(inputs) - set(INPUT_NAMES))
    if unknown:
        raise InputError(f"an exported graph takes {', '.join(INPUT_NAMES)}; not {', '.join(unknown)}")
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


__all__ = ["export_onnx", "onnx_session", "run_onnx", "output_fields", "INPUT_NAMES"]
