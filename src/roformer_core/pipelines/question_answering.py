"""``question-answering``: extract the answer span from a context, scored exactly as the reference scores it.

A context longer than a window (``max_seq_len`` tokens with the question) is cut into
windows that overlap by ``doc_stride`` tokens, each ``[CLS] question [SEP] part [SEP]``, as
the reference's fast tokenizer cuts it. In every window the start and end logits outside the
context become -10000, are normalised by a softmax, and the best spans (start ≤ end, at
most ``max_answer_len`` tokens, ``2 * top_k + 10`` candidates when aligning to words) get the
product of their start and end probabilities; spans of the same text (ignoring case) add
up over windows, and the no-answer score is the smallest [CLS] probability product of any
window.

Example:
    >>> from roformer_core import RoFormerConfig, RoFormerTokenizer
    >>> from roformer_core.backends import get_backend
    >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "谁", "在", "北", "京", "我"])
    >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                      intermediate_size=16)
    >>> backend = get_backend("torch")
    >>> qa = QuestionAnsweringPipeline(backend.from_config("question_answering", cfg), tok, backend)
    >>> answer = qa(question="谁在北京", context="我在北京")
    >>> sorted(answer), answer["answer"] == "我在北京"[answer["start"]:answer["end"]]
    (['answer', 'end', 'score', 'start'], True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from roformer_core.errors import InputError
from roformer_core.pipelines.base import Pipeline


@dataclass
class _Window:
    example: int
    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int]]
    context_start: int  # where the context's tokens begin in the window
    first: int  # the window's first context token (index into the whole context)


def decode_spans(start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int,
                 undesired_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``topk`` best spans ``(starts, ends, scores)`` from start/end probabilities ``[1, seq]``;
    spans touching an undesired token are dropped after the ranking, as in the reference.

    Example:
        >>> p = np.array([[0.0, 0.7, 0.3]], np.float32)
        >>> starts, ends, scores = decode_spans(p, p, 2, 15, np.array([[0, 1, 1]]))
        >>> starts.tolist(), ends.tolist(), [round(float(s), 2) for s in scores]
        ([1, 1], [1, 2], [0.49, 0.21])
    """
    if start.ndim == 1:
        start = start[None]
    if end.ndim == 1:
        end = end[None]
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = [np.argmax(scores_flat)]
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    # nonzero() of a [1, seq] mask is (rows, cols): the reference tests membership in both
    desired = np.isin(starts, undesired_tokens.nonzero()) & np.isin(ends, undesired_tokens.nonzero())
    starts, ends = starts[desired], ends[desired]
    return starts, ends, candidates[0, starts, ends]


class QuestionAnsweringPipeline(Pipeline):
    """Answer questions from a context: ``pipe(question=..., context=..., top_k=1, ...)``.

    Inputs: ``question=``/``context=`` (strings, or a list of questions with one context or a
    list of each), a dict ``{"question", "context"}`` or a list of them, or ``pipe(question,
    context)``. Options: ``top_k`` (1), ``max_answer_len`` (15 tokens), ``max_seq_len``
    (the tokenizer's limit or 384), ``doc_stride`` (half a window, at most 128),
    ``handle_impossible_answer`` (False: when True the empty answer ``""`` competes with the
    spans), ``align_to_words`` (True: a span grows to whole words). Each question gives
    ``{"score", "start", "end", "answer"}`` (character positions in the context), or a list of
    ``top_k`` of them; several questions give a list of those.

    Example: see the module docstring.
    """

    task = "question-answering"
    head = "question_answering"

    def __call__(self, *args, question=None, context=None, top_k: int = 1, doc_stride: int | None = None,
                 max_answer_len: int = 15, max_seq_len: int | None = None, max_question_len: int = 64,
                 handle_impossible_answer: bool = False, align_to_words: bool = True):
        examples = self._examples(args, question, context)
        for name, value in (("top_k", top_k), ("max_answer_len", max_answer_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if max_seq_len is None:
            max_seq_len = min(self.tokenizer.model_max_length, 384)
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        if doc_stride > max_seq_len:
            raise InputError(f"doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len})")
        windows, words = [], []
        for i, (q, c) in enumerate(examples):
            new, context_words = self._windows(i, q, c, max_seq_len, doc_stride)
            windows += new
            words.append(context_words)
        logits: list = [None] * len(windows)
        for index, batch in self.batches([{"input_ids": w.input_ids, "token_type_ids": w.token_type_ids}
                                          for w in windows]):
            out = self.forward(batch, ("start_logits", "end_logits"))
            for r, i in enumerate(index):
                n = len(windows[i].input_ids)
                logits[i] = (out["start_logits"][r, :n], out["end_logits"][r, :n])
        results = []
        for e, (q, c) in enumerate(examples):
            mine = [(w, logits[i]) for i, w in enumerate(windows) if w.example == e]
            results.append(self._answers(c, mine, words[e], top_k, handle_impossible_answer, max_answer_len,
                                         align_to_words))
        return results[0] if len(results) == 1 else results

    @staticmethod
    def _examples(args, question, context) -> list[tuple[str, str]]:
        if args and (question is not None or context is not None):
            raise InputError("give the inputs either as arguments or as question=/context=, not both")
        if len(args) == 2 and all(isinstance(a, str) for a in args):
            question, context = args
            args = ()
        if args:
            if len(args) > 1:
                raise InputError("give one dict {'question': ..., 'context': ...} (or a list of them), "
                                 "or question= and context=")
            raw = args[0] if isinstance(args[0], (list, tuple)) else [args[0]]
            items = []
            for i, item in enumerate(raw):
                if not isinstance(item, dict) or "question" not in item or "context" not in item:
                    raise InputError(f"input {i} must be a dict with the keys 'question' and 'context'")
                items.append((item["question"], item["context"]))
        elif question is None or context is None:
            raise InputError("give question= and context= (or a dict {'question': ..., 'context': ...})")
        elif isinstance(question, (list, tuple)):
            contexts = [context] * len(question) if isinstance(context, str) else context
            if not isinstance(contexts, (list, tuple)) or len(contexts) != len(question):
                raise InputError("give as many contexts as questions, or one context for all of them")
            items = list(zip(question, contexts))
        else:
            items = [(question, context)]
        if not items:
            raise InputError("no question given (an empty list)")
        for i, (q, c) in enumerate(items):
            for name, value in (("question", q), ("context", c)):
                if not isinstance(value, str):
                    raise InputError(f"{name} {i} is a {type(value).__name__}, not a string")
                if not value.strip():
                    raise InputError(f"the {name} is empty" if len(items) == 1 else f"{name} {i} is empty")
        return items

    def _windows(self, example: int, question: str, context: str, max_seq_len: int, stride: int):
        tok = self.tokenizer
        q = tok(question, add_special_tokens=False, return_offsets_mapping=True)
        c = tok(context, add_special_tokens=False, return_offsets_mapping=True)
        q_ids, c_ids, c_offsets = q["input_ids"], c["input_ids"], c["offset_mapping"]
        if not q_ids or not c_ids:
            raise InputError(f"the {'question' if not q_ids else 'context'} of input {example} has no tokens")
        room = max_seq_len - len(q_ids) - 3
        spans = [(0, len(c_ids))]
        if len(c_ids) > room:
            if room <= 0:
                raise InputError(f"question {example} is {len(q_ids)} tokens, too long for a window of max_seq_len "
                                 f"{max_seq_len} tokens (which also holds 3 special tokens and some context): "
                                 f"shorten it or raise max_seq_len")
            if stride >= room:
                raise InputError(f"doc_stride ({stride}) must be less than the context tokens of a window "
                                 f"({room} = max_seq_len {max_seq_len} - question {len(q_ids)} - 3)")
            spans, begin = [], 0
            while True:
                stop = min(begin + room, len(c_ids))
                spans.append((begin, stop))
                if stop == len(c_ids):
                    break
                begin += room - stride
        head = [tok.cls_token_id] + q_ids + [tok.sep_token_id]
        head_offsets = [(0, 0)] + [tuple(o) for o in q["offset_mapping"]] + [(0, 0)]
        windows = [_Window(example, head + c_ids[a:b] + [tok.sep_token_id],
                           [0] * len(head) + [1] * (b - a + 1),
                           head_offsets + [tuple(o) for o in c_offsets[a:b]] + [(0, 0)], len(head), a)
                   for a, b in spans]
        # a word is a token and the "##" pieces after it: the fast tokenizer's words, which
        # align_to_words widens an answer to
        tokens = tok.convert_ids_to_tokens(c_ids)
        words = np.cumsum([not (t.startswith("##") and len(t) > 2) for t in tokens]) - 1
        return windows, words

    def _answers(self, context: str, windows, words, top_k: int, impossible: bool, max_answer_len: int,
                 align: bool):
        min_null_score = 1000000.0  # large and positive, as in the reference
        answers: list[dict] = []
        for window, (start_logits, end_logits) in windows:
            n = len(window.input_ids)
            p_mask = np.ones(n, np.int64)
            p_mask[window.context_start:n - 1] = 0
            p_mask[np.asarray(window.input_ids) == self.tokenizer.cls_token_id] = 0
            undesired = np.abs(p_mask[None] - 1) & np.ones((1, n), np.int64)
            undesired_mask = undesired == 0
            start = np.where(undesired_mask, np.float32(-10000.0), start_logits[None].astype(np.float32))
            end = np.where(undesired_mask, np.float32(-10000.0), end_logits[None].astype(np.float32))
            start = np.exp(start - start.max(axis=-1, keepdims=True))
            start = start / start.sum()
            end = np.exp(end - end.max(axis=-1, keepdims=True))
            end = end / end.sum()
            if impossible:
                min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
            start[0, 0] = end[0, 0] = 0.0
            pre_topk = top_k * 2 + 10 if align else top_k
            starts, ends, scores = decode_spans(start, end, pre_topk, max_answer_len, undesired)
            for s, e, score in zip(starts, ends, scores):
                first, last = self._chars(window, int(s), int(e), words, align)
                text = context[first:last]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same is not None:
                    same["score"] += score.item()
                else:
                    answers.append({"score": score.item(), "start": first, "end": last, "answer": text})
        if impossible:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers

    @staticmethod
    def _chars(window: _Window, s: int, e: int, words: np.ndarray, align: bool) -> tuple[int, int]:
        """Character span of tokens ``s..e`` of a window: whole words with ``align``, as far as the
        window holds them; a token outside the context falls back to its own offsets."""
        lo, hi = window.context_start, len(window.input_ids) - 1
        if align and lo <= s < hi and lo <= e < hi:
            first = window.first + s - lo
            last = window.first + e - lo
            begin, stop = window.first, window.first + hi - lo
            while first > begin and words[first - 1] == words[first]:
                first -= 1
            while last + 1 < stop and words[last + 1] == words[last]:
                last += 1
            return window.offsets[lo + first - window.first][0], window.offsets[lo + last - window.first][1]
        return window.offsets[s][0], window.offsets[e][1]


__all__ = ["QuestionAnsweringPipeline", "decode_spans"]
