"""BERT basic tokenization and greedy WordPiece, remembering where every piece came from.

These are the steps the reference RoFormer tokenizer applies to a jieba word that is not in
the vocabulary. The output is the reference's token for token; each token also carries the
``[start, end)`` characters of the input word it was made from, so offsets survive cleaning,
Unicode normalisation, lowercasing and accent stripping.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping

#: The reference gives up on words longer than this and emits the unknown token.
MAX_INPUT_CHARS_PER_WORD = 100


def is_whitespace(ch: str) -> bool:
    """BERT's whitespace: space, tab, newline, carriage return and category Zs."""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch: str) -> bool:
    """BERT's control characters: category C*, except tab, newline and carriage return."""
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def is_punctuation(ch: str) -> bool:
    """BERT's punctuation: every non-alphanumeric ASCII symbol, and Unicode category P*.

    Example:
        >>> is_punctuation("$"), is_punctuation("。"), is_punctuation("a")
        (True, True, False)
    """
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_chinese_char(ch: str) -> bool:
    """The CJK ideograph blocks BERT surrounds with spaces (not kana, hangul or CJK punctuation)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def strip_accents(text: str) -> str:
    """NFD, then drop the nonspacing marks (category Mn), as BERT does.

    Example:
        >>> strip_accents("café")
        'cafe'
    """
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


# A token under construction: its characters and, per character, the [start, end) span of the
# input word it came from.
_Aligned = tuple[list[str], list[int], list[int]]


def _coarse(text: str, starts: list[int], ends: list[int]) -> _Aligned:
    # When a transformation does not act character by character (rare: canonical reordering,
    # a final sigma), every output character gets the span of the whole token.
    lo, hi = min(starts), max(ends)
    return list(text), [lo] * len(text), [hi] * len(text)


def _nfc(chars: list[str], starts: list[int], ends: list[int]) -> _Aligned:
    text = "".join(chars)
    if unicodedata.is_normalized("NFC", text):
        return chars, starts, ends
    target = unicodedata.normalize("NFC", text)
    # Compose cluster by cluster (a starter and the marks after it), which is exact
    # unless starters compose with each other (Hangul jamo, some Indic vowels).
    out_c: list[str] = []
    out_s: list[int] = []
    out_e: list[int] = []
    i = 0
    while i < len(chars):
        j = i + 1
        while j < len(chars) and unicodedata.combining(chars[j]):
            j += 1
        piece = unicodedata.normalize("NFC", "".join(chars[i:j]))
        lo, hi = starts[i], max(ends[i:j])
        out_c.extend(piece)
        out_s.extend([lo] * len(piece))
        out_e.extend([hi] * len(piece))
        i = j
    if "".join(out_c) != target:
        return _coarse(target, starts, ends)
    return out_c, out_s, out_e


def _lower_strip(chars: list[str], starts: list[int], ends: list[int], lower: bool, strip: bool) -> _Aligned:
    text = "".join(chars)
    target = text.lower() if lower else text
    if strip:
        target = strip_accents(target)
    if target == text:
        return chars, starts, ends
    out_c: list[str] = []
    out_s: list[int] = []
    out_e: list[int] = []
    for ch, s, e in zip(chars, starts, ends):
        piece = ch.lower() if lower else ch
        if strip:
            piece = strip_accents(piece)
        out_c.extend(piece)
        out_s.extend([s] * len(piece))
        out_e.extend([e] * len(piece))
    if "".join(out_c) != target:
        return _coarse(target, starts, ends)
    return out_c, out_s, out_e


class WordPiece:
    """Basic tokenization then greedy longest-match WordPiece, with character spans.

    ``pieces(word)`` returns ``(token, start, end)`` triples, ``start:end`` being the characters
    of ``word`` the token was made from.

    Example:
        >>> wp = WordPiece({"[UNK]": 0, "un": 1, "##aff": 2, "##able": 3, ",": 4}, "[UNK]")
        >>> wp.pieces("Unaffable,")
        [('un', 0, 2), ('##aff', 2, 5), ('##able', 5, 9), (',', 9, 10)]
    """

    def __init__(self, vocab: Mapping[str, int], unk_token: str, do_lower_case: bool = True,
                 never_split: Iterable[str] = (), special_tokens: Iterable[str] = (),
                 tokenize_chinese_chars: bool = True, strip_accents: bool | None = None,
                 do_basic_tokenize: bool = True):
        self.vocab = vocab
        self.unk_token = unk_token
        self.do_lower_case = do_lower_case
        self.never_split = frozenset(never_split)
        # The reference protects the special tokens from lowercasing and punctuation
        # splitting too, but only the user's never_split list bypasses WordPiece.
        self._keep_whole = self.never_split | frozenset(special_tokens)
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.strip_accents = strip_accents
        self.do_basic_tokenize = do_basic_tokenize

    def pieces(self, word: str) -> list[tuple[str, int, int]]:
        """The tokens of ``word`` (one jieba word) with their character spans in ``word``."""
        out: list[tuple[str, int, int]] = []
        for chars, starts, ends in self._basic(word):
            token = "".join(chars)
            if self.do_basic_tokenize and token in self.never_split:
                out.append((token, min(starts), max(ends)))
            else:
                self._wordpiece(chars, starts, ends, out)
        return out

    def basic_tokens(self, word: str) -> list[str]:
        """The words basic tokenization makes of ``word``, before WordPiece.

        Example:
            >>> WordPiece({}, "[UNK]").basic_tokens("Héllo,世界")
            ['hello', ',', '世', '界']
        """
        return ["".join(chars) for chars, _, _ in self._basic(word)]

    def _basic(self, word: str) -> list[_Aligned]:
        if not self.do_basic_tokenize:
            return self._split_whitespace(word, clean=False)
        lower = self.do_lower_case
        strip = (lower and self.strip_accents is not False) or (not lower and bool(self.strip_accents))
        out: list[_Aligned] = []
        for chars, starts, ends in self._split_whitespace(word, clean=True):
            chars, starts, ends = _nfc(chars, starts, ends)
            if "".join(chars) in self._keep_whole:
                out.append((chars, starts, ends))
                continue
            if lower or strip:
                chars, starts, ends = _lower_strip(chars, starts, ends, lower, strip)
            out.extend(_split_punctuation(chars, starts, ends))
        return out

    def _split_whitespace(self, word: str, clean: bool) -> list[_Aligned]:
        # Cleaning, spaces around CJK ideographs and str.split() in one pass; NFC cannot
        # create or remove whitespace, so splitting before it gives the reference's runs.
        runs: list[_Aligned] = []
        chars: list[str] = []
        starts: list[int] = []
        for i, ch in enumerate(word):
            if clean:
                cp = ord(ch)
                if cp == 0 or cp == 0xFFFD or is_control(ch):
                    continue
            if ch.isspace() or (clean and is_whitespace(ch)):
                if chars:
                    runs.append((chars, starts, [s + 1 for s in starts]))
                    chars, starts = [], []
                continue
            if clean and self.tokenize_chinese_chars and is_chinese_char(ch):
                if chars:
                    runs.append((chars, starts, [s + 1 for s in starts]))
                    chars, starts = [], []
                runs.append(([ch], [i], [i + 1]))
                continue
            chars.append(ch)
            starts.append(i)
        if chars:
            runs.append((chars, starts, [s + 1 for s in starts]))
        return runs

    def _wordpiece(self, chars: list[str], starts: list[int], ends: list[int],
                   out: list[tuple[str, int, int]]) -> None:
        n = len(chars)
        if n > MAX_INPUT_CHARS_PER_WORD:
            out.append((self.unk_token, min(starts), max(ends)))
            return
        text = "".join(chars)
        found: list[tuple[str, int, int]] = []
        start = 0
        while start < n:
            end = n
            while end > start:
                piece = text[start:end] if start == 0 else "##" + text[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            else:
                out.append((self.unk_token, min(starts), max(ends)))
                return
            found.append((piece, min(starts[start:end]), max(ends[start:end])))
            start = end
        out.extend(found)


def _split_punctuation(chars: list[str], starts: list[int], ends: list[int]) -> list[_Aligned]:
    # Punctuation becomes its own token; whitespace produced by lowercasing or accent
    # stripping splits too, as the reference's final str.split() does.
    words: list[_Aligned] = []
    cur: _Aligned = ([], [], [])
    for ch, s, e in zip(chars, starts, ends):
        if ch.isspace() or is_punctuation(ch):
            if cur[0]:
                words.append(cur)
                cur = ([], [], [])
            if not ch.isspace():
                words.append(([ch], [s], [e]))
            continue
        cur[0].append(ch)
        cur[1].append(s)
        cur[2].append(e)
    if cur[0]:
        words.append(cur)
    return words
