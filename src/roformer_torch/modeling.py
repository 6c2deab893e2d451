"""RoFormer in PyTorch, top to bottom.

The module tree and attribute names are those of the reference PyTorch RoFormer, so
``state_dict()`` names are the canonical checkpoint names (``roformer_core.checkpoint``).
The other two backends (``roformer_tf``, ``roformer_flax``) define the same classes in the
same order; read them side by side.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import warnings
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from roformer_core.config import RoFormerConfig, with_pooler
from roformer_core.errors import InputError
from roformer_core.generation import generate as generate_loop
from roformer_core.heads import problem_type
from roformer_core.inputs import LABEL_INPUTS, MASKED_INPUTS, ArrayFacts, check_masked_inputs, validate_inputs
from roformer_torch.adapter import LIFECYCLE
from roformer_core.outputs import (BaseModelOutput, CausalLMOutput, MaskedLMOutput, QuestionAnsweringModelOutput,
                                   SequenceClassifierOutput, TokenClassifierOutput)
from roformer_core.rotary import rotary_sin_cos, table_rows

#: activation name -> module factory (a new module per layer, so no module is shared between layers)
ACT2FN = {
    "gelu": nn.GELU,
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "selu": nn.SELU,
    "silu": nn.SiLU,
}
#: the pooler's activations (``config.pooler_activation``): tanh as in BERT, none for RoFormer-Sim
POOLER_ACT2FN = {"tanh": nn.Tanh, "linear": nn.Identity, **ACT2FN}


class RMSNorm(nn.Module):
    """RoFormer-V2's norm: ``x / sqrt(mean(x^2) + eps)`` over the last axis, no parameters (float32 inside).

    Example:
        >>> RMSNorm(1e-12)(torch.tensor([[3.0, -3.0]])).tolist(), len(RMSNorm(1e-12).state_dict())
        ([[1.0, -1.0]], 0)
    """

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        h = x.float()
        return (h * torch.rsqrt(h.square().mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def make_norm(config: RoFormerConfig, size: int) -> nn.Module:
    """The norm of ``config.norm_type``: LayerNorm (V1) or the parameter-free RMS norm (V2).

    Example:
        >>> type(make_norm(RoFormerConfig(norm_type="rms_norm"), 8)).__name__
        'RMSNorm'
    """
    if config.norm_type == "rms_norm":
        return RMSNorm(config.layer_norm_eps)
    return nn.LayerNorm(size, eps=config.layer_norm_eps)


# -- encoder ------------------------------------------------------------------------------
class RoFormerEmbeddings(nn.Module):
    """word + token-type embeddings -> norm -> dropout (no position embedding: RoPE)."""

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.embedding_size)
        self.LayerNorm = make_norm(config, config.embedding_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids=None, token_type_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:-1], dtype=torch.long, device=inputs_embeds.device)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) on the last axis."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rotary(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [batch, heads, seq, head_dim] by the angles of its positions."""
    return x * cos + rotate_pairs(x) * sin


def graph_sin_cos(past_length, seq_length, head_dim: int, device, dtype):
    """Rotary sin/cos for positions ``past_length .. past_length + seq_length`` computed with torch ops, so a
    traced or exported graph (ONNX, ``torch.export``) keeps the length symbolic. float64 inside, like the
    table of ``roformer_core.rotary``, so exported and eager models give the same numbers.

    Example:
        >>> sin, cos = graph_sin_cos(0, 3, 4, "cpu", torch.float32)
        >>> bool(torch.equal(sin, torch.from_numpy(rotary_sin_cos(3, 4)[0]))), tuple(cos.shape)
        (True, (3, 4))
    """
    inv_freq = torch.from_numpy(np.power(10000.0, -2.0 * np.arange(head_dim // 2, dtype=np.float64) / head_dim))
    positions = torch.arange(seq_length, dtype=torch.float64, device=device) + past_length
    angles = positions[:, None] * inv_freq.to(device)[None, :]
    # each angle over its pair (2i, 2i+1)
    return tuple(torch.stack((t, t), dim=-1).flatten(-2).to(dtype) for t in (angles.sin(), angles.cos()))


class RoFormerSelfAttention(nn.Module):
    """Multi-head attention with rotary q/k (and v when ``rotary_value``); also cross-attention."""

    def __init__(self, config: RoFormerConfig, is_cross_attention: bool = False):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=config.use_bias)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=config.use_bias)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=config.use_bias)
        self.dropout_prob = config.attention_probs_dropout_prob
        self.rotary_value = config.rotary_value
        self.is_cross_attention = is_cross_attention

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, hidden_states, attention_mask=None, sin_cos=None, head_mask=None, encoder_hidden_states=None,
                past_key_value=None, output_attentions=False):
        query = self.split_heads(self.query(hidden_states))
        if self.is_cross_attention:
            if past_key_value is not None:  # the encoder's keys/values do not change while decoding
                key, value = past_key_value
            else:
                key = self.split_heads(self.key(encoder_hidden_states))
                value = self.split_heads(self.value(encoder_hidden_states))
        else:
            sin, cos = sin_cos
            key = self.split_heads(self.key(hidden_states))
            value = self.split_heads(self.value(hidden_states))
            query, key = apply_rotary(query, sin, cos), apply_rotary(key, sin, cos)
            if self.rotary_value:
                value = apply_rotary(value, sin, cos)
            if past_key_value is not None:  # cached keys/values are already rotated
                key = torch.cat([past_key_value[0], key], dim=2)
                value = torch.cat([past_key_value[1], value], dim=2)
        dropout = self.dropout_prob if self.training else 0.0
        if output_attentions or head_mask is not None:
            scores = query @ key.transpose(-1, -2) / math.sqrt(self.head_dim)
            if attention_mask is not None:
                scores = scores + attention_mask
            probs = F.dropout(scores.softmax(dim=-1), dropout, self.training)
            if head_mask is not None:
                probs = probs * head_mask
            context = probs @ value
        else:
            probs = None
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout)
        context = context.transpose(1, 2).flatten(-2)
        return context, probs, (key, value)


class RoFormerSelfOutput(nn.Module):
    """dense -> dropout -> residual -> norm."""

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.use_bias)
        self.LayerNorm = make_norm(config, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class RoFormerAttention(nn.Module):
    """Self (or cross) attention followed by its output block."""

    def __init__(self, config: RoFormerConfig, is_cross_attention: bool = False):
        super().__init__()
        self.self = RoFormerSelfAttention(config, is_cross_attention)
        self.output = RoFormerSelfOutput(config)

    def forward(self, hidden_states, attention_mask=None, sin_cos=None, head_mask=None, encoder_hidden_states=None,
                past_key_value=None, output_attentions=False):
        context, probs, present = self.self(hidden_states, attention_mask, sin_cos, head_mask, encoder_hidden_states,
                                            past_key_value, output_attentions)
        return self.output(context, hidden_states), probs, present


class RoFormerIntermediate(nn.Module):
    """dense -> activation."""

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.use_bias)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]()

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class RoFormerOutput(nn.Module):
    """dense -> dropout -> residual -> norm."""

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.use_bias)
        self.LayerNorm = make_norm(config, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class RoFormerLayer(nn.Module):
    """attention -> (cross-attention) -> feed-forward, post-norm."""

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        self.attention = RoFormerAttention(config)
        if config.is_decoder and config.add_cross_attention:
            self.crossattention = RoFormerAttention(config, is_cross_attention=True)
        self.intermediate = RoFormerIntermediate(config)
        self.output = RoFormerOutput(config)

    def forward(self, hidden_states, attention_mask=None, sin_cos=None, head_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, past_key_value=None, output_attentions=False):
        self_past = past_key_value[:2] if past_key_value is not None else None
        hidden_states, self_probs, present = self.attention(
            hidden_states, attention_mask, sin_cos, head_mask, past_key_value=self_past,
            output_attentions=output_attentions)
        cross_probs = None
        if encoder_hidden_states is not None:  # the model checked that the config has cross-attention
            cross_past = past_key_value[2:] if past_key_value is not None and len(past_key_value) == 4 else None
            hidden_states, cross_probs, cross_present = self.crossattention(
                hidden_states, encoder_attention_mask, None, head_mask, encoder_hidden_states, cross_past,
                output_attentions)
            present = present + cross_present
        hidden_states = self.output(self.intermediate(hidden_states), hidden_states)
        return hidden_states, self_probs, cross_probs, present


class RoFormerEncoder(nn.Module):
    """The stack of layers; owns the rotary table (a constant, never a parameter)."""

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([RoFormerLayer(config) for _ in range(config.num_hidden_layers)])
        self._rotary: dict = {}
        #: recompute each layer's activations in the backward pass instead of keeping them
        #: (``RoFormerPreTrainedModel.gradient_checkpointing_enable``)
        self.gradient_checkpointing = False

    def sin_cos(self, past_length: int, seq_length: int, device, dtype):
        """Rotary sin/cos for positions ``past_length .. past_length + seq_length``."""
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            # an exported or compiled graph serves every length: the table is computed in the graph
            return graph_sin_cos(past_length, seq_length, self.config.head_dim, device, dtype)
        key = (device, dtype)
        rows = past_length + seq_length
        if key not in self._rotary or self._rotary[key][0].shape[0] < rows:
            n = table_rows(rows, self.config.max_position_embeddings)
            sin, cos = rotary_sin_cos(n, self.config.head_dim, dtype=np.float32)
            self._rotary[key] = tuple(torch.from_numpy(t).to(device=device, dtype=dtype) for t in (sin, cos))
        sin, cos = self._rotary[key]
        return sin[past_length:rows], cos[past_length:rows]

    def forward(self, hidden_states, attention_mask=None, head_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, past_key_values=None, use_cache=False, output_attentions=False,
                output_hidden_states=False):
        past_length = past_key_values[0][0].shape[2] if past_key_values is not None else 0
        sin_cos = self.sin_cos(past_length, hidden_states.shape[1], hidden_states.device, hidden_states.dtype)
        all_hidden, all_attn, all_cross, presents = [], [], [], []
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, layer in enumerate(self.layer):
            if output_hidden_states:
                all_hidden.append(hidden_states)
            args = (hidden_states, attention_mask, sin_cos, None if head_mask is None else head_mask[i],
                    encoder_hidden_states, encoder_attention_mask,
                    None if past_key_values is None else past_key_values[i], output_attentions)
            if recompute:  # keeps only the layer's inputs; the backward runs the layer again (same dropout)
                hidden_states, probs, cross, present = torch.utils.checkpoint.checkpoint(layer, *args,
                                                                                         use_reentrant=False)
            else:
                hidden_states, probs, cross, present = layer(*args)
            if use_cache:
                presents.append(present)
            if output_attentions:
                all_attn.append(probs)
                if cross is not None:
                    all_cross.append(cross)
        if output_hidden_states:
            all_hidden.append(hidden_states)
        return BaseModelOutput(
            last_hidden_state=hidden_states,
            past_key_values=tuple(presents) if use_cache else None,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attn) if output_attentions else None,
            cross_attentions=tuple(all_cross) if output_attentions and all_cross else None,
        )


# -- heads' building blocks -------------------------------------------------------------
class RoFormerPredictionHeadTransform(nn.Module):
    """dense(H -> E) -> activation -> LayerNorm(E)."""

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]()
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class _SparseRowsLinear(torch.autograd.Function):
    """``F.linear`` whose backward multiplies only the rows of the output gradient that are not all zero.

    The vocabulary projection's output gradient is zero at every position without a label (85% of
    them in masked-LM training), so its two backward matmuls shrink to the labelled rows; the rows
    are found in the gradient itself, so any loss on any positions gets exact gradients.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        flat_x = x.reshape(-1, x.shape[-1])
        g = grad.reshape(-1, grad.shape[-1])
        rows = g.ne(0).any(-1).nonzero().squeeze(-1)
        g = g.index_select(0, rows)
        grad_x = grad_w = grad_b = None
        # under autocast the forward ran in the autocast dtype (the gradient's): so does the backward
        if ctx.needs_input_grad[0]:
            grad_x = flat_x.new_zeros(flat_x.shape).index_copy_(0, rows, (g @ weight.to(g.dtype)).to(x.dtype))
            grad_x = grad_x.view(x.shape)
        if ctx.needs_input_grad[1]:
            grad_w = (g.t() @ flat_x.index_select(0, rows).to(g.dtype)).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0).to(weight.dtype)
        return grad_x, grad_w, grad_b


def project(x, weight, bias=None, sparse_grad: bool = False):
    """``F.linear(x, weight, bias)``; with ``sparse_grad`` the backward skips rows whose gradient is zero
    (the vocabulary projection when only some positions carry a label).

    Example:
        >>> x, w = torch.randn(4, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
        >>> project(x, w, sparse_grad=True)[1].sum().backward()
        >>> x.grad[[0, 2, 3]].abs().sum().item(), bool(torch.allclose(w.grad, x[1].detach().expand(5, 3)))
        (0.0, True)
    """
    if sparse_grad and torch.is_grad_enabled():
        return _SparseRowsLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class RoFormerLMPredictionHead(nn.Module):
    """transform -> decoder (the word embeddings, tied unless the config unties them) + bias."""

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        self.transform = RoFormerPredictionHeadTransform(config)
        if not config.tie_word_embeddings:
            self.decoder = nn.Linear(config.embedding_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states, word_embeddings, sparse_grad: bool = False):
        weight = self.decoder.weight if hasattr(self, "decoder") else word_embeddings
        return project(self.transform(hidden_states), weight, self.bias, sparse_grad)


class RoFormerV2LMPredictionHead(nn.Module):
    """RoFormer-V2's LM head: only the decoder (the word embeddings unless untied), no transform, no bias."""

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        if not config.tie_word_embeddings:
            self.decoder = nn.Linear(config.embedding_size, config.vocab_size, bias=False)

    def forward(self, hidden_states, word_embeddings, sparse_grad: bool = False):
        return project(hidden_states, self.decoder.weight if hasattr(self, "decoder") else word_embeddings,
                       None, sparse_grad)


class RoFormerOnlyMLMHead(nn.Module):
    def __init__(self, config: RoFormerConfig):
        super().__init__()
        v2 = config.norm_type == "rms_norm"
        self.predictions = RoFormerV2LMPredictionHead(config) if v2 else RoFormerLMPredictionHead(config)

    def forward(self, sequence_output, word_embeddings, sparse_grad: bool = False):
        return self.predictions(sequence_output, word_embeddings, sparse_grad)


class RoFormerPooler(nn.Module):
    """First token -> dense -> ``pooler_activation`` (``pooler_output``; RoFormer-Sim's sentence vector).

    Example:
        >>> cfg = RoFormerConfig(hidden_size=8, num_attention_heads=2, pooler_activation="linear")
        >>> RoFormerPooler(cfg)(torch.zeros(2, 5, 8)).shape
        torch.Size([2, 8])
    """

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = POOLER_ACT2FN[config.pooler_activation]()

    def forward(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))


class RoFormerClassificationHead(nn.Module):
    """First token -> dropout -> dense -> hidden_act -> dropout -> out_proj."""

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)
        self.act = ACT2FN[config.hidden_act]()

    def forward(self, features):
        x = self.dropout(features[:, 0, :])
        x = self.dropout(self.act(self.dense(x)))
        return self.out_proj(x)


# -- losses: one function per kind of roformer_core.heads.LOSS_KINDS ---------------------------
def _cross_entropy(logits, labels, ignore_index=-100, weights=None):
    """Mean cross-entropy over the labelled positions (weighted by ``weights`` when given: sum of
    weight x loss over sum of weights); 0 (and zero gradients) when there are none, in all three
    backends, where ``F.cross_entropy`` alone would give NaN. In float32 whatever the logits' dtype."""
    labels = labels.reshape(-1).long()
    logits = logits.reshape(labels.shape[0], -1)
    keep = labels != ignore_index
    # the log-softmax of the labelled rows only: the others' would be computed and thrown away
    losses = F.cross_entropy(logits[keep].float(), labels[keep], reduction="none")
    if weights is None:
        return losses.sum() / keep.sum().clamp(min=1)
    weights = weights.reshape(-1)[keep].float()
    total = weights.sum()
    return (losses * weights).sum() / torch.where(total > 0, total, torch.ones_like(total))


def token_cross_entropy(logits, labels, weights=None):
    """Cross-entropy at every position whose label is not -100 (masked LM, token classification),
    weighted per position by ``weights`` when given (``masked_weights``)."""
    return _cross_entropy(logits, labels, weights=weights)


def shifted_token_cross_entropy(logits, labels):
    """Causal LM: position t predicts token t+1."""
    return token_cross_entropy(logits[:, :-1], labels[:, 1:])


def sequence_classification_loss(logits, labels, config: RoFormerConfig):
    """Regression (MSE), single-label (cross-entropy) or multi-label (BCE) by ``problem_type``."""
    integer = not (labels.is_floating_point() or labels.is_complex())
    problem = problem_type(config, integer)
    if problem == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.squeeze(-1).float()) if config.num_labels == 1 \
            else F.mse_loss(logits.float(), labels.float())
    if problem == "single_label_classification":
        return _cross_entropy(logits, labels)
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def choice_cross_entropy(logits, labels):
    """Cross-entropy over the choices."""
    return _cross_entropy(logits, labels)


def span_cross_entropy(start_logits, end_logits, start_positions, end_positions):
    """Mean of start and end cross-entropy; positions outside the sequence are ignored."""
    ignored = start_logits.shape[1]
    start = start_positions.reshape(-1).clamp(0, ignored)
    end = end_positions.reshape(-1).clamp(0, ignored)
    return (_cross_entropy(start_logits, start, ignored) + _cross_entropy(end_logits, end, ignored)) / 2


# the names these had before the loss kinds were named
lm_loss, classification_loss, span_loss = token_cross_entropy, sequence_classification_loss, span_cross_entropy


# -- shared model behaviour: init, loading, saving ------------------------------------------
class RoFormerPreTrainedModel(nn.Module):
    """Initialisation, ``from_pretrained`` / ``save_pretrained`` / ``from_config`` for every class.

    ``add_pooling_layer`` (every class takes it, as the ``roformer`` port's ``RoFormerModel``
    does) adds ``roformer.pooler`` and ``pooler_output``; None follows the config.
    """

    head = "model"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None):
        super().__init__()
        self.config = with_pooler(config, add_pooling_layer)

    def init_weights(self):
        """Reference initialisation: normal(0, initializer_range) matrices, zero biases, unit LayerNorm."""
        std = self.config.initializer_range
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, 0.0, std)
                    if isinstance(module, nn.Linear) and module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.LayerNorm):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, RoFormerLMPredictionHead):
                    nn.init.zeros_(module.bias)
            for module in self.modules():  # after the loop, which visits parents first
                if isinstance(module, RoFormerEmbeddings):  # the reference zeroes the padding row
                    module.word_embeddings.weight[self.config.pad_token_id].zero_()

    @classmethod
    def from_config(cls, config: RoFormerConfig, dtype: Optional[torch.dtype] = None, device=None,
                    add_pooling_layer: Optional[bool] = None):
        """A freshly initialised model.

        Example:
            >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
            ...                      num_attention_heads=4, intermediate_size=64)
            >>> RoFormerModel.from_config(cfg).config.hidden_size
            32
            >>> RoFormerModel.from_config(cfg, add_pooling_layer=True).pooler.dense.weight.shape
            torch.Size([32, 32])
        """
        return cls(config, add_pooling_layer=add_pooling_layer).to(device=device, dtype=dtype)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: Optional[torch.dtype] = None, device=None,
                        config: Optional[RoFormerConfig] = None, **kwargs):
        """Load a checkpoint: a folder (canonical safetensors, shards, ``pytorch_model.bin``, ``tf_model.h5``,
        ``flax_model.msgpack``), a weights file, or a hub id (``revision=``, ``cache_dir=``, ``token=`` ...).

        ``dtype=None`` keeps the stored float dtype; other keyword arguments override config fields
        (``num_labels=3``, ``hidden_dropout_prob=0.0`` ...). A bare-model checkpoint loads into a head
        model (the head is initialised, and a warning says so).

        Example:
            >>> import tempfile
            >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
            ...                      num_attention_heads=4, intermediate_size=64)
            >>> d = tempfile.mkdtemp(); RoFormerForMaskedLM(cfg).save_pretrained(d)
            >>> RoFormerForMaskedLM.from_pretrained(d).config.vocab_size
            100
        """
        return LIFECYCLE.load(cls, path, config, dict(dtype=dtype, device=device), **kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` (canonical names, the model's dtype), atomically."""
        LIFECYCLE.save(self, directory)

    def gradient_checkpointing_enable(self, enabled: bool = True):
        """Activation recomputation in training: each layer keeps only its input and runs again in the
        backward pass (``torch.utils.checkpoint``, dropout masks replayed), trading about a third more
        compute for activation memory that no longer grows with the depth. Same gradients. Returns the model.

        Example:
            >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
            ...                      num_attention_heads=4, intermediate_size=64)
            >>> RoFormerModel(cfg).gradient_checkpointing_enable().is_gradient_checkpointing
            True
        """
        for module in self.modules():
            if isinstance(module, RoFormerEncoder):
                module.gradient_checkpointing = bool(enabled)
        return self

    def gradient_checkpointing_disable(self):
        """Keep every activation again (the default). Returns the model."""
        return self.gradient_checkpointing_enable(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether the layers recompute their activations in the backward pass."""
        return any(m.gradient_checkpointing for m in self.modules() if isinstance(m, RoFormerEncoder))

    def __call__(self, *args, **kwargs):
        self.check_inputs(_bind(type(self), args, kwargs))  # before torch: a bad input is one short error
        return super().__call__(*args, **kwargs)

    def check_inputs(self, arguments: dict) -> None:
        """One clear :class:`InputError` for missing, mistyped or mis-shaped inputs or labels
        (``roformer_core.inputs.validate_inputs``); ``arguments`` are ``forward``'s, by name."""
        input_ids = arguments.get("input_ids")
        if input_ids is not None and not isinstance(input_ids, torch.Tensor):
            raise InputError(f"input_ids must be an integer torch.Tensor, got {type(input_ids).__name__}")
        facts = {k: _facts(k, v) for k, v in arguments.items() if k in _CHECKED and isinstance(v, torch.Tensor)}
        if arguments.get("inputs_embeds") is not None:
            facts["inputs_embeds"] = ArrayFacts(tuple(arguments["inputs_embeds"].shape), False)
        past = arguments.get("past_key_values")
        validate_inputs(self.config, self.head, facts, 0 if past is None else past[0][0].shape[2],
                        arguments.get("encoder_hidden_states") is not None)
        if self.head == "masked_lm":
            first = arguments.get("input_ids")
            first = first if first is not None else arguments["inputs_embeds"]
            masked = {k: _facts("labels" if k == "masked_labels" else k, v) for k, v in arguments.items()
                      if k in MASKED_INPUTS and isinstance(v, torch.Tensor)}
            check_masked_inputs(self.config, masked, tuple(first.shape[:2]), arguments.get("labels") is not None,
                                arguments.get("prediction_mask") is not None)


#: the arguments whose values are checked: ids, masks, token types, labels
_CHECKED = frozenset(("input_ids", "attention_mask", "token_type_ids", "prediction_mask") + LABEL_INPUTS)
#: the masked LM's fixed-shape inputs: positions to predict [batch, P], their labels and weights
@functools.lru_cache(maxsize=None)
def _signature(cls) -> inspect.Signature:
    return inspect.signature(cls.forward)


def _bind(cls, args, kwargs) -> dict:
    try:
        return _signature(cls).bind(None, *args, **kwargs).arguments
    except TypeError as e:  # an unknown or doubled argument: say which, in one line
        raise InputError(f"{cls.__name__}: {e}") from None


def _facts(name: str, x: torch.Tensor) -> ArrayFacts:
    integer = not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)
    # values are unknown while a graph is traced, exported or compiled: shapes only, as under jit
    concrete = integer and not (torch.jit.is_tracing() or torch.compiler.is_compiling())
    return ArrayFacts.of(x.detach().cpu().numpy() if concrete else None, tuple(x.shape), integer, name)


def _extended_mask(attention_mask, input_shape, past_length, is_decoder, dtype, device, unilm_types=None):
    """Additive mask [batch, 1, q, k] (or [batch, 1, 1, k]); None when nothing is masked.

    ``unilm_types`` (the new tokens' token types, ``config.unilm``) replaces the causal mask by
    the UniLM one (``roformer_core.generation.unilm_attention_mask``). Cumulative sums only grow,
    so a cached position never has a larger one than a new token: cached positions are always
    visible, and the new tokens compare the cumulative sums of their own types, which is why
    incremental decoding equals the one-pass forward without the cache's token types.
    """
    batch, seq = input_shape
    total = past_length + seq
    mask = None
    if attention_mask is not None:
        mask = attention_mask[:, None, :, :] if attention_mask.dim() == 3 else attention_mask[:, None, None, :]
        mask = mask.to(dtype=torch.bool)
    if unilm_types is not None:
        idx = unilm_types.cumsum(-1)
        new = idx[:, None, :] <= idx[:, :, None]
        cached = torch.ones(new.shape[0], seq, past_length, dtype=torch.bool, device=device)
        unilm = torch.cat([cached, new], dim=-1)[:, None]
        mask = unilm if mask is None else mask & unilm
    elif is_decoder:  # each query sees the cache and itself and what came before
        q = torch.arange(past_length, total, device=device)[:, None]
        causal = (torch.arange(total, device=device)[None, :] <= q)[None, None]
        mask = causal if mask is None else mask & causal
    if mask is None:
        return None
    return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)


def _head_mask(head_mask, num_layers, dtype):
    """[heads] or [layers, heads] -> [layers, 1, heads, 1, 1] (or None)."""
    if head_mask is None:
        return None
    if head_mask.dim() == 1:
        head_mask = head_mask[None].expand(num_layers, -1)
    return head_mask[:, None, :, None, None].to(dtype)


# -- the models ---------------------------------------------------------------------------
class RoFormerModel(RoFormerPreTrainedModel):
    """The bare RoFormer encoder (or decoder, with ``is_decoder``).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> model = RoFormerModel(cfg).eval()
        >>> model(torch.tensor([[2, 5, 7, 3]])).last_hidden_state.shape
        torch.Size([1, 4, 32])
    """

    head = "model"

    def __init__(self, config: RoFormerConfig, initialise: bool = True, add_pooling_layer: Optional[bool] = None):
        super().__init__(config, add_pooling_layer)
        config = self.config
        self.embeddings = RoFormerEmbeddings(config)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.encoder = RoFormerEncoder(config)
        if config.add_pooling_layer:
            self.pooler = RoFormerPooler(config)
        if initialise:  # a head model initialises everything once, itself included
            self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None, use_cache=None,
                output_attentions=False, output_hidden_states=False, return_dict=True):
        past_length = past_key_values[0][0].shape[2] if past_key_values is not None else 0
        c = self.config
        use_cache = (c.is_decoder or c.unilm) and (c.use_cache if use_cache is None else use_cache)
        hidden = self.embeddings(input_ids, token_type_ids, inputs_embeds)
        if hasattr(self, "embeddings_project"):
            hidden = self.embeddings_project(hidden)
        unilm_types = None
        if c.unilm:  # no token types: all segment 0, bidirectional (the cached positions stay visible)
            unilm_types = token_type_ids if token_type_ids is not None else torch.zeros(
                hidden.shape[:2], dtype=torch.long, device=hidden.device)
        mask = _extended_mask(attention_mask, hidden.shape[:2], past_length, c.is_decoder, hidden.dtype,
                              hidden.device, unilm_types)
        encoder_mask = None
        if encoder_hidden_states is not None and encoder_attention_mask is not None:
            encoder_mask = _extended_mask(encoder_attention_mask, encoder_hidden_states.shape[:2], 0, False,
                                          hidden.dtype, hidden.device)
        out = self.encoder(hidden, mask, _head_mask(head_mask, self.config.num_hidden_layers, hidden.dtype),
                           encoder_hidden_states, encoder_mask, past_key_values, use_cache, output_attentions,
                           output_hidden_states)
        if hasattr(self, "pooler"):
            out.pooler_output = self.pooler(out.last_hidden_state)
        return out if return_dict else out.to_tuple()


class RoFormerForMaskedLM(RoFormerPreTrainedModel):
    """RoFormer with the masked-language-model head.

    ``prediction_mask`` (bool [batch, seq]) computes vocabulary logits only where it is True,
    returning ``[num_true, vocab]``: fill-mask needs them only at the [MASK] positions, and the
    vocabulary projection is a third of the base model's FLOPs.

    Training, the fixed-shape way (``roformer_core.collator.MaskedLMCollator`` makes these):
    ``masked_positions`` (int [batch, P], padded) are the positions to predict, ``masked_labels``
    ([batch, P], -100 at padding) their labels and ``masked_weights`` (float [batch, P], 0 at
    padding, optional) their weights in the loss; the transform and the vocabulary projection run
    only there, and ``logits`` is ``[batch, P, vocab]``. The loss is the full-sequence loss on the
    same labels. With full-sequence ``labels`` the logits are the reference's, and the backward of
    the projection skips the rows without a label.

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> model = RoFormerForMaskedLM(cfg).eval()
        >>> ids = torch.tensor([[2, 5, 4, 3]])
        >>> model(ids).logits.shape, model(ids, prediction_mask=ids == 4).logits.shape
        (torch.Size([1, 4, 100]), torch.Size([1, 100]))
        >>> out = model(ids, masked_positions=torch.tensor([[2, 0]]), masked_labels=torch.tensor([[7, -100]]))
        >>> full = model(ids, labels=torch.tensor([[-100, -100, 7, -100]]))
        >>> out.logits.shape, bool(torch.allclose(out.loss, full.loss, atol=1e-6))
        (torch.Size([1, 2, 100]), True)
    """

    head = "masked_lm"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None):
        super().__init__(config, add_pooling_layer)
        config = self.config
        self.roformer = RoFormerModel(config, initialise=False)
        self.cls = RoFormerOnlyMLMHead(config)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                labels=None, output_attentions=False, output_hidden_states=False, return_dict=True,
                prediction_mask=None, masked_positions=None, masked_labels=None, masked_weights=None):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        sequence = out.last_hidden_state
        word_embeddings = self.roformer.embeddings.word_embeddings.weight
        if masked_positions is not None:  # [batch, P]: gather the P rows, then the head on them only
            index = masked_positions.long()[..., None].expand(-1, -1, sequence.shape[-1])
            logits = self.cls(sequence.gather(1, index), word_embeddings)
            loss = token_cross_entropy(logits, masked_labels, masked_weights) if masked_labels is not None else None
        else:
            if prediction_mask is not None:
                sequence = sequence[prediction_mask]
                labels = labels[prediction_mask] if labels is not None and labels.dim() > 1 else labels
            logits = self.cls(sequence, word_embeddings, sparse_grad=labels is not None)
            loss = token_cross_entropy(logits, labels) if labels is not None else None
        result = MaskedLMOutput(loss, logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


class RoFormerForCausalLM(RoFormerPreTrainedModel):
    """RoFormer decoder with the LM head: causal mask, cache, cross-attention, ``generate``.

    With ``config.unilm`` (RoFormer-Sim) the mask is UniLM's instead of the causal one: the
    source (token type 0) is read bidirectionally and the target (type 1) causally, in one
    pass; train seq2seq with ``labels=roformer_core.generation.seq2seq_labels(ids, types)``
    (the target's ids, -100 elsewhere; shifted like any causal LM), and ``generate`` gives
    the new tokens type 1. ``pooler_output`` is there when the model has a pooler.

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64, is_decoder=True)
        >>> model = RoFormerForCausalLM(cfg).eval()
        >>> model.generate(torch.tensor([[2, 5]]), max_new_tokens=3).shape
        torch.Size([1, 5])
        >>> sim = RoFormerForCausalLM(cfg.replace(unilm=True), add_pooling_layer=True).eval()
        >>> sim.generate(torch.tensor([[2, 5, 3]]), max_new_tokens=4, do_sample=True, top_p=0.9,
        ...              num_return_sequences=3, seed=0).shape
        torch.Size([3, 7])
    """

    head = "causal_lm"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None):
        super().__init__(config, add_pooling_layer)
        config = self.config
        if not (config.is_decoder or config.unilm):
            warnings.warn("RoFormerForCausalLM with is_decoder=False has no causal mask; set is_decoder=True "
                          "(or unilm=True for UniLM seq2seq)", stacklevel=2)
        self.roformer = RoFormerModel(config, initialise=False)
        self.cls = RoFormerOnlyMLMHead(config)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None, labels=None,
                use_cache=None, output_attentions=False, output_hidden_states=False, return_dict=True):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            encoder_hidden_states, encoder_attention_mask, past_key_values, use_cache,
                            output_attentions, output_hidden_states)
        logits = self.cls(out.last_hidden_state, self.roformer.embeddings.word_embeddings.weight)
        loss = shifted_token_cross_entropy(logits, labels) if labels is not None else None
        result = CausalLMOutput(loss, logits, out.past_key_values, out.hidden_states, out.attentions,
                                out.cross_attentions, out.pooler_output)
        return result if return_dict else result.to_tuple()

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, max_new_tokens: int = 20, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, eos_token_id=None, pad_token_id=None,
                 seed=None, encoder_hidden_states=None, encoder_attention_mask=None, token_type_ids=None,
                 num_return_sequences: int = 1) -> torch.Tensor:
        """Greedy or sampled continuation (temperature, top-k, top-p) using the key/value cache.

        ``num_return_sequences`` samples per prompt (rows ``i*n .. i*n+n-1`` for prompt i);
        ``token_type_ids`` are the prompt's; with ``config.unilm`` new tokens get type 1
        (paraphrase generation: the prompt is the source). Tokens are chosen in
        ``roformer_core.generation``, so every backend picks the same ones for a seed.
        """
        device = self.roformer.embeddings.word_embeddings.weight.device
        enc, enc_mask = encoder_hidden_states, encoder_attention_mask
        if num_return_sequences > 1 and enc is not None:  # one copy per returned sequence, like the prompts
            enc = enc.repeat_interleave(num_return_sequences, 0)
            enc_mask = None if enc_mask is None else enc_mask.repeat_interleave(num_return_sequences, 0)

        def step(new_ids, mask, past, token_type_ids=None):
            types = None if token_type_ids is None else torch.as_tensor(token_type_ids, device=device)
            out = self(torch.as_tensor(new_ids, device=device), torch.as_tensor(mask, device=device), types,
                       encoder_hidden_states=enc, encoder_attention_mask=enc_mask, past_key_values=past,
                       use_cache=True)
            return out.logits[:, -1].float().cpu().numpy(), out.past_key_values

        ids = generate_loop(step, _numpy(input_ids), None if attention_mask is None else _numpy(attention_mask),
                            max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                            top_k=top_k, top_p=top_p, eos_token_id=eos_token_id,
                            pad_token_id=self.config.pad_token_id if pad_token_id is None else pad_token_id,
                            seed=seed, token_type_ids=None if token_type_ids is None else _numpy(token_type_ids),
                            new_token_type=1 if self.config.unilm else None,
                            num_return_sequences=num_return_sequences)
        return torch.as_tensor(ids, device=device)


def _numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class RoFormerForSequenceClassification(RoFormerPreTrainedModel):
    """RoFormer with a sentence-level head on the first token (regression, single- or multi-label).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64, num_labels=3)
        >>> RoFormerForSequenceClassification(cfg)(torch.tensor([[2, 5, 3]])).logits.shape
        torch.Size([1, 3])
    """

    head = "sequence_classification"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None):
        super().__init__(config, add_pooling_layer)
        config = self.config
        self.roformer = RoFormerModel(config, initialise=False)
        self.classifier = RoFormerClassificationHead(config)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                labels=None, output_attentions=False, output_hidden_states=False, return_dict=True):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.classifier(out.last_hidden_state)
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        result = SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


class RoFormerForMultipleChoice(RoFormerPreTrainedModel):
    """RoFormer scoring each choice from its last position; inputs are [batch, choices, seq].

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> RoFormerForMultipleChoice(cfg)(torch.tensor([[[2, 5, 3], [2, 6, 3]]])).logits.shape
        torch.Size([1, 2])
    """

    head = "multiple_choice"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None):
        super().__init__(config, add_pooling_layer)
        config = self.config
        self.roformer = RoFormerModel(config, initialise=False)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                labels=None, output_attentions=False, output_hidden_states=False, return_dict=True):
        num_choices = (input_ids if input_ids is not None else inputs_embeds).shape[1]

        def flat(x):
            return None if x is None else x.flatten(0, 1)

        out = self.roformer(flat(input_ids), flat(attention_mask), flat(token_type_ids), head_mask,
                            flat(inputs_embeds), output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states)
        # the reference summarises each choice by its LAST position, even when that is padding
        logits = self.classifier(out.last_hidden_state[:, -1]).view(-1, num_choices)
        loss = choice_cross_entropy(logits, labels) if labels is not None else None
        result = SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


class RoFormerForTokenClassification(RoFormerPreTrainedModel):
    """RoFormer with a per-token classifier (NER, POS tagging).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64, num_labels=5)
        >>> RoFormerForTokenClassification(cfg)(torch.tensor([[2, 5, 3]])).logits.shape
        torch.Size([1, 3, 5])
    """

    head = "token_classification"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None):
        super().__init__(config, add_pooling_layer)
        config = self.config
        self.roformer = RoFormerModel(config, initialise=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                labels=None, output_attentions=False, output_hidden_states=False, return_dict=True):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = token_cross_entropy(logits, labels) if labels is not None else None
        result = TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


class RoFormerForQuestionAnswering(RoFormerPreTrainedModel):
    """RoFormer with span start/end logits (extractive QA).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> out = RoFormerForQuestionAnswering(cfg)(torch.tensor([[2, 5, 3]]))
        >>> out.start_logits.shape, out.end_logits.shape
        (torch.Size([1, 3]), torch.Size([1, 3]))
    """

    head = "question_answering"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None):
        super().__init__(config, add_pooling_layer)
        config = self.config
        self.roformer = RoFormerModel(config, initialise=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                start_positions=None, end_positions=None, output_attentions=False, output_hidden_states=False,
                return_dict=True):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        start_logits, end_logits = self.qa_outputs(out.last_hidden_state).unbind(-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_cross_entropy(start_logits, end_logits, start_positions, end_positions)
        result = QuestionAnsweringModelOutput(loss, start_logits, end_logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


MODEL_CLASSES = {cls.head: cls for cls in (
    RoFormerModel, RoFormerForMaskedLM, RoFormerForCausalLM, RoFormerForSequenceClassification,
    RoFormerForMultipleChoice, RoFormerForTokenClassification, RoFormerForQuestionAnswering)}
