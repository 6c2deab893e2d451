"""roformer-convert against checkpoints made by the reference (transformers 4.57.6, in the oracle venv).

Two oracle calls for the whole module: the first makes, for every head, the reference's
PyTorch (.bin and safetensors), TF (tf_model.h5) and Flax (flax_model.msgpack) files with
the same weights, their outputs, and a TF1 checkpoint converted by the reference's own
``load_tf_weights_in_roformer``; the second loads the files *we* wrote back into the
reference TF and Flax classes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness import OUTPUT_FIELDS, assert_outputs_close, config_for, make_inputs, torch_outputs
from oracle import run_oracle
from roformer_convert import convert, verify
from roformer_core.checkpoint import Checkpoint

pytestmark = pytest.mark.oracle4

HEADS = ["model", "masked_lm", "causal_lm", "sequence_classification", "multiple_choice", "token_classification",
         "question_answering"]
FLAX_HEADS = [h for h in HEADS if h != "causal_lm"]  # the reference has no Flax causal LM

_MAKE = r"""
import json, os, sys
import numpy as np, torch, transformers
import tensorflow as tf
from transformers.models.roformer.modeling_roformer import load_tf_weights_in_roformer

p = json.load(sys.stdin)
names = p["classes"]
result = {"pt": {}, "tf": {}, "flax": {}}

def fields(out):
    return {k: np.asarray(v, dtype=np.float32).tolist() for k, v in out.items()
            if k in ("last_hidden_state", "logits", "start_logits", "end_logits")}

for head, cfg in p["configs"].items():
    torch.manual_seed(0)
    config = transformers.RoFormerConfig(**cfg)
    model = getattr(transformers, names[head])(config).eval()
    with torch.no_grad():  # random biases and LayerNorms: a mapping slip cannot hide behind 0 and 1
        for t in model.parameters():
            if t.dim() == 1:
                t.add_(torch.randn_like(t) * 0.1)
    d = os.path.join(p["dir"], head)
    model.save_pretrained(d + "/pt_bin", safe_serialization=False)
    model.save_pretrained(d + "/pt_st")
    inputs = {k: np.asarray(v, dtype=np.int64) for k, v in p["inputs"][head].items()}
    with torch.no_grad():
        result["pt"][head] = fields(model(**{k: torch.as_tensor(v) for k, v in inputs.items()}))
    tf_model = getattr(transformers, "TF" + names[head]).from_pretrained(d + "/pt_st", from_pt=True)
    tf_model.save_pretrained(d + "/tf")
    result["tf"][head] = fields(tf_model(**{k: tf.constant(v) for k, v in inputs.items()}, training=False))
    if hasattr(transformers, "Flax" + names[head]):
        flax_model = getattr(transformers, "Flax" + names[head]).from_pretrained(d + "/pt_st", from_pt=True)
        flax_model.save_pretrained(d + "/flax")
        result["flax"][head] = fields(flax_model(**inputs))

# An original-style TF1 checkpoint (bert4keras names), written with tf.compat.v1 Saver.
cfg = transformers.RoFormerConfig(**p["configs"]["masked_lm"])
V, H, I, T, L = cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.type_vocab_size, cfg.num_hidden_layers
rng = np.random.default_rng(3)
shapes = {"bert/embeddings/word_embeddings": (V, H), "bert/embeddings/token_type_embeddings": (T, H),
          "bert/embeddings/LayerNorm/gamma": (H,), "bert/embeddings/LayerNorm/beta": (H,),
          "cls/predictions/transform/dense/kernel": (H, H), "cls/predictions/transform/dense/bias": (H,),
          "cls/predictions/transform/LayerNorm/gamma": (H,), "cls/predictions/transform/LayerNorm/beta": (H,),
          "cls/predictions/output_bias": (V,)}
for i in range(L):
    b = f"bert/encoder/layer_{i}/"
    for proj in ("query", "key", "value"):
        shapes[b + f"attention/self/{proj}/kernel"] = (H, H)
        shapes[b + f"attention/self/{proj}/bias"] = (H,)
    shapes.update({b + "attention/output/dense/kernel": (H, H), b + "attention/output/dense/bias": (H,),
                   b + "attention/output/LayerNorm/gamma": (H,), b + "attention/output/LayerNorm/beta": (H,),
                   b + "intermediate/dense/kernel": (H, I), b + "intermediate/dense/bias": (I,),
                   b + "output/dense/kernel": (I, H), b + "output/dense/bias": (H,),
                   b + "output/LayerNorm/gamma": (H,), b + "output/LayerNorm/beta": (H,)})
weights = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
slots = {f"{n}/adam_{m}": rng.normal(size=s).astype(np.float32) for n, s in shapes.items() for m in "mv"}
steps = {"global_step": np.int64(1000)}
# the reference conversion fails on these two (it has no pooler and no NSP head); ours keeps the pooler
extra = {"bert/pooler/dense/kernel": rng.normal(size=(H, H)).astype(np.float32),
         "bert/pooler/dense/bias": rng.normal(size=(H,)).astype(np.float32),
         "cls/seq_relationship/output_weights": rng.normal(size=(2, H)).astype(np.float32),
         "cls/seq_relationship/output_bias": rng.normal(size=(2,)).astype(np.float32)}
def save(values, prefix):
    variables = {n: tf.Variable(v) for n, v in values.items()}
    tf.compat.v1.train.Saver(var_list=variables).save(None, prefix)
save({**weights, **slots, **steps, **extra}, p["dir"] + "/tf1/bert_model.ckpt")
save({**weights, **slots, **steps}, p["dir"] + "/tf1_for_reference/bert_model.ckpt")
ref = load_tf_weights_in_roformer(transformers.RoFormerForMaskedLM(cfg), cfg,
                                  p["dir"] + "/tf1_for_reference/bert_model.ckpt")
ref.save_pretrained(p["dir"] + "/tf1_reference_converted")
print(json.dumps(result))
"""

_LOAD = r"""
import json, sys
import numpy as np, transformers
import tensorflow as tf

p = json.load(sys.stdin)
result = {"tf": {}, "flax": {}}
def fields(out):
    return {k: np.asarray(v, dtype=np.float32).tolist() for k, v in out.items()
            if k in ("last_hidden_state", "logits", "start_logits", "end_logits")}
for kind, folders in p["folders"].items():
    for head, folder in folders.items():
        inputs = {k: np.asarray(v, dtype=np.int64) for k, v in p["inputs"][head].items()}
        if kind == "tf":
            model = getattr(transformers, "TF" + p["classes"][head]).from_pretrained(folder)
            result[kind][head] = fields(model(**{k: tf.constant(v) for k, v in inputs.items()}, training=False))
        else:
            model = getattr(transformers, "Flax" + p["classes"][head]).from_pretrained(folder)
            result[kind][head] = fields(model(**inputs))
print(json.dumps(result))
"""

CLASSES = {"model": "RoFormerModel", "masked_lm": "RoFormerForMaskedLM", "causal_lm": "RoFormerForCausalLM",
           "sequence_classification": "RoFormerForSequenceClassification",
           "multiple_choice": "RoFormerForMultipleChoice", "token_classification": "RoFormerForTokenClassification",
           "question_answering": "RoFormerForQuestionAnswering"}


def _inputs(head):
    return make_inputs(config_for(head), head)


def _arrays(outputs: dict) -> dict:
    return {k: np.asarray(v, np.float32) for k, v in outputs.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Reference-made files for every head, their outputs, and the reference TF1 conversion."""
    root = tmp_path_factory.mktemp("reference")
    payload = {"dir": str(root), "classes": CLASSES,
               "configs": {h: config_for(h).to_dict() for h in HEADS},
               "inputs": {h: {k: v.tolist() for k, v in _inputs(h).items()} for h in HEADS}}
    outputs = run_oracle(_MAKE, payload)
    return root, outputs


@pytest.mark.parametrize("kind", ["pt_bin", "pt_st", "tf", "flax"])
def test_reference_files_convert_to_canonical_with_same_outputs(reference, kind, tmp_path):
    root, outputs = reference
    for head in FLAX_HEADS if kind == "flax" else HEADS:
        out = tmp_path / head
        result = convert(root / head / kind, out)
        assert result.head == head
        got = torch_outputs(out, head, _inputs(head))
        assert_outputs_close(got, _arrays(outputs["pt"][head]), atol=1e-5, keys=OUTPUT_FIELDS[head])
        # every installed backend (PyTorch, and Keras / Flax once present) gives the same numbers
        check = verify(out)
        assert check.ok, check.table()


def test_reference_files_of_one_model_convert_to_identical_tensors(reference, tmp_path):
    """The reference's .bin, safetensors, h5 and msgpack of one model become the same canonical bytes."""
    root, _ = reference
    kinds = ["pt_bin", "pt_st", "tf", "flax"]
    for kind in kinds:
        convert(root / "masked_lm" / kind, tmp_path / kind)
    first = Checkpoint(tmp_path / kinds[0])
    for kind in kinds[1:]:
        other = Checkpoint(tmp_path / kind)
        assert other.names() == first.names()
        for name in first.names():
            assert np.array_equal(other.get(name), first.get(name)), (kind, name)


def test_canonical_back_to_reference_tf_and_flax_formats(reference, tmp_path):
    """Our tf_model.h5 / flax_model.msgpack load in the reference classes and give their outputs."""
    root, outputs = reference
    folders = {"tf": {}, "flax": {}}
    for head in HEADS:
        canonical = tmp_path / "canonical" / head
        convert(root / head / "pt_st", canonical)
        for kind, to, heads in (("tf", "tf-h5", HEADS), ("flax", "flax", FLAX_HEADS)):
            if head in heads:
                folders[kind][head] = str(tmp_path / kind / head)
                convert(canonical, folders[kind][head], to=to)
    payload = {"folders": folders, "classes": CLASSES,
               "inputs": {h: {k: v.tolist() for k, v in _inputs(h).items()} for h in HEADS}}
    loaded = run_oracle(_LOAD, payload)
    for kind in ("tf", "flax"):
        assert set(loaded[kind]) == set(folders[kind])
        for head, got in loaded[kind].items():
            want = outputs[kind][head]
            assert set(got) == set(want) and set(OUTPUT_FIELDS[head]) <= set(want)
            assert_outputs_close(_arrays(got), _arrays(want), atol=1e-6)


def test_tf1_checkpoint_converts_like_the_reference_conversion(reference, tmp_path):
    root, _ = reference
    config = config_for("masked_lm").to_dict()
    bert_config = {k: config[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                          "intermediate_size", "hidden_act", "max_position_embeddings",
                                          "type_vocab_size", "initializer_range")}
    bert_config.update(directionality="bidi", pooler_fc_size=config["hidden_size"])  # as released checkpoints have
    (root / "tf1" / "bert_config.json").write_text(json.dumps(bert_config))
    (root / "tf1" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    result = convert(root / "tf1" / "bert_model.ckpt.index", tmp_path / "ours")
    assert (result.source_format, result.head) == ("tf1", "masked_lm")
    ours, ref = Checkpoint(tmp_path / "ours"), Checkpoint(root / "tf1_reference_converted")
    compared = [n for n in ref.names() if "embed_positions" not in n and not n.startswith("cls.predictions.decoder")]
    # the reference conversion drops the pooler; ours keeps it (RoFormer-Sim needs it), read here by TensorFlow
    assert sorted(n for n in ours.names() if not n.startswith("roformer.pooler.")) == sorted(compared)
    for name in compared:
        assert np.array_equal(ours.get(name), ref.get(name)), name
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(root / "tf1" / "bert_model.ckpt"))
    assert np.array_equal(ours.get("roformer.pooler.dense.weight"), reader.get_tensor("bert/pooler/dense/kernel").T)
    assert np.array_equal(ours.get("roformer.pooler.dense.bias"), reader.get_tensor("bert/pooler/dense/bias"))
    assert (tmp_path / "ours" / "vocab.txt").read_text() == "[PAD]\n[UNK]\n"
    assert ours.config.hidden_size == bert_config["hidden_size"]
