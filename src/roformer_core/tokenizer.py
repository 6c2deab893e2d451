"""The RoFormer tokenizer: rjieba words, then BERT WordPiece, identical to the reference.

``RoFormerTokenizer`` gives the same tokens and ids as the reference's *slow*
``RoFormerTokenizer`` (transformers 4.x): the text is lowercased outside special tokens,
cut into words by ``rjieba.cut(text, False)``; a word found in the vocabulary stays whole,
any other word goes through BERT basic tokenization and greedy WordPiece
(:mod:`roformer_core.wordpiece`). The result of each distinct word is cached, which makes
batches several times faster than the reference while giving the same ids.

Beyond the reference it also returns offsets (the characters of the original text each
token came from), pickles, is safe to share between threads (the only mutable state is the
word cache, whose entries never change once written), and never changes itself on save.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import rjieba

from roformer_core.errors import ConfigError, InputError
from roformer_core.io import atomic_write_text
from roformer_core.wordpiece import WordPiece, is_chinese_char

logger = logging.getLogger(__name__)

VOCAB_NAME = "vocab.txt"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"

#: The reference's "no maximum length" (what its tokenizer_config.json files hold).
VERY_LARGE_INTEGER = int(1e30)
_LARGE_INTEGER = int(1e20)
_CACHE_LIMIT = 1 << 20
# The reference's order of special tokens (its all_special_tokens).
_SPECIAL_ATTRS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_PADDING = ("longest", "max_length", "do_not_pad")
_TRUNCATION = ("longest_first", "only_first", "only_second", "do_not_truncate")
_TENSOR_TYPES = ("np", "pt", "tf", "jax")
# The CJK Unified Ideographs block: unlike the compatibility ideographs, NFC leaves them alone.
_PLAIN_CJK = re.compile("[\u4e00-\u9fff]+")


class BatchEncoding(dict):
    """The output of :meth:`RoFormerTokenizer.__call__`: a dict whose keys are also attributes.

    Example:
        >>> enc = BatchEncoding({"input_ids": [[2, 5, 3]]})
        >>> enc.input_ids == enc["input_ids"]
        True
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getstate__(self):  # a plain dict state, so __getattr__ is never asked for __setstate__
        return dict(self)

    def __setstate__(self, state):
        self.update(state)


def _lower(text: str) -> str:
    # The reference lowercases one character at a time; str.lower() differs only on a
    # capital sigma, where it picks the final form from the context.
    return text.lower() if "Σ" not in text else "".join(c.lower() for c in text)


def _cut(text: str) -> list[str]:
    try:
        return rjieba.cut(text, False)  # the reference's call: the HMM for unseen words off
    except UnicodeEncodeError as e:
        raise InputError(f"text is not valid Unicode (a lone surrogate at {e.start})") from None


def _cjk_like(ch: str) -> bool:
    cp = ord(ch)
    return (is_chinese_char(ch) or 0x3000 <= cp <= 0x30FF or 0xFF00 <= cp <= 0xFFEF
            or (cp > 0x7F and unicodedata.category(ch).startswith("P")))


def _as_list(ids: Any) -> Any:
    if hasattr(ids, "numpy") and not hasattr(ids, "tolist"):  # a TensorFlow tensor
        ids = ids.numpy()
    if hasattr(ids, "tolist"):  # numpy, torch and jax arrays
        ids = ids.tolist()
    return ids


def _token_content(value: Any) -> str:
    # tokenizer_config.json files hold special tokens as strings or as AddedToken dicts.
    if isinstance(value, dict):
        value = value.get("content")
    if not isinstance(value, str):
        raise ConfigError(f"a special token must be a string, got {value!r}")
    return value


class RoFormerTokenizer:
    """rjieba + WordPiece tokenizer, id for id the reference's slow ``RoFormerTokenizer``.

    Args:
        vocab_file: a ``vocab.txt`` (one token per line, the line number is the id).
        vocab: instead of a file, a list of tokens or a ``{token: id}`` dict with ids 0..n-1.
        do_lower_case: lowercase text outside special tokens (and strip accents, see below);
            as in the reference, it has no effect when ``do_basic_tokenize`` is False.
        do_basic_tokenize: run BERT basic tokenization before WordPiece on words not in the vocab.
        never_split: tokens basic tokenization must keep whole.
        tokenize_chinese_chars: split CJK ideographs apart (on in every RoFormer release).
        strip_accents: None follows ``do_lower_case``; True/False forces it.
        model_max_length: the default ``max_length`` for ``truncation=True`` / ``padding="max_length"``.
        padding_side, truncation_side: ``"right"`` (default) or ``"left"``.

    Example:
        >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
        ...                                "今", "天", "气", "非常", "好", "。"])
        >>> tok.tokenize("今天天气非常好。")
        ['今', '天', '天', '气', '非常', '好', '。']
        >>> tok("今天天气非常好。")["input_ids"]
        [2, 5, 6, 6, 7, 8, 9, 10, 3]
        >>> tok.decode([2, 5, 6, 8, 9, 10, 3], skip_special_tokens=True)
        '今天非常好。'
    """

    model_input_names = ("input_ids", "token_type_ids", "attention_mask")
    pad_token_type_id = 0

    def __init__(self, vocab_file: str | os.PathLike | None = None, do_lower_case: bool = True,
                 do_basic_tokenize: bool = True, never_split: Iterable[str] | None = None,
                 unk_token: str = "[UNK]", sep_token: str = "[SEP]", pad_token: str = "[PAD]",
                 cls_token: str = "[CLS]", mask_token: str = "[MASK]", tokenize_chinese_chars: bool = True,
                 strip_accents: bool | None = None, model_max_length: int = VERY_LARGE_INTEGER,
                 padding_side: str = "right", truncation_side: str = "right",
                 vocab: Sequence[str] | Mapping[str, int] | None = None):
        if (vocab_file is None) == (vocab is None):
            raise ConfigError("give exactly one of vocab_file and vocab")
        if never_split is not None and not isinstance(never_split, (str, bytes, Mapping)):
            try:
                never_split = list(never_split)
            except TypeError:
                pass  # refused just below, by name
        check_options({"do_lower_case": do_lower_case, "do_basic_tokenize": do_basic_tokenize,
                       "tokenize_chinese_chars": tokenize_chinese_chars, "never_split": never_split,
                       "model_max_length": model_max_length}, "RoFormerTokenizer argument", allow_none=False)
        tokens = _read_vocab(vocab_file) if vocab is None else _vocab_lines(vocab)
        # Built the reference's way: a repeated token keeps its last line number.
        self.vocab: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        self.ids_to_tokens: dict[int, str] = {i: t for t, i in self.vocab.items()}
        self._lines = tuple(tokens)

        specials = {"unk_token": unk_token, "sep_token": sep_token, "pad_token": pad_token,
                    "cls_token": cls_token, "mask_token": mask_token}
        for name, value in specials.items():
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        missing = [t for t in specials.values() if t not in self.vocab]
        if missing:
            source = os.fspath(vocab_file) if vocab_file is not None else "the vocabulary"
            raise ConfigError(f"{source} lacks the special token(s) {', '.join(missing)}; "
                              f"a RoFormer vocabulary needs {', '.join(specials.values())}")
        if padding_side not in ("right", "left") or truncation_side not in ("right", "left"):
            raise ConfigError("padding_side and truncation_side must be 'right' or 'left'")
        if strip_accents not in (None, True, False):
            raise ConfigError(f"strip_accents must be None, True or False, got {strip_accents!r}")
        self._specials = specials
        self.do_lower_case = bool(do_lower_case)
        # The reference lowercases only through its basic tokenizer: without basic
        # tokenization nothing is lowercased, whatever do_lower_case says.
        self._lowercase = self.do_lower_case and bool(do_basic_tokenize)
        self.do_basic_tokenize = bool(do_basic_tokenize)
        self.never_split = sorted(set(never_split)) if never_split else None
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.strip_accents = strip_accents
        self.model_max_length = int(model_max_length)
        self.padding_side = padding_side
        self.truncation_side = truncation_side

        self._wordpiece = WordPiece(self.vocab, unk_token, self.do_lower_case, self.never_split or (),
                                    self.all_special_tokens, self.tokenize_chinese_chars, strip_accents,
                                    self.do_basic_tokenize)
        # Longest first, so that of two special tokens starting at one place the longer wins.
        alternatives = sorted(set(self.all_special_tokens), key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, alternatives)))
        self._cache: dict[str, tuple] = {}

    # -- the vocabulary and the special tokens ------------------------------------------

    @property
    def vocab_size(self) -> int:
        """The number of distinct tokens (the reference's ``vocab_size``)."""
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        """A copy of the ``{token: id}`` mapping."""
        return dict(self.vocab)

    unk_token = property(lambda self: self._specials["unk_token"])
    sep_token = property(lambda self: self._specials["sep_token"])
    pad_token = property(lambda self: self._specials["pad_token"])
    cls_token = property(lambda self: self._specials["cls_token"])
    mask_token = property(lambda self: self._specials["mask_token"])
    unk_token_id = property(lambda self: self.vocab[self.unk_token])
    sep_token_id = property(lambda self: self.vocab[self.sep_token])
    pad_token_id = property(lambda self: self.vocab[self.pad_token])
    cls_token_id = property(lambda self: self.vocab[self.cls_token])
    mask_token_id = property(lambda self: self.vocab[self.mask_token])

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """``{"unk_token": "[UNK]", ...}``"""
        return dict(self._specials)

    @property
    def all_special_tokens(self) -> list[str]:
        """The special tokens, each once, in the reference's order (unk, sep, pad, cls, mask)."""
        return list(dict.fromkeys(self._specials[a] for a in _SPECIAL_ATTRS))

    @property
    def all_special_ids(self) -> list[int]:
        """The ids of :attr:`all_special_tokens`."""
        return [self.vocab[t] for t in self.all_special_tokens]

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Token(s) to id(s); unknown tokens give ``unk_token_id``."""
        unk = self.vocab[self.unk_token]
        if isinstance(tokens, str):
            return self.vocab.get(tokens, unk)
        return [self.vocab.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Id(s) to token(s); an id outside the vocabulary gives ``unk_token``.

        ``ids`` is one integer or a sequence (list, tuple, 1-D array or tensor) of integers;
        anything else, strings included, is an :class:`InputError`.

        Example:
            >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好"])
            >>> tok.convert_ids_to_tokens([2, 5, 99])
            ['[CLS]', '好', '[UNK]']
            >>> tok.convert_ids_to_tokens("5")
            Traceback (most recent call last):
            ...
            roformer_core.errors.InputError: convert_ids_to_tokens takes an integer id or a sequence of them, got a str
        """
        ids = _as_list(ids)
        if isinstance(ids, int) and not isinstance(ids, bool):
            return self.ids_to_tokens.get(ids, self.unk_token)
        if not isinstance(ids, (list, tuple)):
            raise InputError(f"convert_ids_to_tokens takes an integer id or a sequence of them, "
                             f"got a {type(ids).__name__}")
        for i in ids:
            if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
                raise InputError(f"convert_ids_to_tokens takes integer ids, got an item of type {type(i).__name__}")
        special = set(self.all_special_ids) if skip_special_tokens else ()
        return [self.ids_to_tokens.get(int(i), self.unk_token) for i in ids if int(i) not in special]

    # -- tokenizing -------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """The tokens of ``text``, no special tokens added.

        Example:
            >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "##s", "!"])
            >>> tok.tokenize("Hellos [MASK]!")
            ['hello', '##s', '[MASK]', '!']
        """
        return self._encode_text(text)[0]

    def _entry(self, word: str) -> tuple:
        # (tokens, ids, spans in the word) of one jieba word; computed once per distinct word.
        entry = self._cache.get(word)
        if entry is None:
            vocab = self.vocab
            if word in vocab:
                pieces = [(word, 0, len(word))]
            elif self.tokenize_chinese_chars and self.do_basic_tokenize and _PLAIN_CJK.fullmatch(word):
                # What basic tokenization + WordPiece do to these ideographs (NFC-stable,
                # caseless, accentless), in a fraction of the time: one token per character.
                keep = self._wordpiece.never_split
                pieces = [(c if c in vocab or c in keep else self.unk_token, i, i + 1) for i, c in enumerate(word)]
            else:
                pieces = self._wordpiece.pieces(word)
            unk = vocab[self.unk_token]
            entry = (tuple([p[0] for p in pieces]), tuple([vocab.get(p[0], unk) for p in pieces]),
                     tuple([(p[1], p[2]) for p in pieces]))
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = entry
        return entry

    def _lowered(self, text: str) -> tuple[str, list[int] | None, bool]:
        """(lowered text, origin, special): ``origin[i]`` is the index in ``text`` of character
        ``i`` of the lowered text, None when that is ``i`` itself; ``special`` tells whether a
        special token may be written in the text."""
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        special = self._special_re
        if not self._lowercase:
            return text, None, special.search(text) is not None
        if special.search(text) is None:
            low = _lower(text)
            parts = [(text, True)]
        else:  # the reference lowercases around the special tokens written in the text
            parts, last = [], 0
            for m in special.finditer(text):
                parts += [(text[last:m.start()], True), (m.group(), False)]
                last = m.end()
            parts.append((text[last:], True))
            low = "".join(_lower(p) if lowered else p for p, lowered in parts)
        origin = None
        if len(low) != len(text):  # one character became two ("İ" → "i̇")
            origin, pos = [], 0
            for p, lowered in parts:
                for ch in p:
                    origin.extend([pos] * (len(ch.lower()) if lowered else 1))
                    pos += 1
        return low, origin, len(parts) > 1 or special.search(low) is not None

    def _ids(self, text: str) -> list[int]:
        """The ids of ``text`` (the batch path: one dict lookup per distinct word seen before)."""
        low, _, special = self._lowered(text)
        if special:
            return self._encode_text(text)[1]
        ids: list[int] = []
        cache = self._cache
        for word in _cut(low):
            ids.extend((cache.get(word) or self._entry(word))[1])
        return ids

    def _encode_text(self, text: str) -> tuple[list[str], list[int], list[tuple[int, int]]]:
        """Tokens, ids and ``(start, end)`` offsets into ``text`` of every token of ``text``."""
        low, origin, special = self._lowered(text)
        tokens: list[str] = []
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        # The reference splits the lowered text on the special tokens, then cuts each piece.
        pieces: list = list(self._special_re.finditer(low)) if special else []
        last = 0
        for m in pieces + [None]:
            stop = m.start() if m else len(low)
            pos = last
            for word in _cut(low[last:stop]) if stop > last else ():
                entry = self._cache.get(word) or self._entry(word)
                tokens.extend(entry[0])
                ids.extend(entry[1])
                spans.extend([(pos + s, pos + e) for s, e in entry[2]])
                pos += len(word)
            if m:
                tokens.append(m.group())
                ids.append(self.vocab[m.group()])
                spans.append(m.span())
                last = m.end()
        if origin is not None:
            spans = [(origin[s], origin[e - 1] + 1) for s, e in spans]
        return tokens, ids, spans

    # -- special tokens, as the reference lays them out ----------------------------------

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None) -> list[int]:
        """``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]``."""
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        if token_ids_1 is None:
            return cls + list(token_ids_0) + sep
        return cls + list(token_ids_0) + sep + list(token_ids_1) + sep

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: list[int] | None = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        """1 where :meth:`build_inputs_with_special_tokens` puts (or has put) a special token."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise InputError("give one sequence when it already has its special tokens")
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in token_ids_0]
        if token_ids_1 is None:
            return [1] + [0] * len(token_ids_0) + [1]
        return [1] + [0] * len(token_ids_0) + [1] + [0] * len(token_ids_1) + [1]

    def create_token_type_ids_from_sequences(self, token_ids_0: list[int],
                                             token_ids_1: list[int] | None = None) -> list[int]:
        """0 for ``[CLS] A [SEP]``, 1 for ``B [SEP]``."""
        first = [0] * (len(token_ids_0) + 2)
        return first if token_ids_1 is None else first + [1] * (len(token_ids_1) + 1)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """2 for one sequence, 3 for a pair."""
        return 3 if pair else 2

    # -- encoding ----------------------------------------------------------------------

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True, **kwargs) -> list[int]:
        """The ids of one text (or pair); keyword arguments as for :meth:`__call__`.

        Example:
            >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好"])
            >>> tok.encode("好", "好好")
            [2, 5, 3, 5, 5, 3]
        """
        if not isinstance(text, str):
            raise InputError(f"encode takes one text (a string), got {type(text).__name__}")
        return self(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def __call__(self, text: str | Sequence[str] | Sequence[tuple[str, str]],
                 text_pair: str | Sequence[str] | None = None, add_special_tokens: bool = True,
                 padding: bool | str = False, truncation: bool | str | None = None,
                 max_length: int | None = None, stride: int = 0, pad_to_multiple_of: int | None = None,
                 padding_side: str | None = None, return_tensors: str | None = None,
                 return_token_type_ids: bool | None = None, return_attention_mask: bool | None = None,
                 return_overflowing_tokens: bool = False, return_special_tokens_mask: bool = False,
                 return_offsets_mapping: bool = False, return_length: bool = False) -> BatchEncoding:
        """Encode one text, a pair, or a batch of texts or pairs, as the reference does.

        ``text`` is a string, or a list of strings (a batch); ``text_pair`` matches it. A
        batch of pairs may also be given as a list of ``(a, b)`` tuples. ``padding``: False,
        True/"longest", "max_length"; ``truncation``: False, True/"longest_first",
        "only_first", "only_second" (a ``max_length`` alone turns on "longest_first", as in the
        reference). ``return_tensors``: None (lists), "np", "pt", "tf" or "jax" (imports only
        that framework). ``offset_mapping`` gives the ``(start, end)`` characters of the
        original text for each token, ``(0, 0)`` for added special tokens and padding.
        With ``return_overflowing_tokens`` the truncated ids come back as ``overflowing_tokens``
        (the last ``stride`` kept ids included) and ``num_truncated_tokens``.

        Example:
            >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好", "天"])
            >>> enc = tok(["好天", "好"], padding=True, return_offsets_mapping=True)
            >>> enc["input_ids"], enc["attention_mask"]
            ([[2, 5, 6, 3], [2, 5, 3, 0]], [[1, 1, 1, 1], [1, 1, 1, 0]])
            >>> enc["offset_mapping"][0]
            [(0, 0), (0, 1), (1, 2), (0, 0)]
        """
        batched, firsts, seconds = self._inputs(text, text_pair)
        pad, trunc, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        if return_tensors is not None and return_tensors not in _TENSOR_TYPES:
            raise InputError(f"return_tensors must be one of {_TENSOR_TYPES} or None, got {return_tensors!r}")
        if padding_side not in (None, "right", "left"):
            raise InputError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if not isinstance(stride, int) or stride < 0:
            raise InputError(f"stride must be a non-negative integer, got {stride!r}")
        if return_overflowing_tokens and trunc == "longest_first" and seconds is not None:
            raise InputError("overflowing tokens cannot be returned for pairs truncated 'longest_first'; "
                             "use truncation='only_first' or 'only_second'")
        rows = []
        for i, first in enumerate(firsts):
            second = seconds[i] if seconds is not None else None
            rows.append(self._row(first, second, add_special_tokens, trunc, max_length, stride,
                                  return_token_type_ids is not False, return_special_tokens_mask,
                                  return_offsets_mapping, return_overflowing_tokens))
        # The reference counts a batch's lengths before padding, a single text's after.
        lengths = [len(r["input_ids"]) for r in rows]
        self._pad(rows, pad, max_length, pad_to_multiple_of, padding_side or self.padding_side,
                  return_attention_mask is not False)
        if not batched:
            lengths = [len(r["input_ids"]) for r in rows]
        keys = [k for k in ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask",
                            "offset_mapping", "overflowing_tokens", "num_truncated_tokens") if rows and k in rows[0]]
        data = {k: [r[k] for r in rows] for k in keys}
        if return_length:
            data["length"] = lengths
        if not batched and return_tensors is None:
            data = {k: v[0] for k, v in data.items()}
        if return_tensors is not None:
            data = _to_tensors(data, return_tensors)
        return BatchEncoding(data)

    def _inputs(self, text, text_pair):
        # -> (batched, first texts, second texts or None)
        def check(items, what):
            for t in items:
                if not isinstance(t, str):
                    raise InputError(f"{what} must be a string or a list of strings, got an item of type "
                                     f"{type(t).__name__}")

        if isinstance(text, str):
            if text_pair is not None and not isinstance(text_pair, str):
                raise InputError(f"text_pair must be a string when text is, got {type(text_pair).__name__}")
            return False, [text], None if text_pair is None else [text_pair]
        if not isinstance(text, (list, tuple)):
            raise InputError(f"text must be a string or a list of strings, got {type(text).__name__}")
        if text_pair is None and text and all(isinstance(t, (list, tuple)) for t in text):
            if any(len(t) != 2 for t in text):
                raise InputError("a batch of pairs must hold (text, text_pair) tuples")
            firsts, seconds = [t[0] for t in text], [t[1] for t in text]
            check(firsts, "text")
            check(seconds, "text_pair")
            return True, firsts, seconds
        check(text, "text")
        if text_pair is None:
            return True, list(text), None
        if not isinstance(text_pair, (list, tuple)) or len(text_pair) != len(text):
            raise InputError("text_pair must be a list as long as text")
        check(text_pair, "text_pair")
        return True, list(text), list(text_pair)

    def _strategies(self, padding, truncation, max_length, pad_to_multiple_of):
        # The reference's rules, including its defaults and its quiet fallbacks.
        if max_length is not None and (not isinstance(max_length, int) or max_length < 0):
            raise InputError(f"max_length must be a non-negative integer, got {max_length!r}")
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of <= 0):
            raise InputError(f"pad_to_multiple_of must be a positive integer, got {pad_to_multiple_of!r}")
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"
        if padding is True:
            pad = "longest"
        elif padding is False or padding is None:
            pad = "do_not_pad"
        elif padding in _PADDING:
            pad = padding
        else:
            raise InputError(f"padding must be True, False or one of {_PADDING}, got {padding!r}")
        if truncation is True:
            trunc = "longest_first"
        elif truncation is False or truncation is None:
            trunc = "do_not_truncate"
        elif truncation in _TRUNCATION:
            trunc = truncation
        else:
            raise InputError(f"truncation must be True, False or one of {_TRUNCATION}, got {truncation!r}")
        if max_length is None:
            unlimited = self.model_max_length > _LARGE_INTEGER
            if pad == "max_length":
                if unlimited:
                    logger.warning("padding='max_length' without max_length or model_max_length: not padding")
                    pad = "do_not_pad"
                else:
                    max_length = self.model_max_length
            if trunc != "do_not_truncate":
                if unlimited:
                    logger.warning("truncation without max_length or model_max_length: not truncating")
                    trunc = "do_not_truncate"
                else:
                    max_length = self.model_max_length
        if (trunc != "do_not_truncate" and pad != "do_not_pad" and pad_to_multiple_of
                and max_length is not None and max_length % pad_to_multiple_of):
            raise InputError(f"max_length {max_length} is not a multiple of pad_to_multiple_of {pad_to_multiple_of}")
        return pad, trunc, max_length

    def _encode_one(self, text: str, offsets: bool):
        if offsets:
            _, ids, spans = self._encode_text(text)
            return ids, spans
        return self._ids(text), None

    def _row(self, first, second, add_special, trunc, max_length, stride, want_types, want_special,
             want_offsets, want_overflow) -> dict:
        ids, offs = self._encode_one(first, want_offsets)
        pair, pair_offs = self._encode_one(second, want_offsets) if second is not None else (None, None)
        total = len(ids) + (len(pair) if pair is not None else 0)
        if add_special:
            total += self.num_special_tokens_to_add(pair is not None)
        overflow: list[int] = []
        if trunc != "do_not_truncate" and max_length and total > max_length:
            keep, keep_pair, over = self._truncation(len(ids), len(pair) if pair is not None else None,
                                                     total - max_length, trunc, stride)
            if over is not None:
                overflow = (ids if over[0] == 0 else pair)[over[1]]
            ids = ids[keep]
            offs = offs[keep] if offs is not None else None
            if pair is not None:
                pair = pair[keep_pair]
                pair_offs = pair_offs[keep_pair] if pair_offs is not None else None
        row: dict[str, Any] = {}
        if add_special:
            row["input_ids"] = self.build_inputs_with_special_tokens(ids, pair)
            types = self.create_token_type_ids_from_sequences(ids, pair)
            special = self.get_special_tokens_mask(ids, pair)
            if offs is not None:
                row_offs = [(0, 0)] + offs + [(0, 0)] + (pair_offs + [(0, 0)] if pair is not None else [])
        else:
            row["input_ids"] = ids + (pair if pair is not None else [])
            types = [0] * len(row["input_ids"])
            special = [0] * len(row["input_ids"])
            if offs is not None:
                row_offs = offs + (pair_offs if pair is not None else [])
        if want_types:
            row["token_type_ids"] = types
        if want_special:
            row["special_tokens_mask"] = special
        if want_offsets:
            row["offset_mapping"] = row_offs
        if want_overflow:
            row["overflowing_tokens"] = overflow
            row["num_truncated_tokens"] = total - max_length if max_length else 0
        return row

    def _truncation(self, n_first: int, n_second: int | None, remove: int, strategy: str, stride: int):
        """(slice kept of the first, slice kept of the second, (0|1, overflow slice) or None)."""
        right = self.truncation_side == "right"
        whole = slice(None)

        def cut_one(n):  # one sequence loses `remove` ids; the overflow keeps `stride` more
            window = min(n, stride + remove)
            if right:
                return slice(0, n - remove), slice(n - window, n)
            return slice(remove, n), slice(0, window)

        if strategy == "only_first" or (strategy == "longest_first" and n_second is None):
            if n_first > remove:
                keep, over = cut_one(n_first)
                return keep, whole, (0, over)
            logger.error(f"cannot remove {remove} tokens from a first sequence of {n_first}; not truncating")
        elif strategy == "longest_first":
            first_remove = min(abs(n_second - n_first), remove)
            second_remove = remove - first_remove
            if n_first > n_second:
                a, b = first_remove + second_remove // 2, second_remove - second_remove // 2
            else:
                a, b = second_remove // 2, first_remove + second_remove - second_remove // 2
            if right:
                return slice(0, max(n_first - a, 0)), slice(0, max(n_second - b, 0)), None
            return slice(a, None), slice(b, None), None
        elif strategy == "only_second" and n_second is not None:
            if n_second > remove:
                keep, over = cut_one(n_second)
                return whole, keep, (1, over)
            logger.error(f"cannot remove {remove} tokens from a second sequence of {n_second}; not truncating")
        return whole, whole, None

    def _pad(self, rows: list[dict], pad: str, max_length: int | None, multiple: int | None,
             side: str, want_mask: bool) -> None:
        if pad == "longest":
            max_length = max((len(r["input_ids"]) for r in rows), default=0)
        if max_length is not None and multiple and max_length % multiple:
            max_length = (max_length // multiple + 1) * multiple
        fill = {"input_ids": self.pad_token_id, "token_type_ids": self.pad_token_type_id,
                "attention_mask": 0, "special_tokens_mask": 1, "offset_mapping": (0, 0)}
        for r in rows:
            if want_mask:
                r["attention_mask"] = [1] * len(r["input_ids"])
            missing = max_length - len(r["input_ids"]) if pad != "do_not_pad" else 0
            if missing > 0:
                for key, value in fill.items():
                    if key in r:
                        extra = [value] * missing
                        r[key] = r[key] + extra if side == "right" else extra + r[key]

    # -- decoding ----------------------------------------------------------------------

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Join tokens: ``##`` pieces glue to the previous token, and no space is put next to a
        CJK character or CJK/full-width punctuation; other tokens are separated by one space.

        Example:
            >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
            >>> tok.convert_tokens_to_string(["今", "天", "play", "##ing", "ok", "。"])
            '今天playing ok。'
        """
        out: list[str] = []
        for token in tokens:
            if not token:
                continue
            if out and token.startswith("##") and len(token) > 2:
                out.append(token[2:])
                continue
            if out and not (_cjk_like(out[-1][-1]) or _cjk_like(token[0])):
                out.append(" ")
            out.append(token)
        return "".join(out)

    def decode(self, token_ids: int | Sequence[int], skip_special_tokens: bool = False) -> str:
        """Ids (a list, or a 1-D numpy/torch/tf/jax array) back to text; see :meth:`convert_tokens_to_string`."""
        ids = _as_list(token_ids)
        if isinstance(ids, int):
            ids = [ids]
        if not isinstance(ids, (list, tuple)) or not all(isinstance(i, int) for i in ids):
            raise InputError("decode takes a sequence of integer ids")
        return self.convert_tokens_to_string(self.convert_ids_to_tokens(ids, skip_special_tokens))

    def batch_decode(self, sequences: Sequence[Sequence[int]], skip_special_tokens: bool = False) -> list[str]:
        """:meth:`decode` for each row of a batch (a list of lists or a 2-D array)."""
        return [self.decode(s, skip_special_tokens) for s in _as_list(sequences)]

    # -- files ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                        token: str | bool | None = None, force_download: bool = False,
                        **overrides) -> RoFormerTokenizer:
        """Load a tokenizer folder in the reference layout (``vocab.txt`` and, when present,
        ``tokenizer_config.json`` / ``special_tokens_map.json``), or fetch those files from a Hub
        repo id (``revision``, ``cache_dir``, ``local_files_only``, ``token``, ``force_download``;
        needs ``pip install 'roformer-tri[hub]'``); ``overrides`` win over the files.

        Example:
            >>> import tempfile
            >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好"])
            >>> folder = tempfile.mkdtemp()
            >>> _ = tok.save_pretrained(folder)
            >>> RoFormerTokenizer.from_pretrained(folder).encode("好")
            [2, 5, 3]
            >>> # RoFormerTokenizer.from_pretrained("junnyu/roformer_chinese_base", revision="main")
        """
        from roformer_core.hub import resolve_folder

        directory = resolve_folder(path_or_id, files=(VOCAB_NAME, TOKENIZER_CONFIG_NAME, SPECIAL_TOKENS_MAP_NAME,
                                                      "added_tokens.json"),
                                   revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                                   token=token, force_download=force_download)
        if not os.path.isdir(directory):
            raise ConfigError(f"no tokenizer folder at {directory}")
        kwargs: dict[str, Any] = {}
        # a tokenizer file linked to somewhere outside its folder is refused, like a checkpoint's files
        inside = functools.partial(_inside, directory)
        config = _read_json(inside(TOKENIZER_CONFIG_NAME))
        for key in ("do_lower_case", "do_basic_tokenize", "never_split", "tokenize_chinese_chars",
                    "strip_accents", "model_max_length", "padding_side", "truncation_side"):
            if config.get(key) is not None:
                kwargs[key] = config[key]
        special_map = _read_json(inside(SPECIAL_TOKENS_MAP_NAME))
        for source in (config, special_map):
            for key in _SPECIAL_ATTRS:
                if source.get(key) is not None:
                    kwargs[key] = _token_content(source[key])
        kwargs.update(overrides)
        tok = cls(inside(VOCAB_NAME), **kwargs)
        # Tokens added on top of vocab.txt would get ids this tokenizer does not give: refuse.
        added = {_token_content(v): int(k) for k, v in (config.get("added_tokens_decoder") or {}).items()}
        added.update(_read_json(inside("added_tokens.json")))
        extra = sorted(t for t, i in added.items() if tok.vocab.get(t) != i)
        if extra:
            raise ConfigError(f"{directory} adds tokens beyond vocab.txt ({', '.join(extra)}); "
                              "added tokens are not supported")
        return tok

    def save_vocabulary(self, save_directory: str | os.PathLike, filename_prefix: str | None = None) -> tuple[str]:
        """Write the vocabulary, one token per line, to ``save_directory/[prefix-]vocab.txt``."""
        path = os.path.join(os.fspath(save_directory), (filename_prefix + "-" if filename_prefix else "") + VOCAB_NAME)
        atomic_write_text(path, "".join(t + "\n" for t in self._lines))
        return (path,)

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """Write ``vocab.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json`` as the
        reference does, each file through a temporary name; the tokenizer itself is untouched."""
        directory = os.fspath(save_directory)
        os.makedirs(directory, exist_ok=True)
        (vocab_path,) = self.save_vocabulary(directory)
        added = {str(self.vocab[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                      "single_word": False, "special": True}
                 for t in sorted(set(self.all_special_tokens), key=self.vocab.__getitem__)}
        config = {"added_tokens_decoder": added, "clean_up_tokenization_spaces": False,
                  "do_basic_tokenize": self.do_basic_tokenize, "do_lower_case": self.do_lower_case,
                  "extra_special_tokens": {}, "model_max_length": self.model_max_length,
                  "never_split": self.never_split, "padding_side": self.padding_side,
                  "strip_accents": self.strip_accents, "tokenize_chinese_chars": self.tokenize_chinese_chars,
                  "tokenizer_class": "RoFormerTokenizer", "truncation_side": self.truncation_side,
                  **self.special_tokens_map}
        config_path = os.path.join(directory, TOKENIZER_CONFIG_NAME)
        map_path = os.path.join(directory, SPECIAL_TOKENS_MAP_NAME)
        atomic_write_text(config_path, json.dumps(dict(sorted(config.items())), indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(map_path, json.dumps(dict(sorted(self.special_tokens_map.items())), indent=2,
                                               ensure_ascii=False) + "\n")
        return vocab_path, config_path, map_path

    # -- pickling ------------------------------------------------------------------------

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}  # rebuilt on use; keeps pickles small
        return state

    def __repr__(self) -> str:
        return (f"RoFormerTokenizer(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
                f"model_max_length={self.model_max_length})")


def _read_vocab(path: str | os.PathLike) -> list[str]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"no vocabulary file at {path}")
    try:
        # Text mode like the reference: "\r\n" and "\r" end lines too. "utf-8-sig": an editor's
        # byte order mark is not part of the first token.
        with open(path, encoding="utf-8-sig") as fh:
            lines = [line.rstrip("\n") for line in fh]
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text: {e}") from None
    if not lines:
        raise ConfigError(f"the vocabulary file {path} is empty")
    return lines


def _vocab_lines(vocab: Sequence[str] | Mapping[str, int]) -> list[str]:
    if isinstance(vocab, Mapping):
        by_id = sorted((i, t) for t, i in vocab.items())
        if [i for i, _ in by_id] != list(range(len(by_id))):
            raise ConfigError("a vocab mapping must use the ids 0..n-1, each once")
        vocab = [t for _, t in by_id]
    if isinstance(vocab, str) or not all(isinstance(t, str) for t in vocab):
        raise ConfigError("vocab must be a list of token strings or a {token: id} mapping")
    if not vocab:
        raise ConfigError("the vocabulary is empty")
    if any("\n" in t or "\r" in t for t in vocab):
        raise ConfigError("a token cannot contain a line break (the vocabulary is saved one token per line)")
    return list(vocab)


def _read_json(path: str) -> dict:
    """A tokenizer folder's JSON file ({} when absent), its known fields checked (see :func:`check_file`)."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8-sig") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    except RecursionError:  # json's parser guards its stack; no tokenizer file nests this deep
        raise ConfigError(f"cannot read {path}: its JSON nests too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    check_file(path, data)
    return data


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened: a message names the bad value without pasting all of it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_options(values: Mapping[str, Any], where: str, allow_none: bool = True) -> None:
    """Raise one :class:`ConfigError` naming the first tokenizer option of the wrong type.

    ``values`` holds options by name (those not given are skipped, and None too when
    ``allow_none``); ``where`` starts the message (a file's field, or an argument).

    Example:
        >>> try:
        ...     check_options({"model_max_length": "512"}, "tokenizer_config.json field")
        ... except ConfigError as e:
        ...     print(e)
        tokenizer_config.json field 'model_max_length' must be a non-negative integer, got '512'
    """
    def bad(name: str, want: str) -> ConfigError:
        return ConfigError(f"{where} {name!r} must be {want}, got {_show(values[name])}")

    for name, value in values.items():
        if value is None and allow_none:
            continue
        if name in ("do_lower_case", "do_basic_tokenize", "tokenize_chinese_chars"):
            if not isinstance(value, bool):
                raise bad(name, "true or false")
        elif name == "strip_accents":
            if value is not None and not isinstance(value, bool):
                raise bad(name, "true, false or null")
        elif name == "model_max_length":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(name, "a non-negative integer")
        elif name == "never_split":
            if value is not None and (not isinstance(value, (list, tuple))
                                      or not all(isinstance(t, str) for t in value)):
                raise bad(name, "a list of strings")
        elif name in ("padding_side", "truncation_side"):
            if value not in ("right", "left"):
                raise bad(name, "'right' or 'left'")
        elif name in _SPECIAL_ATTRS:
            content = value.get("content") if isinstance(value, dict) else value
            if not isinstance(content, str) or not content:
                raise bad(name, "a token (a string, or an object with a string 'content')")


def check_file(path: str, data: Mapping[str, Any]) -> None:
    """Check the fields a tokenizer folder's JSON file may hold, by the file's name.

    ``tokenizer_config.json``: the options (:func:`check_options`), ``added_tokens_decoder``
    (a map of integer ids to token objects); ``special_tokens_map.json``: the special
    tokens; ``added_tokens.json``: a map of tokens to integer ids. One :class:`ConfigError`
    names the file and the field.

    Example:
        >>> try:
        ...     check_file("tok/tokenizer_config.json", {"never_split": "hello"})
        ... except ConfigError as e:
        ...     print(e)
        tok/tokenizer_config.json: field 'never_split' must be a list of strings, got 'hello'
    """
    name = os.path.basename(path)
    where = f"{path}: field"
    if name == TOKENIZER_CONFIG_NAME:
        known = ("do_lower_case", "do_basic_tokenize", "tokenize_chinese_chars", "strip_accents",
                 "model_max_length", "never_split", "padding_side", "truncation_side") + _SPECIAL_ATTRS
        check_options({k: data[k] for k in known if k in data}, where)
        added = data.get("added_tokens_decoder")
        if added is not None:
            if not isinstance(added, dict):
                raise ConfigError(f"{where} 'added_tokens_decoder' must map token ids to token objects, "
                                  f"got a {type(added).__name__}")
            for key, token in added.items():
                if not (isinstance(key, str) and key.isdigit()):
                    raise ConfigError(f"{where} 'added_tokens_decoder' has the key {_show(key)}, not a token id")
                if not isinstance(token, dict) or not isinstance(token.get("content"), str):
                    raise ConfigError(f"{where} 'added_tokens_decoder' maps {key} to {_show(token)}, "
                                      "not an object with a string 'content'")
    elif name == SPECIAL_TOKENS_MAP_NAME:
        check_options({k: data[k] for k in _SPECIAL_ATTRS if k in data}, where)
    elif name == "added_tokens.json":
        for token, i in data.items():
            if isinstance(i, bool) or not isinstance(i, int):
                raise ConfigError(f"{where} {_show(token)} must map to an integer id, got {_show(i)}")


def _to_tensors(data: dict, kind: str) -> dict:
    arrays = {}
    for key, value in data.items():
        if key == "overflowing_tokens":  # ragged by nature; stays a list, as in the reference
            arrays[key] = value
            continue
        try:
            arrays[key] = np.asarray(value, dtype=np.int64)
        except ValueError:
            raise InputError(f"the sequences have different lengths and cannot form a {kind} tensor; "
                             "pass padding=True (or truncation with max_length)") from None
        if arrays[key].dtype == object:
            raise InputError(f"cannot make a tensor of {key}")
    if kind == "np":
        return arrays
    # the framework is imported only here, only the one asked for: roformer_core stays framework-neutral
    convert = {"pt": ("torch", "from_numpy"), "tf": ("tensorflow", "constant"), "jax": ("jax.numpy", "asarray")}
    module, function = convert[kind]
    to_tensor = getattr(importlib.import_module(module), function)
    return {k: to_tensor(v) if k != "overflowing_tokens" else v for k, v in arrays.items()}


def _inside(directory: str, name: str) -> str:
    from roformer_core.checkpoint import resolve_inside

    return resolve_inside(directory, name, "tokenizer file")
