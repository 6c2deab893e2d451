"""Framework-neutral RoFormer pieces: config, rotary tables, canonical checkpoint, tokenizer.

Imports only numpy, safetensors and rjieba; the backends live in ``roformer_torch``,
``roformer_tf`` and ``roformer_flax``.

Example:
    >>> from roformer_core import RoFormerConfig, canonical_spec
    >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
    ...                      num_attention_heads=4, intermediate_size=64)
    >>> len(canonical_spec(cfg, "masked_lm"))
    25
"""

from roformer_core.checkpoint import HEADS, Checkpoint, canonical_spec, plan_load, save_checkpoint
from roformer_core.collator import MaskedLMCollator, default_max_predictions
from roformer_core.config import RoFormerConfig
from roformer_core.errors import CheckpointError, ConfigError, DistributedError, InputError, RoFormerError
from roformer_core.heads import HEAD_TABLE, Head
from roformer_core.pipelines import pipeline
from roformer_core.rotary import apply_rotary, rotary_sin_cos, sinusoidal_table
from roformer_core.tokenizer import BatchEncoding, RoFormerTokenizer
from roformer_core.vocab_builder import build_vocab

__all__ = ["HEADS", "HEAD_TABLE", "Head", "MaskedLMCollator", "default_max_predictions", "Checkpoint", "canonical_spec", "plan_load", "save_checkpoint", "RoFormerConfig",
           "CheckpointError", "ConfigError", "DistributedError", "InputError", "RoFormerError", "apply_rotary", "rotary_sin_cos",
           "sinusoidal_table", "BatchEncoding", "RoFormerTokenizer", "build_vocab", "pipeline"]
