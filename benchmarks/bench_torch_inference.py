"""Inference throughput of roformer_torch against the reference PyTorch RoFormer (transformers).

RoFormerForMaskedLM at the base config (12 layers, 768 hidden, vocab 50000), batch 8,
sequences 128 and 512, same weights in both. Prints, in one run: the reference fp32 time,
ours in fp32 / bf16 / fill-mask (vocabulary logits only at the [MASK] positions), the
ratios, model FLOP/s, and this machine's matmul peak (a large fp32 and bf16 torch.matmul)
measured in the same run. Runs are interleaved and the best of several is kept, so a
busy neighbour on the machine hurts both sides alike.

    .venv/bin/python benchmarks/bench_torch_inference.py [--seqs 128 512] [--repeats 5] [--layers 12]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from common import best_time
from roformer_core import RoFormerConfig
from roformer_torch import RoFormerForMaskedLM


def matmul_peak(dtype, n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / best_time(lambda: torch.matmul(a, b), repeats)


def model_flops(cfg: RoFormerConfig, batch: int, seq: int, vocab_positions: int | None = None) -> float:
    """Matmul FLOPs of one forward pass (what a FLOP/s figure for a transformer counts)."""
    H, I, E, V = cfg.hidden_size, cfg.intermediate_size, cfg.embedding_size, cfg.vocab_size
    tokens = batch * seq
    per_layer = tokens * (2 * 4 * H * H + 2 * 2 * H * I) + 2 * 2 * batch * seq * seq * H
    head_tokens = tokens if vocab_positions is None else vocab_positions
    head = head_tokens * (2 * H * E + 2 * E * V)
    return cfg.num_hidden_layers * per_layer + head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seqs", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import transformers  # the reference: benchmark-only, never imported by the package

    torch.manual_seed(0)
    cfg = RoFormerConfig(num_hidden_layers=args.layers)  # base: 768 hidden, 12 heads, vocab 50000
    ref = transformers.RoFormerForMaskedLM(transformers.RoFormerConfig(**cfg.to_dict())).eval()
    ours = RoFormerForMaskedLM(cfg).eval()
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if k in ours.state_dict()})
    ours_bf16 = RoFormerForMaskedLM(cfg).eval()
    ours_bf16.load_state_dict(ours.state_dict())
    ours_bf16.to(torch.bfloat16)

    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"matmul peak: fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s")
    print(f"{'seq':>4} {'variant':<22} {'time ms':>9} {'vs ref':>7} {'GFLOP/s':>8} {'% peak':>7}  max|dlogits|")
    for seq in args.seqs:
        ids = torch.randint(5, cfg.vocab_size, (args.batch, seq))
        mask_pos = torch.zeros_like(ids, dtype=torch.bool)
        mask_pos[:, 1::7] = True  # about 15% of the positions are [MASK]
        with torch.inference_mode():
            want = ref(input_ids=ids).logits
            got = ours(ids).logits
            got16 = ours_bf16(ids).logits.float()
            fill = ours(ids, prediction_mask=mask_pos).logits
            runs = {
                "reference fp32": (lambda: ref(input_ids=ids).logits, None, peak32, None),
                "ours fp32": (lambda: ours(ids).logits, None, peak32, (got - want).abs().max()),
                "ours bf16": (lambda: ours_bf16(ids).logits, None, peak16, (got16 - want).abs().max()),
                "ours fill-mask fp32": (lambda: ours(ids, prediction_mask=mask_pos).logits, int(mask_pos.sum()),
                                        peak32, (fill - want[mask_pos]).abs().max()),
            }
            times = {name: [] for name in runs}
            for name, (fn, _, _, _) in runs.items():
                fn()
            for _ in range(args.repeats):  # interleaved, best of N
                for name, (fn, _, _, _) in runs.items():
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
        ref_t = min(times["reference fp32"])
        for name, (fn, vocab_positions, peak, diff) in runs.items():
            t = min(times[name])
            flops = model_flops(cfg, args.batch, seq, vocab_positions)
            d = "" if diff is None else f"{float(diff):.2e}"
            print(f"{seq:>4} {name:<22} {t * 1e3:>9.1f} {ref_t / t:>6.2f}x {flops / t / 1e9:>8.1f} "
                  f"{100 * flops / t / peak:>6.1f}%  {d}")


if __name__ == "__main__":
    main()
