"""Safetensors files read through a memory map and written one tensor at a time, numpy only.

numpy has no bfloat16, so a BF16 tensor is read as its raw ``uint16`` bits; the backends
view those bits as their own bfloat16 without a copy, and :func:`bf16_bits_to_float32`
and :func:`float32_to_bf16_bits` convert in plain numpy where a real number is needed.
The writer streams tensors to a temporary file and renames it at the end, so peak memory
is the largest tensor, and a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterable, Mapping

import numpy as np

from roformer_core.errors import CheckpointError
from roformer_core.io import atomic_path

#: safetensors dtype tag -> numpy storage dtype (BF16 is stored as its uint16 bits).
STORAGE = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
#: numpy dtype name -> safetensors tag; "bfloat16" is ml_dtypes' name, met in JAX/TF arrays.
TAGS = {np.dtype(v).name: k for k, v in STORAGE.items() if k not in ("BF16", "U16")}
TAGS.update({"uint16": "U16", "bfloat16": "BF16"})
FLOAT_TAGS = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsReader:
    """A read-only, memory-mapped safetensors file.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
        >>> write_safetensors(path, {"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
        >>> r = SafetensorsReader(path)
        >>> r.names(), r.shape("w"), r.dtype("w"), r.get("w")[1].tolist()
        (['w'], (2, 3), 'F32', [3.0, 4.0, 5.0])
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            size = os.path.getsize(self.path)
            with open(self.path, "rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    raise ValueError("file shorter than its 8-byte header length")
                (n,) = struct.unpack("<Q", head)
                if n > _MAX_HEADER or 8 + n > size:
                    raise ValueError(f"header length {n} does not fit a file of {size} bytes")
                header = json.loads(fh.read(n).decode("utf-8"))
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
            self.metadata = header.pop("__metadata__", None) or {}
            self._entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
            data_size = size - 8 - n
            end_max = 0
            for name, e in header.items():
                tag, shape, (begin, end) = e["dtype"], tuple(int(s) for s in e["shape"]), e["data_offsets"]
                if tag not in STORAGE:
                    raise ValueError(f"tensor {name!r} has unsupported dtype {tag!r}")
                nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(STORAGE[tag]).itemsize
                if end - begin != nbytes or begin < 0 or end > data_size:
                    raise ValueError(f"tensor {name!r} lies outside the file (truncated?)")
                end_max = max(end_max, end)
                self._entries[name] = (tag, shape, 8 + n + begin, nbytes)
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, struct.error) as e:
            raise CheckpointError(f"{self.path} is not a readable safetensors file: {e}") from None
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> str:
        """The safetensors dtype tag, e.g. ``"F32"`` or ``"BF16"``."""
        return self._entries[name][0]

    def get(self, name: str) -> np.ndarray:
        """A read-only numpy view into the memory map (BF16 as ``uint16`` bits)."""
        tag, shape, start, nbytes = self._entries[name]
        return self._map[start:start + nbytes].view(STORAGE[tag]).reshape(shape)


def tag_of(array: np.ndarray) -> str:
    """The safetensors tag for a numpy (or ml_dtypes) array."""
    name = np.dtype(array.dtype).name
    if name not in TAGS:
        raise CheckpointError(f"cannot store dtype {name} in safetensors")
    return TAGS[name]


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
                      metadata: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None) -> None:
    """Write tensors to ``path`` atomically, streaming one tensor at a time.

    ``tensors`` may be a mapping or a list of ``(name, array)`` pairs whose arrays are only
    read when written (memory maps, lazily converted tensors). ``tags`` overrides the dtype
    tag of a name, e.g. ``"BF16"`` for an array of uint16 bits.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
        >>> write_safetensors(path, {"b": np.zeros(3, np.float16)})
        >>> SafetensorsReader(path).dtype("b")
        'F16'
    """
    items = list(tensors.items()) if isinstance(tensors, Mapping) else list(tensors)
    tags = dict(tags or {})
    header: dict[str, dict] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    shapes = []
    for name, arr in items:
        shape = tuple(int(s) for s in np.shape(arr))
        tag = tags.get(name) or tag_of(np.asarray(arr) if not hasattr(arr, "dtype") else arr)
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(STORAGE[tag]).itemsize
        header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        shapes.append((shape, tag, nbytes))
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the reference writer aligns the data to 8 bytes
    with atomic_path(path) as tmp:
        # "r+b", not "wb": truncating the fresh temp file again makes ext4 start writeback on close
        with open(tmp, "r+b") as fh:
            fh.write(struct.pack("<Q", len(raw)))
            fh.write(raw)
            for (name, arr), (shape, tag, nbytes) in zip(items, shapes):
                data = np.ascontiguousarray(np.asarray(arr))
                if data.dtype.itemsize != np.dtype(STORAGE[tag]).itemsize or data.nbytes != nbytes:
                    raise CheckpointError(f"tensor {name!r}: data does not match dtype {tag} and shape {shape}")
                fh.write(memoryview(data.reshape(-1).view(np.uint8)))


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Exact widening of bfloat16 bits (``uint16``) to float32."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 bits (round to nearest even, NaN kept), as ``uint16``."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def to_float32(array: np.ndarray, tag: str) -> np.ndarray:
    """A float32 copy of a stored tensor (any float tag, BF16 bits included)."""
    return bf16_bits_to_float32(array) if tag == "BF16" else np.asarray(array, dtype=np.float32)
