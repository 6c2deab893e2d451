"""Converting a base-size RoFormer checkpoint to canonical: time and peak memory against a plain copy.

Makes a RoFormerForMaskedLM checkpoint at the base config (12 layers, 768 hidden, vocab
50000, random weights) as ``pytorch_model.bin`` and as the reference ``tf_model.h5``, then,
each in a fresh child process so that peak RSS is the job's own (VmHWM), times
``roformer_convert.convert(src, dst)`` against a plain read+write copy of the same bytes
(64 MB chunks). Imports (torch for the .bin, h5py for the .h5) happen in the child before
the clock starts; the child's peak RSS includes them, and is printed next to
what the child held before converting. CPU time (user + system) is printed beside the wall
clock: on a shared machine it moves less with the neighbours' load. Runs alternate and the best time of each is kept,
so a busy neighbour on the machine hurts both sides alike. Targets: conversion at most
1.5x the copy time, peak RSS at most 1.3x the checkpoint size.

    python benchmarks/bench_convert.py [--layers 12] [--repeats 3] [--dir /tmp/bench-convert]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

CHUNK = 64 * 1024 * 1024


def _rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    try:  # Linux: ru_maxrss survives exec (it would report the parent's peak); VmHWM belongs to this process
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(job: str, src: str, dst: str) -> None:
    """Run one job in this (fresh) process and print its time and peak RSS as JSON."""
    if job == "copy":
        before = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while block := fin.read(CHUNK):
                fout.write(block)
    else:
        from roformer_convert import convert

        if src.endswith(".bin"):
            import torch  # noqa: F401  (imported before the clock, as a long-running tool would have it)
        else:
            import h5py  # noqa: F401
        before = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        convert(src, dst)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_rss_mb": _rss_mb(), "rss_before_mb": before}))


def run_child(job: str, src: str, dst: str) -> dict:
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    elif os.path.exists(dst):
        os.remove(dst)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", job, src, dst],
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_inputs(folder: str, layers: int) -> tuple[str, str]:
    """pytorch_model.bin and tf_model.h5 (reference layout) of one random base-size MLM."""
    import torch

    from roformer_convert import convert
    from roformer_core import RoFormerConfig, canonical_spec, save_checkpoint

    config = RoFormerConfig(vocab_size=50000, hidden_size=768, num_hidden_layers=layers, num_attention_heads=12,
                            intermediate_size=3072)
    rng = np.random.default_rng(0)
    state = {n: rng.standard_normal(s, dtype=np.float32) * 0.02 for n, s in canonical_spec(config, "masked_lm").items()}
    canonical = os.path.join(folder, "canonical")
    save_checkpoint(canonical, config, state)
    os.makedirs(os.path.join(folder, "bin"), exist_ok=True)
    torch.save({n: torch.from_numpy(a) for n, a in state.items()}, os.path.join(folder, "bin", "pytorch_model.bin"))
    config.save(os.path.join(folder, "bin"))
    convert(canonical, os.path.join(folder, "h5"), to="tf-h5", force=True)
    return os.path.join(folder, "bin", "pytorch_model.bin"), os.path.join(folder, "h5", "tf_model.h5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", help="working folder (default: a temporary one, removed at the end)")
    parser.add_argument("--child", nargs=3, metavar=("JOB", "SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    folder = args.dir or tempfile.mkdtemp(prefix="bench-convert-")
    os.makedirs(folder, exist_ok=True)
    try:
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"numpy {np.__version__}")
        print(f"making a base-size RoFormerForMaskedLM ({args.layers} layers, hidden 768, vocab 50000) ...")
        inputs = make_inputs(folder, args.layers)
        print(f"\n{'input':<20}{'size MB':>8}{'copy s':>8}{'conv s':>8}{'ratio':>7}{'copy cpu':>10}{'conv cpu':>10}"
              f"{'ratio':>7}{'copy RSS':>10}{'before':>8}{'peak RSS':>10}{'RSS/size':>10}")
        for src in inputs:
            size = os.path.getsize(src) / 2 ** 20
            copies, converts = [], []
            for _ in range(args.repeats):
                copies.append(run_child("copy", src, os.path.join(folder, "copy.out")))
                converts.append(run_child("convert", src, os.path.join(folder, "converted")))
            best = {k: (min(c[k] for c in copies), min(c[k] for c in converts)) for k in ("seconds", "cpu")}
            peak = max(c["peak_rss_mb"] for c in converts)
            before = min(c["rss_before_mb"] for c in converts)
            copy_rss = max(c["peak_rss_mb"] for c in copies)
            (copy_s, conv_s), (copy_cpu, conv_cpu) = best["seconds"], best["cpu"]
            print(f"{os.path.basename(src):<20}{size:>8.0f}{copy_s:>8.2f}{conv_s:>8.2f}{conv_s / copy_s:>6.2f}x"
                  f"{copy_cpu:>10.2f}{conv_cpu:>10.2f}{conv_cpu / copy_cpu:>6.2f}x"
                  f"{copy_rss:>10.0f}{before:>8.0f}{peak:>10.0f}{peak / size:>9.2f}x")
        print("\ntimes: best of the runs, wall clock and CPU (user + system) of the job itself; targets: "
              "convert <= 1.5x copy, peak RSS <= 1.3x checkpoint size (RSS counts the interpreter and the "
              "imports: 'before')")
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
