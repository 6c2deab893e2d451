"""The task heads, once: what every backend, the converter, the demo and the tests know of a head.

A head is a row of :data:`HEAD_TABLE`: its name, the class name every backend uses, the label
arguments its loss takes, the array fields of its output, the kind of loss, the rank of its
inputs, and its own parameters (:func:`head_params`). Backends implement each loss *kind* once
(``token_cross_entropy`` ...) and look the kind up here, so a new head is one row here, one
parameter rule in :func:`head_params`, and one class per backend.

Example:
    >>> HEAD_TABLE["question_answering"].label_keys
    ('start_positions', 'end_positions')
    >>> HEAD_TABLE["token_classification"].loss
    'token_cross_entropy'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from roformer_core.config import RoFormerConfig

#: Loss kinds, one implementation per backend each.
LOSS_KINDS = {
    "token_cross_entropy": "cross-entropy at every position whose label is not -100",
    "shifted_token_cross_entropy": "token_cross_entropy predicting position t+1 from position t (causal LM)",
    "sequence_classification": "MSE, cross-entropy or binary cross-entropy, by problem_type()",
    "choice_cross_entropy": "cross-entropy over the choices",
    "span_cross_entropy": "mean of start and end cross-entropy; positions outside the sequence ignored",
}


@dataclass(frozen=True)
class Head:
    """One task head.

    Example:
        >>> head = HEAD_TABLE["masked_lm"]
        >>> head.class_name, head.output_fields, head.input_rank
        ('RoFormerForMaskedLM', ('logits',), 2)
    """

    name: str
    class_name: str
    label_keys: tuple[str, ...]
    output_fields: tuple[str, ...]
    loss: str | None
    input_rank: int = 2

    @property
    def float_labels_allowed(self) -> bool:
        """Regression and multi-label classification take float labels; every other label is an index."""
        return self.name == "sequence_classification"


HEAD_TABLE: dict[str, Head] = {h.name: h for h in (
    Head("model", "RoFormerModel", (), ("last_hidden_state",), None),
    Head("masked_lm", "RoFormerForMaskedLM", ("labels",), ("logits",), "token_cross_entropy"),
    Head("causal_lm", "RoFormerForCausalLM", ("labels",), ("logits",), "shifted_token_cross_entropy"),
    Head("sequence_classification", "RoFormerForSequenceClassification", ("labels",), ("logits",),
         "sequence_classification"),
    Head("multiple_choice", "RoFormerForMultipleChoice", ("labels",), ("logits",), "choice_cross_entropy", 3),
    Head("token_classification", "RoFormerForTokenClassification", ("labels",), ("logits",), "token_cross_entropy"),
    Head("question_answering", "RoFormerForQuestionAnswering", ("start_positions", "end_positions"),
         ("start_logits", "end_logits"), "span_cross_entropy"),
)}

#: head name -> class name (the mapping ``roformer_core.HEADS`` has always been).
HEADS: dict[str, str] = {name: head.class_name for name, head in HEAD_TABLE.items()}

#: Every argument that carries an array, inputs and labels (lists given for them become arrays).
ARRAY_ARGUMENTS = frozenset({"input_ids", "attention_mask", "token_type_ids", "head_mask", "inputs_embeds",
                             "encoder_hidden_states", "encoder_attention_mask", "prediction_mask"}
                            | {k for h in HEAD_TABLE.values() for k in h.label_keys})


def get_head(name: str) -> Head:
    """The :class:`Head` called ``name``, or one clear error listing the heads.

    Example:
        >>> get_head("ner")
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: unknown head 'ner'; known: model, masked_lm, causal_lm, sequence_classification, multiple_choice, token_classification, question_answering
    """
    from roformer_core.errors import InputError

    if name not in HEAD_TABLE:
        raise InputError(f"unknown head {name!r}; known: {', '.join(HEAD_TABLE)}")
    return HEAD_TABLE[name]


def head_params(config: "RoFormerConfig", head: str) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a task head's own parameters (canonical names).

    Example:
        >>> from roformer_core import RoFormerConfig
        >>> head_params(RoFormerConfig(hidden_size=8, num_attention_heads=2), "question_answering")
        {'qa_outputs.weight': (2, 8), 'qa_outputs.bias': (2,)}
        >>> v2 = RoFormerConfig(vocab_size=10, hidden_size=8, num_attention_heads=2, norm_type="rms_norm")
        >>> head_params(v2, "masked_lm"), head_params(v2.replace(tie_word_embeddings=False), "masked_lm")
        ({}, {'cls.predictions.decoder.weight': (10, 8)})
    """
    c = config
    V, E, H, N = c.vocab_size, c.embedding_size, c.hidden_size, c.num_labels
    get_head(head)
    if head in ("masked_lm", "causal_lm"):
        if c.norm_type == "rms_norm":  # RoFormer-V2: only the decoder, no transform, no bias
            return {} if c.tie_word_embeddings else {"cls.predictions.decoder.weight": (V, E)}
        spec = {
            "cls.predictions.transform.dense.weight": (E, H),
            "cls.predictions.transform.dense.bias": (E,),
            "cls.predictions.transform.LayerNorm.weight": (E,),
            "cls.predictions.transform.LayerNorm.bias": (E,),
            "cls.predictions.bias": (V,),
        }
        if not c.tie_word_embeddings:
            spec["cls.predictions.decoder.weight"] = (V, E)
        return spec
    if head == "sequence_classification":
        return {"classifier.dense.weight": (H, H), "classifier.dense.bias": (H,),
                "classifier.out_proj.weight": (N, H), "classifier.out_proj.bias": (N,)}
    if head == "multiple_choice":
        return {"classifier.weight": (1, H), "classifier.bias": (1,)}
    if head == "token_classification":
        return {"classifier.weight": (N, H), "classifier.bias": (N,)}
    if head == "question_answering":
        return {"qa_outputs.weight": (2, H), "qa_outputs.bias": (2,)}
    return {}


def problem_type(config: "RoFormerConfig", integer_labels: bool) -> str:
    """The config's ``problem_type``, or the reference's guess: one label is regression, integer
    labels are single-label classification, float labels multi-label.

    Example:
        >>> from roformer_core import RoFormerConfig
        >>> problem_type(RoFormerConfig(num_labels=3), integer_labels=False)
        'multi_label_classification'
    """
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    return "single_label_classification" if integer_labels else "multi_label_classification"


def detect_head(shapes: dict[str, tuple[int, ...]], config: "RoFormerConfig") -> str:
    """The task head whose parameters a checkpoint holds (``"model"`` when none).

    ``shapes`` maps canonical names to shapes. The names decide; the config's
    ``architectures`` separates heads with the same parameters (masked vs causal LM, and
    multiple choice vs token classification with one label), then ``is_decoder`` and the
    classifier's shape do.

    Example:
        >>> from roformer_core import RoFormerConfig
        >>> detect_head({"roformer.embeddings.word_embeddings.weight": (9, 4), "qa_outputs.weight": (2, 4)},
        ...             RoFormerConfig())
        'question_answering'
    """
    arch = [a.removeprefix("TF").removeprefix("Flax") for a in config.extra.get("architectures") or []]
    declared = next((h for h, cls in HEADS.items() if cls in arch), None)
    if any(n.startswith("cls.predictions.") for n in shapes):
        if declared in ("masked_lm", "causal_lm"):
            return declared
        return "causal_lm" if config.is_decoder else "masked_lm"
    if "classifier.dense.weight" in shapes:
        return "sequence_classification"
    if "classifier.weight" in shapes:
        if declared in ("multiple_choice", "token_classification"):
            return declared
        one_output = tuple(shapes["classifier.weight"])[:1] == (1,)
        return "multiple_choice" if one_output and config.num_labels != 1 else "token_classification"
    if "qa_outputs.weight" in shapes:
        return "question_answering"
    if declared is not None and not head_params(config, declared):
        return declared  # a head without parameters of its own (RoFormer-V2's tied MLM head)
    return "model"
