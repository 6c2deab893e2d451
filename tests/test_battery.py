"""The test battery: every model behaviour written once and run for every backend.

Each test takes the ``backend`` fixture (``roformer_core.backends.get_backend`` for torch, keras
and flax) and talks to the framework only through that adapter, like keras-hub's
``run_backbone_test`` or the reference library's tester mixins. The oracle is the reference
implementation (transformers 5.x, PyTorch; and 4.57.6 in ``.venv-oracle`` for ``head_mask``):
every backend is compared with it directly, not with another backend of ours. What is truly
per-framework (Keras ``fit`` and SavedModel, ``jit``/``pmap``, torch SDPA, dropout switches) stays
in the per-backend files.
"""

import logging

import numpy as np
import pytest
from harness import (ALL_HEADS, OUTPUT_FIELDS, VARIANTS, assert_outputs_close, config_for, cross_inputs, flatten,
                     make_inputs, make_labels, reference_model, reference_outputs)

from roformer_core import canonical_spec
from roformer_core.backends import get_backend
from roformer_core.checkpoint import Checkpoint
from roformer_core.errors import CheckpointError, ConfigError, InputError

BACKENDS = ("torch", "keras", "flax")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend on its framework's default device (a GPU or TPU when there is one, so the battery
    is the accelerator check too), float32 matmuls at full precision as in the reference."""
    if request.param == "keras":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
        yield get_backend("keras")
    elif request.param == "flax":
        import jax

        with jax.default_matmul_precision("highest"):
            yield get_backend("flax")
    else:
        yield get_backend(request.param)


class References:
    """Random reference models saved as checkpoints, and their outputs, made once per (head, variant)."""

    def __init__(self, root):
        self.root, self.cache = root, {}

    def get(self, head, variant="default"):
        if (head, variant) not in self.cache:
            config = config_for(head, variant)
            ref = reference_model(head, config)
            folder = self.root / f"{head}-{variant}"
            ref.save_pretrained(folder)
            inputs = make_inputs(config, head)
            labels = make_labels(config, head, inputs)
            extra = cross_inputs(config, head)
            # the reference cannot give attentions of a cross-attention layer that got no encoder states
            options = dict(output_hidden_states=True,
                           output_attentions=not (config.add_cross_attention and not extra))
            cache = {"use_cache": False} if config.is_decoder and head in ("model", "causal_lm") else {}
            want = reference_outputs(ref, {**inputs, **labels, **extra}, **options, **cache)
            want = {k: v for k, v in want.items() if not k.startswith("past_key_values")}
            self.cache[head, variant] = (folder, config, inputs, labels, extra, options, want, ref)
        return self.cache[head, variant]


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    return References(tmp_path_factory.mktemp("battery"))


def _state(backend, model):
    return backend.state_dict(model)


# -- structure ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head", ALL_HEADS)
def test_weights_equal_canonical_spec(backend, head, variant):
    config = config_for(head, variant)
    state = _state(backend, backend.from_config(head, config))
    assert {k: tuple(v.shape) for k, v in state.items()} == canonical_spec(config, head)
    assert list(state) == list(canonical_spec(config, head))  # the reference's order


# -- numbers --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head", ALL_HEADS)
def test_parity_with_reference(backend, head, variant, refs):
    """Every output (loss, head fields, hidden_states, attentions, cross-attentions) within 1e-5 of the
    reference, with padding and both token types; the same output keys; then the fast attention path."""
    folder, config, inputs, labels, extra, options, want, _ = refs.get(head, variant)
    model = backend.load(head, folder)
    got = flatten(backend.run(model, {**inputs, **labels, **extra}, **options))
    got = {k: v for k, v in got.items() if not k.startswith("past_key_values")}
    assert sorted(got) == sorted(want)
    assert set(OUTPUT_FIELDS[head]) <= set(got) and ("loss" in got) == (head != "model")
    assert any(k.startswith("cross_attentions") for k in got) == bool(extra)
    assert_outputs_close(got, want, atol=1e-5)
    fast = flatten(backend.run(model, {**inputs, **extra}))  # no weights asked for: SDPA / dot_product_attention
    assert_outputs_close(fast, want, atol=1e-5, keys=OUTPUT_FIELDS[head])


@pytest.mark.parametrize("problem, num_labels", [("regression", 1), ("regression", 3),
                                                 ("multi_label_classification", 3),
                                                 ("single_label_classification", 3)])
def test_sequence_classification_losses_match_reference(backend, problem, num_labels, tmp_path):
    config = config_for("sequence_classification").replace(problem_type=problem, num_labels=num_labels)
    ref = reference_model("sequence_classification", config)
    ref.save_pretrained(tmp_path)
    inputs = make_inputs(config, "sequence_classification")
    rng = np.random.default_rng(2)
    labels = (rng.integers(0, num_labels, 2) if problem == "single_label_classification"
              else rng.random((2, num_labels)).round(1).astype(np.float32))
    want = reference_outputs(ref, {**inputs, "labels": labels})
    got = backend.run(backend.load("sequence_classification", tmp_path), {**inputs, "labels": labels})
    assert_outputs_close(flatten(got), want, atol=1e-5, keys=["loss", "logits"])


def test_sequences_longer_than_max_positions(backend, refs, tmp_path):
    """Past the table: the reference with a larger table (same weights) gives the same numbers."""
    import torch
    import transformers

    folder, config, _, _, _, _, _, ref = refs.get("model", "rotary_value")
    inputs = make_inputs(config, "model", seq=config.max_position_embeddings + 17)
    big = transformers.RoFormerModel(transformers.RoFormerConfig(
        **config.replace(max_position_embeddings=256).to_dict())).eval()
    big.load_state_dict({k: v for k, v in ref.state_dict().items() if "embed_positions" not in k}, strict=False)
    want = reference_outputs(big, inputs, output_hidden_states=True)
    got = flatten(backend.run(backend.load("model", folder), inputs, output_hidden_states=True))
    assert_outputs_close(got, want, atol=1e-5, keys=["last_hidden_state", "hidden_states.1"])
    assert torch.isfinite(torch.as_tensor(got["last_hidden_state"])).all()


def test_head_mask_matches_reference_4x(backend, refs, head_mask_reference):
    """transformers 5 dropped head_mask; 4.57.6 (the oracle venv) still has it."""
    folder, config, inputs, _, _, _, _, _ = refs.get("model")
    mask, want = head_mask_reference
    got = backend.run(backend.load("model", folder), {**inputs, "head_mask": mask}, output_attentions=True)
    np.testing.assert_allclose(got["last_hidden_state"], want, atol=1e-5, rtol=0)
    assert not np.asarray(got["attentions"][0])[:, 1].any()  # head 1 of layer 0 is off


@pytest.fixture(scope="module")
def head_mask_reference(refs):
    from oracle import run_oracle

    folder, config, inputs, _, _, _, _, _ = refs.get("model")
    mask = np.ones((config.num_hidden_layers, config.num_attention_heads), np.float32)
    mask[0, 1], mask[1, 3], mask[1, 0] = 0.0, 0.0, 0.5
    version, hidden = run_oracle("""
        import json, sys, torch, transformers
        p = json.load(sys.stdin)
        m = transformers.RoFormerModel.from_pretrained(p["dir"]).eval()
        with torch.no_grad():
            out = m(**{k: torch.tensor(v) for k, v in p["inputs"].items()}, head_mask=torch.tensor(p["head_mask"]))
        print(json.dumps([transformers.__version__, out.last_hidden_state.tolist()]))
    """, {"dir": str(folder), "inputs": {k: v.tolist() for k, v in inputs.items()}, "head_mask": mask.tolist()})
    assert version == "4.57.6"
    return mask, np.array(hidden, np.float32)


def test_inputs_embeds_equal_ids(backend, refs):
    folder, config, inputs, _, _, _, want, _ = refs.get("model")
    model = backend.load("model", folder)
    table = _state(backend, model)["embeddings.word_embeddings.weight"]
    by_embeds = backend.run(model, {"inputs_embeds": table[inputs["input_ids"]],
                                    "attention_mask": inputs["attention_mask"],
                                    "token_type_ids": inputs["token_type_ids"]})
    np.testing.assert_allclose(by_embeds["last_hidden_state"], want["last_hidden_state"], atol=1e-5, rtol=0)


def test_prediction_mask_gives_logits_at_those_positions(backend, refs):
    folder, config, inputs, _, _, _, want, _ = refs.get("masked_lm")
    where = inputs["attention_mask"].astype(bool) & (np.arange(inputs["input_ids"].shape[1]) % 2 == 0)
    model = backend.load("masked_lm", folder)
    got = backend.run(model, {**inputs, "prediction_mask": where})
    np.testing.assert_allclose(got["logits"], want["logits"][where], atol=1e-5, rtol=0)
    # with labels, full [batch, seq] or only those positions' [count]: the loss of those positions
    labels = np.where(where, inputs["input_ids"], -100)
    full = backend.run(model, {**inputs, "labels": labels})["loss"]
    for given in (labels, inputs["input_ids"][where]):
        loss = backend.run(model, {**inputs, "prediction_mask": where, "labels": given})["loss"]
        np.testing.assert_allclose(loss, full, atol=1e-5, rtol=0)


# -- decoding -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["default", "rotary_value", "decoder_cross"])
def test_cache_incremental_equals_full_pass(backend, variant, refs):
    folder, config, inputs, _, extra, _, _, _ = refs.get("causal_lm", variant)
    model = backend.load("causal_lm", folder)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    full = backend.run(model, {"input_ids": ids, "attention_mask": mask, **extra})["logits"]
    out, past = backend.step(model, {"input_ids": ids[:, :4], "attention_mask": mask[:, :4], **extra})
    pieces = [out["logits"]]
    for t in range(4, ids.shape[1]):
        out, past = backend.step(model, {"input_ids": ids[:, t:t + 1], "attention_mask": mask[:, :t + 1], **extra},
                                 past)
        pieces.append(out["logits"])
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5, rtol=0)


def test_causal_lm_hides_the_future(backend, refs):
    folder, config, inputs, _, _, _, _, _ = refs.get("causal_lm")
    model = backend.load("causal_lm", folder)
    ids = inputs["input_ids"]
    changed = ids.copy()
    changed[:, -1] = (changed[:, -1] + 1) % config.vocab_size
    a, b = (backend.run(model, {"input_ids": x})["logits"] for x in (ids, changed))
    np.testing.assert_array_equal(a[:, :-1], b[:, :-1])
    assert np.abs(a[:, -1] - b[:, -1]).max() > 0


def test_generate_equals_the_reference_greedy_and_one_sampler(backend, refs):
    """Greedy decoding equals the reference's argmax, one full pass per token (no cache); sampling with
    a seed gives the same tokens in every backend (the sampler is roformer_core.generation)."""
    import torch

    folder, config, inputs, _, _, _, _, ref = refs.get("causal_lm")
    ids, mask = inputs["input_ids"][:, :5], inputs["attention_mask"][:, :5].copy()
    model = backend.load("causal_lm", folder)
    greedy = backend.generate(model, ids[:1], mask[:1], max_new_tokens=6)
    want = torch.as_tensor(ids[:1])
    with torch.no_grad():
        for _ in range(6):
            nxt = ref(input_ids=want, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            want = torch.cat([want, nxt], 1)
    np.testing.assert_array_equal(greedy, want.numpy())
    mask[1, 3:] = 0
    sampled = backend.generate(model, ids, mask, max_new_tokens=6, do_sample=True, top_k=5, top_p=0.9,
                               temperature=0.8, seed=3)
    torch_backend = get_backend("torch")
    same = torch_backend.generate(torch_backend.load("causal_lm", folder), ids, mask, max_new_tokens=6,
                                  do_sample=True, top_k=5, top_p=0.9, temperature=0.8, seed=3)
    assert sampled.shape == (2, 11)
    np.testing.assert_array_equal(sampled, same)


# -- checkpoints and dtypes -----------------------------------------------------------------------------
def test_saved_checkpoint_loads_bit_exactly_everywhere(backend, tmp_path):
    config = config_for("masked_lm", "embedding_size").replace(tie_word_embeddings=False)
    ref = reference_model("masked_lm", config)
    ref.save_pretrained(tmp_path / "ref")
    want = Checkpoint(tmp_path / "ref")
    backend.save(backend.load("masked_lm", tmp_path / "ref"), tmp_path / "ours")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["config.json", "model.safetensors"]
    for other in BACKENDS:
        other = get_backend(other)
        state = _state(other, other.load("masked_lm", tmp_path / "ours"))
        assert list(state) == list(canonical_spec(config, "masked_lm"))
        for name, array in state.items():
            np.testing.assert_array_equal(array, want.get(name), err_msg=f"{other.name}: {name}")



def test_the_reference_loads_what_we_save(backend, refs, tmp_path):
    import transformers

    folder, config, inputs, _, _, _, want, _ = refs.get("masked_lm", "embedding_size")
    backend.save(backend.load("masked_lm", folder), tmp_path)
    back = transformers.RoFormerForMaskedLM.from_pretrained(tmp_path).eval()
    assert_outputs_close(reference_outputs(back, inputs), want, atol=0.0, keys=["logits"])


def test_bfloat16_storage_round_trips_and_runs_close(backend, refs, tmp_path):
    folder, config, inputs, _, _, _, want, _ = refs.get("masked_lm")
    model = backend.load("masked_lm", folder, "bfloat16")
    logits = backend.run(model, inputs)["logits"]
    scale = np.abs(want["logits"]).max()
    assert np.abs(logits - want["logits"]).max() <= 0.05 * scale + 0.05
    backend.save(model, tmp_path / "bf16")
    ckpt = Checkpoint(tmp_path / "bf16")
    assert {ckpt.dtype(n) for n in ckpt.names()} == {"BF16"}
    stored = {n: ckpt.get(n) for n in ckpt.names()}
    for other in BACKENDS:  # every backend reads the bits as they are, and keeps bf16
        other = get_backend(other)
        again = other.load("masked_lm", tmp_path / "bf16", None)
        for name, array in _state(other, again).items():
            assert array.dtype.itemsize == 2, (other.name, name, array.dtype)
            np.testing.assert_array_equal(array.view(np.uint16), stored[name], err_msg=f"{other.name}: {name}")


def test_reference_pytorch_bin_loads_without_torch_code(backend, refs, tmp_path):
    """A reference ``pytorch_model.bin`` with the tied decoder and the sinusoid table (what older releases
    wrote), zip and legacy serialisation, read by roformer_core's own unpickler in every backend."""
    import torch

    folder, config, inputs, _, _, _, want, ref = refs.get("masked_lm")
    for zipped in (True, False):
        target = tmp_path / f"bin-{zipped}"
        target.mkdir()
        torch.save(ref.state_dict(), target / "pytorch_model.bin", _use_new_zipfile_serialization=zipped)
        ref.config.to_json_file(target / "config.json")
        got = backend.run(backend.load("masked_lm", target), inputs)
        np.testing.assert_allclose(got["logits"], want["logits"], atol=1e-5, rtol=0)


def test_bare_checkpoint_into_a_head_and_back(backend, refs, tmp_path, caplog):
    folder, config, inputs, _, _, _, want, _ = refs.get("model")
    with caplog.at_level(logging.WARNING, logger="roformer"):
        qa = backend.load("question_answering", folder)
    assert "qa_outputs.weight" in caplog.text and "newly initialised" in caplog.text
    assert np.asarray(_state(backend, qa)["qa_outputs.weight"]).std() > 0
    hidden = backend.run(qa, inputs, output_hidden_states=True)["hidden_states"][-1]
    np.testing.assert_allclose(hidden, want["last_hidden_state"], atol=1e-5, rtol=0)
    backend.save(qa, tmp_path / "qa")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="roformer"):
        bare = backend.load("model", tmp_path / "qa")
    assert "qa_outputs.weight" in caplog.text  # a head's weights are not used by the bare model: said so
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="roformer"):
        backend.load("model", tmp_path / "qa", report=False)  # a caller who expects it asks for quiet
    assert "qa_outputs" not in caplog.text
    np.testing.assert_allclose(backend.run(bare, inputs)["last_hidden_state"], want["last_hidden_state"],
                               atol=1e-5, rtol=0)


# -- bad input ------------------------------------------------------------------------------------------
def _ids(config, shape=(1, 4)):
    return np.random.default_rng(0).integers(1, config.vocab_size, size=shape)


BAD_INPUTS = {
    "float ids": ("model", "default", lambda c: {"input_ids": _ids(c).astype(np.float32)}, "must hold integers"),
    "ids past the vocabulary": ("model", "default", lambda c: {"input_ids": np.array([[1, c.vocab_size + 51]])},
                                r"input_ids holds ids up to 150, outside \[0, 99\)"),
    "negative ids": ("model", "default", lambda c: {"input_ids": np.array([[1, -1]])}, "down to -1"),
    "token type out of range": ("model", "default", lambda c: {"input_ids": _ids(c, (1, 3)),
                                                               "token_type_ids": np.array([[0, 2, 1]])},
                                "token_type_ids holds ids up to 2"),
    "mask shape": ("model", "default", lambda c: {"input_ids": _ids(c, (1, 3)),
                                                  "attention_mask": np.ones((1, 2), np.int64)},
                   "attention_mask has shape"),
    "token types shape": ("model", "default", lambda c: {"input_ids": _ids(c, (1, 3)),
                                                         "token_type_ids": np.zeros((1, 2), np.int64)},
                          "token_type_ids has shape"),
    "no ids": ("model", "default", lambda c: {"attention_mask": np.ones((1, 3), np.int64)}, "input_ids or inputs_embeds"),
    "ids and embeds": ("model", "default", lambda c: {"input_ids": _ids(c, (1, 3)),
                                                      "inputs_embeds": np.zeros((1, 3, 32), np.float32)}, "not both"),
    "choices not 3-D": ("multiple_choice", "default", lambda c: {"input_ids": _ids(c)}, "num_choices"),
    "no cross-attention": ("model", "default", lambda c: {"input_ids": _ids(c, (1, 3)),
                                                          "encoder_hidden_states": np.zeros((1, 2, 32), np.float32)},
                           "no cross-attention"),
    "float labels": ("token_classification", "default",
                     lambda c: {"input_ids": _ids(c), "labels": np.zeros((1, 4), np.float32)}, "labels must hold"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_clear_error(backend, case, refs):
    head, variant, make, message = BAD_INPUTS[case]
    folder, config = refs.get(head, variant)[:2]
    model = backend.load(head, folder)
    with pytest.raises(InputError, match=message):
        backend.run(model, make(config))


def test_bad_checkpoints(backend, refs, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        backend.load("model", tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        backend.load("model", tmp_path)
    folder, config = refs.get("model")[:2]
    with pytest.raises(CheckpointError, match=r"wrong shape: .*embeddings.word_embeddings.weight \(99, 32\)"):
        backend.load("model", folder, vocab_size=120)
    with pytest.raises(CheckpointError, match="unexpected: encoder.layer.1"):
        backend.load("model", folder, num_hidden_layers=1)
    with pytest.raises(ConfigError, match="hidden_size"):
        backend.load("model", folder, num_attention_heads=5)
    with pytest.raises(ConfigError, match="did you mean 'hidden_size'"):
        backend.load("model", folder, hiden_size=64)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((folder / "config.json").read_bytes())
    raw = (folder / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        backend.load("model", broken)


@pytest.mark.parametrize("head", ["masked_lm", "token_classification", "question_answering"])
def test_a_batch_without_any_label_has_loss_zero(backend, head, refs):
    """One rule in every backend: no labelled position gives loss 0 (and so zero gradients), not NaN."""
    folder, config, inputs = refs.get(head)[:3]
    if head == "question_answering":
        seq = inputs["input_ids"].shape[1]
        labels = {"start_positions": np.full(2, seq + 3), "end_positions": np.full(2, seq + 3)}
    else:
        labels = {"labels": np.full(inputs["input_ids"].shape, -100)}
    loss = backend.run(backend.load(head, folder), {**inputs, **labels})["loss"]
    assert float(loss) == 0.0
