"""Damaged and crafted files, and writes that fail half-way: one clear error, never a half-written folder.

Safetensors headers are checked against the reference ``safetensors`` package (every crafted
file refused here is refused there too); Flax msgpack and TF bundle readers get crafted and
fuzzed files; ``roformer_core.io`` is exercised on a real mount point, with failures injected
into every step of a checkpoint replacement, under a umask, with stale temporaries and SIGTERM.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from roformer_core import io as rio
from roformer_core.checkpoint import Checkpoint
from roformer_core.config import RoFormerConfig
from roformer_core.errors import CheckpointError, ConfigError, InputError
from roformer_core.io import atomic_dir, atomic_path, remove_stale_temporaries, sigterm_cleanup
from roformer_core.safetensors_io import SafetensorsReader, write_safetensors
from roformer_core.tokenizer import RoFormerTokenizer
from roformer_core.vocab_builder import main as build_vocab_main

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Put in every crafted header where no error needs to name it: no message may repeat it.
MARKER = "FILE-CONTENT-MUST-NOT-LEAK"


# -- safetensors ------------------------------------------------------------------------------------
def _st(path, header=None, data=b"", raw=None):
    if raw is None:
        header = dict(header)
        header.setdefault("__metadata__", {"note": MARKER})
        raw = json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw + data)
    return str(path)


def _f32(shape, offsets):
    return {"dtype": "F32", "shape": shape, "data_offsets": offsets}


def _deep_dict(n):
    return b'{"a":' * n + b"1" + b"}" * n


REFUSED = {
    "overlapping data": ({"a": _f32([2], [0, 8]), "b": _f32([2], [4, 12])}, b"\0" * 12),
    "same data twice": ({"a": _f32([2], [0, 8]), "b": _f32([2], [0, 8])}, b"\0" * 8),
    "gap between tensors": ({"a": _f32([1], [0, 4]), "b": _f32([1], [8, 12])}, b"\0" * 12),
    "gap before the first": ({"a": _f32([1], [4, 8])}, b"\0" * 8),
    "trailing bytes": ({"a": _f32([1], [0, 4])}, b"\0" * 8),
    "data past the end": ({"a": _f32([4], [0, 16])}, b"\0" * 8),
    "end before begin": ({"a": _f32([0], [8, 0])}, b"\0" * 8),
    "float offsets": ({"a": _f32([2], [0.0, 8.0])}, b"\0" * 8),
    "bool offsets": ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [False, True]}}, b"\0"),
    "string offsets": ({"a": _f32([2], ["0", "8"])}, b"\0" * 8),
    "negative offset": ({"a": _f32([2], [-8, 0])}, b"\0" * 8),
    "three offsets": ({"a": _f32([2], [0, 8, 8])}, b"\0" * 8),
    "offsets not a list": ({"a": _f32([2], {"0": 0})}, b"\0" * 8),
    "negative shape": ({"a": _f32([-2], [0, 8])}, b"\0" * 8),
    "float shape": ({"a": _f32([2.0], [0, 8])}, b"\0" * 8),
    "bool shape": ({"a": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}, b"\0"),
    "string shape": ({"a": _f32(["2"], [0, 8])}, b"\0" * 8),
    "nested shape": ({"a": _f32([[2]], [0, 8])}, b"\0" * 8),
    "shape not a list": ({"a": _f32(2, [0, 8])}, b"\0" * 8),
    "shape product overflows": ({"a": _f32([2 ** 32, 2 ** 32], [0, 8])}, b"\0" * 8),
    "shape over 64 bits": ({"a": _f32([2 ** 70], [0, 8])}, b"\0" * 8),
    "size not matching shape": ({"a": _f32([3], [0, 8])}, b"\0" * 8),
    "entry not an object": ({"a": [1, 2, 3]}, b""),
    "entry a string": ({"a": "x"}, b""),
    "entry null": ({"a": None}, b""),
    "missing dtype": ({"a": {"shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
    "missing shape": ({"a": {"dtype": "F32", "data_offsets": [0, 8]}}, b"\0" * 8),
    "missing data_offsets": ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8),
    "unknown dtype": ({"a": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
    "dtype not a string": ({"a": {"dtype": 1, "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
    "metadata value not a string": ({"__metadata__": {"a": 1}}, b""),
    "metadata a list": ({"__metadata__": [MARKER]}, b""),
}
P = '"dtype":"F32","shape":[2],"data_offsets":[0,8]'
REFUSED_RAW = {
    "header a list": (b"[]", b""),
    "header a number": (b"1", b""),
    "header a string": (f'"{MARKER}"'.encode(), b""),
    "empty header": (b"", b""),
    "list nested 100k deep": (b"[" * 100_000 + b"]" * 100_000, b""),
    "dict nested 100k deep": (_deep_dict(100_000), b""),
    "extra field nested 100k deep": (('{"a":{' + P + ',"x":').encode() + b"[" * 100_000 + b"]" * 100_000 + b"}}",
                                     b"\0" * 8),
    "extra field nested 128 deep": (('{"a":{' + P + ',"x":').encode() + b"[" * 126 + b"]" * 126 + b"}}", b"\0" * 8),
    "duplicate tensor, other data": (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                     b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', b"\0" * 8),
    "duplicate field": (('{"a":{"dtype":"F32",' + P + "}}").encode(), b"\0" * 8),
    "duplicate metadata": (b'{"__metadata__":{"x":"1"},"__metadata__":{"x":"2"}}', b""),
    "NaN": (b'{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}}', b"\0" * 8),
    "-0 in a shape": (b'{"a":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}', b""),
    "5000-digit integer": (b'{"a":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,0]}}', b""),
    "not UTF-8": (b'{"\xff":1}', b""),
    "byte order mark": (("\ufeff{\"a\":{" + P + "}}").encode(), b"\0" * 8),
    "trailing NULs": (('{"a":{' + P + "}}").encode() + b"\0\0\0", b"\0" * 8),
    "trailing junk": (('{"a":{' + P + "}}" + MARKER).encode(), b"\0" * 8),
}
ACCEPTED = {
    "out of order": ({"a": _f32([1], [4, 8]), "b": _f32([1], [0, 4])}, b"\0" * 8),
    "zero-size tensors": ({"a": _f32([0], [0, 0]), "b": _f32([0, 3], [0, 0]), "c": _f32([2], [0, 8]),
                           "d": _f32([0], [8, 8])}, b"\0" * 8),
    "scalar": ({"a": _f32([], [0, 4])}, b"\0" * 4),
    "empty": ({}, b""),
    "unknown extra field": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": {"y": [1]}}},
                            b"\0" * 8),
    "extra field nested 127 deep": ({}, b""),  # built below: the deepest the reference accepts
    "metadata null": ({"__metadata__": None, "a": _f32([2], [0, 8])}, b"\0" * 8),
}


def _reference_refuses(path) -> bool:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    refused = []
    for read in (lambda: list(safe_open(path, "np").keys()), lambda: load_file(path)):
        try:
            read()
            refused.append(False)
        except Exception:  # the reference raises SafetensorError (a subclass of Exception)
            refused.append(True)
    assert refused[0] == refused[1]
    return refused[0]


@pytest.mark.parametrize("case", list(REFUSED) + list(REFUSED_RAW))
def test_safetensors_crafted_header_refused_like_the_reference(tmp_path, case):
    path = tmp_path / "crafted.safetensors"
    if case in REFUSED:
        _st(path, *REFUSED[case])
    else:
        raw, data = REFUSED_RAW[case]
        _st(path, raw=raw, data=data)
    assert _reference_refuses(str(path)), f"the reference accepts {case!r}: the case is wrong"
    with pytest.raises(CheckpointError) as info:
        SafetensorsReader(path)
    message = str(info.value)
    assert message.startswith(f"{path} is not a readable safetensors file: ")
    assert "\n" not in message and len(message) < 400
    assert MARKER not in message and "\\x" not in message


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_safetensors_valid_headers_accepted_like_the_reference(tmp_path, case):
    path = tmp_path / "fine.safetensors"
    if case == "extra field nested 127 deep":
        _st(path, raw=('{"a":{' + P + ',"x":').encode() + b"[" * 125 + b"]" * 125 + b"}}", data=b"\0" * 8)
    else:
        _st(path, *ACCEPTED[case])
    assert not _reference_refuses(str(path))
    reader = SafetensorsReader(path)
    for name in reader.names():
        assert reader.get(name).shape == reader.shape(name)


def test_safetensors_header_limits(tmp_path):
    big = tmp_path / "big.safetensors"
    big.write_bytes(struct.pack("<Q", 100_000_001) + b"{}")
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x00")
    for path, problem in ((big, "exceeds the limit"), (short, "shorter than")):
        assert _reference_refuses(str(path))
        with pytest.raises(CheckpointError, match=problem):
            SafetensorsReader(path)


def test_safetensors_fuzzed_files_give_one_error_and_never_more_than_the_reference(tmp_path):
    path = tmp_path / "fuzz.safetensors"
    write_safetensors(path, {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.int64),
                             "c": np.zeros((0, 2), np.float16)})
    good = path.read_bytes()
    rng = random.Random(0)
    accepted = 0
    for _ in range(400):
        raw = bytearray(good)
        if rng.random() < 0.3:
            raw = raw[:rng.randrange(len(raw))]
        else:
            for _ in range(rng.randint(1, 3)):
                raw[rng.randrange(len(raw))] = rng.choice(b'0123456789[]{}",:-.e \x00\xff')
        path.write_bytes(bytes(raw))
        try:
            reader = SafetensorsReader(path)
            [reader.get(n) for n in reader.names()]
        except CheckpointError:
            continue
        accepted += 1
        assert not _reference_refuses(str(path)), f"we accept what the reference refuses: {bytes(raw[:200])!r}"
    assert accepted > 0  # some mutations hit only tensor bytes, and those files are fine


# -- flax msgpack -----------------------------------------------------------------------------------
def _msgpack_file(tmp_path, raw: bytes):
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("raw, problem", [
    (b"\x81\xa1a" * 100_000 + b"\x01", "nest deeper than 64"),
    (b"\x81\xa1a" + b"\x91" * 100_000 + b"\x01", "nest deeper than 64"),
    (b"\x05", "top level is not a map"),
    (b"\xcb" + struct.pack(">d", 1.5), "top level is not a map"),
    (b"\x92\x01\x02", "top level is not a map"),
    (b"", "empty"),
    (b"\x81\xa1a\x01", "a holds a value of type int, not an array"),
    (b"\x81\xa1a\x91\x01", "a holds a value of type list, not an array"),
    (b"\x81\xa1a\xa3abc", "not an array"),
    (b"\x82\xa1a\x80\xa1a\x80", "repeats the key"),
    (b"\x81\xa1a\xc7\x10\x01\x93", "past the end"),
])
def test_msgpack_crafted_files_give_one_error(tmp_path, raw, problem):
    from roformer_convert.flax_msgpack import read_msgpack

    with pytest.raises(CheckpointError, match=problem) as info:
        read_msgpack(_msgpack_file(tmp_path, raw))
    assert "\n" not in str(info.value)


def test_msgpack_arrays_with_crafted_shapes_and_dtypes(tmp_path):
    import msgpack

    from roformer_convert.flax_msgpack import read_msgpack

    def array(shape, dtype, data):
        return msgpack.ExtType(1, msgpack.packb([shape, dtype, data]))

    cases = {
        "negative dim": (array([-2], "float32", b"\0" * 8), "not a list of non-negative integers"),
        "overflowing shape": (array([2 ** 62, 2 ** 62], "float32", b""), "do not fit"),
        "object dtype": (array([1], "object", b"\0" * 8), "not a numeric dtype"),
        "unknown dtype": (array([1], "float99", b"\0" * 4), "not a numeric dtype"),
        "chunks of a list": ({"__msgpack_chunked_array__": True, "shape": {"0": 2}, "chunks": [1]},
                             "not a map numbered"),
        "chunk not an array": ({"__msgpack_chunked_array__": True, "shape": {"0": 2}, "chunks": {"0": 5}},
                               "not an array"),
    }
    for name, (leaf, problem) in cases.items():
        path = _msgpack_file(tmp_path, msgpack.packb({"p": leaf}))
        with pytest.raises(CheckpointError, match=problem):
            read_msgpack(path)
    good = _msgpack_file(tmp_path, msgpack.packb({"p": {"k": array([2], "float32", np.ones(2, np.float32).tobytes())}}))
    assert read_msgpack(good)[("p", "k")].get().tolist() == [1.0, 1.0]


def test_msgpack_fuzzed_files_give_one_error(tmp_path):
    from roformer_convert.flax_msgpack import read_msgpack, write_msgpack

    path = tmp_path / "p.msgpack"
    write_msgpack(path, {("x", "kernel"): np.ones((3, 4), np.float32), ("x", "bias"): np.zeros(4, np.float16),
                         ("y",): np.arange(5)})
    good = path.read_bytes()
    rng = random.Random(1)
    for _ in range(600):
        raw = bytearray(good)
        if rng.random() < 0.3:
            raw = raw[:rng.randrange(len(raw))]
        else:
            for _ in range(rng.randint(1, 3)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        path.write_bytes(bytes(raw))
        try:
            for array in read_msgpack(path).values():
                array.get()
        except CheckpointError:
            pass


# -- TF bundle -----------------------------------------------------------------------------------------
# bert_model.ckpt.index and .data-00000-of-00001 as tf.compat.v1.train.Saver (TensorFlow 2.21) wrote them for
# {"bert/embeddings/word_embeddings": arange(12) as float32 [3, 4], "bert/x/bias": ones(5) float16,
#  "global_step": int64 7}.
TF_INDEX = bytes.fromhex(
    "00000608011a020801001f13626572742f656d62656464696e67732f776f72645f656d62656464696e6773080112081202080312"
    "020804283035d7a655dc050611782f6269617308131204120208052030280a357b42e83f000b0d676c6f62616c5f737465700809"
    "1200203a280835bbd79f11000000000100000000c68af0a3000000000100000000c0f2a1b000010268007b000000000100000000"
    "8e587b058001088d010e0000000000000000000000000000000000000000000000000000000000000000000057fb808b247547db")
TF_DATA = bytes.fromhex("000000000000803f0000004000004040000080400000a0400000c0400000e040000000410000104100002041"
                        "00003041003c003c003c003c003c0700000000000000")


def _write_bundle(folder, index: bytes, data: bytes = TF_DATA) -> str:
    prefix = os.path.join(folder, "bert_model.ckpt")
    with open(prefix + ".index", "wb") as fh:
        fh.write(index)
    with open(prefix + ".data-00000-of-00001", "wb") as fh:
        fh.write(data)
    return prefix


def _read_all(prefix):
    from roformer_convert.tf_bundle import read_bundle

    entries, data = read_bundle(prefix)
    return {name: np.array(data.get(name, entry)) for name, entry in entries.items()}


def test_tf_bundle_written_by_tensorflow_reads(tmp_path):
    got = _read_all(_write_bundle(tmp_path, TF_INDEX))
    np.testing.assert_array_equal(got["bert/embeddings/word_embeddings"], np.arange(12, dtype=np.float32).reshape(3, 4))
    np.testing.assert_array_equal(got["bert/x/bias"], np.ones(5, np.float16))
    assert got["global_step"] == 7


def test_tf_bundle_truncated_or_corrupted_index_gives_one_error(tmp_path):
    """Every truncation, and byte changes at every position (wire types flipped, lengths broken)."""
    from roformer_convert.tf_bundle import read_bundle

    prefix = _write_bundle(tmp_path, TF_INDEX)
    cases = [TF_INDEX[:n] for n in range(len(TF_INDEX))]
    cases += [TF_INDEX[:i] + bytes([v]) + TF_INDEX[i + 1:] for i, b in enumerate(TF_INDEX)
              for v in {0x00, 0xFF, 0x80, b ^ 0x01, b ^ 0x02, b & 0xF8, b ^ 0x40} - {b}]
    for index in cases:
        with open(prefix + ".index", "wb") as fh:
            fh.write(index)
        try:
            entries, data = read_bundle(prefix)
        except CheckpointError as e:
            assert "\n" not in str(e)
            continue
        for name, entry in entries.items():
            try:
                data.get(name, entry)
            except CheckpointError:
                pass


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(*fields) -> bytes:
    """A protobuf message from (number, value) pairs: ints as varints, bytes length-delimited."""
    out = b""
    for number, value in fields:
        if isinstance(value, int):
            out += _varint(number << 3) + _varint(value)
        else:
            out += _varint(number << 3 | 2) + _varint(len(value)) + value
    return out


def _table(entries) -> bytes:
    """A LevelDB table of one data block, as a TF bundle index (no prefix sharing, one restart)."""
    def block(items):
        body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in items)
        return body + struct.pack("<II", 0, 1)

    data = block(entries)
    raw = data + b"\0" * 5
    index = block([(b"\xff", _varint(0) + _varint(len(data)))])
    footer = (_varint(0) + _varint(0) + _varint(len(raw)) + _varint(len(index))).ljust(40, b"\0")
    return raw + index + b"\0" * 5 + footer + struct.pack("<Q", 0xDB4775248B80FB57)


def _bundle_entry(dims, dtype=1, shard=0, offset=0, size=None, shape_field=None):
    shape = shape_field if shape_field is not None else _pb(*[(2, _pb((1, d))) for d in dims])
    count = 1
    for d in dims:
        count *= d
    return _pb((1, dtype), (2, shape), (3, shard), (4, offset), (5, 4 * count if size is None else size))


HEADER = _pb((1, 1))


@pytest.mark.parametrize("entries, problem", [
    ([(b"", HEADER), (b"w", _bundle_entry([3]))], None),  # the writer itself: a valid bundle
    ([(b"", HEADER), (b"w", _bundle_entry([3], shape_field=7))], "its shape is not a message"),
    ([(b"", HEADER), (b"w", _pb((1, 1), (2, _pb((2, 5)))))], "its shape is damaged"),
    ([(b"", HEADER), (b"w", _bundle_entry([2 ** 64 - 1]))], "unknown or negative dimension"),
    ([(b"", HEADER), (b"w", _bundle_entry([3], shard=4))], "data shard 4"),
    ([(b"", _pb((1, b"x")))], "num_shards"),
    ([(b"", _pb((1, 0)))], "0 data shards"),
    ([(b"", HEADER), (b"w", _bundle_entry([3])), (b"a", _bundle_entry([3]))], "out of order"),
    ([(b"", HEADER), (b"w", _bundle_entry([3])), (b"w", _bundle_entry([3]))], "out of order"),
    ([(b"", HEADER), (b"\xff\xfe", _bundle_entry([3]))], "not UTF-8"),
    ([(b"", HEADER), (b"w", _bundle_entry([3]) + b"\x0a\x09")], "runs past"),
])
def test_tf_bundle_crafted_index(tmp_path, entries, problem):
    prefix = _write_bundle(tmp_path, _table(entries), data=b"\0" * 12)
    if problem is None:
        assert _read_all(prefix)["w"].tolist() == [0.0, 0.0, 0.0]
        return
    with pytest.raises(CheckpointError, match=problem):
        _read_all(prefix)


@pytest.mark.parametrize("dims, size, problem", [
    ([2 ** 62 + 1, 4], 16, "do not fit its shape"),  # an int64 product wraps to 4 elements, 16 bytes
    ([3], 4000, "do not fit its shape"),
    ([1000], 4000, "lies outside"),
])
def test_tf_bundle_entry_that_does_not_fit_its_data(tmp_path, dims, size, problem):
    prefix = _write_bundle(tmp_path, _table([(b"", HEADER), (b"w", _bundle_entry(dims, size=size))]),
                           data=b"\0" * 16)
    with pytest.raises(CheckpointError, match=problem):
        _read_all(prefix)


# -- atomic writes: mount points, failures mid-replacement, umask, stale temporaries, SIGTERM ----------------
def _leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".")]


MOUNT_SCRIPT = """
import os, subprocess, sys
from roformer_core.io import atomic_dir
target = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "none", target], check=True)
assert os.stat(target).st_dev != os.stat(os.path.dirname(target)).st_dev
open(os.path.join(target, "old.txt"), "w").write("old")
open(os.path.join(target, "kept.txt"), "w").write("kept")
with atomic_dir(target, remove=["old.txt"]) as tmp:
    assert os.stat(tmp).st_dev == os.stat(target).st_dev, "the temporary is not on the mount"
    open(os.path.join(tmp, "new.txt"), "w").write("new")
print(" ".join(sorted(os.listdir(target))))
"""


def _fake_mount(monkeypatch, mount: str) -> None:
    """Renames between ``mount`` and the rest fail as across file systems (EXDEV)."""
    real_replace, real_rename = os.replace, os.rename

    def inside(p) -> bool:
        p = os.path.abspath(os.fspath(p))
        return p == mount or p.startswith(mount + os.sep)

    def guard(real):
        def move(src, dst, *args, **kwargs):
            if inside(src) != inside(dst) or os.path.abspath(os.fspath(dst)) == mount:
                raise OSError(errno.EXDEV, "Invalid cross-device link", src)
            return real(src, dst, *args, **kwargs)
        return move

    monkeypatch.setattr(os, "replace", guard(real_replace))
    monkeypatch.setattr(os, "rename", guard(real_rename))


def test_atomic_dir_onto_a_mount_point(tmp_path, monkeypatch):
    """The temporary is made inside an existing folder: the renames never cross to another file system."""
    target = tmp_path / "mnt"
    target.mkdir()
    try:  # can this machine mount a tmpfs in a private mount namespace (root in a user namespace)?
        real = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "none", str(target)],
                              capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        real = False
    if real:
        out = subprocess.run(["unshare", "-rm", sys.executable, "-c", MOUNT_SCRIPT, str(target)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["kept.txt", "new.txt"]
    # Always also: the same folder seen as a mount point by failing cross-folder renames.
    (target / "old.txt").write_text("old")
    (target / "kept.txt").write_text("kept")
    _fake_mount(monkeypatch, str(target))
    with atomic_dir(target, remove=["old.txt"]) as tmp:
        (open(os.path.join(tmp, "new.txt"), "w")).write("new")
    assert sorted(os.listdir(target)) == ["kept.txt", "new.txt"]
    assert (target / "new.txt").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["mnt"]


def _tiny_config() -> RoFormerConfig:
    return RoFormerConfig(vocab_size=12, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=16)


def _sharded(folder, tensors: dict, config: RoFormerConfig) -> None:
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:2], "model-00002-of-00002.safetensors": names[2:]}
    for file, keys in shards.items():
        write_safetensors(os.path.join(folder, file), {k: tensors[k] for k in keys})
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as fh:
        json.dump(index, fh)
    config.save(folder)


def _single(folder, tensors: dict, config: RoFormerConfig) -> None:
    write_safetensors(os.path.join(folder, "model.safetensors"), tensors)
    config.save(folder)


STALE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors")


def _state(folder):
    ck = Checkpoint(folder)
    return ck.config.hidden_dropout_prob, {n: np.array(ck.get(n)) for n in ck.names()}


@pytest.mark.parametrize("old_layout, new_layout", [(_sharded, _single), (_single, _sharded)])
@pytest.mark.parametrize("failing", ["replace", "rename", "link"])
def test_replacing_a_checkpoint_leaves_old_or_new_whatever_step_fails(tmp_path, monkeypatch, old_layout,
                                                                      new_layout, failing):
    """A sharded checkpoint replaced by a single file and back, failing at every rename in turn."""
    names = [f"t{i}" for i in range(4)]
    old_tensors = {n: np.full(3, i, np.float32) for i, n in enumerate(names)}
    new_tensors = {n: np.full(3, 10 + i, np.float32) for i, n in enumerate(names)}
    old_config, new_config = _tiny_config(), _tiny_config().replace(hidden_dropout_prob=0.3)
    folder = tmp_path / "ck"
    folder.mkdir()
    old_layout(folder, old_tensors, old_config)
    (folder / "vocab.txt").write_text("kept\n")
    old = _state(folder)
    real = {"replace": os.replace, "rename": os.rename, "link": os.link}[failing]
    for n in range(1, 50):
        calls = [0]

        def flaky(*args, **kwargs):
            calls[0] += 1
            if calls[0] == n:
                raise OSError(errno.EIO, "injected failure")
            return real(*args, **kwargs)

        monkeypatch.setattr(os, failing, flaky)
        try:
            with atomic_dir(folder, remove=STALE_WEIGHTS) as tmp:
                monkeypatch.setattr(os, failing, real)  # writing the new files is not what is tested
                new_layout(tmp, new_tensors, new_config)
                calls[0] = 0
                monkeypatch.setattr(os, failing, flaky)
        except OSError as e:
            monkeypatch.setattr(os, failing, real)
            assert "injected" in str(e)
            state = _state(folder)
            assert state[0] == old[0] and all(np.array_equal(state[1][k], old[1][k]) for k in names), \
                f"failure at {failing} call {n} left a mixed checkpoint"
            assert _leftovers(folder) == [], f"failure at {failing} call {n} left {_leftovers(folder)}"
            continue
        monkeypatch.setattr(os, failing, real)
        break
    else:
        pytest.fail("the replacement never succeeded")
    state = _state(folder)
    assert state[0] == 0.3 and all(np.array_equal(state[1][k], new_tensors[k]) for k in names)
    present = set(os.listdir(folder))
    assert "vocab.txt" in present and _leftovers(folder) == []
    stale = {"model.safetensors"} if new_layout is _sharded else \
        {"model.safetensors.index.json", "model-00001-of-00002.safetensors"}
    assert not stale & present
    assert n > 1 or failing == "link"  # at least one failure was injected (links are made only when replacing)


def test_atomic_writes_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_safetensors(tmp_path / "a.safetensors", {"w": np.zeros(2, np.float32)})
        with atomic_dir(tmp_path / "new") as tmp:
            with atomic_path(os.path.join(tmp, "f.txt")) as f:
                open(f, "w").write("x")
        with atomic_dir(tmp_path / "new") as tmp:  # the folder exists: the temporary is made inside
            with atomic_path(os.path.join(tmp, "g.txt")) as f:
                open(f, "w").write("x")
        assert oct(os.stat(tmp_path / "a.safetensors").st_mode & 0o777) == oct(0o644)
        assert oct(os.stat(tmp_path / "new").st_mode & 0o777) == oct(0o755)
        assert oct(os.stat(tmp_path / "new" / "f.txt").st_mode & 0o777) == oct(0o644)
        assert oct(os.stat(tmp_path / "new" / "g.txt").st_mode & 0o777) == oct(0o644)
        os.umask(0o077)
        assert rio.current_umask() == 0o077
        with atomic_dir(tmp_path / "private") as tmp:
            with atomic_path(os.path.join(tmp, "f.txt")) as f:
                open(f, "w").write("x")
        assert oct(os.stat(tmp_path / "private").st_mode & 0o777) == oct(0o700)
        assert oct(os.stat(tmp_path / "private" / "f.txt").st_mode & 0o777) == oct(0o600)
    finally:
        os.umask(old)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    host, dead, day = rio._host_tag(), _dead_pid(), 25 * 3600
    names = {  # name: (what it is, a folder?)
        f".tmp-roformer-{host}-{dead}-abcd1234": ("dead writer", True),
        f".model.safetensors.roformer-{host}-{dead}-abcd1234.tmp": ("dead writer", False),
        f".tmp-roformer-{host}-{os.getpid()}-abcd1234": ("live writer", True),
        f".tmp-roformer-{host}-{os.getppid()}-abcd1234": ("live writer", True),
        ".tmp-roformer-00000000-1-abcd1234": ("other host, fresh", True),
        ".tmp-roformer-00000001-1-abcd1234": ("other host, old", True),
        ".notes.tmp": ("not ours", False),
        f".notes.{dead}.tmp": ("not ours", False),
        "model.safetensors": ("not a temporary", False),
    }
    for name, (what, folder) in names.items():
        path = tmp_path / name
        if folder:
            path.mkdir()
            (path / "part").write_text("x")
        else:
            path.write_text("x")
        if what == "other host, old":
            for p in (path / "part", path):
                os.utime(p, (time.time() - day, time.time() - day))
    stale = sorted(n for n, (what, _) in names.items() if what in ("dead writer", "other host, old"))
    assert sorted(remove_stale_temporaries(tmp_path)) == stale
    assert sorted(os.listdir(tmp_path)) == sorted(set(names) - set(stale))
    # atomic_dir cleans the folder it makes its temporary in
    (tmp_path / f".tmp-roformer-{host}-{dead}-zzzz0000").mkdir()
    with atomic_dir(tmp_path) as tmp:
        assert not (tmp_path / f".tmp-roformer-{host}-{dead}-zzzz0000").exists()
        assert str(os.getpid()) in os.path.basename(tmp)


SLOW_WRITER = """
import os, sys, time
from roformer_core.io import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    with open(os.path.join(tmp, "big.bin"), "wb") as fh:
        print(tmp, flush=True)
        for _ in range(6000):
            fh.write(b"\\0" * 65536)
            time.sleep(0.01)
"""


@pytest.mark.parametrize("exists", [False, True])
def test_sigterm_during_an_atomic_write_removes_the_temporary(tmp_path, exists):
    target = tmp_path / "out"
    if exists:
        target.mkdir()
        (target / "old.txt").write_text("old")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    tmp = proc.stdout.readline().strip()
    assert tmp and os.path.isdir(tmp)
    time.sleep(0.2)  # well inside the write
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM  # SystemExit, not a kill: the cleanup ran
    assert not os.path.exists(tmp)
    assert os.listdir(tmp_path) == (["out"] if exists else [])
    if exists:
        assert os.listdir(target) == ["old.txt"]


def test_sigterm_handler_of_the_program_is_left_alone():
    seen = []

    def handler(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with sigterm_cleanup():
            assert signal.getsignal(signal.SIGTERM) is handler
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert seen == [signal.SIGTERM]
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with sigterm_cleanup():
            with pytest.raises(SystemExit) as info:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
        assert info.value.code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_atomic_dir_refuses_a_file_and_keeps_the_old_signature(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        with atomic_dir(tmp_path / "file"):
            pass
    with pytest.raises(FileExistsError):
        with atomic_dir(tmp_path / "file", False):
            pass
    with atomic_dir(tmp_path / "d", True) as tmp:
        os.mkdir(os.path.join(tmp, "sub"))
        open(os.path.join(tmp, "sub", "a"), "w").write("1")
    with atomic_dir(tmp_path / "d") as tmp:  # a folder replaced by a folder
        os.mkdir(os.path.join(tmp, "sub"))
        open(os.path.join(tmp, "sub", "b"), "w").write("2")
    assert os.listdir(tmp_path / "d" / "sub") == ["b"]
    assert _leftovers(tmp_path / "d") == []


# -- config ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [(f, v) for f in ("rotary_value", "use_cache", "is_decoder",
                                                            "add_cross_attention", "tie_word_embeddings")
                                          for v in ("no", "true", 1, 0, None)])
def test_config_booleans_must_be_true_or_false(tmp_path, field, value):
    with pytest.raises(ConfigError, match=f"'{field}' must be true or false"):
        RoFormerConfig(**{field: value})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roformer", field: value}))
    with pytest.raises(ConfigError, match=f"'{field}' must be true or false"):
        RoFormerConfig.from_json_file(tmp_path)


@pytest.mark.parametrize("changes, message", [
    ({"id2label": ["neg", "pos"]}, "'id2label' must map label ids to names, got a list"),
    ({"id2label": {"zero": "neg", "one": "pos"}}, "'id2label' has the key 'zero'"),
    ({"id2label": {"0": "neg", "2": "pos"}}, "'id2label' must have the label ids 0..1"),
    ({"id2label": {"0": ["neg"], "1": "pos"}}, "'id2label' maps '0'"),
    ({"label2id": {"neg": "0", "pos": 1}}, "'label2id' maps 'neg' to '0'"),
    ({"label2id": {"neg": 0.0, "pos": 1}}, "'label2id' maps 'neg' to 0.0"),
    ({"label2id": ["neg"]}, "'label2id' must map label names to ids"),
    ({"initializer_range": "0.02"}, "'initializer_range' must be a finite number"),
    ({"initializer_range": None}, "'initializer_range' must be a finite number"),
    ({"layer_norm_eps": float("nan")}, "'layer_norm_eps' must be a finite number"),
    ({"hidden_dropout_prob": True}, "'hidden_dropout_prob' must be a finite number"),
    ({"attention_probs_dropout_prob": [0.1]}, "'attention_probs_dropout_prob' must be a finite number"),
    ({"hidden_size": 64.0}, "'hidden_size' must be an integer"),
    ({"vocab_size": "100"}, "'vocab_size' must be an integer"),
    ({"pad_token_id": None}, "'pad_token_id' must be an integer"),
    ({"bos_token_id": 1.5}, "'bos_token_id' must be an integer"),
    ({"num_labels": True}, "'num_labels' must be an integer"),
])
def test_config_fields_of_the_wrong_type(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        RoFormerConfig(**changes)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roformer", **changes}))
    with pytest.raises(ConfigError, match=message):
        RoFormerConfig.from_json_file(tmp_path)


def test_config_numbers_accepted_as_json_writes_them(tmp_path):
    cfg = RoFormerConfig(hidden_dropout_prob=0, initializer_range=1, id2label={"0": "a", 1: "b"},
                         label2id={"a": 0, "b": 1})
    assert cfg.hidden_dropout_prob == 0.0 and isinstance(cfg.initializer_range, float)
    assert cfg.id2label == {0: "a", 1: "b"}


def test_config_replace_refuses_typos_and_accepts_reference_keys(tmp_path):
    cfg = RoFormerConfig()
    with pytest.raises(ConfigError, match="unknown config field 'hiden_size' \\(did you mean 'hidden_size'\\?\\)"):
        cfg.replace(hiden_size=64)
    with pytest.raises(ConfigError, match="did you mean 'num_attention_heads'"):
        cfg.replace(num_attention_head=4)
    for key, value in (("architectures", ["RoFormerForMaskedLM"]), ("torch_dtype", "float32"),
                       ("problem_type", "regression"), ("output_hidden_states", True), ("dtype", "bfloat16")):
        assert cfg.replace(**{key: value}).to_dict()[key] == value
    # keys a file brought in, known or not, stay editable; reading a file never checks for typos
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roformer", "my_custom_key": 1, "hiden": 2}))
    loaded = RoFormerConfig.from_json_file(tmp_path)
    assert loaded.extra == {"my_custom_key": 1, "hiden": 2}
    assert loaded.replace(my_custom_key=5).extra["my_custom_key"] == 5


def test_config_deeply_nested_json_is_one_error(tmp_path):
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nests too deeply"):
        RoFormerConfig.from_json_file(tmp_path)


# -- tokenizer ------------------------------------------------------------------------------------------
def _tokenizer_folder(tmp_path, config=None, special_map=None, added=None):
    folder = tmp_path / "tok"
    folder.mkdir(exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIALS + ["好"]) + "\n", encoding="utf-8")
    for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map),
                       ("added_tokens.json", added)):
        if data is not None:
            (folder / name).write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("config, message", [
    ({"model_max_length": "512"}, "'model_max_length' must be a non-negative integer, got '512'"),
    ({"model_max_length": 512.0}, "'model_max_length' must be a non-negative integer"),
    ({"model_max_length": True}, "'model_max_length' must be a non-negative integer"),
    ({"model_max_length": -1}, "'model_max_length' must be a non-negative integer"),
    ({"never_split": "hello"}, "'never_split' must be a list of strings, got 'hello'"),
    ({"never_split": ["a", 1]}, "'never_split' must be a list of strings"),
    ({"never_split": {"a": 1}}, "'never_split' must be a list of strings"),
    ({"do_lower_case": "false"}, "'do_lower_case' must be true or false"),
    ({"strip_accents": "yes"}, "'strip_accents' must be true, false or null"),
    ({"padding_side": "up"}, "'padding_side' must be 'right' or 'left'"),
    ({"unk_token": 5}, "'unk_token' must be a token"),
    ({"added_tokens_decoder": ["[PAD]"]}, "'added_tokens_decoder' must map token ids to token objects"),
    ({"added_tokens_decoder": {"x": {"content": "[PAD]"}}}, "'added_tokens_decoder' has the key 'x'"),
    ({"added_tokens_decoder": {"0": "[PAD]"}}, "'added_tokens_decoder' maps 0 to '\\[PAD\\]'"),
    ({"added_tokens_decoder": {"0": {"content": 0}}}, "not an object with a string 'content'"),
])
def test_tokenizer_config_fields_of_the_wrong_type(tmp_path, config, message):
    folder = _tokenizer_folder(tmp_path, config=config)
    with pytest.raises(ConfigError, match=message) as info:
        RoFormerTokenizer.from_pretrained(folder)
    assert "tokenizer_config.json: field" in str(info.value)


def test_tokenizer_other_files_and_arguments_of_the_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match="special_tokens_map.json: field 'mask_token' must be a token"):
        RoFormerTokenizer.from_pretrained(_tokenizer_folder(tmp_path, special_map={"mask_token": ["[MASK]"]}))
    with pytest.raises(ConfigError, match="added_tokens.json: field 'x' must map to an integer id"):
        RoFormerTokenizer.from_pretrained(_tokenizer_folder(tmp_path, special_map={}, added={"x": "5"}))
    vocab = SPECIALS + ["好"]
    for kwargs, message in (({"model_max_length": "512"}, "argument 'model_max_length'"),
                            ({"never_split": "abc"}, "argument 'never_split' must be a list of strings"),
                            ({"do_lower_case": "no"}, "argument 'do_lower_case' must be true or false")):
        with pytest.raises(ConfigError, match=message):
            RoFormerTokenizer(vocab=vocab, **kwargs)
    assert RoFormerTokenizer(vocab=vocab, never_split=("好",)).never_split == ["好"]
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "vocab.txt").write_text("\n".join(vocab))
    (tmp_path / "deep" / "tokenizer_config.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(ConfigError, match="nests too deeply"):
        RoFormerTokenizer.from_pretrained(tmp_path / "deep")


def test_convert_ids_to_tokens_refuses_strings():
    tok = RoFormerTokenizer(vocab=SPECIALS + ["好"])
    assert tok.convert_ids_to_tokens(np.array([2, 5])) == ["[CLS]", "好"]
    assert tok.convert_ids_to_tokens([np.int64(5)]) == ["好"]
    for bad in ("5", ["5"], [5, "x"], [None], [True], 5.0, {"a": 1}):
        with pytest.raises(InputError, match="convert_ids_to_tokens takes"):
            tok.convert_ids_to_tokens(bad)


def test_vocab_file_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes("\ufeff".encode() + "\n".join(SPECIALS + ["好"]).encode() + b"\n")
    tok = RoFormerTokenizer(path)
    assert tok.convert_ids_to_tokens(0) == "[PAD]" and tok.pad_token_id == 0
    assert tok.encode("好") == [2, 5, 3]


# -- vocabulary builder ----------------------------------------------------------------------------------
def test_build_vocab_output_folder_and_empty_corpus(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("今天天气很好\n", encoding="utf-8")
    assert build_vocab_main([str(corpus), "--vocab-size", "50", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a folder" in err
    (tmp_path / "afile").write_text("x")
    assert build_vocab_main([str(corpus), "--vocab-size", "50", "--output", str(tmp_path / "afile" / "v.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a folder" in err
    out = tmp_path / "out" / "vocab.txt"
    for content, why in (("", "the files are empty"), ("\n  \n\t\n", "every line is blank")):
        corpus.write_text(content, encoding="utf-8")
        assert build_vocab_main([str(corpus), "--vocab-size", "50", "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "holds no text" in err and why in err and "nothing written" in err
        assert not (tmp_path / "out").exists()
