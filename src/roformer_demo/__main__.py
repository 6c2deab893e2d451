"""The main job (placeholder until the full pipeline lands): build, save, reload and run a small RoFormer."""

import sys
import tempfile
import time

import torch

from roformer_core import RoFormerConfig
from roformer_torch import RoFormerForMaskedLM


def main() -> int:
    t0 = time.time()
    cfg = RoFormerConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128)
    model = RoFormerForMaskedLM(cfg).eval()
    out = tempfile.mkdtemp(prefix="roformer-demo-")
    model.save_pretrained(out)
    back = RoFormerForMaskedLM.from_pretrained(out)
    ids = torch.randint(5, cfg.vocab_size, (2, 16))
    with torch.no_grad():
        diff = (model(ids).logits - back(ids).logits).abs().max().item()
    print(f"saved a {sum(p.numel() for p in model.parameters()):,}-parameter RoFormerForMaskedLM to {out}")
    print(f"reloaded it; logits of the reloaded model differ by {diff:.1e}; took {time.time() - t0:.1f}s")
    return 0 if diff == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
