"""PyTorch ``pytorch_model.bin`` files read into numpy without torch and without running pickled code.

Both formats found on the hub are read:

- the zip format (torch >= 1.6): ``<top>/data.pkl``, ``<top>/data/<key>`` storages and a
  ``<top>/byteorder`` record, under any top folder name;
- the legacy format (``torch.save(..., _use_new_zipfile_serialization=False)``): magic number,
  protocol and sys_info pickles, the state-dict pickle, the list of storage keys, then each
  storage as an 8-byte element count followed by its raw bytes.

The pickle is read by an unpickler that knows only the globals a tensor state dict needs
(``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and its relatives, the typed
storage classes), each replaced by a local stand-in; any other global is refused before anything
is called. Storages become views into one ``np.memmap`` of the file, tensors strided views into
them (tied weights share memory as in torch); bfloat16 comes out as its ``uint16`` bits, tag
``"BF16"``, as in :mod:`roformer_core.safetensors_io`.

Example:
    >>> import os, tempfile, torch  # torch only writes the example file
    >>> path = os.path.join(tempfile.mkdtemp(), "pytorch_model.bin")
    >>> w = torch.arange(6.0).reshape(2, 3)
    >>> torch.save({"w": w, "tied": w, "wt": w.t()}, path, _use_new_zipfile_serialization=False)
    >>> tensors = read_torch_bin(path)
    >>> sorted(tensors), tensors["wt"].shape, tensors["wt"].tag
    (['tied', 'w', 'wt'], (3, 2), 'F32')
    >>> tensors["wt"].get().tolist()
    [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import struct
import sys
import zipfile
from typing import Any

import numpy as np

from roformer_core.errors import CheckpointError
from roformer_core.safetensors_io import STORAGE

__all__ = ["TorchTensor", "read_torch_bin"]

#: torch typed-storage class name -> safetensors tag (the project's dtype names).
STORAGE_TAGS = {
    "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16", "DoubleStorage": "F64",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_LOCAL_HEADER = b"PK\x03\x04"


class TorchTensor:
    """One tensor of a ``.bin`` file: its shape, its safetensors dtype tag, and its data on demand.

    Example:
        >>> import os, tempfile, torch  # torch only writes the example file
        >>> path = os.path.join(tempfile.mkdtemp(), "pytorch_model.bin")
        >>> torch.save({"b": torch.ones(2, dtype=torch.bfloat16)}, path)
        >>> t = read_torch_bin(path)["b"]
        >>> t.shape, t.tag, t.get().dtype.name, hex(int(t.get()[0]))
        ((2,), 'BF16', 'uint16', '0x3f80')
    """

    __slots__ = ("shape", "tag", "_storage", "_offset", "_stride", "_negate")

    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...],
                 negate: bool = False):
        self._storage, self._offset, self._stride, self._negate = storage, offset, stride, negate
        self.shape = shape
        self.tag = storage.tag

    def __setstate__(self, state):
        # BUILD on a tensor could rewrite its shape or offset and point a view outside its storage.
        raise CheckpointError("the pickle tries to set the state of a tensor")

    def __repr__(self) -> str:
        return f"TorchTensor(shape={self.shape}, tag={self.tag!r})"

    def get(self) -> np.ndarray:
        """The data as a read-only numpy array (a view into the file's memory map where possible).

        BF16 comes as ``uint16`` bits. A copy is made only for a compressed zip entry, a
        big-endian file, or a tensor saved with torch's lazy negation bit.
        """
        arr = self._storage.array
        if arr is None:
            raise CheckpointError(f"{self._storage.path}: storage {self._storage.key!r} has no data in the file")
        count = int(np.prod(self.shape, dtype=np.int64))
        if count == 0:
            view = np.zeros(self.shape, dtype=arr.dtype)
            view.flags.writeable = False
        else:
            last = self._offset + sum((n - 1) * s for n, s in zip(self.shape, self._stride))
            if last >= arr.shape[0]:
                raise CheckpointError(f"{self._storage.path}: a tensor of shape {self.shape} lies outside its storage "
                                      f"{self._storage.key!r} ({arr.shape[0]} elements)")
            # torch strides are non-negative element counts, so they are always valid numpy byte strides
            view = np.lib.stride_tricks.as_strided(arr[self._offset:], shape=self.shape,
                                                   strides=tuple(s * arr.itemsize for s in self._stride),
                                                   writeable=False)
        if not view.dtype.isnative:
            view = view.astype(view.dtype.newbyteorder("="))
        if self._negate:
            view = view ^ np.uint16(0x8000) if self.tag == "BF16" else np.negative(view)
        return view


class _Storage:
    """A storage met in the pickle; ``array`` (1-D, its element dtype) is bound once its bytes are found."""

    __slots__ = ("path", "key", "tag", "numel", "array")

    def __init__(self, path: str, key: str, tag: str, numel: int):
        self.path, self.key, self.tag, self.numel, self.array = path, key, tag, numel, None

    def __setstate__(self, state):
        raise CheckpointError("the pickle tries to set the state of a storage")


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only a dtype tag, not callable, not a class."""

    __slots__ = ("name", "tag")

    def __init__(self, name: str, tag: str):
        self.name, self.tag = name, tag

    def __setstate__(self, state):
        raise CheckpointError(f"the pickle tries to set the state of torch.{self.name}")


class _StateDict(dict):
    """Stand-in for ``collections.OrderedDict`` (dicts keep their order); torch's ``_metadata`` is dropped."""

    def __setstate__(self, state):
        # state_dict() attaches a `_metadata` dict of module versions: plain data, not needed here
        pass


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_tuple(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, (tuple, list)) or not all(_is_int(v) and v >= 0 for v in x):
        raise CheckpointError(f"a tensor's {what} is not a tuple of non-negative integers: {x!r}")
    return tuple(x)


def _ordered_dict(items: Any = ()) -> _StateDict:
    # Python 2's OrderedDict pickled its items as a list of [key, value] pairs in the arguments.
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in items):
        raise CheckpointError("collections.OrderedDict is called with arguments that are not (key, value) pairs")
    return _StateDict(items)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, metadata: Any = None) -> TorchTensor:
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"a tensor is built from {type(storage).__name__}, not a storage")
    if not _is_int(storage_offset) or storage_offset < 0:
        raise CheckpointError(f"a tensor has storage offset {storage_offset!r}")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise CheckpointError(f"a tensor has size {shape} but stride {strides}")
    negate = False
    if metadata:
        if not isinstance(metadata, dict) or not set(metadata) <= {"neg", "conj"}:
            raise CheckpointError(f"a tensor has metadata this reader does not know: {metadata!r}")
        # conj is a no-op on real dtypes; neg is torch's lazy negation, applied on get()
        negate = bool(metadata.get("neg", False))
        if negate and storage.tag in ("BOOL", "U8"):
            raise CheckpointError(f"a {storage.tag} tensor carries torch's negation bit")
    if np.prod(shape, dtype=np.int64) > 0 and \
            storage_offset + sum((n - 1) * s for n, s in zip(shape, strides)) >= storage.numel:
        raise CheckpointError(f"a tensor of shape {shape}, stride {strides}, offset {storage_offset} lies outside "
                              f"its storage {storage.key!r} of {storage.numel} elements")
    return TorchTensor(storage, storage_offset, shape, strides, negate)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> TorchTensor:
    if backward_hooks:
        raise CheckpointError("a tensor was saved with backward hooks")
    return _rebuild_tensor(storage, storage_offset, size, stride, metadata)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> TorchTensor:
    if not isinstance(data, TorchTensor):
        raise CheckpointError(f"a parameter wraps {type(data).__name__}, not a tensor")
    if backward_hooks:
        raise CheckpointError("a parameter was saved with backward hooks")
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any, state: Any) -> TorchTensor:
    # the state is Python attributes set on the parameter; the weights do not depend on it
    return _rebuild_parameter(data, requires_grad, backward_hooks)


_ALLOWED: dict[str, Any] = {
    "collections.OrderedDict": _ordered_dict,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter_with_state,
    **{f"torch.{name}": _StorageType(name, tag) for name, tag in STORAGE_TAGS.items()},
}


def _global_name(module: str, name: str) -> str:
    # protocol-2 pickles (torch's default) spell builtins as __builtin__: name what Python would import
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


class _Unpickler(pickle.Unpickler):
    """Resolves only :data:`_ALLOWED` (or nothing, for the legacy header pickles); storages by persistent id."""

    def __init__(self, fh, path: str, storage_of=None):
        super().__init__(fh, encoding="utf-8")
        self._path, self._storage_of = path, storage_of

    def find_class(self, module: str, name: str) -> Any:
        full = _global_name(module, name)
        if self._storage_of is None or full not in _ALLOWED:
            raise CheckpointError(f"{self._path} refuses to load: it references {full}, which a tensor state "
                                  "dict never needs (the file may run code when loaded by torch.load)")
        return _ALLOWED[full]

    def persistent_load(self, pid: Any) -> Any:
        if self._storage_of is None or not isinstance(pid, tuple) or not pid:
            raise CheckpointError(f"{self._path}: unexpected persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise CheckpointError(f"{self._path}: persistent id of kind {kind!r}; only storages are read")
        return self._storage_of(pid[1:])


def _load_pickle(fh, path: str, storage_of=None) -> Any:
    try:
        return _Unpickler(fh, path, storage_of).load()
    except CheckpointError as e:
        # the stand-ins do not know the file: name it here, once
        if str(e).startswith(path):
            raise
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:  # any failure inside the pickle stream means a corrupt or crafted file
        raise CheckpointError(f"{path}: unreadable pickle ({type(e).__name__}: {e})") from None


def _storage_type(stype: Any, path: str) -> _StorageType:
    if not isinstance(stype, _StorageType):
        raise CheckpointError(f"{path}: a storage has type {stype!r}, not a torch storage class")
    return stype


class _Storages:
    """Storages of one file by key: each key met once, with one dtype."""

    def __init__(self, path: str):
        self.path = path
        self.by_key: dict[str, _Storage] = {}

    def get(self, stype: Any, key: Any, numel: Any) -> _Storage:
        tag = _storage_type(stype, self.path).tag
        key = key.decode("ascii") if isinstance(key, bytes) else key
        if not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise CheckpointError(f"{self.path}: malformed storage reference ({key!r}, {numel!r})")
        storage = self.by_key.get(key)
        if storage is None:
            storage = self.by_key[key] = _Storage(self.path, key, tag, numel)
        elif storage.tag != tag or storage.numel != numel:
            raise CheckpointError(f"{self.path}: storage {key!r} is referenced as both {storage.tag}[{storage.numel}] "
                                  f"and {tag}[{numel}]")
        return storage


def _element_dtype(tag: str, big_endian: bool) -> np.dtype:
    dtype = np.dtype(STORAGE[tag])
    return dtype.newbyteorder(">" if big_endian else "<") if dtype.itemsize > 1 else dtype


def _memmap(path: str, size: int) -> np.ndarray:
    return np.memmap(path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)


def _read_zip(path: str, size: int) -> Any:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable zip archive (truncated?): {e}") from None
    with zf:
        names = set(zf.namelist())
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: expected one <folder>/data.pkl in the zip archive, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        try:
            order = zf.read(prefix + "byteorder").decode("ascii") if prefix + "byteorder" in names \
                else sys.byteorder  # files older than the record are in the writer's order; torch assumes ours
            if order not in ("little", "big"):
                raise CheckpointError(f"{path}: byteorder record says {order!r}, expected 'little' or 'big'")
            raw_pickle = zf.read(pickles[0])
        except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(f"{path}: a record of the zip archive is unreadable (truncated?): {e}") from None
        storages = _Storages(path)

        def storage_of(args: tuple) -> _Storage:
            if len(args) != 4:
                raise CheckpointError(f"{path}: storage reference {args!r} does not have 4 fields")
            stype, key, _location, numel = args
            return storages.get(stype, key, numel)

        result = _load_pickle(io.BytesIO(raw_pickle), path, storage_of)
        mm = None
        with open(path, "rb") as fh:
            for key, storage in storages.by_key.items():
                name = f"{prefix}data/{key}"
                if name not in names:
                    raise CheckpointError(f"{path}: storage {key!r} is referenced but {name} is not in the archive")
                info = zf.getinfo(name)
                dtype = _element_dtype(storage.tag, order == "big")
                nbytes = storage.numel * dtype.itemsize
                if info.file_size < nbytes:
                    raise CheckpointError(f"{path}: {name} holds {info.file_size} bytes, its storage needs {nbytes}")
                if info.compress_type == zipfile.ZIP_STORED:
                    # torch writes storages uncompressed: map them in place, found after their local header
                    fh.seek(info.header_offset)
                    head = fh.read(30)
                    if len(head) < 30 or head[:4] != _ZIP_LOCAL_HEADER:
                        raise CheckpointError(f"{path}: bad local zip header for {name} (truncated?)")
                    name_len, extra_len = struct.unpack("<HH", head[26:30])
                    start = info.header_offset + 30 + name_len + extra_len
                    if start + nbytes > size:
                        raise CheckpointError(f"{path}: {name} lies outside the file (truncated?)")
                    mm = _memmap(path, size) if mm is None else mm
                    storage.array = mm[start:start + nbytes].view(dtype)
                else:
                    try:
                        data = zf.read(name)
                    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as e:
                        raise CheckpointError(f"{path}: {name} is unreadable (truncated?): {e}") from None
                    storage.array = np.frombuffer(data, dtype=dtype, count=storage.numel)
    return result


def _read_legacy(path: str, size: int) -> Any:
    with open(path, "rb") as fh:
        try:
            magic = _load_pickle(fh, path)
        except CheckpointError:
            magic = None
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(f"{path} is not a PyTorch checkpoint: neither a zip archive nor the legacy format")
        version = _load_pickle(fh, path)
        if version != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{path}: legacy format protocol {version!r}, only {_LEGACY_PROTOCOL} is known")
        sys_info = _load_pickle(fh, path)
        if not isinstance(sys_info, dict):
            raise CheckpointError(f"{path}: legacy sys_info is not a mapping")
        big_endian = not sys_info.get("little_endian", True)
        storages = _Storages(path)
        views: list[tuple[_Storage, str, int]] = []

        def storage_of(args: tuple) -> _Storage:
            if len(args) != 5:
                raise CheckpointError(f"{path}: storage reference {args!r} does not have 5 fields")
            stype, root_key, _location, numel, view_metadata = args
            root = storages.get(stype, root_key, numel)
            if view_metadata is None:
                return root
            # torch < 0.4 pickled storage slices as (view key, element offset, element count) of a root
            if not (isinstance(view_metadata, tuple) and len(view_metadata) == 3 and _is_int(view_metadata[1])
                    and view_metadata[1] >= 0):
                raise CheckpointError(f"{path}: malformed storage view {view_metadata!r}")
            view_key, offset, view_size = view_metadata
            view = storages.get(stype, view_key, view_size)
            if offset + view_size > numel:
                raise CheckpointError(f"{path}: storage view {view_key!r} lies outside storage {root_key!r}")
            views.append((view, root.key, offset))
            return view

        result = _load_pickle(fh, path, storage_of)
        keys = _load_pickle(fh, path)
        if not isinstance(keys, list):
            raise CheckpointError(f"{path}: legacy storage key list is not a list")
        pos = fh.tell()
    mm = _memmap(path, size)
    view_keys = {v.key for v, _, _ in views}
    for key in keys:
        storage = storages.by_key.get(key)
        if storage is None or key in view_keys:
            raise CheckpointError(f"{path}: the file stores data for {key!r}, which no tensor references")
        if pos + 8 > size:
            raise CheckpointError(f"{path}: storage {key!r} lies outside the file (truncated?)")
        count = int.from_bytes(bytes(mm[pos:pos + 8]), "big" if big_endian else "little", signed=True)
        dtype = _element_dtype(storage.tag, big_endian)
        if count < storage.numel:
            raise CheckpointError(f"{path}: storage {key!r} holds {count} elements, {storage.numel} referenced")
        start = pos + 8
        pos = start + count * dtype.itemsize
        if pos > size:
            raise CheckpointError(f"{path}: storage {key!r} lies outside the file (truncated?)")
        storage.array = mm[start:start + storage.numel * dtype.itemsize].view(dtype)
    for view, root_key, offset in views:
        root = storages.by_key[root_key]
        if root.array is not None:
            view.array = root.array[offset:offset + view.numel]
    missing = [k for k, s in storages.by_key.items() if s.array is None]
    if missing:
        raise CheckpointError(f"{path}: storage {missing[0]!r} is referenced but not in the file (truncated?)")
    return result


def read_torch_bin(path: str | os.PathLike) -> dict[str, TorchTensor]:
    """The tensors of a PyTorch state-dict file (zip or legacy format), by name, without torch.

    The file must hold one flat mapping of names to tensors, as ``torch.save(model.state_dict())``
    writes; anything else, and any pickle referencing a global a state dict never needs, raises
    :class:`~roformer_core.errors.CheckpointError` with one line saying what was found.

    Example:
        >>> import os, tempfile, torch  # torch only writes the example file
        >>> path = os.path.join(tempfile.mkdtemp(), "pytorch_model.bin")
        >>> torch.save({"bias": torch.tensor([1, 2], dtype=torch.int64)}, path)
        >>> t = read_torch_bin(path)["bias"]
        >>> t.shape, t.tag, t.get().tolist()
        ((2,), 'I64', [1, 2])
        >>> read_torch_bin(os.devnull)
        Traceback (most recent call last):
        ...
        roformer_core.errors.CheckpointError: /dev/null is not a PyTorch checkpoint: ...
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    result = _read_zip(path, size) if head == _ZIP_LOCAL_HEADER else _read_legacy(path, size)
    if not isinstance(result, dict):
        raise CheckpointError(f"{path}: the top level is a {type(result).__name__}, expected a mapping of "
                              "names to tensors (a state dict)")
    for name, value in result.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{path}: the state dict has a non-string key {name!r}")
        if isinstance(value, dict):
            raise CheckpointError(f"{path}: {name!r} holds a nested mapping; expected a flat state dict of tensors "
                                  "(a training checkpoint? save model.state_dict() alone)")
        if not isinstance(value, TorchTensor):
            raise CheckpointError(f"{path}: {name!r} holds a {type(value).__name__}, not a tensor")
    return dict(result)
