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
#: The reference's limit on the header length (safetensors' MAX_HEADER_SIZE).
MAX_HEADER_SIZE = 100_000_000
#: The deepest nesting the reference's JSON parser (serde_json) accepts in a header.
MAX_HEADER_DEPTH = 127
_INT64_MAX = 2 ** 63 - 1
_FIELDS = ("dtype", "shape", "data_offsets")


class _HeaderError(ValueError):
    """A problem with a header, worded without quoting the file's bytes."""


def _show(name: object, limit: int = 60) -> str:
    """A tensor name for a message: escaped, and shortened (a header may hold a name of any size)."""
    text = repr(name) if isinstance(name, str) else type(name).__name__
    return text if len(text) <= limit else text[:limit] + "...'"


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _HeaderError(f"the key {_show(key)} appears twice in one JSON object")
        out[key] = value
    return out


def _no_constant(name: str):
    raise _HeaderError(f"the header holds {name}, which is not JSON")


def _json_int(text: str) -> int | float:
    # As the reference's parser: an integer too large for 64 bits, or "-0", is a float there,
    # which a shape or an offset may not be. (int() would also refuse over 4300 digits.)
    if len(text) > 21 or text == "-0":
        return float(text)
    return int(text)


def _nesting(value: object) -> int:
    """How deeply ``value`` nests lists and dicts (1 for a flat one), walked without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _natural(value: object, what: str) -> int:
    # JSON integers only: a float, a bool or a string is refused, as the reference does.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _HeaderError(f"{what} must be a non-negative integer, got a {type(value).__name__}")
    if value < 0:
        raise _HeaderError(f"{what} must be a non-negative integer, got {value}")
    return value


def parse_header(raw: bytes, data_size: int) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...], int, int]]]:
    """Check a safetensors header as strictly as the reference and return ``(metadata, entries)``.

    ``raw`` is the JSON header and ``data_size`` the number of bytes after it. ``entries``
    maps each name to ``(dtype tag, shape, begin, end)``, offsets within the data section.
    Refused, as the reference refuses them: a header that is not a JSON object, nests more
    than :data:`MAX_HEADER_DEPTH` deep, repeats a key, or holds NaN; an entry that is not an
    object or lacks ``dtype``, ``shape`` or ``data_offsets``; shapes and offsets that are not
    non-negative integers; sizes that overflow; metadata that is not a map of strings; data
    whose byte ranges overlap, leave gaps or do not exactly fill the data section. Unknown
    extra fields of an entry are accepted, as the reference accepts them. Raises
    ``ValueError`` with a message that never quotes the header's bytes.

    Example:
        >>> parse_header(b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8)
        ({}, {'w': ('F32', (2,), 0, 8)})
        >>> try:
        ...     parse_header(b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 12)
        ... except ValueError as e:
        ...     print(e)
        the tensors cover 8 bytes of a data section of 12 (trailing bytes)
    """
    if not raw.lstrip(b" \t\r\n").startswith(b"{"):
        raise _HeaderError("the header is not a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _HeaderError(f"the header is not valid UTF-8 (at byte {e.start})") from None
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                            parse_int=_json_int)
    except RecursionError:  # json's C parser guards its stack: a very deep header ends here, cleanly
        raise _HeaderError(f"the header JSON nests deeper than {MAX_HEADER_DEPTH} levels") from None
    except json.JSONDecodeError as e:  # its message gives a position, never the text
        raise _HeaderError(f"the header is not valid JSON ({e.msg} at byte {e.pos})") from None
    if not isinstance(header, dict):
        raise _HeaderError("the header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _HeaderError("__metadata__ must be a map of strings to strings")
    entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    deep = raw.count(b"[") + raw.count(b"{") > MAX_HEADER_DEPTH  # otherwise no walk is needed
    for name, e in header.items():
        where = f"tensor {_show(name)}"
        if not isinstance(e, dict):
            raise _HeaderError(f"{where}: its entry is a {type(e).__name__}, not an object")
        for key in _FIELDS:
            if key not in e:
                raise _HeaderError(f"{where}: its entry lacks {key!r}")
        tag, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        # Unknown fields are accepted but, as in the reference, not nested without limit (the
        # header object and this entry are two levels).
        if deep and any(_nesting(v) > MAX_HEADER_DEPTH - 2 for k, v in e.items() if k not in _FIELDS):
            raise _HeaderError(f"{where}: an extra field nests deeper than the header's limit of "
                               f"{MAX_HEADER_DEPTH} levels")
        if not isinstance(tag, str):
            raise _HeaderError(f"{where}: dtype is a {type(tag).__name__}, not a string")
        if tag not in STORAGE:
            raise _HeaderError(f"{where}: unsupported dtype {_show(tag, 20)}; known: {', '.join(STORAGE)}")
        if not isinstance(shape, list):
            raise _HeaderError(f"{where}: shape is a {type(shape).__name__}, not a list")
        if not isinstance(offsets, list) or len(offsets) != 2:
            raise _HeaderError(f"{where}: data_offsets must be a list of two integers")
        begin = _natural(offsets[0], f"{where}: data_offsets[0]")
        end = _natural(offsets[1], f"{where}: data_offsets[1]")
        count = 1
        for i, s in enumerate(shape):
            count *= _natural(s, f"{where}: shape[{i}]")
            if count > _INT64_MAX:  # checked at every step, as the reference does
                raise _HeaderError(f"{where}: the shape's size overflows")
        nbytes = count * np.dtype(STORAGE[tag]).itemsize
        if nbytes > _INT64_MAX:
            raise _HeaderError(f"{where}: the shape's size in bytes overflows")
        if end < begin:
            raise _HeaderError(f"{where}: data_offsets end before they begin")
        if end - begin != nbytes:
            raise _HeaderError(f"{where}: data_offsets span {end - begin} bytes, its shape and dtype need {nbytes}")
        entries[name] = (tag, tuple(shape), begin, end)
    covered = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != covered:
            problem = "overlaps the tensor before it" if begin < covered else f"leaves a gap at byte {covered}"
            raise _HeaderError(f"tensor {_show(name)}: its data {problem} (tensors must fill the data section "
                               "one after another)")
        covered = end
    if covered != data_size:
        what = "trailing bytes" if covered < data_size else "the file is truncated"
        raise _HeaderError(f"the tensors cover {covered} bytes of a data section of {data_size} ({what})")
    return metadata, entries


class SafetensorsReader:
    """A read-only, memory-mapped safetensors file, checked as strictly as the reference reader.

    A damaged or crafted file raises one :class:`CheckpointError` naming the file and the
    problem (see :func:`parse_header`); the message never quotes the file's bytes.

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
                    raise _HeaderError("the file is shorter than its 8-byte header length")
                (n,) = struct.unpack("<Q", head)
                if n > MAX_HEADER_SIZE:
                    raise _HeaderError(f"the header length {n} exceeds the limit of {MAX_HEADER_SIZE} bytes")
                if 8 + n > size:
                    raise _HeaderError(f"the header length {n} does not fit a file of {size} bytes (truncated?)")
                raw = fh.read(n)
            self.metadata, entries = parse_header(raw, size - 8 - n)
        except (OSError, _HeaderError) as e:
            problem = e.strerror or type(e).__name__ if isinstance(e, OSError) else str(e)
            raise CheckpointError(f"{self.path} is not a readable safetensors file: {problem}") from None
        self._entries = {name: (tag, shape, 8 + n + begin, end - begin)
                         for name, (tag, shape, begin, end) in entries.items()}
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
