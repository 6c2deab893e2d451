"""roformer_core: config, rotary tables, safetensors I/O, canonical checkpoint rules."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from harness import TINY
from roformer_core import CheckpointError, ConfigError, RoFormerConfig, canonical_spec, plan_load, save_checkpoint
from roformer_core.checkpoint import HEADS, Checkpoint, to_canonical_name
from roformer_core.rotary import apply_rotary, rotary_sin_cos, sinusoidal_table
from roformer_core.safetensors_io import (SafetensorsReader, bf16_bits_to_float32, float32_to_bf16_bits,
                                          write_safetensors)


def test_core_imports_no_framework():
    code = ("import sys, roformer_core, roformer_core.checkpoint, roformer_core.generation, roformer_core.outputs; "
            "import roformer_core.rotary, roformer_core.safetensors_io, roformer_core.inputs; "
            "bad = [m for m in ('torch', 'tensorflow', 'jax', 'flax', 'keras', 'optax') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"roformer_core imported {out.stdout.strip()}"


# -- config ---------------------------------------------------------------------------------
def test_config_defaults_match_reference():
    import transformers

    ours, ref = RoFormerConfig().to_dict(), transformers.RoFormerConfig().to_dict()
    for key in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
                "max_position_embeddings", "type_vocab_size", "initializer_range", "layer_norm_eps",
                "pad_token_id", "rotary_value", "use_cache", "is_decoder", "add_cross_attention"):
        assert ours[key] == ref[key], key
    assert ours["model_type"] == "roformer"


def test_config_reads_reference_json_and_keeps_unknown_keys(tmp_path):
    import transformers

    transformers.RoFormerConfig(hidden_size=64, num_attention_heads=4, embedding_size=32,
                                id2label={0: "neg", 1: "pos"}).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["my_custom_key"] = {"nested": [1, 2]}
    (tmp_path / "config.json").write_text(json.dumps(data))
    cfg = RoFormerConfig.from_json_file(tmp_path)
    assert (cfg.hidden_size, cfg.embedding_size, cfg.num_labels) == (64, 32, 2)
    assert cfg.id2label == {0: "neg", 1: "pos"} and cfg.label2id == {"neg": 0, "pos": 1}
    out = tmp_path / "again"
    cfg.save(out)
    written = json.loads((out / "config.json").read_text())
    assert written["my_custom_key"] == {"nested": [1, 2]}
    assert written["model_type"] == "roformer"
    assert RoFormerConfig.from_json_file(out) == cfg
    # and the reference reads what we write
    ref = transformers.RoFormerConfig.from_pretrained(out)
    assert (ref.hidden_size, ref.embedding_size, ref.id2label[1]) == (64, 32, "pos")


@pytest.mark.parametrize("changes, field", [
    (dict(hidden_size=30, num_attention_heads=4), "hidden_size"),
    (dict(hidden_size=36, num_attention_heads=4), "odd head size"),
    (dict(hidden_act="swishy"), "hidden_act"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
    (dict(problem_type="ranking"), "problem_type"),
])
def test_config_rejects_impossible_values(changes, field):
    with pytest.raises(ConfigError, match=field):
        RoFormerConfig(**changes)


def test_config_activations_accepted():
    for act in ("gelu", "gelu_new", "relu", "selu", "silu"):
        assert RoFormerConfig(hidden_act=act).hidden_act == act


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no config found"):
        RoFormerConfig.from_json_file(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RoFormerConfig.from_json_file(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="bert"):
        RoFormerConfig.from_json_file(tmp_path)


# -- rotary ---------------------------------------------------------------------------------
def test_rotary_known_values():
    np.testing.assert_allclose(sinusoidal_table(6, 6)[:2],
                               [[0, 0, 0, 1, 1, 1], [0.8415, 0.0464, 0.0022, 0.5403, 0.9989, 1.0000]], atol=1e-4)
    np.testing.assert_allclose(sinusoidal_table(512, 512)[:3, :5],
                               [[0, 0, 0, 0, 0], [0.8415, 0.8219, 0.8020, 0.7819, 0.7617],
                                [0.9093, 0.9364, 0.9581, 0.9749, 0.9870]], atol=1e-4)


def test_rotation_known_values():
    q = np.arange(2 * 12 * 16 * 64, dtype=np.float32).reshape(2, 12, 16, 64) / 100
    want = np.array([[0.0000, 0.0100, 0.0200, 0.0300, 0.0400, 0.0500, 0.0600, 0.0700],
                     [-0.2012, 0.8897, 0.0263, 0.9401, 0.2074, 0.9463, 0.3481, 0.9343],
                     [-1.7057, 0.6271, -1.2145, 1.3897, -0.6303, 1.7647, -0.1173, 1.8985],
                     [-2.1731, -1.6397, -2.7358, 0.2854, -2.1840, 1.7183, -1.3018, 2.4871],
                     [0.2717, -3.6173, -2.9206, -2.1988, -3.6638, 0.3858, -2.9155, 2.2980],
                     [3.9859, -2.1580, -0.7984, -4.4904, -4.1181, -2.0252, -4.4782, 1.1253]])
    np.testing.assert_allclose(apply_rotary(q)[0, 0, :6, :8], want, atol=1e-4)
    np.testing.assert_allclose(apply_rotary(-q)[0, 0, :6, :8], -want, atol=1e-4)


def test_rotary_table_matches_reference_module():
    import torch
    from transformers.models.roformer.modeling_roformer import RoFormerSinusoidalPositionalEmbedding

    with torch.no_grad():
        ref_table = RoFormerSinusoidalPositionalEmbedding(300, 64).create_weight().numpy()
    np.testing.assert_allclose(sinusoidal_table(300, 64), ref_table, atol=1e-6)


def test_rotary_offsets_and_long_sequences():
    full = sinusoidal_table(5000, 16)
    np.testing.assert_array_equal(sinusoidal_table(10, 16, offset=4990), full[4990:])
    sin, cos = rotary_sin_cos(7, 8, offset=3)
    np.testing.assert_array_equal(sin[:, ::2], sinusoidal_table(10, 8)[3:, :4])
    np.testing.assert_array_equal(cos[:, 1::2], sinusoidal_table(10, 8)[3:, 4:])
    # float64 angles: even far positions stay on the unit circle and exact
    p = 4999
    angle = p * 10000.0 ** (-2.0 * 3 / 16)
    assert abs(full[p, 3] - np.float32(np.sin(angle))) < 1e-6


def test_rotation_preserves_norm_and_relative_positions():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(1, 5, 8)), rng.normal(size=(1, 5, 8))
    np.testing.assert_allclose(np.linalg.norm(apply_rotary(q), axis=-1), np.linalg.norm(q, axis=-1), rtol=1e-10)
    # the score of q at i and k at j depends only on i - j
    s1 = apply_rotary(q[:, :1], offset=3) @ apply_rotary(k[:, :1], offset=1).swapaxes(-1, -2)
    s2 = apply_rotary(q[:, :1], offset=10) @ apply_rotary(k[:, :1], offset=8).swapaxes(-1, -2)
    np.testing.assert_allclose(s1, s2, rtol=1e-9)


# -- safetensors ----------------------------------------------------------------------------
def test_safetensors_interop_with_the_library(tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.float16),
               "c": np.array([1, -2], np.int64)}
    write_safetensors(tmp_path / "ours.safetensors", tensors)
    back = load_file(str(tmp_path / "ours.safetensors"))
    for k, v in tensors.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype
    save_file(tensors, str(tmp_path / "theirs.safetensors"))
    r = SafetensorsReader(tmp_path / "theirs.safetensors")
    for k, v in tensors.items():
        np.testing.assert_array_equal(r.get(k), v)


def test_bf16_bits_match_torch(tmp_path):
    import torch

    x = np.random.default_rng(0).normal(size=1000).astype(np.float32) * 100
    x[:3] = [np.inf, -np.inf, 0.0]
    ours = float32_to_bf16_bits(x)
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(bf16_bits_to_float32(ours), torch.from_numpy(x).to(torch.bfloat16).float().numpy())


@pytest.mark.parametrize("damage", ["truncate", "header", "empty"])
def test_safetensors_damaged_files(tmp_path, damage):
    path = tmp_path / "x.safetensors"
    write_safetensors(path, {"w": np.zeros((64, 64), np.float32)})
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[:-100], "header": raw[:8] + b"{garbage" + raw[17:], "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        SafetensorsReader(path)


# -- canonical checkpoint -------------------------------------------------------------------
CFG = RoFormerConfig(**TINY)


def test_spec_matches_reference_state_dict_for_every_head():
    import transformers

    ref_classes = {"model": "RoFormerModel", "masked_lm": "RoFormerForMaskedLM", "causal_lm": "RoFormerForCausalLM",
                   "sequence_classification": "RoFormerForSequenceClassification",
                   "multiple_choice": "RoFormerForMultipleChoice",
                   "token_classification": "RoFormerForTokenClassification",
                   "question_answering": "RoFormerForQuestionAnswering"}
    for variant in (dict(), dict(embedding_size=24), dict(is_decoder=True, add_cross_attention=True)):
        cfg = CFG.replace(**variant)
        ref_cfg = transformers.RoFormerConfig(**cfg.to_dict())
        for head, name in ref_classes.items():
            ref = getattr(transformers, name)(ref_cfg)
            state = {k: tuple(v.shape) for k, v in ref.state_dict().items()
                     if not k.endswith("embed_positions.weight") and not k.startswith("cls.predictions.decoder")}
            assert state == canonical_spec(cfg, head), (variant, head)


def test_to_canonical_name_rules():
    assert to_canonical_name(("cls", "predictions", "transform", "LayerNorm", "gamma")) == \
        ("cls.predictions.transform.LayerNorm.weight", False)
    assert to_canonical_name(("classifier", "out_proj", "kernel")) == ("classifier.out_proj.weight", True)
    assert to_canonical_name(("cls", "predictions", "bias")) == ("cls.predictions.bias", False)
    assert to_canonical_name(("roformer", "encoder", "layer_3", "output", "dense", "bias")) == \
        ("roformer.encoder.layer.3.output.dense.bias", False)


def test_plan_bare_into_head_and_head_into_bare(caplog):
    bare = canonical_spec(CFG, "model")
    plan = plan_load(bare, CFG, "sequence_classification")
    assert plan.initialised == list(canonical_spec(CFG, "sequence_classification"))[-4:]
    assert plan.sources["roformer.embeddings.word_embeddings.weight"] == "embeddings.word_embeddings.weight"
    mlm = dict(canonical_spec(CFG, "masked_lm"))
    mlm["roformer.encoder.embed_positions.weight"] = (64, 8)
    mlm["cls.predictions.decoder.weight"] = (99, 32)
    mlm["cls.predictions.decoder.bias"] = (99,)
    plan = plan_load(mlm, CFG, "model")
    assert "cls.predictions.bias" in plan.unused
    assert set(plan.ignored) == {"roformer.encoder.embed_positions.weight", "cls.predictions.decoder.weight",
                                 "cls.predictions.decoder.bias"}
    assert plan.sources["encoder.layer.1.output.dense.weight"] == "roformer.encoder.layer.1.output.dense.weight"
    # another head's weights are dropped, this head is initialised
    plan = plan_load(mlm, CFG, "question_answering")
    assert plan.initialised == ["qa_outputs.weight", "qa_outputs.bias"] and "cls.predictions.bias" in plan.unused


def test_plan_errors_list_everything():
    spec = dict(canonical_spec(CFG, "masked_lm"))
    spec.pop("roformer.encoder.layer.0.intermediate.dense.bias")
    spec["roformer.encoder.layer.1.output.dense.weight"] = (32, 99)
    spec["roformer.something.new"] = (3,)
    with pytest.raises(CheckpointError) as e:
        plan_load(spec, CFG, "masked_lm")
    msg = str(e.value)
    assert "missing: roformer.encoder.layer.0.intermediate.dense.bias" in msg
    assert "roformer.encoder.layer.1.output.dense.weight (32, 99) (model wants (32, 37))" in msg
    assert "unexpected: roformer.something.new" in msg
    partial = dict(canonical_spec(CFG, "sequence_classification"))
    partial.pop("classifier.out_proj.bias")
    with pytest.raises(CheckpointError, match="missing: classifier.out_proj.bias"):
        plan_load(partial, CFG, "sequence_classification")


def test_save_is_atomic_and_keeps_old_files(tmp_path):
    tensors = {k: np.full(s, 1.0, np.float32) for k, s in canonical_spec(CFG).items()}
    save_checkpoint(tmp_path / "ck", CFG, tensors)
    before = (tmp_path / "ck" / "model.safetensors").read_bytes()

    def failing():
        for i, item in enumerate(tensors.items()):
            if i == 5:
                raise RuntimeError("disk full")
            yield item

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(tmp_path / "ck", CFG, failing())
    assert (tmp_path / "ck" / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ck"], "a temporary file was left behind"
    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path / "new", CFG, failing())
    assert not (tmp_path / "new").exists()


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        Checkpoint(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="roformer-convert"):
        Checkpoint(tmp_path)
    d = tmp_path / "noconfig"
    d.mkdir()
    write_safetensors(d / "model.safetensors", {"a": np.zeros(2, np.float32)})
    with pytest.raises(CheckpointError, match="no config.json"):
        Checkpoint(d)


def test_sharded_checkpoint_reads(tmp_path):
    spec = canonical_spec(CFG)
    names = list(spec)
    rng = np.random.default_rng(0)
    tensors = {k: rng.normal(size=s).astype(np.float32) for k, s in spec.items()}
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for file, keys in shards.items():
        write_safetensors(tmp_path / file, {k: tensors[k] for k in keys})
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    CFG.save(tmp_path)
    ck = Checkpoint(tmp_path)
    assert sorted(ck.names()) == sorted(names)
    for k in names:
        np.testing.assert_array_equal(ck.get(k), tensors[k])


def test_every_head_has_a_spec():
    for head in HEADS:
        assert canonical_spec(CFG, head)
