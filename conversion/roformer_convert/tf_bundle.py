"""Read a TensorFlow 1 checkpoint (``bert_model.ckpt.index`` + ``.data-*``) without TensorFlow.

A checkpoint is a "tensor bundle": the ``.index`` file is a LevelDB-style sorted table
(SSTable) whose keys are variable names and whose values are ``BundleEntryProto``
protobufs (dtype, shape, shard, offset, size); the tensor bytes lie raw, little-endian and
row-major, in the ``.data-SSSSS-of-NNNNN`` shards. Only the few protobuf fields we need
are decoded, by hand, so neither TensorFlow nor protobuf is needed; the data shards are
memory-mapped, so a tensor is read only when asked for.

Example:
    >>> checkpoint_prefix("chinese_roformer_L-12_H-768_A-12/bert_model.ckpt.index")
    'chinese_roformer_L-12_H-768_A-12/bert_model.ckpt'
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from roformer_core.errors import CheckpointError

_FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic
_TABLE_MAGIC = 0xDB4775248B80FB57
#: tensorflow DataType enum -> (numpy storage dtype, safetensors tag); bfloat16 kept as its bits
DTYPES = {
    1: (np.float32, "F32"), 2: (np.float64, "F64"), 3: (np.int32, "I32"), 4: (np.uint8, "U8"),
    5: (np.int16, "I16"), 6: (np.int8, "I8"), 9: (np.int64, "I64"), 10: (np.bool_, "BOOL"),
    14: (np.uint16, "BF16"), 17: (np.uint16, "U16"), 19: (np.float16, "F16"), 22: (np.uint32, "U32"),
    23: (np.uint64, "U64"),
}


@dataclass
class BundleEntry:
    """Where one variable lies: its TF dtype enum, shape, data shard, byte offset and size.

    Example:
        >>> BundleEntry(dtype=1, shape=(2, 3), shard=0, offset=0, size=24, sliced=False).shape
        (2, 3)
    """

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    sliced: bool


def checkpoint_prefix(path: str) -> str:
    """``x.ckpt`` for ``x.ckpt``, ``x.ckpt.index`` or ``x.ckpt.data-00000-of-00001``.

    Example:
        >>> checkpoint_prefix("bert_model.ckpt.data-00000-of-00001")
        'bert_model.ckpt'
    """
    if path.endswith(".index"):
        return path[: -len(".index")]
    if ".data-" in os.path.basename(path):
        return path[: path.rindex(".data-")]
    return path


def read_bundle(path: str) -> tuple[dict[str, BundleEntry], "BundleData"]:
    """Parse the index of the checkpoint at ``path`` (prefix, .index or .data file).

    Returns ``(entries, data)``: every variable's :class:`BundleEntry` in index order, and a
    :class:`BundleData` that reads them. Raises :class:`CheckpointError` on a damaged file.

    Example:
        >>> read_bundle("/nowhere/bert_model.ckpt")
        Traceback (most recent call last):
        ...
        roformer_core.errors.CheckpointError: no TF checkpoint index at /nowhere/bert_model.ckpt.index
    """
    prefix = checkpoint_prefix(path)
    index = prefix + ".index"
    if not os.path.isfile(index):
        raise CheckpointError(f"no TF checkpoint index at {index}")
    try:
        with open(index, "rb") as fh:
            raw = fh.read()
        table = dict(_read_table(raw))
        header = _fields(table.pop(b"", b""))
        num_shards = int(header.get(1, [1])[0])
        if header.get(2, [0])[0] != 0:
            raise ValueError("the checkpoint is big-endian")
        entries = {key.decode("utf-8"): _entry(value) for key, value in table.items()}
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as e:
        raise CheckpointError(f"{index} is not a readable TF checkpoint index: {e}") from None
    return entries, BundleData(prefix, num_shards)


class BundleData:
    """Memory-mapped data shards of a checkpoint; :meth:`get` returns a read-only view.

    Example:
        >>> BundleData("ckpt/bert_model.ckpt", 2).shard_path(1)
        'ckpt/bert_model.ckpt.data-00001-of-00002'
    """

    def __init__(self, prefix: str, num_shards: int):
        self.prefix = prefix
        self.num_shards = num_shards
        self._maps: dict[int, np.memmap] = {}

    def shard_path(self, shard: int) -> str:
        return f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}"

    def get(self, name: str, entry: BundleEntry) -> np.ndarray:
        if entry.sliced:
            raise CheckpointError(f"variable {name!r} of {self.prefix} is partitioned into slices; not supported")
        if entry.dtype not in DTYPES:
            raise CheckpointError(f"variable {name!r} of {self.prefix} has unsupported TF dtype {entry.dtype}")
        dtype = np.dtype(DTYPES[entry.dtype][0])
        if entry.shard not in self._maps:
            file = self.shard_path(entry.shard)
            if not os.path.isfile(file):
                raise CheckpointError(f"the TF checkpoint data file {file} is missing")
            self._maps[entry.shard] = np.memmap(file, dtype=np.uint8, mode="r") if os.path.getsize(file) \
                else np.zeros(0, np.uint8)
        data = self._maps[entry.shard]
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != entry.size or entry.offset + entry.size > data.size:
            raise CheckpointError(f"variable {name!r} lies outside {self.shard_path(entry.shard)} (truncated?)")
        return data[entry.offset:entry.offset + entry.size].view(dtype).reshape(entry.shape)


# -- the sorted table -----------------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("bad varint")


def _block(raw: bytes, handle: bytes) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + 5 > len(raw):
        raise ValueError("a block lies outside the file (truncated?)")
    if raw[offset + size] != 0:  # the trailer's compression byte; TensorFlow writes bundles uncompressed
        raise ValueError("compressed table blocks are not supported")
    return raw[offset:offset + size]


def _block_entries(block: bytes):
    """Yield the (key, value) pairs of a block: keys share a prefix with the previous key."""
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * num_restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + value_len]
        pos += value_len


def _read_table(raw: bytes):
    if len(raw) < _FOOTER_SIZE or struct.unpack_from("<Q", raw, len(raw) - 8)[0] != _TABLE_MAGIC:
        raise ValueError("no table footer (not a checkpoint index, or truncated)")
    footer = raw[-_FOOTER_SIZE:]
    _, pos = _varint(footer, 0)  # the metaindex handle (offset, size): unused by bundles
    _, pos = _varint(footer, pos)
    index_block = _block(raw, footer[pos:])
    for _, handle in _block_entries(index_block):
        yield from _block_entries(_block(raw, handle))


# -- the protobufs --------------------------------------------------------------------------
def _fields(buf: bytes) -> dict[int, list]:
    """Decode one protobuf message into {field number: [values]} (varints, bytes, fixed ints)."""
    out: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _entry(value: bytes) -> BundleEntry:
    f = _fields(value)
    shape_msg = _fields(f.get(2, [b""])[0])  # TensorShapeProto: repeated Dim (field 2) with size (field 1)
    shape = tuple(int(_fields(dim).get(1, [0])[0]) for dim in shape_msg.get(2, []))
    return BundleEntry(dtype=int(f.get(1, [0])[0]), shape=shape, shard=int(f.get(3, [0])[0]),
                       offset=int(f.get(4, [0])[0]), size=int(f.get(5, [0])[0]), sliced=7 in f)
