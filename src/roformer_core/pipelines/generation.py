"""``feature-extraction`` (the encoder's last hidden states) and ``text-generation`` (a causal LM with its cache).

Example:
    >>> from roformer_core import RoFormerConfig, RoFormerTokenizer
    >>> from roformer_core.backends import get_backend
    >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "今", "天", "好"])
    >>> cfg = RoFormerConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                      intermediate_size=16)
    >>> backend = get_backend("torch")
    >>> features = FeatureExtractionPipeline(backend.from_config("model", cfg), tok, backend)
    >>> out = features("今天好")                     # [1][tokens][hidden], [CLS] and [SEP] included
    >>> len(out), len(out[0]), len(out[0][0])
    (1, 5, 8)
    >>> features(["今天", "好"], return_tensors=True)[1].shape
    (1, 3, 8)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from roformer_core.errors import InputError
from roformer_core.pipelines.base import Pipeline, as_texts


class FeatureExtractionPipeline(Pipeline):
    """The last hidden states of every token: ``pipe(text_or_texts, return_tensors=False, truncation=None)``.

    Each text gives ``[1][tokens][hidden]`` nested lists of floats, as the reference does
    (numpy ``[1, tokens, hidden]`` with ``return_tensors=True``). Texts are cut at the
    tokenizer's ``model_max_length`` when it has one (``truncation=False``: never).

    Example: see the module docstring.
    """

    task = "feature-extraction"
    head = "model"

    def __call__(self, inputs: str | Sequence[str], return_tensors: bool = False, truncation: bool | None = None):
        texts, single = as_texts(inputs)
        if truncation is False:
            enc = self.tokenizer(texts)
            rows = [{k: enc[k][i] for k in enc} for i in range(len(texts))]
        else:
            rows = self.encode(texts)
        results: list = [None] * len(texts)
        for index, batch in self.batches(rows):
            hidden = self.forward(batch, ("last_hidden_state",))["last_hidden_state"]
            for r, i in enumerate(index):
                out = hidden[r:r + 1, :len(rows[i]["input_ids"])]
                results[i] = out if return_tensors else out.tolist()
        return results[0] if single else results


class TextGenerationPipeline(Pipeline):
    """Continue prompts with a causal LM: ``pipe(prompt_or_prompts, max_new_tokens=None, ...)``.

    With the reference pipeline's defaults: the prompt is encoded as ``[CLS] prompt [SEP]``
    (``add_special_tokens=False``: the prompt alone), then continued by sampling
    (``do_sample=True``, ``temperature=0.7``, ``top_k=50``, ``top_p=1.0``; ``seed`` makes it
    repeatable; ``do_sample=False`` is greedy) for ``max_new_tokens`` (256) tokens, or up to
    ``max_length`` tokens in all. Each prompt gives ``[{"generated_text": prompt +
    continuation}]`` (``return_full_text=False``: the continuation only; ``return_tensors=True``:
    ``{"generated_token_ids": [...]}``). Prompts of the same length are generated together,
    with the key/value cache.

    Example:
        >>> from roformer_core import RoFormerConfig, RoFormerTokenizer
        >>> from roformer_core.backends import get_backend
        >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "今", "天", "好"])
        >>> cfg = RoFormerConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                      intermediate_size=16, is_decoder=True)
        >>> backend = get_backend("torch")
        >>> generate = TextGenerationPipeline(backend.from_config("causal_lm", cfg), tok, backend)
        >>> generate("今天", max_new_tokens=3, seed=0)[0]["generated_text"].startswith("今天")
        True
        >>> generate("今天", max_new_tokens=3, do_sample=False, return_tensors=True)[0]["generated_token_ids"][:4]
        [2, 5, 6, 3]
    """

    task = "text-generation"
    head = "causal_lm"

    def __call__(self, inputs: str | Sequence[str], max_new_tokens: int | None = None, max_length: int | None = None,
                 do_sample: bool = True, temperature: float = 0.7, top_k: int = 50, top_p: float = 1.0,
                 seed: int | None = None, return_full_text: bool = True, return_tensors: bool = False,
                 add_special_tokens: bool = True):
        texts, single = as_texts(inputs, "prompt")
        for name, value in (("max_new_tokens", max_new_tokens), ("max_length", max_length)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        prompts = self.tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
        for i, ids in enumerate(prompts):
            if not ids:
                raise InputError(f"prompt {i} has no tokens")
            if max(ids) >= self.config.vocab_size:
                raise InputError(f"prompt {i} holds ids outside the model's vocab_size {self.config.vocab_size}")
        eos = getattr(self.config, "eos_token_id", None)
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(prompts):
            by_length.setdefault(len(ids), []).append(i)
        results: list = [None] * len(texts)
        for length, members in sorted(by_length.items()):
            new = max_new_tokens if max_new_tokens is not None else max(max_length - length, 1) if max_length else 256
            for start in range(0, len(members), self.batch_size):
                index = members[start:start + self.batch_size]
                ids = np.array([prompts[i] for i in index], np.int64)
                out = self.model.generate(ids, np.ones_like(ids), max_new_tokens=new, do_sample=do_sample,
                                          temperature=temperature, top_k=top_k if do_sample else 0, top_p=top_p,
                                          eos_token_id=eos, seed=seed)
                out = np.asarray(self.backend.to_numpy(out)).astype(np.int64)
                for r, i in enumerate(index):
                    results[i] = [self._record(texts[i], prompts[i], out[r].tolist(), eos, return_full_text,
                                               return_tensors)]
        return results[0] if single else results

    def _record(self, prompt: str, prompt_ids: list[int], sequence: list[int], eos: int | None, full: bool,
                tensors: bool) -> dict:
        tail = sequence[len(prompt_ids):]
        if eos is not None and eos in tail:  # a row that stopped early was padded until the others stopped
            sequence = sequence[:len(prompt_ids) + tail.index(eos) + 1]
        if tensors:
            return {"generated_token_ids": sequence}
        text = self.tokenizer.decode(sequence, skip_special_tokens=True)
        new = text[len(self.tokenizer.decode(prompt_ids, skip_special_tokens=True)):]
        return {"generated_text": prompt + new if full else new}


__all__ = ["FeatureExtractionPipeline", "TextGenerationPipeline"]
