"""The ``roformer`` command: ``run`` a pipeline on lines of text, or ``convert``, ``build-vocab``, ``demo``.

``roformer run`` reads one input per line (stdin, or ``--input FILE``) and prints one JSON result
per input, in order, as the pipelines return them::

    echo "水在零度時會[MASK]" | roformer run --task fill-mask --model junnyu/roformer_chinese_base --backend keras
    roformer run --task text-classification --model runs/demo/classifier --input reviews.txt --top-k 2
    printf '谁在北京\\t我在北京工作\\n' | roformer run --task question-answering --model my-qa-model

For ``question-answering`` a line is ``question<TAB>context`` or a JSON object
``{"question": ..., "context": ...}``; for ``text-classification`` ``text<TAB>text_pair`` (or
``{"text": ..., "text_pair": ...}``) is a pair; blank lines are skipped. The other subcommands
are ``roformer-convert``, ``roformer-build-vocab`` and ``roformer-demo``. Bad input prints one
line on stderr and exits with 2.

Example:
    >>> main(["run", "--task", "summarize", "--model", "x"])
    2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from typing import Iterator, Sequence, TextIO

from roformer_core.errors import RoFormerError

COMMANDS = {
    "run": "run a pipeline (fill-mask, text-classification, ...) on lines of text",
    "convert": "convert checkpoints between formats (roformer-convert)",
    "build-vocab": "build a vocab.txt from a corpus (roformer-build-vocab)",
    "demo": "the main job: train, serve and convert on Chinese reviews (roformer-demo)",
}
TASK_CHOICES = ("fill-mask", "text-classification", "sentiment-analysis", "token-classification", "ner",
                "question-answering", "feature-extraction", "text-generation")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``roformer``; returns the exit code (0 done, 2 bad input).

    Example: see the module docstring.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        stream = sys.stdout if argv else sys.stderr
        print(_usage(), file=stream)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "run":
            return run(rest)
        if command == "convert":
            from roformer_convert.cli import main as convert_main
            return convert_main(rest)
        if command == "build-vocab":
            from roformer_core.vocab_builder import main as vocab_main
            return vocab_main(rest)
        if command == "demo":
            from roformer_demo.cli import main as demo_main
            return demo_main(rest)
    except SystemExit as e:  # argparse's --help and usage errors
        return e.code if isinstance(e.code, int) else 2
    except ModuleNotFoundError as e:
        print(f"roformer {command}: error: it needs {e.name}, which is not installed", file=sys.stderr)
        return 2
    print(f"roformer: error: unknown command {command!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2


def _usage() -> str:
    lines = ["usage: roformer COMMAND [options]  (roformer COMMAND --help for a command's options)", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The options of ``roformer run``.

    Example:
        >>> build_parser().parse_args(["--task", "fill-mask", "--model", "m"]).batch_size
        8
    """
    parser = argparse.ArgumentParser(prog="roformer run", description="Run a pipeline on lines of text: one JSON "
                                     "result per input line.")
    parser.add_argument("--task", required=True, choices=TASK_CHOICES, help="what to do")
    parser.add_argument("--model", required=True, help="a checkpoint folder or a hub id")
    parser.add_argument("--tokenizer", help="a tokenizer folder or hub id (default: the model's)")
    parser.add_argument("--backend", help="torch, keras (tf) or flax (jax); default: the first installed")
    parser.add_argument("--input", help="a UTF-8 file, one input per line (default, or '-': stdin)")
    parser.add_argument("--top-k", type=int, help="results per input (fill-mask, text-classification, "
                        "question-answering)")
    parser.add_argument("--dtype", help="float32 (default), float16 or bfloat16")
    parser.add_argument("--device", help="cpu (default), cuda, cuda:N ...")
    parser.add_argument("--batch-size", type=int, default=8, help="inputs per forward pass (default 8)")
    parser.add_argument("--revision", help="the hub revision (branch, tag or commit)")
    parser.add_argument("--aggregation-strategy", help="token-classification: none, simple, first, average, max")
    parser.add_argument("--max-new-tokens", type=int, help="text-generation: tokens to add (default up to 20 in all)")
    return parser


def run(argv: Sequence[str], stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """``roformer run``: load the pipeline once, then print one JSON line per input line.

    Example:
        >>> run(["--task", "fill-mask", "--model", "/no/such/folder"], stdin=io.StringIO("好[MASK]\\n"))
        2
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    try:
        args = build_parser().parse_args(list(argv))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # one line of error, not TensorFlow's start-up log
    try:
        options = _call_options(args)
        source, name = _open(args.input, stdin)
        try:
            lines = _lines(source, name)
            first = next(lines, None)
            if first is None:
                raise _Bad(f"{name} is empty: give one input per line")
            from roformer_core.pipelines import pipeline, task_name

            task = task_name(args.task)
            pipe = pipeline(task, args.model, tokenizer=args.tokenizer, backend=args.backend, dtype=args.dtype,
                            device=args.device, batch_size=args.batch_size,
                            **({"revision": args.revision} if args.revision else {}))
            chunk_size = 1 if _interactive(source) else max(64, 8 * args.batch_size)
            for chunk in _chunks(_prepend(first, lines), chunk_size):
                for result in _results(pipe, task, chunk, options):
                    stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
                stdout.flush()
        finally:
            if source is not stdin:
                source.close()
    except (RoFormerError, _Bad) as e:
        print(f"roformer run: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): nothing left to say
        return 0
    return 0


class _Bad(Exception):
    """Bad input found by the command itself (not by a pipeline)."""


def _call_options(args) -> dict:
    options = {}
    task = args.task
    if args.top_k is not None:
        if task not in ("fill-mask", "text-classification", "sentiment-analysis", "question-answering"):
            raise _Bad(f"--top-k does not apply to {task}")
        options["top_k"] = args.top_k
    if args.aggregation_strategy is not None:
        if task not in ("token-classification", "ner"):
            raise _Bad("--aggregation-strategy applies to token-classification only")
        options["aggregation_strategy"] = args.aggregation_strategy
    if args.max_new_tokens is not None:
        if task != "text-generation":
            raise _Bad("--max-new-tokens applies to text-generation only")
        options["max_new_tokens"] = args.max_new_tokens
    return options


def _open(path: str | None, stdin: TextIO) -> tuple[TextIO, str]:
    if path is None or path == "-":
        return stdin, "stdin"
    try:
        return open(path, encoding="utf-8"), path
    except OSError as e:
        raise _Bad(f"cannot read {path}: {e.strerror or e}") from None


def _lines(source: TextIO, name: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line."""
    try:
        for number, line in enumerate(source, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line
    except UnicodeDecodeError as e:
        raise _Bad(f"{name} is not UTF-8 text: {e.reason}") from None


def _prepend(first, rest):
    yield first
    yield from rest


def _interactive(source: TextIO) -> bool:
    try:
        return source.isatty()
    except (AttributeError, ValueError):
        return False


def _chunks(lines: Iterator[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    chunk: list = []
    for item in lines:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _parse(task: str, number: int, line: str):
    if task == "question-answering":
        if line.lstrip().startswith("{"):
            item = _json(number, line)
            if not isinstance(item, dict) or not {"question", "context"} <= set(item):
                raise _Bad(f"line {number}: a JSON input needs the keys 'question' and 'context'")
            return {"question": item["question"], "context": item["context"]}
        question, tab, context = line.partition("\t")
        if not tab:
            raise _Bad(f"line {number}: give 'question<TAB>context' or {{\"question\": ..., \"context\": ...}}")
        return {"question": question, "context": context}
    if task == "text-classification":
        if line.lstrip().startswith("{"):
            item = _json(number, line)
            if isinstance(item, dict) and "text" in item:
                return {k: v for k, v in item.items() if k in ("text", "text_pair")}
        text, tab, pair = line.partition("\t")
        return {"text": text, "text_pair": pair} if tab else line
    return line


def _json(number: int, line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise _Bad(f"line {number}: not valid JSON ({e.msg})") from None


def _results(pipe, task: str, chunk: list[tuple[int, str]], options: dict) -> Iterator:
    """The pipeline's results for a chunk of lines; on bad input, those of the lines before the
    first bad one, then an error naming it."""
    inputs = [_parse(task, n, line) for n, line in chunk]
    try:
        results = _call(pipe, task, inputs, options)
    except RoFormerError as e:
        if len(chunk) == 1:
            raise _Bad(f"line {chunk[0][0]}: {e}") from None
    else:
        yield from results
        return
    for (number, _), item in zip(chunk, inputs):  # one at a time, to find the line to blame
        try:
            result = _call(pipe, task, [item], options)
        except RoFormerError as e:
            raise _Bad(f"line {number}: {e}") from None
        yield from result


def _call(pipe, task: str, inputs: list, options: dict) -> list:
    if task == "question-answering":
        out = pipe(inputs, **options)
        return [out] if len(inputs) == 1 else out
    out = pipe(inputs, **options)
    # fill-mask gives a list of one text its result alone, as the reference does
    return [out] if len(inputs) == 1 and task == "fill-mask" else out


__all__ = ["main", "run", "build_parser", "COMMANDS"]
