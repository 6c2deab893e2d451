"""roformer_tf forward pass: canonical names, parity with roformer_torch, cache, inputs, loading and saving.

Every numeric check compares with the PyTorch backend on the same canonical checkpoint
(tests/harness.py), which is itself checked against the reference implementation.
"""

import logging
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

import keras  # noqa: E402
from harness import (ALL_HEADS, OUTPUT_FIELDS, VARIANTS, assert_outputs_close, config_for,  # noqa: E402
                     make_inputs, make_labels, save_random_checkpoint, to_numpy_dict, torch_outputs)

import roformer_tf  # noqa: E402
from roformer_core import RoFormerError, canonical_spec  # noqa: E402
from roformer_core.checkpoint import Checkpoint  # noqa: E402
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


def _cross_inputs(config, batch=2, enc_len=5, seed=3):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, enc_len), np.int64)
    mask[-1, enc_len - 2:] = 0
    return {"encoder_hidden_states": rng.standard_normal((batch, enc_len, config.hidden_size)).astype(np.float32),
            "encoder_attention_mask": mask}


def _torch_kwargs(kwargs):
    return {k: torch.as_tensor(v) for k, v in kwargs.items()}


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


# -- parity with roformer_torch -------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head", ALL_HEADS)
def test_parity_with_torch(head, variant, checkpoint, tf_device):
    folder = checkpoint(head, variant)
    config = config_for(head, variant)
    inputs = make_inputs(config, head)
    labels = make_labels(config, head, inputs)
    extra = _cross_inputs(config) if config.add_cross_attention and head in ("model", "causal_lm") else {}
    want = torch_outputs(folder, head, inputs, labels, **_torch_kwargs(extra))
    with tf_device.scope():
        model = MODEL_CLASSES[head].from_pretrained(folder)
    out = tf_device.run(lambda: model(**inputs, **labels, **extra, output_hidden_states=True,
                                      output_attentions=True).to_dict())
    got = to_numpy_dict(out)
    assert set(OUTPUT_FIELDS[head]) <= set(want)
    assert any(k.startswith("attentions.") for k in want) and any(k.startswith("hidden_states.") for k in want)
    assert_outputs_close(got, want)
    assert sorted(got) == sorted(want)


def test_head_mask_and_inputs_embeds_match_torch(checkpoint):
    head = "masked_lm"
    folder, config = checkpoint(head), config_for(head)
    inputs = make_inputs(config, head)
    head_mask = np.array([[1.0, 0.0, 1.0, 0.5], [0.0, 1.0, 1.0, 1.0]], np.float32)
    want = torch_outputs(folder, head, inputs, head_mask=torch.as_tensor(head_mask))
    model = MODEL_CLASSES[head].from_pretrained(folder)
    assert_outputs_close(to_numpy_dict(model(**inputs, head_mask=head_mask, output_hidden_states=True,
                                             output_attentions=True)), want)

    embeds = model.roformer.embeddings.word_embeddings(inputs["input_ids"]).numpy()
    by_embeds = {"inputs_embeds": embeds, "attention_mask": inputs["attention_mask"],
                 "token_type_ids": inputs["token_type_ids"]}
    want = torch_outputs(folder, head, by_embeds)
    assert_outputs_close(to_numpy_dict(model(**by_embeds, output_hidden_states=True, output_attentions=True)), want)


def test_prediction_mask_gives_logits_at_masked_positions(checkpoint):
    folder, config = checkpoint("masked_lm"), config_for("masked_lm")
    inputs = make_inputs(config, "masked_lm")
    model = MODEL_CLASSES["masked_lm"].from_pretrained(folder)
    where = inputs["input_ids"] % 3 == 0
    full = model(**inputs).logits.numpy()
    some = model(**inputs, prediction_mask=where).logits.numpy()
    assert some.shape == (where.sum(), config.vocab_size)
    np.testing.assert_allclose(some, full[where], atol=1e-5)


def test_sequences_longer_than_the_table_match_torch(checkpoint):
    """600 positions: past max_position_embeddings (64) and past the 512-row table, eager and XLA."""
    head = "masked_lm"
    folder, config = checkpoint(head), config_for(head)
    inputs = make_inputs(config, head, batch=1, seq=600)
    want = torch_outputs(folder, head, inputs)
    model = MODEL_CLASSES[head].from_pretrained(folder)
    assert_outputs_close({"logits": model(**inputs).logits.numpy()}, want, keys=["logits"])

    spec = tf.TensorSpec([None, None], tf.int64)  # the length is unknown while tracing

    @tf.function(input_signature=[spec, spec, spec], jit_compile=True)
    def serve(input_ids, attention_mask, token_type_ids):
        return model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    assert_outputs_close({"logits": serve(**inputs).numpy()}, want, keys=["logits"])


# -- decoder: cache and generation -------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["default", "rotary_value", "decoder_cross"])
def test_cache_incremental_equals_full_pass(variant, checkpoint):
    head = "causal_lm"
    config = config_for(head, variant)
    model = MODEL_CLASSES[head].from_pretrained(checkpoint(head, variant))
    inputs = make_inputs(config, head, seq=8)
    extra = _cross_inputs(config) if config.add_cross_attention else {}
    full = model(**inputs, **extra).logits.numpy()

    ids, mask, types = inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]
    out = model(ids[:, :4], mask[:, :4], types[:, :4], **extra, use_cache=True)
    steps, past = [out.logits.numpy()], out.past_key_values
    assert past[0][0].shape[2] == 4
    for t in range(4, 8):
        out = model(ids[:, t:t + 1], mask[:, :t + 1], types[:, t:t + 1], **extra, past_key_values=past,
                    use_cache=True)
        steps.append(out.logits.numpy())
        past = out.past_key_values
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_causal_mask_hides_the_future(checkpoint):
    model = MODEL_CLASSES["causal_lm"].from_pretrained(checkpoint("causal_lm"))
    ids = np.array([[5, 6, 7, 8, 9]])
    changed = ids.copy()
    changed[0, -1] = 10
    a, b = model(ids).logits.numpy(), model(changed).logits.numpy()
    np.testing.assert_allclose(a[:, :-1], b[:, :-1], atol=1e-6)
    assert np.abs(a[:, -1] - b[:, -1]).max() > 1e-4


def test_generate_matches_torch(checkpoint):
    folder = checkpoint("causal_lm")
    prompt = np.array([[5, 17, 3], [8, 2, 40]])
    tf_ids = MODEL_CLASSES["causal_lm"].from_pretrained(folder).generate(prompt, max_new_tokens=6).numpy()
    import roformer_torch

    torch_ids = roformer_torch.RoFormerForCausalLM.from_pretrained(folder).generate(
        torch.as_tensor(prompt), max_new_tokens=6).numpy()
    assert tf_ids.shape == (2, 9)
    np.testing.assert_array_equal(tf_ids, torch_ids)


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


@pytest.mark.parametrize("case", ["float ids", "mask shape", "token type shape", "no input_ids", "both ids and embeds",
                                  "id range", "unknown input", "cross without config", "choices rank",
                                  "float ids in graph"])
def test_bad_inputs_raise_one_clear_error(case):
    head = {"choices rank": "multiple_choice", "cross without config": "model"}.get(case, "masked_lm")
    config = config_for(head)
    model = MODEL_CLASSES[head](config)
    inputs = make_inputs(config, "masked_lm")
    ids = inputs["input_ids"]
    calls = {
        "float ids": (lambda: model(ids.astype(np.float32)), "input_ids must hold integers"),
        "mask shape": (lambda: model(ids, attention_mask=np.ones((2, 3))), "attention_mask has shape (2, 3)"),
        "token type shape": (lambda: model(ids, token_type_ids=np.zeros((1, 7), np.int64)), "token_type_ids has shape"),
        "no input_ids": (lambda: model(attention_mask=inputs["attention_mask"]), "give input_ids or inputs_embeds"),
        "both ids and embeds": (lambda: model(ids, inputs_embeds=np.zeros((2, 7, 32), np.float32)), "not both"),
        "id range": (lambda: model(ids + 200), "outside [0, 99)"),
        "unknown input": (lambda: model({"input_ids": ids, "start_positions": ids[:, 0]}), "no input start_positions"),
        "cross without config": (lambda: model(ids, encoder_hidden_states=np.zeros((2, 3, 32), np.float32)),
                                 "has no cross-attention"),
        "choices rank": (lambda: model(ids), "[batch, num_choices, seq]"),
        "float ids in graph": (lambda: tf.function(lambda x: model(x).logits, autograph=False)(
            tf.constant(ids, tf.float32)),
                               "input_ids must hold integers"),
    }
    call, message = calls[case]
    with pytest.raises(InputError) as err:
        call()
    assert message in str(err.value)
    assert isinstance(err.value, RoFormerError) and "Arguments received" not in str(err.value)


# -- loading and saving ----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["embedding_size", "untied"])
def test_save_pretrained_loads_bit_exactly_in_torch(variant, tmp_path):
    import roformer_torch

    config = config_for("masked_lm", "embedding_size") if variant == "embedding_size" \
        else config_for("masked_lm").replace(tie_word_embeddings=False)
    keras.utils.set_random_seed(7)
    model = MODEL_CLASSES["masked_lm"](config)
    for _, variable, _ in model.named_variables():  # no zeros/ones left for a mix-up to hide behind
        variable.assign(np.random.default_rng(len(variable.path)).standard_normal(variable.shape).astype(np.float32))
    model.save_pretrained(tmp_path)
    state = roformer_torch.RoFormerForMaskedLM.from_pretrained(tmp_path).state_dict()
    assert set(state) == set(canonical_spec(config, "masked_lm"))
    for name, variable, transpose in model.named_variables():
        array = variable.numpy()
        np.testing.assert_array_equal(state[name].numpy(), array.T if transpose else array, err_msg=name)
    again = MODEL_CLASSES["masked_lm"].from_pretrained(tmp_path)
    for (n1, v1, _), (n2, v2, _) in zip(model.named_variables(), again.named_variables()):
        assert n1 == n2 and np.array_equal(v1.numpy(), v2.numpy())


def test_bfloat16_checkpoint_keeps_its_bits(tmp_path):
    import roformer_torch

    config = config_for("sequence_classification")
    torch.manual_seed(0)
    roformer_torch.RoFormerForSequenceClassification(config).to(torch.bfloat16).save_pretrained(tmp_path / "pt")
    model = MODEL_CLASSES["sequence_classification"].from_pretrained(tmp_path / "pt")
    assert model.dtype_policy.name == "bfloat16" and model.weights[0].dtype == "bfloat16"
    assert np.isfinite(model(make_inputs(config, "sequence_classification")).logits.numpy().astype(np.float32)).all()
    model.save_pretrained(tmp_path / "tf")
    before, after = Checkpoint(tmp_path / "pt"), Checkpoint(tmp_path / "tf")
    assert sorted(before.names()) == sorted(after.names())
    for name in before.names():
        assert after.dtype(name) == "BF16"
        np.testing.assert_array_equal(before.get(name), after.get(name), err_msg=name)
    as_float = MODEL_CLASSES["sequence_classification"].from_pretrained(tmp_path / "pt", dtype="float32")
    assert as_float.weights[0].dtype == "float32"
    np.testing.assert_array_equal(as_float.weights[0].numpy(), model.weights[0].numpy().astype(np.float32))


def test_bare_checkpoint_into_a_head_warns(tmp_path, caplog, checkpoint):
    folder = checkpoint("model")
    with caplog.at_level(logging.WARNING, logger="roformer"):
        model = MODEL_CLASSES["question_answering"].from_pretrained(folder, num_labels=2)
    assert "qa_outputs.weight" in caplog.text and "newly initialised" in caplog.text
    bare = MODEL_CLASSES["model"].from_pretrained(folder)
    np.testing.assert_array_equal(model.roformer.embeddings.word_embeddings.embeddings.numpy(),
                                  bare.embeddings.word_embeddings.embeddings.numpy())


def test_reference_tf_names_are_aliases():
    for head, cls in MODEL_CLASSES.items():
        assert getattr(roformer_tf, "TF" + cls.__name__) is cls
    config = config_for("masked_lm")
    assert isinstance(roformer_tf.TFRoFormerForMaskedLM(config), roformer_tf.RoFormerPreTrainedModel)
