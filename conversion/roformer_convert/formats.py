"""Checkpoint formats for ``roformer-convert``: the readers of ``roformer_core.formats``, plus Keras weights.

Every format is read by ``roformer_core.formats`` (the one reader interface the backends use
too); this module adds the reader of ``roformer_tf``'s Keras 3 ``.weights.h5``, which goes
through ``roformer_tf`` and so cannot live in the framework-neutral core.

Example:
    >>> tf_to_canonical("tf_ro_former_for_masked_lm/roformer/encoder/layer_._0/attention/self/query/kernel:0", 2)
    ('roformer.encoder.layer.0.attention.self.query.weight', True)
    >>> tf1_to_canonical("bert/encoder/layer_3/output/LayerNorm/gamma")
    ('roformer.encoder.layer.3.output.LayerNorm.weight', False)
"""

from __future__ import annotations

import numpy as np

from roformer_core.checkpoint import HEADS, canonical_spec
from roformer_core.config import RoFormerConfig
from roformer_core.errors import CheckpointError
from roformer_core.formats import (CARRIED_FILES, FILE_NAMES, FORMATS, READERS, ConvertError, Source,  # noqa: F401
                                   Tensor, _tag, detect_format, detect_head, drop_pages, open_source,
                                   register_reader, require_h5py, tf1_to_canonical, tf_to_canonical,
                                   transpose_copy)


def roformer_tf_classes(path: str):
    """``roformer_tf.MODEL_CLASSES`` (Keras weights are read and written through them), or a clear error.

    Example:
        >>> sorted(roformer_tf_classes("model.weights.h5"))[:2]
        ['causal_lm', 'masked_lm']
    """
    try:
        import roformer_tf
        return roformer_tf.MODEL_CLASSES
    except (ImportError, AttributeError):
        raise ConvertError(f"Keras weights ({path}) are read and written by roformer_tf, which needs TensorFlow: "
                           "pip install 'roformer-tri[tf]'") from None


#: safetensors tag -> Keras dtype policy name
KERAS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def _keras_weights(path: str) -> tuple[int, int, str]:
    """(number of float weights, their total size, float dtype) of a Keras ``.weights.h5``."""
    h5py = require_h5py()
    found = []

    def visit(_, obj):
        # Keras keeps bfloat16 as 2-byte opaque data marked by a "dtype" attribute
        dtype = obj.attrs.get("dtype", obj.dtype.name) if isinstance(obj, h5py.Dataset) else None
        if dtype in KERAS_DTYPES.values():
            found.append((obj.size, dtype))

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as e:
        raise CheckpointError(f"{path} is not a readable Keras weights file: {e}") from None
    if not found:
        raise CheckpointError(f"{path} holds no Keras weights")
    dtypes = {d for _, d in found}
    return len(found), sum(n for n, _ in found), dtypes.pop() if len(dtypes) == 1 else "float32"


def _read_keras(path: str, config: RoFormerConfig):
    """Through roformer_tf's public API: ``from_config``, ``load_weights``, ``named_variables``.

    Which head the file holds is not written in it: the heads whose parameters have the
    file's count and size are tried (the one the config declares first) until one loads.
    """
    classes = roformer_tf_classes(path)
    count, total, dtype = _keras_weights(path)
    fits = [h for h in HEADS if (len(canonical_spec(config, h)),
                                 sum(int(np.prod(s)) for s in canonical_spec(config, h).values())) == (count, total)]
    arch = [a.removeprefix("TF") for a in config.extra.get("architectures") or []]
    unlikely = "masked_lm" if config.is_decoder else "causal_lm"  # same weights: is_decoder tells them apart
    fits.sort(key=lambda h: (HEADS[h] not in arch, h == unlikely))
    errors = []
    for head in fits:
        model = classes[head].from_roformer_config(config, dtype=dtype)
        try:
            model.load_weights(path)
            break
        except (ValueError, KeyError, OSError) as e:
            errors.append(f"{HEADS[head]}: {(str(e).strip().splitlines() or [type(e).__name__])[0]}")
    else:
        detail = "; ".join(errors) or f"{count} weights of {total} values match no head"
        raise CheckpointError(f"{path} does not fit the config (hidden_size={config.hidden_size}, "
                              f"layers={config.num_hidden_layers}, vocab_size={config.vocab_size}): {detail}")
    tensors = {}
    for name, variable, transpose in model.named_variables():
        transpose = transpose and len(variable.shape) == 2
        shape = tuple(variable.shape[::-1] if transpose else variable.shape)
        tag = "BF16" if variable.dtype == "bfloat16" else _tag(variable.dtype)
        value = (lambda v=variable: np.asarray(v.numpy()).view(np.uint16) if v.dtype == "bfloat16" else v.numpy())
        tensors[name] = Tensor(name, shape, tag, value, transpose)
    return tensors, lambda: None


register_reader("keras", _read_keras)
