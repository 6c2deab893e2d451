"""One adapter per backend: run a checkpoint on numpy inputs in PyTorch, Keras or Flax, the same way.

The tests, ``roformer-convert verify``, the demo and the pipelines talk to every framework
through :class:`Backend`; each package has one (``roformer_torch.adapter.BACKEND`` ...), found
by :func:`get_backend` and imported only when asked for, so asking for ``"torch"`` never
imports TensorFlow.

Adding a fourth backend: a package with the model classes (``MODEL_CLASSES``: head name ->
class, the heads of ``roformer_core.heads.HEAD_TABLE``), a ``roformer_core.lifecycle.Lifecycle``
subclass (build a model, list its variables), and a :class:`Backend` subclass that converts
numpy inputs to the framework's arrays and outputs back (:meth:`Backend.to_framework`,
:meth:`Backend.to_numpy`, :meth:`Backend.forward`); then one line in :data:`PACKAGES`. The
shared test battery (``tests/test_battery.py``) runs on it as soon as it is listed there.

The backends are called ``torch``, ``keras`` (package ``roformer_tf``, Keras 3 on TensorFlow;
``tf`` and ``tensorflow`` are aliases) and ``flax`` (``jax`` is an alias).

Example:
    >>> backend = get_backend("pytorch")          # aliases: pytorch, tf, tensorflow, jax
    >>> backend.name, backend.package
    ('torch', 'roformer_torch')
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any, Mapping

import numpy as np

from roformer_core.errors import InputError
from roformer_core.heads import ARRAY_ARGUMENTS, get_head
from roformer_core.inputs import ArrayFacts, validate_inputs

#: backend name -> (package, pip extra)
PACKAGES = {"torch": ("roformer_torch", "torch"), "keras": ("roformer_tf", "keras"), "flax": ("roformer_flax", "flax")}
#: other names people use for the same backends
ALIASES = {"pytorch": "torch", "pt": "torch", "tf": "keras", "tensorflow": "keras", "jax": "flax",
           **{package: name for name, (package, _) in PACKAGES.items()}}


def backend_name(name: str) -> str:
    """The backend's one name (``torch``, ``keras``, ``flax``) for any of its names, or one clear error.

    Example:
        >>> backend_name("tensorflow")
        'keras'
        >>> backend_name("mxnet")
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: unknown backend 'mxnet'; choose from torch, keras (or tf), flax (or jax)
    """
    key = str(name).lower()
    key = ALIASES.get(key, key)
    if key not in PACKAGES:
        raise InputError(f"unknown backend {name!r}; choose from torch, keras (or tf), flax (or jax)")
    return key


def get_backend(name: str) -> "Backend":
    """The :class:`Backend` called ``name``; a framework that is not installed is one clear error.

    Example:
        >>> get_backend("torch").extra
        'torch'
    """
    key = backend_name(name)
    package, extra = PACKAGES[key]
    try:
        return importlib.import_module(f"{package}.adapter").BACKEND
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in (package,):
            raise
        raise InputError(f"the {key} backend needs {e.name}, which is not installed: "
                         f"pip install 'roformer-tri[{extra}]'") from None


def device_name(device) -> str | None:
    """One spelling for a device: None (leave it), ``"cpu"``, ``"cuda:N"`` or ``"tpu:N"``.

    Takes what users write: an index (``0`` is the first GPU, ``-1`` the CPU, as the reference's
    pipelines take it), ``"cuda"``, ``"gpu:1"``, ``"/GPU:0"``, or a torch/jax device object.

    Example:
        >>> device_name(0), device_name(-1), device_name("gpu"), device_name("/GPU:1"), device_name(None)
        ('cuda:0', 'cpu', 'cuda:0', 'cuda:1', None)
        >>> device_name("abacus")
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: unknown device 'abacus'; use cpu, cuda, cuda:N (or gpu:N), tpu:N or an index
    """
    if device is None:
        return None
    if isinstance(device, bool):
        raise InputError(f"unknown device {device!r}; use cpu, cuda, cuda:N (or gpu:N), tpu:N or an index")
    if isinstance(device, int):
        return "cpu" if device < 0 else f"cuda:{device}"
    platform, index = getattr(device, "platform", None), getattr(device, "id", None)  # a jax device
    if platform is not None and index is not None:
        text = f"{platform}:{index}"
    else:
        text = str(device)  # a torch.device prints as "cuda:0"
    kind, _, number = text.strip().lstrip("/").lower().partition(":")
    kind = {"gpu": "cuda"}.get(kind, kind)
    if kind not in ("cpu", "cuda", "tpu") or (number and not number.isdigit()):
        raise InputError(f"unknown device {device!r}; use cpu, cuda, cuda:N (or gpu:N), tpu:N or an index")
    return "cpu" if kind == "cpu" else f"{kind}:{int(number or 0)}"


def available_backends() -> list[str]:
    """The backends whose framework is installed, in the default order (torch, keras, flax).

    Example:
        >>> "torch" in available_backends()
        True
    """
    found = []
    for key, (package, _) in PACKAGES.items():
        framework = {"torch": "torch", "keras": "tensorflow", "flax": "flax"}[key]
        if importlib.util.find_spec(framework) is not None:
            found.append(key)
    return found


class Backend:
    """A framework seen from numpy: load, build, run, save (one subclass per backend package).

    Example:
        >>> import tempfile
        >>> from roformer_core import RoFormerConfig
        >>> backend = get_backend("torch")
        >>> cfg = RoFormerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=32)
        >>> model = backend.from_config("sequence_classification", cfg)
        >>> out = backend.run(model, {"input_ids": np.array([[2, 7, 3]])})
        >>> out["logits"].shape, out["logits"].dtype
        ((1, 2), dtype('float32'))
    """

    name = ""
    package = ""
    extra = ""

    @property
    def module(self):
        return importlib.import_module(self.package)

    @property
    def classes(self) -> dict:
        """head name -> model class."""
        return self.module.MODEL_CLASSES

    def model_class(self, head: str):
        get_head(head)
        return self.classes[head]

    # -- what a backend implements ------------------------------------------------------------------
    def to_framework(self, name: str, array: np.ndarray, model) -> Any:
        """A numpy input as the framework wants it (on the model's device)."""
        return array

    def to_numpy(self, value) -> np.ndarray:
        """A framework array as numpy (bfloat16/float16 as float32)."""
        return np.asarray(value)

    def forward(self, model, inputs: dict, **options):
        """The model's output object for framework inputs (inference: no dropout, no gradients)."""
        return model(**inputs, **options)

    def load(self, head: str, path: str | os.PathLike, dtype=None, **kwargs):
        """``MODEL_CLASSES[head].from_pretrained(path, ...)`` (``dtype`` in the framework's terms)."""
        return self.model_class(head).from_pretrained(path, dtype=dtype, **kwargs)

    def from_config(self, head: str, config, seed: int = 0):
        """A freshly initialised model of ``head``."""
        return self.model_class(head).from_config(config)

    def place(self, model, device):
        """``model`` on ``device`` (any spelling :func:`device_name` takes; None leaves it); returns the model.

        A backend that can run elsewhere than the CPU overrides this.
        """
        name = device_name(device)
        if name not in (None, "cpu"):
            raise InputError(f"the {self.name} backend cannot run on {name} here")
        return model

    def infer(self, model, inputs: Mapping[str, np.ndarray], fields: tuple[str, ...] = ("logits",)) -> dict:
        """Inference for serving (the pipelines): numpy ``inputs`` -> ``{field: float32 numpy}``.

        Like :meth:`run`, but as fast as the framework allows: a backend may compile the forward
        pass (and pad shapes to a few sizes to compile it only a few times), so a compiled
        backend need not check id values; the caller checks them first. ``prediction_mask``
        (masked LM) gives ``logits`` only where it is True, ``[count, vocab]`` in row-major order.
        """
        out = self.run(model, inputs)
        return {k: out[k] for k in fields}

    # -- shared ---------------------------------------------------------------------------------------
    def run(self, model, inputs: Mapping[str, Any], **options) -> dict[str, Any]:
        """Run ``model`` on numpy ``inputs`` (lists are fine); every output field as numpy float32,
        per-layer tuples as tuples (``past_key_values`` as nested tuples).

        ``options`` go to the forward call (``output_hidden_states=True``, ``use_cache=True`` ...).
        """
        feed = {}
        for k, v in inputs.items():
            if v is None:
                continue
            if k == "past_key_values":
                feed[k] = self.past_to_framework(v, model)
                continue
            if isinstance(v, (list, tuple)):
                v = np.asarray(v)
            feed[k] = self.to_framework(k, v, model) if isinstance(v, np.ndarray) else v
        out = self.forward(model, feed, **options)
        return {k: self._numpy_tree(v) for k, v in out.items()}

    def _numpy_tree(self, value):
        if isinstance(value, (tuple, list)):
            return tuple(self._numpy_tree(v) for v in value)
        array = np.asarray(self.to_numpy(value))
        return array.astype(np.float32) if array.dtype.kind == "f" or array.dtype.name == "bfloat16" else array

    def predictor(self, model, field: str = "logits"):
        """A function ``(numpy inputs) -> numpy output field``: :meth:`infer` for one field, compiled
        where the framework can, for serving many batches (the caller checks id values first).

        Example:
            >>> from roformer_core import RoFormerConfig
            >>> backend = get_backend("torch")
            >>> cfg = RoFormerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
            ...                      num_attention_heads=2, intermediate_size=32)
            >>> predict = backend.predictor(backend.from_config("masked_lm", cfg))
            >>> predict({"input_ids": np.array([[2, 4, 3]])}).shape
            (1, 3, 50)
        """
        def predict(inputs):
            self.check(model, inputs)  # a compiled forward would gather garbage for an id out of range
            return self.infer(model, inputs, (field,))[field]

        return predict

    def check(self, model, inputs: Mapping[str, Any]) -> None:
        """``roformer_core.inputs.validate_inputs`` on numpy inputs, on the host: what every compiled
        entry point runs before its step (out-of-range ids would gather garbage there, not fail)."""
        facts = {k: ArrayFacts.of(np.asarray(v), name=k) for k, v in inputs.items()
                 if v is not None and k in ARRAY_ARGUMENTS and k not in ("inputs_embeds", "head_mask",
                                                                         "encoder_hidden_states")}
        if inputs.get("inputs_embeds") is not None:
            facts["inputs_embeds"] = ArrayFacts(tuple(np.shape(inputs["inputs_embeds"])), False)
        validate_inputs(model.config, model.head, facts, None, inputs.get("encoder_hidden_states") is not None)

    def step(self, model, inputs: Mapping[str, Any], past=None, **options) -> tuple[dict[str, Any], Any]:
        """One decoding step: ``(numpy outputs, the framework's cache)``; pass the cache back as ``past``.

        The cache stays in the framework's arrays between steps (no copy through numpy).

        Example:
            >>> from roformer_core import RoFormerConfig
            >>> backend = get_backend("torch")
            >>> cfg = RoFormerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            ...                      intermediate_size=32, is_decoder=True)
            >>> model = backend.from_config("causal_lm", cfg)
            >>> out, past = backend.step(model, {"input_ids": np.array([[2, 7]])})
            >>> out, past = backend.step(model, {"input_ids": np.array([[9]])}, past)
            >>> out["logits"].shape
            (1, 1, 50)
        """
        feed = {k: self.to_framework(k, np.asarray(v), model) for k, v in inputs.items() if v is not None}
        if past is not None:
            feed["past_key_values"] = past
        out = self.forward(model, feed, use_cache=True, **options)
        return {k: self._numpy_tree(v) for k, v in out.items() if k != "past_key_values"}, out.past_key_values

    def generate(self, model, input_ids, attention_mask=None, **options) -> np.ndarray:
        """``model.generate`` (causal LM, the key/value cache) on numpy ids; numpy ids back.

        Example:
            >>> from roformer_core import RoFormerConfig
            >>> backend = get_backend("torch")
            >>> cfg = RoFormerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            ...                      intermediate_size=32, is_decoder=True)
            >>> backend.generate(backend.from_config("causal_lm", cfg), np.array([[2, 7]]), max_new_tokens=3).shape
            (1, 5)
        """
        ids = self.to_framework("input_ids", np.asarray(input_ids), model)
        mask = None if attention_mask is None else self.to_framework("attention_mask", np.asarray(attention_mask),
                                                                      model)
        return np.asarray(self.to_numpy(model.generate(ids, mask, **options)))

    def past_to_framework(self, past, model):
        """A numpy cache (nested tuples) as the framework's cache."""
        return tuple(tuple(self.to_framework("past_key_values", np.asarray(t), model) for t in layer)
                     for layer in past)

    def state_dict(self, model) -> dict[str, np.ndarray]:
        """``{canonical name: numpy array}`` (see ``roformer_core.lifecycle.Lifecycle.state_dict``)."""
        return self.module.adapter.LIFECYCLE.state_dict(model)

    def save(self, model, directory: str | os.PathLike) -> None:
        model.save_pretrained(directory)


__all__ = ["Backend", "PACKAGES", "ALIASES", "backend_name", "get_backend", "available_backends", "device_name"]
