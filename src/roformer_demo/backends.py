"""One checkpoint, three backends: load a saved folder in PyTorch, Keras or Flax and get logits.

A thin layer over ``roformer_core.backends`` (the adapter the tests and ``roformer-convert
verify`` use too): every runner takes the same numpy batches (``input_ids``,
``attention_mask``) and returns numpy float32 logits, so predictions and parity checks are
backend-blind. Backends are imported only when asked for: ``predict --backend torch`` never
loads TensorFlow.

Example:
    >>> runner = load_runner("torch", "runs/demo/classifier", "sequence_classification")  # doctest: +SKIP
    >>> runner.logits(batch).shape  # doctest: +SKIP
    (32, 2)
"""

from __future__ import annotations

import os

import numpy as np

from roformer_core.backends import PACKAGES, backend_name, get_backend
from roformer_core.checkpoint import Checkpoint, head_spec
from roformer_core.errors import CheckpointError
from roformer_core.heads import get_head

BACKENDS = tuple(PACKAGES)


def check_backend(name: str) -> str:
    """The backend's name (``keras`` for ``tf`` too), else one clear :class:`InputError`.

    Example:
        >>> check_backend("tf")
        'keras'
        >>> check_backend("mxnet")
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: unknown backend 'mxnet'; choose from torch, keras (or tf), flax (or jax)
    """
    return backend_name(name)


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

    The forward pass is compiled where the framework can (``Backend.predictor``).

    Example:
        >>> runner = Runner("keras", "runs/demo/classifier", "sequence_classification")  # doctest: +SKIP
        >>> runner.logits({"input_ids": ids, "attention_mask": mask}).argmax(-1)  # doctest: +SKIP
        array([1, 0])
    """

    def __init__(self, backend: str, folder: str, head: str):
        get_head(head)
        self.backend, self.folder, self.head = check_backend(backend), folder, head
        self.adapter = get_backend(self.backend)
        self.model = self.adapter.load(head, folder, "float32")
        self.config = self.model.config
        self._predict = self.adapter.predictor(self.model, "logits")

    def logits(self, batch: dict[str, np.ndarray], prediction_mask: np.ndarray | None = None) -> np.ndarray:
        """Logits for ``batch``; with ``prediction_mask`` (masked LM) only at its True positions."""
        inputs = {k: np.asarray(batch[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}
        if prediction_mask is not None:
            inputs["prediction_mask"] = np.asarray(prediction_mask, dtype=bool)
        return np.asarray(self._predict(inputs), dtype=np.float32)


def load_runner(backend: str, folder: str, head: str) -> Runner:
    """Load the checkpoint ``folder`` as ``head`` in ``backend``; a missing framework is one clear error.

    Example:
        >>> load_runner("flax", "runs/demo/mlm", "masked_lm").backend  # doctest: +SKIP
        'flax'
    """
    backend = check_backend(backend)
    check_checkpoint(folder, head)
    return Runner(backend, folder, head)
