"""Training in PyTorch: a plain loop with AdamW, the recipe's schedule, and validation each epoch.

Example:
    >>> model, history = train(task, Recipe(epochs=2), init=None, out="runs/demo/classifier")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch

import roformer_torch
from roformer_demo.text import progress_bar
from roformer_demo.training import Accuracy, History, Recipe, Task


def load_or_create(task: Task, init: str | None):
    """The model for ``task.head``, from the checkpoint ``init`` or freshly initialised.

    Example:
        >>> load_or_create(task, None).training  # doctest: +SKIP
        True
    """
    cls = roformer_torch.MODEL_CLASSES[task.head]
    if init is None:
        return cls(task.config)
    overrides = {}
    if task.head == "sequence_classification":
        overrides = {"num_labels": task.config.num_labels, "id2label": task.config.id2label,
                     "label2id": task.config.label2id}
    # the classifier starts from the masked LM on purpose: no warning about the heads
    return cls.from_pretrained(init, dtype=torch.float32, report=False, **overrides)


def _tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) if k == "prediction_mask" else torch.as_tensor(v, dtype=torch.long)
            for k, v in batch.items()}


def _targets(batch: dict[str, np.ndarray]) -> np.ndarray:
    """The labels the logits line up with: only the predicted positions when logits are only there."""
    mask = batch.get("prediction_mask")
    return batch["labels"] if mask is None else batch["labels"][mask]


def make_optimizer(model: torch.nn.Module, recipe: Recipe, total_steps: int):
    """AdamW (no decay on biases and LayerNorm) and the warmup + cosine schedule of :class:`Recipe`.

    Example:
        >>> optimizer, schedule = make_optimizer(torch.nn.Linear(2, 2), Recipe(), 10)
        >>> [g["weight_decay"] for g in optimizer.param_groups], schedule.get_last_lr()
        ([0.01, 0.0], [0.0, 0.0])
    """
    decay, plain = [], []
    for name, parameter in model.named_parameters():
        (plain if name.endswith("bias") or "LayerNorm" in name else decay).append(parameter)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": plain, "weight_decay": 0.0}], lr=recipe.learning_rate, eps=1e-6)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: recipe.learning_rate_at(step, total_steps) / recipe.learning_rate)
    return optimizer, schedule


def evaluate(model: torch.nn.Module, batches) -> dict[str, float]:
    """Mean loss (the mean of the batches' losses) and accuracy over ``batches``.

    Example:
        >>> evaluate(model, task.val_batches(32))  # doctest: +SKIP
        {'val_loss': 0.38, 'val_accuracy': 0.84}
    """
    model.eval()
    losses, accuracy = [], Accuracy()
    with torch.no_grad():
        for batch in batches:
            output = model(**_tensors(batch))
            losses.append(output.loss.item())
            accuracy.add(output.logits.numpy(), _targets(batch))
    return {"val_loss": float(np.mean(losses)), "val_accuracy": accuracy.value}


def train(task: Task, recipe: Recipe, init: str | None = None, out: str | None = None, verbose=None):
    """Fit ``task``; save the canonical checkpoint and the tokenizer to ``out``. Returns ``(model, History)``.

    Example: see the module docstring.
    """
    torch.manual_seed(recipe.seed)
    model = load_or_create(task, init)
    per_epoch = task.steps_per_epoch(recipe.batch_size)
    total = recipe.total_steps(per_epoch)
    steps_per_epoch = min(per_epoch, total)
    epochs = math.ceil(total / steps_per_epoch)
    optimizer, schedule = make_optimizer(model, recipe, total)
    rng = np.random.default_rng(recipe.seed)
    history = History("torch", task.head)
    start = time.perf_counter()
    batches = iter(())
    for epoch in range(epochs):
        model.train()
        bar = progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{epochs}", "step", verbose)
        began, losses, accuracy = time.perf_counter(), [], Accuracy()
        for _ in range(min(steps_per_epoch, total - history.steps)):
            batch = next(batches, None)
            if batch is None:  # a new pass over the data (an epoch may stop short of one)
                batches = task.train_batches(recipe.batch_size, rng)
                batch = next(batches)
            output = model(**_tensors(batch))
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
            optimizer.step()
            schedule.step()
            history.steps += 1
            losses.append(output.loss.detach().item())
            history.losses.append(losses[-1])
            accuracy.add(output.logits.detach().numpy(), _targets(batch))
            if bar is not None:
                bar.set_postfix(loss=f"{np.mean(losses):.4f}")
                bar.update(1)
        if bar is not None:
            bar.close()
        row = {"loss": float(np.mean(losses)), "accuracy": accuracy.value,
               **evaluate(model, task.val_batches(recipe.batch_size))}
        history.epochs.append(row)
        print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - began:.0f}s - "
              + " - ".join(f"{k}: {v:.4f}" for k, v in row.items()), file=sys.stdout, flush=True)
    history.seconds = time.perf_counter() - start
    model.eval()
    if out is not None:
        model.save_pretrained(out)
        task.tokenizer.save_pretrained(out)
    return model, history
