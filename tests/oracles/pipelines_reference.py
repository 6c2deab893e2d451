"""The reference pipelines (transformers 4.57.6, PyTorch) on the checkpoints of tests/test_pipelines.py.

Run under the oracle venv (tests/oracle.py): reads ``{"tokenizer": folder, "folders": {head: folder},
"cases": [{"task", "head", "inputs", "kwargs", "fast"}]}`` as JSON on stdin and prints
``{"results": [...], "fast_ids_match": {...}}``: each case's pipeline output made JSON-safe, and,
for the texts given to the fast tokenizer, whether it gives the slow tokenizer's ids (the
comparison only means something where it does).

The slow ``RoFormerTokenizer`` is the reference for everything except token classification and
question answering, which need offsets: the reference has them only from the fast tokenizer.
"""

import json
import sys

import numpy as np
import transformers
from transformers import (RoFormerForCausalLM, RoFormerForMaskedLM, RoFormerForQuestionAnswering,
                          RoFormerForSequenceClassification, RoFormerForTokenClassification, RoFormerModel,
                          RoFormerTokenizer, RoFormerTokenizerFast)

CLASSES = {"masked_lm": RoFormerForMaskedLM, "causal_lm": RoFormerForCausalLM,
           "sequence_classification": RoFormerForSequenceClassification,
           "token_classification": RoFormerForTokenClassification,
           "question_answering": RoFormerForQuestionAnswering, "model": RoFormerModel}


def plain(value):
    """JSON-safe: numpy scalars and arrays as Python numbers and lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist"):  # a torch tensor
        return value.tolist()
    return value


def main() -> None:
    job = json.load(sys.stdin)
    slow = RoFormerTokenizer.from_pretrained(job["tokenizer"])
    fast = RoFormerTokenizerFast.from_pretrained(job["tokenizer"])
    models, results, fast_ids_match = {}, [], {}
    for case in job["cases"]:
        head = case["head"]
        if head not in models:
            models[head] = CLASSES[head].from_pretrained(job["folders"][head]).eval()
        tokenizer = fast if case["fast"] else slow
        pipe = transformers.pipeline(case["task"], model=models[head], tokenizer=tokenizer, framework="pt",
                                     device=-1)
        inputs, kwargs = case["inputs"], case["kwargs"]
        if case["task"] == "question-answering":
            out = pipe(**inputs, **kwargs)
            texts = [t for key in ("question", "context")
                     for t in (inputs[key] if isinstance(inputs[key], list) else [inputs[key]])]
        else:
            out = pipe(inputs, **kwargs)
            texts = [inputs] if isinstance(inputs, str) else [t for t in inputs if isinstance(t, str)]
        if case["fast"]:
            for text in texts:
                fast_ids_match[text] = fast(text)["input_ids"] == slow(text)["input_ids"]
        results.append(plain(out))
    print(json.dumps({"results": results, "fast_ids_match": fast_ids_match, "version": transformers.__version__}))


if __name__ == "__main__":
    main()
