"""The test harness every backend's tests call (keras-hub style): configs, inputs, reference outputs.

The PyTorch backend is checked against the reference implementation (``transformers``);
the Keras and Flax backends are then checked against the PyTorch backend through the
same canonical checkpoint, with the same inputs and the same output fields.
"""

from __future__ import annotations

import numpy as np

from roformer_core import RoFormerConfig
from roformer_core.checkpoint import HEADS

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3)

#: The config variants every backend is tested on.
VARIANTS = {
    "default": RoFormerConfig(**TINY),
    "embedding_size": RoFormerConfig(**TINY, embedding_size=24),
    "rotary_value": RoFormerConfig(**TINY, rotary_value=True),
    "decoder_cross": RoFormerConfig(**TINY, is_decoder=True, add_cross_attention=True),
    "gelu_new": RoFormerConfig(**{**TINY, "hidden_act": "gelu_new"}),
}

#: Which output fields each head returns (besides hidden_states / attentions).
OUTPUT_FIELDS = {
    "model": ["last_hidden_state"],
    "masked_lm": ["logits"],
    "causal_lm": ["logits"],
    "sequence_classification": ["logits"],
    "multiple_choice": ["logits"],
    "token_classification": ["logits"],
    "question_answering": ["start_logits", "end_logits"],
}
ALL_HEADS = list(HEADS)


def config_for(head: str, variant: str = "default") -> RoFormerConfig:
    """A tiny config for ``head``: the causal LM is always a decoder."""
    cfg = VARIANTS[variant]
    if head == "causal_lm" and not cfg.is_decoder:
        cfg = cfg.replace(is_decoder=True)
    return cfg


def make_inputs(config: RoFormerConfig, head: str, batch: int = 2, seq: int = 7, seed: int = 0) -> dict:
    """numpy inputs with padding in the last row and both token types; [B, C, S] for multiple choice."""
    rng = np.random.default_rng(seed)
    shape = (batch, 2, seq) if head == "multiple_choice" else (batch, seq)
    ids = rng.integers(1, config.vocab_size, size=shape, dtype=np.int64)
    mask = np.ones(shape, dtype=np.int64)
    mask[..., -1, seq - 2:] = 0  # padding at the end of the last row
    ids = np.where(mask == 1, ids, config.pad_token_id)
    types = np.zeros(shape, dtype=np.int64)
    types[..., seq // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def make_labels(config: RoFormerConfig, head: str, inputs: dict, seed: int = 1) -> dict:
    """Labels of the right kind for ``head`` (-100 on padding for token-level heads)."""
    rng = np.random.default_rng(seed)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    b = ids.shape[0]
    if head in ("masked_lm", "causal_lm"):
        return {"labels": np.where(mask == 1, ids, -100)}
    if head == "sequence_classification":
        return {"labels": rng.integers(0, config.num_labels, size=(b,), dtype=np.int64)}
    if head == "multiple_choice":
        return {"labels": rng.integers(0, ids.shape[1], size=(b,), dtype=np.int64)}
    if head == "token_classification":
        return {"labels": np.where(mask == 1, rng.integers(0, config.num_labels, size=ids.shape), -100)}
    if head == "question_answering":
        return {"start_positions": rng.integers(0, ids.shape[1], size=(b,), dtype=np.int64),
                "end_positions": rng.integers(0, ids.shape[1], size=(b,), dtype=np.int64)}
    return {}


def save_random_checkpoint(directory, config: RoFormerConfig, head: str, seed: int = 0) -> str:
    """A randomly initialised PyTorch model of ``head`` saved as a canonical folder.

    Biases and LayerNorm parameters are randomised too, so a mapping mistake cannot hide
    behind zeros and ones.
    """
    import torch

    from roformer_torch import MODEL_CLASSES

    torch.manual_seed(seed)
    model = MODEL_CLASSES[head](config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(directory)
    return str(directory)


def torch_outputs(directory, head: str, inputs: dict, labels: dict | None = None, **kwargs) -> dict:
    """numpy outputs of the PyTorch backend: the fields, hidden_states, attentions (and loss)."""
    import torch

    from roformer_torch import MODEL_CLASSES

    model = MODEL_CLASSES[head].from_pretrained(directory, dtype=torch.float32)
    feed = {k: torch.as_tensor(v) for k, v in {**inputs, **(labels or {})}.items()}
    with torch.no_grad():
        out = model(**feed, output_hidden_states=True, output_attentions=True, **kwargs)
    return to_numpy_dict(out)


def to_numpy_dict(out) -> dict:
    """Flatten an output object into ``{field or field.i: numpy array}``."""
    result = {}
    for key, value in out.items():
        if isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                if isinstance(v, (tuple, list)):
                    for j, w in enumerate(v):
                        result[f"{key}.{i}.{j}"] = _np(w)
                else:
                    result[f"{key}.{i}"] = _np(v)
        else:
            result[key] = _np(value)
    return result


def _np(x):
    if hasattr(x, "detach"):
        x = x.detach().float().cpu()
    return np.asarray(x, dtype=np.float32)


def assert_outputs_close(got: dict, want: dict, atol: float = 1e-5, keys=None) -> None:
    """Every key of ``want`` (or ``keys``) is in ``got`` with the same shape and within ``atol``."""
    keys = list(want) if keys is None else keys
    assert keys, "nothing to compare"
    errors = []
    for k in keys:
        assert k in got, f"output {k!r} missing; got {sorted(got)}"
        a, b = np.asarray(got[k], np.float32), np.asarray(want[k], np.float32)
        assert a.shape == b.shape, f"{k}: shape {a.shape} != {b.shape}"
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        if not diff <= atol:
            errors.append(f"{k}: max abs diff {diff:.3g} > {atol}")
    assert not errors, "; ".join(errors)


# -- the reference (transformers 5.x, PyTorch; test-only) -------------------------------------------
REF_CLASSES = {head: cls for head, cls in HEADS.items()}


def reference_model(head: str, config: RoFormerConfig, seed: int = 0):
    """A random reference (transformers) model of ``head``; biases and LayerNorms randomised too,
    so a mapping error cannot hide behind zeros and ones."""
    import torch
    import transformers  # the oracle: a test-only dependency, never imported by the package

    torch.manual_seed(seed)
    ref = getattr(transformers, REF_CLASSES[head])(transformers.RoFormerConfig(**config.to_dict())).eval()
    with torch.no_grad():
        for p in ref.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return ref


def cross_inputs(config: RoFormerConfig, head: str, batch: int = 2, length: int = 5) -> dict:
    """numpy encoder states (with padding) for the decoder-with-cross-attention variant, for the
    heads that take them; {} otherwise."""
    if not (config.is_decoder and config.add_cross_attention) or head not in ("model", "causal_lm"):
        return {}
    rng = np.random.default_rng(5)
    mask = np.ones((batch, length), np.int64)
    mask[0, 3:] = 0
    return {"encoder_hidden_states": rng.normal(size=(batch, length, config.hidden_size)).astype(np.float32),
            "encoder_attention_mask": mask}


def reference_outputs(ref, inputs: dict, **options) -> dict:
    """The reference's outputs on numpy inputs, flattened like :func:`flatten`."""
    import torch

    with torch.no_grad():
        out = ref(**{k: torch.as_tensor(v) for k, v in inputs.items()}, **options, return_dict=True)
    return to_numpy_dict(out)


def flatten(out: dict) -> dict:
    """``{field or field.i or field.i.j: array}`` of a backend adapter's numpy outputs."""
    result = {}
    for key, value in out.items():
        if isinstance(value, tuple):
            for i, v in enumerate(value):
                if isinstance(v, tuple):
                    for j, w in enumerate(v):
                        result[f"{key}.{i}.{j}"] = np.asarray(w)
                else:
                    result[f"{key}.{i}"] = np.asarray(v)
        else:
            result[key] = np.asarray(value)
    return result
