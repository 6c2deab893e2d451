"""``roformer-convert``: convert, inspect and verify RoFormer checkpoints from the command line.

    roformer-convert SRC DST [--to canonical|tf-h5|flax|keras] [--dtype bfloat16] [--head drop]
                             [--max-shard-size 2GB] [--from FORMAT] [--config FILE] [--force] [--quiet]
                             [--pooler-activation linear]
    roformer-convert inspect SRC [--from FORMAT] [--config FILE]
    roformer-convert verify DIR [--atol 1e-5] [--head HEAD]

Bad input (a missing path, an unreadable or damaged file, tensors that do not fit the
config) prints one line on stderr and exits with 2; ``verify`` exits with 1 when a backend
differs by more than ``--atol`` or fails to run. Ctrl-C (SIGINT) or SIGTERM removes what the
conversion had written so far, prints one line and exits with 130 / 143; temporaries a killed
run (SIGKILL, power loss) left behind are removed by the next conversion into the same place.

Example:
    >>> main(["inspect", "/no/such/checkpoint"])
    2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading

from roformer_core.config import POOLER_ACTIVATIONS
from roformer_core.errors import RoFormerError
from roformer_core.io import remove_stale_temporaries, sigterm_cleanup

from roformer_convert import api
from roformer_convert.formats import FORMATS
from roformer_convert.writers import WRITERS

PROG = "roformer-convert"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="src_format", choices=FORMATS, help="source format (default: detected)")
    parser.add_argument("--config", help="config json to use instead of the one beside the weights")


def _convert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Convert a RoFormer checkpoint between formats. "
                                "Other commands: `inspect SRC`, `verify DIR`.")
    p.add_argument("src", help="checkpoint folder or file (safetensors, pytorch_model.bin, tf_model.h5, "
                               "flax_model.msgpack, bert_model.ckpt, *.weights.h5)")
    p.add_argument("dst", help="destination folder")
    p.add_argument("--to", default="canonical", choices=list(WRITERS), help="target format (default: canonical)")
    p.add_argument("--dtype", choices=list(api.DTYPES), help="cast every tensor (default: keep)")
    p.add_argument("--head", default="keep", choices=api.HEAD_CHOICES,
                   help="keep the task head (default), drop it (bare model), or name the head to keep")
    p.add_argument("--max-shard-size", help="shard canonical output, e.g. 2GB or 500MB")
    p.add_argument("--force", action="store_true", help="overwrite an existing destination")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no notes")
    p.add_argument("--pooler-activation", choices=POOLER_ACTIVATIONS,
                   help="the pooler's activation, which no original TF1 file holds (RoFormer-Sim: linear)")
    _common(p)
    return p


def _inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} inspect", description="Show a checkpoint's format, config and tensors.")
    p.add_argument("src")
    _common(p)
    return p


def _verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} verify", description="Run a checkpoint in every installed backend "
                                "and compare the outputs with PyTorch.")
    p.add_argument("dir")
    p.add_argument("--atol", type=float, default=1e-5, help="largest allowed max abs difference (default 1e-5)")
    p.add_argument("--head", choices=list(api.HEADS), help="head to run (default: the one the checkpoint holds)")
    _common(p)
    return p


def _print_inspection(info: api.Inspection) -> None:
    c = info.config
    print(f"path:        {info.path}")
    print(f"format:      {info.format}")
    print(f"head:        {info.head} ({api.HEADS[info.head]})")
    print(f"config:      vocab_size={c.vocab_size} hidden_size={c.hidden_size} embedding_size={c.embedding_size} "
          f"layers={c.num_hidden_layers} heads={c.num_attention_heads} intermediate_size={c.intermediate_size} "
          f"max_positions={c.max_position_embeddings} hidden_act={c.hidden_act} num_labels={c.num_labels}")
    print(f"parameters:  {info.parameters:,}")
    print(f"tensors:     {len(info.tensors)}")
    width = max((len(n) for n, _, _ in info.tensors), default=0)
    for name, shape, tag in info.tensors:
        note = "  (ignored: recomputed or tied)" if name in info.ignored else ""
        print(f"  {name:<{width}}  {tag:<4} {list(shape)}{note}")


class _InterruptOnce:
    """SIGINT -> KeyboardInterrupt the first time; later ones wait, so a second Ctrl-C cannot cut the
    removal of the partial output short."""

    def __init__(self):
        self.seen = False

    def __call__(self, signum, frame):
        if not self.seen:
            self.seen = True
            raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupt_once():
    install = threading.current_thread() is threading.main_thread() \
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler  # a program's own handler stays
    if install:
        previous = signal.signal(signal.SIGINT, _InterruptOnce())
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, previous)


def _clean_destination(dst: str) -> None:
    """Remove what conversions killed before their cleanup could run left at ``dst``: temporaries
    sit beside a new destination, or inside an existing one (where they would make it look non-empty)."""
    dst = os.path.abspath(dst)
    for folder in (os.path.dirname(dst), dst):
        if os.path.isdir(folder):
            remove_stale_temporaries(folder)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 verify mismatch, 2 bad input,
    130 / 143 interrupted by SIGINT / SIGTERM)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in ("inspect", "verify") else "convert"
    done: list[str] = []  # the destination, once it is complete
    try:
        with sigterm_cleanup(), _interrupt_once():
            return _main(command, argv, done)
    except KeyboardInterrupt:
        return _interrupted(command, done, 128 + signal.SIGINT)
    except SystemExit as e:
        if e.code != 128 + signal.SIGTERM:  # argparse's own exits (--help, usage errors)
            raise
        return _interrupted(command, done, e.code)


def _interrupted(command: str, done: list[str], code: int) -> int:
    if command != "convert":
        what = "nothing was written"
    elif done:
        what = f"{done[0]} had been written completely"
    else:
        what = "nothing was written; the partial output was removed"
    print(f"{PROG}: interrupted; {what}", file=sys.stderr)
    return code


def _main(command: str, argv: list[str], done: list[str]) -> int:
    try:
        if command == "inspect":
            args = _inspect_parser().parse_args(argv[1:])
            info = api.inspect(args.src, args.src_format, args.config)
            _print_inspection(info)
            if info.problem:
                raise RoFormerError(info.problem)
        elif command == "verify":
            args = _verify_parser().parse_args(argv[1:])
            result = api.verify(args.dir, atol=args.atol, head=args.head, src_format=args.src_format,
                                config=args.config)
            print(f"head: {result.head}; max abs difference of each output from {result.reference} "
                  f"(tolerance {args.atol:g})")
            print(result.table())
            return 0 if result.ok else 1
        else:
            args = _convert_parser().parse_args(argv)
            _clean_destination(args.dst)
            result = api.convert(args.src, args.dst, to=args.to, src_format=args.src_format, dtype=args.dtype,
                                 head=args.head, max_shard_size=args.max_shard_size, config=args.config,
                                 force=args.force, progress=sys.stderr.isatty() and not args.quiet,
                                 pooler_activation=args.pooler_activation)
            done.append(args.dst)
            if not args.quiet:
                print(f"{args.src} ({result.source_format}) -> {args.dst} ({result.target_format}): "
                      f"{result.head}, {result.tensors} tensors, {result.parameters:,} parameters", file=sys.stderr)
                if result.dropped:
                    print(f"left out (not part of the {result.head} head): {', '.join(result.dropped)}",
                          file=sys.stderr)
    except (RoFormerError, OSError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
