"""No checkpoint lost, no half-written output taken for a whole one: the converter interrupted for
real, two demo commands on one output folder, stage outputs checked by their stamps, and a tokenizer
that does not fit its model.

* ``roformer-convert`` gets SIGTERM, Ctrl-C (SIGINT) and SIGKILL in the middle of writing a 50 MB
  checkpoint (frozen with SIGSTOP at the moment its temporary holds a partial file, so the signal
  lands mid-write every time): one line, exit 143 / 130, nothing left behind, an older checkpoint
  at the destination untouched; what a SIGKILL leaves is removed by the next run.
* The demo: another process holding ``OUT/.lock`` makes a stage stop at once with one line and
  write nothing; a killed holder leaves no stale lock; a stage refuses an earlier stage's output
  that is incomplete, changed since, or built from another run's output.
* ``predict`` / ``fill-mask`` with a tokenizer whose ids pass the model's vocabulary: one line,
  exit 2, in every backend (Flax printed NaN, Keras a stack trace).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from roformer_core import RoFormerConfig, canonical_spec, save_checkpoint
from roformer_core.checkpoint import Checkpoint
from roformer_core.tokenizer import RoFormerTokenizer
from roformer_convert.cli import main as convert_main
from roformer_demo import cli as demo_cli
from roformer_demo import stamps
from roformer_demo.settings import Layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the temporaries of roformer_core.io: beside a new destination, or inside an existing one
TEMPORARY = re.compile(r"^\.(?:tmp-roformer-|.+\.roformer-)")
CONVERT = "import sys; from roformer_convert.cli import main; sys.exit(main())"


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), os.path.join(ROOT, "conversion")]),
               TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    env.pop("XLA_FLAGS", None)
    return env


def _temporaries(*folders) -> list[str]:
    return [os.path.join(f, n) for f in folders if os.path.isdir(f) for n in os.listdir(f) if TEMPORARY.match(n)]


def _tree(folder) -> dict[str, bytes]:
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


# -- roformer-convert interrupted --------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_source(tmp_path_factory):
    """A 53 MB canonical checkpoint: a 50,000-word embedding makes writing it take a while."""
    folder = tmp_path_factory.mktemp("big") / "src"
    cfg = RoFormerConfig(vocab_size=50_000, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=512)
    rng = np.random.default_rng(0)
    save_checkpoint(folder, cfg, {k: rng.standard_normal(s, dtype=np.float32)
                                  for k, s in canonical_spec(cfg).items()})
    return folder


def _old_checkpoint(folder) -> dict[str, bytes]:
    cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)
    save_checkpoint(folder, cfg, {k: np.full(s, 0.5, np.float32) for k, s in canonical_spec(cfg).items()})
    return _tree(folder)


def _start_convert(src, dst, *options) -> subprocess.Popen:
    # float16: every tensor is cast on the way, which makes the write last long enough to be caught
    # SIGINT as a terminal gives it: a suite started in the background inherits it ignored, and a program
    # started with SIGINT ignored rightly keeps ignoring it
    return subprocess.Popen([sys.executable, "-c", CONVERT, str(src), str(dst), "--dtype", "float16", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _freeze_mid_write(proc: subprocess.Popen, where: str) -> str:
    """Wait until a temporary folder of ours in ``where`` holds a (partial) file, and stop the
    converter right there (SIGSTOP); returns the temporary folder."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the conversion ended before it could be interrupted: " + proc.stderr.read()
        for tmp in _temporaries(where):
            if os.path.isdir(tmp) and os.listdir(tmp):
                proc.send_signal(signal.SIGSTOP)
                if os.path.isdir(tmp) and os.listdir(tmp):
                    return tmp
                proc.send_signal(signal.SIGCONT)  # renamed meanwhile: look again
        time.sleep(0.002)
    proc.kill()
    pytest.fail("no temporary folder appeared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("existing", [False, True], ids=["new destination", "over an older checkpoint"])
def test_interrupted_conversion_removes_its_output_and_says_so(big_source, tmp_path, sig, existing):
    dst = tmp_path / "out"
    before = _old_checkpoint(dst) if existing else None
    proc = _start_convert(big_source, dst, *(["--force"] if existing else []))
    tmp = _freeze_mid_write(proc, str(dst) if existing else str(tmp_path))
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert err == "roformer-convert: interrupted; nothing was written; the partial output was removed\n", err
    assert not os.path.exists(tmp) and _temporaries(tmp_path, dst) == []
    if existing:
        assert _tree(dst) == before  # the older checkpoint, byte for byte
        assert Checkpoint(str(dst)).config.vocab_size == 10
    else:
        assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("existing", [False, True], ids=["new destination", "existing empty folder"])
def test_temporaries_of_a_killed_conversion_are_removed_by_the_next_one(big_source, tmp_path, capsys, existing):
    dst = tmp_path / "out"
    if existing:
        dst.mkdir()
    proc = _start_convert(big_source, dst)
    tmp = _freeze_mid_write(proc, str(dst) if existing else str(tmp_path))
    proc.kill()  # SIGKILL: no cleanup can run
    proc.communicate(timeout=60)
    assert os.path.isdir(tmp)  # what the killed run left
    # the next run into the same place: no --force needed (an empty folder holding only our leftover is empty)
    assert convert_main([str(big_source), str(dst), "--quiet", "--head", "drop"]) == 0, capsys.readouterr().err
    assert not os.path.exists(tmp) and _temporaries(tmp_path, dst) == []
    assert Checkpoint(str(dst)).shape("embeddings.word_embeddings.weight") == (50_000, 256)


# -- the demo: one command per output folder ---------------------------------------------------------------
HOLD = """
import sys, time
from roformer_demo.stamps import lock_output
with lock_output(sys.argv[1], shared=sys.argv[2] == "shared", command="held by the test"):
    print("locked", flush=True)
    time.sleep(600)
"""


def _hold_lock(out, shared: bool) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out), "shared" if shared else "exclusive"],
                            stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _demo(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roformer_demo", *args], capture_output=True, text=True,
                          env=_env(), cwd=ROOT, timeout=timeout)


def _one_line(proc: subprocess.CompletedProcess, *needles) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr
    assert err.startswith("roformer-demo: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_a_second_command_on_the_same_output_is_refused(tmp_path):
    out = tmp_path / "run"
    holder = _hold_lock(out, shared=False)
    try:
        before = sorted(os.listdir(out))
        _one_line(_demo("vocab", "--tiny", "--out", str(out)), "another roformer-demo",
                  f"pid {holder.pid}: held by the test", str(out), "another --out")
        _one_line(_demo("predict", "好", "--out", str(out)), f"pid {holder.pid}")  # readers wait for writers
        assert sorted(os.listdir(out)) == before  # refused before writing anything
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock with the process
        holder.wait()
    done = _demo("vocab", "--tiny", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert stamps.read_stamp(Layout(str(out)), "vocab") is not None


def test_readers_share_the_lock_and_keep_stages_out(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    reader = _hold_lock(out, shared=True)
    try:
        _one_line(_demo("vocab", "--tiny", "--out", str(out)), "another roformer-demo (serving from it)")
        # a second reader is let in: it stops at what is missing, not at the lock
        _one_line(_demo("predict", "好", "--out", str(out)), "no checkpoint folder")
    finally:
        reader.kill()
        reader.wait()


# -- the demo: stamped stage outputs ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vocab_run(tmp_path_factory):
    """The `vocab` stage on the tiny slice (about a second)."""
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = _demo("vocab", "--tiny", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(autouse=True)
def _keep_xla_flags(monkeypatch):
    """demo_cli.main() sets XLA_FLAGS for its process; in this one, put it back after each test."""
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))


def _copy(vocab_run, tmp_path) -> str:
    out = tmp_path / "run"
    shutil.copytree(vocab_run, out)
    return str(out)


def _demo_fails(capsys, argv, *needles) -> str:
    capsys.readouterr()
    assert demo_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("roformer-demo: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_vocab_stamp_lists_its_files_and_what_it_was_built_from(vocab_run):
    stamp = stamps.require(Layout(str(vocab_run)), "vocab")
    assert {"data/train.jsonl", "data/validation.jsonl", "data/test.jsonl", "data/news.txt",
            "tokenizer/vocab.txt"} <= set(stamp["files"])
    assert stamp["built_from"]["max_examples"] == 400 and stamp["built_from"]["seed"] == 0


@pytest.mark.parametrize("file", ["data/test.jsonl", "data/train.jsonl", "tokenizer/vocab.txt"])
def test_a_stage_refuses_an_input_changed_since_it_was_stamped(vocab_run, tmp_path, capsys, file):
    out = _copy(vocab_run, tmp_path)
    with open(os.path.join(out, file), "a", encoding="utf-8") as fh:  # what another run's write would do
        fh.write("另一个\n")
    _demo_fails(capsys, ["train", "--tiny", "--out", out], file, "changed after the `vocab` stage wrote it",
                "run the `vocab` stage")
    assert not os.path.exists(os.path.join(out, "classifier")) and not os.path.exists(os.path.join(out, "mlm"))


def test_a_stage_refuses_the_output_of_an_interrupted_stage(vocab_run, tmp_path, capsys, monkeypatch):
    out = _copy(vocab_run, tmp_path)
    from roformer_demo import text

    def interrupted(*args, **kwargs):  # Ctrl-C after the new split is written, before the vocabulary
        raise KeyboardInterrupt

    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(text, "build_tokenizer", interrupted)
        assert demo_cli.main(["vocab", "--tiny", "--seed", "3", "--out", out]) == 130
    _demo_fails(capsys, ["train", "--tiny", "--out", out], "no complete output of the `vocab` stage",
                "did not finish", "run the `vocab` stage")


def _fake_train_stage(out: str) -> None:
    """What the `train` stage leaves (a classifier and its tokenizer, stamped), without the training."""
    layout = Layout(out)
    tokenizer = RoFormerTokenizer.from_pretrained(layout.tokenizer)
    cfg = RoFormerConfig(vocab_size=tokenizer.vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16, num_labels=2, id2label={0: "negative", 1: "positive"},
                         label2id={"negative": 0, "positive": 1})
    rng = np.random.default_rng(0)
    save_checkpoint(layout.classifier, cfg, {k: rng.normal(0, 0.02, s).astype(np.float32)
                                             for k, s in canonical_spec(cfg, "sequence_classification").items()})
    tokenizer.save_pretrained(layout.classifier)
    stamps.write_stamp(layout, "train", [layout.classifier], {"vocab": stamps.require(layout, "vocab")})


def test_later_stages_refuse_a_model_trained_on_another_split(vocab_run, tmp_path, capsys):
    out = _copy(vocab_run, tmp_path)
    _fake_train_stage(out)
    assert stamps.require(Layout(out), "train")["inputs"]
    # the split changes under the classifier: its test reviews may have been training reviews
    capsys.readouterr()
    assert demo_cli.main(["vocab", "--tiny", "--seed", "1", "--out", out]) == 0
    for command in ("eval", "flax", "convert"):
        _demo_fails(capsys, [command, "--out", out], "built from another output of the `vocab` stage",
                    "run the `train` stage again")
    # serving needs only a complete classifier (it carries its own tokenizer)
    assert demo_cli.main(["predict", "好", "--out", out, "--jsonl"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert set(line["probabilities"]) == {"negative", "positive"}
    # ... and refuses one that changed after the stage
    with open(os.path.join(out, "classifier", "config.json"), "a", encoding="utf-8") as fh:
        fh.write("\n")
    _demo_fails(capsys, ["predict", "好", "--out", out], "classifier/config.json", "changed after the `train` stage")


# -- the demo: a tokenizer that does not fit the model --------------------------------------------------------
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _checkpoint_with_tokenizer(folder, head: str, model_vocab: int, tokens: list[str]) -> str:
    cfg = RoFormerConfig(vocab_size=model_vocab, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16, num_labels=2, id2label={0: "negative", 1: "positive"},
                         label2id={"negative": 0, "positive": 1})
    rng = np.random.default_rng(0)
    save_checkpoint(folder, cfg, {k: rng.normal(0, 0.02, s).astype(np.float32)
                                  for k, s in canonical_spec(cfg, head).items()})
    RoFormerTokenizer(vocab=tokens, model_max_length=16).save_pretrained(str(folder))
    return str(folder)


@pytest.mark.parametrize("backend", ["torch", "keras", "flax"])
def test_predict_and_fill_mask_refuse_a_tokenizer_larger_than_the_model(tmp_path, capsys, backend):
    tokens = SPECIALS + [f"x{i}" for i in range(20)] + ["好", "天"]  # 好 is id 25, 天 id 26
    classifier = _checkpoint_with_tokenizer(tmp_path / "cls", "sequence_classification", 12, tokens)
    _demo_fails(capsys, ["predict", "好", "--checkpoint", classifier, "--backend", backend, "--jsonl"],
                "gives token ids up to 26", "vocabulary has 12 rows", "do not belong together")
    mlm = _checkpoint_with_tokenizer(tmp_path / "mlm", "masked_lm", 12, tokens)
    _demo_fails(capsys, ["fill-mask", "好[MASK]", "--checkpoint", mlm, "--backend", backend],
                "gives token ids up to 26")
    # the same model with a tokenizer that fits: valid JSON with finite probabilities
    fitting = _checkpoint_with_tokenizer(tmp_path / "ok", "sequence_classification", 12, SPECIALS + ["好", "天"])
    assert demo_cli.main(["predict", "好", "天", "--checkpoint", fitting, "--backend", backend, "--jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["好", "天"]
    assert all(np.isfinite(list(line["probabilities"].values())).all() for line in lines)
