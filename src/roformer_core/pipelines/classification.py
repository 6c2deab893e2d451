"""``text-classification`` and ``token-classification``, with the reference pipelines' arguments and results.

Example:
    >>> from roformer_core import RoFormerConfig, RoFormerTokenizer
    >>> from roformer_core.backends import get_backend
    >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "很", "好", "差"])
    >>> cfg = RoFormerConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                      intermediate_size=16, id2label={0: "negative", 1: "positive"})
    >>> backend = get_backend("torch")
    >>> classify = TextClassificationPipeline(backend.from_config("sequence_classification", cfg), tok, backend)
    >>> [r["label"] for r in classify("很好", top_k=None)] in (["negative", "positive"], ["positive", "negative"])
    True
    >>> sorted(classify(["很好", "很差"])[1])
    ['label', 'score']
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from roformer_core.errors import InputError
from roformer_core.pipelines.base import Pipeline, as_texts

#: ``top_k`` when not given: the reference's legacy form (the best label only, as one dict)
_LEGACY = object()
FUNCTIONS = ("default", "sigmoid", "softmax", "none")
AGGREGATIONS = ("none", "simple", "first", "average", "max")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _label(config, index: int) -> str:
    return config.id2label.get(int(index), f"LABEL_{int(index)}")


class TextClassificationPipeline(Pipeline):
    """Classify texts or text pairs: ``pipe(inputs, top_k=..., function_to_apply="default")``.

    ``inputs``: a text, a pair ``{"text": ..., "text_pair": ...}``, or a list of either. Without
    ``top_k`` each input gives its best ``{"label", "score"}`` (one text gives a one-element
    list, as in the reference); with ``top_k=k`` (None: all labels) each gives its ``k`` best,
    sorted. ``function_to_apply``: ``"default"`` (sigmoid for one label or multi-label,
    nothing for regression, softmax otherwise), ``"sigmoid"``, ``"softmax"``, ``"none"``.

    Example: see the module docstring.
    """

    task = "text-classification"
    head = "sequence_classification"

    def __call__(self, inputs, top_k: Any = _LEGACY, function_to_apply: str | None = None):
        items, single = self._items(inputs)
        legacy = top_k is _LEGACY
        if not legacy and top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InputError(f"top_k must be a positive integer or None (every label), got {top_k!r}")
        function = self._function(function_to_apply)
        firsts = [a for a, _ in items]
        seconds = [b for _, b in items]
        has_pairs = any(b is not None for b in seconds)
        if has_pairs and not all(b is not None for b in seconds):
            rows = [self.encode([a], None if b is None else [b])[0] for a, b in items]
        else:
            rows = self.encode(firsts, seconds if has_pairs else None)
        logits: list = [None] * len(rows)
        for index, batch in self.batches(rows):
            out = self.forward(batch)["logits"]
            for r, i in enumerate(index):
                logits[i] = out[r]
        results = [self._scores(row, function, None if legacy else top_k, legacy) for row in logits]
        if single:
            return [results[0]] if legacy and isinstance(inputs, str) else results[0]
        return results

    @staticmethod
    def _items(inputs) -> tuple[list[tuple[str, str | None]], bool]:
        def item(x, i):
            if isinstance(x, str):
                return x, None
            if isinstance(x, dict):
                if "text" not in x or set(x) - {"text", "text_pair"}:
                    raise InputError(f"a text pair is a dict with the keys 'text' and 'text_pair', got keys "
                                     f"{sorted(x)}")
                return x["text"], x.get("text_pair")
            raise InputError(f"input {i} is a {type(x).__name__}: give a text, a dict "
                             f"{{'text': ..., 'text_pair': ...}} for a pair, or a list of them")

        single = isinstance(inputs, (str, dict))
        raw = [inputs] if single else inputs
        if not isinstance(raw, (list, tuple)):
            raise InputError(f"give a text, a text pair dict, or a list of them, got {type(inputs).__name__}")
        items = [item(x, i) for i, x in enumerate(raw)]
        as_texts([a for a, _ in items])
        pairs = [b for _, b in items if b is not None]
        if pairs:
            as_texts(pairs, "text_pair")
        return items, single

    def _function(self, name: str | None) -> str:
        if name is not None:
            key = str(getattr(name, "value", name)).lower()
            if key not in FUNCTIONS:
                raise InputError(f"function_to_apply must be one of {', '.join(FUNCTIONS)}, got {name!r}")
            if key != "default":
                return key
        c = self.config
        if c.problem_type == "regression":
            return "none"
        if c.problem_type == "multi_label_classification" or c.num_labels == 1:
            return "sigmoid"
        return "softmax"

    def _scores(self, logits: np.ndarray, function: str, top_k: int | None, legacy: bool):
        scores = _sigmoid(logits) if function == "sigmoid" else _softmax(logits) if function == "softmax" else logits
        if legacy:
            return {"label": _label(self.config, scores.argmax()), "score": float(scores.max())}
        ranked = sorted(({"label": _label(self.config, i), "score": float(s)} for i, s in enumerate(scores)),
                        key=lambda d: d["score"], reverse=True)
        return ranked if top_k is None else ranked[:top_k]


class TokenClassificationPipeline(Pipeline):
    """Label every token (named entities ...): ``pipe(text_or_texts, aggregation_strategy="none",
    ignore_labels=("O",))``.

    ``"none"`` gives one dict per token ``{"entity", "score", "index", "word", "start", "end"}``;
    ``"simple"`` groups adjacent tokens of one entity (B-/I- tags) into ``{"entity_group",
    "score", "word", "start", "end"}``; ``"first"``, ``"average"`` and ``"max"`` first make the
    WordPiece pieces of a word agree on one label (its first piece's, the average scores', or
    the most confident piece's). ``start``/``end`` are character positions in the text, from
    the tokenizer's offsets. Labels in ``ignore_labels`` are left out.

    Example:
        >>> from roformer_core import RoFormerConfig, RoFormerTokenizer
        >>> from roformer_core.backends import get_backend
        >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "北", "京", "好"])
        >>> cfg = RoFormerConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                      intermediate_size=16, id2label={0: "B-LOC", 1: "I-LOC"})
        >>> backend = get_backend("torch")
        >>> ner = TokenClassificationPipeline(backend.from_config("token_classification", cfg), tok, backend)
        >>> [(e["word"], e["start"], e["end"]) for e in ner("北京好")]
        [('北', 0, 1), ('京', 1, 2), ('好', 2, 3)]
    """

    task = "token-classification"
    head = "token_classification"

    def __call__(self, inputs: str | Sequence[str], aggregation_strategy: str = "none",
                 ignore_labels: Sequence[str] | None = None):
        texts, single = as_texts(inputs)
        strategy = str(getattr(aggregation_strategy, "value", aggregation_strategy)).lower()
        if strategy not in AGGREGATIONS:
            raise InputError(f"aggregation_strategy must be one of {', '.join(AGGREGATIONS)}, got "
                             f"{aggregation_strategy!r}")
        ignore = ["O"] if ignore_labels is None else list(ignore_labels)
        rows = self.encode(texts, return_offsets_mapping=True, return_special_tokens_mask=True)
        results: list = [None] * len(texts)
        for index, batch in self.batches(rows):
            logits = self.forward(batch)["logits"]
            for r, i in enumerate(index):
                n = len(rows[i]["input_ids"])
                entities = self._entities(texts[i], rows[i], logits[r, :n], strategy)
                results[i] = [e for e in entities
                              if e.get("entity") not in ignore and e.get("entity_group") not in ignore]
        return results[0] if single else results

    def _entities(self, text: str, row: dict, logits: np.ndarray, strategy: str) -> list[dict]:
        scores = _softmax(logits)
        tokens = self.tokenizer.convert_ids_to_tokens(row["input_ids"])
        unk = self.tokenizer.unk_token_id
        pre = []
        for idx, (token_id, token, (start, end), special) in enumerate(
                zip(row["input_ids"], tokens, row["offset_mapping"], row["special_tokens_mask"])):
            if special:
                continue
            piece = text[start:end]
            # the reference's test for a word-piece tokenizer: a continuation spells shorter than its text
            is_subword = len(token) != len(piece)
            if token_id == unk:
                token, is_subword = piece, False
            pre.append({"word": token, "scores": scores[idx], "start": start, "end": end, "index": idx,
                        "is_subword": is_subword})
        if strategy in ("none", "simple"):
            entities = [{"entity": _label(self.config, p["scores"].argmax()), "score": float(p["scores"].max()),
                         "index": p["index"], "word": p["word"], "start": p["start"], "end": p["end"]} for p in pre]
        else:
            entities = self._words(pre, strategy)
        return entities if strategy == "none" else self._group(entities)

    def _words(self, pre: list[dict], strategy: str) -> list[dict]:
        groups: list[list[dict]] = []
        for p in pre:
            if groups and p["is_subword"]:
                groups[-1].append(p)
            else:
                groups.append([p])
        words = []
        for group in groups:
            if strategy == "first":
                scores = group[0]["scores"]
            elif strategy == "max":
                scores = max(group, key=lambda p: p["scores"].max())["scores"]
            else:
                scores = np.nanmean(np.stack([p["scores"] for p in group]), axis=0)
            words.append({"entity": _label(self.config, scores.argmax()), "score": float(scores.max()),
                          "word": self.tokenizer.convert_tokens_to_string([p["word"] for p in group]),
                          "start": group[0]["start"], "end": group[-1]["end"]})
        return words

    def _group(self, entities: list[dict]) -> list[dict]:
        def tag(name: str) -> tuple[str, str]:
            if name.startswith("B-") or name.startswith("I-"):
                return name[0], name[2:]
            return "I", name

        groups: list[list[dict]] = []
        for entity in entities:
            bi, name = tag(entity["entity"])
            if groups and bi != "B" and name == tag(groups[-1][-1]["entity"])[1]:
                groups[-1].append(entity)
            else:
                groups.append([entity])
        return [{"entity_group": group[0]["entity"].split("-", 1)[-1],
                 "score": float(np.mean([e["score"] for e in group])),
                 "word": self.tokenizer.convert_tokens_to_string([e["word"] for e in group]),
                 "start": group[0]["start"], "end": group[-1]["end"]} for group in groups]


__all__ = ["TextClassificationPipeline", "TokenClassificationPipeline"]
