"""What is Keras's own: variable paths from layer names, the rotary table constant, the reference
TF input forms, functional wrapping, the training argument, the reference TF class aliases, the
variants' Keras layers (RMS norm, pooler, V2 head), the docstring examples; and the ``tf_device``
fixture ``test_tf_training.py`` shares.

Every model behaviour shared by the backends is in ``test_battery.py``; the variants against their
oracle are in ``test_variants.py``.
"""

import doctest
import importlib
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

import keras  # noqa: E402
from harness import ALL_HEADS, VARIANTS, config_for, make_inputs, save_random_checkpoint  # noqa: E402

import roformer_tf  # noqa: E402
from roformer_core import RoFormerError, canonical_spec  # noqa: E402
from roformer_core.errors import InputError  # noqa: E402
from roformer_core.rotary import rotary_sin_cos  # noqa: E402
from roformer_tf import MODEL_CLASSES  # noqa: E402
from roformer_tf.modeling import _RotaryTable  # noqa: E402


# -- devices: CPU always, GPU when TensorFlow sees one, TPU when a resolver is configured ------
class TFDevice:
    """Where a test builds and runs a model: a plain device, or a TPUStrategy."""

    def __init__(self, kind: str):
        self.kind = kind
        self.strategy = None
        if kind == "TPU":
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            self.strategy = tf.distribute.TPUStrategy(resolver)

    def scope(self):
        return self.strategy.scope() if self.strategy else tf.device(f"/{self.kind}:0")

    def run(self, fn):
        """``fn()`` on the device; on a TPU, compiled and run on the first replica's result."""
        if self.strategy is None:
            with self.scope():
                return fn()
        results = self.strategy.run(tf.function(fn))
        return tf.nest.map_structure(lambda r: self.strategy.experimental_local_results(r)[0], results)


def _device_kinds():
    kinds = ["CPU"]
    if tf.config.list_physical_devices("GPU"):
        kinds.append("GPU")
    if os.environ.get("TPU_NAME"):  # what TPUClusterResolver reads ("local" on a TPU VM)
        kinds.append("TPU")
    return kinds


@pytest.fixture(scope="module", params=_device_kinds())
def tf_device(request):
    """Every device TensorFlow has here; TF32 matmuls (GPU/TPU default) would miss 1e-5 parity."""
    previous = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    yield TFDevice(request.param)
    tf.config.experimental.enable_tensor_float_32_execution(previous)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """``checkpoint(head, variant)``: a random PyTorch checkpoint folder, made once per module."""
    made = {}

    def get(head, variant="default"):
        if (head, variant) not in made:
            folder = tmp_path_factory.mktemp(f"{head}-{variant}")
            made[head, variant] = save_random_checkpoint(folder, config_for(head, variant), head)
        return made[head, variant]

    return get


#: configurations beyond the battery's VARIANTS: untied embeddings, RoFormer-V2 (tied and not), a pooler
MORE = {
    "untied": dict(tie_word_embeddings=False),
    "v2": dict(norm_type="rms_norm", use_bias=False, hidden_act="relu"),
    "v2_untied": dict(norm_type="rms_norm", use_bias=False, tie_word_embeddings=False),
    "pooler": dict(add_pooling_layer=True, pooler_activation="linear"),
}


def _config(head, variant):
    return config_for(head, "default").replace(**MORE[variant]) if variant in MORE else config_for(head, variant)


# -- canonical names ----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS) + list(MORE))
@pytest.mark.parametrize("head", ALL_HEADS)
def test_variables_equal_canonical_spec(head, variant):
    config = _config(head, variant)
    model = MODEL_CLASSES[head](config)
    named = list(model.named_variables())
    shapes = {name: tuple(v.shape)[::-1] if transpose else tuple(v.shape) for name, v, transpose in named}
    assert shapes == canonical_spec(config, head)
    assert len(named) == len(shapes), "two variables map to one name"
    # every Keras weight, and nothing else, in the order of torch's named_parameters
    assert {id(v) for _, v, _ in named} == {id(w) for w in model.weights}
    import roformer_torch

    assert [n for n, _, _ in named] == [n for n, _ in roformer_torch.MODEL_CLASSES[head](config).named_parameters()]


def test_variable_paths_are_the_keras_layer_names():
    """Names come from ``name=`` (as in the reference TF classes), not from Python attributes: the
    attention's output block is ``output_block`` in Python (Keras owns ``Layer.output``), ``output`` in Keras."""
    config = config_for("masked_lm")
    model = MODEL_CLASSES["masked_lm"](config, name="mlm")
    paths = [w.path for w in model.weights]
    assert "mlm/roformer/encoder/layer_0/attention/output/dense/kernel" in paths
    assert "mlm/roformer/encoder/layer_1/output/LayerNorm/gamma" in paths
    assert "mlm/cls/predictions/bias" in paths and all(p.startswith("mlm/") for p in paths)
    assert model.roformer.encoder.layer[0].attention.output_block.name == "output"
    # the model's own name is dropped wherever it sits: an auto-numbered name inside an outer scope
    with keras.name_scope("outer"):
        inner = MODEL_CLASSES["masked_lm"](config)
    assert inner.weights[0].path.startswith("outer/ro_former_for_masked_lm")
    assert [n for n, _, _ in inner.named_variables()] == [n for n, _, _ in model.named_variables()]


def test_rotary_table_is_a_constant_and_exact():
    config = config_for("model")
    model = MODEL_CLASSES["model"](config)
    assert not any("rotary" in w.path or "embed_positions" in w.path for w in model.weights)
    table = _RotaryTable(512, config.head_dim)
    sin, cos = (t.numpy() for t in table.sin_cos(tf.range(0, 5000), tf.float32))
    want_sin, want_cos = rotary_sin_cos(5000, config.head_dim)
    # rows below the table size are the core table bit for bit; the rest are within float32 rounding
    assert np.array_equal(sin[:512], want_sin[:512]) and np.array_equal(cos[:512], want_cos[:512])
    assert np.abs(sin - want_sin).max() < 1e-6 and np.abs(cos - want_cos).max() < 1e-6


# -- input forms ---------------------------------------------------------------------------------
def test_input_forms_agree(checkpoint):
    config = config_for("masked_lm")
    model = MODEL_CLASSES["masked_lm"].from_pretrained(checkpoint("masked_lm"))
    inputs = make_inputs(config, "masked_lm")
    ids, mask, types = inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]
    want = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()
    forms = {
        "dict": model(inputs),
        "list": model([ids, mask, types]),
        "positional": model(ids, mask, types),
        "tensors": model({k: tf.constant(v) for k, v in inputs.items()}),
        "int32": model(ids.astype(np.int32), mask.astype(np.int32), types.astype(np.int32)),
        "python lists": model(input_ids=ids.tolist(), attention_mask=mask.tolist(), token_type_ids=types.tolist()),
        "tuple": model((ids, mask, types)),
    }
    for name, out in forms.items():
        np.testing.assert_allclose(out.logits.numpy(), want, atol=1e-6, err_msg=name)
    # a single tensor of input_ids: no mask, no token types
    alone = model(ids).logits.numpy()
    np.testing.assert_allclose(alone, model(input_ids=ids, attention_mask=np.ones_like(ids)).logits.numpy(),
                               atol=1e-6)
    # outputs by name, key and position; return_dict=False gives the tuple
    out = model(inputs)
    assert out.logits is out["logits"] is out[0]
    assert isinstance(model(inputs, return_dict=False), tuple)


def test_a_functional_keras_model_can_wrap_it(checkpoint):
    config = config_for("masked_lm")
    model = MODEL_CLASSES["masked_lm"].from_pretrained(checkpoint("masked_lm"))
    ids = keras.Input(shape=(None,), dtype="int32", name="input_ids")
    wrapped = keras.Model(ids, keras.layers.Softmax()(model(ids).logits))
    inputs = make_inputs(config, "masked_lm")["input_ids"]
    want = tf.nn.softmax(model(inputs).logits).numpy()
    np.testing.assert_allclose(wrapped(inputs).numpy(), want, atol=1e-6)


def test_training_argument_controls_dropout():
    config = config_for("masked_lm").replace(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    model = MODEL_CLASSES["masked_lm"](config)
    inputs = make_inputs(config, "masked_lm")
    a, b = model(inputs).logits.numpy(), model(inputs, training=False).logits.numpy()
    np.testing.assert_array_equal(a, b)
    c, d = model(inputs, training=True).logits.numpy(), model(dict(inputs, training=True)).logits.numpy()
    assert np.abs(c - a).max() > 1e-3 and np.abs(c - d).max() > 1e-3


@pytest.mark.parametrize("case", ["unknown input", "float ids in graph"])
def test_keras_input_forms_refuse_bad_input_in_one_line(case):
    """The Keras-only input forms; the shared bad-input cases are in the battery."""
    head = {"choices rank": "multiple_choice", "cross without config": "model"}.get(case, "masked_lm")
    config = config_for(head)
    model = MODEL_CLASSES[head](config)
    inputs = make_inputs(config, "masked_lm")
    ids = inputs["input_ids"]
    calls = {
        "unknown input": (lambda: model({"input_ids": ids, "start_positions": ids[:, 0]}), "no input start_positions"),
        "float ids in graph": (lambda: tf.function(lambda x: model(x).logits, autograph=False)(
            tf.constant(ids, tf.float32)),
                               "input_ids must hold integers"),
    }
    call, message = calls[case]
    with pytest.raises(InputError) as err:
        call()
    assert message in str(err.value)
    assert isinstance(err.value, RoFormerError) and "Arguments received" not in str(err.value)


# -- the RoFormer family's Keras layers ------------------------------------------------------------
def test_rms_norm_is_named_layer_norm_has_no_weights_and_sums_in_float32():
    from roformer_tf.modeling import RMSNorm

    config = _config("masked_lm", "v2")
    model = MODEL_CLASSES["masked_lm"](config, name="mlm")
    norm = model.roformer.encoder.layer[0].output_block.LayerNorm
    assert isinstance(norm, RMSNorm) and norm.name == "LayerNorm" and norm.eps == config.layer_norm_eps
    assert not any("LayerNorm" in w.path or w.path.endswith("/bias") for w in model.weights)
    # values whose squares overflow bfloat16's sum precision: the mean of squares is taken in float32
    x = np.random.default_rng(0).normal(0, 300, (2, 3, 64)).astype(np.float32)
    want = x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + config.layer_norm_eps)
    np.testing.assert_allclose(RMSNorm(config.layer_norm_eps)(x).numpy(), want, rtol=1e-6, atol=1e-6)
    half = RMSNorm(config.layer_norm_eps, dtype="mixed_bfloat16")(x)
    assert half.dtype == tf.bfloat16
    # only the input's and output's roundings to bfloat16 (8 significant bits each) remain
    np.testing.assert_allclose(tf.cast(half, tf.float32).numpy(), want, rtol=2 ** -7, atol=0)


def test_pooler_on_every_class_and_through_keras_files(tmp_path):
    for head, cls in MODEL_CLASSES.items():
        config = config_for(head)
        model = cls(config, add_pooling_layer=True, name="m")
        assert model.config.add_pooling_layer and not config.add_pooling_layer  # the caller's config is kept
        path = "m/" + ("" if head == "model" else "roformer/") + "pooler/dense/kernel"
        assert path in [w.path for w in model.weights]
        assert not any("pooler" in w.path for w in cls(config).weights)
    config = config_for("causal_lm").replace(pooler_activation="linear")
    cls = MODEL_CLASSES["causal_lm"]
    model = cls.from_config(config, add_pooling_layer=True)
    inputs = make_inputs(config, "causal_lm")
    out = model(inputs)
    pooler = model.roformer.pooler.dense
    # linear activation: pooler_output is exactly the dense layer on the first position
    first = model.roformer(inputs).last_hidden_state[:, 0]
    np.testing.assert_allclose(out.pooler_output.numpy(), pooler(first).numpy(), atol=1e-6)
    assert len(model(inputs, return_dict=False)) == 3  # logits, past_key_values, pooler_output
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.config.add_pooling_layer
    np.testing.assert_array_equal(loaded(inputs).pooler_output.numpy(), out.pooler_output.numpy())
    assert not hasattr(cls.from_config(model.get_config(), add_pooling_layer=False).roformer, "pooler")


def test_unilm_mask_in_graphs_of_unknown_shapes():
    """The UniLM mask from token types in a traced graph whose batch, length and cache length are
    unknown until run (the SavedModel / adapter graphs), as in the eager pass."""
    config = config_for("causal_lm").replace(unilm=True, add_pooling_layer=True)
    model = MODEL_CLASSES["causal_lm"](config)
    inputs = make_inputs(config, "causal_lm", seq=9)
    spec = tf.TensorSpec([None, None], tf.int32)
    full = tf.function(lambda i, m, t: model(i, m, t).logits, input_signature=[spec] * 3)
    args = [tf.constant(inputs[k], tf.int32) for k in ("input_ids", "attention_mask", "token_type_ids")]
    want = model(*args).logits.numpy()
    np.testing.assert_allclose(full(*args).numpy(), want, atol=1e-5)
    first = model(args[0][:, :5], args[1][:, :5], args[2][:, :5], use_cache=True)
    step = tf.function(lambda i, m, t, past: model(i, m, t, past_key_values=past, use_cache=True).logits,
                       input_signature=[spec] * 3 + [tf.nest.map_structure(
                           lambda x: tf.TensorSpec([None, x.shape[1], None, x.shape[3]], x.dtype),
                           first.past_key_values)])
    rest = step(args[0][:, 5:], args[1], args[2][:, 5:], first.past_key_values)
    np.testing.assert_allclose(rest.numpy(), want[:, 5:], atol=1e-5)


@pytest.mark.parametrize("name", ["roformer_tf", "roformer_tf.modeling", "roformer_tf.keras_api",
                                  "roformer_tf.adapter"])
def test_docstring_examples(name):
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(importlib.import_module(name), optionflags=flags)
    assert result.failed == 0 and result.attempted > 0, result


def test_reference_tf_names_are_aliases():
    for head, cls in MODEL_CLASSES.items():
        assert getattr(roformer_tf, "TF" + cls.__name__) is cls
    config = config_for("masked_lm")
    assert isinstance(roformer_tf.TFRoFormerForMaskedLM(config), roformer_tf.RoFormerPreTrainedModel)
