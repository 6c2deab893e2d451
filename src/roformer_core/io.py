"""Atomic file writes: whatever fails, a reader finds the old files or the new ones, never half of either.

Every write goes to a temporary name on the file system of its destination and is renamed
into place at the end (a rename is atomic only within one file system):

* :func:`atomic_path` writes one file through a temporary file beside it.
* :func:`atomic_dir` writes a folder. When the folder does not exist yet, the temporary
  folder is made beside it and renamed onto it at the end. When it exists (it may be a
  mount point, which cannot be renamed and may be a different file system from its
  parent), the temporary folder is made *inside* it, and at the end each new file is moved
  into place; a file it replaces is kept aside until all new files are in place, so an
  error at any step puts the old files back.

Temporaries get the permissions the umask gives (``mkstemp``/``mkdtemp`` make them private),
carry the creating process id in their names, so :func:`remove_stale_temporaries` can remove
what a killed writer left behind, and SIGTERM during a write removes them (:func:`sigterm_cleanup`).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import zlib
from typing import Iterable, Iterator

#: Marks the temporaries of this module; also what :func:`remove_stale_temporaries` looks for.
TEMP_MARK = "roformer"
# ".<name>.roformer-<host>-<pid>-<random>.tmp" beside a destination, ".tmp-roformer-<host>-<pid>-<random>"
# inside an existing folder. The random part is tempfile's (8 of [a-z0-9_]).
_OURS = re.compile(r"^\.(?:tmp-roformer-|.+\.roformer-)(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-[a-z0-9_]+(?:\.tmp)?$")
#: Temporaries whose creator cannot be checked (another host) are removed only after this many hours.
STALE_HOURS = 24.0
# Leaves room for the mark, pid and random part within the usual 255-byte name limit.
_MAX_BASE = 100


def _host_tag() -> str:
    # A process id means something only on its own host (a folder may be shared over NFS).
    return f"{zlib.crc32(os.uname().nodename.encode('utf-8', 'replace')):08x}"


def _beside_prefix(path: str) -> str:
    return f".{os.path.basename(path)[:_MAX_BASE]}.{TEMP_MARK}-{_host_tag()}-{os.getpid()}-"


def _inside_prefix() -> str:
    return f".tmp-{TEMP_MARK}-{_host_tag()}-{os.getpid()}-"


def current_umask() -> int:
    """The process umask, read without changing it where the system allows.

    ``os.umask`` can only be read by setting it; between the two calls another thread's new
    files would get the temporary value. Linux reports it in ``/proc/self/status``, which is
    read first; elsewhere the value is swapped with 0o022 (never 0, so a file another thread
    makes in that instant is at worst less open than asked, never world-writable). Read once
    per write, as the umask may change during a program.

    Example:
        >>> 0 <= current_umask() <= 0o777
        True
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def _pid_dead(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # another user's process (EPERM), or not a valid pid: assume alive
        return False
    return False


def _newest_mtime(path: str) -> float:
    newest = os.lstat(path).st_mtime
    if os.path.isdir(path) and not os.path.islink(path):
        with contextlib.suppress(OSError):
            with os.scandir(path) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def remove_stale_temporaries(folder: str | os.PathLike, max_age_hours: float = STALE_HOURS) -> list[str]:
    """Remove the temporaries this module left in ``folder`` when a writer was killed.

    Only names this module makes are touched (``.tmp-roformer-…`` folders and
    ``.<name>.roformer-….tmp`` files or folders, which carry the host and process id of their
    writer). One is removed when its writer ran on this host and is no longer running, or
    when nothing in it changed for ``max_age_hours``. Returns the names removed.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> os.mkdir(os.path.join(d, ".tmp-roformer-00000000-1-abcdefgh"))  # from another host
        >>> remove_stale_temporaries(d), remove_stale_temporaries(d, max_age_hours=0)
        ([], ['.tmp-roformer-00000000-1-abcdefgh'])
    """
    folder = os.fspath(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    host, now, removed = _host_tag(), time.time(), []
    for name in sorted(names):
        match = _OURS.match(name)
        if match is None:
            continue
        path = os.path.join(folder, name)
        try:
            if os.path.islink(path):  # never ours
                continue
            dead = match["host"] == host and _pid_dead(int(match["pid"]))
            if not dead and now - _newest_mtime(path) < max_age_hours * 3600:
                continue
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed.append(name)
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue
    return removed


class _Terminated:
    """SIGTERM → SystemExit, once: a second SIGTERM during the cleanup does not cut it short."""

    def __init__(self):
        self.raised = False

    def __call__(self, signum, frame):
        if not self.raised:
            self.raised = True
            raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_cleanup() -> Iterator[None]:
    """While inside, SIGTERM raises ``SystemExit`` (exit status 143) instead of killing the process.

    SIGTERM's default action ends the process at once, leaving temporary files behind; as an
    exception, it runs the ``except``/``finally`` cleanup of the writes in progress. Only in
    the main thread (the only one Python delivers signals to) and only when SIGTERM has its
    default action: a handler the program installed itself, or SIGTERM ignored, is left alone.
    The previous action is restored on leaving.

    Example:
        >>> import signal
        >>> before = signal.getsignal(signal.SIGTERM)
        >>> with sigterm_cleanup():
        ...     inside = signal.getsignal(signal.SIGTERM)
        >>> inside is not before, signal.getsignal(signal.SIGTERM) is before
        (True, True)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
        install = previous == signal.SIG_DFL
        if install:
            signal.signal(signal.SIGTERM, _Terminated())
    except (ValueError, OSError, AttributeError):  # no signals here (a sub-interpreter, an odd platform)
        install = False
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The file ends with the permissions a newly created file gets (``0o666`` less the umask).

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "x.txt")
        >>> with atomic_path(target) as tmp:
        ...     _ = open(tmp, "w").write("done")
        >>> open(target).read()
        'done'
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    umask = current_umask()
    with sigterm_cleanup():
        fd, tmp = tempfile.mkstemp(prefix=_beside_prefix(path), suffix=".tmp", dir=directory)
        os.close(fd)
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it 0600
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True, remove: Iterable[str] = ()) -> Iterator[str]:
    """Yield a temporary folder; its files replace those of ``path`` only on success.

    Files already in ``path`` and not written again are kept (a checkpoint folder may also
    hold a tokenizer), unless ``overwrite`` is False, where an existing ``path`` is an error.
    ``remove`` names old entries of ``path`` (``fnmatch`` patterns allowed, e.g.
    ``"model-*-of-*.safetensors"``) that the new files make obsolete: they are deleted only
    once every new file is in place, and an entry written anew is never deleted.

    If anything fails, the temporary folder is removed and ``path`` holds what it held before:
    replaced files are put back. New files are moved in data first, ``.json`` files last, so
    that an index never names a shard not yet in place.

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> with atomic_dir(target) as tmp:
        ...     _ = open(os.path.join(tmp, "a"), "w").write("1")
        >>> with atomic_dir(target, remove=["a"]) as tmp:
        ...     _ = open(os.path.join(tmp, "b"), "w").write("2")
        >>> os.listdir(target)
        ['b']
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(errno.EEXIST, "the destination exists", path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "the destination exists and is not a folder", path)
    patterns = [remove] if isinstance(remove, str) else list(remove)
    umask = current_umask()
    with sigterm_cleanup():
        if os.path.isdir(path):
            # Inside, not beside: the final renames then stay on path's own file system even
            # when path is a mount point.
            where, prefix, suffix = path, _inside_prefix(), ""
        else:
            where, prefix, suffix = os.path.dirname(path), _beside_prefix(path), ".tmp"
            os.makedirs(where, exist_ok=True)
        remove_stale_temporaries(where)
        tmp = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=where)
        try:
            yield tmp
            if os.path.isdir(path):
                _move_into(tmp, path, patterns)
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it 0700
                os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _sorted_for_commit(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda n: (n.endswith(".json"), n))


def _remove_any(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def _move_into(tmp: str, path: str, patterns: list[str]) -> None:
    """Move the entries of ``tmp`` into ``path``, then remove obsolete ones; all or nothing on error.

    Each replaced entry first gets a second name in a backup folder (a hard link: the old
    file stays visible under its name until the new one takes it over) so it can be put back.
    """
    new = _sorted_for_commit(os.listdir(tmp))
    backup = tempfile.mkdtemp(prefix=_inside_prefix(), dir=path)
    # Rollback journal: (name, old entry's place in the backup or None, new entry moved in?)
    placed: list[list] = []
    removed: list[str] = []
    try:
        for name in new:
            src, dst, kept = os.path.join(tmp, name), os.path.join(path, name), None
            step = [name, None, False]
            placed.append(step)
            if os.path.lexists(dst):
                kept = os.path.join(backup, name)
                linked = False
                if not os.path.isdir(dst) and not os.path.isdir(src):
                    try:
                        os.link(dst, kept, follow_symlinks=False)
                        linked = True
                    except OSError:  # no hard links on this file system
                        pass
                if not linked:  # a folder cannot be replaced in one step: moved aside first
                    os.rename(dst, kept)
                step[1] = kept
            os.replace(src, dst)
            step[2] = True
        written = set(new)
        ours = {os.path.basename(tmp), os.path.basename(backup)}
        for name in sorted(os.listdir(path)):
            if name in written or name in ours or _OURS.match(name):
                continue
            if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                os.rename(os.path.join(path, name), os.path.join(backup, name))
                removed.append(name)
    except BaseException:
        if _roll_back(path, backup, placed, removed):
            shutil.rmtree(backup, ignore_errors=True)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _roll_back(path: str, backup: str, placed: list[list], removed: list[str]) -> bool:
    """Put the old entries back; True when all of them are (the backup may then go)."""
    complete = True
    for name in reversed(removed):
        try:
            os.rename(os.path.join(backup, name), os.path.join(path, name))
        except OSError:
            complete = False
    for name, kept, moved in reversed(placed):
        dst = os.path.join(path, name)
        try:
            if kept is None:
                if moved:
                    _remove_any(dst)
            else:
                if os.path.isdir(kept) and os.path.lexists(dst):
                    _remove_any(dst)
                os.replace(kept, dst)
        except OSError:
            complete = False
    return complete


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename.

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "note.txt")
        >>> atomic_write_text(target, "hello")
        >>> open(target).read()
        'hello'
    """
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
