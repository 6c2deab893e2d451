"""RoFormer for PyTorch, loading and saving the canonical checkpoint.

Example:
    >>> import torch
    >>> from roformer_torch import RoFormerConfig, RoFormerForMaskedLM
    >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
    ...                      num_attention_heads=4, intermediate_size=64)
    >>> RoFormerForMaskedLM(cfg).eval()(torch.tensor([[2, 4, 3]])).logits.shape
    torch.Size([1, 3, 100])
"""

from roformer_core.config import RoFormerConfig
from roformer_core.pipelines import torch_pipeline as pipeline
from roformer_torch.modeling import (MODEL_CLASSES, RoFormerForCausalLM, RoFormerForMaskedLM,
                                     RoFormerForMultipleChoice, RoFormerForQuestionAnswering,
                                     RoFormerForSequenceClassification, RoFormerForTokenClassification,
                                     RoFormerModel, RoFormerPreTrainedModel)

__all__ = ["RoFormerConfig", "pipeline", "MODEL_CLASSES", "RoFormerModel", "RoFormerForMaskedLM", "RoFormerForCausalLM",
           "RoFormerForSequenceClassification", "RoFormerForMultipleChoice", "RoFormerForTokenClassification",
           "RoFormerForQuestionAnswering", "RoFormerPreTrainedModel"]
