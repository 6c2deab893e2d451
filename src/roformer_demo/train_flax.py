"""Training in Flax: the project's ``pmap`` data-parallel step over every local device.

Each global batch is split over the devices (on a CPU-only machine the main job asks XLA for
8 virtual CPU devices, see ``roformer_demo.__main__``); gradients are summed with
``lax.psum`` inside :func:`roformer_flax.training.make_train_step`. Batches are padded to a
power of two (16, 32, 64, ...) so the step compiles once per length, not once per batch.

Example:
    >>> model, history = train(task, Recipe(max_steps=5), init="runs/demo/classifier")  # doctest: +SKIP
    >>> history.losses  # doctest: +SKIP
    [0.31, 0.28, 0.35, 0.27, 0.30]
"""

from __future__ import annotations

import math
import time

import jax
import numpy as np

import roformer_flax
from roformer_core.errors import InputError
from roformer_demo import text
from roformer_demo.text import progress_bar
from roformer_demo.training import Accuracy, History, Recipe, Task
from roformer_flax import training as flax_training


def load_or_create(task: Task, init: str | None):
    """The model for ``task.head``, from the checkpoint ``init`` or freshly initialised.

    Example:
        >>> load_or_create(task, "runs/demo/mlm").head  # doctest: +SKIP
        'sequence_classification'
    """
    cls = roformer_flax.MODEL_CLASSES[task.head]
    if init is None:
        return cls.from_config(task.config, seed=0)
    overrides = {}
    if task.head == "sequence_classification":
        overrides = {"num_labels": task.config.num_labels, "id2label": task.config.id2label,
                     "label2id": task.config.label2id}
    # the classifier starts from the masked LM on purpose: no warning about the heads
    return cls.from_pretrained(init, report=False, **overrides)


def logits_function(model):
    """``fn(params, input_ids, attention_mask) -> logits``, jitted: compiled once per input shape.

    Example:
        >>> logits_function(model)(model.params, ids, mask).shape  # doctest: +SKIP
        (32, 2)
    """
    return jax.jit(lambda params, ids, mask: model(ids, attention_mask=mask, params=params).logits)


def evaluate(model, params, task: Task, batch_size: int, length: int, logits_fn=None) -> dict[str, float]:
    """Validation accuracy with fixed-shape batches (a single compilation).

    Example:
        >>> evaluate(model, model.params, task, 32, 128)  # doctest: +SKIP
        {'val_accuracy': 0.84}
    """
    logits_fn = logits_fn or logits_function(model)
    accuracy = Accuracy()
    for batch in _val_fixed(task, batch_size, length):
        labels = batch.pop("labels")
        batch.pop("prediction_mask", None)
        accuracy.add(logits_fn(params, batch["input_ids"], batch["attention_mask"]), labels)
    return {"val_accuracy": accuracy.value}


def _val_fixed(task: Task, batch_size: int, length: int):
    for batch in task.val_batches(batch_size, length=length):
        n = len(batch["labels"])
        if n < batch_size:  # fill up with copies of the first row, labelled "ignore"
            for key, value in batch.items():
                filler = np.repeat(value[:1], batch_size - n, axis=0)
                if key == "labels":
                    filler = np.full_like(filler, -100)
                elif key == "prediction_mask":
                    filler = np.zeros_like(filler)
                batch[key] = np.concatenate([value, filler])
        yield batch


def global_batch_size(batch_size: int) -> int:
    """``batch_size`` rounded up to a multiple of the local device count (pmap splits it evenly).

    Example:
        >>> global_batch_size(30)  # with 8 devices  # doctest: +SKIP
        32
    """
    n = jax.local_device_count()
    return -(-batch_size // n) * n


def train(task: Task, recipe: Recipe, init: str | None = None, out: str | None = None, verbose=None,
          length: int | None = None):
    """Fit ``task`` with the pmap step; save the checkpoint and tokenizer to ``out``.

    ``length`` fixes the padded length of every training batch (one compilation); by default
    batches are padded to a power of two. Returns ``(model, History)``; the model holds the
    trained params. The history has every step's loss. Example: see the module docstring.
    """
    batch_size = global_batch_size(recipe.batch_size)
    if len(task.train_rows) < batch_size:
        raise InputError(f"{len(task.train_rows)} training rows do not fill one batch of {batch_size} "
                         f"({jax.local_device_count()} devices): use more data or a smaller --batch-size")
    model = load_or_create(task, init)
    per_epoch = task.steps_per_epoch(batch_size, drop_remainder=True)
    total = recipe.total_steps(per_epoch)
    steps_per_epoch = min(per_epoch, total)
    epochs = math.ceil(total / steps_per_epoch)
    optimizer = flax_training.make_optimizer(
        recipe.learning_rate, num_train_steps=total, warmup_steps=recipe.warmup_steps(total),
        weight_decay=recipe.weight_decay, max_grad_norm=recipe.max_grad_norm, decay="cosine")
    step = flax_training.make_train_step(model, "pmap")
    state = step.place_state(flax_training.create_train_state(model, optimizer))
    dropout_key = jax.random.PRNGKey(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    eval_length = max((len(r) for r in task.val_rows), default=16)
    eval_length = text.power_of_two_length(eval_length)
    logits_fn = logits_function(model)
    history = History("flax", task.head)
    start = time.perf_counter()
    batches = iter(())
    for epoch in range(epochs):
        bar = progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{epochs}", "step", verbose)
        began, losses = time.perf_counter(), []
        for _ in range(min(steps_per_epoch, total - history.steps)):
            batch = next(batches, None)
            if batch is None:
                batches = task.train_batches(batch_size, rng, drop_remainder=True,
                                             length=length or text.power_of_two_length)
                batch = next(batches)
            batch.pop("prediction_mask", None)  # positions vary per batch: pmap needs full-vocabulary logits
            state, metrics = step(state, step.shard(batch), dropout_key)
            loss = float(np.asarray(metrics["loss"])[0])  # the same on every device (psum'd)
            losses.append(loss)
            history.losses.append(loss)
            history.steps += 1
            if bar is not None:
                bar.set_postfix(loss=f"{np.mean(losses):.4f}")
                bar.update(1)
        if bar is not None:
            bar.close()
        params = step.host_params(state)
        row = {"loss": float(np.mean(losses)), **evaluate(model, params, task, batch_size, eval_length, logits_fn)}
        history.epochs.append(row)
        print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - began:.0f}s - {step.num_devices} devices - "
              + " - ".join(f"{k}: {v:.4f}" for k, v in row.items()), flush=True)
    history.seconds = time.perf_counter() - start
    model.params = step.host_params(state)
    if out is not None:
        model.save_pretrained(out)
        task.tokenizer.save_pretrained(out)
    return model, history
