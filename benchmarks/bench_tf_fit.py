"""Training steps per second: Keras ``model.fit`` (XLA off and on) against the same step in roformer_torch.

A 4-layer, 256-hidden RoFormerForMaskedLM, batch 16, sequence 128, Adam, dropout as configured
(0.1), the same batch every step, 15% of the labels real and the rest -100. The three run in
this process in alternating rounds, so the printed ratios compare like with like even on a
machine shared with other jobs.

Usage:
    PYTHONPATH=src python benchmarks/bench_tf_fit.py [--rounds 3] [--steps 4] [--warmup 2] [--vocab-size 12000]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402

from common import bench_config, make_batch, steps_per_second, torch_trainer  # noqa: E402


def keras_trainer(config, features, labels, jit_compile: bool):
    """``run(steps)``: one ``model.fit`` of that many steps (compiled without a loss, Adam)."""
    import keras
    import tensorflow as tf

    from roformer_tf import RoFormerForMaskedLM

    keras.utils.set_random_seed(0)
    model = RoFormerForMaskedLM(config)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=jit_compile)
    dataset = tf.data.Dataset.from_tensors((features, labels)).repeat().prefetch(2)

    def run(steps: int) -> None:
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)

    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the frameworks alternate within each")
    parser.add_argument("--steps", type=int, default=4, help="training steps per framework per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing, XLA compilation)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=12000)
    args = parser.parse_args(argv)

    config = bench_config(args.vocab_size)
    features, labels = make_batch(config, args.batch, args.seq)
    print(f"RoFormerForMaskedLM: 4 layers, hidden 256, heads 4, intermediate 1024, vocab {config.vocab_size}; "
          f"batch {args.batch} x seq {args.seq}; Adam; {args.rounds} rounds of {args.steps} steps per framework "
          f"after {args.warmup} warm-up steps")
    trainers = {
        "roformer_torch train step": torch_trainer(config, features, labels),
        "roformer_tf fit, jit_compile=False": keras_trainer(config, features, labels, jit_compile=False),
        "roformer_tf fit, jit_compile=True": keras_trainer(config, features, labels, jit_compile=True),
    }
    for run in trainers.values():
        run(args.warmup)
    # alternating rounds, so a burst of load from other jobs hits every framework alike
    rates = {name: [] for name in trainers}
    for _ in range(args.rounds):
        for name, run in trainers.items():
            rates[name].append(steps_per_second(run, args.steps))
    torch_median = float(np.median(rates["roformer_torch train step"]))
    torch_best = max(rates["roformer_torch train step"])
    print(f"{'':36s} {'median':>8s} {'best':>8s}   ratio to torch (median, best)")
    for name, values in rates.items():
        median, best = float(np.median(values)), max(values)
        print(f"{name:36s} {median:8.3f} {best:8.3f}   {median / torch_median:5.2f}  {best / torch_best:5.2f}"
              "   steps/s")


if __name__ == "__main__":
    main()
