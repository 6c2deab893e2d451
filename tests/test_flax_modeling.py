"""The Flax backend: params spec, parity with roformer_torch, cache, generation, dtypes, checkpoints, errors."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict
from harness import (ALL_HEADS, OUTPUT_FIELDS, VARIANTS, assert_outputs_close, config_for, make_inputs, make_labels,
                     save_random_checkpoint, to_numpy_dict, torch_outputs)

import roformer_torch
from roformer_core import canonical_spec
from roformer_core.checkpoint import Checkpoint, to_canonical_name
from roformer_core.errors import CheckpointError, InputError, RoFormerError
from roformer_flax import MODEL_CLASSES, params_to_state_dict
from roformer_flax.modeling import MSGPACK_NAME


class Checkpoints:
    """Random PyTorch checkpoints and their reference outputs, made once per (head, variant)."""

    def __init__(self, root):
        self.root = root
        self.cache = {}

    def get(self, head, variant="default"):
        if (head, variant) not in self.cache:
            cfg = config_for(head, variant)
            path = save_random_checkpoint(self.root / f"{head}-{variant}", cfg, head)
            inputs = make_inputs(cfg, head)
            labels = make_labels(cfg, head, inputs)
            self.cache[head, variant] = (path, cfg, inputs, labels, torch_outputs(path, head, inputs, labels))
        return self.cache[head, variant]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return Checkpoints(tmp_path_factory.mktemp("flax-ckpts"))


def _flat_names(params):
    return {"/".join(p) for p in flatten_dict(params)}


# -- the params pytree --------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head", ALL_HEADS)
def test_params_equal_canonical_spec(head, variant):
    cfg = config_for(head, variant)
    model = MODEL_CLASSES[head](cfg, _do_init=False)
    got = {}
    for path, leaf in flatten_dict(model.abstract_params()).items():
        name, transpose = to_canonical_name(path)
        assert name not in got, f"two params map to {name}"
        got[name] = tuple(leaf.shape[::-1]) if transpose else tuple(leaf.shape)
    assert got == canonical_spec(cfg, head)


def test_params_use_reference_flax_names():
    names = _flat_names(MODEL_CLASSES["masked_lm"](config_for("masked_lm"), _do_init=False).abstract_params())
    for want in ("roformer/embeddings/word_embeddings/embedding", "roformer/embeddings/token_type_embeddings/embedding",
                 "roformer/embeddings/LayerNorm/scale", "roformer/encoder/layer/0/attention/self/query/kernel",
                 "roformer/encoder/layer/1/attention/output/dense/bias",
                 "roformer/encoder/layer/0/attention/output/LayerNorm/scale",
                 "roformer/encoder/layer/0/intermediate/dense/kernel", "roformer/encoder/layer/0/output/LayerNorm/bias",
                 "cls/predictions/transform/dense/kernel", "cls/predictions/transform/LayerNorm/scale",
                 "cls/predictions/bias"):
        assert want in names
    assert not [n for n in names if "layer_" in n]
    bare = _flat_names(MODEL_CLASSES["model"](config_for("model"), _do_init=False).abstract_params())
    assert "embeddings/word_embeddings/embedding" in bare and not [n for n in bare if n.startswith("roformer/")]
    cross = _flat_names(MODEL_CLASSES["causal_lm"](config_for("causal_lm", "decoder_cross"),
                                                   _do_init=False).abstract_params())
    assert "roformer/encoder/layer/0/crossattention/self/key/kernel" in cross
    project = _flat_names(MODEL_CLASSES["model"](config_for("model", "embedding_size"),
                                                 _do_init=False).abstract_params())
    assert "embeddings_project/kernel" in project


def test_init_weights_follow_the_reference():
    cfg = config_for("masked_lm")
    params = MODEL_CLASSES["masked_lm"].from_config(cfg, seed=3).params
    emb = np.asarray(params["roformer"]["embeddings"]["word_embeddings"]["embedding"])
    assert not emb[cfg.pad_token_id].any() and emb[cfg.pad_token_id + 1].any()
    query = params["roformer"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]
    assert not np.asarray(query["bias"]).any()
    assert abs(float(np.std(query["kernel"])) - cfg.initializer_range) < 0.3 * cfg.initializer_range
    ln = params["roformer"]["embeddings"]["LayerNorm"]
    assert (np.asarray(ln["scale"]) == 1).all() and not np.asarray(ln["bias"]).any()
    other = MODEL_CLASSES["masked_lm"].from_config(cfg, seed=4).params["roformer"]["encoder"]["layer"]["0"]
    assert not np.array_equal(query["kernel"], other["attention"]["self"]["query"]["kernel"])


# -- parity with PyTorch --------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head", ALL_HEADS)
def test_parity_with_torch(head, variant, ckpts, jax_device):
    """Every output (loss, logits, hidden_states, attentions, cache) within 1e-5, padding and token types
    included; then the fast attention path (no weights asked for) against the same numbers."""
    path, cfg, inputs, labels, want = ckpts.get(head, variant)
    model = MODEL_CLASSES[head].from_pretrained(path)
    got = to_numpy_dict(model(**inputs, **labels, output_hidden_states=True, output_attentions=True))
    assert_outputs_close(got, want)
    fast = to_numpy_dict(model(**inputs))
    assert_outputs_close(fast, want, keys=OUTPUT_FIELDS[head])


@pytest.mark.parametrize("head", ["model", "causal_lm"])
def test_cross_attention_parity_with_torch(head, ckpts):
    path, cfg, inputs, labels, _ = ckpts.get(head, "decoder_cross")
    rng = np.random.default_rng(5)
    encoder = {"encoder_hidden_states": rng.standard_normal((2, 5, cfg.hidden_size)).astype(np.float32),
               "encoder_attention_mask": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}
    want = torch_outputs(path, head, inputs, labels, **{k: torch.as_tensor(v) for k, v in encoder.items()})
    assert any(k.startswith("cross_attentions") for k in want)
    got = MODEL_CLASSES[head].from_pretrained(path)(**inputs, **labels, **encoder, output_hidden_states=True,
                                                    output_attentions=True)
    assert_outputs_close(to_numpy_dict(got), want)


def test_sequences_longer_than_max_positions(ckpts):
    path, cfg, _, _, _ = ckpts.get("model", "rotary_value")
    inputs = make_inputs(cfg, "model", seq=cfg.max_position_embeddings + 17)
    want = torch_outputs(path, "model", inputs)
    got = MODEL_CLASSES["model"].from_pretrained(path)(**inputs, output_hidden_states=True, output_attentions=True)
    assert_outputs_close(to_numpy_dict(got), want)


def test_head_mask_and_inputs_embeds_parity(ckpts):
    path, cfg, inputs, _, _ = ckpts.get("model")
    head_mask = np.ones((cfg.num_hidden_layers, cfg.num_attention_heads), np.float32)
    head_mask[0, 1] = head_mask[1, 3] = 0
    want = torch_outputs(path, "model", inputs, head_mask=torch.as_tensor(head_mask))
    model = MODEL_CLASSES["model"].from_pretrained(path)
    got = to_numpy_dict(model(**inputs, head_mask=head_mask, output_hidden_states=True, output_attentions=True))
    assert_outputs_close(got, want)
    assert not np.asarray(got["attentions.0"])[:, 1].any()
    embeds = model.params["embeddings"]["word_embeddings"]["embedding"][inputs["input_ids"]]
    by_embeds = model(None, inputs["attention_mask"], inputs["token_type_ids"], inputs_embeds=embeds)
    np.testing.assert_allclose(by_embeds.last_hidden_state, model(**inputs).last_hidden_state, atol=1e-6)


@pytest.mark.parametrize("problem", ["regression", "multi_label_classification"])
def test_classification_losses_match_torch(problem, tmp_path):
    num_labels = 1 if problem == "regression" else 3
    cfg = config_for("sequence_classification").replace(problem_type=problem, num_labels=num_labels)
    path = save_random_checkpoint(tmp_path, cfg, "sequence_classification")
    inputs = make_inputs(cfg, "sequence_classification")
    labels = {"labels": np.random.default_rng(2).random((2, num_labels)).astype(np.float32)}
    want = torch_outputs(path, "sequence_classification", inputs, labels)
    got = MODEL_CLASSES["sequence_classification"].from_pretrained(path)(**inputs, **labels)
    assert_outputs_close(to_numpy_dict(got), want, keys=["loss", "logits"])


def test_prediction_mask_selects_positions(ckpts):
    path, cfg, inputs, labels, want = ckpts.get("masked_lm")
    model = MODEL_CLASSES["masked_lm"].from_pretrained(path)
    mask = inputs["attention_mask"].astype(bool) & (np.arange(7) % 2 == 0)
    out = model(**inputs, prediction_mask=mask)
    np.testing.assert_allclose(out.logits, want["logits"][mask], atol=1e-5)


def test_outputs_are_pytrees_under_jit(ckpts):
    path, cfg, inputs, _, want = ckpts.get("masked_lm")
    model = MODEL_CLASSES["masked_lm"].from_pretrained(path)
    fn = jax.jit(lambda p, ids, mask, types: model.module.apply({"params": p}, ids, mask, types,
                                                                 output_hidden_states=True))
    out = fn(model.params, inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
    assert type(out).__name__ == "MaskedLMOutput"
    assert_outputs_close(to_numpy_dict(out), want, keys=["logits", "hidden_states.2"])
    as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and np.allclose(as_tuple[0], want["logits"], atol=1e-5)


def test_dropout_follows_train_and_the_key(ckpts):
    path, cfg, inputs, _, want = ckpts.get("masked_lm")
    model = MODEL_CLASSES["masked_lm"].from_pretrained(path, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    np.testing.assert_allclose(model(**inputs).logits, want["logits"], atol=1e-5)  # train=False: no dropout
    a, b, a2 = (np.asarray(model(**inputs, train=True, dropout_rng=jax.random.PRNGKey(k)).logits) for k in (1, 2, 1))
    np.testing.assert_array_equal(a, a2)
    assert np.abs(a - b).max() > 1e-2 and np.abs(a - want["logits"]).max() > 1e-2


# -- decoding -------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["default", "rotary_value", "decoder_cross"])
def test_cache_incremental_equals_full_pass(variant, ckpts, jax_device):
    path, cfg, inputs, _, _ = ckpts.get("causal_lm", variant)
    model = MODEL_CLASSES["causal_lm"].from_pretrained(path)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    extra = {}
    if variant == "decoder_cross":
        extra = {"encoder_hidden_states": np.random.default_rng(1).standard_normal((2, 4, cfg.hidden_size),
                                                                                    dtype=np.float32)}
    full = np.asarray(model(ids, mask, **extra).logits)
    # a growing cache, eagerly
    out = model(ids[:, :5], mask[:, :5], **extra)
    past, steps = out.past_key_values, [np.asarray(out.logits)]
    for t in range(5, ids.shape[1]):
        out = model(ids[:, t:t + 1], mask[:, :t + 1], past_key_values=past, **extra)
        past = out.past_key_values
        steps.append(np.asarray(out.logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
    # fixed buffers with a traced cache_index: one compiled step for every position
    step = jax.jit(lambda p, i, m, cache, index: model(i, m, params=p, past_key_values=cache, cache_index=index,
                                                       **extra))
    cache, got = model.init_cache(2, ids.shape[1]), []
    padded = np.zeros_like(mask)
    for t in range(ids.shape[1]):
        padded[:, t] = mask[:, t]
        out = step(model.params, ids[:, t:t + 1], padded, cache, jnp.asarray(t))
        cache = out.past_key_values
        got.append(np.asarray(out.logits))
    np.testing.assert_allclose(np.concatenate(got, axis=1), full, atol=1e-5)


def test_generate_matches_torch(ckpts):
    path, cfg, inputs, _, _ = ckpts.get("causal_lm")
    ids, mask = inputs["input_ids"][:, :5], inputs["attention_mask"][:, :5].copy()
    mask[1, 3:] = 0
    torch_model = roformer_torch.MODEL_CLASSES["causal_lm"].from_pretrained(path)
    model = MODEL_CLASSES["causal_lm"].from_pretrained(path)
    for kwargs in ({}, {"do_sample": True, "top_k": 5, "seed": 3}):
        want = torch_model.generate(torch.as_tensor(ids), torch.as_tensor(mask), max_new_tokens=6, **kwargs)
        got = model.generate(ids, mask, max_new_tokens=6, **kwargs)
        assert got.shape == (2, 11)
        np.testing.assert_array_equal(np.asarray(got), want.numpy())


# -- dtypes and checkpoints -------------------------------------------------------------------
def test_save_pretrained_loads_in_torch_bit_exactly(tmp_path, ckpts):
    path, cfg, inputs, labels, want = ckpts.get("question_answering")
    model = MODEL_CLASSES["question_answering"].from_pretrained(path)
    torch_state = roformer_torch.MODEL_CLASSES["question_answering"].from_pretrained(path).state_dict()
    ours = params_to_state_dict(model.params, cfg, "question_answering")
    assert list(ours) == list(canonical_spec(cfg, "question_answering"))
    for name, array in ours.items():  # torch -> flax is exact
        np.testing.assert_array_equal(array, torch_state[name].numpy(), err_msg=name)
    model.save_pretrained(tmp_path / "out")
    back = roformer_torch.MODEL_CLASSES["question_answering"].from_pretrained(tmp_path / "out").state_dict()
    for name, array in ours.items():  # flax -> torch is exact
        np.testing.assert_array_equal(back[name].numpy(), array, err_msg=name)


def test_bfloat16(tmp_path, ckpts):
    path, cfg, inputs, _, want = ckpts.get("masked_lm")
    half = MODEL_CLASSES["masked_lm"].from_pretrained(path, dtype=jnp.bfloat16)
    assert jax.tree.leaves(half.params)[0].dtype == jnp.float32  # computation dtype only
    logits = half(**inputs).logits
    assert logits.dtype == jnp.bfloat16
    ref = want["logits"]
    assert np.abs(np.asarray(logits, np.float32) - ref).max() <= 0.05 * np.abs(ref).max() + 0.05
    # bf16 storage: saved as BF16, read back by torch bit for bit, and by us
    stored = MODEL_CLASSES["masked_lm"].from_pretrained(path, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(stored.params)} == {jnp.dtype(jnp.bfloat16)}
    stored.save_pretrained(tmp_path / "bf16")
    ckpt = Checkpoint(tmp_path / "bf16")
    assert {ckpt.dtype(n) for n in ckpt.names()} == {"BF16"}
    torch_state = roformer_torch.MODEL_CLASSES["masked_lm"].from_pretrained(tmp_path / "bf16").state_dict()
    ours = params_to_state_dict(stored.params, cfg, "masked_lm")
    for name, array in ours.items():
        np.testing.assert_array_equal(torch_state[name].view(torch.int16).numpy(), array.view(np.int16), err_msg=name)
    again = MODEL_CLASSES["masked_lm"].from_pretrained(tmp_path / "bf16", dtype=jnp.bfloat16)  # param_dtype: the file
    assert jax.tree.leaves(again.params)[0].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(again(**inputs).logits, np.float32),
                                  np.asarray(stored(**inputs).logits, np.float32))


def test_bare_checkpoint_into_head_and_back(tmp_path, ckpts, caplog):
    path, cfg, inputs, _, want = ckpts.get("model")
    with caplog.at_level("WARNING", logger="roformer"):
        qa = MODEL_CLASSES["question_answering"].from_pretrained(path, seed=1)
    assert "qa_outputs.weight" in caplog.text
    assert np.asarray(qa.params["qa_outputs"]["kernel"]).std() > 0
    hidden = qa.module.apply({"params": qa.params}, inputs["input_ids"], inputs["attention_mask"],
                             inputs["token_type_ids"], output_hidden_states=True).hidden_states[-1]
    np.testing.assert_allclose(hidden, want["last_hidden_state"], atol=1e-5)
    qa.save_pretrained(tmp_path / "qa")
    bare = MODEL_CLASSES["model"].from_pretrained(tmp_path / "qa")
    np.testing.assert_allclose(bare(**inputs).last_hidden_state, want["last_hidden_state"], atol=1e-5)


def test_flax_msgpack_folder_loads(tmp_path, ckpts):
    path, cfg, inputs, labels, want = ckpts.get("token_classification")
    model = MODEL_CLASSES["token_classification"].from_pretrained(path)
    model.save_pretrained(tmp_path / "both", flax_msgpack=True)
    only = tmp_path / "msgpack-only"
    only.mkdir()
    for name in ("config.json", MSGPACK_NAME):
        shutil.copy(tmp_path / "both" / name, only / name)
    again = MODEL_CLASSES["token_classification"].from_pretrained(only)
    assert_outputs_close(to_numpy_dict(again(**inputs, **labels)), want, keys=["loss", "logits"])
    model.save_pretrained(tmp_path / "both")  # no msgpack asked for: a stale one must not stay behind
    assert sorted(os.listdir(tmp_path / "both")) == ["config.json", "model.safetensors"]


# -- bad input ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(ckpts):
    path, cfg, inputs, _, _ = ckpts.get("masked_lm")
    return MODEL_CLASSES["masked_lm"].from_pretrained(path), inputs


BAD_CALLS = {
    "id too large": (lambda m, x: m(x["input_ids"] + 1000), InputError, "input_ids holds ids up to"),
    "float ids": (lambda m, x: m(x["input_ids"].astype(np.float32)), InputError, "must hold integers"),
    "token type": (lambda m, x: m(x["input_ids"], token_type_ids=x["token_type_ids"] + 5), InputError,
                   "token_type_ids holds ids up to"),
    "mask shape": (lambda m, x: m(x["input_ids"], x["attention_mask"][:, :3]), InputError, "attention_mask has shape"),
    "ids shape": (lambda m, x: m(x["input_ids"][0]), InputError, r"input_ids must be \[batch, seq\]"),
    "no ids": (lambda m, x: m(None), InputError, "give input_ids or inputs_embeds"),
    "train without rng": (lambda m, x: MODEL_CLASSES["masked_lm"](m.config.replace(hidden_dropout_prob=0.1))(
        x["input_ids"], train=True), InputError, "dropout_rng"),
    "save replicated": (lambda m, x: m.save_pretrained("/nonexistent/never-written", params=jax.tree.map(
        lambda a: jnp.stack([a, a]), m.params)), CheckpointError, "unreplicate"),
    "missing checkpoint": (lambda m, x: MODEL_CLASSES["model"].from_pretrained("/nonexistent/roformer"),
                           CheckpointError, "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_gives_one_clear_error(case, small):
    call, error, message = BAD_CALLS[case]
    with pytest.raises(error, match=message) as info:
        call(*small)
    assert isinstance(info.value, RoFormerError)


def test_bad_input_other_heads(tmp_path, ckpts):
    mc_path, _, mc_inputs, _, _ = ckpts.get("multiple_choice")
    with pytest.raises(InputError, match=r"\[batch, num_choices, seq\]"):
        MODEL_CLASSES["multiple_choice"].from_pretrained(mc_path)(mc_inputs["input_ids"][:, 0])
    path, cfg, inputs, _, _ = ckpts.get("causal_lm")
    lm = MODEL_CLASSES["causal_lm"].from_pretrained(path)
    with pytest.raises(InputError, match="no cross-attention"):
        lm(inputs["input_ids"], encoder_hidden_states=np.zeros((2, 3, cfg.hidden_size), np.float32))
    with pytest.raises(InputError, match="cache holds 4 positions"):
        lm(inputs["input_ids"][:, :2], past_key_values=lm.init_cache(2, 4), cache_index=3)
    with pytest.raises(InputError, match="integer array"):
        lm.generate(inputs["input_ids"].astype(np.float32))
    with pytest.raises(CheckpointError, match="does not fit"):
        MODEL_CLASSES["causal_lm"].from_pretrained(path, intermediate_size=40)
    (tmp_path / "bad").mkdir()
    shutil.copy(os.path.join(path, "config.json"), tmp_path / "bad" / "config.json")
    (tmp_path / "bad" / MSGPACK_NAME).write_bytes(b"not msgpack")
    with pytest.raises(CheckpointError, match="not a readable Flax msgpack"):
        MODEL_CLASSES["causal_lm"].from_pretrained(tmp_path / "bad")
