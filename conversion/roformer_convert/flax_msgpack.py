"""Flax msgpack parameter files (``flax_model.msgpack``), read through a memory map and written streaming.

The format is ``flax.serialization.to_bytes`` of the nested parameter dict: msgpack maps
whose leaves are extension objects (type 1) holding ``(shape, dtype name, raw bytes)``;
arrays over ~1 GB are split into ``{"__msgpack_chunked_array__": True, "shape", "chunks"}``.
The reader walks the msgpack bytes itself to find where each array's raw bytes lie and
returns views into a memory map (nothing is copied until a tensor is used); the writer
writes each array's bytes straight from the array. Neither needs jax or flax.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "flax_model.msgpack")
    >>> write_msgpack(path, {("dense", "kernel"): np.ones((2, 3), np.float32)})
    >>> {k: v.shape for k, v in read_msgpack(path).items()}
    {('dense', 'kernel'): (2, 3)}
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Mapping

import numpy as np

from roformer_core.errors import CheckpointError
from roformer_core.io import atomic_path

_NDARRAY_EXT = 1
_CHUNKED = "__msgpack_chunked_array__"
#: flax splits arrays larger than this into chunks (flax.serialization.MAX_CHUNK_SIZE)
MAX_CHUNK_SIZE = 2 ** 30 - 2 ** 24
#: The deepest nesting of maps and lists read. A RoFormer parameter tree is about 8 levels deep
#: (a chunked array adds 2); the limit keeps a crafted file from exhausting the stack.
MAX_DEPTH = 64


class _Ext:
    """A msgpack extension object: its type code and where its payload lies."""

    def __init__(self, code: int, start: int, length: int):
        self.code, self.start, self.length = code, start, length


class _Walker:
    """Decode msgpack from a buffer, keeping extension payloads as (offset, length) only."""

    def __init__(self, buf):
        self.buf = buf

    def _take(self, fmt: str, pos: int):
        return struct.unpack_from(">" + fmt, self.buf, pos), pos + struct.calcsize(fmt)

    def _span(self, pos: int, n: int) -> int:
        """The end of ``n`` bytes starting at ``pos``; they must lie inside the file."""
        if pos + n > len(self.buf):
            raise ValueError(f"a value at offset {pos} runs {pos + n - len(self.buf)} bytes past the end (truncated?)")
        return pos + n

    def value(self, pos: int, depth: int = 0):
        if pos >= len(self.buf):
            raise ValueError("the file ends in the middle of a value (truncated?)")
        b = self.buf[pos]
        pos += 1
        if b <= 0x7F:
            return b, pos
        if b >= 0xE0:
            return b - 0x100, pos
        if b in (0xDC, 0xDD, 0xDE, 0xDF) or 0x80 <= b <= 0x9F:
            if depth >= MAX_DEPTH:
                raise ValueError(f"maps and lists nest deeper than {MAX_DEPTH} levels")
        if 0x80 <= b <= 0x8F:
            return self._map(b & 0x0F, pos, depth + 1)
        if 0x90 <= b <= 0x9F:
            return self._array(b & 0x0F, pos, depth + 1)
        if 0xA0 <= b <= 0xBF:
            return self._str(b & 0x1F, pos)
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if b in simple:
            return simple[b], pos
        sizes = {0xC4: "B", 0xC5: "H", 0xC6: "I"}  # bin 8/16/32
        if b in sizes:
            (n,), pos = self._take(sizes[b], pos)
            return bytes(self.buf[pos:pos + n]), self._span(pos, n)
        exts = {0xC7: "B", 0xC8: "H", 0xC9: "I"}  # ext 8/16/32
        if b in exts:
            (n,), pos = self._take(exts[b], pos)
            (code,), pos = self._take("b", pos)
            return _Ext(code, pos, n), self._span(pos, n)
        if 0xD4 <= b <= 0xD8:  # fixext 1/2/4/8/16
            n = 1 << (b - 0xD4)
            (code,), pos = self._take("b", pos)
            return _Ext(code, pos, n), self._span(pos, n)
        numbers = {0xCA: "f", 0xCB: "d", 0xCC: "B", 0xCD: "H", 0xCE: "I", 0xCF: "Q",
                   0xD0: "b", 0xD1: "h", 0xD2: "i", 0xD3: "q"}
        if b in numbers:
            (v,), pos = self._take(numbers[b], pos)
            return v, pos
        strs = {0xD9: "B", 0xDA: "H", 0xDB: "I"}
        if b in strs:
            (n,), pos = self._take(strs[b], pos)
            return self._str(n, pos)
        if b in (0xDC, 0xDD):
            (n,), pos = self._take("H" if b == 0xDC else "I", pos)
            return self._array(n, pos, depth + 1)
        if b in (0xDE, 0xDF):
            (n,), pos = self._take("H" if b == 0xDE else "I", pos)
            return self._map(n, pos, depth + 1)
        raise ValueError(f"the byte at offset {pos - 1} is not msgpack (type 0x{b:02x})")

    def _str(self, n: int, pos: int):
        end = self._span(pos, n)
        try:
            return bytes(self.buf[pos:end]).decode("utf-8"), end
        except UnicodeDecodeError:
            raise ValueError(f"the string at offset {pos} is not UTF-8") from None

    def _array(self, n: int, pos: int, depth: int):
        out = []
        for _ in range(n):
            v, pos = self.value(pos, depth)
            out.append(v)
        return out, pos

    def _map(self, n: int, pos: int, depth: int):
        out = {}
        for _ in range(n):
            start = pos
            k, pos = self.value(pos, depth)
            v, pos = self.value(pos, depth)
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise ValueError(f"the map key at offset {start} is a {type(k).__name__}, not a name")
            key = k if isinstance(k, str) else str(k)
            if key in out:
                raise ValueError(f"the map at offset {start} repeats the key {key[:60]!r}")
            out[key] = v
        return out, pos


def _storage(name: str) -> np.dtype:
    """numpy storage dtype for a flax dtype name (bfloat16 kept as its uint16 bits)."""
    return np.dtype(np.uint16) if name == "bfloat16" else np.dtype(name)


class MsgpackArray:
    """One array of a msgpack file: ``shape``, ``dtype`` name, and ``get()`` for its data.

    Example:
        >>> raw = np.arange(4, dtype=np.float16).tobytes()
        >>> MsgpackArray((2, 2), "float16", [(0, len(raw))], raw).get().tolist()
        [[0.0, 1.0], [2.0, 3.0]]
    """

    def __init__(self, shape: tuple[int, ...], dtype: str, parts: list[tuple[int, int]], buf):
        self.shape, self.dtype, self._buf = shape, dtype, buf
        self.ranges = parts  # (offset, nbytes) of the raw bytes in the file, one per chunk

    def get(self) -> np.ndarray:
        """A read-only view into the memory map (a copy for chunked arrays); bfloat16 as uint16 bits."""
        dtype = _storage(self.dtype)
        pieces = [np.frombuffer(self._buf, dtype=np.uint8, count=n, offset=o).view(dtype) for o, n in self.ranges]
        flat = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return flat.reshape(self.shape)


def _where(path: tuple[str, ...]) -> str:
    where = "/".join(path) or "the top level"
    return where if len(where) <= 120 else where[:120] + "..."


def _dims(values, where: str) -> tuple[int, ...]:
    if not isinstance(values, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                               for s in values):
        raise ValueError(f"{where}: the shape is not a list of non-negative integers")
    return tuple(values)


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    # Python integers: numpy's int64 product would wrap around on a crafted shape.
    count = 1
    for s in shape:
        count *= s
    return count * _storage(dtype).itemsize


def _ndarray(walker: _Walker, ext, path) -> MsgpackArray:
    """Locate the raw bytes of an ext-1 object ``[shape, dtype name, bin data]``."""
    where = _where(path)
    if not isinstance(ext, _Ext):
        raise ValueError(f"{where}: a chunk is a {type(ext).__name__}, not an array")
    end = ext.start + ext.length
    if ext.code != _NDARRAY_EXT or ext.length < 1 or walker.buf[ext.start] != 0x93:
        raise ValueError(f"{where} is not a flax array (msgpack extension type {ext.code})")
    shape, pos = walker.value(ext.start + 1, MAX_DEPTH - 1)
    dtype, pos = walker.value(pos, MAX_DEPTH - 1) if pos < end else (None, pos)
    header = {0xC4: 2, 0xC5: 3, 0xC6: 5}.get(walker.buf[pos]) if pos < end else None
    if header is None or not isinstance(dtype, str):
        raise ValueError(f"{where} is not a flax array")
    shape = _dims(shape, where)
    try:
        kind = _storage(dtype).kind
    except (TypeError, ValueError):  # not a dtype name numpy knows
        kind = None
    if kind not in ("b", "i", "u", "f", "c"):
        raise ValueError(f"{where}: {dtype[:40]!r} is not a numeric dtype")
    nbytes = end - pos - header
    if _nbytes(shape, dtype) != nbytes:
        raise ValueError(f"{where}: {max(nbytes, 0)} bytes do not fit shape {shape} of {dtype}")
    return MsgpackArray(shape, dtype, [(pos + header, nbytes)], walker.buf)


def read_msgpack(path: str | os.PathLike) -> dict[tuple[str, ...], MsgpackArray]:
    """Every array of a flax msgpack file by its key path, data left in a memory map.

    Raises one :class:`CheckpointError` if the file is not a msgpack map of arrays: the top
    level must be a map, every leaf an array, and maps may not nest deeper than :data:`MAX_DEPTH`.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "p.msgpack")
        >>> write_msgpack(path, {("LayerNorm", "scale"): np.ones(3, np.float32)})
        >>> read_msgpack(path)[("LayerNorm", "scale")].get().tolist()
        [1.0, 1.0, 1.0]
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if os.path.getsize(path) else b""
        if not buf:
            raise ValueError("the file is empty")
        first = buf[0]
        if not (0x80 <= first <= 0x8F or first in (0xDE, 0xDF)):
            raise ValueError("the top level is not a map of parameters")
        walker = _Walker(buf)
        tree, end = walker.value(0)
        if end != len(buf):
            raise ValueError(f"{len(buf) - end} stray bytes after the data")
        out: dict[tuple[str, ...], MsgpackArray] = {}
        _collect(walker, tree, (), out)
    except (OSError, ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error) as e:
        # IndexError..struct.error: a corruption the checks do not foresee still gives one line
        raise CheckpointError(f"{path} is not a readable Flax msgpack file: {e}") from None
    return out


def _indexed(node, what: str, where: str) -> list:
    """The values of a ``{"0": a, "1": b, ...}`` map, in index order."""
    if not isinstance(node, dict) or not all(k.isdigit() for k in node) \
            or sorted(int(k) for k in node) != list(range(len(node))):
        raise ValueError(f"{where}: the chunked array's {what} is not a map numbered 0, 1, ...")
    return [node[k] for k in sorted(node, key=int)]


def _collect(walker: _Walker, node, path: tuple[str, ...], out: dict) -> None:
    if isinstance(node, _Ext):
        out[path] = _ndarray(walker, node, path)
    elif isinstance(node, dict) and node.get(_CHUNKED) is True:
        where = _where(path)
        shape = _dims(_indexed(node.get("shape"), "shape", where), where)
        chunks = [_ndarray(walker, c, path) for c in _indexed(node.get("chunks"), "chunks", where)]
        if not chunks or any(c.dtype != chunks[0].dtype for c in chunks):
            raise ValueError(f"{where}: a chunked array needs chunks of one dtype")
        dtype = chunks[0].dtype
        parts = [p for c in chunks for p in c.ranges]
        if sum(n for _, n in parts) != _nbytes(shape, dtype):
            raise ValueError(f"{where}: chunks do not add up to shape {shape}")
        out[path] = MsgpackArray(shape, dtype, parts, walker.buf)
    elif isinstance(node, dict):
        for key, child in node.items():
            _collect(walker, child, path + (key,), out)
    else:
        raise ValueError(f"{_where(path)} holds a value of type {type(node).__name__}, not an array")


# -- writing ------------------------------------------------------------------------------------
def _header(kind: str, n: int) -> bytes:
    """msgpack header of a map/bin/ext of length ``n`` (ext: the caller appends the type byte)."""
    if kind == "map":
        return bytes([0x80 | n]) if n < 16 else (b"\xde" + struct.pack(">H", n) if n < 2 ** 16
                                                  else b"\xdf" + struct.pack(">I", n))
    if kind == "bin":
        return (b"\xc4" + struct.pack(">B", n) if n < 2 ** 8 else
                b"\xc5" + struct.pack(">H", n) if n < 2 ** 16 else b"\xc6" + struct.pack(">I", n))
    fixext = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if n in fixext:
        return bytes([fixext[n]])
    return (b"\xc7" + struct.pack(">B", n) if n < 2 ** 8 else
            b"\xc8" + struct.pack(">H", n) if n < 2 ** 16 else b"\xc9" + struct.pack(">I", n))


def _str(s: str) -> bytes:
    raw = s.encode("utf-8")
    n = len(raw)
    head = (bytes([0xA0 | n]) if n < 32 else b"\xd9" + struct.pack(">B", n) if n < 2 ** 8
            else b"\xda" + struct.pack(">H", n) if n < 2 ** 16 else b"\xdb" + struct.pack(">I", n))
    return head + raw


def _int(v: int) -> bytes:
    """A non-negative integer, as compact as msgpack allows (as msgpack-python writes it)."""
    for limit, head, fmt in ((2 ** 7, b"", ">B"), (2 ** 8, b"\xcc", ">B"), (2 ** 16, b"\xcd", ">H"),
                             (2 ** 32, b"\xce", ">I")):
        if v < limit:
            return head + struct.pack(fmt, v)
    return b"\xcf" + struct.pack(">Q", v)


def _write_array(fh, array: np.ndarray, dtype_name: str) -> None:
    """One ext-1 object: ``[shape, dtype name, bin raw bytes]``, the bytes written from the array."""
    shape = b"".join(_int(int(s)) for s in array.shape)
    shape = (bytes([0x90 | array.ndim]) if array.ndim < 16 else b"\xdc" + struct.pack(">H", array.ndim)) + shape
    head = b"\x93" + shape + _str(dtype_name) + _header("bin", array.nbytes)
    fh.write(_header("ext", len(head) + array.nbytes) + bytes([_NDARRAY_EXT]) + head)
    fh.write(memoryview(array.reshape(-1).view(np.uint8)))


def _write_leaf(fh, array: np.ndarray, dtype_name: str) -> None:
    if array.nbytes <= MAX_CHUNK_SIZE:
        _write_array(fh, array, dtype_name)
        return
    # as flax does: a map {chunked flag, shape as {"0": d0, ...}, chunks as {"0": flat piece, ...}}
    step = max(1, MAX_CHUNK_SIZE // array.itemsize)
    flat = array.reshape(-1)
    starts = range(0, flat.size, step)
    fh.write(_header("map", 3) + _str(_CHUNKED) + b"\xc3")
    fh.write(_str("shape") + _header("map", array.ndim))
    for i, s in enumerate(array.shape):
        fh.write(_str(str(i)) + _int(int(s)))
    fh.write(_str("chunks") + _header("map", len(starts)))
    for i, start in enumerate(starts):
        fh.write(_str(str(i)))
        _write_array(fh, flat[start:start + step], dtype_name)


def write_msgpack(path: str | os.PathLike, arrays: Mapping[tuple[str, ...], np.ndarray],
                  dtype_names: Mapping[tuple[str, ...], str] | None = None) -> None:
    """Write ``{key path: array}`` as a flax msgpack file, atomically, one array at a time.

    ``arrays`` may hold lazy objects: each is turned into an array with ``np.asarray`` when
    written. ``dtype_names`` overrides the stored dtype name, e.g. ``"bfloat16"`` for uint16 bits.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "p.msgpack")
        >>> write_msgpack(path, {("b",): np.zeros(2, np.uint16)}, {("b",): "bfloat16"})
        >>> read_msgpack(path)[("b",)].dtype
        'bfloat16'
    """
    tree: dict = {}
    for key in arrays:
        node = tree
        for part in key[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{'/'.join(key)} is both an array and a module")
        node[key[-1]] = key
    names = dict(dtype_names or {})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            def emit(node: dict) -> None:
                fh.write(_header("map", len(node)))
                for name, child in node.items():
                    fh.write(_str(name))
                    if isinstance(child, dict):
                        emit(child)
                    else:
                        array = np.ascontiguousarray(np.asarray(arrays[child]))
                        _write_leaf(fh, array, names.get(child, array.dtype.name))
            emit(tree)
