"""One checkpoint, three backends: load a saved folder in PyTorch, Keras or Flax and get logits.

Every runner takes the same numpy batches (``input_ids``, ``attention_mask``) and returns
numpy float32 logits, so predictions and parity checks are backend-blind. Backends are
imported only when asked for: ``predict --backend torch`` never loads TensorFlow.

Example:
    >>> runner = load_runner("torch", "runs/demo/classifier", "sequence_classification")  # doctest: +SKIP
    >>> runner.logits(batch).shape  # doctest: +SKIP
    (32, 2)
"""

from __future__ import annotations

import os

import numpy as np

from roformer_core.checkpoint import HEADS, Checkpoint, head_spec
from roformer_core.errors import CheckpointError, InputError

BACKENDS = ("torch", "keras", "flax")
EXTRAS = {"torch": "torch", "keras": "tf", "flax": "flax"}


def check_backend(name: str) -> str:
    """``name`` if it is a backend, else one clear :class:`InputError`.

    Example:
        >>> check_backend("jax")
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: unknown backend 'jax'; choose from torch, keras, flax
    """
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return name


def check_checkpoint(folder: str, head: str | None = None) -> str:
    """``folder`` if it holds a canonical checkpoint (config.json and weights) with the tokenizer
    beside it and, when ``head`` is given, that head's weights; else one clear error.

    Example:
        >>> import tempfile
        >>> check_checkpoint(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        roformer_core.errors.CheckpointError: ... has no config.json, so it is not a checkpoint folder ...
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise CheckpointError(f"no checkpoint folder at {folder}: train one first (`run`, or `train`), "
                              f"or pass --checkpoint")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise CheckpointError(f"{folder} has no config.json, so it is not a checkpoint folder "
                              f"(a checkpoint is config.json + model.safetensors)")
    if not any(os.path.isfile(os.path.join(folder, n)) for n in ("model.safetensors", "model.safetensors.index.json")):
        raise CheckpointError(f"{folder} has a config.json but no model.safetensors")
    if not os.path.isfile(os.path.join(folder, "vocab.txt")):
        raise CheckpointError(f"{folder} has no vocab.txt: the demo saves the tokenizer beside the weights")
    if head is not None:
        store = Checkpoint(folder)
        if not set(head_spec(store.config, head)) <= set(store.names()):
            # loading would initialise the head at random and serve noise: refuse instead
            wanted = {"sequence_classification": "the classifier (OUT/classifier)",
                      "masked_lm": "the masked LM (OUT/mlm)"}.get(head, f"a {head} checkpoint")
            raise CheckpointError(f"{folder} has no {head} head; use {wanted}")
    return folder


class Runner:
    """A loaded model of one backend: ``logits(batch, prediction_mask=None) -> np.ndarray``.

    Example:
        >>> runner = TorchRunner("runs/demo/classifier", "sequence_classification")  # doctest: +SKIP
        >>> runner.logits({"input_ids": ids, "attention_mask": mask}).argmax(-1)  # doctest: +SKIP
        array([1, 0])
    """

    backend: str = ""

    def __init__(self, folder: str, head: str):
        if head not in HEADS:
            raise InputError(f"unknown head {head!r}")
        self.folder, self.head = folder, head
        self.model = self._load()
        self.config = self.model.config

    def _load(self):
        raise NotImplementedError

    def logits(self, batch: dict[str, np.ndarray], prediction_mask: np.ndarray | None = None) -> np.ndarray:
        """Logits for ``batch``; with ``prediction_mask`` (masked LM) only at its True positions."""
        raise NotImplementedError


class TorchRunner(Runner):
    """PyTorch, float32, eval mode, no autograd (example: see :class:`Runner`)."""

    backend = "torch"

    def _load(self):
        import torch

        import roformer_torch

        return roformer_torch.MODEL_CLASSES[self.head].from_pretrained(self.folder, dtype=torch.float32).eval()

    def logits(self, batch, prediction_mask=None):
        import torch

        kwargs = {k: torch.as_tensor(batch[k], dtype=torch.long) for k in ("input_ids", "attention_mask")}
        if prediction_mask is not None:
            kwargs["prediction_mask"] = torch.as_tensor(prediction_mask)
        with torch.no_grad():
            return self.model(**kwargs).logits.float().numpy()


class KerasRunner(Runner):
    """Keras 3 on TensorFlow; the forward pass is a ``tf.function`` (traced once per shape family).

    Example: see :class:`Runner`.
    """

    backend = "keras"

    def _load(self):
        import tensorflow as tf

        import roformer_tf

        model = roformer_tf.MODEL_CLASSES[self.head].from_pretrained(self.folder, dtype="float32")
        self._forward = tf.function(lambda ids, mask: model(input_ids=ids, attention_mask=mask, training=False).logits,
                                    reduce_retracing=True)
        return model

    def logits(self, batch, prediction_mask=None):
        if prediction_mask is not None:  # a data-dependent shape: run eagerly
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             prediction_mask=prediction_mask, training=False)
            return np.array(out.logits, dtype=np.float32)
        return np.array(self._forward(batch["input_ids"], batch["attention_mask"]), dtype=np.float32)


class FlaxRunner(Runner):
    """Flax; the forward pass is ``jax.jit``-ed with the params as an argument (they can be swapped).

    Example: see :class:`Runner`.
    """

    backend = "flax"

    def _load(self):
        import jax

        import roformer_flax

        model = roformer_flax.MODEL_CLASSES[self.head].from_pretrained(self.folder)
        self._forward = jax.jit(lambda params, ids, mask: model(ids, attention_mask=mask, params=params).logits)
        self.params = model.params
        return model

    def logits(self, batch, prediction_mask=None):
        if prediction_mask is not None:  # the masked positions are found on the concrete mask: eager
            out = self.model(batch["input_ids"], attention_mask=batch["attention_mask"], params=self.params,
                             prediction_mask=prediction_mask)
            return np.array(out.logits, dtype=np.float32)
        return np.array(self._forward(self.params, batch["input_ids"], batch["attention_mask"]), dtype=np.float32)


RUNNERS = {"torch": TorchRunner, "keras": KerasRunner, "flax": FlaxRunner}


def load_runner(backend: str, folder: str, head: str) -> Runner:
    """Load the checkpoint ``folder`` as ``head`` in ``backend``; a missing framework is one clear error.

    Example:
        >>> load_runner("flax", "runs/demo/mlm", "masked_lm").backend  # doctest: +SKIP
        'flax'
    """
    check_backend(backend)
    check_checkpoint(folder, head)
    try:
        return RUNNERS[backend](folder, head)
    except ModuleNotFoundError as e:
        raise InputError(f"the {backend} backend needs {e.name}, which is not installed: "
                         f'pip install -e ".[{EXTRAS[backend]}]"') from None
