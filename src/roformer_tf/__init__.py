"""RoFormer for Keras 3 on TensorFlow, loading and saving the canonical checkpoint.

Example:
    >>> import numpy as np
    >>> from roformer_tf import RoFormerConfig, RoFormerForMaskedLM
    >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
    ...                      num_attention_heads=4, intermediate_size=64)
    >>> RoFormerForMaskedLM(cfg)(np.array([[2, 4, 3]])).logits.shape
    TensorShape([1, 3, 100])
"""

from roformer_core.config import RoFormerConfig
from roformer_core.pipelines import tf_pipeline as pipeline
from roformer_tf.modeling import (MODEL_CLASSES, RoFormerForCausalLM, RoFormerForMaskedLM, RoFormerForMultipleChoice,
                                  RoFormerForQuestionAnswering, RoFormerForSequenceClassification,
                                  RoFormerForTokenClassification, RoFormerModel, RoFormerPreTrainedModel,
                                  TFRoFormerForCausalLM, TFRoFormerForMaskedLM, TFRoFormerForMultipleChoice,
                                  TFRoFormerForQuestionAnswering, TFRoFormerForSequenceClassification,
                                  TFRoFormerForTokenClassification, TFRoFormerModel, TFRoFormerPreTrainedModel)

__all__ = ["RoFormerConfig", "pipeline", "MODEL_CLASSES", "RoFormerModel", "RoFormerForMaskedLM", "RoFormerForCausalLM",
           "RoFormerForSequenceClassification", "RoFormerForMultipleChoice", "RoFormerForTokenClassification",
           "RoFormerForQuestionAnswering", "RoFormerPreTrainedModel", "TFRoFormerModel", "TFRoFormerForMaskedLM",
           "TFRoFormerForCausalLM", "TFRoFormerForSequenceClassification", "TFRoFormerForMultipleChoice",
           "TFRoFormerForTokenClassification", "TFRoFormerForQuestionAnswering", "TFRoFormerPreTrainedModel"]
