"""Training checkpoints for Flax: the whole state of a run, kept with Orbax's ``CheckpointManager``.

A training checkpoint is what a killed run needs to carry on exactly where it was, not a
model to ship (that is the canonical folder, ``step.save_pretrained``):

* the ``TrainState``: params, optimizer state (Adam moments, the gradient-accumulation buffer),
  and the step counter, which is also the learning-rate schedule's position;
* the dropout key (the base key: each step folds in the step number, see
  ``roformer_flax.training.dropout_key``);
* ``data``: any JSON-able description of the position in the data (the next batch, an epoch
  and offset, a ``numpy`` generator's ``bit_generator.state``).

Orbax writes each checkpoint into a temporary folder and renames it to its step number only
when every file is written, so a checkpoint being written when the process is killed is never
the one resumed from; :meth:`TrainingCheckpoints.restore` takes the newest complete one. It
keeps the last ``keep`` checkpoints and removes older ones only after a new one is complete;
with ``async_save`` (the default) the files are written in the background while training goes
on. Every process of a multi-process run calls ``save`` and ``restore``; the arrays are written
once.

Example:
    >>> import os, tempfile, jax, numpy as np
    >>> from roformer_flax import RoFormerConfig, RoFormerForMaskedLM
    >>> from roformer_flax.training import create_train_state, make_optimizer, make_train_step
    >>> cfg = RoFormerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
    ...                      num_attention_heads=2, intermediate_size=32)
    >>> model = RoFormerForMaskedLM.from_config(cfg)
    >>> step = make_train_step(model, "jit")
    >>> fresh = step.place_state(create_train_state(model, make_optimizer(1e-3, num_train_steps=4)))
    >>> ids = np.random.default_rng(0).integers(1, 50, (4, 8))
    >>> batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": ids}
    >>> folder = os.path.join(tempfile.mkdtemp(), "checkpoints")
    >>> with TrainingCheckpoints(folder, step, every=2) as checkpoints:
    ...     state = fresh
    ...     for i in range(4):
    ...         state, _ = step(state, step.shard(batch), jax.random.PRNGKey(0))
    ...         _ = checkpoints.save(state, data={"next_batch": i + 1})
    >>> with TrainingCheckpoints(folder, step) as checkpoints:   # a new run: carry on from the last one
    ...     resumed = checkpoints.restore(fresh)
    >>> resumed.step, resumed.data, int(step.host_state(resumed.state).step)
    (4, {'next_batch': 4}, 4)
"""

from __future__ import annotations

import dataclasses
import errno
import os
from typing import Any

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

from roformer_core.errors import CheckpointError, InputError
from roformer_flax.training import DataParallelStep

#: the items of one checkpoint (one sub-folder each)
STATE, META = "state", "meta"


@dataclasses.dataclass
class Restored:
    """What :meth:`TrainingCheckpoints.restore` gives back: the placed state, the step it was saved
    at, the ``data`` position and the dropout key saved with it (``rng``, None when none was given)."""

    state: Any
    step: int
    data: Any
    rng: Any


class TrainingCheckpoints:
    """Periodic training checkpoints of a :class:`~roformer_flax.training.DataParallelStep` run.

    ``every`` steps (``save`` is a no-op in between, so call it every step), the last ``keep``
    are kept. ``timeout_s`` bounds every wait on the other processes of a multi-process run.
    Use it as a context manager, or call :meth:`close` at the end: it waits for a background
    write to finish. Example: see the module docstring.
    """

    def __init__(self, directory: str | os.PathLike, step: DataParallelStep, *, every: int = 100, keep: int = 3,
                 async_save: bool = True, timeout_s: int = 600):
        if every < 1 or keep < 1:
            raise InputError(f"every and keep must be at least 1, got every={every}, keep={keep}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.step = step
        self.every = every
        self._pending: int | None = None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
            # what a killed writer left behind is never a checkpoint: clear it away
            cleanup_tmp_directories=True,
            async_options=ocp.AsyncOptions(timeout_secs=timeout_s),
            # every process saves on the same steps; our own `every` decides which
            save_interval_steps=1)
        try:
            self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE, META))
        except OSError as e:
            raise CheckpointError(f"cannot use {self.directory} for training checkpoints: {e.strerror or e}") from None

    # -- the newest complete checkpoint ---------------------------------------------------------
    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, None when there is none."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """The steps of the complete checkpoints on disk, oldest first."""
        return sorted(self.manager.all_steps())

    # -- writing ---------------------------------------------------------------------------------
    def save(self, state, *, data: Any = None, rng=None, force: bool = False) -> bool:
        """Checkpoint ``state`` when its step is a multiple of ``every`` (or ``force``); returns
        whether it did. ``data`` (JSON-able) and ``rng`` (the dropout base key) are kept with it.

        Running out of disk space (or any write error) raises one :class:`CheckpointError` that
        names the step; the checkpoints written before stay as they were.
        """
        number = int(np.asarray(self.step.host_state(state.step)))
        if not force and number % self.every:
            return False
        host = self.step.host_state(state)
        meta = {"step": number, "data": data, "rng": None if rng is None else _key_to_json(rng)}
        if self._pending is not None:  # a failure of the write in flight is reported as its own step's
            self.wait()
        with self._reporting(number):
            saved = self.manager.save(number, args=ocp.args.Composite(**{
                STATE: ocp.args.StandardSave(_tree(host)), META: ocp.args.JsonSave(meta)}), force=True)
        if saved:
            self._pending = number
        return bool(saved)

    def wait(self) -> None:
        """Block until a checkpoint written in the background is complete on disk."""
        with self._reporting(self._pending):
            self.manager.wait_until_finished()
        self._pending = None

    def close(self) -> None:
        """Finish the background write, then release the manager."""
        try:
            self.wait()
        finally:
            self.manager.close()

    def __enter__(self) -> "TrainingCheckpoints":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:  # the error in flight says more than a second one from the background write
            try:
                self.close()
            except Exception:  # noqa: BLE001
                pass

    # -- reading ---------------------------------------------------------------------------------
    def restore(self, state, step: int | None = None) -> Restored | None:
        """The newest complete checkpoint (or the one of ``step``) placed like ``state`` (a fresh
        state of the same model and optimizer, already placed by the step); None when there is
        none yet, so a run starts fresh. A checkpoint that does not fit ``state`` (another model
        or optimizer) is one :class:`CheckpointError`.
        """
        number = self.latest_step() if step is None else step
        if number is None:
            return None
        if number not in self.manager.all_steps():
            raise CheckpointError(f"no complete training checkpoint of step {number} in {self.directory}; "
                                  f"there are: {self.all_steps() or 'none'}")
        template = _host_template(self.step, state)
        try:
            restored = self.manager.restore(number, args=ocp.args.Composite(**{
                STATE: ocp.args.StandardRestore(_tree(template)), META: ocp.args.JsonRestore()}))
            host = flax.serialization.from_state_dict(template, _tree(restored[STATE]))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"the training checkpoint {os.path.join(self.directory, str(number))} does not fit "
                                  f"this model and optimizer: {_first_line(e)}") from None
        meta = restored[META] or {}
        rng = meta.get("rng")
        return Restored(self.step.place_state(host), number, meta.get("data"),
                        None if rng is None else np.asarray(rng, dtype=np.uint32))

    # -- errors ----------------------------------------------------------------------------------
    def _reporting(self, number):
        return _WriteErrors(self, number)


class _WriteErrors:
    """Turns a failed write (out of disk space above all) into one message naming what is intact."""

    def __init__(self, owner: TrainingCheckpoints, number: int | None):
        self.owner, self.number = owner, number

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or not isinstance(error, Exception) or isinstance(error, CheckpointError):
            return False
        if not _is_write_error(error):
            return False
        self.owner._pending = None
        try:
            self.owner.manager.reload()
            intact = self.owner.manager.all_steps()
        except Exception:  # noqa: BLE001
            intact = []
        which = f"step {self.number}" if self.number is not None else "a step"
        space = "no space left on the device" if _no_space(error) else _first_line(error)
        previous = f"the checkpoint of step {max(intact)} is intact" if intact else "there is no earlier checkpoint"
        raise CheckpointError(f"writing the training checkpoint of {which} into {self.owner.directory} failed "
                              f"({space}); it was not kept, and {previous}") from None


def _is_write_error(error: BaseException) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) or _no_space(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _no_space(error: BaseException) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error).lower()
        if "no space left" in text or "disk quota" in text or "enospc" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _host_template(step: DataParallelStep, state):
    """``state``'s structure with host arrays of its shapes and dtypes, read from the metadata only:
    the arrays themselves may have been donated to a step since."""
    def leaf(x):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            return x
        shape = tuple(x.shape[1:]) if step.mode == "pmap" else tuple(x.shape)
        return np.broadcast_to(np.zeros((), x.dtype), shape)  # a view: no memory for the model's size

    return jax.tree.map(leaf, state)


def _tree(state) -> dict:
    # plain nested dicts: what Orbax writes the same way whatever the optimizer's state classes are
    return flax.serialization.to_state_dict(state)


def _key_to_json(key) -> list[int]:
    key = jax.random.key_data(key) if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key) \
        else key
    return np.asarray(jax.device_get(key)).astype(np.uint32).ravel().tolist()


__all__ = ["TrainingCheckpoints", "Restored"]
