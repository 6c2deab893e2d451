"""Training in Keras 3: ``model.fit`` on a ``tf.data`` pipeline, validation each epoch.

The model is compiled without a loss, so it trains on its head's own loss (classification
cross-entropy, or the masked-LM loss over the labelled tokens); the batches come from
:class:`roformer_demo.training.Task`, so they are the ones the other backends see.

Example:
    >>> model, history = train(task, Recipe(epochs=2), init=None, out="runs/demo/classifier")  # doctest: +SKIP
    >>> history.last("val_accuracy")  # doctest: +SKIP
    0.87
"""

from __future__ import annotations

import math
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from roformer_demo.training import History, Recipe, Task

import roformer_tf


class MaskedAccuracy(keras.metrics.Metric):
    """Accuracy of the argmax over the last axis, skipping labels of -100 (unpredicted MLM tokens).

    Example:
        >>> m = MaskedAccuracy()
        >>> m.update_state(np.array([[1, -100]]), np.array([[[0.0, 1.0], [1.0, 0.0]]]))
        >>> float(m.result())
        1.0
    """

    def __init__(self, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.right = self.add_variable(shape=(), initializer="zeros", name="right")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int32)
        keep = tf.not_equal(y_true, -100)
        hit = tf.logical_and(tf.equal(tf.argmax(y_pred, axis=-1, output_type=tf.int32), y_true), keep)
        self.right.assign_add(tf.reduce_sum(tf.cast(hit, self.dtype)))
        self.total.assign_add(tf.reduce_sum(tf.cast(keep, self.dtype)))

    def result(self):
        return self.right / tf.maximum(self.total, 1.0)

    def reset_state(self):
        self.right.assign(0.0)
        self.total.assign(0.0)


def _features_and_labels(batch: dict[str, np.ndarray], head: str):
    """``(features, labels)`` as ``fit`` takes them. A masked-LM batch keeps its ``prediction_mask``:
    the model then projects only the predicted positions onto the vocabulary, and the labels are
    those positions' ids."""
    batch = dict(batch)
    labels = batch.pop("labels")
    if head == "masked_lm":
        labels = labels[batch["prediction_mask"]]
    return batch, labels


def _dataset(batches: list[dict[str, np.ndarray]], head: str) -> tf.data.Dataset:
    """A ``tf.data`` pipeline over ready-made numpy batches of varying shapes, entirely in TensorFlow.

    Every array is kept flat with its offsets and shape, and each batch is cut out by a graph
    ``map``: unlike ``from_generator`` no Python runs while training, which on a busy CPU
    halves the step time (no GIL hand-offs between the input thread and the training loop).
    """
    pairs = [_features_and_labels(b, head) for b in batches]

    def packed(arrays: list[np.ndarray]):
        sizes = np.array([a.size for a in arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        shapes = np.array([a.shape for a in arrays], dtype=np.int64)
        flat = np.concatenate([a.ravel() for a in arrays])
        return tf.constant(flat), tf.constant(offsets), tf.constant(shapes)

    feature_keys = list(pairs[0][0])
    columns = {k: packed([f[k] for f, _ in pairs]) for k in feature_keys}
    labels = packed([y for _, y in pairs])

    def cut(column, i):
        flat, offsets, shapes = column
        return tf.reshape(flat[offsets[i]:offsets[i + 1]], shapes[i])

    def batch(i):
        return {k: cut(columns[k], i) for k in feature_keys}, cut(labels, i)

    return tf.data.Dataset.range(len(pairs)).map(batch, num_parallel_calls=1).prefetch(2)


def make_optimizer(recipe: Recipe, total_steps: int) -> keras.optimizers.Optimizer:
    """AdamW, linear warmup then cosine decay, global-norm clipping; no decay on biases and LayerNorm.

    Example:
        >>> float(make_optimizer(Recipe(learning_rate=1e-3), 100).learning_rate)  # step 0 of the warmup
        0.0
    """
    warmup = recipe.warmup_steps(total_steps)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(1, total_steps - warmup), alpha=0.0,
                                                      warmup_target=recipe.learning_rate, warmup_steps=warmup)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=recipe.weight_decay, epsilon=1e-6,
                                       global_clipnorm=recipe.max_grad_norm)
    optimizer.exclude_from_weight_decay(var_names=["bias", "LayerNorm", "gamma", "beta"])
    return optimizer


def load_or_create(task: Task, init: str | None):
    """The model for ``task.head``: from the checkpoint ``init`` (another head's is fine: its encoder
    is used), or freshly initialised from ``task.config``.

    Example:
        >>> load_or_create(task, "runs/demo/mlm").head  # doctest: +SKIP
        'sequence_classification'
    """
    cls = roformer_tf.MODEL_CLASSES[task.head]
    if init is None:
        return cls(task.config)
    overrides = {}
    if task.head == "sequence_classification":
        overrides = {"num_labels": task.config.num_labels, "id2label": task.config.id2label,
                     "label2id": task.config.label2id}
    # the classifier starts from the masked LM on purpose: no warning about the heads
    return cls.from_pretrained(init, dtype="float32", report=False, **overrides)


def _batch_stream(task: Task, batch_size: int, rng: np.random.Generator):
    """Training batches without end: pass after pass over the data, reshuffled each time."""
    while True:
        yield from task.train_batches(batch_size, rng)


#: training steps between two backups of a run with a backup folder
BACKUP_EVERY = 50


def train(task: Task, recipe: Recipe, init: str | None = None, out: str | None = None, verbose=None,
          backup: str | None = None):
    """Fit ``task`` with ``recipe``; save the canonical checkpoint and the tokenizer to ``out``.

    Returns ``(model, History)``. ``verbose`` is Keras' (default: a live bar on a terminal,
    one line per epoch otherwise). With ``backup`` (a folder), ``roformer_tf.callbacks.BackupAndRestore``
    backs the run up every :data:`BACKUP_EVERY` steps and at each epoch's end, and a run started
    again carries on from the newest backup there, to the same weights (and the same history,
    but for the training loss of the epoch it resumed in). Example: see the module docstring.
    """
    keras.utils.set_random_seed(recipe.seed)
    model = load_or_create(task, init)
    per_epoch = task.steps_per_epoch(recipe.batch_size)
    total = recipe.total_steps(per_epoch)
    steps_per_epoch = min(per_epoch, total)
    epochs = math.ceil(total / steps_per_epoch)
    rng = np.random.default_rng(recipe.seed)
    stream = _batch_stream(task, recipe.batch_size, rng)
    val_ds = _dataset(list(task.val_batches(recipe.batch_size)), task.head)
    model.compile(optimizer=make_optimizer(recipe, total), metrics=[MaskedAccuracy()])
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    start = time.perf_counter()
    logs: dict[str, list] = {}
    callbacks = []
    if backup is not None:
        from roformer_tf.callbacks import BackupAndRestore

        every = max(1, min(BACKUP_EVERY, steps_per_epoch // 4))
        callbacks.append(BackupAndRestore(backup, save_freq=every, keep=2, delete_checkpoint=False))
    for epoch in range(epochs):
        # one fit call per epoch, on that epoch's batches; the optimizer's step count carries on
        steps = min(steps_per_epoch, total - epoch * steps_per_epoch)
        train_ds = _dataset([next(stream) for _ in range(steps)], task.head)
        if verbose and epoch == 0 and epochs > 1:  # Keras heads only the calls that span several epochs
            print(f"Epoch 1/{epochs}", flush=True)
        fit = model.fit(train_ds, validation_data=val_ds, initial_epoch=epoch, epochs=epoch + 1, verbose=verbose,
                        shuffle=False, callbacks=callbacks)  # the batches come shuffled from the task
        if callbacks and callbacks[0].restored_step is not None:
            print(f"resumed from the backup of step {callbacks[0].restored_step} in {backup}", flush=True)
            callbacks[0].restored_step = None
        for key, values in fit.history.items():  # empty for an epoch a resumed run had finished before
            logs.setdefault(key, []).extend(values)
    history = History("keras", task.head, steps=total, seconds=time.perf_counter() - start)
    if callbacks:  # every epoch's logs, those of the run before the restart too
        history.epochs = [dict(row) for row in callbacks[0].epoch_logs]
    else:
        history.epochs = [{key: float(values[epoch]) for key, values in logs.items()}
                          for epoch in range(len(logs.get("loss", [])))]
    if out is not None:
        model.save_pretrained(out)
        task.tokenizer.save_pretrained(out)
    return model, history
