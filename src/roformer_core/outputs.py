"""Model outputs shared by all backends: fields by name, by key, or by position.

Like the reference outputs, ``out.logits``, ``out["logits"]`` and ``out[0]`` all work, and
positional access skips fields that are ``None`` (so ``loss`` comes first only when given).
The arrays inside are the backend's own tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


class ModelOutput:
    """Base of every output class.

    Example:
        >>> out = MaskedLMOutput(logits=[1, 2])
        >>> out.logits, out["logits"], out[0], out.to_tuple(), out.loss is None
        ([1, 2], [1, 2], [1, 2], ([1, 2],), True)
    """

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]

    def to_tuple(self) -> tuple:
        return tuple(self.values())

    def to_dict(self) -> dict[str, Any]:
        return dict(self.items())

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@dataclass
class BaseModelOutput(ModelOutput):
    """Output of ``RoFormerModel``; ``pooler_output`` [batch, hidden] only for a model with a pooler.

    ``pooler_output`` is the last field (the reference puts it second) so that code building
    outputs positionally keeps working; by name, key and in ``to_tuple`` it is found as usual.

    Example:
        >>> BaseModelOutput(last_hidden_state=[[1.0]], pooler_output=[2.0]).to_tuple()
        ([[1.0]], [2.0])
    """

    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: Any = None
    attentions: Any = None
    cross_attentions: Any = None
    pooler_output: Any = None


@dataclass
class MaskedLMOutput(ModelOutput):
    """Output of ``RoFormerForMaskedLM``."""

    loss: Any = None
    logits: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclass
class CausalLMOutput(ModelOutput):
    """Output of ``RoFormerForCausalLM``; ``pooler_output`` for a model with a pooler (RoFormer-Sim)."""

    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: Any = None
    attentions: Any = None
    cross_attentions: Any = None
    pooler_output: Any = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    """Output of ``RoFormerForSequenceClassification`` and ``RoFormerForMultipleChoice``."""

    loss: Any = None
    logits: Any = None
    hidden_states: Any = None
    attentions: Any = None


MultipleChoiceModelOutput = SequenceClassifierOutput


@dataclass
class TokenClassifierOutput(ModelOutput):
    """Output of ``RoFormerForTokenClassification``."""

    loss: Any = None
    logits: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    """Output of ``RoFormerForQuestionAnswering``."""

    loss: Any = None
    start_logits: Any = None
    end_logits: Any = None
    hidden_states: Any = None
    attentions: Any = None
