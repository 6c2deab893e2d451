"""Oracle script: the PyTorch port ``roformer`` 0.4.3 (RoFormer-V2, RoFormer-Sim), run in ``.venv-oracle-v2``.

Never imported by the package or the tests: ``tests/oracles/__init__.py`` runs it as
``python roformer043.py COMMAND`` with a JSON payload on stdin; arrays go out in an ``.npz``
file named by the payload, and one JSON line comes back on stdout.

Commands:
  models  build random port models (every head asked for), save each with ``save_pretrained``
          (``pytorch_model.bin``, as transformers 4.30 writes it) and store their outputs on the
          given inputs; a 3-D ``attention_mask`` goes to the port as it is (the port takes one).
  tf1     run the port's ``load_tf_weights_in_roformer`` on a TF1 checkpoint and store the
          state dict it filled (tensors it did not fill are left out).
"""

import json
import sys

import numpy as np
import torch

import roformer

CLASSES = {"model": "RoFormerModel", "masked_lm": "RoFormerForMaskedLM", "causal_lm": "RoFormerForCausalLM",
           "sequence_classification": "RoFormerForSequenceClassification",
           "multiple_choice": "RoFormerForMultipleChoice", "token_classification": "RoFormerForTokenClassification",
           "question_answering": "RoFormerForQuestionAnswering"}
FIELDS = ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits")


def build(head, config_dict, pooler):
    config = roformer.RoFormerConfig(**config_dict)
    cls = getattr(roformer, CLASSES[head])
    return cls(config, add_pooling_layer=True) if head == "model" and pooler else cls(config)


def randomise(model, seed):
    """Every parameter random (LayerNorm scales near 1), so no wrong mapping hides behind a 0 or a 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:  # the sinusoid table (a frozen parameter) stays the table
                continue
            noise = torch.randn(p.shape, generator=gen) * 0.2
            p.copy_(1.0 + noise if name.endswith("LayerNorm.weight") else noise)


def models(payload):
    arrays = {}
    for spec in payload["models"]:
        for head in spec["heads"]:
            config = dict(spec["config"], **spec.get("head_config", {}).get(head, {}))
            model = build(head, config, spec.get("pooler", False)).eval()
            randomise(model, spec["seed"])
            model.save_pretrained(f"{payload['dir']}/{spec['name']}/{head}")
            inputs = {k: torch.tensor(np.asarray(v)) for k, v in spec["inputs"][head].items()}
            with torch.no_grad():
                out = model(**inputs, return_dict=True)
            for field in FIELDS:
                value = getattr(out, field, None)
                if value is not None:
                    arrays[f"{spec['name']}/{head}/{field}"] = value.float().numpy()
    np.savez(payload["out"], **arrays)
    return sorted(arrays)


def tf1(payload):
    arrays = {}
    for job in payload["jobs"]:
        config = roformer.RoFormerConfig(**job["config"])
        model = getattr(roformer, job["class"])(config)
        with torch.no_grad():  # what the conversion does not fill stays NaN, and is left out
            for p in model.parameters():
                p.fill_(float("nan"))
        roformer.load_tf_weights_in_roformer(model, config, job["prefix"])
        for name, value in model.state_dict().items():
            if value.is_floating_point() and not torch.isnan(value).any():
                arrays[f"{job['key']}/{name}"] = value.numpy()
    np.savez(payload["out"], **arrays)
    return sorted(arrays)


if __name__ == "__main__":
    command = sys.argv[1]
    result = {"models": models, "tf1": tf1}[command](json.load(sys.stdin))
    print(json.dumps({"roformer": roformer.__version__ if hasattr(roformer, "__version__") else "0.4.3",
                      "names": result}))
