"""Training steps per second: the jitted roformer_flax train step against the same step in roformer_torch.

A 4-layer, 256-hidden RoFormerForMaskedLM (4 heads, intermediate 1024, vocabulary 12,000, dropout
0.1), batch 16, sequence 128, Adam (lr 1e-4, no weight decay, no clipping, on both sides), 15% of
the labels real and the rest -100, the same batch every step (the setup of bench_tf_fit.py). The
JAX step is ``jax.jit(roformer_flax.training.train_step)`` with the state donated, timed up to
``block_until_ready``; the PyTorch step is forward + backward + ``optimizer.step()``. Both run in
this process and alternate in rounds after untimed warm-up steps (tracing, XLA compilation), so a
burst of load from other jobs hits both alike; the median and best rounds and their ratio print.

Usage:
    PYTHONPATH=src python benchmarks/bench_flax_train.py [--rounds 3] [--steps 4] [--vocab-size 12000]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

from common import bench_config, make_batch, steps_per_second, torch_trainer


def flax_runner(config, batch: dict):
    """A function running n jitted roformer_flax training steps (waiting for the last one)."""
    import jax
    import jax.numpy as jnp
    import optax

    from roformer_flax import RoFormerForMaskedLM
    from roformer_flax.training import create_train_state, train_step

    model = RoFormerForMaskedLM.from_config(config, seed=0)
    state = [create_train_state(model, optax.adam(1e-4))]
    step = jax.jit(functools.partial(train_step, head=model.head, config=config), donate_argnums=(0,))
    feed = {k: jnp.asarray(v) for k, v in batch.items()}
    key = jax.random.PRNGKey(0)

    def run(n: int) -> None:
        for _ in range(n):
            state[0], _ = step(state[0], feed, key)
        jax.block_until_ready(state[0])
    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, alternating the frameworks")
    parser.add_argument("--steps", type=int, default=4, help="training steps per framework and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing, XLA compilation)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=12000)
    args = parser.parse_args(argv)

    import jax

    config = bench_config(args.vocab_size)
    features, labels = make_batch(config, args.batch, args.seq)
    batch = {**features, "labels": labels}
    print(f"RoFormerForMaskedLM: 4 layers, hidden 256, heads 4, intermediate 1024, vocab {config.vocab_size}; "
          f"batch {args.batch} x seq {args.seq}; Adam; {args.rounds} rounds x {args.steps} steps after "
          f"{args.warmup} warm-up; jax on {jax.devices()[0].platform}")
    runners = {"roformer_torch train step": torch_trainer(config, features, labels),
               "roformer_flax jitted train step": flax_runner(config, batch)}
    for name, run in runners.items():
        start = time.perf_counter()
        run(args.warmup)
        print(f"  warm-up of {name}: {time.perf_counter() - start:.1f} s (compilation included)")
    rates = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            rates[name].append(steps_per_second(run, args.steps))
    torch_name = next(iter(runners))
    base_median, base_best = statistics.median(rates[torch_name]), max(rates[torch_name])
    for name, r in rates.items():
        median, best = statistics.median(r), max(r)
        print(f"{name:32s}: median {median:6.3f} steps/s, best {best:6.3f}   "
              f"ratio to torch: median {median / base_median:5.2f}, best {best / base_best:5.2f}")


if __name__ == "__main__":
    main()
