"""Training over several OS processes on this machine, as on several hosts: JAX (``jax.distributed``,
2 processes x 2 CPU devices, the sharded ``jit`` step and ``pmap``), Keras (``MultiWorkerMirroredStrategy``,
2 workers from ``TF_CONFIG``) and PyTorch (``DistributedDataParallel`` over gloo, 2 processes).

Each run is compared with one process training on the same global batches (3 optimizer steps,
masked LM and sequence classification); the canonical folders the multi-process runs save (one
process writes, the others wait) load in every backend. A process that dies makes the others
stop with one message, in bounded time, and the run then resumes from its last checkpoint.

The workers are ``tests/workers/*_worker.py``, started by ``tests/workers/launcher.py``.
"""

import os
import time

import numpy as np
import pytest

from workers.launcher import Run, free_ports, run_all, worker_env

HEADS = "masked_lm,sequence_classification"
#: the JAX runs: both heads with the sharded jit step, and pmap across processes
RUNS = "jit:masked_lm,jit:sequence_classification,pmap:sequence_classification"
# the XLA CPU compiler without its expensive passes: compiling, not training, is what takes time here
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _load(path: str) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _max_diff(a: dict, b: dict, prefix: str = "") -> float:
    keys = [k for k in a if k.startswith(prefix)]
    assert keys and set(keys) == {k for k in b if k.startswith(prefix)}
    return max(float(np.abs(a[k] - b[k]).max()) for k in keys)


def _moved(a: dict, prefix: str) -> bool:
    return any(float(np.abs(v).max()) > 0 for k, v in a.items() if k.startswith(prefix))


# -- the three runs, each once per session ---------------------------------------------------------
@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp() / "jax-compilation-cache")


@pytest.fixture(scope="module")
def jax_runs(tmp_path_factory, jax_cache):
    out = tmp_path_factory.mktemp("jax")
    port, = free_ports(1)
    common = ["--runs", RUNS, "--steps", "3", "--cache", jax_cache]
    env = worker_env(XLA_FLAGS=FAST_XLA)
    workers = [Run("flax_worker.py", [*common, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                      "--process-id", str(i), "--devices", "2", "--save-to", out / "saved",
                                      "--out", out / "multi-{pid}.npz"], env) for i in range(2)]
    single = Run("flax_worker.py", [*common, "--devices", "4", "--out", out / "single.npz"], env)
    run_all([*workers, single], timeout=600)
    return out, workers


@pytest.fixture(scope="module")
def keras_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras")
    hosts = ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
    common = ["--heads", HEADS, "--steps", "3"]
    # worker 0 also trains alone afterwards (one TensorFlow start-up less than a third process)
    workers = [Run("keras_worker.py", [*common, "--hosts", hosts, "--index", str(i), "--save-to", out / "saved",
                                       "--out", out / "multi-{pid}.npz", "--also-one-worker", out / "single.npz"])
               for i in range(2)]
    run_all(workers, timeout=600)
    return out, workers


@pytest.fixture(scope="module")
def torch_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("torch")
    port, = free_ports(1)
    common = ["--heads", HEADS, "--steps", "3"]
    workers = [Run("torch_worker.py", [*common, "--rank", str(i), "--world-size", "2", "--port", port,
                                       "--save-to", out / "saved", "--out", out / "multi-{pid}.npz"])
               for i in range(2)]
    single = Run("torch_worker.py", [*common, "--out", out / "single.npz"])
    run_all([*workers, single], timeout=600)
    return out, workers


# -- the same step as one process --------------------------------------------------------------------
def _assert_trained_like_one(out, prefixes) -> None:
    """Both processes end with the same replicated weights, and those of the one-process run (1e-5)."""
    first, second, single = (_load(out / f) for f in ("multi-0.npz", "multi-1.npz", "single.npz"))
    for prefix in prefixes:
        assert _moved(first, prefix)
        assert _max_diff(first, second, prefix) == 0.0, prefix
        assert _max_diff(first, single, prefix) <= 1e-5, prefix


def test_jax_two_processes_train_like_one(jax_runs):
    """2 processes x 2 devices (jax.distributed, gloo) against 1 process x 4 devices, same global batches:
    the sharded jit step (both heads) and pmap, whose psum spans the processes."""
    out, workers = jax_runs
    assert [w.of("start")[0]["processes"] for w in workers] == [2, 2]
    assert [w.of("start")[0]["devices"] for w in workers] == [4, 4]
    _assert_trained_like_one(out, [run.replace(":", "/") + "/" for run in RUNS.split(",")])


def test_keras_two_workers_train_like_one(keras_runs):
    """MultiWorkerMirroredStrategy with 2 workers (TF_CONFIG) and fit unchanged, against one worker."""
    out, workers = keras_runs
    assert [w.of("start")[0]["replicas"] for w in workers] == [2, 2]
    _assert_trained_like_one(out, HEADS.split(","))


def test_torch_ddp_trains_like_one_process(torch_runs):
    """DistributedDataParallel (gloo), 2 processes, against one process on the whole batch; the masked
    LM's ranks hold different numbers of labelled tokens, so the loss weighting is exercised."""
    out, workers = torch_runs
    assert [w.of("start")[0]["world_size"] for w in workers] == [2, 2]
    _assert_trained_like_one(out, HEADS.split(","))
    losses = {w.of("step")[-1]["loss"] for w in workers}
    assert len(losses) == 1  # every rank reports the loss of the global batch


# -- one process writes, every backend reads ---------------------------------------------------------
def test_saved_folders_load_in_every_backend(jax_runs, keras_runs, torch_runs):
    """Process 0 writes each canonical folder while the others wait (each saw it complete); every
    backend loads every folder and gives the same logits."""
    from roformer_core.backends import get_backend

    inputs = {"input_ids": np.array([[2, 17, 40, 9, 33, 3], [2, 8, 21, 3, 0, 0]]),
              "attention_mask": np.array([[1] * 6, [1, 1, 1, 1, 0, 0]])}
    backends = {name: get_backend(name) for name in ("torch", "keras", "flax")}
    for (out, workers), maker in ((jax_runs, "flax"), (keras_runs, "keras"), (torch_runs, "torch")):
        if maker == "torch":
            assert all(e["complete"] for w in workers for e in w.of("saved-folder"))
        for head in HEADS.split(","):
            folder = str(out / "saved" / head)
            assert sorted(f for f in os.listdir(folder) if not f.startswith(".")) == \
                ["config.json", "model.safetensors"]
            logits = {name: b.run(b.load(head, folder), inputs)["logits"] for name, b in backends.items()}
            for name in ("keras", "flax"):
                np.testing.assert_allclose(logits[name], logits["torch"], atol=1e-5, err_msg=f"{maker} {head} {name}")


# -- a process dies --------------------------------------------------------------------------------
def _kill_second_after_step(workers, step: int = 2) -> tuple[int, float]:
    """SIGKILL ``workers[1]`` once it reports step ``step``; returns the exit code of ``workers[0]`` and the
    seconds it took to stop (every worker is killed at the end, whatever happened)."""
    try:
        workers[1].wait_for(lambda e: e.get("event") == "step" and e["step"] >= step, timeout=300)
        workers[1].kill()
        killed = time.monotonic()
        code = workers[0].wait(timeout=60)
        return code, time.monotonic() - killed
    finally:
        for w in workers:
            w.kill()


def test_jax_a_dead_process_stops_the_other_then_the_run_resumes(tmp_path, jax_cache, jax_runs):
    """Process 1 is killed after step 2 of 3: process 0 stops (JAX's coordination service notices the
    missing heartbeats) with a message saying so, in bounded time; both started again resume from the
    last Orbax checkpoint and end bit for bit where the uninterrupted 2-process run ended."""
    port, = free_ports(1)
    common = ["--runs", "jit:sequence_classification", "--steps", "3", "--cache", jax_cache, "--heartbeat", "5",
              "--num-processes", "2", "--devices", "2", "--checkpoints", tmp_path / "ckpt"]
    env = worker_env(XLA_FLAGS=FAST_XLA)
    workers = [Run("flax_worker.py", [*common, "--coordinator", f"127.0.0.1:{port}", "--process-id", str(i),
                                      "--pace", "0.5"], env) for i in range(2)]
    code, stopped = _kill_second_after_step(workers)
    assert code != 0 and stopped < 45, (code, stopped)
    assert not workers[0].of("done")
    said = "".join(workers[0].errors)
    assert "another task died" in said or "another process of this run stopped" in said, said[-2000:]

    folder = tmp_path / "ckpt" / "jit-sequence_classification"
    complete = sorted(int(n) for n in os.listdir(folder) if n.isdigit())
    port, = free_ports(1)
    again = [Run("flax_worker.py", [*common, "--coordinator", f"127.0.0.1:{port}", "--process-id", str(i),
                                    "--out", tmp_path / "resumed-{pid}.npz"], env) for i in range(2)]
    run_all(again, timeout=300)
    resumed = [e["step"] for e in again[0].of("resumed")]
    assert resumed == complete[-1:], (resumed, complete)
    out, _ = jax_runs
    uninterrupted = {k: v for k, v in _load(out / "multi-0.npz").items() if k.startswith("jit/sequence_classification")}
    assert _max_diff(_load(tmp_path / "resumed-0.npz"), uninterrupted) == 0.0


def test_torch_a_dead_process_stops_the_other_then_the_run_resumes(tmp_path, torch_runs):
    """Rank 1 is killed after step 2 of 3: rank 0 stops at once with one message; both started again
    resume from the last checkpoint and end with the weights of one process trained without a stop."""
    port, = free_ports(1)
    args = ["--steps", "3", "--checkpoints", tmp_path / "ckpt", "--every", "1", "--timeout", "30"]
    workers = [Run("torch_worker.py", [*args, "--rank", str(i), "--world-size", "2", "--port", port,
                                       "--pace", "0.5"]) for i in range(2)]
    # checkpoint 1 is written before step 2 starts; the pause after step 2 comes before its checkpoint
    code, stopped = _kill_second_after_step(workers)
    assert code == 1 and stopped < 35, (code, stopped)
    message = "".join(workers[0].errors)
    assert "another process of this run stopped" in message and "Traceback" not in message, message[-2000:]
    from roformer_torch.training import TrainingCheckpoints

    complete = TrainingCheckpoints(tmp_path / "ckpt" / "sequence_classification").steps()
    assert complete and complete[-1] < 3

    port, = free_ports(1)
    again = [Run("torch_worker.py", [*args, "--rank", str(i), "--world-size", "2", "--port", port,
                                     "--out", tmp_path / "resumed-{pid}.npz"]) for i in range(2)]
    run_all(again, timeout=300)
    resumed = again[0].of("resumed")
    assert resumed and resumed[0]["step"] == complete[-1]
    assert [e["step"] for e in again[0].of("step")] == list(range(complete[-1] + 1, 4))
    out, _ = torch_runs  # the one-process run of the same 3 steps
    assert _max_diff(_load(tmp_path / "resumed-0.npz"), _load(out / "single.npz"), "sequence_classification") \
        <= 1e-5


def test_keras_a_dead_worker_stops_the_other_then_the_run_resumes(tmp_path, keras_runs):
    """Worker 1 is killed after step 2 of 3: worker 0 stops with one DistributedError line once TensorFlow's
    coordination service misses worker 1's heartbeats (10 s), with no timeout of ours; both started again
    resume from the last backup and end bit for bit where the uninterrupted 2-worker run ended."""
    head = "sequence_classification"
    common = ["--heads", head, "--steps", "3", "--backup", tmp_path / "backup"]
    hosts = ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
    workers = [Run("keras_worker.py", [*common, "--hosts", hosts, "--index", str(i), "--pace", "0.5"])
               for i in range(2)]
    # the chief backs step 2 up before it says "step 2"; worker 1 dies in its pause after step 2
    code, stopped = _kill_second_after_step(workers)
    assert code == 1 and stopped < 45, (code, stopped)
    assert not workers[0].of("done")
    said = "".join(workers[0].errors)
    line = next((l for l in workers[0].errors if l.startswith("keras_worker: error:")), "")
    assert line.startswith("keras_worker: error: DistributedError: worker 0 of 2: another worker of this run stopped "
                           "or stopped answering (UnavailableError: Collective ops is aborted"), said[-2000:]
    assert line.rstrip().endswith("resumes from the last backup (BackupAndRestore)") and "Traceback" not in said
    from roformer_tf.callbacks import BackupAndRestore

    complete = BackupAndRestore(tmp_path / "backup" / head).steps()
    assert complete and complete[-1] < 3

    hosts = ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
    again = [Run("keras_worker.py", [*common, "--hosts", hosts, "--index", str(i),
                                     "--out", tmp_path / "resumed-{pid}.npz"]) for i in range(2)]
    run_all(again, timeout=300)
    assert [e["step"] for e in again[0].of("resumed")] == complete[-1:]
    last = complete[-1]  # the batches before the backup are read and skipped: their events say step `last`
    assert [e["step"] for e in again[0].of("step")] == [last] * last + list(range(last + 1, 4))
    out, _ = keras_runs  # the same 3 steps on 2 workers without a stop (the other head trained first there)
    resumed = _load(tmp_path / "resumed-0.npz")
    assert _max_diff(resumed, _load(tmp_path / "resumed-1.npz")) == 0.0
    assert _max_diff(resumed, _load(out / "multi-0.npz"), head) == 0.0


def test_keras_a_stuck_worker_stops_the_other_after_the_collective_timeout(tmp_path):
    """Worker 1 stays alive (its heartbeats go on) but stops calling collectives after step 1: with
    CommunicationOptions(timeout_seconds=20) (the worker's --timeout) worker 0 stops with one
    DistributedError line after the timeout instead of waiting for ever."""
    hosts = ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
    workers = [Run("keras_worker.py", ["--steps", "3", "--timeout", "20", "--hosts", hosts, "--index", str(i),
                                       "--pace", ["0", "600"][i]]) for i in range(2)]
    try:
        workers[1].wait_for(lambda e: e.get("event") == "step", timeout=300)
        stuck = time.monotonic()
        code = workers[0].wait(timeout=90)
        stopped = time.monotonic() - stuck
    finally:
        for w in workers:
            w.kill()
    assert code == 1 and 15 < stopped < 60, (code, stopped)
    said = "".join(workers[0].errors)
    expected = ("keras_worker: error: DistributedError: worker 0 of 2: another worker of this run stopped or "
                "stopped answering (DeadlineExceededError: Collective has timed out")
    assert expected in said and "Traceback" not in said, said[-2000:]
