"""What is Flax's own: reference Flax param names, init, pytrees under jit, dropout keys, cache
buffers under jit, computation vs storage dtype, msgpack folders.

Every model behaviour shared by the backends is in ``test_battery.py``."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict
from harness import (assert_outputs_close, config_for, make_inputs, make_labels, save_random_checkpoint, to_numpy_dict,
                     torch_outputs)

import roformer_torch
from roformer_core.checkpoint import Checkpoint
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
def test_fixed_cache_buffers_under_jit_equal_the_full_pass(variant, ckpts, jax_device):
    """One compiled step for every position (a traced cache_index); the eager cache is in the battery."""
    path, cfg, inputs, _, _ = ckpts.get("causal_lm", variant)
    model = MODEL_CLASSES["causal_lm"].from_pretrained(path)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    extra = {}
    if variant == "decoder_cross":
        extra = {"encoder_hidden_states": np.random.default_rng(1).standard_normal((2, 4, cfg.hidden_size),
                                                                                    dtype=np.float32)}
    full = np.asarray(model(ids, mask, **extra).logits)
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
    "ids shape": (lambda m, x: m(x["input_ids"][0]), InputError, r"input_ids must be \[batch, seq\]"),
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
    path, cfg, inputs, _, _ = ckpts.get("causal_lm")
    lm = MODEL_CLASSES["causal_lm"].from_pretrained(path)
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
