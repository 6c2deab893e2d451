"""Flax as the rest of the project sees it: the lifecycle and the numpy adapter.

``LIFECYCLE`` is what ``from_pretrained``/``save_pretrained`` need of Flax (build a model,
list its params under their canonical names); ``BACKEND`` runs a model on numpy inputs for
the tests, ``roformer-convert verify``, the demo and the pipelines. Everything else of the
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

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from roformer_core.backends import Backend, device_name
from roformer_core.checkpoint import to_canonical_name
from roformer_core.config import RoFormerConfig
from roformer_core.errors import InputError
from roformer_core.lifecycle import Lifecycle, check_state_dict

MSGPACK_NAME = "flax_model.msgpack"
#: dtype names -> jax dtypes
DTYPES = {"float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}


def params_to_state_dict(params, config: RoFormerConfig, head: str) -> dict[str, np.ndarray]:
    """The params as ``{canonical name: numpy array}`` in reference order (kernels transposed).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> from roformer_flax import RoFormerModel
        >>> state = params_to_state_dict(RoFormerModel.from_config(cfg).params, cfg, "model")
        >>> state["encoder.layer.0.intermediate.dense.weight"].shape
        (64, 32)
    """
    state = {}
    for name, transpose, get, _ in _leaves(params):
        array = get()
        state[name] = array.T if transpose and array.ndim == 2 else array
    return check_state_dict(state, config, head,
                            " (replicated params from pmap? pass flax.jax_utils.unreplicate(params))")


def _leaves(params, setter=None):
    for leaf_path, leaf in flatten_dict(params).items():
        name, transpose = to_canonical_name(leaf_path)
        yield name, transpose, (lambda leaf=leaf: np.asarray(leaf)), (lambda a, tag, p=leaf_path: setter(p, a, tag))


class FlaxLifecycle(Lifecycle):
    """What loading and saving need of Flax (the rest is ``roformer_core.lifecycle``).

    Params are immutable: loading fills a flat dict, and :meth:`finish` builds the pytree,
    initialising the leaves the checkpoint lacks (a new head).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> from roformer_flax import RoFormerModel
        >>> LIFECYCLE.state_dict(RoFormerModel.from_config(cfg))["embeddings.word_embeddings.weight"].shape
        (10, 8)
    """

    name = "flax"
    native_file = MSGPACK_NAME
    dtypes = {"F16": jnp.float16, "BF16": jnp.bfloat16}

    def build(self, cls, config, tag, dtype=jnp.float32, param_dtype=None, seed=0):
        param_dtype = self.dtypes.get(tag, jnp.float32) if param_dtype is None else param_dtype
        model = cls(config, seed=seed, dtype=dtype, param_dtype=param_dtype, _do_init=False)
        model._seed, model._loaded = seed, {}
        return model

    def variables(self, model):
        def store(path, array, tag):
            if tag == "BF16":  # safetensors BF16 arrives as its raw bits
                array = np.asarray(array).view(ml_dtypes.bfloat16)
            model._loaded[path] = jnp.asarray(array, dtype=model.param_dtype)

        yield from _leaves(model.abstract_params(), store)

    def state_dict(self, model, params=None):
        return params_to_state_dict(model.params if params is None else params, model.config, model.head)

    def finish(self, model, plan):
        params = unflatten_dict(model._loaded)
        if plan.initialised:
            params = model.init_weights(jax.random.PRNGKey(model._seed), model.input_shape, params)
        model.params = params
        del model._loaded
        return model


LIFECYCLE = FlaxLifecycle()


class FlaxBackend(Backend):
    """Flax from numpy (example: see the module docstring). ``run`` is eager, like the model's ``__call__``."""

    name, package, extra = "flax", "roformer_flax", "flax"

    def to_framework(self, name, array, model):
        return jnp.asarray(array)

    def to_numpy(self, value):
        return np.asarray(value.astype(jnp.float32) if jnp.issubdtype(value.dtype, jnp.floating) else value)

    def forward(self, model, inputs, **options):
        return model(**inputs, **options)

    def load(self, head, path, dtype="float32", **kwargs):
        dtype = DTYPES.get(dtype, dtype)
        return self.model_class(head).from_pretrained(path, dtype=dtype, param_dtype=dtype, **kwargs)

    def from_config(self, head, config, seed=0):
        return self.model_class(head).from_config(config, seed=seed)

    def place(self, model, device):
        name = device_name(device)
        if name is None:
            return model
        kind, _, index = name.partition(":")
        try:
            found = jax.devices({"cuda": "gpu"}.get(kind, kind))
        except RuntimeError:
            found = []
        if int(index or 0) >= len(found):
            raise InputError(f"device {name} asked for, but jax sees {len(found)} {kind} device(s)")
        model.params = jax.device_put(model.params, found[int(index or 0)])
        return model

    def infer(self, model, inputs, fields=("logits",)):
        arrays = {k: np.asarray(v) for k, v in inputs.items() if v is not None}
        if model.head == "multiple_choice":
            return super().infer(model, inputs, fields)
        ids = arrays["input_ids"]
        batch, length = ids.shape
        # compiled once per padded shape: batch to a power of two, length to a multiple of 16
        rows, cols = _bucket(batch), -(-length // 16) * 16
        feed = {}
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            if name in arrays:
                padded = np.zeros((rows, cols), np.int32)
                padded[:batch, :length] = arrays[name]
                feed[name] = padded
        count = None
        if "prediction_mask" in arrays:  # a data-dependent count: gathered at a padded list of positions
            where = np.nonzero(arrays["prediction_mask"])
            count = len(where[0])
            positions = np.zeros((2, _bucket(max(count, 1))), np.int32)
            positions[:, :count] = where
            feed["prediction_positions"] = (positions[0], positions[1])
        key = ("infer", tuple(sorted(feed)), tuple(fields))
        if key not in model._cache:
            module = model.module  # not the model: the cache is shared and must not hold params

            def forward(params, feed):
                out = module.apply({"params": params}, **feed)
                return {k: out[k].astype(jnp.float32) for k in fields}
            model._cache[key] = jax.jit(forward)
        leaf = jax.tree_util.tree_leaves(model.params)[0]
        device = next(iter(leaf.devices())) if hasattr(leaf, "devices") else None
        out = model._cache[key](model.params, jax.device_put(feed, device))
        per_token = model.head not in ("sequence_classification", "multiple_choice")
        result = {}
        for k, v in out.items():
            v = np.asarray(v)
            if count is not None and k == "logits":
                result[k] = v[:count]
            else:
                result[k] = v[:batch, :length] if per_token else v[:batch]
        return result


def _bucket(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


BACKEND = FlaxBackend()
