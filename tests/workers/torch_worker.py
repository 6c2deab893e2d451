"""A PyTorch fine-tuning run (``RoFormerForSequenceClassification``), on one process or several with
DistributedDataParallel: the program the multi-process and resume tests start, and the one the
README's "Training at scale" launches with ``torchrun``.

Each step trains on the global batch of that step (drawn from the seed and the step number);
process ``r`` of ``n`` takes its rows. Every line on stdout is one JSON event; the final weights
go to ``--out`` (``.npz``, ``{pid}`` replaced by the rank).

    python tests/workers/torch_worker.py --steps 8 --out weights.npz
    torchrun --nnodes N --node-rank I --nproc-per-node 1 --master-addr HOST0 --master-port 29500 \\
        tests/workers/torch_worker.py --steps 8 --checkpoints ckpt/ --save-to out/
"""

from __future__ import annotations

import argparse
import os

from common import global_batch, pace, run_main, say


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rank", type=int, help="this process (default: RANK from torchrun)")
    p.add_argument("--world-size", type=int, help="processes in all (default: WORLD_SIZE from torchrun)")
    p.add_argument("--port", type=int, help="MASTER_PORT (default: from the environment)")
    p.add_argument("--heads", default="sequence_classification")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", help="training checkpoint folder (resumes from it when it holds one)")
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--keep", type=int, default=2)
    p.add_argument("--save-to", help="canonical folder written at the end (rank 0 writes, all wait)")
    p.add_argument("--out", help="final weights (.npz; {pid} is replaced by the rank)")
    p.add_argument("--timeout", type=float, default=20, help="seconds any collective may wait")
    p.add_argument("--pace", type=float, default=0.0, help="seconds to wait after each step")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    import numpy as np
    import torch

    from roformer_torch import MODEL_CLASSES, RoFormerConfig
    from roformer_torch import training

    torch.set_num_threads(1)
    rank, size = training.init_distributed("gloo", timeout_s=args.timeout, rank=args.rank,
                                           world_size=args.world_size, master_port=args.port)
    _kill_hook()
    config = RoFormerConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, num_labels=3, hidden_dropout_prob=args.dropout,
                            attention_probs_dropout_prob=args.dropout)
    rows = slice(rank * args.global_batch // size, (rank + 1) * args.global_batch // size)
    say(event="start", rank=rank, world_size=size)
    results = {}
    for head in args.heads.split(","):
        torch.manual_seed(args.seed)  # the same initial weights in every process
        model = MODEL_CLASSES[head](config)
        torch.manual_seed(args.seed + 1 + rank)  # each process its own dropout stream
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 2))
        checkpoints = None
        if args.checkpoints:
            checkpoints = training.TrainingCheckpoints(os.path.join(args.checkpoints, head), every=args.every,
                                                       keep=args.keep)

        def batch_at(step, head=head):
            return {k: torch.as_tensor(v[rows]) for k, v in global_batch(head, config, args.global_batch,
                                                                          args.seed, step).items()}

        def on_step(step, loss, head=head, checkpoints=checkpoints):
            if checkpoints is not None and checkpoints.last_restored is not None:
                say(event="resumed", head=head, step=checkpoints.last_restored.step)
                checkpoints.last_restored = None
            say(event="step", head=head, step=step, loss=loss)
            pace(args)

        model = training.train(model, optimizer, batch_at, args.steps, scheduler=scheduler, checkpoints=checkpoints,
                               max_grad_norm=1.0, on_step=on_step)
        if args.save_to:
            folder = os.path.join(args.save_to, head)
            if rank == 0:
                model.save_pretrained(folder)
            training.barrier()  # the others go on only once the folder is complete
            say(event="saved-folder", rank=rank, complete=os.path.isfile(os.path.join(folder, "config.json")))
        results.update({f"{head}/{k}": v.detach().numpy() for k, v in model.state_dict().items()})
    if args.out:
        np.savez(args.out.replace("{pid}", str(rank)), **results)
    say(event="done", rank=rank)
    return 0


def _kill_hook() -> None:
    """With ROFORMER_TEST_KILL_IN_SAVE=N, SIGKILL this process halfway through writing the checkpoint
    of step N: half of its bytes are in the temporary file, none under the final name."""
    target = os.environ.get("ROFORMER_TEST_KILL_IN_SAVE")
    if not target:
        return
    import io
    import signal

    import torch

    from roformer_torch import training

    original = torch.save

    def save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("step") == int(target) and hasattr(f, "write"):
            buffer = io.BytesIO()
            original(obj, buffer, *a, **k)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            say(event="killed-in-save", step=int(target))
            os.kill(os.getpid(), signal.SIGKILL)
        return original(obj, f, *a, **k)

    training.torch.save = save


if __name__ == "__main__":
    run_main(main, "torch_worker")
