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

import ml_dtypes
import numpy as np

from roformer_core.backends import Backend
from roformer_core.config import RoFormerConfig
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

    def build(self, cls, config, tag, dtype=None):
        return cls(config, dtype=self.dtypes.get(tag) if dtype is None else dtype)

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

    def forward(self, model, inputs, **options):
        return model(**inputs, training=False, **options)

    def load(self, head, path, dtype="float32", **kwargs):
        return self.model_class(head).from_pretrained(path, dtype=dtype, **kwargs)

    def predictor(self, model, field="logits"):
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def forward(inputs):
            return getattr(model(**inputs, training=False), field)

        def predict(inputs):
            if inputs.get("prediction_mask") is not None:  # a data-dependent shape: eager
                return self.run(model, inputs)[field]
            return self.to_numpy(forward({k: tf.constant(v) for k, v in inputs.items() if v is not None}))

        return predict

    def from_config(self, head, config, seed=0):
        import keras

        keras.utils.set_random_seed(seed)
        return self.model_class(head).from_config(config)


BACKEND = KerasBackend()
