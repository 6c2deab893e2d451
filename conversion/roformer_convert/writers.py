"""Checkpoint writers: each pulls ``(canonical name, lazy array)`` pairs one at a time into a folder.

A writer is ``write(folder, config, head, items, max_shard_size)``; ``items`` are lazy arrays
with ``shape`` and a safetensors ``tag`` known up front and data read by ``np.asarray`` (and
``.T`` for the transposed layout, so a kernel read as [in, out] is written as [in, out]
without being transposed twice). The folder is a temporary one that :func:`convert` renames
into place, so a failure leaves nothing behind.

Example:
    >>> flax_path("roformer.embeddings.word_embeddings.weight", 2)
    (('roformer', 'embeddings', 'word_embeddings', 'embedding'), False)
    >>> tf_weight_name("roformer.encoder.layer.3.intermediate.dense.weight", 2)
    ('roformer/encoder/layer_._3/intermediate/dense/kernel:0', True)
"""

from __future__ import annotations

import json
import os
import re
from typing import Callable

import numpy as np

from roformer_core.checkpoint import HEADS, WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from roformer_core.config import RoFormerConfig
from roformer_core.io import atomic_write_text
from roformer_core.rotary import sinusoidal_table
from roformer_core.safetensors_io import STORAGE, write_safetensors

from roformer_convert import flax_msgpack
from roformer_convert.formats import FILE_NAMES, KERAS_DTYPES, ConvertError, require_h5py, roformer_tf_classes


def parse_size(text: str | int) -> int:
    """``"5GB"`` -> 5_000_000_000, ``"100MiB"`` -> 104_857_600, ``"123"`` -> 123 bytes.

    Example:
        >>> parse_size("2MB"), parse_size("1KiB")
        (2000000, 1024)
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ConvertError(f"cannot read the size {text!r}; write e.g. 500MB, 2GB or a number of bytes")
    number, unit, binary = float(m.group(1)), m.group(2).upper(), m.group(3)
    size = int(number * (1024 if binary else 1000) ** " KMGT".index(unit or " "))
    if size <= 0:
        raise ConvertError(f"the size {text!r} must be positive")
    return size


def _nbytes(lazy) -> int:
    return int(np.prod(lazy.shape, dtype=np.int64)) * np.dtype(STORAGE[lazy.tag]).itemsize


def _write_canonical(folder: str, config: RoFormerConfig, head: str, items: list, max_shard_size: int | None) -> None:
    """``model.safetensors``, or shards of at most ``max_shard_size`` bytes and their index."""
    tags = {n: lazy.tag for n, lazy in items}
    total = sum(_nbytes(lazy) for _, lazy in items)
    if max_shard_size is None or total <= max_shard_size:
        write_safetensors(os.path.join(folder, WEIGHTS_NAME), items, metadata={"format": "pt"}, tags=tags)
        return
    shards: list[list] = [[]]
    size = 0
    for name, lazy in items:  # a tensor larger than the limit gets a shard of its own
        if shards[-1] and size + _nbytes(lazy) > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append((name, lazy))
        size += _nbytes(lazy)
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(os.path.join(folder, file), shard, metadata={"format": "pt"}, tags=tags)
        weight_map.update({name: file for name, _ in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    atomic_write_text(os.path.join(folder, WEIGHTS_INDEX_NAME), json.dumps(index, indent=2) + "\n")


def flax_path(name: str, ndim: int) -> tuple[tuple[str, ...], bool]:
    """Canonical name -> (Flax param path, transpose?): the inverse of ``to_canonical_name``.

    Example:
        >>> flax_path("roformer.encoder.layer.0.output.LayerNorm.weight", 1)
        (('roformer', 'encoder', 'layer', '0', 'output', 'LayerNorm', 'scale'), False)
    """
    *modules, leaf = name.split(".")
    transpose = False
    if leaf == "weight":
        if modules[-1] == "LayerNorm":
            leaf = "scale"
        elif modules[-1].endswith("_embeddings"):
            leaf = "embedding"
        else:
            leaf, transpose = "kernel", ndim == 2
    return tuple(modules + [leaf]), transpose


def _write_flax(folder: str, config: RoFormerConfig, head: str, items: list, max_shard_size: int | None) -> None:
    """``flax_model.msgpack`` in the reference Flax layout (also ``roformer_flax``'s)."""
    arrays, dtype_names = {}, {}
    for name, lazy in items:
        path, transpose = flax_path(name, len(lazy.shape))
        arrays[path] = lazy.T if transpose else lazy
        if lazy.tag == "BF16":
            dtype_names[path] = "bfloat16"
    flax_msgpack.write_msgpack(os.path.join(folder, FILE_NAMES["flax"]), arrays, dtype_names)


def _snake(class_name: str) -> str:
    """Keras' automatic layer name: ``TFRoFormerForMaskedLM`` -> ``tf_ro_former_for_masked_lm``."""
    name = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def tf_weight_name(name: str, ndim: int) -> tuple[str, bool]:
    """Canonical name (with the ``roformer.`` prefix) -> reference TF weight path (no scope), transpose?

    Example:
        >>> tf_weight_name("cls.predictions.transform.LayerNorm.bias", 1)
        ('mlm___cls/predictions/transform/LayerNorm/beta:0', False)
    """
    *modules, leaf = name.split(".")
    transpose = False
    if modules[-1] == "LayerNorm":
        leaf = {"weight": "gamma", "bias": "beta"}[leaf]
    elif leaf == "weight" and modules[-1].endswith("_embeddings") and modules[-1] != "word_embeddings":
        leaf = "embeddings"  # the reference's word embeddings are a raw variable named "weight"
    elif leaf == "weight" and not modules[-1].endswith("_embeddings"):
        leaf, transpose = "kernel", ndim == 2
    path = re.sub(r"(^|/)layer/(\d+)(?=/|$)", r"\1layer_._\2", "/".join(modules))
    if modules[0] == "cls":  # the reference names its LM head layer "mlm___cls"
        path = "mlm___" + path
    return f"{path}/{leaf}:0", transpose


_H5_ATTR_LIMIT = 64512  # HDF5 object headers hold at most 64 KB of attributes


def _set_h5_names(obj, attr: str, names: list[str]) -> None:
    data = np.array([n.encode("utf-8") for n in names])
    chunks = 1
    while data.nbytes / chunks > _H5_ATTR_LIMIT:
        chunks += 1
    if chunks == 1:
        obj.attrs[attr] = data
    else:
        for i, part in enumerate(np.array_split(data, chunks)):
            obj.attrs[f"{attr}{i}"] = part


def _write_tf_h5(folder: str, config: RoFormerConfig, head: str, items: list, max_shard_size: int | None) -> None:
    """``tf_model.h5`` in the reference TF layout, readable by ``TFRoFormer*.from_pretrained``."""
    h5py = require_h5py()
    if any(lazy.tag == "BF16" for _, lazy in items):
        raise ConvertError("the TF h5 format cannot hold bfloat16; convert with --dtype float32 or float16")
    if any(name.endswith("cls.predictions.decoder.weight") for name, _ in items):
        raise ConvertError("the reference TF classes always tie the decoder to the word embeddings; "
                           "this checkpoint has an untied decoder (tie_word_embeddings=false)")
    scope = _snake("TF" + HEADS[head])
    prefix = "roformer." if head == "model" else ""  # the bare reference TF model nests its layers too
    dtype = next(np.dtype(STORAGE[lazy.tag]) for _, lazy in items)
    table = sinusoidal_table(config.max_position_embeddings, config.head_dim).astype(dtype)
    entries = [("roformer.encoder.embed_positions.weight", table)] + [(prefix + n, lazy) for n, lazy in items]
    groups: dict[str, list[str]] = {}
    with h5py.File(os.path.join(folder, FILE_NAMES["tf-h5"]), "w") as f:
        for name, lazy in entries:
            weight, transpose = tf_weight_name(name, len(lazy.shape))
            layer = weight.split("/")[0]
            full = f"{scope}/{weight}"
            f.require_group(layer).create_dataset(full, data=np.asarray(lazy.T if transpose else lazy))
            groups.setdefault(layer, []).append(full)
        if "mlm___cls" in groups:  # the reference LM head layer owns the shared embeddings layer as well
            shared = [w for w in groups["roformer"] if "/roformer/embeddings/" in w]
            for w in shared:
                f["mlm___cls"][w] = f["roformer"][w]  # a hard link, not a second copy
            groups["mlm___cls"] += shared
        if head == "multiple_choice":  # the reference has a weightless "sequence_summary" layer
            groups["sequence_summary"] = []
            f.require_group("sequence_summary")
        _set_h5_names(f, "layer_names", list(groups))
        for layer, weights in groups.items():
            _set_h5_names(f[layer], "weight_names", weights)


def _write_keras(folder: str, config: RoFormerConfig, head: str, items: list, max_shard_size: int | None) -> None:
    """``model.weights.h5`` as ``roformer_tf``'s ``save_weights`` writes it (the model is built in memory)."""
    classes = roformer_tf_classes(folder)
    tags = {lazy.tag for _, lazy in items}
    if len(tags) > 1:
        raise ConvertError(f"a Keras model has one dtype; the tensors have {', '.join(sorted(tags))} (use --dtype)")
    model = classes[head].from_roformer_config(config, dtype=KERAS_DTYPES[tags.pop()])
    arrays = dict(items)
    variables = list(model.named_variables())
    missing = [name for name, _, _ in variables if name not in arrays]
    if missing or len(variables) != len(arrays):
        raise ConvertError(f"the roformer_tf {HEADS[head]} does not match the checkpoint: "
                           f"missing {', '.join(missing) or 'nothing'}; has {len(variables)} variables "
                           f"for {len(arrays)} tensors")
    for name, variable, transpose in variables:
        lazy = arrays[name]
        array = np.asarray(lazy.T if transpose and len(lazy.shape) == 2 else lazy)
        if lazy.tag == "BF16":
            import ml_dtypes

            array = array.view(ml_dtypes.bfloat16)
        variable.assign(array)
    model.save_weights(os.path.join(folder, FILE_NAMES["keras"]))


WRITERS: dict[str, Callable] = {"canonical": _write_canonical, "tf-h5": _write_tf_h5, "flax": _write_flax,
                                "keras": _write_keras}
