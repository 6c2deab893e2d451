"""The Keras face of every RoFormer model, in one place, apart from the model tree.

:class:`KerasModelAPI` is what ``roformer_tf.modeling.RoFormerPreTrainedModel`` adds to
``keras.Model`` so that a RoFormer takes what the reference TF classes took and works with
what Keras users do:

- ``__call__`` takes the reference TF input forms (keyword arguments, one tensor of input
  ids, a list in ``call``'s order, a dict; numpy arrays, lists or tensors) and checks them
  with ``roformer_core.inputs.validate_inputs`` before Keras sees them;
- ``compile()`` without a loss trains on the head's own loss; labels come as ``y`` or as
  entries of the features dict; a compiled loss or metric sees the logits;
- ``predict`` returns the output fields; ``export`` writes a SavedModel with a serving signature;
- ``get_config``/``from_config`` make ``.keras`` files; the output dataclasses are tree nodes
  for Keras (functional models, compiled metrics).

A class using it provides ``config`` (a ``RoFormerConfig``), ``head`` (a key of
``roformer_core.heads.HEAD_TABLE``), ``head_loss(prediction, labels)`` and
``from_roformer_config(config, dtype)``.

Example:
    >>> import numpy as np
    >>> from roformer_tf import RoFormerConfig, RoFormerForSequenceClassification
    >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
    ...                      num_attention_heads=4, intermediate_size=64, num_labels=2)
    >>> model = RoFormerForSequenceClassification(cfg)
    >>> model([np.array([[2, 5, 3]]), np.array([[1, 1, 1]])]).logits.shape   # a list, as in call's order
    TensorShape([1, 2])
    >>> model({"input_ids": [[2, 5, 3]], "labels": [1]}).loss.shape           # a dict; lists become arrays
    TensorShape([])
"""

from __future__ import annotations

import collections.abc
import inspect

import keras
import numpy as np
import optree
import tensorflow as tf

from roformer_core.config import RoFormerConfig
from roformer_core.errors import InputError
from roformer_core.heads import ARRAY_ARGUMENTS, HEAD_TABLE
from roformer_core.inputs import ArrayFacts, validate_inputs
from roformer_core.io import atomic_dir
from roformer_core.outputs import (BaseModelOutput, CausalLMOutput, MaskedLMOutput, ModelOutput,
                                   QuestionAnsweringModelOutput, SequenceClassifierOutput, TokenClassifierOutput)

#: the package part of the names ``.keras`` files give the model classes (``roformer_tf>RoFormerModel``)
SERIALIZABLE_PACKAGE = "roformer_tf"


def register_serializable(*classes) -> None:
    """Register model classes for ``keras.models.load_model`` under ``roformer_tf>ClassName``.

    Example:
        >>> from roformer_tf import RoFormerModel
        >>> keras.saving.get_registered_object("roformer_tf>RoFormerModel") is RoFormerModel
        True
    """
    for cls in classes:
        keras.saving.register_keras_serializable(package=SERIALIZABLE_PACKAGE)(cls)


def _register_keras_tree_node(cls):
    """Let Keras' tree utilities (optree, namespace "keras") look inside an output dataclass, so
    ``fit``/``evaluate`` can build compiled metrics and functional models can wrap a RoFormer.
    Like the outputs' own ``keys()``, fields that are None are not part of the structure."""
    try:
        optree.register_pytree_node(cls, lambda out: (out.values(), tuple(out.keys()), tuple(out.keys())),
                                    lambda names, children: cls(**dict(zip(names, children))), namespace="keras")
    except ValueError:  # already registered (a module reload)
        pass


for _output_class in (BaseModelOutput, MaskedLMOutput, CausalLMOutput, SequenceClassifierOutput,
                      TokenClassifierOutput, QuestionAnsweringModelOutput):
    _register_keras_tree_node(_output_class)


class KerasModelAPI:
    """The Keras-facing methods of every RoFormer model (a mixin placed before ``keras.Model``).

    Example: see the module docstring.
    """

    # -- inputs ------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        """Takes the reference TF input forms: keyword arguments, a single tensor of input_ids,
        a list in the order of ``call``'s arguments, or a dict; numpy arrays or tensors."""
        arguments = self._collect_arguments(args, kwargs)
        self.check_inputs(arguments)  # before Keras, so a bad input is one short error
        return super().__call__(**arguments)

    def _collect_arguments(self, args, kwargs) -> dict:
        names = list(inspect.signature(self.call).parameters)
        if args and isinstance(args[0], collections.abc.Mapping):
            if len(args) > 1:
                raise InputError("give inputs as one dict, or as separate arguments, not both")
            given = dict(args[0])
        elif args and isinstance(args[0], (list, tuple)):
            if len(args) > 1 or len(args[0]) > len(names):
                raise InputError(f"a list of inputs holds at most {len(names)} entries, in this order: "
                                 f"{', '.join(names)}")
            given = dict(zip(names, args[0]))
        else:
            if len(args) > len(names):
                raise InputError(f"{type(self).__name__} takes at most {len(names)} inputs, got {len(args)}")
            given = dict(zip(names, args))
        for key, value in kwargs.items():
            if key in given and given[key] is not None:
                raise InputError(f"{key} is given twice")
            given[key] = value
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise InputError(f"{type(self).__name__} has no input {', '.join(unknown)}; its inputs are "
                             f"{', '.join(names)}")
        return {k: np.asarray(v) if k in ARRAY_ARGUMENTS and isinstance(v, (list, tuple)) else v
                for k, v in given.items()}

    def check_inputs(self, arguments: dict) -> None:
        """One clear :class:`InputError` for missing, mistyped or mis-shaped inputs (``roformer_core.inputs``).
        Values are checked where they are concrete (eager), not while a graph is traced.

        Example:
            >>> from roformer_tf import RoFormerConfig, RoFormerModel
            >>> model = RoFormerModel(RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
            ...                                      num_attention_heads=2, intermediate_size=16))
            >>> model.check_inputs({"input_ids": np.array([[2, 12]])})
            Traceback (most recent call last):
            ...
            roformer_core.errors.InputError: input_ids holds ids up to 12, outside [0, 10) (config vocab_size = 10)
        """
        facts = {name: _facts(name, value) for name, value in arguments.items()
                 if value is not None and (name in ARRAY_ARGUMENTS and name not in ("head_mask", "prediction_mask"))}
        if arguments.get("inputs_embeds") is not None:
            facts["inputs_embeds"] = ArrayFacts(_static_shape(arguments["inputs_embeds"]), False)
        past = arguments.get("past_key_values")
        past_length = 0 if past is None else _static_shape(past[0][0])[2]
        validate_inputs(self.config, self.head, facts, past_length, arguments.get("encoder_hidden_states") is not None)

    # -- Keras training: compile() without a loss trains on the head's own loss ------------------
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The loss given to ``compile()`` on the head's prediction, or else the head's own loss."""
        prediction = self._prediction(y_pred)
        if self.loss is not None:
            return super().compute_loss(x, self._labels(x, y), prediction, sample_weight, training)
        if sample_weight is not None:
            raise InputError("sample weights need a loss given to compile(); the head's own loss takes none")
        loss = self.head_loss(prediction, self._labels(x, y))
        if self.losses:
            loss = loss + tf.add_n([tf.cast(tf.reduce_sum(extra), loss.dtype) for extra in self.losses])
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, self._labels(x, y), self._prediction(y_pred), sample_weight)

    def predict_step(self, data):
        """``model.predict`` returns a dict of the output fields (numpy), without the loss."""
        return {k: v for k, v in super().predict_step(data).items() if k != "loss"}

    def _prediction(self, output):
        """What a compiled loss or metric sees: the logits (start and end logits for QA)."""
        if not isinstance(output, ModelOutput):
            return output
        if isinstance(output, QuestionAnsweringModelOutput):
            return output.start_logits, output.end_logits
        if isinstance(output, BaseModelOutput):
            return output.last_hidden_state
        return output.logits

    def _labels(self, x, y):
        """``y`` (a tensor, or for QA a (start, end) pair or dict), or else the label entries of ``x``."""
        names = HEAD_TABLE[self.head].label_keys
        if not names:
            return y
        if y is None and isinstance(x, collections.abc.Mapping) and all(x.get(n) is not None for n in names):
            y = {n: x[n] for n in names}
        if y is None:
            raise InputError(f"{type(self).__name__} needs {' and '.join(names)}: give them as y (labels of the "
                             f"dataset) or as entries of the features dict")
        if isinstance(y, collections.abc.Mapping):
            missing = [n for n in names if n not in y]
            if missing:
                raise InputError(f"labels dict lacks {', '.join(missing)}")
            y = tuple(y[n] for n in names)
            return y[0] if len(names) == 1 else y
        if len(names) == 1:
            return y
        if not isinstance(y, (list, tuple)) or len(y) != len(names):
            raise InputError(f"{type(self).__name__} labels are ({', '.join(names)})")
        return tuple(y)

    # -- Keras files: get_config / from_config ---------------------------------------------------
    def get_config(self) -> dict:
        """What a ``.keras`` file stores of the model: its ``RoFormerConfig``, name, dtype policy, trainable.

        Example:
            >>> from roformer_tf import RoFormerConfig, RoFormerModel
            >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
            ...                      num_attention_heads=2, intermediate_size=16)
            >>> sorted(RoFormerModel(cfg, name="encoder").get_config())
            ['config', 'dtype', 'name', 'trainable']
        """
        return {"name": self.name, "trainable": self.trainable,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy), "config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config, dtype=None):
        """Keras' deserialization hook: the model a :meth:`get_config` dict describes (``.keras`` files,
        ``keras.models.clone_model``), with that name, dtype policy and trainable flag.

        A ``RoFormerConfig`` (or a ``config.json`` dict) is still taken, with ``dtype``, as before
        ``from_roformer_config`` existed; new code building a model from a config calls that.

        Example:
            >>> from roformer_tf import RoFormerConfig, RoFormerModel
            >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
            ...                      num_attention_heads=2, intermediate_size=16)
            >>> RoFormerModel.from_config(RoFormerModel(cfg, name="encoder").get_config()).name
            'encoder'
        """
        if isinstance(config, RoFormerConfig):
            return cls.from_roformer_config(config, dtype=dtype)
        keras_config = dict(config)
        if "config" not in keras_config:  # a config.json dictionary
            return cls.from_roformer_config(RoFormerConfig.from_dict(keras_config), dtype=dtype)
        return cls(RoFormerConfig.from_dict(keras_config.pop("config")), **keras_config)

    # -- export ------------------------------------------------------------------------------
    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """Export for serving; by default a SavedModel whose ``serving_default`` signature takes
        ``input_ids``, ``attention_mask``, ``token_type_ids`` (int32) and returns the output fields.

        Any other ``format`` or an explicit ``input_signature`` goes to Keras' own ``export``.

        Example:
            >>> import tempfile, os
            >>> from roformer_tf import RoFormerConfig, RoFormerForMaskedLM
            >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
            ...                      num_attention_heads=4, intermediate_size=64)
            >>> path = os.path.join(tempfile.mkdtemp(), "served")
            >>> RoFormerForMaskedLM(cfg).export(path, verbose=False)
            >>> sorted(tf.saved_model.load(path).signatures)
            ['serve', 'serving_default']
        """
        if format != "tf_saved_model" or input_signature is not None:
            return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature,
                                  **kwargs)
        rank = HEAD_TABLE[self.head].input_rank
        signature = [tf.TensorSpec([None] * rank, tf.int32, name=n)
                     for n in ("input_ids", "attention_mask", "token_type_ids")]

        def serve(input_ids, attention_mask, token_type_ids):
            out = self(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                       training=False)
            return {k: v for k, v in out.items() if k != "past_key_values"}

        archive = keras.export.ExportArchive()
        archive.track(self)
        archive.add_endpoint("serve", serve, input_signature=signature)
        with atomic_dir(filepath) as tmp:
            archive.write_out(tmp, verbose=bool(verbose))


def _facts(name: str, x) -> ArrayFacts:
    # values only where they exist: not while tracing a graph or building a functional model
    return ArrayFacts.of(x if _has_values(x) else None, shape=_static_shape(x), integer=_is_integer(x), name=name)


def _static_shape(x):
    if x is None:
        return None
    shape = getattr(x, "shape", None)
    if shape is None:
        shape = np.shape(x)
    return tuple(shape.as_list()) if isinstance(shape, tf.TensorShape) else tuple(shape)


def _has_values(x) -> bool:
    return isinstance(x, (np.ndarray, list, tuple, int)) or (isinstance(x, tf.Tensor) and not tf.is_symbolic_tensor(x))


def _is_integer(x) -> bool:
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.asarray(x).dtype
    try:
        return tf.as_dtype(dtype).is_integer
    except TypeError:
        return False


__all__ = ["KerasModelAPI", "SERIALIZABLE_PACKAGE", "register_serializable"]
