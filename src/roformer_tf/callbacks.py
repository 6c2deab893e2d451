"""Keras' own checkpoint callbacks, made safe to kill and exact to resume.

:class:`BackupAndRestore` is ``keras.callbacks.BackupAndRestore`` (same arguments, same use:
pass it to ``fit`` and run the same ``fit`` again after an interruption), with what Keras 3.15's
lacks for a run that is killed at any moment:

* each backup is a complete folder ``step-<n>`` (the ``.weights.h5`` file with the model and
  the optimizer — whose step counter is the learning-rate schedule's position — and
  ``training_metadata.json``), written under a temporary name and renamed when complete; a kill
  while one is written leaves the ones before as they were, and the last ``keep`` are kept;
* the dropout layers' random states, which ``.weights.h5`` files leave out, are kept too;
* a backup taken in the middle of an epoch (``save_freq=N`` batches) resumes in the middle of it:
  the batches of that epoch trained before the interruption are read from the data and
  skipped. This gives the uninterrupted run's weights when the epoch yields the same batches
  in a new process (a dataset that is not reshuffled between epochs, or one built per epoch
  as the demo does); with ``save_freq="epoch"`` a run resumes at the start of the epoch;
* the logs of the finished epochs are kept too (``epoch_logs``), so a resumed run's history
  has every epoch (the epoch it resumed in averages its training metrics over the batches
  after the restart);
* with several workers (``MultiWorkerMirroredStrategy``) only the chief writes.

:class:`ModelCheckpoint` is ``keras.callbacks.ModelCheckpoint`` whose files are written under a
temporary name and renamed, and only by the chief worker; :func:`save_pretrained` writes the
canonical folder from the chief while the other workers wait.

Example:
    >>> import os, tempfile, numpy as np, keras
    >>> from roformer_tf import RoFormerConfig, RoFormerForSequenceClassification
    >>> cfg = RoFormerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
    ...                      num_attention_heads=2, intermediate_size=32, num_labels=2)
    >>> model = RoFormerForSequenceClassification(cfg)
    >>> model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    >>> x, y = {"input_ids": np.ones((8, 6), "int32")}, np.array([0, 1] * 4)
    >>> backup = BackupAndRestore(os.path.join(tempfile.mkdtemp(), "backup"), save_freq=2, delete_checkpoint=False)
    >>> _ = model.fit(x, y, batch_size=2, epochs=2, callbacks=[backup], verbose=0, shuffle=False)
    >>> backup.steps()
    [6, 8]
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile

import keras
import numpy as np

from roformer_core.errors import CheckpointError
from roformer_core.io import atomic_dir, remove_stale_temporaries

WEIGHTS = "model.weights.h5"
METADATA = "training_metadata.json"
_NAME = re.compile(r"^step-(\d+)$")


def _is_chief(model) -> bool:
    strategy = getattr(model, "distribute_strategy", None)
    return bool(getattr(getattr(strategy, "extended", None), "should_checkpoint", True))


def _seed_states(model) -> list:
    """The dropout layers' random states (Keras ``SeedGenerator`` variables), in the model's order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` with complete-or-absent backups and mid-epoch resumption.

    ``save_freq`` is ``"epoch"`` or a number of batches, as in Keras; ``keep`` backups are kept;
    ``delete_checkpoint`` (Keras' name) removes them when ``fit`` ends normally. A backup that
    cannot be written (out of disk space) stops ``fit`` with one :class:`CheckpointError` naming
    the backup that is intact. Example: see the module docstring.
    """

    def __init__(self, backup_dir, save_freq="epoch", keep: int = 2, delete_checkpoint: bool = True):
        if keep < 1:
            raise CheckpointError(f"keep must be at least 1, got {keep}")
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=False,
                         delete_checkpoint=delete_checkpoint)
        self.backup_dir = os.path.abspath(os.fspath(backup_dir))
        self.keep = keep
        self._epoch = 0
        self._batches_done = 0
        self._skipping = 0
        self._restored_once = False
        self._resume_at = None
        #: the step of the backup this run resumed from (None: it started afresh)
        self.restored_step: int | None = None
        #: the logs of every finished epoch, those before the restored backup included
        self.epoch_logs: list[dict] = []

    # -- the backups on disk -----------------------------------------------------------------
    def steps(self) -> list[int]:
        """Optimizer steps of the complete backups, oldest first."""
        try:
            names = os.listdir(self.backup_dir)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in map(_NAME.match, names) if m)

    def _folder(self, step: int) -> str:
        return os.path.join(self.backup_dir, f"step-{step:08d}")

    # -- restoring ---------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise CheckpointError("BackupAndRestore needs a built model: call it on a batch before fit()")
        if self._restored_once:  # fit called again in the same run: carry on, nothing to restore
            return
        self._restored_once = True
        if _is_chief(self.model):
            remove_stale_temporaries(self.backup_dir)
        for step in reversed(self.steps()):
            try:
                self._restore(self._folder(step))
            except (OSError, ValueError, KeyError) as e:  # a damaged disk: say so, use the one before
                print(f"BackupAndRestore: the backup {self._folder(step)} cannot be read ({e}); "
                      "trying the one before", flush=True)
                continue
            self.restored_step = step
            return

    def _restore(self, folder: str) -> None:
        with open(os.path.join(folder, METADATA), encoding="utf-8") as fh:
            meta = json.load(fh)
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(folder, WEIGHTS))
        seeds = _seed_states(self.model)
        if len(seeds) != len(meta.get("seeds", [])):
            raise ValueError(f"{len(meta.get('seeds', []))} random states saved, the model has {len(seeds)}")
        for variable, value in zip(seeds, meta["seeds"]):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        self.model._initial_epoch = meta["epoch"]
        self._epoch, self._batches_done = meta["epoch"], meta["batches_done"]
        self.epoch_logs = list(meta.get("epoch_logs", []))
        self._resume_at = (meta["epoch"], meta["batches_done"])

    def on_epoch_begin(self, epoch, logs=None):
        resume = self._resume_at
        self.model._initial_epoch = None  # fit has read it; a later fit call starts where it is told
        self._epoch, self._batches_done = epoch, 0
        if resume is not None and resume[0] == epoch and resume[1] > 0:
            self._skip_batches(resume[1])
        self._resume_at = None

    def _skip_batches(self, batches: int) -> None:
        """Read (and drop) the first ``batches`` batches of this epoch: they were trained on before."""
        model = self.model
        per_call = getattr(model, "steps_per_execution", 1) or 1
        original = model.train_function
        self._skipping = batches // per_call

        def skipping(iterator):
            if self._skipping <= 0:
                return original(iterator)
            for _ in range(per_call):
                batch = next(iterator)
            metrics = getattr(model, "_compile_metrics", None)
            if metrics is not None and not metrics.built:
                # Keras builds compiled metrics in the first step it runs; an epoch whose batches are
                # all skipped runs none, and its end reads them
                model._symbolic_build(data_batch=batch)
            self._skipping -= 1
            if self._skipping == 0:
                model.train_function = original
            return {}

        model.train_function = skipping

    # -- saving ------------------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        self.epoch_logs.append({k: float(np.asarray(v)) for k, v in (logs or {}).items() if np.size(v) == 1})
        self._epoch, self._batches_done = epoch + 1, 0
        self._last_batch_seen = 0
        if self.save_freq == "epoch":
            self._save_model()

    def on_train_batch_end(self, batch, logs=None):
        self._batches_done = batch + 1
        if self._should_save_on_batch(batch) and self._skipping <= 0:
            self._save_model()

    def _save_model(self):
        if not _is_chief(self.model):
            return
        step = int(np.asarray(self.model.optimizer.iterations))
        if step in self.steps():
            return
        meta = {"epoch": self._epoch, "batches_done": self._batches_done, "step": step,
                "seeds": [np.asarray(v).tolist() for v in _seed_states(self.model)], "epoch_logs": self.epoch_logs}
        os.makedirs(self.backup_dir, exist_ok=True)
        need, free = _backup_size(self.model), shutil.disk_usage(self.backup_dir).free
        if free < need:
            # checked first: HDF5 that runs out of space mid-file can crash the interpreter later
            self._failed(step, f"no space left on the device: about {need:,} bytes needed, {free:,} free")
        try:
            with atomic_dir(self._folder(step)) as tmp:
                self.model.save_weights(os.path.join(tmp, WEIGHTS))
                with open(os.path.join(tmp, METADATA), "w", encoding="utf-8") as fh:
                    json.dump(meta, fh)
        except (OSError, RuntimeError, ValueError) as e:
            self._failed(step, _describe(e, self.backup_dir))
        for old in self.steps()[:-self.keep]:
            shutil.rmtree(self._folder(old), ignore_errors=True)

    def _failed(self, step: int, cause: str):
        intact = [s for s in self.steps() if s != step]
        previous = f"the backup of step {max(intact)} is intact" if intact else "there is no earlier backup"
        raise CheckpointError(f"writing the backup of step {step} into {self.backup_dir} failed ({cause}); it "
                              f"was not kept, and {previous}") from None


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``keras.callbacks.ModelCheckpoint`` whose files appear complete or not at all (written under a
    temporary name, then renamed), written only by the chief worker.

    Example:
        >>> import os, tempfile, numpy as np, keras
        >>> from roformer_tf import RoFormerConfig, RoFormerForSequenceClassification
        >>> cfg = RoFormerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=32, num_labels=2)
        >>> model = RoFormerForSequenceClassification(cfg)
        >>> model.compile(optimizer=keras.optimizers.AdamW(1e-3))
        >>> folder = tempfile.mkdtemp()
        >>> saver = ModelCheckpoint(os.path.join(folder, "e{epoch}.weights.h5"), save_weights_only=True)
        >>> _ = model.fit({"input_ids": np.ones((4, 6), "int32")}, np.array([0, 1, 0, 1]), epochs=2,
        ...               callbacks=[saver], verbose=0)
        >>> sorted(os.listdir(folder))
        ['e1.weights.h5', 'e2.weights.h5']
    """

    def on_train_begin(self, logs=None):
        if _is_chief(self.model):
            folder = os.path.dirname(os.path.abspath(self.filepath)) or "."
            with contextlib.suppress(OSError):
                for name in os.listdir(folder):
                    if name.startswith(_STAGING):  # left by a writer that was killed
                        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        super().on_train_begin(logs)

    def _save_model(self, epoch, batch, logs):
        """Keras' own, writing through a temporary file (Keras picks the format from the file name,
        so the temporary file keeps the name, in a folder of its own beside the target)."""
        filepath = self._get_file_path(epoch, batch, logs)
        if not _is_chief(self.model) or not self._should_save_model(epoch, batch, logs, filepath):
            return
        folder = os.path.dirname(os.path.abspath(filepath))
        os.makedirs(folder, exist_ok=True)
        stage = tempfile.mkdtemp(prefix=_STAGING, dir=folder)
        staged = os.path.join(stage, os.path.basename(filepath))
        try:
            if self.save_weights_only:
                self.model.save_weights(staged, overwrite=True)
            else:
                self.model.save(staged, overwrite=True)
            os.replace(staged, filepath)
        except (OSError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"writing {filepath} failed ({_describe(e, folder)}); the file there before "
                                  "is as it was") from None
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: finished saving model to {filepath}", flush=True)


_STAGING = ".roformer-staging-"


def _backup_size(model) -> int:
    """Bytes a backup takes, from above: every variable of the model and the optimizer, and room for
    the file's own structure."""
    variables = list(model.variables) + list(getattr(model.optimizer, "variables", []))
    data = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
    return int(data * 1.05) + 1024 * len(variables) + (64 << 10)


def save_pretrained(model, path, **kwargs) -> str:
    """``model.save_pretrained(path)`` in a run of one worker or several: the chief writes the
    canonical folder, every worker returns once it is complete (they meet in a collective).

    Example:
        >>> import os, tempfile
        >>> from roformer_tf import RoFormerConfig, RoFormerModel
        >>> model = RoFormerModel(RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                                      num_attention_heads=2, intermediate_size=16))
        >>> path = save_pretrained(model, os.path.join(tempfile.mkdtemp(), "out"))
        >>> sorted(os.listdir(path))
        ['config.json', 'model.safetensors']
    """
    import tensorflow as tf

    path = os.fspath(path)
    if _is_chief(model):
        model.save_pretrained(path, **kwargs)
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        # an all-reduce as a barrier: no worker returns before the chief has written the folder
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.ones([])), axis=None)
    return path


def _describe(error: BaseException, folder: str) -> str:
    text = str(error)
    if "No space left" in text or getattr(error, "errno", None) == 28:
        return "no space left on the device"
    try:
        stat = os.statvfs(folder)
        if stat.f_bavail * stat.f_frsize < 1 << 20:
            return f"no space left on the device: {text.splitlines()[0][:200] if text else type(error).__name__}"
    except OSError:
        pass
    return (text.strip().splitlines() or [type(error).__name__])[0][:300]


__all__ = ["BackupAndRestore", "ModelCheckpoint", "save_pretrained"]
