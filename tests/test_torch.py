"""What is PyTorch's own: torch tensors in and out, dtypes, train/eval, generation details.

Every model behaviour shared by the backends (parity with the reference for every head and
config, cache, long sequences, losses, checkpoints, bad input) is in ``test_battery.py``.
"""

import numpy as np
import pytest
import torch

from harness import config_for, make_inputs, save_random_checkpoint
from roformer_core import CheckpointError, canonical_spec
from roformer_core.safetensors_io import write_safetensors
from roformer_torch import MODEL_CLASSES, RoFormerForCausalLM, RoFormerForMaskedLM, RoFormerModel


def feed(inputs, device, **extra):
    return {k: torch.as_tensor(v, device=device) for k, v in {**inputs, **extra}.items()}


def test_generate_greedy_sampling_and_eos(tmp_path):
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


def test_missing_tensors_are_listed(tmp_path):
    config = config_for("model")
    spec = canonical_spec(config)
    config.save(tmp_path)
    write_safetensors(tmp_path / "model.safetensors", {k: np.zeros(s, np.float32) for k, s in spec.items()
                                                       if "layer.0.output" not in k})
    with pytest.raises(CheckpointError, match="missing: encoder.layer.0.output.dense.weight"):
        RoFormerModel.from_pretrained(tmp_path)


def test_return_dict_false_and_tuple_access():
    config = config_for("question_answering")
    model = MODEL_CLASSES["question_answering"](config).eval()
    ids = torch.as_tensor(make_inputs(config, "question_answering")["input_ids"])
    with torch.no_grad():
        out = model(ids)
        tup = model(ids, return_dict=False)
    assert torch.equal(tup[0], out.start_logits) and torch.equal(out[1], out["end_logits"])
