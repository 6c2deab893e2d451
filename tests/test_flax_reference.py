"""Our params are the reference Flax RoFormer's (transformers 4.57.6, in the oracle venv): same pytree,
our msgpack loads in the reference classes, the reference's msgpack loads in ours, same outputs."""

import shutil

import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from harness import OUTPUT_FIELDS, assert_outputs_close, config_for, make_inputs, save_random_checkpoint, to_numpy_dict
from oracle import run_oracle

from roformer_flax import MODEL_CLASSES
from roformer_flax.modeling import MSGPACK_NAME

pytestmark = pytest.mark.oracle4

#: heads the reference Flax implementation has (it has no causal LM)
REFERENCE_HEADS = {
    "model": "FlaxRoFormerModel",
    "masked_lm": "FlaxRoFormerForMaskedLM",
    "sequence_classification": "FlaxRoFormerForSequenceClassification",
    "multiple_choice": "FlaxRoFormerForMultipleChoice",
    "token_classification": "FlaxRoFormerForTokenClassification",
    "question_answering": "FlaxRoFormerForQuestionAnswering",
}

ORACLE = r"""
import json, sys
import numpy as np
import jax
import transformers
from flax.traverse_util import flatten_dict, unflatten_dict

job = json.load(sys.stdin)
config = transformers.RoFormerConfig(**job["config"])

def outputs(model, inputs, params):
    out = model(**{k: np.asarray(v) for k, v in inputs.items()}, params=params, output_hidden_states=True,
                output_attentions=True)
    flat = {}
    for key, value in out.items():
        if isinstance(value, tuple):
            flat.update({f"{key}.{i}": np.asarray(v).tolist() for i, v in enumerate(value)})
        else:
            flat[key] = np.asarray(value).tolist()
    return flat

result = {"shapes": {}, "loaded": {}, "made": {}}
for head, name in job["heads"].items():
    cls = getattr(transformers, name)
    model = cls(config, input_shape=(1, 1, 1) if head == "multiple_choice" else (1, 1), _do_init=False)
    shapes = jax.eval_shape(lambda: model.init_weights(jax.random.PRNGKey(0), model.input_shape))
    result["shapes"][head] = {"/".join(k): list(v.shape) for k, v in flatten_dict(shapes).items()}
    if head in job["load"]:  # our flax_model.msgpack, read by the reference
        model, params = cls.from_pretrained(job["load"][head], _do_init=False)
        result["loaded"][head] = outputs(model, job["inputs"][head], params)
    if head in job["make"]:  # a random reference model, saved as flax_model.msgpack for us to read
        rng = np.random.default_rng(0)
        params = unflatten_dict({k: (rng.standard_normal(v.shape) * (0.1 if len(v.shape) == 1 else 0.02)
                                     + (k[-1] == "scale")).astype(np.float32)
                                 for k, v in flatten_dict(shapes).items()})
        model.save_pretrained(job["make"][head], params=params)
        result["made"][head] = outputs(model, job["inputs"][head], params)
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("flax-reference")
    # QA: the reference sizes qa_outputs by num_labels, ours (like PyTorch) by 2
    cfg = config_for("model").replace(num_labels=2)
    ours, load, make, inputs = {}, {}, {}, {}
    for head in REFERENCE_HEADS:
        inputs[head] = make_inputs(cfg, head)
    for head in ("masked_lm", "multiple_choice", "question_answering"):
        path = save_random_checkpoint(root / f"torch-{head}", cfg, head)
        ours[head] = MODEL_CLASSES[head].from_pretrained(path)
        ours[head].save_pretrained(root / f"ours-{head}", flax_msgpack=True)
        load[head] = str(root / f"msgpack-{head}")  # the msgpack alone, so nothing else can be read
        (root / f"msgpack-{head}").mkdir()
        for name in ("config.json", MSGPACK_NAME):
            shutil.copy(root / f"ours-{head}" / name, root / f"msgpack-{head}" / name)
    for head in ("model", "sequence_classification", "token_classification"):
        make[head] = str(root / f"reference-{head}")
    job = {"config": cfg.to_dict(), "heads": REFERENCE_HEADS, "load": load, "make": make,
           "inputs": {h: {k: v.tolist() for k, v in x.items()} for h, x in inputs.items()}}
    return run_oracle(ORACLE, job), ours, inputs, make, cfg


@pytest.mark.parametrize("head", list(REFERENCE_HEADS))
def test_params_pytree_is_the_reference_one(head, reference):
    result, _, _, _, cfg = reference
    model = MODEL_CLASSES[head](cfg, _do_init=False)
    ours = {"/".join(k): list(v.shape) for k, v in flatten_dict(model.abstract_params()).items()}
    assert ours == result["shapes"][head]


@pytest.mark.parametrize("head", ["masked_lm", "multiple_choice", "question_answering"])
def test_reference_reads_our_msgpack(head, reference):
    result, ours, inputs, _, _ = reference
    got = to_numpy_dict(ours[head](**inputs[head], output_hidden_states=True, output_attentions=True))
    want = {k: np.asarray(v, np.float32) for k, v in result["loaded"][head].items()}
    assert_outputs_close(got, want)
    assert set(OUTPUT_FIELDS[head]) <= set(want)


@pytest.mark.parametrize("head", ["model", "sequence_classification", "token_classification"])
def test_we_read_reference_msgpack(head, reference):
    result, _, inputs, made, _ = reference
    model = MODEL_CLASSES[head].from_pretrained(made[head])
    got = to_numpy_dict(model(**inputs[head], output_hidden_states=True, output_attentions=True))
    want = {k: np.asarray(v, np.float32) for k, v in result["made"][head].items()}
    assert_outputs_close(got, want)
    assert set(OUTPUT_FIELDS[head]) <= set(want)
