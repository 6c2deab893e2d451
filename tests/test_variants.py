"""The RoFormer family (V2, Sim, GPT-char) in PyTorch, Flax and Keras, against the ``roformer`` 0.4.3 port.

The port (and keras-hub 0.32) run in ``.venv-oracle-v2`` through the scripts of ``tests/oracles``:
random V2, Sim and causal-char models are built and saved there with the port's own
``save_pretrained`` (``pytorch_model.bin``), and loaded here as they are. The port's first pass is
always bidirectional; where ours is not (a causal LM, UniLM), the port gets the same mask as an
explicit 3-D ``attention_mask``.
"""

from __future__ import annotations

import doctest
import json
import logging
import re
import shutil

import numpy as np
import pytest

from oracles import run_script
from roformer_core import RoFormerConfig, canonical_spec
from roformer_core.backends import get_backend
from roformer_core.checkpoint import Checkpoint, plan_load
from roformer_core.errors import CheckpointError, ConfigError, InputError
from roformer_core.generation import generate, seq2seq_labels, unilm_attention_mask
from roformer_core.heads import HEAD_TABLE

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3)
#: RoFormer-V2 as its hub folders describe it (eps 1e-7: the config's eps must be the one used)
V2 = RoFormerConfig(**TINY, norm_type="rms_norm", use_bias=False, hidden_act="relu", layer_norm_eps=1e-7)
#: RoFormer-Sim: V1 with a linear pooler; its folders say is_decoder
SIM = RoFormerConfig(**TINY, pooler_activation="linear", is_decoder=True)
#: chinese_roformer-gpt-char: V1 weights as a causal LM
GPT = RoFormerConfig(**TINY, is_decoder=True)
HEADS = list(HEAD_TABLE)
BACKENDS = ("torch", "flax", "keras")
#: our config fields the port does not have (its folders never carry them)
OURS_ONLY = ("unilm", "add_pooling_layer", "model_type", "id2label", "label2id")


def port_config(config: RoFormerConfig, **changes) -> dict:
    """The config dict the port is built from, as its folders have it."""
    data = {k: v for k, v in config.to_dict().items() if k not in OURS_ONLY}
    data.update(changes)
    return data


def inputs_for(config: RoFormerConfig, head: str, seed: int = 0, types: bool = True) -> dict:
    """A batch with padding at the end of the last row and (unless ``types`` is False) a segment 1."""
    rng = np.random.default_rng(seed)
    shape = (2, 2, 7) if head == "multiple_choice" else (2, 7)
    mask = np.ones(shape, np.int64)
    mask[..., -1, 5:] = 0
    ids = np.where(mask == 1, rng.integers(1, config.vocab_size, shape), 0)
    tt = np.zeros(shape, np.int64)
    if types and head != "multiple_choice":
        tt[..., 3:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.where(mask == 1, tt, 0)}


def causal_mask(mask: np.ndarray) -> np.ndarray:
    """The causal LM's mask as an explicit [batch, query, key] mask (causal, padding keys off)."""
    s = mask.shape[-1]
    return (np.tril(np.ones((s, s), bool))[None] & mask.astype(bool)[:, None, :]).astype(np.int64)


#: the port models: name -> (config, heads, how our side loads them, which mask the port gets)
SPECS = {
    "v2": dict(config=V2, heads=HEADS, seed=1, pooler=False, ours={}, head_config={"causal_lm": {"is_decoder": True}}),
    "sim": dict(config=SIM, heads=HEADS, seed=2, pooler=True, ours={"unilm": True}, head_config={}),
    "gpt": dict(config=GPT, heads=["causal_lm"], seed=3, pooler=False, ours={}, head_config={}),
}


def port_inputs(name: str, head: str, inputs: dict) -> dict:
    """What the port is given for ``inputs``: the mask our side builds, explicitly, where it is not 2-D padding."""
    out = {k: v.tolist() for k, v in inputs.items()}
    if head == "multiple_choice":
        return out
    if name == "sim":  # ours: unilm=True
        out["attention_mask"] = unilm_attention_mask(inputs["token_type_ids"], inputs["attention_mask"]).astype(
            np.int64).tolist()
    elif head == "causal_lm":  # ours: causal in every pass; the port: only once it has a cache
        out["attention_mask"] = causal_mask(inputs["attention_mask"]).tolist()
    return out


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    """Port-made folders of every model and head, and the port's outputs on :func:`inputs_for`."""
    root = tmp_path_factory.mktemp("port")
    models = []
    for name, spec in SPECS.items():
        models.append({"name": name, "config": port_config(spec["config"]), "heads": spec["heads"],
                       "head_config": spec["head_config"], "seed": spec["seed"], "pooler": spec["pooler"],
                       "inputs": {h: port_inputs(name, h, inputs_for(spec["config"], h)) for h in spec["heads"]}})
    _, arrays = run_script("roformer043.py", ["models"], {"dir": str(root), "out": str(root / "out.npz"),
                                                          "models": models})
    return root, arrays


def _expected(arrays: dict, name: str, head: str) -> dict:
    prefix = f"{name}/{head}/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


# -- the port's folders, as they are, in every backend --------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(SPECS))
def test_port_folders_give_the_port_outputs(port, name, backend):
    """Every head of V2, Sim (pooler_output, UniLM) and GPT-char, loaded from the port's pytorch_model.bin."""
    root, arrays = port
    spec = SPECS[name]
    run = get_backend(backend)
    for head in spec["heads"]:
        folder = root / name / head
        assert "pytorch_model.bin" in {p.name for p in folder.iterdir()}
        model = run.load(head, folder, "float32", **spec["ours"])
        assert model.config.norm_type == ("rms_norm" if name == "v2" else "layer_norm")
        got = run.run(model, inputs_for(spec["config"], head))
        want = _expected(arrays, name, head)
        assert set(HEAD_TABLE[head].output_fields) <= set(want) <= set(got), (head, sorted(want), sorted(got))
        if name == "sim" and head in ("model", "causal_lm"):
            assert "pooler_output" in want
        for field, value in want.items():
            np.testing.assert_allclose(got[field], value, rtol=0, atol=1e-5, err_msg=f"{name} {head} {field}")


def test_sim_bidirectional_pass_equals_the_port_default(port):
    """Token types 0 only (a sentence to embed): UniLM is the port's plain bidirectional pass."""
    root, _ = port
    inputs = inputs_for(SIM, "model", types=False)
    payload_models = [{"name": "sim0", "config": port_config(SIM), "heads": ["model"], "head_config": {}, "seed": 2,
                       "pooler": True, "inputs": {"model": {k: v.tolist() for k, v in inputs.items()}}}]
    _, arrays = run_script("roformer043.py", ["models"], {"dir": str(root), "out": str(root / "sim0.npz"),
                                                          "models": payload_models})
    for backend in BACKENDS:
        run = get_backend(backend)
        got = run.run(run.load("model", root / "sim0" / "model", "float32", unilm=True), inputs)
        np.testing.assert_allclose(got["pooler_output"], arrays["sim0/model/pooler_output"], rtol=0, atol=1e-5)


def test_folders_we_save_reload_with_the_variant(port, tmp_path):
    """A V2 masked LM (its head has no parameters of its own) and a Sim model keep what they are."""
    from roformer_convert import convert

    root, _ = port
    run = get_backend("torch")
    v2 = run.load("masked_lm", root / "v2" / "masked_lm")
    assert canonical_spec(v2.config, "masked_lm").keys().isdisjoint({"cls.predictions.bias"})
    v2.save_pretrained(tmp_path / "v2")
    result = convert(tmp_path / "v2", tmp_path / "v2-again")
    assert result.head == "masked_lm"  # named by the config's architectures: no head tensors tell it
    sim = run.load("causal_lm", root / "sim" / "causal_lm", unilm=True)
    sim.save_pretrained(tmp_path / "sim")
    saved = json.loads((tmp_path / "sim" / "config.json").read_text())
    assert (saved["add_pooling_layer"], saved["unilm"], saved["pooler_activation"]) == (True, True, "linear")
    assert "roformer.pooler.dense.weight" in Checkpoint(tmp_path / "sim").names()
    for backend in BACKENDS:
        again = get_backend(backend).load("causal_lm", tmp_path / "sim")
        inputs = inputs_for(SIM, "causal_lm")
        np.testing.assert_allclose(get_backend(backend).run(again, inputs)["pooler_output"],
                                   run.run(sim, inputs)["pooler_output"], rtol=0, atol=1e-5)


def test_config_contradicting_the_tensors_is_refused(port, tmp_path):
    root, _ = port
    cases = {  # folder, config change, words the message must hold
        "v2-says-v1-norm": ("v2", {"norm_type": "layer_norm"}, ["norm_type 'layer_norm'", "embeddings.LayerNorm.weight",
                                                               "rms_norm"]),
        "v2-says-bias": ("v2", {"use_bias": True}, ["use_bias true", "attention.self.query.bias"]),
        "sim-says-v2": ("sim", {"norm_type": "rms_norm", "use_bias": False},
                        ["norm_type 'rms_norm'", "embeddings.LayerNorm.weight", "encoder.layer.0.output.LayerNorm"]),
    }
    for case, (name, change, words) in cases.items():
        folder = tmp_path / case
        shutil.copytree(root / name / "masked_lm", folder)
        data = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**data, **change}))
        for backend in BACKENDS:
            with pytest.raises(CheckpointError) as info:
                get_backend(backend).load("masked_lm", folder)
            message = str(info.value)
            assert "\n" not in message and all(w in message for w in words), (case, message)


def test_config_fields_and_defaults(tmp_path):
    """The port's field names are ours; V1 folders without them read as V1; bad values name the field."""
    port_folder = {**port_config(V2), "pooler_activation": "linear"}
    cfg = RoFormerConfig.from_dict(port_folder)
    assert (cfg.norm_type, cfg.use_bias, cfg.pooler_activation, cfg.unilm, cfg.add_pooling_layer) == \
        ("rms_norm", False, "linear", False, False)
    v1 = RoFormerConfig.from_dict({k: v for k, v in port_config(GPT).items()
                                   if k not in ("norm_type", "use_bias", "pooler_activation")})
    assert (v1.norm_type, v1.use_bias, v1.pooler_activation) == ("layer_norm", True, "tanh")
    for field, value in (("norm_type", "batch_norm"), ("pooler_activation", "softmax"), ("use_bias", "false"),
                         ("unilm", 1)):
        with pytest.raises(ConfigError, match=field):
            RoFormerConfig(**TINY, **{field: value})
    v2_path = V2.save(tmp_path)
    assert RoFormerConfig.from_json_file(v2_path) == V2


def test_pooler_asked_for_is_initialised_and_said(tmp_path, caplog):
    run = get_backend("torch")
    run.from_config("model", GPT.replace(is_decoder=False)).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="roformer"):
        model = run.load("model", tmp_path, add_pooling_layer=True)
    assert "pooler.dense.weight" in caplog.text
    assert model.pooler.dense.weight.shape == (32, 32)
    assert run.run(model, {"input_ids": np.array([[2, 5, 3]])})["pooler_output"].shape == (1, 32)
    flax_model = get_backend("flax").load("sequence_classification", tmp_path, add_pooling_layer=True)
    assert flax_model.params["roformer"]["pooler"]["dense"]["kernel"].shape == (32, 32)
    from roformer_torch import RoFormerModel
    assert not hasattr(RoFormerModel(GPT), "pooler") and hasattr(RoFormerModel(GPT, add_pooling_layer=True), "pooler")


# -- TF1 checkpoints (original names) ---------------------------------------------------------------------
def tf1_name(name: str) -> str:
    """The original TF1 variable name of a canonical name."""
    name = name if name.startswith(("cls.", "roformer.")) else "roformer." + name
    name = re.sub(r"encoder\.layer\.(\d+)\.", r"encoder.layer_\1.", name.replace("roformer.", "bert.", 1))
    name = name.replace("cls.predictions.bias", "cls.predictions.output_bias")
    name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
    name = name.replace("_embeddings.weight", "_embeddings").replace(".weight", ".kernel")
    return name.replace(".", "/")


def write_tf1(folder, config: RoFormerConfig, head: str, seed: int) -> dict[str, np.ndarray]:
    """An original-style TF1 checkpoint (tf.compat.v1 Saver, ``bert/...`` names, Adam slots, global_step)
    with a ``bert_config.json`` that names no variant; returns the canonical tensors written."""
    import tensorflow as tf  # only to write it: the converter reads TF1 files without TensorFlow

    rng = np.random.default_rng(seed)
    tensors = {n: rng.normal(0, 0.2, s).astype(np.float32) for n, s in canonical_spec(config, head).items()}
    values = {"global_step": np.int64(100)}
    for name, array in tensors.items():
        original = tf1_name(name)
        values[original] = array.T if original.endswith("kernel") else array
        values[original + "/adam_m"] = np.zeros_like(values[original])
    folder.mkdir(parents=True)
    tf.compat.v1.train.Saver(var_list={n: tf.Variable(v) for n, v in values.items()}).save(
        None, str(folder / "bert_model.ckpt"))
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "max_position_embeddings", "type_vocab_size", "initializer_range", "hidden_dropout_prob",
            "attention_probs_dropout_prob")
    (folder / "bert_config.json").write_text(json.dumps({k: config.to_dict()[k] for k in keys}))
    return tensors


def test_tf1_v2_and_sim_convert_like_the_port(tmp_path, caplog):
    from roformer_convert import convert
    from roformer_convert.cli import main

    v2_tensors = write_tf1(tmp_path / "v2-tf1", V2.replace(layer_norm_eps=1e-12), "model", seed=5)
    sim_config = SIM.replace(is_decoder=False, add_pooling_layer=True)
    sim_tensors = write_tf1(tmp_path / "sim-tf1", sim_config, "masked_lm", seed=6)
    assert "roformer.pooler.dense.weight" in sim_tensors and "embeddings.LayerNorm.weight" not in v2_tensors
    jobs = [{"key": "v2", "class": "RoFormerForMaskedLM", "prefix": str(tmp_path / "v2-tf1" / "bert_model.ckpt"),
             "config": port_config(V2, layer_norm_eps=1e-12)},
            {"key": "sim", "class": "RoFormerForCausalLM", "prefix": str(tmp_path / "sim-tf1" / "bert_model.ckpt"),
             "config": port_config(SIM)}]
    _, port_state = run_script("roformer043.py", ["tf1"], {"jobs": jobs, "out": str(tmp_path / "tf1.npz")})

    with caplog.at_level(logging.WARNING, logger="roformer"):
        v2 = convert(tmp_path / "v2-tf1", tmp_path / "v2")
    inferred = [r.getMessage() for r in caplog.records if "names no RoFormer variant" in r.getMessage()]
    assert len(inferred) == 1 and "RoFormer-V2" in inferred[0] and "pooler" not in inferred[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="roformer"):
        sim = convert(tmp_path / "sim-tf1", tmp_path / "sim", pooler_activation="linear")
    inferred = [r.getMessage() for r in caplog.records if "names no RoFormer variant" in r.getMessage()]
    assert len(inferred) == 1 and "a pooler" in inferred[0] and "RoFormer-V2" not in inferred[0]
    assert (v2.source_format, v2.head, sim.head) == ("tf1", "model", "masked_lm")

    for key, folder in (("v2", tmp_path / "v2"), ("sim", tmp_path / "sim")):
        ours = Checkpoint(folder)
        theirs = {k[len(key) + 1:]: v for k, v in port_state.items() if k.startswith(key + "/")
                  and not k.startswith(f"{key}/cls.predictions.decoder.")}  # the tied decoder is the embeddings
        names = {("" if n.startswith(("roformer.", "cls.")) else "roformer.") + n: n for n in ours.names()}
        assert set(names) == set(theirs), (key, sorted(set(names) ^ set(theirs)))
        for name, stored in names.items():
            assert np.array_equal(ours.get(stored), theirs[name]), (key, name)
    v2_cfg, sim_cfg = Checkpoint(tmp_path / "v2").config, Checkpoint(tmp_path / "sim").config
    assert (v2_cfg.norm_type, v2_cfg.use_bias, v2_cfg.add_pooling_layer) == ("rms_norm", False, False)
    assert (sim_cfg.norm_type, sim_cfg.add_pooling_layer, sim_cfg.pooler_activation) == ("layer_norm", True, "linear")

    # the command line, and from_pretrained straight from the TF1 folder, take the same option
    assert main([str(tmp_path / "sim-tf1"), str(tmp_path / "sim-cli"), "--pooler-activation", "linear", "--quiet"]) == 0
    assert json.loads((tmp_path / "sim-cli" / "config.json").read_text())["pooler_activation"] == "linear"
    inputs = inputs_for(SIM, "masked_lm", types=False)
    for backend in BACKENDS:
        run = get_backend(backend)
        direct = run.load("model", tmp_path / "sim-tf1", pooler_activation="linear")
        converted = run.load("model", tmp_path / "sim")
        np.testing.assert_allclose(run.run(direct, inputs)["pooler_output"],
                                   run.run(converted, inputs)["pooler_output"], rtol=0, atol=1e-6)


# -- UniLM ------------------------------------------------------------------------------------------------
UNILM = SIM.replace(unilm=True, add_pooling_layer=True)


def _seq2seq_batch(seed=0):
    """Sources of two lengths (the second padded), then a target of 5 tokens each."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, UNILM.vocab_size, (2, 11))
    mask = np.ones_like(ids)
    mask[1, 4:6] = 0  # padding inside the second source
    ids[mask == 0] = 0
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    return ids, mask, types


def test_unilm_mask_is_the_definition():
    ids, mask, types = _seq2seq_batch()
    allowed = unilm_attention_mask(types, mask)
    cs = np.cumsum(types, 1)
    for b in range(2):
        for i in range(11):
            for j in range(11):
                assert allowed[b, i, j] == (cs[b, j] <= cs[b, i] and mask[b, j] == 1)
    assert seq2seq_labels(ids, types, mask).tolist()[0][:6] == [-100] * 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_unilm_incremental_decoding_equals_the_one_pass_forward(backend):
    """Source in one pass (bidirectional), then the target a token at a time, then three at once
    (segment 1 stays causal among new tokens too), with the cache."""
    run = get_backend(backend)
    model = run.from_config("causal_lm", UNILM, seed=4)
    ids, mask, types = _seq2seq_batch()
    full = run.run(model, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})["logits"]
    past = None
    for start, stop in ((0, 6), (6, 7), (7, 8), (8, 11)):
        out, past = run.step(model, {"input_ids": ids[:, start:stop], "attention_mask": mask[:, :stop],
                                     "token_type_ids": types[:, start:stop]}, past)
        np.testing.assert_allclose(out["logits"], full[:, start:stop], rtol=0, atol=1e-5,
                                   err_msg=f"positions {start}..{stop}")


def test_unilm_fixed_buffer_decoding_equals_the_one_pass_forward():
    """Flax's jit-friendly cache (init_cache + cache_index) under the UniLM mask."""
    run = get_backend("flax")
    model = run.from_config("causal_lm", UNILM, seed=4)
    ids, mask, types = _seq2seq_batch()
    full = run.run(model, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})["logits"]
    cache, buffer_mask = model.init_cache(2, 11), np.zeros((2, 11), np.int64)
    buffer_mask[:, :6] = mask[:, :6]
    out = model(ids[:, :6], buffer_mask, types[:, :6], past_key_values=cache, cache_index=0)
    np.testing.assert_allclose(np.asarray(out.logits), full[:, :6], rtol=0, atol=1e-5)
    cache = out.past_key_values
    for t in range(6, 11):
        buffer_mask[:, t] = 1
        out = model(ids[:, t:t + 1], buffer_mask, types[:, t:t + 1], past_key_values=cache, cache_index=t)
        np.testing.assert_allclose(np.asarray(out.logits)[:, 0], full[:, t], rtol=0, atol=1e-5)
        cache = out.past_key_values


def test_unilm_generation_is_the_same_in_every_backend_and_is_unilm_decoding(tmp_path):
    runs = {b: get_backend(b) for b in BACKENDS}
    runs["torch"].from_config("causal_lm", UNILM, seed=7).save_pretrained(tmp_path)
    models = {b: runs[b].load("causal_lm", tmp_path) for b in BACKENDS}
    ids, mask, _ = _seq2seq_batch()
    source, source_mask = ids[:, :6], mask[:, :6]
    types = np.zeros_like(source)
    greedy = {b: runs[b].generate(models[b], source, source_mask, token_type_ids=types, max_new_tokens=6)
              for b in BACKENDS}
    assert all(np.array_equal(greedy["torch"], greedy[b]) for b in BACKENDS), greedy
    # each greedy token is the argmax of a one-pass UniLM forward with the new tokens as segment 1
    seq = greedy["torch"]
    full_mask = np.concatenate([source_mask, np.ones((2, 6), np.int64)], 1)
    full_types = np.concatenate([types, np.ones((2, 6), np.int64)], 1)
    logits = runs["torch"].run(models["torch"], {"input_ids": seq, "attention_mask": full_mask,
                                                 "token_type_ids": full_types})["logits"]
    assert np.array_equal(logits[:, 5:-1].argmax(-1), seq[:, 6:])
    sampled = {b: runs[b].generate(models[b], source, source_mask, token_type_ids=types, max_new_tokens=6,
                                   do_sample=True, top_k=20, top_p=0.9, temperature=1.3, num_return_sequences=3,
                                   seed=11) for b in BACKENDS}
    assert sampled["torch"].shape == (6, 12) and all(np.array_equal(sampled["torch"], sampled[b]) for b in BACKENDS)
    assert np.array_equal(sampled["torch"][:3, :6], np.repeat(source[:1], 3, 0))
    assert len({tuple(r) for r in sampled["torch"][:3, 6:].tolist()}) > 1  # three different samples
    with pytest.raises(InputError, match="do_sample"):
        runs["torch"].generate(models["torch"], source, num_return_sequences=2)


def test_gpt_char_generates_the_same_in_every_backend(port):
    root, _ = port
    ids = np.array([[2, 17, 42, 8]])
    out = {b: get_backend(b).generate(get_backend(b).load("causal_lm", root / "gpt" / "causal_lm"), ids,
                                      max_new_tokens=5, do_sample=True, top_p=0.9, seed=3) for b in BACKENDS}
    assert out["torch"].shape == (1, 9) and all(np.array_equal(out["torch"], out[b]) for b in BACKENDS)


def test_seq2seq_loss_counts_only_the_target(tmp_path):
    import torch
    import torch.nn.functional as F

    ids, mask, types = _seq2seq_batch()
    labels = seq2seq_labels(ids, types, mask)
    torch_model = get_backend("torch").from_config("causal_lm", UNILM, seed=2)
    out = torch_model(torch.as_tensor(ids), torch.as_tensor(mask), torch.as_tensor(types),
                      labels=torch.as_tensor(labels))
    logits = out.logits.detach()
    picked = [F.cross_entropy(logits[b, t - 1][None], torch.as_tensor([ids[b, t]]))
              for b in range(2) for t in range(6, 11)]
    assert abs(out.loss.item() - torch.stack(picked).mean().item()) < 1e-5
    torch_model.save_pretrained(tmp_path)
    flax_model = get_backend("flax").load("causal_lm", tmp_path)
    flax_loss = flax_model(ids, mask, types, labels=labels).loss
    assert abs(float(flax_loss) - out.loss.item()) < 1e-5


# -- dtypes, long sequences, training ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_v2_bf16_and_sequences_longer_than_the_table(port, backend):
    root, _ = port
    run = get_backend(backend)
    inputs = inputs_for(V2, "masked_lm")
    fp32 = run.run(run.load("masked_lm", root / "v2" / "masked_lm", "float32"), inputs)["logits"]
    bf16 = run.run(run.load("masked_lm", root / "v2" / "masked_lm", "bfloat16"), inputs)["logits"]
    assert np.isfinite(bf16).all() and np.abs(bf16 - fp32).max() < 0.05 * np.abs(fp32).max() + 0.05
    rng = np.random.default_rng(0)
    long = {"input_ids": rng.integers(1, 99, (1, 80)), "token_type_ids": np.zeros((1, 80), np.int64)}
    short_table = run.load("model", root / "v2" / "model", "float32", max_position_embeddings=16)
    wide_table = run.load("model", root / "v2" / "model", "float32", max_position_embeddings=128)
    np.testing.assert_allclose(run.run(short_table, long)["last_hidden_state"],
                               run.run(wide_table, long)["last_hidden_state"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name, mode", [("v2", "pmap"), ("sim", "jit")])
def test_flax_training_steps_on_v2_and_sim_seq2seq(port, name, mode):
    """A V2 masked LM (pmap) and Sim's one-pass UniLM seq2seq (jit over a mesh) train."""
    import jax
    from roformer_flax.training import create_train_state, make_optimizer, make_train_step

    root, _ = port
    run = get_backend("flax")
    ids, mask, types = _seq2seq_batch()
    if name == "v2":
        model = run.load("masked_lm", root / "v2" / "masked_lm")
        batch = {"input_ids": ids, "attention_mask": mask, "labels": np.where(ids % 3 == 0, ids, -100)}
    else:
        model = run.load("causal_lm", root / "sim" / "causal_lm", unilm=True)
        batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
                 "labels": seq2seq_labels(ids, types, mask)}
    step = make_train_step(model, mode)
    state = step.place_state(create_train_state(model, make_optimizer(3e-3, num_train_steps=20)))
    losses = []
    for _ in range(4):
        state, metrics = step(state, step.shard(batch), jax.random.PRNGKey(0))
        losses.append(float(np.asarray(metrics["loss"]).reshape(-1)[0]))
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    # the first step's loss is the model's own loss on the batch (what PyTorch computes too)
    torch_run = get_backend("torch")
    head = "masked_lm" if name == "v2" else "causal_lm"
    torch_model = torch_run.load(head, root / name / head, **({"unilm": True} if name == "sim" else {}))
    import torch
    with torch.no_grad():
        torch_loss = torch_model(**{k: torch.as_tensor(v) for k, v in batch.items()}).loss
    assert abs(losses[0] - float(torch_loss)) < 1e-5
    paths = ["/".join(str(getattr(k, "key", k)) for k in p)
             for p, _ in jax.tree_util.tree_leaves_with_path(step.host_params(state))]
    if name == "v2":  # the trained params keep the variant's tree: no LayerNorm, no encoder bias
        assert not any("LayerNorm" in p or p.endswith("bias") for p in paths), paths


@pytest.mark.parametrize("name", ["v2", "sim"])
def test_keras_fit_on_v2_and_sim_seq2seq(port, name):
    """Keras ``fit`` (XLA) on a V2 masked LM and on Sim's one-pass UniLM seq2seq; the first logged
    loss is PyTorch's loss on the batch, and the trained V2 keeps no LayerNorm and no encoder bias."""
    import keras
    import tensorflow as tf
    import torch

    root, _ = port
    ids, mask, types = _seq2seq_batch()
    head = "masked_lm" if name == "v2" else "causal_lm"
    ours = {"unilm": True} if name == "sim" else {}
    if name == "v2":
        batch = {"input_ids": ids, "attention_mask": mask, "labels": np.where(ids % 3 == 0, ids, -100)}
    else:
        batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
                 "labels": seq2seq_labels(ids, types, mask)}
    model = get_backend("keras").load(head, root / name / head, **ours)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=True)
    losses = model.fit(tf.data.Dataset.from_tensors(batch).repeat(4), epochs=1, verbose=0,
                       shuffle=False).history["loss"]
    with torch.no_grad():
        torch_model = get_backend("torch").load(head, root / name / head, **ours)
        torch_loss = float(torch_model(**{k: torch.as_tensor(v) for k, v in batch.items()}).loss)
    after = float(model(**batch).loss)
    assert np.isfinite(losses).all() and after < torch_loss, (torch_loss, after)
    # Keras logs the mean over the epoch's steps; one step with a zero learning rate logs the loss itself
    fresh = get_backend("keras").load(head, root / name / head, **ours)
    fresh.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=True)
    first = fresh.fit(tf.data.Dataset.from_tensors(batch), verbose=0, shuffle=False).history["loss"][0]
    assert abs(first - torch_loss) < 1e-5
    if name == "v2":
        assert not any("LayerNorm" in n or n.endswith("bias") for n, _, _ in model.named_variables())


# -- keras-hub's RoformerV2Backbone --------------------------------------------------------------------------
def test_keras_hub_roformer_v2_backbone(port, tmp_path):
    """Same weights, same hidden states on unpadded inputs. On padded ones keras-hub's TensorFlow
    backend lets the padding in: its mask is reshaped to [b, 1, s, 1], which masks padded *query*
    rows and leaves padded keys visible, so what sits in the padding changes the real positions'
    states. Its torch backend (the mask repeated and transposed to [b, 1, s, s]) masks the keys
    and agrees with us; so does the ``roformer`` port. keras-hub's mask is the wrong one."""
    root, _ = port
    run = get_backend("torch")
    model = run.load("model", root / "v2" / "model")
    np.savez(tmp_path / "v2.npz", **run.state_dict(model))
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 99, (2, 9))
    padded = ids.copy()
    padded[1, 6:] = 0
    segments = np.zeros_like(ids)
    segments[:, 5:] = 1
    other = segments.copy()
    other[1, 6:] = 0  # only what sits in the padding differs
    batches = {"unpadded": (ids, segments), "padded": (padded, segments), "padded_other": (padded, other)}
    payload = {"weights": str(tmp_path / "v2.npz"), "config": V2.to_dict(),
               "inputs": {k: {"token_ids": t.tolist(), "segment_ids": s.tolist()} for k, (t, s) in batches.items()}}
    hub = {}
    for keras_backend in ("tensorflow", "torch"):
        info, arrays = run_script("keras_hub_v2.py", [], {**payload, "out": str(tmp_path / f"{keras_backend}.npz")},
                                  env={"KERAS_BACKEND": keras_backend})
        assert info["backend"] == keras_backend and info["epsilon"] == V2.layer_norm_eps
        hub[keras_backend] = arrays
    ours = {k: run.run(model, {"input_ids": t, "attention_mask": (t != 0).astype(np.int64),
                               "token_type_ids": s})["last_hidden_state"] for k, (t, s) in batches.items()}
    valid = padded != 0
    for keras_backend, arrays in hub.items():
        np.testing.assert_allclose(arrays["unpadded"], ours["unpadded"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(hub["torch"]["padded"][valid], ours["padded"][valid], rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours["padded_other"][valid], ours["padded"][valid], rtol=0, atol=1e-6)
    np.testing.assert_allclose(hub["torch"]["padded_other"][valid], hub["torch"]["padded"][valid], rtol=0, atol=1e-6)
    leak = np.abs(hub["tensorflow"]["padded_other"][valid] - hub["tensorflow"]["padded"][valid]).max()
    assert leak > 1e-3, leak  # the TensorFlow backend's real positions see the padding
    assert np.abs(hub["tensorflow"]["padded"][valid] - ours["padded"][valid]).max() > 1e-3


# -- sentence similarity and paraphrases ------------------------------------------------------------------------
def _tokenizer():
    from roformer_core import RoFormerTokenizer

    chars = list("今天气很好热冷我们你他她它是的了不在有这那去来吃喝看说想要会能和与或但因为所以如果就都也还")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars
    return RoFormerTokenizer(vocab=vocab + [f"[unused{i}]" for i in range(99 - len(vocab))])


def test_sentence_embeddings_similarity_and_paraphrases_in_every_backend(port):
    from roformer_core import similarity as sim

    root, _ = port
    tok = _tokenizer()
    texts = ["今天天气很好", "今天很热", "我们去吃饭了", "你想要喝什么"]
    models = {b: get_backend(b).load("causal_lm", root / "sim" / "causal_lm", unilm=True) for b in BACKENDS}
    vectors = {b: sim.sentence_embeddings(models[b], tok, texts, batch_size=3 if b == "torch" else 4)
               for b in BACKENDS}
    for b in BACKENDS:
        np.testing.assert_allclose(vectors[b], vectors["torch"], rtol=0, atol=1e-5, err_msg=b)
    np.testing.assert_allclose(np.linalg.norm(vectors["torch"], axis=1), 1.0, atol=1e-6)
    # one batch or several: the same vectors (padding does not leak into the pooler)
    np.testing.assert_allclose(sim.sentence_embeddings(models["torch"], tok, texts, batch_size=1),
                               vectors["torch"], rtol=0, atol=1e-5)
    # the vector is the port's pooler_output of the same ids, normalised
    batch = tok(texts[:1], return_tensors="np")
    raw = get_backend("torch").run(models["torch"], {"input_ids": batch["input_ids"]})["pooler_output"]
    np.testing.assert_allclose(vectors["torch"][0], raw[0] / np.linalg.norm(raw[0]), rtol=0, atol=1e-6)
    scores = sim.similarity(models["torch"], tok, texts)
    assert scores.shape == (4, 4) and np.allclose(np.diag(scores), 1.0, atol=1e-5) and np.allclose(scores, scores.T)
    found = {b: sim.paraphrases(models[b], tok, texts[0], num_return_sequences=4, max_new_tokens=6, seed=5)
             for b in BACKENDS}
    assert all(found[b] == found["torch"] for b in BACKENDS) and texts[0] not in found["torch"]
    with pytest.raises(InputError, match="no pooler"):
        sim.sentence_embeddings(get_backend("torch").load("masked_lm", root / "v2" / "masked_lm"), tok, texts)
    with pytest.raises(InputError, match="unilm=True"):
        sim.sentence_embeddings(get_backend("torch").load("causal_lm", root / "sim" / "causal_lm"), tok, texts)


def test_similarity_docstring_examples():
    import roformer_core.similarity as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_generate_loop_token_types_and_checks():
    seen = []

    def step(ids, mask, past, token_type_ids):
        seen.append(token_type_ids.tolist())
        return np.eye(6)[np.full(len(ids), 4)], None

    out = generate(step, np.array([[1, 2, 3]]), token_type_ids=np.array([[0, 0, 1]]), new_token_type=1,
                   max_new_tokens=2)
    assert out.tolist() == [[1, 2, 3, 4, 4]] and seen == [[[0, 0, 1]], [[1]]]
    with pytest.raises(InputError, match="num_return_sequences"):
        generate(step, np.array([[1]]), num_return_sequences=0, do_sample=True)
    with pytest.raises(InputError, match="token_type_ids"):
        generate(step, np.array([[1, 2]]), token_type_ids=np.array([[0]]))


def test_plan_load_sets_the_pooler_from_the_tensors():
    cfg = V2.replace()
    stored = {**canonical_spec(cfg, "causal_lm"), "roformer.pooler.dense.weight": (32, 32),
              "roformer.pooler.dense.bias": (32,)}
    plan = plan_load(stored, cfg, "causal_lm")
    assert plan.config.add_pooling_layer and "roformer.pooler.dense.weight" in plan.sources
    assert not cfg.add_pooling_layer  # the caller's config is left as it is


def test_v2_with_pooler_round_trips_through_the_other_formats(tmp_path):
    """tf_model.h5 and flax_model.msgpack keep a V2 model's missing norms and biases, its pooler and its config."""
    from roformer_convert import convert

    config = V2.replace(is_decoder=True, unilm=True, architectures=["RoFormerForCausalLM"])
    get_backend("torch").from_config("causal_lm", config.replace(add_pooling_layer=True)).save_pretrained(tmp_path / "a")
    first = Checkpoint(tmp_path / "a")
    for to in ("tf-h5", "flax"):
        convert(tmp_path / "a", tmp_path / to, to=to)
        result = convert(tmp_path / to, tmp_path / f"{to}-back")
        back = Checkpoint(tmp_path / f"{to}-back")
        assert result.head == "causal_lm" and sorted(back.names()) == sorted(first.names()), to
        assert all(np.array_equal(back.get(n), first.get(n)) for n in first.names()), to
        c = back.config
        assert (c.norm_type, c.use_bias, c.add_pooling_layer, c.unilm) == ("rms_norm", False, True, True), to
