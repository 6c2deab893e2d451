"""roformer_core.torch_pickle: .bin files read like torch.load(weights_only=True), without torch, refusing code.

torch is used here only to WRITE fixtures and to give the expected values; crafted files are built
byte by byte (a few pickle opcodes, a zip or legacy container) so that every corner can be reached.
"""

import doctest
import mmap
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import roformer_core.torch_pickle as tp
from roformer_core.errors import CheckpointError
from roformer_core.torch_pickle import TorchTensor, read_torch_bin

TAGS = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
        torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
        torch.bool: "BOOL"}
FORMATS = ["zip", "legacy"]


def _save(obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def _expected(t: torch.Tensor) -> np.ndarray:
    t = t.detach().resolve_neg().resolve_conj()
    return t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()


def _state_dict():
    gen = torch.Generator().manual_seed(0)
    sd = {f"dtype.{TAGS[d]}": (torch.randn(3, 5, generator=gen) * 50).to(d) for d in TAGS}
    # a real module's state dict: OrderedDict with _metadata, and a weight tied to the embedding
    emb, lin = torch.nn.Embedding(7, 4), torch.nn.Linear(4, 7)
    lin.weight = emb.weight
    sd.update(torch.nn.Sequential(emb, lin).state_dict())
    base = torch.arange(40, dtype=torch.float32)
    sd["tied.a"] = sd["tied.b"] = base.view(5, 8)                  # one tensor under two names
    sd["slice.head"] = base[:10]                                   # two tensors slicing one storage
    sd["slice.tail"] = base[10:].view(3, 10)
    sd["slice.window"] = base.view(5, 8)[1:4, 2:7]                 # offset + non-contiguous
    sd["view.transposed"] = torch.randn(4, 6, generator=gen).t()
    sd["view.bf16_transposed"] = torch.randn(3, 4, generator=gen).to(torch.bfloat16).t()
    sd["view.step"] = torch.randn(4, 9, generator=gen)[:, ::3]
    sd["view.expanded"] = torch.randn(3, 1, generator=gen).expand(3, 4)  # stride 0
    sd["view.permuted"] = torch.randn(2, 3, 4, generator=gen).permute(2, 0, 1)
    sd["edge.empty"] = torch.zeros(0, 4)
    sd["edge.empty_i64"] = torch.zeros(3, 0, dtype=torch.int64)
    sd["edge.scalar"] = torch.tensor(3.5)
    sd["edge.scalar_i64"] = torch.tensor(-7)
    sd["edge.parameter"] = torch.nn.Parameter(torch.ones(2, 2))
    sd["edge.negbit"] = torch._neg_view(torch.arange(4.0))
    sd["edge.negbit_bf16"] = torch._neg_view(torch.arange(4.0).to(torch.bfloat16))
    return sd


def _assert_matches_torch(path):
    ours = read_torch_bin(path)
    ref = torch.load(path, weights_only=True)
    assert list(ours) == list(ref)
    for name, t in ref.items():
        got, want = ours[name], _expected(t)
        assert isinstance(got, TorchTensor)
        assert got.shape == tuple(t.shape) and got.tag == TAGS[t.dtype], name
        arr = got.get()
        assert arr.dtype == want.dtype and arr.shape == want.shape, name
        assert np.array_equal(arr, want), name
        if arr.size > 1 and not t.is_neg():
            assert arr.strides == want.strides, name  # the saved layout, not a silent copy
    return ours


# -- reading what torch writes -------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_like_torch_load(tmp_path, fmt):
    _assert_matches_torch(_save(_state_dict(), tmp_path / "pytorch_model.bin", fmt))


def _memmap_base(arr):
    """The ``mmap`` at the root of ``arr``'s chain of views, or None when the data was copied."""
    while arr is not None and not isinstance(arr, mmap.mmap):
        arr = getattr(arr, "base", None)
    return arr


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_into_one_memory_map_with_shared_storages(tmp_path, fmt):
    ours = read_torch_bin(_save(_state_dict(), tmp_path / "m.bin", fmt))
    assert ours["tied.a"] is ours["tied.b"]
    assert np.shares_memory(ours["0.weight"].get(), ours["1.weight"].get())  # the tied module weight
    head, tail, window = ours["slice.head"].get(), ours["slice.tail"].get(), ours["slice.window"].get()
    for arr in (head, tail, window, ours["view.transposed"].get(), ours["dtype.BF16"].get()):
        assert _memmap_base(arr) is not None and not arr.flags.writeable
    assert np.shares_memory(head, tail) is False and np.shares_memory(head, ours["tied.a"].get())
    assert np.shares_memory(window, tail)
    assert _memmap_base(head) is _memmap_base(ours["dtype.F32"].get())  # one map of the file


def test_zip_alignment_is_what_torch_writes(tmp_path):
    """Storages are ZIP_STORED at 64-byte aligned offsets, so every view is aligned."""
    path = _save(_state_dict(), tmp_path / "a.bin", "zip")
    with zipfile.ZipFile(path) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    assert all(t.get().flags.aligned for t in read_torch_bin(path).values())


def test_any_top_folder_compressed_entries_and_big_endian(tmp_path):
    sd = {"w": torch.randn(3, 4).t(), "h": torch.randn(5).to(torch.bfloat16), "i": torch.arange(6).view(2, 3)}
    src = _save(sd, tmp_path / "src.bin", "zip")
    with zipfile.ZipFile(src) as zf:
        records = {i.filename.split("/", 1)[1]: zf.read(i) for i in zf.infolist()}
    # another writer: a different top folder, compressed entries, big-endian data
    swapped = dict(records, byteorder=b"big")
    for key in [k for k in records if k.startswith("data/")]:
        itemsize = {"0": 4, "1": 2, "2": 8}[key.split("/")[1]]
        swapped[key] = np.frombuffer(records[key], f"<u{itemsize}").astype(f">u{itemsize}").tobytes()
    out = tmp_path / "other.bin"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in swapped.items():
            zf.writestr(f"my model-v2/{name}", data)
    ours = read_torch_bin(out)
    for name, t in sd.items():
        arr = ours[name].get()
        assert arr.dtype.isnative and np.array_equal(arr, _expected(t)), name


def _zip_container(path, pkl, storages=None, top="archive", byteorder=b"little"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/data.pkl", pkl)
        zf.writestr(f"{top}/byteorder", byteorder)
        zf.writestr(f"{top}/version", b"3\n")
        for key, data in (storages or {}).items():
            zf.writestr(f"{top}/data/{key}", data)
    return path


def _legacy_container(path, pkl, storages=(), little=True):
    """The legacy layout: magic, protocol, sys_info, the payload, the key list, then count + bytes per storage."""
    order = "<" if little else ">"
    sys_info = {"protocol_version": 1001, "little_endian": little, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    with open(path, "wb") as fh:
        for header in (0x1950A86A20F9469CFC6C, 1001, sys_info):
            fh.write(pickle.dumps(header, protocol=2))
        fh.write(pkl)
        fh.write(pickle.dumps([key for key, _, _ in storages], protocol=2))
        for _, count, data in storages:
            fh.write(struct.pack(order + "q", count) + data)
    return path


# -- a few pickle opcodes, to write what torch cannot -------------------------------------
def _g(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _s(text):
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(n):
    return b"J" + struct.pack("<i", n)


def _tup(*items):
    return b"(" + b"".join(items) + b"t"


def _call(func, *args):
    return func + _tup(*args) + b"R"


def _tensor(key, numel, offset, shape, stride, stype="FloatStorage", view=None):
    pid = [_s("storage"), _g("torch", stype), _s(key), _s("cpu"), _i(numel)]
    if view is not None:
        pid.append(b"N" if view == "none" else view)
    return _call(_g("torch._utils", "_rebuild_tensor_v2"), _tup(*pid) + b"Q", _i(offset),
                 _tup(*map(_i, shape)), _tup(*map(_i, stride)), b"\x89", _call(_g("collections", "OrderedDict")))


def _dict(**entries):
    return b"\x80\x02}(" + b"".join(_s(k) + v for k, v in entries.items()) + b"u."


def test_crafted_zip_matches_the_pickle_writer():
    """The opcode helpers write what torch writes: torch itself loads a crafted file."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", _dict(w=_tensor("0", 6, 0, (2, 3), (3, 1))))
        zf.writestr("archive/byteorder", b"little")
        zf.writestr("archive/version", b"3\n")
        zf.writestr("archive/data/0", np.arange(6, dtype=np.float32).tobytes())
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["w"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_legacy_big_endian_and_storage_views(tmp_path):
    """Big-endian legacy files, and torch < 0.4's storage views (view key, offset, size) of a root storage."""
    data = np.arange(10, dtype=">f4").tobytes()
    view = _tup(_s("v1"), _i(4), _i(6))
    pkl = _dict(a=_tensor("root", 10, 0, (10,), (1,), view="none"),
                b=_tensor("root", 10, 1, (2, 2), (1, 2), view=view))
    ours = read_torch_bin(_legacy_container(tmp_path / "l.bin", pkl, [("root", 10, data)], little=False))
    assert ours["a"].get().tolist() == list(range(10))
    assert ours["b"].get().tolist() == [[5, 7], [6, 8]]  # view starts at element 4, tensor offset 1


def test_old_writers_rebuild_tensor_v1_and_python2_ordered_dict(tmp_path):
    """torch < 1.0 called _rebuild_tensor(storage, offset, size, stride); Python 2 pickled
    OrderedDict(list of [key, value] pairs)."""
    pid = _tup(_s("storage"), _g("torch", "DoubleStorage"), _s("k"), _s("cpu"), _i(6), b"N") + b"Q"
    v1 = _call(_g("torch._utils", "_rebuild_tensor"), pid, _i(0), _tup(_i(3), _i(2)), _tup(_i(1), _i(3)))
    pkl = b"\x80\x02" + _call(_g("collections", "OrderedDict"), b"](" + _tup(_s("w"), v1) + b"e") + b"."
    data = np.arange(6, dtype=np.float64).tobytes()
    ours = read_torch_bin(_legacy_container(tmp_path / "old.bin", pkl, [("k", 6, data)]))
    assert ours["w"].tag == "F64" and ours["w"].get().tolist() == [[0, 3], [1, 4], [2, 5]]


# -- no torch needed -------------------------------------------------------------------------
def test_reads_with_torch_impossible_to_import(tmp_path):
    sd = {"w": torch.randn(3, 4).t(), "h": torch.randn(5).to(torch.bfloat16), "i": torch.arange(6)}
    paths = [_save(sd, tmp_path / f"{fmt}.bin", fmt) for fmt in FORMATS]
    code = ("import sys; sys.modules['torch'] = None\n"
            "from roformer_core.torch_pickle import read_torch_bin\n"
            "for path in sys.argv[1:]:\n"
            "    for name, t in read_torch_bin(path).items():\n"
            "        print(name, t.tag, t.shape, t.get().tolist())\n"
            "print('torch' in sys.modules and sys.modules['torch'] is None)\n")
    out = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    want = [f"{n} {TAGS[t.dtype]} {tuple(t.shape)} {_expected(t).tolist()}" for n, t in sd.items()]
    assert out.stdout.splitlines() == want * 2 + ["True"]


# -- refusing code ---------------------------------------------------------------------------
class _Payload:
    """An object whose unpickling would run ``func(arg)``."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _payloads(marker):
    import builtins

    touch = f"open({str(marker)!r}, 'w').close()"
    return {"os.system": (os.system, f"touch {marker}"), "builtins.eval": (builtins.eval, touch),
            "builtins.exec": (builtins.exec, touch)}


def _global_of(func):
    # os.system is posix.system on Linux: the message names what the file references
    return "builtins." + func.__name__ if func.__module__ == "builtins" else f"{func.__module__}.{func.__name__}"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("which", ["os.system", "builtins.eval", "builtins.exec"])
def test_refuses_code_nested_in_the_state_dict(tmp_path, fmt, which):
    marker = tmp_path / "pwned"
    func, arg = _payloads(marker)[which]
    path = _save({"w": torch.ones(2), "x": _Payload(func, arg)}, tmp_path / "evil.bin", fmt)
    with pytest.raises(CheckpointError, match=f"refuses to load: it references {_global_of(func)}") as err:
        read_torch_bin(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the same file does run code in torch: the fixture is a real attack
    assert marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("where", ["top", "in_tensor_args", "in_pid", "in_build"])
def test_refuses_crafted_globals_anywhere(tmp_path, fmt, where):
    marker = tmp_path / "pwned"
    system = _call(_g("os", "system"), _s(f"touch {marker}"))
    tensor = _tensor("0", 4, 0, (4,), (1,), view="none" if fmt == "legacy" else None)
    pkl = {"top": b"\x80\x02" + system + b".",
           "in_tensor_args": _dict(w=tensor.replace(_tup(_i(4)), _tup(system), 1)),
           "in_pid": _dict(w=tensor.replace(_s("cpu"), system, 1)),
           "in_build": _dict(w=tensor + b"}" + _s("x") + system + b"sb")}[where]
    data = np.ones(4, np.float32).tobytes()
    path = (_zip_container(tmp_path / "e.bin", pkl, {"0": data}) if fmt == "zip"
            else _legacy_container(tmp_path / "e.bin", pkl, [("0", 4, data)]))
    with pytest.raises(CheckpointError, match="refuses to load: it references os.system"):
        read_torch_bin(path)
    assert not marker.exists()


def test_refuses_state_changes_on_tensors(tmp_path):
    """BUILD on a tensor could move its view outside the storage: refused, not applied."""
    tensor = _tensor("0", 4, 0, (4,), (1,))
    pkl = _dict(w=tensor + b"N}" + _s("shape") + _tup(_i(1000000)) + b"s\x86b")
    path = _zip_container(tmp_path / "b.bin", pkl, {"0": np.ones(4, np.float32).tobytes()})
    with pytest.raises(CheckpointError, match="set the state of a tensor"):
        read_torch_bin(path)


# -- strict structure and broken files -------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("obj, message", [
    ([torch.ones(2)], "top level is a list"),
    ({"state_dict": {"w": torch.ones(2)}}, "'state_dict' holds a nested mapping"),
    ({"w": torch.ones(2), "epoch": 3}, "'epoch' holds a int, not a tensor"),
    ({"w": torch.ones(2), "names": ["a"]}, "'names' holds a list, not a tensor"),
    ({1: torch.ones(2)}, "non-string key 1"),
])
def test_rejects_what_is_not_a_flat_state_dict(tmp_path, fmt, obj, message):
    path = _save(obj, tmp_path / "s.bin", fmt)
    with pytest.raises(CheckpointError, match=message) as err:
        read_torch_bin(path)
    assert "\n" not in str(err.value)


def _truncate(path, keep):
    raw = path.read_bytes()
    path.write_bytes(raw[:keep(len(raw))])
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "cannot read"),
    ("text", "not a PyTorch checkpoint"),
    ("zip_truncated", "not a readable zip archive"),
    ("legacy_truncated_data", "outside the file"),
    ("legacy_truncated_pickle", "unreadable pickle"),
    ("zip_no_pickle", "expected one <folder>/data.pkl"),
    ("zip_missing_storage", "not in the archive"),
    ("zip_short_storage", "holds 8 bytes, its storage needs 16"),
    ("tensor_outside_storage", "lies outside its storage '0' of 4 elements"),
    ("storage_two_types", "referenced as both F32"),
    ("bad_byteorder", "byteorder record says 'middle'"),
    ("not_a_storage_type", "not a torch storage class"),
])
def test_broken_files_give_one_line(tmp_path, case, message):
    p = tmp_path / "x.bin"
    four = np.ones(4, np.float32).tobytes()
    if case == "text":
        p.write_text("version https://git-lfs.github.com/spec/v1\n")
    elif case == "zip_truncated":
        _truncate(_save({"w": torch.ones(100)}, p, "zip"), lambda n: n // 2)
    elif case == "legacy_truncated_data":
        _truncate(_save({"w": torch.ones(100)}, p, "legacy"), lambda n: n - 10)
    elif case == "legacy_truncated_pickle":
        _truncate(_save({"w": torch.ones(100)}, p, "legacy"), lambda n: 60)
    elif case == "zip_no_pickle":
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("archive/other.pkl", b"")
    elif case == "zip_missing_storage":
        _zip_container(p, _dict(w=_tensor("0", 4, 0, (4,), (1,))))
    elif case == "zip_short_storage":
        _zip_container(p, _dict(w=_tensor("0", 4, 0, (4,), (1,))), {"0": b"\0" * 8})
    elif case == "tensor_outside_storage":
        _zip_container(p, _dict(w=_tensor("0", 4, 1, (2, 2), (2, 1))), {"0": four})
    elif case == "storage_two_types":
        _zip_container(p, _dict(a=_tensor("0", 4, 0, (4,), (1,)),
                                b=_tensor("0", 2, 0, (2,), (1,), stype="LongStorage")), {"0": four})
    elif case == "bad_byteorder":
        _zip_container(p, _dict(w=_tensor("0", 4, 0, (4,), (1,))), {"0": four}, byteorder=b"middle")
    elif case == "not_a_storage_type":
        pkl = _dict(w=_tensor("0", 4, 0, (4,), (1,))).replace(_g("torch", "FloatStorage"), b"N")
        _zip_container(p, pkl, {"0": four})
    with pytest.raises(CheckpointError, match=message) as err:
        read_torch_bin(p)
    assert "\n" not in str(err.value) and str(p) in str(err.value)


def test_docstring_examples():
    """tests/test_docstrings.py does not list this module yet, so its examples run here."""
    result = doctest.testmod(tp, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
