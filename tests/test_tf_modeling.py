"""What is Keras's own: variable paths from layer names, the rotary table constant, the reference
TF input forms, functional wrapping, the training argument, the reference TF class aliases.

Every model behaviour shared by the backends is in ``test_battery.py``.
"""


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


# -- canonical names ----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS) + ["untied"])
@pytest.mark.parametrize("head", ALL_HEADS)
def test_variables_equal_canonical_spec(head, variant):
    config = config_for(head, "default").replace(tie_word_embeddings=False) if variant == "untied" \
        else config_for(head, variant)
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


def test_reference_tf_names_are_aliases():
    for head, cls in MODEL_CLASSES.items():
        assert getattr(roformer_tf, "TF" + cls.__name__) is cls
    config = config_for("masked_lm")
    assert isinstance(roformer_tf.TFRoFormerForMaskedLM(config), roformer_tf.RoFormerPreTrainedModel)
