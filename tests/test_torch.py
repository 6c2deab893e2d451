"""roformer_torch against the reference implementation (transformers, test-only) and itself."""

import logging

import numpy as np
import pytest
import torch
import transformers  # the oracle: a test-only dependency, never imported by the package

from harness import (ALL_HEADS, OUTPUT_FIELDS, VARIANTS, assert_outputs_close, config_for, make_inputs, make_labels,
                     save_random_checkpoint, to_numpy_dict)
from roformer_core import CheckpointError, ConfigError, InputError, canonical_spec
from roformer_core.safetensors_io import write_safetensors
from roformer_torch import MODEL_CLASSES, RoFormerForCausalLM, RoFormerForMaskedLM, RoFormerModel


REF_CLASSES = {"model": "RoFormerModel", "masked_lm": "RoFormerForMaskedLM", "causal_lm": "RoFormerForCausalLM",
               "sequence_classification": "RoFormerForSequenceClassification",
               "multiple_choice": "RoFormerForMultipleChoice", "token_classification": "RoFormerForTokenClassification",
               "question_answering": "RoFormerForQuestionAnswering"}


def reference_model(head, config, seed=0):
    torch.manual_seed(seed)
    ref = getattr(transformers, REF_CLASSES[head])(transformers.RoFormerConfig(**config.to_dict())).eval()
    with torch.no_grad():  # random biases and LayerNorms, so a mapping error cannot hide behind 0 and 1
        for p in ref.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return ref


def feed(inputs, device, **extra):
    return {k: torch.as_tensor(v, device=device) for k, v in {**inputs, **extra}.items()}


def cross_inputs(config, head, inputs, device):
    """encoder states for the decoder-with-cross-attention variant (heads that accept them)."""
    if not config.add_cross_attention or head not in ("model", "causal_lm"):
        return {}
    rng = np.random.default_rng(5)
    b = inputs["input_ids"].shape[0]
    mask = np.ones((b, 5), np.int64)
    mask[0, 3:] = 0
    return {"encoder_hidden_states": torch.as_tensor(rng.normal(size=(b, 5, config.hidden_size)), dtype=torch.float32,
                                                     device=device),
            "encoder_attention_mask": torch.as_tensor(mask, device=device)}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head", ALL_HEADS)
def test_state_dict_equals_canonical_spec(head, variant):
    config = config_for(head, variant)
    model = MODEL_CLASSES[head](config)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == canonical_spec(config, head)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head", ALL_HEADS)
def test_parity_with_reference_both_ways(head, variant, tmp_path, torch_device):
    config = config_for(head, variant)
    ref = reference_model(head, config).to(torch_device)
    ref.save_pretrained(tmp_path / "ref")
    inputs = make_inputs(config, head)
    labels = make_labels(config, head, inputs)
    extra = cross_inputs(config, head, inputs, torch_device)
    # the reference fails on attentions of a cross-attention config used without encoder states
    kwargs = dict(output_hidden_states=True, output_attentions=not (config.add_cross_attention and not extra))
    if head in ("model", "causal_lm") and config.is_decoder:
        kwargs["use_cache"] = False
    with torch.no_grad():
        want = to_numpy_dict(ref(**feed(inputs, torch_device, **labels), **extra, **kwargs, return_dict=True))
    want.pop("past_key_values", None)
    ours = MODEL_CLASSES[head].from_pretrained(tmp_path / "ref", device=torch_device)
    with torch.no_grad():
        got = to_numpy_dict(ours(**feed(inputs, torch_device, **labels), **extra, **kwargs))
        fast = to_numpy_dict(ours(**feed(inputs, torch_device, **labels), **extra))  # the SDPA path
    keys = [k for k in want if not k.startswith("past_key_values")]
    assert set(OUTPUT_FIELDS[head]) <= set(keys)
    assert any(k.startswith("attentions") for k in keys) == kwargs["output_attentions"]
    if head != "model":
        assert "loss" in keys
    assert_outputs_close(got, want, atol=1e-5, keys=keys)
    assert_outputs_close(fast, want, atol=1e-5, keys=OUTPUT_FIELDS[head])
    # ours saved -> reference loads it and gives the same numbers
    ours.save_pretrained(tmp_path / "ours")
    back = getattr(transformers, REF_CLASSES[head]).from_pretrained(tmp_path / "ours").to(torch_device).eval()
    with torch.no_grad():
        again = to_numpy_dict(back(**feed(inputs, torch_device, **labels), **extra, **kwargs, return_dict=True))
    assert_outputs_close(again, want, atol=0.0, keys=keys)


def test_reference_bin_checkpoint_loads(tmp_path):
    config = config_for("masked_lm")
    ref = reference_model("masked_lm", config)
    # what older reference releases wrote: the whole state dict (tied decoder, sinusoid table included)
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    ref.config.to_json_file(tmp_path / "config.json")
    ours = RoFormerForMaskedLM.from_pretrained(tmp_path)
    ids = torch.as_tensor(make_inputs(config, "masked_lm")["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(input_ids=ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["default", "rotary_value", "decoder_cross"])
def test_cache_incremental_equals_full_pass(variant, tmp_path, torch_device):
    config = config_for("causal_lm", variant)
    save_random_checkpoint(tmp_path, config, "causal_lm")
    model = RoFormerForCausalLM.from_pretrained(tmp_path, device=torch_device)
    inputs = make_inputs(config, "causal_lm", seq=9)
    ids, mask = (torch.as_tensor(inputs[k], device=torch_device) for k in ("input_ids", "attention_mask"))
    extra = cross_inputs(config, "causal_lm", inputs, torch_device)
    with torch.no_grad():
        full = model(ids, mask, **extra).logits
        out = model(ids[:, :4], mask[:, :4], use_cache=True, **extra)
        pieces, past = [out.logits], out.past_key_values
        for t in range(4, 9):
            out = model(ids[:, t:t + 1], mask[:, :t + 1], past_key_values=past, use_cache=True, **extra)
            pieces.append(out.logits)
            past = out.past_key_values
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=0)
    assert past[0][0].shape[2] == 9


def test_causal_lm_matches_reference_full_pass_and_is_causal(tmp_path):
    config = config_for("causal_lm")
    ref = reference_model("causal_lm", config)
    ref.save_pretrained(tmp_path)
    ours = RoFormerForCausalLM.from_pretrained(tmp_path)
    ids = torch.as_tensor(make_inputs(config, "causal_lm")["input_ids"])
    with torch.no_grad():
        a = ours(ids).logits
        torch.testing.assert_close(a, ref(input_ids=ids, use_cache=False).logits, atol=1e-5, rtol=0)
        changed = ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % config.vocab_size
        b = ours(changed).logits
    torch.testing.assert_close(a[:, :-1], b[:, :-1], atol=0, rtol=0)  # the future cannot leak backwards


def test_generate_greedy_and_sampling(tmp_path):
    config = config_for("causal_lm")
    save_random_checkpoint(tmp_path, config, "causal_lm")
    model = RoFormerForCausalLM.from_pretrained(tmp_path)
    prompt = torch.tensor([[5, 6, 7], [8, 9, 10]])
    out = model.generate(prompt, max_new_tokens=6)
    ids = prompt
    with torch.no_grad():  # greedy without a cache, one full pass per token
        for _ in range(6):
            nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
    assert torch.equal(out, ids)
    a = model.generate(prompt, max_new_tokens=5, do_sample=True, top_k=5, top_p=0.9, temperature=0.7, seed=3)
    b = model.generate(prompt, max_new_tokens=5, do_sample=True, top_k=5, top_p=0.9, temperature=0.7, seed=3)
    assert torch.equal(a, b) and a.shape == (2, 8)
    assert torch.equal(model.generate(prompt, max_new_tokens=4, do_sample=True, top_k=1, seed=0), out[:, :7])
    eos = int(out[0, 3])
    stopped = model.generate(prompt, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    assert stopped[0, 3] == eos and (stopped[0, 4:] == 0).all()


def test_sequence_longer_than_max_positions(tmp_path):
    config = config_for("model").replace(max_position_embeddings=16)
    model = RoFormerModel(config).eval()
    ids = torch.randint(1, config.vocab_size, (1, 40))
    with torch.no_grad():
        out = model(ids).last_hidden_state
    assert out.shape == (1, 40, 32) and torch.isfinite(out).all()
    # past the table's 512 precomputed rows too, through the cache path of a decoder
    dec = RoFormerForCausalLM(config.replace(is_decoder=True)).eval()
    long_ids = torch.randint(1, config.vocab_size, (1, 530))
    with torch.no_grad():
        full = dec(long_ids).logits[:, -3:]
        past = dec(long_ids[:, :527], use_cache=True).past_key_values
        tail = dec(long_ids[:, 527:], past_key_values=past).logits
    torch.testing.assert_close(tail, full, atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_save_load_bit_exact_and_dtype_kept(dtype, tmp_path):
    config = config_for("masked_lm", "embedding_size")
    model = RoFormerForMaskedLM(config).to(dtype)
    model.save_pretrained(tmp_path)
    back = RoFormerForMaskedLM.from_pretrained(tmp_path)
    for (k, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert b.dtype == dtype and torch.equal(a, b), k


@pytest.mark.parametrize("dtype, atol", [(torch.bfloat16, 0.1), (torch.float16, 0.02)])
def test_half_precision_runs_close_to_fp32(dtype, atol, tmp_path, torch_device):
    config = config_for("masked_lm")
    save_random_checkpoint(tmp_path, config, "masked_lm")
    inputs = make_inputs(config, "masked_lm")
    fp32 = RoFormerForMaskedLM.from_pretrained(tmp_path, device=torch_device)
    half = RoFormerForMaskedLM.from_pretrained(tmp_path, dtype=dtype, device=torch_device)
    with torch.no_grad():
        a = fp32(**feed(inputs, torch_device)).logits
        b = half(**feed(inputs, torch_device)).logits
    assert b.dtype == dtype
    assert (a - b.float()).abs().max() < atol


def test_dropout_only_in_training(tmp_path):
    config = config_for("sequence_classification").replace(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    model = MODEL_CLASSES["sequence_classification"](config)
    ids = torch.as_tensor(make_inputs(config, "sequence_classification")["input_ids"])
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)


def test_head_mask_matches_reference_4x(tmp_path):
    """transformers 5 dropped head_mask; 4.57.6 (the oracle venv) still has it."""
    from oracle import run_oracle

    config = config_for("model")
    save_random_checkpoint(tmp_path, config, "model")
    model = MODEL_CLASSES["model"].from_pretrained(tmp_path)
    inputs = make_inputs(config, "model")
    head_mask = [[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.5]]
    with torch.no_grad():
        ours = model(**feed(inputs, "cpu"), head_mask=torch.tensor(head_mask)).last_hidden_state.numpy()
        plain = model(**feed(inputs, "cpu")).last_hidden_state.numpy()
    theirs = run_oracle("""
        import json, sys, torch, transformers
        p = json.load(sys.stdin)
        m = transformers.RoFormerModel.from_pretrained(p["dir"]).eval()
        with torch.no_grad():
            out = m(**{k: torch.tensor(v) for k, v in p["inputs"].items()}, head_mask=torch.tensor(p["head_mask"]))
        print(json.dumps([transformers.__version__, out.last_hidden_state.tolist()]))
    """, {"dir": str(tmp_path), "inputs": {k: v.tolist() for k, v in inputs.items()}, "head_mask": head_mask})
    assert theirs[0] == "4.57.6"
    np.testing.assert_allclose(ours, np.array(theirs[1]), atol=1e-5, rtol=0)
    assert np.abs(ours - plain).max() > 1e-2  # the mask did something


@pytest.mark.parametrize("problem, labels", [("regression", torch.randn(2, 3)),
                                             ("multi_label_classification", torch.rand(2, 3).round()),
                                             ("single_label_classification", torch.tensor([2, 0]))])
def test_classification_problem_types_match_reference(problem, labels):
    config = config_for("sequence_classification").replace(problem_type=problem)
    model = MODEL_CLASSES["sequence_classification"](config).eval()
    ref = getattr(transformers, REF_CLASSES["sequence_classification"])(transformers.RoFormerConfig(**config.to_dict()))
    ref.load_state_dict(model.state_dict(), strict=False)
    ref.eval()
    ids = torch.as_tensor(make_inputs(config, "sequence_classification")["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model(ids, labels=labels).loss, ref(ids, labels=labels).loss, atol=1e-6, rtol=0)


def test_bare_checkpoint_into_head_says_so(tmp_path, caplog):
    config = config_for("model")
    save_random_checkpoint(tmp_path, config, "model")
    with caplog.at_level(logging.WARNING, logger="roformer"):
        model = MODEL_CLASSES["question_answering"].from_pretrained(tmp_path)
    assert "qa_outputs.weight" in caplog.text and "newly initialised" in caplog.text
    bare = RoFormerModel.from_pretrained(tmp_path)
    assert torch.equal(model.roformer.embeddings.word_embeddings.weight, bare.embeddings.word_embeddings.weight)
    # and a head checkpoint into the bare model
    MODEL_CLASSES["masked_lm"](config).save_pretrained(tmp_path / "mlm")
    with caplog.at_level(logging.WARNING, logger="roformer"):
        RoFormerModel.from_pretrained(tmp_path / "mlm")
    assert "cls.predictions.bias" in caplog.text


# -- bad input ------------------------------------------------------------------------------
def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        RoFormerModel.from_pretrained(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        RoFormerModel.from_pretrained(tmp_path)
    config = config_for("model")
    save_random_checkpoint(tmp_path / "ok", config, "model")
    raw = (tmp_path / "ok" / "model.safetensors").read_bytes()
    (tmp_path / "ok" / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        RoFormerModel.from_pretrained(tmp_path / "ok")
    (tmp_path / "ok" / "model.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        RoFormerModel.from_pretrained(tmp_path / "ok")


def test_config_contradicting_weights(tmp_path):
    config = config_for("model")
    save_random_checkpoint(tmp_path, config, "model")
    with pytest.raises(CheckpointError, match=r"wrong shape: .*embeddings.word_embeddings.weight \(99, 32\)"):
        RoFormerModel.from_pretrained(tmp_path, vocab_size=120)
    with pytest.raises(CheckpointError, match="unexpected: encoder.layer.1"):
        RoFormerModel.from_pretrained(tmp_path, num_hidden_layers=1)
    with pytest.raises(ConfigError, match="hidden_size"):
        RoFormerModel.from_pretrained(tmp_path, num_attention_heads=5)
    spec = canonical_spec(config)
    write_safetensors(tmp_path / "model.safetensors", {k: np.zeros(s, np.float32) for k, s in spec.items()
                                                       if "layer.0.output" not in k})
    with pytest.raises(CheckpointError, match="missing: encoder.layer.0.output.dense.weight"):
        RoFormerModel.from_pretrained(tmp_path)


def test_bad_model_inputs():
    config = config_for("model")
    model = RoFormerModel(config).eval()
    with pytest.raises(InputError, match=r"input_ids holds ids up to 150, outside \[0, 99\)"):
        model(torch.tensor([[1, 150]]))
    with pytest.raises(InputError, match="down to -1"):
        model(torch.tensor([[1, -1]]))
    with pytest.raises(InputError, match="integer"):
        model(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(InputError, match="attention_mask has shape"):
        model(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 2))
    with pytest.raises(InputError, match="token_type_ids"):
        model(torch.tensor([[1, 2, 3]]), token_type_ids=torch.tensor([[0, 2, 1]]))
    with pytest.raises(InputError, match="input_ids or inputs_embeds"):
        model()
    with pytest.raises(InputError, match="num_choices"):
        MODEL_CLASSES["multiple_choice"](config)(torch.tensor([[1, 2]]))


def test_inputs_embeds_equal_ids():
    config = config_for("model")
    model = RoFormerModel(config).eval()
    ids = torch.as_tensor(make_inputs(config, "model")["input_ids"])
    with torch.no_grad():
        a = model(ids).last_hidden_state
        b = model(inputs_embeds=model.embeddings.word_embeddings(ids)).last_hidden_state
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_prediction_mask_gives_the_same_logits():
    config = config_for("masked_lm")
    model = RoFormerForMaskedLM(config).eval()
    ids = torch.as_tensor(make_inputs(config, "masked_lm")["input_ids"])
    where = torch.zeros_like(ids, dtype=torch.bool)
    where[0, 2] = where[1, 4] = True
    with torch.no_grad():
        full = model(ids).logits
        some = model(ids, prediction_mask=where).logits
    torch.testing.assert_close(some, full[where], atol=1e-6, rtol=0)


def test_return_dict_false_and_tuple_access():
    config = config_for("question_answering")
    model = MODEL_CLASSES["question_answering"](config).eval()
    ids = torch.as_tensor(make_inputs(config, "question_answering")["input_ids"])
    with torch.no_grad():
        out = model(ids)
        tup = model(ids, return_dict=False)
    assert torch.equal(tup[0], out.start_logits) and torch.equal(out[1], out["end_logits"])
