"""Start the workers of ``tests/workers`` as separate OS processes and follow what they say.

Each worker prints one JSON event per line on stdout; :class:`Run` reads them as they come (a
thread per stream), so a test can wait for an event, kill the process at a chosen step, and
read the rest afterwards. Ports come from :func:`free_port`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SRC = os.path.join(REPO, "src")


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def worker_env(**extra: str) -> dict:
    """The environment of a worker: this package on the path, quiet TensorFlow, CPU only."""
    env = dict(os.environ)
    for key in ("XLA_FLAGS", "TF_CONFIG", "RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR",
                "ROFORMER_TEST_KILL_IN_SAVE"):
        env.pop(key, None)
    env.update(PYTHONPATH=os.pathsep.join([SRC, env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="",
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


class Run:
    """One worker process: ``Run("flax_worker.py", ["--steps", "3"])``."""

    def __init__(self, script: str, args: list[str], env: dict | None = None, prefix: list[str] | None = None):
        command = [*(prefix or []), sys.executable, os.path.join(HERE, script), *map(str, args)]
        self.command = command
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env or worker_env(), cwd=REPO)
        self.events: list[dict] = []
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True)]
        for reader in self._readers:
            reader.start()
        self.ended_at: float | None = None

    def _read(self, stream, events: bool) -> None:
        for line in stream:
            with self._changed:
                if events:
                    self.lines.append(line)
                    if line.startswith("{"):
                        try:
                            self.events.append(json.loads(line))
                        except ValueError:
                            pass
                else:
                    self.errors.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, match, timeout: float = 300) -> dict:
        """The first event for which ``match(event)`` is true, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if match(event):
                        return event
                if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                    raise AssertionError(f"{self.name} ended (exit {self.proc.returncode}) before the event:\n"
                                         f"{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: no such event within {timeout}s:\n{self.tail()}")
                self._changed.wait(min(left, 0.5))

    def kill(self) -> None:
        """SIGKILL, as a preempted machine would; returns once the process is gone."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait(self, timeout: float = 300) -> int:
        """The exit status, waiting up to ``timeout`` seconds (killed and reported past it)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} still running after {timeout}s:\n{self.tail()}") from None
        for reader in self._readers:
            reader.join(10)
        return code

    def ok(self, timeout: float = 300) -> "Run":
        """Wait for a clean exit (an assertion error with the output otherwise)."""
        code = self.wait(timeout)
        assert code == 0, f"{self.name} exited with {code}:\n{self.tail()}"
        return self

    def of(self, kind: str) -> list[dict]:
        """The events of one kind so far."""
        with self._changed:
            return [e for e in self.events if e.get("event") == kind]

    @property
    def name(self) -> str:
        return " ".join(os.path.basename(c) for c in self.command[-12:])

    def tail(self, n: int = 25) -> str:
        with self._changed:
            return "".join(self.lines[-n:]) + "--- stderr ---\n" + "".join(self.errors[-n:])


def run_all(runs: list[Run], timeout: float = 300) -> list[Run]:
    """Wait for every run to exit cleanly; on the first failure the others are killed."""
    try:
        for run in runs:
            run.ok(timeout)
    finally:
        for run in runs:
            if run.proc.poll() is None:
                run.kill()
    return runs


def unshare_with_tmpfs(mount_point: str, size: str, keep: str | None = None) -> list[str]:
    """A command prefix running the rest in its own user and mount namespace, with a ``size``-limited
    tmpfs at ``mount_point`` (``unshare -rm``: no root needed). The mount ends with the command;
    ``keep`` (a folder) receives a copy of what the tmpfs holds then. The exit status is the command's."""
    script = f'mount -t tmpfs -o size={size} tmpfs "$0" || exit 97; "$@"; code=$?'
    if keep is not None:
        script += f'; cp -a "$0/." "{keep}/"'
    return ["unshare", "-rm", "sh", "-c", script + "; exit $code", str(mount_point)]
