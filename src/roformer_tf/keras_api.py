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
- ``fit``/``evaluate`` work under ``tf.distribute.MultiWorkerMirroredStrategy``, which Keras 3
  does not support on its own (see :meth:`KerasModelAPI._maybe_symbolic_build`); a worker that
  dies or stops answering ends them in the others with one ``DistributedError`` line;
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
import re

import keras
import numpy as np
import optree
import tensorflow as tf

from roformer_core.config import RoFormerConfig
from roformer_core.errors import DistributedError, InputError
from roformer_core.heads import ARRAY_ARGUMENTS, HEAD_TABLE
from roformer_core.inputs import MASKED_INPUTS, ArrayFacts, check_masked_inputs, validate_inputs
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
        return {k: np.asarray(v) if (k in ARRAY_ARGUMENTS or k in MASKED_INPUTS) and isinstance(v, (list, tuple))
                else v for k, v in given.items()}

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
                 if value is not None and (name in ARRAY_ARGUMENTS and name != "head_mask")}
        if arguments.get("inputs_embeds") is not None:
            facts["inputs_embeds"] = ArrayFacts(_static_shape(arguments["inputs_embeds"]), False)
        past = arguments.get("past_key_values")
        past_length = 0 if past is None else _static_shape(past[0][0])[2]
        validate_inputs(self.config, self.head, facts, past_length, arguments.get("encoder_hidden_states") is not None)
        _check_masked_inputs(self.config, arguments)

    # -- Keras training: compile() without a loss trains on the head's own loss ------------------
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The loss given to ``compile()`` on the head's prediction, or else the head's own loss
        (the one the model computed already when the labels came in the features dict)."""
        prediction = self._prediction(y_pred)
        if self.loss is not None:
            return super().compute_loss(x, self._labels(x, y), prediction, sample_weight, training)
        if sample_weight is not None:
            raise InputError("sample weights need a loss given to compile(); the head's own loss takes none")
        own = y_pred.loss if y is None and isinstance(y_pred, ModelOutput) and "loss" in y_pred else None
        loss = own if own is not None else self.head_loss(prediction, self._labels(x, y))
        if self.losses:
            loss = loss + tf.add_n([tf.cast(tf.reduce_sum(extra), loss.dtype) for extra in self.losses])
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, self._labels(x, y), self._prediction(y_pred), sample_weight)

    # -- several workers: Keras 3's fit under MultiWorkerMirroredStrategy ------------------------
    # Keras 3.15 fails twice with several workers (keras-team/keras#20585, #20329): before the
    # first step it reduces a whole batch dict of PerReplica values in one strategy.reduce call
    # ("Attempt to convert a value ({'input_ids': PerReplica...") only to learn the input shapes;
    # and after each step it reduces the scalar logs with strategy.reduce("MEAN", v, axis=0)
    # ("Invalid reduction dimension 0 for input with 0 dimensions"). The two methods below go
    # around both, only when several workers run; everything else is Keras' own.
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras builds the model from a first batch; with several workers that batch is this
        worker's own local values (all it needs are shapes), not a cross-worker reduction."""
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and _multi_worker(strategy):
            for _, _, batches in iterator:
                data_batch = _local_values(next(batches), strategy)
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, data):
        """Keras' step; with several workers each log value gets the axis Keras' cross-worker mean
        reduces over, so every worker logs the mean over all replicas."""
        return _with_replica_axis(super().train_step(data), self.distribute_strategy)

    def test_step(self, data):
        """Keras' evaluation step, with the logs shaped like :meth:`train_step`'s."""
        return _with_replica_axis(super().test_step(data), self.distribute_strategy)

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
        """``y`` (a tensor, or for QA a (start, end) pair or dict), or else the label entries of ``x``
        (``masked_labels`` when ``x`` has ``masked_positions``)."""
        names = ("masked_labels",) if _masked(x) else HEAD_TABLE[self.head].label_keys
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

    # -- the data boundary: every batch checked on the host before a compiled step sees it ---------
    # In fit/evaluate/predict the model runs traced (as XLA with jit_compile=True), where ids are not
    # values: an id outside the vocabulary gathers garbage or NaN without an error, id -1 reads the
    # last row, an out-of-range label fails deep in a kernel. So data is checked where it enters,
    # with roformer_core's checks: arrays once, up front; a tf.data.Dataset in a host-side map; a
    # generator as it yields; and a check that failed inside TensorFlow's input pipeline comes out
    # as the one InputError it raised. (A keras.utils.PyDataset is not checked here.)
    def fit(self, *args, **kwargs):
        """Keras' ``fit``, its data and validation data checked batch by batch on the way in:
        a bad batch is one :class:`InputError`, never a compiled step on bad ids.

        Example:
            >>> from roformer_tf import RoFormerConfig, RoFormerForMaskedLM
            >>> model = RoFormerForMaskedLM(RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
            ...                                            num_attention_heads=2, intermediate_size=16))
            >>> model.compile(optimizer="sgd", jit_compile=True)
            >>> batch = {"input_ids": [[2, 5, 3]], "labels": [[-100, 12, -100]]}
            >>> model.fit(tf.data.Dataset.from_tensors(batch), verbose=0, shuffle=False)
            Traceback (most recent call last):
            ...
            roformer_core.errors.InputError: labels holds 12, outside [0, 10) (vocab_size = 10); -100 marks ...
        """
        return self._checked_run(super().fit, args, kwargs, ("x", "validation_data"))

    def evaluate(self, *args, **kwargs):
        """Keras' ``evaluate``, its data checked like :meth:`fit`'s."""
        return self._checked_run(super().evaluate, args, kwargs, ("x",))

    def predict(self, *args, **kwargs):
        """Keras' ``predict``, its data checked like :meth:`fit`'s."""
        return self._checked_run(super().predict, args, kwargs, ("x",))

    def train_on_batch(self, *args, **kwargs):
        """Keras' ``train_on_batch``, the batch checked first."""
        return self._checked_run(super().train_on_batch, args, kwargs, ("x",))

    def test_on_batch(self, *args, **kwargs):
        """Keras' ``test_on_batch``, the batch checked first."""
        return self._checked_run(super().test_on_batch, args, kwargs, ("x",))

    def predict_on_batch(self, *args, **kwargs):
        """Keras' ``predict_on_batch``, the batch checked first."""
        return self._checked_run(super().predict_on_batch, args, kwargs, ("x",))

    def _checked_run(self, method, args, kwargs, data_names):
        if kwargs.get("_use_cached_eval_dataset"):  # fit's validation pass: fit checked that data
            return method(*args, **kwargs)
        bound = inspect.signature(method).bind(*args, **kwargs)
        values, failures = bound.arguments, []
        for name in data_names:
            data = values.get(name)
            if isinstance(data, (tf.data.Dataset, collections.abc.Generator)):
                values[name] = _checked_stream(data, self._check_element, failures)
            elif isinstance(data, (np.ndarray, tf.Tensor, list, tuple, collections.abc.Mapping)):
                self._check_batch(data, values.get("y")) if name == "x" else self._check_element(data)
        try:
            return method(*bound.args, **bound.kwargs)
        except tf.errors.OpError as error:
            found = next((f for f in reversed(failures) if f in str(error.message)), None)
            if found is not None:
                raise InputError(found) from None
            lost = _lost_worker(error, self.distribute_strategy)
            if lost is None:
                raise
            raise DistributedError(lost) from None

    def _check_element(self, element) -> None:
        """Check one element of a dataset: ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(element)
        self._check_batch(x, y)

    def _check_batch(self, x, y=None) -> None:
        """:meth:`check_inputs` on features ``x`` (any input form) and, when given, labels ``y``."""
        arguments = self._collect_arguments((x,), {})
        self.check_inputs(arguments)
        names = ("masked_labels",) if arguments.get("masked_positions") is not None \
            else HEAD_TABLE[self.head].label_keys
        if y is None or not names:
            return
        if isinstance(y, collections.abc.Mapping):
            labels = {n: y[n] for n in names if n in y}
        elif len(names) == 1:
            labels = {names[0]: y}
        else:
            labels = dict(zip(names, y)) if isinstance(y, (list, tuple)) else {}
        self.check_inputs({**arguments, **{k: np.asarray(v) if isinstance(v, (list, tuple)) else v
                                           for k, v in labels.items()}})

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
    def from_config(cls, config, dtype=None, add_pooling_layer=None):
        """Keras' deserialization hook: the model a :meth:`get_config` dict describes (``.keras`` files,
        ``keras.models.clone_model``), with that name, dtype policy and trainable flag.

        A ``RoFormerConfig`` (or a ``config.json`` dict) is still taken, with ``dtype``, as before
        ``from_roformer_config`` existed; new code building a model from a config calls that.
        ``add_pooling_layer`` (None: as the config says) adds or drops the pooler.

        Example:
            >>> from roformer_tf import RoFormerConfig, RoFormerModel
            >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
            ...                      num_attention_heads=2, intermediate_size=16)
            >>> RoFormerModel.from_config(RoFormerModel(cfg, name="encoder").get_config()).name
            'encoder'
        """
        if isinstance(config, RoFormerConfig):
            return cls.from_roformer_config(config, dtype=dtype, add_pooling_layer=add_pooling_layer)
        keras_config = dict(config)
        if "config" not in keras_config:  # a config.json dictionary
            return cls.from_roformer_config(RoFormerConfig.from_dict(keras_config), dtype=dtype,
                                            add_pooling_layer=add_pooling_layer)
        return cls(RoFormerConfig.from_dict(keras_config.pop("config")), add_pooling_layer=add_pooling_layer,
                   **keras_config)

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


def _multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._in_multi_worker_mode()


# A lost worker reaches the survivors as a multi-line "Graph execution error" with the op's creation stack,
# its cause in the last lines; these are the causes TensorFlow 2.21 gives (measured with 2 CPU workers). A
# dead worker misses the coordination service's heartbeats, and 10 s later every collective is aborted
# (UnavailableError "Collective ops is aborted by: ... The following tasks are unhealthy (stopped sending
# heartbeats): /job:worker/replica:0/task:1"). A dead chief hosts that service, so the others see it at their
# next collective ("... failed to connect to all addresses ... Connection refused"). A worker alive but stuck
# keeps its heartbeats, so only the strategy's CommunicationOptions(timeout_seconds=...) ends the wait
# (DeadlineExceededError "Collective has timed out during execution."); without it the others wait for ever.
_LOST_WORKER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                       tf.errors.AbortedError, tf.errors.InternalError, tf.errors.FailedPreconditionError)
_LOST_WORKER_SAYS = re.compile(r"collective ops is aborted|collective has timed out|unhealthy|heartbeat|"
                               r"failed to connect|connection (refused|reset|closed)|socket closed|is down|"
                               r"peer .*restarted|coordination service", re.IGNORECASE)


def _lost_worker(error, strategy) -> str | None:
    """The one-line message for ``error`` when it is a multi-worker run losing a worker, else None."""
    if not _multi_worker(strategy) or not isinstance(error, _LOST_WORKER_ERRORS):
        return None
    lines = [line.strip() for line in str(error.message).splitlines() if line.strip()]
    at = next((i for i, line in enumerate(lines) if _LOST_WORKER_SAYS.search(line)), None)
    if at is None:
        return None
    cause = lines[at]
    if cause.endswith(":") and at + 1 < len(lines):  # "... unhealthy (stopped sending heartbeats):" + the task
        cause = f"{cause} {lines[at + 1]}"
    if len(cause) > 240:
        cause = cause[:237] + "..."
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec()
    chiefs = spec.num_tasks("chief") if "chief" in spec.jobs else 0
    index = resolver.task_id + (chiefs if resolver.task_type == "worker" else 0)
    return (f"worker {index} of {chiefs + spec.num_tasks('worker')}: another worker of this run stopped or stopped "
            f"answering ({type(error).__name__}: {cause}); start every worker again: fit resumes from the last "
            "backup (BackupAndRestore)")


def _local_values(value, strategy):
    """``value`` with every distributed value replaced by this worker's first local one."""
    if isinstance(value, collections.abc.Mapping):
        return {k: _local_values(v, strategy) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_local_values(v, strategy) for v in value)
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _with_replica_axis(logs, strategy):
    if not _multi_worker(strategy):
        return logs
    return {k: tf.reshape(v, [1]) if isinstance(v, tf.Tensor) and v.shape.rank == 0 else v
            for k, v in logs.items()}


def _checked_stream(data, check, failures: list):
    """``data`` (a ``tf.data.Dataset`` or a generator) with ``check`` run on every element on the host;
    the message of a check that fails is kept in ``failures`` (TensorFlow wraps the error)."""

    def checked_on_host(element):
        try:
            check(element)
        except InputError as error:
            failures.append(str(error))
            raise

    if not isinstance(data, tf.data.Dataset):
        return (checked_on_host(element) or element for element in data)

    def checked(*element):
        element = element[0] if len(element) == 1 else element
        flat = tf.nest.flatten(element)
        if not all(isinstance(t, tf.Tensor) for t in flat):  # ragged or sparse parts: the model checks them
            return element

        def run(*arrays):
            checked_on_host(tf.nest.pack_sequence_as(element, list(arrays)))
            return arrays

        # the batch flows through the check (a control dependency alone is pruned by tf.data's optimiser)
        out = tf.numpy_function(run, flat, [t.dtype for t in flat], stateful=False, name="roformer_check_inputs")
        for value, tensor in zip(out, flat):
            value.set_shape(tensor.shape)
        return tf.nest.pack_sequence_as(element, list(out))

    return data.map(checked)


#: the masked-LM training inputs (``roformer_core.MaskedLMCollator``): gathered positions, their labels, weights


def _masked(x) -> bool:
    return isinstance(x, collections.abc.Mapping) and x.get("masked_positions") is not None


def _check_masked_inputs(config: RoFormerConfig, arguments: dict) -> None:
    """The masked-LM training inputs of a call (``roformer_core.inputs.check_masked_inputs``)."""
    facts = {k: _facts("labels" if k == "masked_labels" else k, arguments[k])  # -100 dropped, as for labels
             for k in MASKED_INPUTS if arguments.get(k) is not None}
    first = arguments.get("input_ids")
    shape = _static_shape(first if first is not None else arguments["inputs_embeds"])[:2] if facts else (None, None)
    check_masked_inputs(config, facts, tuple(shape), arguments.get("labels") is not None,
                        arguments.get("prediction_mask") is not None)


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
