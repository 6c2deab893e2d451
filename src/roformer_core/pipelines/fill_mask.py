"""``fill-mask``: the most likely tokens for every [MASK] of a text, as the reference pipeline gives them.

Vocabulary logits are computed only at the [MASK] positions (``prediction_mask``): the
projection onto the vocabulary is a large part of a forward pass, and fill-mask needs it at
one position of dozens.

Example:
    >>> from roformer_core import RoFormerConfig, RoFormerTokenizer
    >>> from roformer_core.backends import get_backend
    >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "今", "天", "气", "好"])
    >>> cfg = RoFormerConfig(vocab_size=9, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                      intermediate_size=16)
    >>> backend = get_backend("torch")
    >>> fill = FillMaskPipeline(backend.from_config("masked_lm", cfg), tok, backend)
    >>> out = fill("今天[MASK]气好", top_k=2)
    >>> len(out), sorted(out[0])
    (2, ['score', 'sequence', 'token', 'token_str'])
    >>> out[0]["sequence"] == "今天" + out[0]["token_str"] + "气好"
    True
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from roformer_core.errors import InputError
from roformer_core.pipelines.base import Pipeline, as_texts, softmax

logger = logging.getLogger(__name__)


class FillMaskPipeline(Pipeline):
    """Fill in ``[MASK]``: ``pipe(text_or_texts, top_k=5, targets=None)``.

    For a text with one [MASK], a list of ``top_k`` dicts ``{"score", "token", "token_str",
    "sequence"}`` (best first); with several, one such list per [MASK], where ``sequence``
    keeps the special tokens as the reference does. A list of texts gives a list of those.
    ``targets`` (a token or list of tokens) limits the candidates to them; a target that is
    not one token stands for its first token. Scores are the softmax over the whole
    vocabulary, as in the reference.

    Example: see the module docstring.
    """

    task = "fill-mask"
    head = "masked_lm"

    def __call__(self, inputs: str | Sequence[str], top_k: int = 5, targets: str | Sequence[str] | None = None):
        texts, single = as_texts(inputs)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        target_ids = None if targets is None else self.target_ids(targets)
        mask_id = self.tokenizer.mask_token_id
        rows = self.encode(texts)
        for i, row in enumerate(rows):
            if mask_id not in row["input_ids"]:
                where = "" if self.max_length is None or self.tokenizer.mask_token not in texts[i] else \
                    f" within its first {self.max_length} tokens"
                raise InputError(f"no {self.tokenizer.mask_token} in {'the text' if len(texts) == 1 else f'text {i}'}"
                                 f"{where} ({texts[i][:60]!r}): write {self.tokenizer.mask_token} where a token "
                                 f"is missing")
        results: list = [None] * len(texts)
        for index, batch in self.batches(rows):
            where = batch["input_ids"] == mask_id
            logits = self.forward({**batch, "prediction_mask": where})["logits"]
            counts = np.cumsum(where.sum(axis=1))[:-1]
            for i, rows_logits in zip(index, np.split(logits, counts)):
                results[i] = self._fill(rows[i]["input_ids"], rows_logits, top_k, target_ids)
        if single or len(results) == 1 and isinstance(inputs, list):
            return results[0]
        return results

    def target_ids(self, targets: str | Sequence[str]) -> np.ndarray:
        """The ids of ``targets``, as the reference finds them (a target that is not a token stands
        for its first token; one without any is left out, with a warning)."""
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
            raise InputError("targets must be a token or a list of tokens (strings)")
        vocab = self.tokenizer.vocab
        ids = []
        for target in targets:
            found = vocab.get(target)
            if found is None:
                pieces = self.tokenizer(target, add_special_tokens=False)["input_ids"] if target.strip() else []
                if not pieces:
                    logger.warning(f"the target {target!r} has no token in the vocabulary: left out")
                    continue
                found = pieces[0]
                logger.warning(f"the target {target!r} is not one token; using "
                               f"{self.tokenizer.convert_ids_to_tokens(found)!r}")
            ids.append(found)
        if not ids:
            raise InputError("none of the targets is in the vocabulary: give at least one known token")
        return np.array(list(set(ids)))

    def _fill(self, input_ids: list[int], logits: np.ndarray, top_k: int, target_ids: np.ndarray | None) -> list:
        probs = softmax(logits)
        if target_ids is not None:
            probs = probs[:, target_ids]
        k = min(top_k, probs.shape[-1])
        positions = [j for j, t in enumerate(input_ids) if t == self.tokenizer.mask_token_id]
        single = len(positions) == 1
        pad = self.tokenizer.pad_token_id
        result = []
        for position, p in zip(positions, probs):
            best = np.argpartition(-p, k - 1)[:k] if k < len(p) else np.arange(len(p))
            best = best[np.argsort(-p[best], kind="stable")]
            options = []
            for choice in best:
                token = int(choice if target_ids is None else target_ids[choice])
                filled = list(input_ids)
                filled[position] = token
                sequence = self.tokenizer.decode([t for t in filled if t != pad], skip_special_tokens=single)
                options.append({"score": float(p[choice]), "token": token,
                                "token_str": self.tokenizer.decode([token]), "sequence": sequence})
            result.append(options)
        return result[0] if single else result


__all__ = ["FillMaskPipeline"]
