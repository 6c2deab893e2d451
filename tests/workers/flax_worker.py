"""A Flax training run, on one process or several: the program the multi-process and resume tests
start, and the one the README's "Training at scale" launches on N hosts.

Each step trains on the global batch of that step (drawn from the seed and the step number, so
the position in the data is the step counter); process ``i`` of ``n`` loads only its rows.
Every line on stdout is one JSON event (``start``, ``step``, ``resumed``, ``saved``, ``done``);
the final params go to ``--out`` as an ``.npz`` (one file per process).

    # one host, 2 devices
    python tests/workers/flax_worker.py --devices 2 --steps 8 --out params.npz
    # N hosts (or N processes on one): the same command with these, on each
    python tests/workers/flax_worker.py --coordinator HOST0:1234 --num-processes N --process-id I ...
"""

from __future__ import annotations

import argparse
import os

from common import global_batch, pace, run_main, say


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--coordinator", help="host:port of process 0 (with --num-processes > 1)")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--devices", type=int, default=2, help="CPU devices of this process (virtual, on a CPU host)")
    p.add_argument("--runs", default="jit:masked_lm,jit:sequence_classification",
                   help="mode:head pairs trained one after the other (modes: jit, pmap)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", help="training checkpoint folder (resumes from it when it holds one)")
    p.add_argument("--every", type=int, default=1, help="checkpoint every N steps")
    p.add_argument("--keep", type=int, default=2)
    p.add_argument("--sync-save", action="store_true", help="write checkpoints in the foreground")
    p.add_argument("--save-to", help="canonical folder written at the end (process 0 writes, all wait)")
    p.add_argument("--out", help="final params (.npz; {pid} is replaced by the process id)")
    p.add_argument("--heartbeat", type=int, default=10, help="seconds without a heartbeat before a process is lost")
    p.add_argument("--cache", help="JAX compilation cache folder (restarts skip compiling)")
    p.add_argument("--pace", type=float, default=0.0, help="seconds to wait after each step")
    return p.parse_args(argv)


#: the learning-rate schedule's length (warmup 1 step, then linear decay)
SCHEDULE_STEPS = 1000


def main(argv=None) -> int:
    args = parse(argv)
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} " \
                              f"--xla_force_host_platform_device_count={args.devices}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    if args.cache:
        jax.config.update("jax_compilation_cache_dir", args.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    from roformer_flax import training

    if args.num_processes > 1:
        training.initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                        heartbeat_timeout_s=args.heartbeat, initialization_timeout_s=60)
    import numpy as np

    import roformer_flax

    _kill_hook()
    config = roformer_flax.RoFormerConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32, num_labels=3, hidden_dropout_prob=args.dropout,
                                          attention_probs_dropout_prob=args.dropout)
    say(event="start", process=jax.process_index(), processes=jax.process_count(), devices=jax.device_count())
    results = {}
    for run in args.runs.split(","):
        mode, head = run.split(":")
        results.update(train(args, config, mode, head))
    if args.out:
        np.savez(args.out.replace("{pid}", str(jax.process_index())), **results)
    say(event="done", process=jax.process_index())
    return 0


def train(args, config, mode: str, head: str) -> dict:
    """Train one model with one step mode; returns its final params by name."""
    import jax
    import numpy as np

    import roformer_flax
    from roformer_flax import training
    from roformer_flax.checkpointing import TrainingCheckpoints

    results = {}
    model = roformer_flax.MODEL_CLASSES[head].from_config(config, seed=args.seed)
    # a schedule that does not depend on --steps: runs of any length compile the same step (and share
    # the compilation cache)
    optimizer = training.make_optimizer(1e-2, num_train_steps=SCHEDULE_STEPS, warmup_steps=1)
    step = training.make_train_step(model, mode)
    state = step.place_state(training.create_train_state(model, optimizer))
    key = jax.random.PRNGKey(args.seed)
    first = 0
    checkpoints = None
    if args.checkpoints:
        folder = os.path.join(args.checkpoints, f"{mode}-{head}")
        checkpoints = TrainingCheckpoints(folder, step, every=args.every, keep=args.keep,
                                          async_save=not args.sync_save, timeout_s=60)
        restored = checkpoints.restore(state)
        if restored is not None:
            state, key, first = restored.state, restored.rng, restored.data["next_batch"]
            say(event="resumed", mode=mode, head=head, step=restored.step)
    rows = step.process_rows(args.global_batch)
    for i in range(first, args.steps):
        batch = {k: v[rows] for k, v in global_batch(head, config, args.global_batch, args.seed, i).items()}
        state, metrics = step(state, step.shard(batch), key)
        say(event="step", mode=mode, head=head, step=i + 1)
        pace(args)
        if checkpoints is not None and checkpoints.save(state, data={"next_batch": i + 1}, rng=key):
            say(event="saved", mode=mode, head=head, step=i + 1)
    if checkpoints is not None:
        checkpoints.close()
    params = step.host_params(state)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        results[f"{mode}/{head}/" + "/".join(getattr(p, "key", str(p)) for p in path)] = np.asarray(leaf)
    if args.save_to and mode == "jit":
        step.save_pretrained(model, state, os.path.join(args.save_to, head))
    return results


def _kill_hook() -> None:
    """With ROFORMER_TEST_KILL_IN_SAVE=N, SIGKILL this process while the checkpoint of step N is being
    committed: its files are written, the rename that completes it has not happened."""
    target = os.environ.get("ROFORMER_TEST_KILL_IN_SAVE")
    if not target:
        return
    import signal

    from orbax.checkpoint._src.path import atomicity

    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *a, **k):
        if os.path.basename(str(self.get_final())) == target:
            say(event="killed-in-save", step=int(target))
            os.kill(os.getpid(), signal.SIGKILL)
        return await original(self, *a, **k)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize


if __name__ == "__main__":
    run_main(main, "flax_worker")
