"""Training speed against the reference (issue 13): the masked-LM step, the sequence-classification step,
peak memory at sequence 2048 with and without recomputation, and onnxruntime against eager PyTorch.

Sections (``--only`` picks some; all by default):

``mlm``  The masked-LM training step of a 4-layer, 256-hidden RoFormer (4 heads, intermediate 1024,
         vocabulary 50,000, dropout 0), batch 16 x 128, AdamW (lr 1e-4), the same collator batch every
         step (``roformer_core.collator.MaskedLMCollator``: 15%, 80/10/10, P = 24). The reference is
         transformers 4.57.6 in the oracle venv (PyTorch; TF Keras ``fit`` with and without XLA; a
         jitted Flax step with optax.adamw and the run_mlm_flax loss) on the full-sequence ``labels``;
         ours: each backend with ``masked_positions`` in float32 and bfloat16 (PyTorch: autocast over
         float32 weights; Flax: ``dtype=bfloat16``, float32 params; Keras: ``mixed_bfloat16``), and on
         full ``labels``.
``cls``  A sequence-classification step of a base-size encoder (12 layers, 768 hidden, 12 heads,
         intermediate 3072, vocabulary 50,000, 2 labels, dropout 0), batch 16 x 128, AdamW: ours
         against the reference in each framework (no vocabulary projection: the encoder alone).
``memory`` Peak RSS of one masked-LM training step at sequence 2048 (the mlm model, batch 2, P = 312)
         with and without activation recomputation (gradient checkpointing), per backend, each in a
         fresh process: the step's peak above the process's resident size before the step.
``onnx`` Inference of the base-size ``RoFormerForMaskedLM`` (batch 8 x 128, float32): the ONNX export
         (``roformer_torch.export``) run by onnxruntime against eager PyTorch, same threads.

Every runner is a subprocess (the reference ones in the oracle venv), set up and warmed up first
(tracing, XLA compilation), then the runners of one framework take turns, round after round, so a
burst of load from other jobs hits them alike (each turn after a 1 s pause, ``BENCH_SETTLE_S``, so that no
runner pays for the threads of the one before it); the median and best seconds per step print, with the
ratios to the reference of the same framework (``speed x`` = reference time / our time).

Ours in Keras: ``fit`` with and without XLA (``jit_compile``), ``masked_positions`` in float32 and
``mixed_bfloat16``, and full ``labels``; compared with the reference ``fit`` of the same compilation.

Usage:
    PYTHONPATH=src .venv/bin/python benchmarks/bench_train.py [--only mlm cls memory onnx] [--rounds 3]
        [--steps 2] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
ORACLE = os.environ.get("ROFORMER_ORACLE_PYTHON", os.path.join(ROOT, ".venv-oracle", "bin", "python"))

MLM = dict(vocab_size=50000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
           max_position_embeddings=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
BASE = dict(vocab_size=50000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            max_position_embeddings=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2)

# -- what every runner process starts with --------------------------------------------------------------
PRELUDE = r'''
import json, os, sys, time, resource
import numpy as np
C = json.loads(sys.argv[1])
B = dict(np.load(sys.argv[2]))

def serve(run, warmup):
    """Warm up, say so, then run the steps the parent asks for and report their times. ``run(n)``
    may return the seconds of the n steps themselves (Keras: timed by a callback, so that fit's
    own set-up and tear-down, paid once per epoch in real training, stay out)."""
    start = time.perf_counter()
    run(warmup)
    print(json.dumps({"ready": True, "warmup_s": time.perf_counter() - start}), flush=True)
    for line in sys.stdin:
        n = json.loads(line)
        if n == 0:
            break
        wall, cpu = time.perf_counter(), time.process_time()
        measured = run(n)
        wall = time.perf_counter() - wall if measured is None else measured
        print(json.dumps({"seconds": wall / n, "cpu": (time.process_time() - cpu) / n}), flush=True)
'''

# Keras runners (the reference's tf_keras and our Keras 3, named KERAS in the script) time fit per batch:
# fit's own set-up and tear-down, paid once per epoch in real training, stay out.
FIT_TIMER = r'''
class StepTimer(KERAS.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()
    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])   # the step is done when its loss is
        self.total += time.perf_counter() - self.start
timer = StepTimer()
def run(n):
    timer.total = 0.0
    model.fit(data, epochs=1, steps_per_epoch=n, verbose=0, callbacks=[timer])
    return timer.total
'''

# The constants a runner gets first: CLASS (the model class), LR, MODE (ours: "fp32", "bf16", "labels"; a
# classifier: "cls"), JIT (Keras), WARMUP; masked-LM and classification runners differ in those only.
TORCH_STEPS = r'''
def run(n):
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=MODE == "bf16"):
            loss = model(**feed).loss
        loss.backward()
        opt.step()
serve(run, WARMUP)
'''

REF_TORCH = r'''
import torch, transformers
torch.manual_seed(0)
model = getattr(transformers, CLASS)(transformers.RoFormerConfig(**C)).train()
opt = torch.optim.AdamW(model.parameters(), lr=LR)
feed = {k: torch.as_tensor(B[k]).long() for k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
''' + TORCH_STEPS

OURS_TORCH = r'''
import torch
from roformer_core import RoFormerConfig
import roformer_torch
torch.manual_seed(0)
model = getattr(roformer_torch, CLASS)(RoFormerConfig(**C)).train()
opt = torch.optim.AdamW(model.parameters(), lr=LR)
keys = ("masked_positions", "masked_labels", "masked_weights") if MODE in ("fp32", "bf16") else ("labels",)
feed = {k: torch.as_tensor(B[k]) for k in ("input_ids", "attention_mask", "token_type_ids") + keys}
''' + TORCH_STEPS

REF_FLAX = r'''
import jax, jax.numpy as jnp, optax, transformers
from flax.training import train_state
model = getattr(transformers, "Flax" + CLASS)(transformers.RoFormerConfig(**C), seed=0)
state = train_state.TrainState.create(apply_fn=model.__call__, params=model.params, tx=optax.adamw(LR))
feed = {k: jnp.asarray(B[k], jnp.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
labels = jnp.asarray(B["labels"], jnp.int32)
def loss_of(logits, labels):
    if CLASS != "RoFormerForMaskedLM":
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    mask = labels != -100   # the loss of transformers' run_mlm_flax.py example
    loss = optax.softmax_cross_entropy(logits, jax.nn.one_hot(jnp.where(mask, labels, 0), logits.shape[-1]))
    return jnp.sum(loss * mask) / jnp.sum(mask)
def step(state, feed, labels, rng):
    def loss_fn(params):
        return loss_of(state.apply_fn(**feed, params=params, dropout_rng=rng, train=True)[0], labels)
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss
step = jax.jit(step, donate_argnums=(0,))
key = jax.random.PRNGKey(0)
box = [state]
def run(n):
    for _ in range(n):
        box[0], _ = step(box[0], feed, labels, key)
    jax.block_until_ready(box[0])
serve(run, WARMUP)
'''

OURS_FLAX = r'''
import jax, jax.numpy as jnp, optax
from roformer_core import RoFormerConfig
import roformer_flax
from roformer_flax.training import create_train_state, make_train_step
model = getattr(roformer_flax, CLASS).from_config(RoFormerConfig(**C), dtype=jnp.bfloat16 if MODE == "bf16" else jnp.float32)
step = make_train_step(model, "jit")   # checks each batch on the host, as users run it
box = [step.place_state(create_train_state(model, optax.adamw(LR)))]
keys = ("masked_positions", "masked_labels", "masked_weights") if MODE in ("fp32", "bf16") else ("labels",)
feed = step.shard({k: B[k] for k in ("input_ids", "attention_mask", "token_type_ids") + keys})
key = jax.random.PRNGKey(0)
def run(n):
    for _ in range(n):
        box[0], _ = step(box[0], feed, key)
    jax.block_until_ready(box[0])
serve(run, WARMUP)
'''

REF_KERAS = r'''
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf, tf_keras, transformers
tf_keras.utils.set_random_seed(0)
model = getattr(transformers, "TF" + CLASS)(transformers.RoFormerConfig(**C))
model.compile(optimizer=tf_keras.optimizers.AdamW(LR), jit_compile=JIT)   # no loss: the model's own
features = {k: B[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
data = tf.data.Dataset.from_tensors(features).repeat().prefetch(2)
KERAS = tf_keras
''' + FIT_TIMER + "serve(run, WARMUP)\n"

# One step at sequence 2048, peak RSS above the resident size before it (VmHWM reset through clear_refs).
MEMORY_PRELUDE = r'''
import ctypes, gc
def rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
def measure(run):
    run(1)   # compilation and first-call allocations happen here, not in the measured step
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)   # freed heap pages back to the system: RSS is what is live
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")   # resets VmHWM to the current RSS
    before = rss_kib("VmRSS")
    start = time.perf_counter()
    run(1)
    seconds = time.perf_counter() - start
    print(json.dumps({"before_mib": before / 1024, "peak_mib": rss_kib("VmHWM") / 1024,
                      "step_mib": (rss_kib("VmHWM") - before) / 1024, "seconds": seconds}), flush=True)
'''

OURS_TORCH_MEMORY = r'''
import torch
from roformer_core import RoFormerConfig
from roformer_torch import RoFormerForMaskedLM
torch.manual_seed(0)
model = RoFormerForMaskedLM(RoFormerConfig(**C)).train()
if REMAT:
    model.gradient_checkpointing_enable()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
feed = {k: torch.as_tensor(B[k]) for k in ("input_ids", "attention_mask", "token_type_ids", "masked_positions",
                                            "masked_labels", "masked_weights")}
def run(n):
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        model(**feed).loss.backward()
        opt.step()
measure(run)
'''

OURS_FLAX_MEMORY = r'''
import jax, optax
from roformer_core import RoFormerConfig
from roformer_flax import RoFormerForMaskedLM
from roformer_flax.training import create_train_state, make_train_step
model = RoFormerForMaskedLM.from_config(RoFormerConfig(**C), gradient_checkpointing=REMAT)
step = make_train_step(model, "jit")
box = [step.place_state(create_train_state(model, optax.adamw(1e-4)))]
feed = step.shard({k: B[k] for k in ("input_ids", "attention_mask", "token_type_ids", "masked_positions",
                                     "masked_labels", "masked_weights")})
key = jax.random.PRNGKey(0)
def run(n):
    for _ in range(n):
        box[0], _ = step(box[0], feed, key)
    jax.block_until_ready(box[0])
measure(run)
'''

# Ours in Keras: ``fit`` as users run it (our fit checks every batch on the host on its way in),
# timed per batch like the reference; MODE "bf16" is the ``mixed_bfloat16`` policy (float32 weights).
OURS_KERAS_FIT = r'''
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras, tensorflow as tf
from roformer_core import RoFormerConfig
import roformer_tf
keras.utils.set_random_seed(0)
model = getattr(roformer_tf, CLASS)(RoFormerConfig(**C), dtype="mixed_bfloat16" if MODE == "bf16" else "float32")
model.compile(optimizer=keras.optimizers.AdamW(LR), jit_compile=JIT)   # no loss: the model's own
keys = ("masked_positions", "masked_labels", "masked_weights") if MODE in ("fp32", "bf16") else ("labels",)
features = {k: B[k] for k in ("input_ids", "attention_mask", "token_type_ids") + keys}
data = tf.data.Dataset.from_tensors(features).repeat().prefetch(2)
KERAS = keras
''' + FIT_TIMER + "serve(run, WARMUP)\n"

OURS_KERAS_MEMORY = r'''
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras, tensorflow as tf
from roformer_core import RoFormerConfig
from roformer_tf import RoFormerForMaskedLM
keras.utils.set_random_seed(0)
model = RoFormerForMaskedLM(RoFormerConfig(**C), gradient_checkpointing=REMAT)
model.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=False)   # Keras' default on CPU
feed = {k: B[k] for k in ("input_ids", "attention_mask", "token_type_ids", "masked_positions", "masked_labels",
                          "masked_weights")}
def run(n):
    for _ in range(n):
        model.train_on_batch(feed)
measure(run)
'''

#: Our Keras runners: section -> {runner name: script}. Names containing "fit, XLA" are compared with
#: the reference fit with XLA, the others with the reference fit without it.
OURS_KERAS: dict[str, dict[str, str]] = {
    "mlm": {f"ours keras fit, {xla}, {mode}": f"JIT, MODE = {xla == 'XLA'}, {mode.split()[0]!r}\n" + OURS_KERAS_FIT
            for xla, mode in (("no XLA", "fp32 (masked_positions)"), ("no XLA", "bf16 (masked_positions)"),
                              ("no XLA", "labels (fp32)"), ("XLA", "fp32 (masked_positions)"),
                              ("XLA", "bf16 (masked_positions)"), ("XLA", "labels (fp32)"))},
    "cls": {f"ours keras fit, {xla}": f"JIT = {xla == 'XLA'}\n" + OURS_KERAS_FIT for xla in ("no XLA", "XLA")},
    "memory": {"ours keras": OURS_KERAS_MEMORY},
}


# -- the parent: batches, processes, rounds ----------------------------------------------------------------
def mlm_batch(config: dict, batch: int, seq: int, seed: int = 0) -> dict:
    """A collator batch: random ids in [CLS] ... [SEP] rows, 15% masked 80/10/10, both label forms."""
    from roformer_core.collator import MaskedLMCollator

    rng = np.random.default_rng(seed)
    rows = [[2] + rng.integers(5, config["vocab_size"], seq - 2).tolist() + [3] for _ in range(batch)]
    collator = MaskedLMCollator(vocab_size=config["vocab_size"], mask_token_id=4, pad_token_id=0,
                                special_ids=(0, 1, 2, 3, 4), max_length=seq, seed=seed)
    return collator(rows)


def cls_batch(config: dict, batch: int, seq: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config["vocab_size"], (batch, seq)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids),
            "labels": rng.integers(0, config["num_labels"], batch).astype(np.int32)}


class Runner:
    """One runner process: started, warmed up, then ``step(n)`` seconds per step on request."""

    def __init__(self, name: str, python: str, script: str, config: dict, batch_file: str, **constants):
        self.name = name
        header = "".join(f"{k} = {v!r}\n" for k, v in constants.items())
        # TensorFlow with its defaults (oneDNN on), as users run it
        env = dict(os.environ, PYTHONPATH=SRC, TF_CPP_MIN_LOG_LEVEL="3", TRANSFORMERS_VERBOSITY="error",
                   PYTHONWARNINGS="ignore")
        env.pop("TF_ENABLE_ONEDNN_OPTS", None)
        self.proc = subprocess.Popen([python, "-c", PRELUDE + MEMORY_PRELUDE + header + script, json.dumps(config),
                                      batch_file], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.warmup_s = None

    def _reply(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} stopped: {self.proc.stderr.read()[-2000:]}")
            if line.startswith("{"):
                return json.loads(line)

    def wait_ready(self) -> None:
        self.warmup_s = self._reply()["warmup_s"]

    def step(self, n: int) -> dict:
        self.proc.stdin.write(json.dumps(n) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("0\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


#: a pause before each runner's turn, so that no runner pays for the one before it
SETTLE_S = float(os.environ.get("BENCH_SETTLE_S", "1.0"))

#: runner name -> CPU seconds per step, per round (filled by :func:`race`)
CPU_TIMES: dict[str, list[float]] = {}


def race(group: str, specs: list[tuple], rounds: int, steps: int, config: dict, batch_file: str) -> dict:
    """Start the runners of one framework (one after another, so warm-ups do not overlap), then
    alternate them for ``rounds`` rounds of ``steps`` steps; {name: [seconds per step per round]}
    (and in ``CPU_TIMES``, the process CPU seconds per step: all threads, spinning included)."""
    times, runners = {}, []
    try:
        for name, python, script, constants in specs:
            runner = Runner(name, python, script, config, batch_file, **constants)
            runners.append(runner)
            runner.wait_ready()
            print(f"  [{group}] {name}: ready (warm-up {runner.warmup_s:.1f} s)", flush=True)
        for r in range(rounds):
            for runner in runners:
                time.sleep(SETTLE_S)  # the previous runner's worker threads spin a while after its last step
                reply = runner.step(steps)
                times.setdefault(runner.name, []).append(reply["seconds"])
                CPU_TIMES.setdefault(runner.name, []).append(reply["cpu"])
            print(f"  [{group}] round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
                  flush=True)
    finally:
        for runner in runners:
            runner.close()
    return times


def report(title: str, times: dict, baselines: dict) -> list[dict]:
    """Print median and best seconds per step and the speed against each runner's baseline."""
    rows = []
    print(f"\n{title}")
    print(f"{'runner':52s} {'median s':>9s} {'best s':>8s} {'speed x (median)':>17s} {'speed x (best)':>15s}"
          f" {'CPU s (median)':>15s}")
    for name, values in times.items():
        base = baselines.get(name)
        median, best = statistics.median(values), min(values)
        row = {"runner": name, "median_s": median, "best_s": best, "rounds": values}
        if name in CPU_TIMES:
            row["cpu_rounds"] = CPU_TIMES[name]
        if base is not None and base in times:
            row["speed_median"] = statistics.median(times[base]) / median
            row["speed_best"] = min(times[base]) / best
            row["baseline"] = base
        speed = (f"{row['speed_median']:17.2f} {row['speed_best']:15.2f}" if "speed_median" in row
                 else f"{'(reference)':>17s} {'':>15s}")
        cpu = f" {statistics.median(CPU_TIMES[name]):15.2f}" if name in CPU_TIMES else ""
        print(f"{name:52s} {median:9.2f} {best:8.2f} {speed}{cpu}")
        rows.append(row)
    return rows


def section_training(kind: str, args, tmp: str) -> list[dict]:
    config = MLM if kind == "mlm" else BASE
    batch = mlm_batch(config, 16, 128) if kind == "mlm" else cls_batch(config, 16, 128)
    batch_file = os.path.join(tmp, f"{kind}.npz")
    np.savez(batch_file, **batch)
    rounds, steps = (args.rounds, args.steps) if kind == "mlm" else (args.cls_rounds, args.cls_steps)
    warmup = dict(WARMUP=args.warmup if kind == "mlm" else 1, MODE="cls", LR=1e-4 if kind == "mlm" else 1e-5,
                  CLASS="RoFormerForMaskedLM" if kind == "mlm" else "RoFormerForSequenceClassification")
    ours, ref = sys.executable, ORACLE
    ref_torch, ours_torch, ref_flax, ours_flax, ref_keras = REF_TORCH, OURS_TORCH, REF_FLAX, OURS_FLAX, REF_KERAS
    if kind == "mlm":
        groups = {
            "torch": [("reference torch (labels)", ref, ref_torch, warmup),
                      ("ours torch fp32 (masked_positions)", ours, ours_torch, dict(warmup, MODE="fp32")),
                      ("ours torch bf16 (masked_positions)", ours, ours_torch, dict(warmup, MODE="bf16")),
                      ("ours torch fp32 (labels)", ours, ours_torch, dict(warmup, MODE="labels"))],
            "flax": [("reference flax jit (labels)", ref, ref_flax, warmup),
                     ("ours flax fp32 (masked_positions)", ours, ours_flax, dict(warmup, MODE="fp32")),
                     ("ours flax bf16 (masked_positions)", ours, ours_flax, dict(warmup, MODE="bf16")),
                     ("ours flax fp32 (labels)", ours, ours_flax, dict(warmup, MODE="labels"))],
        }
    else:
        groups = {"torch": [("reference torch", ref, ref_torch, warmup), ("ours torch", ours, ours_torch, warmup)],
                  "flax": [("reference flax jit", ref, ref_flax, warmup), ("ours flax jit", ours, ours_flax, warmup)]}
    groups["keras"] = [("reference keras fit, no XLA", ref, ref_keras, dict(warmup, JIT=False)),
                       ("reference keras fit, XLA", ref, ref_keras, dict(warmup, JIT=True))]
    groups["keras"] += [(name, ours, script, warmup) for name, script in OURS_KERAS[kind].items()]
    times = {}
    for group, specs in groups.items():
        if args.frameworks and group not in args.frameworks:
            continue
        times.update(race(group, specs, rounds, steps, config, batch_file))
    baselines = {}
    for name in times:
        if name.startswith("ours torch"):
            baselines[name] = next(n for n in times if n.startswith("reference torch"))
        elif name.startswith("ours flax"):
            baselines[name] = next(n for n in times if n.startswith("reference flax"))
        elif not name.startswith("reference"):  # ours keras
            baselines[name] = "reference keras fit, XLA" if "fit, XLA" in name else "reference keras fit, no XLA"
    title = ("masked-LM training step: 4 layers, hidden 256, vocab 50,000, batch 16 x 128, AdamW" if kind == "mlm"
             else "sequence-classification step: base encoder (12 x 768), batch 16 x 128, AdamW")
    return report(title, times, baselines)


def section_memory(args, tmp: str) -> list[dict]:
    seq = 2048
    batch = mlm_batch(MLM, 2, seq)
    batch_file = os.path.join(tmp, "memory.npz")
    np.savez(batch_file, **batch)
    rows = []
    print(f"\npeak RSS of one masked-LM step at sequence {seq} (batch 2, P = {batch['masked_positions'].shape[1]}), "
          f"fresh process each")
    print(f"{'backend':20s} {'recompute':>9s} {'step peak MiB':>14s} {'process peak MiB':>17s} {'step s':>7s}")
    specs = [("ours torch", OURS_TORCH_MEMORY), ("ours flax", OURS_FLAX_MEMORY)] + list(OURS_KERAS["memory"].items())
    for name, script in specs:
        if args.frameworks and name.split()[-1] not in args.frameworks:
            continue
        for remat in (False, True):
            # a fixed mmap threshold: large buffers go back to the system when freed, so the
            # resident size follows what is live instead of what malloc keeps for later
            env = dict(os.environ, PYTHONPATH=SRC, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore",
                       MALLOC_MMAP_THRESHOLD_="131072")
            code = PRELUDE + MEMORY_PRELUDE + f"REMAT = {remat!r}\n" + script
            run = subprocess.run([sys.executable, "-c", code, json.dumps(MLM), batch_file], capture_output=True,
                                 text=True, env=env, cwd=ROOT, timeout=1800)
            if run.returncode != 0:
                raise RuntimeError(f"{name} remat={remat}: {run.stderr[-2000:]}")
            out = json.loads([line for line in run.stdout.splitlines() if line.startswith("{")][-1])
            rows.append({"backend": name, "recompute": remat, **out})
            print(f"{name:20s} {str(remat):>9s} {out['step_mib']:14.0f} {out['peak_mib']:17.0f} "
                  f"{out['seconds']:7.2f}", flush=True)
    return rows


def section_onnx(args, tmp: str) -> list[dict]:
    import torch

    from roformer_core import RoFormerConfig
    from roformer_torch import RoFormerForMaskedLM
    from roformer_torch.export import export_onnx, onnx_session, run_onnx

    torch.manual_seed(0)
    model = RoFormerForMaskedLM(RoFormerConfig(**BASE)).eval()
    path = os.path.join(tmp, "base.onnx")
    start = time.perf_counter()
    export_onnx(model, path)
    export_s = time.perf_counter() - start
    session = onnx_session(path, threads=torch.get_num_threads())
    rng = np.random.default_rng(0)
    ids = rng.integers(5, BASE["vocab_size"], (8, 128))
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feed = {k: torch.as_tensor(v) for k, v in inputs.items()}

    def eager():
        with torch.no_grad():
            return model(**feed).logits.numpy()

    def ort():
        return run_onnx(session, inputs)["logits"]

    diff = float(np.abs(eager() - ort()).max())
    times = {"eager torch": [], "onnxruntime": []}
    for _ in range(args.onnx_rounds):
        for name, fn in (("eager torch", eager), ("onnxruntime", ort)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    print(f"\ninference, base RoFormerForMaskedLM (12 x 768, vocab 50,000), batch 8 x 128, fp32, "
          f"{torch.get_num_threads()} threads; export {export_s:.1f} s, max abs diff {diff:.1e}")
    rows = report("onnxruntime against eager PyTorch", times, {"onnxruntime": "eager torch"})
    return rows + [{"export_s": export_s, "max_abs_diff": diff}]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=["mlm", "cls", "memory", "onnx"],
                        choices=["mlm", "cls", "memory", "onnx"])
    parser.add_argument("--frameworks", nargs="*", default=None, choices=["torch", "flax", "keras"],
                        help="only these frameworks' runners (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="mlm: alternating rounds")
    parser.add_argument("--steps", type=int, default=2, help="mlm: steps per runner and round")
    parser.add_argument("--warmup", type=int, default=2, help="mlm: untimed steps first")
    parser.add_argument("--cls-rounds", type=int, default=2)
    parser.add_argument("--cls-steps", type=int, default=1)
    parser.add_argument("--onnx-rounds", type=int, default=5)
    parser.add_argument("--json", help="write every number here too")
    parser.add_argument("--smoke", action="store_true", help="tiny models: check the plumbing in a minute")
    args = parser.parse_args(argv)
    if args.smoke:
        small = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        MLM.update(small)
        BASE.update(small)
    if not os.path.exists(ORACLE) and ({"mlm", "cls"} & set(args.only)):
        raise SystemExit(f"the reference runs in the oracle venv, not found at {ORACLE} "
                         "(./run tests builds it; or set ROFORMER_ORACLE_PYTHON)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at the start; python {platform.python_version()}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for section in args.only:
            start = time.perf_counter()
            if section in ("mlm", "cls"):
                results[section] = section_training(section, args, tmp)
            elif section == "memory":
                results[section] = section_memory(args, tmp)
            else:
                results[section] = section_onnx(args, tmp)
            print(f"  ({section}: {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f})",
                  flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
