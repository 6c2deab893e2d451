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
        num_shards = _int_field(header, 1, 1, "the header's num_shards")
        if num_shards < 1:
            raise ValueError(f"the header gives {num_shards} data shards")
        if _int_field(header, 2, 0, "the header's endianness") != 0:
            raise ValueError("the checkpoint is big-endian")
        entries = {}
        for key, value in table.items():
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("a variable name is not UTF-8") from None
            entries[name] = _entry(value, name, num_shards)
    except OSError as e:
        raise CheckpointError(f"cannot read the TF checkpoint index {index}: {e.strerror or e}") from None
    except (ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error) as e:
        # IndexError..struct.error: a corruption the checks above did not foresee still gives one line
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
        """The variable's data, a read-only view of its memory-mapped shard."""
        if entry.sliced:
            raise CheckpointError(f"variable {name!r} of {self.prefix} is partitioned into slices; not supported")
        if entry.dtype not in DTYPES:
            raise CheckpointError(f"variable {name!r} of {self.prefix} has unsupported TF dtype {entry.dtype}")
        dtype = np.dtype(DTYPES[entry.dtype][0])
        if not 0 <= entry.shard < self.num_shards:
            raise CheckpointError(f"variable {name!r} of {self.prefix} names data shard {entry.shard} "
                                  f"of {self.num_shards}")
        if entry.shard not in self._maps:
            file = self.shard_path(entry.shard)
            if not os.path.isfile(file):
                raise CheckpointError(f"the TF checkpoint data file {file} is missing")
            self._maps[entry.shard] = np.memmap(file, dtype=np.uint8, mode="r") if os.path.getsize(file) \
                else np.zeros(0, np.uint8)
        data = self._maps[entry.shard]
        count = 1
        for s in entry.shape:  # Python integers: numpy's int64 product would wrap on a damaged shape
            count *= s
        if count * dtype.itemsize != entry.size:
            raise CheckpointError(f"variable {name!r} of {self.prefix}: {entry.size} bytes do not fit its shape "
                                  f"{entry.shape}")
        if entry.offset + entry.size > data.size:
            raise CheckpointError(f"variable {name!r} lies outside {self.shard_path(entry.shard)} (truncated?)")
        return data[entry.offset:entry.offset + entry.size].view(dtype).reshape(entry.shape)


# -- the sorted table -----------------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("a number runs past the end of its block (truncated?)")
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
    if len(block) < 4:
        raise ValueError("a table block is shorter than its restart count")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * num_restarts
    if end < 0:
        raise ValueError("a table block's restart array is larger than the block")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > end:
            raise ValueError("a table entry runs past its block (damaged index)")
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
    last = None
    for _, handle in _block_entries(index_block):
        for key, value in _block_entries(_block(raw, handle)):
            # A sorted table's keys strictly increase: anything else is damage (and would let a
            # later entry silently replace an earlier one).
            if last is not None and key <= last:
                raise ValueError("the index's keys are out of order (damaged index)")
            last = key
            yield key, value


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
        elif wire in (1, 2, 5):
            if wire == 2:
                length, pos = _varint(buf, pos)
            else:
                length = 8 if wire == 1 else 4
            if pos + length > len(buf):
                raise ValueError("a protobuf field runs past the end of its message (damaged index)")
            raw = buf[pos:pos + length]
            value = raw if wire == 2 else int.from_bytes(raw, "little")
            pos += length
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _int_field(f: dict[int, list], number: int, default: int, what: str) -> int:
    value = f.get(number, [default])[-1]  # protobuf: the last occurrence of a field wins
    if not isinstance(value, int):
        raise ValueError(f"{what} is not a number (damaged index)")
    return value


def _bytes_field(f: dict[int, list], number: int, what: str) -> bytes:
    value = f.get(number, [b""])[-1]
    if not isinstance(value, bytes):
        raise ValueError(f"{what} is not a message (damaged index)")
    return value


def _entry(value: bytes, name: str = "", num_shards: int = 1) -> BundleEntry:
    where = f"variable {name[:80]!r}"
    f = _fields(value)
    shape_msg = _fields(_bytes_field(f, 2, f"{where}: its shape"))  # TensorShapeProto: repeated Dim (2)
    shape = []
    for dim in shape_msg.get(2, []):  # Dim: size (1), an int64 (-1, unknown, arrives as 2**64 - 1)
        if not isinstance(dim, bytes):
            raise ValueError(f"{where}: its shape is damaged")
        size = _int_field(_fields(dim), 1, 0, f"{where}: a dimension")
        if size >= 2 ** 63:
            raise ValueError(f"{where}: its shape has an unknown or negative dimension")
        shape.append(size)
    numbers = {what: _int_field(f, n, 0, f"{where}: its {what}")
               for n, what in ((1, "dtype"), (3, "shard"), (4, "offset"), (5, "size"))}
    if numbers["shard"] >= num_shards:
        raise ValueError(f"{where} lies in data shard {numbers['shard']}, but there are {num_shards}")
    return BundleEntry(dtype=numbers["dtype"], shape=tuple(shape), shard=numbers["shard"],
                       offset=numbers["offset"], size=numbers["size"], sliced=7 in f)
