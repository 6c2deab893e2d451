"""Keras (TensorFlow) as the rest of the project sees it: the lifecycle and the numpy adapter.

``LIFECYCLE`` is what ``from_pretrained``/``save_pretrained`` need of Keras (build a model,
list its variables under their canonical names); ``BACKEND`` runs a model on numpy inputs
for the tests, ``roformer-convert verify``, the demo and the pipelines. Everything else of
the lifecycle is ``roformer_core.lifecycle``.

Example:
    >>> from roformer_core import RoFormerConfig
    >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
    ...                      num_attention_heads=2, intermediate_size=16)
    >>> model = BACKEND.from_config("model", cfg)
    >>> BACKEND.run(model, {"input_ids": [[2, 5, 3]]})["last_hidden_state"].shape
    (1, 3, 8)
"""

from __future__ import annotations

import weakref

import ml_dtypes
import numpy as np

from roformer_core.backends import Backend, device_name
from roformer_core.config import RoFormerConfig
from roformer_core.errors import InputError
from roformer_core.lifecycle import Lifecycle


class KerasLifecycle(Lifecycle):
    """What loading and saving need of Keras (the rest is ``roformer_core.lifecycle``).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> from roformer_tf import RoFormerModel
        >>> LIFECYCLE.state_dict(RoFormerModel(cfg))["embeddings.word_embeddings.weight"].shape
        (10, 8)
    """

    name = "keras"
    native_file = "tf_model.h5"
    dtypes = {"F16": "float16", "BF16": "bfloat16"}

    def build(self, cls, config, tag, dtype=None, gradient_checkpointing=False):
        return cls.from_roformer_config(config, dtype=self.dtypes.get(tag) if dtype is None else dtype,
                                        gradient_checkpointing=gradient_checkpointing)

    def variables(self, model):
        for name, variable, transpose in model.named_variables():
            yield name, transpose, (lambda v=variable: v.numpy()), (lambda a, tag, v=variable: _assign(v, a, tag))


def _assign(variable, array: np.ndarray, tag: str) -> None:
    if tag == "BF16":  # safetensors BF16 arrives as its raw bits
        array = array.view(ml_dtypes.bfloat16)
    variable.assign(array.astype(ml_dtypes.bfloat16 if variable.dtype == "bfloat16" else np.dtype(variable.dtype)))


LIFECYCLE = KerasLifecycle()


class KerasBackend(Backend):
    """Keras from numpy (example: see the module docstring)."""

    name, package, extra = "keras", "roformer_tf", "keras"

    def to_numpy(self, value):
        array = np.asarray(value)
        return array.astype(np.float32) if array.dtype == ml_dtypes.bfloat16 else array

    def load(self, head, path, dtype="float32", **kwargs):
        return self.model_class(head).from_pretrained(path, dtype=dtype, **kwargs)

    def from_config(self, head, config, seed=0):
        import keras

        keras.utils.set_random_seed(seed)
        return self.model_class(head).from_roformer_config(config)

    def place(self, model, device):
        import tensorflow as tf

        name = device_name(device)
        if name is None:
            return model
        if name.startswith("tpu"):
            raise InputError(f"the {self.name} backend cannot run on {name}")
        if name != "cpu":
            gpus = tf.config.list_logical_devices("GPU")
            if int(name.split(":")[1]) >= len(gpus):
                raise InputError(f"device {name} asked for, but TensorFlow sees {len(gpus)} GPU(s)")
        _DEVICES[model] = "/CPU:0" if name == "cpu" else "/GPU:" + name.split(":")[1]
        return model

    def forward(self, model, inputs, **options):
        import tensorflow as tf

        with tf.device(_DEVICES.get(model, "")):
            return model(**inputs, training=False, **options)

    def infer(self, model, inputs, fields=("logits",)):
        import tensorflow as tf

        if model.head == "multiple_choice":  # [batch, choices, seq]: the generic path
            return super().infer(model, inputs, fields)
        names = tuple(sorted(k for k, v in inputs.items() if v is not None))
        functions = _INFER.setdefault(model, {})
        key = (names, tuple(fields))
        first = key not in functions
        if first:  # one graph per set of inputs; any batch and length
            spec = [tf.TensorSpec([None, None], tf.bool if n == "prediction_mask" else tf.int32, name=n) for n in names]
            held = weakref.ref(model)  # the graph is stored beside the model: it must not keep it alive

            def forward(*arrays):
                out = held()(**dict(zip(names, arrays)), training=False)
                return {k: tf.cast(out[k], tf.float32) for k in fields}
            functions[key] = tf.function(forward, input_signature=spec)
        feed = [np.asarray(inputs[n], bool if n == "prediction_mask" else np.int32) for n in names]
        logger, level = tf.get_logger(), tf.get_logger().level
        if first:  # each model traces its own graph once; TensorFlow would call that "excessive retracing"
            logger.setLevel("ERROR")
        try:
            with tf.device(_DEVICES.get(model, "")):
                out = functions[key](*feed)
        finally:
            logger.setLevel(level)
        return {k: v.numpy() for k, v in out.items()}


# per model, held only as long as the model lives: its device, and its compiled inference graphs
_DEVICES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_INFER: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


BACKEND = KerasBackend()
