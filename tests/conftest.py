"""Test set-up shared by every test file: quiet TensorFlow, the tests folder on sys.path."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


def _torch_devices():
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=_torch_devices() if os.environ.get("ROFORMER_NO_TORCH") is None else ["cpu"])
def torch_device(request):
    """Every torch device present: CPU always, CUDA when there is one (the same suite is the GPU check)."""
    return request.param


def _jax_devices():
    import jax

    devices = [jax.devices("cpu")[0]]
    for backend in ("gpu", "tpu"):
        try:
            devices.append(jax.devices(backend)[0])
        except RuntimeError:  # no such backend here
            pass
    return devices


@pytest.fixture(params=_jax_devices(), ids=lambda d: d.platform)
def jax_device(request):
    """Every jax platform present: CPU always, GPU/TPU when jax sees one (the same tests are the GPU/TPU check).

    float32 matmuls at full precision: on GPU/TPU jax would otherwise use TF32/bf16 passes,
    which PyTorch (the reference here) does not.
    """
    import jax

    with jax.default_device(request.param), jax.default_matmul_precision("highest"):
        yield request.param
