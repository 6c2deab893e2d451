"""Training that survives a kill: each backend's run is SIGKILLed several times (at random steps, and
once in the middle of writing a checkpoint), started again each time, and ends with exactly the
weights of a run that was never interrupted (bit for bit, on CPU, with dropout on). A checkpoint
being written when the kill lands is never the one resumed from. A checkpoint that does not fit
on the disk (a small tmpfs) leaves the one before intact, says so, and the run resumes from it.

Flax: Orbax ``CheckpointManager`` (``roformer_flax.checkpointing``); PyTorch: ``state_dict`` files
(``roformer_torch.training``); Keras: ``BackupAndRestore`` (``roformer_tf.callbacks``). The workers
are ``tests/workers/*_worker.py``.
"""

import os
import random
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from roformer_demo.pipeline import STAGES

from workers.launcher import REPO, run_all, unshare_with_tmpfs, worker_env

FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
HEAD = "sequence_classification"


def _load(path) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _assert_identical(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b) and a
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, f"{len(different)} arrays differ, e.g. {different[:3]}"


class Backend:
    """How the resume tests drive one backend's worker and read its checkpoint folder."""

    def __init__(self, name, script, folder_of, complete, steps=8, env=None, extra=()):
        self.name, self.script, self.steps = name, script, steps
        self.folder_of, self.complete = folder_of, complete
        self.env = env or {}
        self.extra = list(extra)

    def args(self, tmp_path, *more):
        return ["--steps", self.steps, "--dropout", "0.1", *self.extra, *more]

    def run(self, args, kill_in_save=None, prefix=None):
        from workers.launcher import Run

        env = worker_env(**self.env, **({"ROFORMER_TEST_KILL_IN_SAVE": str(kill_in_save)} if kill_in_save else {}))
        return Run(self.script, args, env, prefix=prefix)


def _integer_dirs(folder):
    return sorted(int(n) for n in _names(folder) if n.isdigit() and os.path.isdir(os.path.join(folder, n)))


def _names(folder):
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def _matching(pattern):
    def complete(folder):
        return sorted(int(m.group(1)) for m in map(re.compile(pattern).match, _names(folder)) if m)
    return complete


def _temporaries(folder):
    return [n for n in _names(folder) if "tmp" in n]


FLAX = Backend("flax", "flax_worker.py", lambda root: os.path.join(root, f"jit-{HEAD}"), _integer_dirs,
               env={"XLA_FLAGS": FAST_XLA}, extra=["--runs", f"jit:{HEAD}", "--devices", "2"])
TORCH = Backend("torch", "torch_worker.py", lambda root: os.path.join(root, HEAD), _matching(r"^step-(\d+)\.pt$"),
                extra=["--heads", HEAD])
KERAS = Backend("keras", "keras_worker.py", lambda root: os.path.join(root, HEAD), _matching(r"^step-(\d+)$"),
                steps=3, extra=["--heads", HEAD, "--epochs", "2"])


def _checkpoint_option(backend):
    return "--backup" if backend is KERAS else "--checkpoints"


def _total_steps(backend):
    return backend.steps * 2 if backend is KERAS else backend.steps


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp() / "jax-compilation-cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, jax_cache):
    """``reference(backend)``: the final weights of an uninterrupted run, started on first use (in the
    background, while the test goes on) and shared by the tests of that backend."""
    runs = {}

    def get(backend):
        if backend.name not in runs:
            out = tmp_path_factory.mktemp(f"reference-{backend.name}") / "weights.npz"
            cache = ["--cache", jax_cache] if backend is FLAX else []
            runs[backend.name] = (backend.run(backend.args(None, *cache, "--out", out)), out)
        run, out = runs[backend.name]

        def weights():
            run.ok(300)
            return _load(out)
        return weights

    yield get
    for run, _ in runs.values():
        run.kill()


def _resume_after_kills(backend, tmp_path, plan, jax_cache, reference):
    """Run ``plan`` (("in-save", step) kills itself while writing that step's checkpoint; ("at", step)
    is SIGKILLed from here once it reports the step), then a run to the end; compare with a run
    that was never interrupted."""
    cache = ["--cache", jax_cache] if backend is FLAX else []
    root = tmp_path / "checkpoints"
    folder = backend.folder_of(str(root))
    expected = reference(backend)
    resumed_from = []
    for kind, step in plan:
        args = backend.args(tmp_path, *cache, _checkpoint_option(backend), root)
        before = backend.complete(folder)
        # killed runs take their time over each step, so that a kill lands before the run ends
        run = backend.run([*args, "--pace", "0.3"], kill_in_save=step if kind == "in-save" else None)
        if kind == "in-save":
            run.wait_for(lambda e: e.get("event") == "killed-in-save", timeout=300)
            run.wait(60)
            assert step not in backend.complete(folder), "a checkpoint cut short by the kill looks complete"
            assert _temporaries(folder), "the kill should have left the unfinished checkpoint's temporary"
        else:
            run.wait_for(lambda e: e.get("event") == "step" and e["step"] >= step, timeout=300)
            run.kill()
        assert run.proc.returncode == -9, run.tail()
        resumed = run.of("resumed")
        resumed_from.append(resumed[0]["step"] if resumed else None)
        if before:
            assert resumed_from[-1] == before[-1], (resumed_from, before, run.tail())
        assert run.of("done") == []
    last = backend.complete(folder)
    final = backend.run(backend.args(tmp_path, *cache, _checkpoint_option(backend), root,
                                     "--out", tmp_path / "resumed.npz"))
    run_all([final], timeout=300)
    assert final.of("resumed")[0]["step"] == last[-1]
    trained = [e["step"] for e in final.of("step")]
    assert trained[-1] == _total_steps(backend) and trained[0] > 1
    _assert_identical(_load(tmp_path / "resumed.npz"), expected())
    assert not _temporaries(folder), "the resumed run should clear what the killed writers left"
    return resumed_from


def _plan(total, rng):
    """One kill while a checkpoint is written, then two at random steps after it."""
    in_save = rng.randint(2, total // 2)
    first = rng.randint(in_save, total - 2)
    second = rng.randint(first + 1, total - 1)
    return [("in-save", in_save), ("at", first), ("at", second)]


@pytest.mark.parametrize("backend", [FLAX, TORCH], ids=lambda b: b.name)
def test_resume_after_repeated_kills_is_exact(backend, tmp_path, jax_cache, reference):
    seed = random.SystemRandom().randrange(1 << 30)
    plan = _plan(backend.steps, random.Random(seed))
    try:
        resumed = _resume_after_kills(backend, tmp_path, plan, jax_cache, reference)
    except AssertionError as e:
        raise AssertionError(f"plan {plan} (seed {seed}): {e}") from None
    assert resumed[0] is None  # the first run started afresh
    assert all(r is not None and r < plan[0][1] for r in resumed[1:2])  # never from the cut-short checkpoint


def test_keras_fit_resumes_after_kills_exactly(tmp_path, jax_cache, reference):
    """fit with BackupAndRestore every batch: killed while writing a backup, then at a random step of
    the second epoch (a backup in the middle of an epoch resumes in the middle of it)."""
    seed = random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    plan = [("in-save", rng.randint(2, 3)), ("at", rng.randint(4, 5))]
    try:
        resumed = _resume_after_kills(KERAS, tmp_path, plan, jax_cache, reference)
    except AssertionError as e:
        raise AssertionError(f"plan {plan} (seed {seed}): {e}") from None
    assert resumed[0] is None and resumed[1] < plan[0][1]


# -- out of disk space ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend,size", [(FLAX, "400k"), (TORCH, "200k"), (KERAS, "340k")],
                         ids=["flax", "torch", "keras"])
def test_out_of_disk_keeps_the_previous_checkpoint(backend, size, tmp_path, jax_cache, reference):
    """The checkpoints go to a tmpfs with room for two: writing the third fails, the run stops with one
    message naming the step and the checkpoint that is intact, and (Flax, PyTorch) a run resumed from
    what is on that disk ends with the weights of an uninterrupted run."""
    cache = ["--cache", jax_cache] if backend is FLAX else []
    small = tmp_path / "small"
    small.mkdir()
    kept = tmp_path / "kept"  # what the tmpfs holds once the run has failed: the mount ends with the run
    kept.mkdir()
    full = backend.run(backend.args(tmp_path, *cache, _checkpoint_option(backend), small),
                       prefix=unshare_with_tmpfs(str(small), size, keep=str(kept)))
    assert full.wait(300) == 1, full.tail()
    message = "".join(full.errors).split("error: ")[-1]
    found = re.search(r"(?:checkpoint|backup) of step (\d+) into .* failed \(no space left on the device.*\); "
                      r"it was not kept, and the (?:checkpoint|backup) of step (\d+) is intact", message)
    assert found, message[-3000:]
    failed, intact = int(found.group(1)), int(found.group(2))
    folder = backend.folder_of(str(kept))
    complete = backend.complete(folder)
    assert complete and complete[-1] == intact == failed - 1
    if backend is KERAS:  # the backup left is whole: weights with the optimizer, and its metadata
        import json

        import h5py

        backup = os.path.join(folder, f"step-{intact:08d}")
        with open(os.path.join(backup, "training_metadata.json")) as fh:
            assert json.load(fh)["step"] == intact
        with h5py.File(os.path.join(backup, "model.weights.h5")) as h5:
            assert "optimizer" in h5 and "layers" in h5
        return
    final = backend.run(backend.args(tmp_path, *cache, _checkpoint_option(backend), kept,
                                     "--out", tmp_path / "resumed.npz"))
    run_all([final], timeout=300)
    assert final.of("resumed")[0]["step"] == intact
    _assert_identical(_load(tmp_path / "resumed.npz"), reference(backend)())


# -- the main job ---------------------------------------------------------------------------------------
TRAIN = ["--tiny", "--max-steps", "40"]  # the masked-LM pass (4 steps), then the classifier
DEMO = ["-m", "roformer_demo", "run", *TRAIN, "--flax-steps", "0"]


def _demo(args, out):
    env = worker_env()
    env.pop("JAX_PLATFORMS")
    return subprocess.Popen([sys.executable, *args, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)


@pytest.mark.slow
def test_main_job_killed_while_training_resumes_to_the_same_results(tmp_path):
    """``./run main`` killed by SIGKILL in the training stage (in the classifier pass, after the masked-LM
    pass), then ``--resume``: the vocabulary stage is not run again, the finished masked-LM pass is not
    trained again, the classifier carries on from its last backup, both models are those of an
    uninterrupted training stage (bit for bit), and the run finishes every stage."""
    out = tmp_path / "run"
    first = _demo(DEMO, out)
    backups = out / "checkpoints" / "train-classifier"
    deadline = time.monotonic() + 300
    while not any(n.startswith("step-") for n in _names(backups)):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0][-3000:]
        time.sleep(0.02)
    first.kill()
    first.wait()
    assert not (out / "stamps" / "train.json").exists(), "the training stage finished before the kill"
    assert (out / "stamps" / "vocab.json").exists()

    # an uninterrupted training stage on the same vocabulary stage's output, for comparison
    ref = tmp_path / "reference"
    for part in ("data", "tokenizer", "stamps/vocab.json", "reports/vocab.json"):
        (ref / part).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (out / part).is_dir() else shutil.copy2)(out / part, ref / part)
    reference = _demo(["-m", "roformer_demo", "train", *TRAIN], ref)

    second = _demo([*DEMO, "--resume"], out)
    said = second.communicate(timeout=600)[0]
    assert second.returncode == 0, said[-4000:]
    assert "(vocab: complete from an earlier run, not run again)" in said
    step = re.search(r"resumed from the backup of step (\d+)", said)
    assert step and int(step.group(1)) >= 1, said[-4000:]
    assert "== summary ==" in said and not (out / "checkpoints").exists()
    assert reference.communicate(timeout=600)[0] is not None and reference.returncode == 0
    for model in ("mlm", "classifier"):
        assert (out / model / "model.safetensors").read_bytes() == (ref / model / "model.safetensors").read_bytes()

    third = _demo([*DEMO, "--resume"], out)  # nothing left to do
    said = third.communicate(timeout=300)[0]
    assert third.returncode == 0 and said.count("complete from an earlier run, not run again") == len(STAGES), said[-3000:]


def test_docstring_examples_run():
    """The examples in the docstrings of the checkpoint modules (run here: they train for a few steps)."""
    import doctest
    import importlib

    for name in ("roformer_flax.checkpointing", "roformer_torch.training", "roformer_tf.callbacks"):
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, name
