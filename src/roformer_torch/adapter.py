"""PyTorch as the rest of the project sees it: the lifecycle and the numpy adapter.

``LIFECYCLE`` is what ``from_pretrained``/``save_pretrained`` need of PyTorch (build a model,
list its parameters under their canonical names); ``BACKEND`` runs a model on numpy inputs
for the tests, ``roformer-convert verify``, the demo and the pipelines. Everything else of the
lifecycle is ``roformer_core.lifecycle``.

Example:
    >>> from roformer_core import RoFormerConfig
    >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
    ...                      num_attention_heads=2, intermediate_size=16)
    >>> model = BACKEND.from_config("model", cfg)
    >>> BACKEND.run(model, {"input_ids": [[2, 5, 3]]})["last_hidden_state"].shape
    (1, 3, 8)
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from roformer_core.backends import Backend, device_name
from roformer_core.errors import InputError
from roformer_core.lifecycle import Lifecycle
from roformer_core.safetensors_io import STORAGE

#: dtype names -> torch dtypes
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TorchLifecycle(Lifecycle):
    """What loading and saving need of PyTorch (the rest is ``roformer_core.lifecycle``).

    Example:
        >>> from roformer_core import RoFormerConfig
        >>> from roformer_torch import RoFormerModel
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> LIFECYCLE.state_dict(RoFormerModel(cfg))["embeddings.word_embeddings.weight"].shape
        (10, 8)
    """

    name = "torch"
    dtypes = {"F16": torch.float16, "BF16": torch.bfloat16}

    def build(self, cls, config, tag, dtype=None, device=None):
        return cls(config).to(dtype=self.dtypes.get(tag, torch.float32) if dtype is None else dtype)

    def variables(self, model):
        for name, tensor in model.state_dict().items():
            yield name, False, (lambda t=tensor: _to_numpy(t)), (lambda a, tag, t=tensor: _copy_into(t, a, tag))

    def finish(self, model, plan, device=None):
        return model.eval()

    def load(self, cls, path, config=None, options=None, **overrides):
        device = (options or {}).get("device")
        return super().load(cls, path, config, options, **overrides).to(device=device)


def _copy_into(tensor: torch.Tensor, array: np.ndarray, tag: str) -> None:
    with torch.no_grad(), warnings.catch_warnings():  # memory-mapped views are read-only; we only copy from them
        warnings.simplefilter("ignore", UserWarning)
        source = torch.from_numpy(np.asarray(array))
        tensor.copy_(source.view(torch.bfloat16) if tag == "BF16" else source)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(STORAGE["BF16"])
    return tensor.numpy()


LIFECYCLE = TorchLifecycle()


class TorchBackend(Backend):
    """PyTorch from numpy (example: see the module docstring)."""

    name, package, extra = "torch", "roformer_torch", "torch"

    def to_framework(self, name, array, model):
        return torch.as_tensor(array, device=_device(model))

    def to_numpy(self, value):
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()

    def forward(self, model, inputs, **options):
        with torch.no_grad():
            return model(**inputs, **options)

    def load(self, head, path, dtype="float32", **kwargs):
        return self.model_class(head).from_pretrained(path, dtype=DTYPES.get(dtype, dtype), **kwargs)

    def from_config(self, head, config, seed=0):
        torch.manual_seed(seed)
        return self.model_class(head)(config).eval()

    def place(self, model, device):
        name = device_name(device)
        if name is None:
            return model
        if name.startswith("tpu"):
            raise InputError(f"the {self.name} backend cannot run on {name}")
        if name.startswith("cuda") and (not torch.cuda.is_available()
                                        or int(name.split(":")[1]) >= torch.cuda.device_count()):
            raise InputError(f"device {name} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)")
        return model.to(torch.device(name))


def _device(model) -> torch.device:
    return next(model.parameters()).device


BACKEND = TorchBackend()
