"""What the three workers share: their events on stdout, their pace, and how they end.

The workers run as scripts (``python tests/workers/torch_worker.py ...``), so this folder is first on
``sys.path`` and they import it as ``common``.
"""

from __future__ import annotations

import json
import sys
import time


def say(**event) -> None:
    """One JSON event on stdout (what the tests wait for and read back)."""
    print(json.dumps(event), flush=True)


def pace(args) -> None:
    """Wait ``--pace`` seconds: a step of a real run takes that long, so a test can kill it at a step."""
    if args.pace:
        time.sleep(args.pace)


def run_main(main, name: str) -> None:
    """Run ``main()`` and exit with its code; an error is one line on stderr, as a user would see it."""
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001
        print(f"{name}: error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


def global_batch(head: str, config, size: int, seed: int, index: int) -> dict:
    """The global batch number ``index`` (numpy, int64): a function of the seed and the index only, so every
    process, and a resumed run, draws the same one. Half of the rows are padded; a masked-LM batch has ~30%
    of its tokens put to [MASK] (id 4) and labelled, at least one per row."""
    import numpy as np

    rng = np.random.default_rng([seed, index])
    ids = rng.integers(5, config.vocab_size, (size, 12))
    mask = np.ones_like(ids)
    mask[: size // 2, 9:] = 0
    batch = {"input_ids": np.where(mask == 1, ids, 0), "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    if head == "masked_lm":
        chosen = (rng.random(ids.shape) < 0.3) & (mask == 1)
        chosen[np.arange(size), 1] = True
        batch["labels"] = np.where(chosen, ids, -100)
        batch["input_ids"] = np.where(chosen, 4, batch["input_ids"])
    else:
        batch["labels"] = rng.integers(0, config.num_labels, size)
    return batch
