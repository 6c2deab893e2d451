"""Checkpoint formats: detection, and readers giving canonical tensors one at a time.

This is the one reader interface of the project: every backend's ``from_pretrained`` (through
``roformer_core.lifecycle``) and ``roformer-convert`` open checkpoints here. A new format is a
reader function registered in :data:`READERS` (``register_reader``).

Every reader turns a file into a :class:`Source`: the config and, per canonical name (the
reference PyTorch names of ``roformer_core.checkpoint``), a :class:`Tensor` whose data is
read only when asked for, from a memory map where the format allows; the writers
(``roformer_convert.writers``) pull them one at a time, so a conversion holds about one
tensor in memory. Names are mapped by rules, never by per-layer tables.

Formats (``FORMATS``): ``canonical`` (safetensors, single or sharded), ``torch``
(``pytorch_model.bin``, read without torch), ``tf-h5`` (the reference ``tf_model.h5``), ``flax`` (the reference
``flax_model.msgpack``, which is also what ``roformer_flax`` writes), ``tf1`` (original
``bert_model.ckpt`` checkpoints) and ``keras`` (``roformer_tf``'s Keras 3 ``.weights.h5``).

Example:
    >>> tf_to_canonical("tf_ro_former_for_masked_lm/roformer/encoder/layer_._0/attention/self/query/kernel:0", 2)
    ('roformer.encoder.layer.0.attention.self.query.weight', True)
    >>> tf1_to_canonical("bert/encoder/layer_3/output/LayerNorm/gamma")
    ('roformer.encoder.layer.3.output.LayerNorm.weight', False)
"""

from __future__ import annotations

import ctypes
import glob
import mmap
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from roformer_core.checkpoint import WEIGHTS_INDEX_NAME, WEIGHTS_NAME, Checkpoint, resolve_inside, to_canonical_name
from roformer_core.config import CONFIG_NAME, RoFormerConfig
from roformer_core.errors import CheckpointError, RoFormerError
from roformer_core.heads import detect_head  # noqa: F401  (re-exported: formats name their head)
from roformer_core.safetensors_io import TAGS
from roformer_core.torch_pickle import read_torch_bin

FORMATS = ("canonical", "torch", "tf-h5", "flax", "tf1", "keras")
#: the file each format has inside a checkpoint folder
FILE_NAMES = {"canonical": WEIGHTS_NAME, "torch": "pytorch_model.bin", "tf-h5": "tf_model.h5",
              "flax": "flax_model.msgpack", "tf1": "bert_model.ckpt", "keras": "model.weights.h5"}
#: files carried from the source folder to the destination beside the weights
CARRIED_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json",
                 "added_tokens.json")


def _tf_bundle():
    from roformer_convert import tf_bundle
    return tf_bundle


def _flax_msgpack():
    from roformer_convert import flax_msgpack
    return flax_msgpack


class ConvertError(RoFormerError, ValueError):
    """A conversion that cannot be done as asked (destination, target format, options)."""


# -- tensors and sources ------------------------------------------------------------------------
@dataclass
class Tensor:
    """One stored tensor under its canonical name, its data read only by :meth:`read`.

    ``stored()`` returns the array as the file holds it (BF16 as uint16 bits), ``transpose``
    says the file holds the transpose of the canonical ``[out, in]`` layout, and ``release``
    (for memory-mapped files) frees the pages the read brought in.

    Example:
        >>> kernel = np.arange(6, dtype=np.float32).reshape(2, 3)  # a Dense kernel [in, out]
        >>> t = Tensor("dense.weight", (3, 2), "F32", lambda: kernel, transpose=True)
        >>> t.read().tolist(), t.read(transposed=True) is kernel
        ([[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]], True)
    """

    name: str
    shape: tuple[int, ...]
    tag: str
    stored: Callable[[], np.ndarray]
    transpose: bool = False
    release: Callable[[], None] | None = None

    def read(self, transposed: bool = False) -> np.ndarray:
        """The data in canonical layout (its transpose if ``transposed``): the stored array
        itself when the layouts agree, else a contiguous transposed copy."""
        array = self.stored()
        return transpose_copy(array) if self.transpose != transposed and array.ndim == 2 else array


def transpose_copy(array: np.ndarray, rows: int = 256) -> np.ndarray:
    """A C-contiguous transpose of a 2-D array, copied in blocks of rows.

    ``np.ascontiguousarray(a.T)`` walks one side of a large matrix column by column and is
    about 3x slower; converting [in, out] kernels is most of what a conversion computes.

    Example:
        >>> transpose_copy(np.arange(6).reshape(2, 3)).tolist()
        [[0, 3], [1, 4], [2, 5]]
    """
    out = np.empty(array.shape[::-1], array.dtype)
    for start in range(0, array.shape[0], rows):
        out[:, start:start + rows] = array[start:start + rows].T
    return out


@dataclass
class Source:
    """An opened checkpoint: format, config, and tensors by canonical name (see :func:`open_source`).

    Example:
        >>> src = Source("flax", "x.msgpack", ".", RoFormerConfig(), {})
        >>> src.shapes(), src.close()
        ({}, None)
    """

    format: str
    path: str
    folder: str
    config: RoFormerConfig
    tensors: dict[str, Tensor]
    close: Callable[[], None] = field(default=lambda: None)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: t.shape for n, t in self.tensors.items()}


def _tag(dtype) -> str:
    name = np.dtype(dtype).name
    if name not in TAGS:
        raise CheckpointError(f"tensors of dtype {name} are not supported")
    return TAGS[name]


def _mapped(view_of: Callable[[], np.ndarray]) -> Callable[[], None]:
    return lambda: drop_pages(view_of())


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def drop_pages(array: np.ndarray) -> None:
    """Give back the resident pages of a view into a read-only file mapping.

    Pages of a file mapping count as the process's memory once read, so streaming a whole
    checkpoint through a memory map would end with the whole file resident. They are clean
    copies of the file (read again if touched), so dropping them after a tensor is written
    loses nothing. Only whole pages inside the array are dropped; never call this on an
    array that is not a view of a file mapping.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "x.bin"); np.ones(4096, np.float32).tofile(path)
        >>> view = np.memmap(path, dtype=np.float32, mode="r")
        >>> float(view.sum()); drop_pages(view); float(view.sum())  # read again from the file
        4096.0
        4096.0
    """
    madv = getattr(mmap, "MADV_DONTNEED", None)
    if _LIBC is None or madv is None or array.nbytes == 0:
        return
    start = array.__array_interface__["data"][0]
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, (start + array.nbytes) // page * page
    if hi > lo:
        _LIBC.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), madv)


# -- finding the format and the config ------------------------------------------------------------
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def require_h5py():
    """The h5py module, or a clear :class:`ConvertError` saying how to install it.

    Example:
        >>> require_h5py().__name__
        'h5py'
    """
    try:
        import h5py
    except ImportError:
        raise ConvertError("HDF5 files (tf_model.h5, *.weights.h5) need h5py: pip install h5py") from None
    return h5py


def _h5_kind(path: str) -> str:
    """``tf-h5`` (Keras 2 / reference layout with ``layer_names``) or ``keras`` (Keras 3 layout)."""
    h5py = require_h5py()
    try:
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs or "layer_names0" in f.attrs:
                return "tf-h5"
            if "layers" in f or "vars" in f:
                return "keras"
    except OSError as e:
        raise CheckpointError(f"{path} is not a readable HDF5 file: {e}") from None
    raise CheckpointError(f"{path} is an HDF5 file but holds no Keras weights")


def detect_format(path: str) -> tuple[str, str]:
    """``(format, weights path)`` of a checkpoint file or folder, by name and content.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp(); _ = open(os.path.join(d, "flax_model.msgpack"), "wb").write(b"\\x80")
        >>> detect_format(d)[0]
        'flax'
    """
    if os.path.isdir(path):
        for fmt in ("canonical", "torch", "tf-h5", "flax"):
            candidate = os.path.join(path, FILE_NAMES[fmt])
            if os.path.isfile(candidate):
                return fmt, candidate
        if os.path.isfile(os.path.join(path, WEIGHTS_INDEX_NAME)):
            return "canonical", os.path.join(path, WEIGHTS_INDEX_NAME)
        keras = sorted(glob.glob(os.path.join(path, "*.weights.h5")))
        if keras:
            return "keras", keras[0]
        indexes = sorted(glob.glob(os.path.join(path, "*.index")))
        if indexes:
            return "tf1", _tf_bundle().checkpoint_prefix(indexes[0])
        raise CheckpointError(f"no checkpoint in {path}: none of {', '.join(FILE_NAMES.values())}, "
                              f"{WEIGHTS_INDEX_NAME}, *.weights.h5 or a TF checkpoint *.index")
    if not os.path.exists(path):
        if os.path.isfile(path + ".index"):
            return "tf1", path
        raise CheckpointError(f"{path} does not exist")
    name = os.path.basename(path)
    if name.endswith((".safetensors", ".json")):
        return "canonical", path
    if name.endswith(".msgpack"):
        return "flax", path
    if name.endswith(".index") or ".data-" in name:
        return "tf1", _tf_bundle().checkpoint_prefix(path)
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if name.endswith(".h5") or magic == _HDF5_MAGIC:
        return _h5_kind(path), path
    if name.endswith((".bin", ".pt", ".pth")) or magic[:2] == b"PK":
        return "torch", path
    raise CheckpointError(f"cannot tell the checkpoint format of {path}; name it with --from ({', '.join(FORMATS)})")


def _locate(path: str, fmt: str) -> str:
    """The weights path of format ``fmt`` at ``path`` (a folder or the file itself)."""
    if fmt not in FORMATS:
        raise ConvertError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "tf1":
        if os.path.isdir(path):
            indexes = sorted(glob.glob(os.path.join(path, "*.index")))
            if not indexes:
                raise CheckpointError(f"no TF checkpoint (*.index) in {path}")
            return _tf_bundle().checkpoint_prefix(indexes[0])
        return _tf_bundle().checkpoint_prefix(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path} does not exist")
    if not os.path.isdir(path):
        return path
    if fmt == "canonical" and not os.path.isfile(os.path.join(path, WEIGHTS_NAME)) \
            and os.path.isfile(os.path.join(path, WEIGHTS_INDEX_NAME)):
        return os.path.join(path, WEIGHTS_INDEX_NAME)
    if fmt == "keras":
        found = sorted(glob.glob(os.path.join(path, "*.weights.h5")))
        if found:
            return found[0]
    candidate = os.path.join(path, FILE_NAMES[fmt])
    if not os.path.isfile(candidate):
        raise CheckpointError(f"no {FILE_NAMES[fmt]} in {path}")
    return candidate


def _find_config(folder: str, fmt: str, config_path: str | None = None) -> RoFormerConfig:
    """The config beside the weights (``config.json``; TF1 checkpoints: ``bert_config.json`` too).

    For a TF1 checkpoint whose config names no variant (:func:`infer_tf1_variant`), the variant
    is read from the tensor names.
    """
    if config_path is None:
        names = [CONFIG_NAME] + (["bert_config.json"] if fmt == "tf1" else [])
        found = [name for name in names if os.path.lexists(os.path.join(folder, name))]
        if not found:
            raise CheckpointError(f"no {' or '.join(names)} beside the weights in {folder}; give one with --config")
        config_path = resolve_inside(folder, found[0], "config")
    config = RoFormerConfig.from_json_file(config_path)
    if fmt == "tf1":
        config = infer_tf1_variant(folder, config_path, config)
    return config


#: what a config.json says of the variant; the original TF1 releases' bert_config.json says none of it
_VARIANT_FIELDS = ("norm_type", "use_bias", "add_pooling_layer")


def infer_tf1_variant(folder: str, config_path: str, config: RoFormerConfig) -> RoFormerConfig:
    """``config`` completed from the TF1 tensor names, when its file names no variant.

    The original releases chose RoFormer-V2 and the pooler by code arguments, so their
    ``bert_config.json`` cannot say: V2 is recognised by model variables without any
    ``bias``, ``beta`` or ``gamma`` (``norm_type="rms_norm"``, ``use_bias=False``), a pooler by
    ``bert/pooler/*``. One line (logged as a warning) says what was inferred. The pooler's
    activation is in no file: RoFormer-Sim needs ``pooler_activation="linear"`` given.

    Example:
        >>> import json, tempfile
        >>> d = tempfile.mkdtemp(); path = os.path.join(d, "bert_config.json")
        >>> _ = open(path, "w").write(json.dumps({"hidden_size": 8, "num_attention_heads": 2}))
        >>> infer_tf1_variant(d, path, RoFormerConfig.from_json_file(path)).norm_type  # no checkpoint here
        'layer_norm'
    """
    import json
    import logging

    path = os.path.join(config_path, CONFIG_NAME) if os.path.isdir(config_path) else config_path
    try:
        with open(path, encoding="utf-8") as fh:
            keys = json.load(fh)
    except (OSError, ValueError):  # read once already; a file that changed since says nothing here
        return config
    if not isinstance(keys, dict) or any(k in keys for k in _VARIANT_FIELDS):
        return config
    try:
        entries, _ = _tf_bundle().read_bundle(_locate(folder, "tf1"))
    except CheckpointError:
        return config  # no checkpoint to read: the reader will say why
    variables = [v for v in entries if tf1_to_canonical(v) is not None and v.startswith("bert/")]
    leaves = {v.rsplit("/", 1)[-1] for v in variables}
    changes, found = {}, []
    if variables and not leaves & {"bias", "beta", "gamma"}:
        changes.update(norm_type="rms_norm", use_bias=False)
        found.append("RoFormer-V2 (no bias, beta or gamma: norm_type='rms_norm', use_bias=false)")
    if any(v.startswith("bert/pooler/") for v in variables):
        changes.update(add_pooling_layer=True)
        found.append(f"a pooler (bert/pooler/*; pooler_activation={config.pooler_activation!r}, "
                     f"give pooler_activation='linear' for RoFormer-Sim)")
    if not changes:
        return config
    logging.getLogger("roformer").warning("%s names no RoFormer variant; from the TF1 tensor names: %s",
                                          os.path.basename(path), "; ".join(found))
    return config.replace(**changes)


def open_source(path: str | os.PathLike, fmt: str | None = None, config: RoFormerConfig | str | None = None) -> Source:
    """Open a checkpoint of any format: detect it (unless ``fmt``), find its config, map its names.

    ``config`` is a config object, a path to a config json, or None to look beside the weights.

    Example:
        >>> import tempfile
        >>> from roformer_core import save_checkpoint, canonical_spec
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> d = tempfile.mkdtemp()
        >>> save_checkpoint(d, cfg, {k: np.zeros(s, np.float32) for k, s in canonical_spec(cfg).items()})
        >>> src = open_source(d)
        >>> src.format, src.tensors["embeddings.word_embeddings.weight"].shape
        ('canonical', (10, 8))
    """
    path = os.fspath(path)
    fmt, weights = detect_format(path) if fmt is None else (fmt, _locate(path, fmt))
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(weights))
    if os.path.isdir(path):  # found here by name: it must be the folder's own (a file named itself is taken)
        own = weights + ".index" if fmt == "tf1" else weights
        resolve_inside(folder, os.path.relpath(own, folder), "weights file")
    if not isinstance(config, RoFormerConfig):
        config = _find_config(folder, fmt, config)
    tensors, close = READERS[fmt](weights, config)
    return Source(fmt, weights, folder, config, tensors, close)


# -- readers ----------------------------------------------------------------------------------------
def _read_canonical(path: str, config: RoFormerConfig):
    ckpt = Checkpoint(path, config)
    tensors = {}
    for n in ckpt.names():
        view = (lambda n=n: ckpt.get(n))
        tensors[n] = Tensor(n, ckpt.shape(n), ckpt.dtype(n), view, release=_mapped(view))
    return tensors, lambda: None


def _drop_if_mapped(array: np.ndarray) -> None:
    """:func:`drop_pages` only for a view of a file mapping (a decoded copy is ordinary memory)."""
    base = array
    while isinstance(base, np.ndarray) and not isinstance(base, np.memmap):
        base = base.base
    if isinstance(base, (np.memmap, mmap.mmap)):
        drop_pages(array)


def _read_torch(path: str, config: RoFormerConfig):
    """``pytorch_model.bin`` (zip or legacy) through ``roformer_core.torch_pickle``: no torch, no pickled code."""
    tensors = {}
    for n, t in read_torch_bin(path).items():
        tensors[n] = Tensor(n, tuple(t.shape), t.tag, t.get, release=lambda t=t: _drop_if_mapped(t.get()))
    return tensors, lambda: None


def tf_to_canonical(weight_name: str, ndim: int) -> tuple[str, bool]:
    """The reference rule from a TF weight name to a canonical name, and whether to transpose.

    Strip ``:0``, ``scope___x/`` -> ``x/``, ``_._`` -> a level, drop the model scope,
    kernel/embeddings/gamma -> weight, beta -> bias; 2-D kernels are ``[in, out]``.
    """
    name = weight_name.replace(":0", "")
    name = re.sub(r"/[^/]*___([^/]*)/", r"/\1/", name)
    name = name.replace("_._", "/")
    parts = [p for p in name.split("/") if p]
    parts = parts[1:] if len(parts) > 1 else parts
    transpose = parts[-1] == "kernel" and ndim == 2
    parts[-1] = {"kernel": "weight", "embeddings": "weight", "gamma": "weight", "beta": "bias"}.get(parts[-1],
                                                                                                    parts[-1])
    return ".".join(parts), transpose


def _h5_names(obj, attr: str) -> list[str]:
    """A Keras name-list attribute; Keras splits lists over 64 KB into ``attr0``, ``attr1`` ..."""
    if attr in obj.attrs:
        values = list(obj.attrs[attr])
    else:
        values, i = [], 0
        while f"{attr}{i}" in obj.attrs:
            values.extend(obj.attrs[f"{attr}{i}"])
            i += 1
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _read_tf_h5(path: str, config: RoFormerConfig):
    h5py = require_h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CheckpointError(f"{path} is not a readable HDF5 file: {e}") from None
    tensors: dict[str, Tensor] = {}
    whole = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        for layer in _h5_names(f, "layer_names"):
            group = f[layer]
            for weight in _h5_names(group, "weight_names"):
                ds = group[weight]
                name, transpose = tf_to_canonical(weight, ds.ndim)
                if name in tensors:  # the MLM head lists the shared embeddings again
                    continue
                shape = tuple(ds.shape[::-1] if transpose else ds.shape)
                offset = ds.id.get_offset()
                if offset is not None and ds.dtype.isnative and offset + ds.nbytes <= whole.size:
                    # a contiguous dataset (what Keras writes): read through a memory map, like safetensors
                    view = (lambda o=offset, ds=ds: whole[o:o + ds.nbytes].view(ds.dtype).reshape(ds.shape))
                    tensors[name] = Tensor(name, shape, _tag(ds.dtype), view, transpose, _mapped(view))
                else:  # chunked, compressed or big-endian: h5py decodes it
                    native = (lambda ds=ds: np.asarray(ds[()], dtype=ds.dtype.newbyteorder("=")))
                    tensors[name] = Tensor(name, shape, _tag(ds.dtype), native, transpose)
    except (KeyError, OSError) as e:
        f.close()
        raise CheckpointError(f"{path} is damaged or not a TF weights file: {e}") from None
    if not tensors:
        f.close()
        raise CheckpointError(f"{path} holds no TF weights (no layer_names / weight_names)")
    return tensors, f.close


def _read_flax(path: str, config: RoFormerConfig):
    tensors = {}
    for key, array in _flax_msgpack().read_msgpack(path).items():
        name, transpose = to_canonical_name(key)
        transpose = transpose and len(array.shape) == 2
        shape = tuple(array.shape[::-1] if transpose else array.shape)
        tag = "BF16" if array.dtype == "bfloat16" else _tag(array.dtype)
        release = _mapped(array.get) if len(array.ranges) == 1 else None  # chunked arrays are copies
        tensors[name] = Tensor(name, shape, tag, array.get, transpose, release)
    return tensors, lambda: None


#: TF1 variables that are not model weights: optimizer slots, step counter, NSP head (the pooler is
#: kept: RoFormer-Sim's sentence vector is its output)
_TF1_SKIP = {"adam_m", "adam_v", "AdamWeightDecayOptimizer", "AdamWeightDecayOptimizer_1", "global_step"}
_TF1_SKIP_PREFIXES = ("cls/seq_relationship/",)


def tf1_to_canonical(name: str) -> tuple[str, bool] | None:
    """The reference rule from an original TF1 variable name, or None for a skipped variable.

    ``bert`` -> ``roformer``, ``layer_N`` -> ``layer.N``, kernel/gamma -> weight,
    beta/output_bias -> bias, ``*_embeddings`` -> ``*_embeddings.weight``, and
    ``encoder/embedding_hidden_mapping_in`` (embedding size != hidden size) -> ``embeddings_project``.
    RoFormer-Sim's pooler is kept; RoFormer-V2's names are V1's without bias, beta and gamma.

    Example:
        >>> tf1_to_canonical("bert/pooler/dense/kernel"), tf1_to_canonical("cls/seq_relationship/output_bias")
        (('roformer.pooler.dense.weight', True), None)
    """
    parts = name.split("/")
    if _TF1_SKIP.intersection(parts) or name.startswith(_TF1_SKIP_PREFIXES):
        return None
    parts = ["roformer" if p == "bert" else p for p in parts]
    if parts[1:3] == ["encoder", "embedding_hidden_mapping_in"]:
        parts[1:3] = ["embeddings_project"]
    parts = [re.sub(r"^([A-Za-z]+)_(\d+)$", r"\1.\2", p) for p in parts]
    leaf = parts[-1]
    transpose = leaf == "kernel"
    if leaf.endswith("_embeddings"):
        parts.append("weight")
    else:
        parts[-1] = {"kernel": "weight", "gamma": "weight", "beta": "bias", "output_bias": "bias"}.get(leaf, leaf)
    return ".".join(parts), transpose


def _read_tf1(prefix: str, config: RoFormerConfig):
    entries, data = _tf_bundle().read_bundle(prefix)
    folder = os.path.dirname(os.path.abspath(prefix))
    for shard in range(data.num_shards):  # the index says how many; each must be the folder's own
        name = os.path.basename(data.shard_path(shard))
        if os.path.lexists(os.path.join(folder, name)):
            resolve_inside(folder, name, "data shard")
    tensors = {}
    for var, entry in entries.items():
        mapped = tf1_to_canonical(var)
        if mapped is None:
            continue
        name, transpose = mapped
        transpose = transpose and len(entry.shape) == 2
        if entry.dtype not in _tf_bundle().DTYPES:
            raise CheckpointError(f"variable {var!r} of {prefix} has unsupported TF dtype {entry.dtype}")
        view = (lambda var=var, entry=entry: data.get(var, entry))
        shape = tuple(entry.shape[::-1] if transpose else entry.shape)
        tensors[name] = Tensor(name, shape, _tf_bundle().DTYPES[entry.dtype][1], view, transpose, _mapped(view))
    if not tensors:
        raise CheckpointError(f"{prefix} holds no model variables")
    return tensors, lambda: None



#: format name -> reader ``(weights path, config) -> ({canonical name: Tensor}, close)``
READERS: dict[str, Callable] = {"canonical": _read_canonical, "torch": _read_torch, "tf-h5": _read_tf_h5,
                                "flax": _read_flax, "tf1": _read_tf1}


def register_reader(fmt: str, reader: Callable) -> None:
    """Add (or replace) the reader of format ``fmt``; ``roformer_convert`` registers the Keras one.

    Example:
        >>> register_reader("canonical", READERS["canonical"])
        >>> "canonical" in READERS
        True
    """
    READERS[fmt] = reader
