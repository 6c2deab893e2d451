"""RoFormer for Flax/JAX, loading and saving the canonical checkpoint; training in ``roformer_flax.training``.

Example:
    >>> import numpy as np
    >>> from roformer_flax import RoFormerConfig, RoFormerForMaskedLM
    >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
    ...                      num_attention_heads=4, intermediate_size=64)
    >>> RoFormerForMaskedLM.from_config(cfg)(np.array([[2, 4, 3]])).logits.shape
    (1, 3, 100)
"""

from roformer_core.config import RoFormerConfig
from roformer_core.pipelines import flax_pipeline as pipeline
from roformer_flax.modeling import (MODEL_CLASSES, FlaxRoFormerForCausalLM, FlaxRoFormerForMaskedLM,
                                    FlaxRoFormerForMultipleChoice, FlaxRoFormerForQuestionAnswering,
                                    FlaxRoFormerForSequenceClassification, FlaxRoFormerForTokenClassification,
                                    FlaxRoFormerModel, FlaxRoFormerPreTrainedModel, RoFormerForCausalLM,
                                    RoFormerForMaskedLM, RoFormerForMultipleChoice, RoFormerForQuestionAnswering,
                                    RoFormerForSequenceClassification, RoFormerForTokenClassification, RoFormerModel,
                                    RoFormerPreTrainedModel, params_to_state_dict)

__all__ = ["RoFormerConfig", "pipeline", "MODEL_CLASSES", "RoFormerModel", "RoFormerForMaskedLM", "RoFormerForCausalLM",
           "RoFormerForSequenceClassification", "RoFormerForMultipleChoice", "RoFormerForTokenClassification",
           "RoFormerForQuestionAnswering", "RoFormerPreTrainedModel", "params_to_state_dict",
           "FlaxRoFormerModel", "FlaxRoFormerForMaskedLM", "FlaxRoFormerForCausalLM",
           "FlaxRoFormerForSequenceClassification", "FlaxRoFormerForMultipleChoice",
           "FlaxRoFormerForTokenClassification", "FlaxRoFormerForQuestionAnswering", "FlaxRoFormerPreTrainedModel"]
