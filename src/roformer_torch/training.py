"""Training RoFormer in PyTorch on one process or several (``DistributedDataParallel``), resumable.

A small loop for fine-tuning, with what a long run on preemptible machines needs:

* :func:`init_distributed` — join a run of several processes (``torchrun`` sets the environment;
  CPU collectives through gloo), with a timeout on every collective, so a process that died
  makes the others stop with one message instead of waiting forever;
* :func:`train_step` — one optimizer step; across processes the loss is weighted so the summed
  gradients are those of the loss over the whole global batch (a per-process mean would weigh
  processes with few labelled tokens as much as the others);
* :class:`TrainingCheckpoints` — ``state_dict`` checkpoints of everything a run needs to carry
  on exactly: model, optimizer, learning-rate scheduler, step, the random states of every
  process (torch, numpy, python) and the position in the data; written by one process, each
  to a temporary file renamed into place when complete, the last ``keep`` kept;
* :func:`train` — the loop: wraps the model in DDP when there are several processes, restores
  the newest checkpoint, trains to ``num_steps``, checkpoints every ``every`` steps.

The data comes from ``batch_at(step)``: the batch of this process at that step, so the step
number is the position in the data and a resumed run sees the batches it has not seen yet.

Example:
    >>> import os, tempfile, torch
    >>> from roformer_torch import RoFormerConfig, RoFormerForSequenceClassification
    >>> cfg = RoFormerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
    ...                      num_attention_heads=2, intermediate_size=32, num_labels=2)
    >>> _ = torch.manual_seed(0)
    >>> model = RoFormerForSequenceClassification(cfg)
    >>> optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    >>> def batch_at(step):
    ...     g = torch.Generator().manual_seed(step)
    ...     return {"input_ids": torch.randint(1, 50, (4, 8), generator=g), "labels": torch.tensor([0, 1, 0, 1])}
    >>> checkpoints = TrainingCheckpoints(os.path.join(tempfile.mkdtemp(), "ckpt"), every=2)
    >>> model = train(model, optimizer, batch_at, num_steps=4, checkpoints=checkpoints)
    >>> checkpoints.steps()
    [2, 4]
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import logging
import os
import random
import re
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from roformer_core.errors import CheckpointError, DistributedError, InputError
from roformer_core.heads import HEAD_TABLE
from roformer_core.io import atomic_path, remove_stale_temporaries

logger = logging.getLogger(__name__)

#: ``step-00000012.pt``: one complete checkpoint (temporaries carry another name until renamed)
_NAME = re.compile(r"^step-(\d+)\.pt$")


# -- several processes ----------------------------------------------------------------------------
def init_distributed(backend: str = "gloo", *, timeout_s: float = 60, rank: int | None = None,
                     world_size: int | None = None, master_addr: str | None = None,
                     master_port: int | None = None) -> tuple[int, int]:
    """Join a run over several processes; returns ``(rank, world_size)``.

    Without arguments the ``torchrun`` environment is used (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``); ``gloo`` runs on CPU, ``nccl`` on GPUs. Every collective
    (and joining) gives up after ``timeout_s``: a process that dies makes the others stop
    with an error rather than wait forever. With a world of one, nothing is started.

    Example:
        >>> init_distributed(world_size=1)
        (0, 1)
    """
    env = os.environ
    rank = int(env.get("RANK", 0)) if rank is None else rank
    world_size = int(env.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
    if world_size == 1 or (dist.is_available() and dist.is_initialized()):
        return (dist.get_rank(), dist.get_world_size()) if world_size > 1 else (0, 1)
    if master_addr is not None:
        env["MASTER_ADDR"] = master_addr
    if master_port is not None:
        env["MASTER_PORT"] = str(master_port)
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in env:
        raise InputError("set MASTER_PORT (or pass master_port): the port process 0 listens on")
    try:
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"process {rank} of {world_size} could not join the run at {env['MASTER_ADDR']}:"
                           f"{env['MASTER_PORT']} within {timeout_s:g}s ({_first_line(e)}): start all "
                           f"{world_size} processes with the same MASTER_ADDR and MASTER_PORT") from None
    return rank, world_size


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a distributed run.

    Example:
        >>> world()
        (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every process (nothing to wait for with one); gives up after the run's timeout.

    Example:
        >>> barrier()
    """
    if world()[1] > 1:
        with _peers("a barrier"):
            dist.barrier()


@contextlib.contextmanager
def _peers(what: str):
    """A collective that fails because a process of the run is gone becomes one clear message."""
    try:
        yield
    except (RuntimeError, dist.DistError) as e:
        if isinstance(e, CheckpointError):
            raise
        rank, size = world()
        raise DistributedError(f"process {rank} of {size}: another process of this run stopped or stopped answering "
                           f"during {what} ({_first_line(e)}); start every process again (training resumes from "
                           "the last checkpoint)") from None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside ``DistributedDataParallel`` (the model itself otherwise).

    Example:
        >>> unwrap(torch.nn.Linear(2, 2)).__class__.__name__
        'Linear'
    """
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def distribute(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` when several processes run (unchanged otherwise).

    Every RoFormer parameter takes part in every forward pass and none is created lazily, so
    DDP runs without ``find_unused_parameters``.

    Example:
        >>> distribute(torch.nn.Linear(2, 2)).__class__.__name__
        'Linear'
    """
    if world()[1] == 1 or isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model
    with _peers("setting up DistributedDataParallel"):
        return torch.nn.parallel.DistributedDataParallel(model)


# -- one step ---------------------------------------------------------------------------------------
def label_count(head: str, batch: dict) -> torch.Tensor:
    """How many terms the head's loss averages over in ``batch`` (labelled tokens, rows, choices):
    the weight of this process's loss in the loss of the global batch.

    Example:
        >>> label_count("masked_lm", {"labels": torch.tensor([[5, -100, 7]])})
        tensor(2.)
    """
    kind = HEAD_TABLE[head].loss
    labels = batch.get(HEAD_TABLE[head].label_keys[0]) if HEAD_TABLE[head].label_keys else None
    if labels is None:
        raise InputError(f"a {head!r} training batch needs {', '.join(HEAD_TABLE[head].label_keys) or 'labels'}")
    labels = torch.as_tensor(labels)
    if kind == "shifted_token_cross_entropy":
        labels = labels[..., 1:]
    if kind in ("token_cross_entropy", "shifted_token_cross_entropy", "choice_cross_entropy") or (
            kind == "sequence_classification" and not labels.is_floating_point()):
        return (labels != -100).sum().float()
    return torch.tensor(float(labels.shape[0]))


def train_step(model: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer, *, scheduler=None,
               max_grad_norm: float | None = None) -> float:
    """One optimizer step on this process's ``batch`` (tensors or arrays; labels included);
    returns the loss of the global batch (the same on every process).

    With several processes each one's loss is scaled by its share of the global label count,
    so the gradients DDP averages are exactly those of the global batch's loss.

    Example:
        >>> from roformer_torch import RoFormerConfig, RoFormerForSequenceClassification
        >>> cfg = RoFormerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=32, num_labels=2)
        >>> model = RoFormerForSequenceClassification(cfg)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> loss = train_step(model, {"input_ids": torch.ones(2, 4, dtype=torch.long),
        ...                           "labels": torch.tensor([0, 1])}, optimizer)
        >>> loss > 0
        True
    """
    head = unwrap(model).head
    batch = {k: v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)) for k, v in batch.items()}
    model.train()
    optimizer.zero_grad(set_to_none=True)
    _, size = world()
    with _peers("a training step"):
        loss = model(**batch).loss
        if size > 1:
            count = label_count(head, batch)
            total = count.clone()
            dist.all_reduce(total)
            # DDP averages gradients over processes: weigh each loss by its share of the terms
            scaled = loss * (count * size / total.clamp(min=1))
        else:
            scaled = loss
        scaled.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        value = scaled.detach() / size
        if size > 1:
            dist.all_reduce(value)
    return float(value)


# -- checkpoints ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Restored:
    """What :meth:`TrainingCheckpoints.restore` found: the step and the data position saved with it."""

    step: int
    data: Any
    path: str


class TrainingCheckpoints:
    """Resumable checkpoints: ``every`` steps, the last ``keep`` kept, in ``directory``.

    Each is one ``step-<n>.pt`` file of ``state_dict``s (model, optimizer, scheduler), the step,
    ``data`` (the position in the data, plain Python values) and the random states of every
    process. Process 0 writes it to a temporary name, flushes it to disk and renames it; a kill
    at any moment leaves the previous checkpoints as they were and no file under a final name
    that is incomplete. ``directory`` must be one folder every process sees (or a copy of it).
    Example: see the module docstring.
    """

    def __init__(self, directory: str | os.PathLike, *, every: int = 100, keep: int = 3):
        if every < 1 or keep < 1:
            raise InputError(f"every and keep must be at least 1, got every={every}, keep={keep}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.every, self.keep = every, keep
        #: what the last :meth:`restore` loaded (None: nothing yet, or no checkpoint there)
        self.last_restored: Restored | None = None

    def path(self, step: int) -> str:
        """The file of the checkpoint of ``step``.

        Example:
            >>> os.path.basename(TrainingCheckpoints("/tmp/x").path(12))
            'step-00000012.pt'
        """
        return os.path.join(self.directory, f"step-{step:08d}.pt")

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints on disk, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in map(_NAME.match, names) if m)

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler=None, *,
             data: Any = None, force: bool = False) -> bool:
        """Checkpoint after ``step`` optimizer steps when ``step`` is a multiple of ``every`` (or
        ``force``); every process calls it. Returns whether it did.

        A failed write (out of disk space above all) raises one :class:`CheckpointError` on every
        process, naming the step and the checkpoint that is still intact.
        """
        if not force and step % self.every:
            return False
        rank, size = world()
        states = _rng_states()
        if size > 1:
            gathered: list = [None] * size
            with _peers("saving a checkpoint"):
                dist.all_gather_object(gathered, states)
        else:
            gathered = [states]
        failure = None
        if rank == 0:
            payload = {"step": step, "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": None if scheduler is None else scheduler.state_dict(), "data": data,
                       "rng": gathered, "world_size": size}
            failure = self._write(step, payload)
        if size > 1:
            message = [failure]
            with _peers("saving a checkpoint"):
                dist.broadcast_object_list(message, src=0)  # the others wait here until the file is in place
            failure = message[0]
        if failure is not None:
            raise CheckpointError(failure)
        return True

    def _write(self, step: int, payload: dict) -> str | None:
        path = self.path(step)
        try:
            os.makedirs(self.directory, exist_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    torch.save(payload, fh)
                    fh.flush()
                    os.fsync(fh.fileno())  # the rename may not reach the disk before the data does otherwise
        except (OSError, RuntimeError) as e:
            intact = [s for s in self.steps() if s != step]
            previous = f"the checkpoint of step {max(intact)} is intact" if intact else \
                "there is no earlier checkpoint"
            cause = "no space left on the device" if _no_space(e, self.directory) else _first_line(e)
            return (f"writing the training checkpoint of step {step} into {self.directory} failed ({cause}); "
                    f"it was not kept, and {previous}")
        for old in self.steps()[:-self.keep]:
            with contextlib.suppress(OSError):
                os.remove(self.path(old))
        return None

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, scheduler=None,
                step: int | None = None) -> Restored | None:
        """Load the newest complete checkpoint (or the one of ``step``) into ``model``, ``optimizer``,
        ``scheduler`` and the random states of this process; None when there is none yet.

        A newest file that cannot be read (a damaged disk) is reported and the one before it used.
        """
        if world()[0] == 0:  # what a killed writer left: never a checkpoint, only space taken
            remove_stale_temporaries(self.directory)
        steps = self.steps() if step is None else [step]
        rank, size = world()
        for number in reversed(steps):
            path = self.path(number)
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise CheckpointError(f"no training checkpoint of step {number} in {self.directory}; there are: "
                                      f"{self.steps() or 'none'}") from None
            except Exception as e:  # noqa: BLE001  a damaged file: say so, take the one before
                logger.warning("training checkpoint %s cannot be read (%s); trying the one before", path,
                               _first_line(e))
                continue
            try:
                unwrap(model).load_state_dict(payload["model"])
                if optimizer is not None:
                    optimizer.load_state_dict(payload["optimizer"])
                if scheduler is not None and payload["scheduler"] is not None:
                    scheduler.load_state_dict(payload["scheduler"])
            except (RuntimeError, ValueError, KeyError) as e:
                raise CheckpointError(f"the training checkpoint {path} does not fit this model and optimizer: "
                                      f"{_first_line(e)}") from None
            if payload.get("world_size") == size:
                _set_rng_states(payload["rng"][rank])
            else:  # another number of processes: the random streams cannot continue as they were
                logger.warning("training checkpoint %s was written by %s process(es), this run has %s: random "
                               "states start afresh", path, payload.get("world_size"), size)
            self.last_restored = Restored(int(payload["step"]), payload.get("data"), path)
            return self.last_restored
        if steps and step is None:
            raise CheckpointError(f"none of the training checkpoints in {self.directory} can be read")
        return None


def _rng_states() -> dict:
    state = {"torch": torch.get_rng_state(), "python": _plain(random.getstate()),
             "numpy": _plain(np.random.get_state())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain(value):
    """numpy arrays as lists: what ``torch.load(weights_only=True)`` reads back."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _no_space(error: BaseException, directory: str) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error).lower()
    if "no space left" in text:
        return True
    # torch's writer reports only "file write failed": ask the file system
    try:
        stat = os.statvfs(directory)
        return "write failed" in text and stat.f_bavail * stat.f_frsize < 1 << 20
    except OSError:
        return False


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


# -- the loop ---------------------------------------------------------------------------------------
def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch_at: Callable[[int], dict],
          num_steps: int, *, scheduler=None, checkpoints: TrainingCheckpoints | None = None,
          max_grad_norm: float | None = None, on_step: Callable[[int, float], None] | None = None
          ) -> torch.nn.Module:
    """Train to ``num_steps`` optimizer steps, resuming from ``checkpoints`` when they hold one.

    ``batch_at(step)`` gives this process's batch of step ``step`` (0-based); ``on_step(step,
    loss)`` is called after each (``step`` counts completed steps). With several processes
    (:func:`init_distributed` first) the model runs in DDP. Returns the trained model (not the
    DDP wrapper). Example: see the module docstring.
    """
    first = 0
    if checkpoints is not None:
        restored = checkpoints.restore(model, optimizer, scheduler)
        if restored is not None:
            first = restored.step
    wrapped = distribute(model)
    for step in range(first, num_steps):
        loss = train_step(wrapped, batch_at(step), optimizer, scheduler=scheduler, max_grad_norm=max_grad_norm)
        if on_step is not None:
            on_step(step + 1, loss)
        if checkpoints is not None:
            checkpoints.save(step + 1, wrapped, optimizer, scheduler, data={"next_batch": step + 1},
                             force=step + 1 == num_steps)
    return unwrap(wrapped)


__all__ = ["init_distributed", "world", "barrier", "unwrap", "distribute", "label_count", "train_step",
           "TrainingCheckpoints", "Restored", "train"]
