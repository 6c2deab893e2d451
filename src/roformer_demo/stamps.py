"""One run per output folder, and stage outputs that say whether they are complete and what made them.

Two runs writing into the same ``--out`` would mix their files without a word (one run's
vocabulary beside the other's data split, which can put test reviews into training). So:

* :func:`lock_output` holds ``OUT/.lock`` (``fcntl.flock``) for a whole command: a stage takes it
  exclusively, serving from the run's folders takes it shared; a second command that cannot
  get it stops at once with one line. The kernel drops the lock when its process ends, however
  it ends, so a killed run never leaves a stale lock behind.
* Each stage removes its stamp (``OUT/stamps/<stage>.json``) when it starts and writes it last,
  listing every file it wrote with its SHA-256, the stamps of the stages it was built from and
  the settings that shaped it. :func:`require` gives a later stage the stamp of an earlier one
  only when it is there (the stage finished), every file still has its recorded content (no
  other run rewrote it since) and the stages it was built from are still the ones in place;
  otherwise one :class:`~roformer_core.errors.InputError` saying what to run again.

Example:
    >>> import tempfile
    >>> from roformer_demo.settings import Layout
    >>> layout = Layout(tempfile.mkdtemp())
    >>> with lock_output(layout.root):
    ...     os.makedirs(layout.data); _ = open(layout.split("train"), "w").write("{}\\n")
    ...     stamp = write_stamp(layout, "vocab", [layout.data])
    >>> require(layout, "vocab")["files"] == {"data/train.jsonl": stamp["files"]["data/train.jsonl"]}
    True
    >>> _ = open(layout.split("train"), "a").write("{}\\n")
    >>> require(layout, "vocab")
    Traceback (most recent call last):
    ...
    roformer_core.errors.InputError: ...data/train.jsonl changed after the `vocab` stage wrote it ...
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping

from roformer_core.errors import InputError
from roformer_core.io import atomic_write_text

LOCK_NAME = ".lock"
STAMPS = "stamps"
#: what each stage's consumers are told to run when its output is missing or changed
RERUN = {"vocab": "the `vocab` stage", "train": "the `train` stage", "save": "the `train` stage",
         "eval": "the `eval` stage", "flax": "the `flax` stage", "convert": "the `convert` stage"}
# errors that mean "this file system cannot lock", not "someone holds the lock"
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


# -- the lock -----------------------------------------------------------------------------------------
def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f" ({text})" if text else ""


def _open_lock(out: str, shared: bool) -> int | None:
    path = os.path.join(out, LOCK_NAME)
    if not shared:
        os.makedirs(out, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise
    try:  # a read-only results folder: a reader can still lock what is there
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None  # nothing writes into a folder we cannot write into either


@contextlib.contextmanager
def lock_output(out: str | os.PathLike, shared: bool = False, command: str = "") -> Iterator[None]:
    """Hold ``out/.lock`` while inside: exclusively (a stage writes) or ``shared`` (reading).

    Never waits: when another process holds a lock that conflicts, one :class:`InputError`
    names it (its pid and command when it is a writer). Made for the main thread of a
    command-line program: taking the same lock twice in one process conflicts too.

    Example:
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> with lock_output(out, command="vocab"):
        ...     with lock_output(out, shared=True):
        ...         pass
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: another roformer-demo (pid ... vocab) is using ...
    """
    import fcntl

    out = os.fspath(out)
    if shared and not os.path.isdir(out):
        yield  # nothing to read there, and a reader creates no folder
        return
    fd = _open_lock(out, shared)
    if fd is None:
        yield
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd) or (" (serving from it)" if not shared else "")
            raise InputError(f"another roformer-demo{holder} is using {out} (it holds {os.path.join(out, LOCK_NAME)}); "
                             "wait for it to finish, or pass another --out") from None
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                raise
            print(f"roformer-demo: warning: {out} cannot be locked ({e.strerror}); make sure no other run "
                  "uses it", file=sys.stderr)
        if not shared:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}{': ' + command if command else ''}\n".encode())
        try:
            yield
        finally:
            if not shared:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # readers that meet the lock later see no stale holder
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


# -- stamps -------------------------------------------------------------------------------------------
def stamp_path(layout, stage: str) -> str:
    """Where the stamp of ``stage`` lies (``OUT/stamps/<stage>.json``).

    Example:
        >>> from roformer_demo.settings import Layout
        >>> stamp_path(Layout("runs/demo"), "vocab")
        'runs/demo/stamps/vocab.json'
    """
    return os.path.join(layout.root, STAMPS, f"{stage}.json")


def clear_stamp(layout, stage: str) -> None:
    """Remove the stamp of ``stage``: called as it starts, so until it finishes its outputs are
    not complete for anyone.

    Example:
        >>> from roformer_demo.settings import Layout
        >>> clear_stamp(Layout("/nonexistent"), "vocab")  # nothing there: nothing to do
    """
    with contextlib.suppress(FileNotFoundError):
        os.remove(stamp_path(layout, stage))


def file_digest(path: str) -> str:
    """SHA-256 of a file's content, read in blocks.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "x"); _ = open(path, "w").write("abc")
        >>> file_digest(path)[:12]
        'ba7816bf8f01'
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files_of(root: str, output: str) -> list[str]:
    path = os.path.join(root, output)
    if os.path.isfile(path):
        return [output]
    found = []
    for name in sorted(os.listdir(path)):
        if name.startswith("."):  # temporaries of atomic writes, never part of an output
            continue
        found.extend(_files_of(root, os.path.join(output, name)))
    return found


def _relative(layout, path: str) -> str:
    rel = os.path.relpath(path, layout.root)
    if rel.startswith(os.pardir):
        raise ValueError(f"{path} is not under {layout.root}")
    return rel.replace(os.sep, "/")


def write_stamp(layout, stage: str, outputs: Iterable[str], inputs: Mapping[str, dict] | None = None,
                built_from: Mapping | None = None) -> dict:
    """Write the stamp of ``stage``, last: the digest of every file under ``outputs`` (files or
    folders under ``layout.root``), the ids of the ``inputs`` stamps, and ``built_from``.

    Example: see the module docstring.
    """
    outputs = [_relative(layout, o) for o in outputs]
    files = {}
    for output in outputs:
        for rel in _files_of(layout.root, output):
            files[rel.replace(os.sep, "/")] = file_digest(os.path.join(layout.root, rel))
    stamp = {"stage": stage, "id": uuid.uuid4().hex,
             "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "outputs": outputs, "inputs": {name: s["id"] for name, s in (inputs or {}).items()},
             "built_from": dict(built_from or {}), "files": files}
    path = stamp_path(layout, stage)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, json.dumps(stamp, indent=2, ensure_ascii=False) + "\n")
    return stamp


def read_stamp(layout, stage: str) -> dict | None:
    """The stamp of ``stage`` as written, or None when there is none (or it is not a stamp).

    Example:
        >>> from roformer_demo.settings import Layout
        >>> read_stamp(Layout("/nonexistent"), "vocab") is None
        True
    """
    try:
        with open(stamp_path(layout, stage), encoding="utf-8") as fh:
            stamp = json.load(fh)
    except (OSError, ValueError, RecursionError):
        return None
    ok = isinstance(stamp, dict) and isinstance(stamp.get("id"), str) and isinstance(stamp.get("files"), dict) \
        and isinstance(stamp.get("inputs"), dict) and isinstance(stamp.get("outputs"), list)
    return stamp if ok else None


def require(layout, stage: str, check_inputs: bool = True) -> dict:
    """The stamp of ``stage`` when its outputs are complete and unchanged and (``check_inputs``)
    the stages it was built from are still in place; else one :class:`InputError` saying what to
    run again. Serving a checkpoint needs only the first: it carries its own tokenizer.

    Example: see the module docstring.
    """
    rerun = RERUN.get(stage, f"the `{stage}` stage")
    stamp = read_stamp(layout, stage)
    if stamp is None:
        raise InputError(f"no complete output of the `{stage}` stage in {layout.root} (it has not run there, or "
                         f"did not finish): run {rerun} (or `run`) first")
    for rel, digest in stamp["files"].items():
        path = os.path.join(layout.root, *rel.split("/"))
        try:
            same = file_digest(path) == digest
        except OSError:
            same = False
        if not same:
            raise InputError(f"{path} changed after the `{stage}` stage wrote it (another run, or an interrupted "
                             f"one, wrote there since): run {rerun} (or `run`) again")
    for name, stamp_id in (stamp["inputs"] if check_inputs else {}).items():
        current = read_stamp(layout, name)
        if current is None or current["id"] != stamp_id:
            raise InputError(f"the output of the `{stage}` stage in {layout.root} was built from another output of "
                             f"the `{name}` stage than the one there now ({name} ran again since): run {rerun} again")
    return stamp


def stamped_folder(stamp: dict, layout, folder: str) -> bool:
    """Whether the stage of ``stamp`` wrote ``folder`` (a path under ``layout.root``).

    Example:
        >>> from roformer_demo.settings import Layout
        >>> stamped_folder({"outputs": ["mlm", "classifier"]}, Layout("runs/demo"), "runs/demo/mlm")
        True
    """
    return _relative(layout, folder) in stamp["outputs"]


__all__ = ["lock_output", "write_stamp", "clear_stamp", "read_stamp", "require", "stamped_folder", "file_digest",
           "stamp_path", "LOCK_NAME"]
