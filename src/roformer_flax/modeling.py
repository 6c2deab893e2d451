"""RoFormer in Flax (``flax.linen``), top to bottom.

The same classes in the same order as ``roformer_torch.modeling``; read them side by side.
The params pytree has the reference Flax RoFormer names (``roformer/encoder/layer/0/attention/
self/query/kernel`` ...), so ``flax.serialization.to_bytes(model.params)`` is a reference
``flax_model.msgpack``, and every leaf maps to its canonical checkpoint name by rule
(``roformer_core.checkpoint.to_canonical_name``: kernel -> weight transposed, scale -> weight,
embedding -> weight). Arrays keep the PyTorch layouts too: heads are split as
``[batch, heads, seq, head_dim]``, attentions are ``[batch, heads, query, key]`` and cached
keys/values are ``[batch, heads, positions, head_dim]``.

Each task is a linen Module (``RoFormerForMaskedLMModule``) plus the model object people know
from the reference Flax API (``RoFormerForMaskedLM``: ``.module``, ``.params``, ``__call__``,
``from_pretrained``, ``save_pretrained``).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import os
import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from flax.traverse_util import flatten_dict, unflatten_dict
from jax import lax

from roformer_core.config import RoFormerConfig, with_pooler
from roformer_core.errors import InputError
from roformer_core.generation import generate as generate_loop
from roformer_core.heads import problem_type as _problem_type
from roformer_core.inputs import LABEL_INPUTS, MASKED_INPUTS, ArrayFacts, check_masked_inputs, validate_inputs
from roformer_flax.adapter import LIFECYCLE, MSGPACK_NAME, params_to_state_dict  # noqa: F401 (public names)
from roformer_core.outputs import (BaseModelOutput, CausalLMOutput, MaskedLMOutput, QuestionAnsweringModelOutput,
                                   SequenceClassifierOutput, TokenClassifierOutput)
from roformer_core.rotary import rotary_sin_cos, table_rows

#: traced shapes and compiled functions per (class, config, dtypes), shared by the models of one
#: architecture; bounded, least recently used first out, so a process that loads many
#: architectures does not keep every compiled function alive
_SHARED_CACHE: "collections.OrderedDict[tuple, dict]" = collections.OrderedDict()
SHARED_CACHE_SIZE = 8

ACT2FN = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "selu": jax.nn.selu,
    "silu": jax.nn.silu,
}
#: the pooler's activations (``config.pooler_activation``): tanh as in BERT, none for RoFormer-Sim
POOLER_ACT2FN = {"tanh": jnp.tanh, "linear": lambda x: x, **ACT2FN}

# Outputs returned from jax.jit / pmap must be pytrees; None fields are empty subtrees.
for _cls in (BaseModelOutput, MaskedLMOutput, CausalLMOutput, SequenceClassifierOutput, TokenClassifierOutput,
             QuestionAnsweringModelOutput):
    try:
        jax.tree_util.register_dataclass(_cls, data_fields=[f.name for f in dataclasses.fields(_cls)],
                                         meta_fields=[])
    except ValueError:  # already registered (module reloaded)
        pass


def matmul(x, kernel):
    """``x @ kernel`` over the last axis of ``x`` (``kernel``: [in, out]). In float32 the plain product.
    With bfloat16 operands (mixed precision) every product of the forward and the backward pass takes
    bfloat16 and accumulates in float32: XLA:CPU runs that form on the AVX-512 BF16 units (1.5x the
    float32 product here), while a bfloat16 product with a bfloat16 result is slower than float32.

    Example:
        >>> x, k = jnp.ones((2, 3), jnp.bfloat16), jnp.ones((3, 4), jnp.bfloat16)
        >>> y, (gx, gk) = matmul(x, k), jax.grad(lambda x, k: matmul(x, k).sum(), (0, 1))(x, k)
        >>> y.dtype, float(y[0, 0]), gx.dtype, float(gk[0, 0])
        (dtype(bfloat16), 3.0, dtype(bfloat16), 2.0)
    """
    if x.dtype == jnp.bfloat16 and kernel.dtype == jnp.bfloat16:
        return _bf16_matmul(x, kernel)
    return x @ kernel


def _f32_accumulated(a, b, contract):
    return lax.dot_general(a, b, (contract, ((), ())), preferred_element_type=jnp.float32)


@jax.custom_vjp
def _bf16_matmul(x, kernel):
    return _f32_accumulated(x, kernel, ((x.ndim - 1,), (0,))).astype(x.dtype)


def _bf16_matmul_fwd(x, kernel):
    return _bf16_matmul(x, kernel), (x, kernel)


def _bf16_matmul_bwd(residual, g):
    x, kernel = residual
    g = g.astype(x.dtype)  # JAX's own transpose would multiply in the cotangent's float32
    grad_x = _f32_accumulated(g, kernel, ((g.ndim - 1,), (1,))).astype(x.dtype)
    rows_x, rows_g = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    grad_kernel = _f32_accumulated(rows_x, rows_g, ((0,), (0,))).astype(kernel.dtype)
    return grad_x, grad_kernel


_bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)


def _dense_dot_general(x, kernel, dimension_numbers, precision=None, **kwargs):
    """``nn.Dense``'s product (``x``'s last axis with ``kernel``'s first) through :func:`matmul`."""
    return matmul(x, kernel)


class _Module(nn.Module):
    """Fields every RoFormer linen module shares: the config, the computation dtype, the storage dtype,
    and whether the layers recompute their activations in the backward pass (``flax.linen.remat``)."""

    config: RoFormerConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    gradient_checkpointing: bool = False

    def _linear(self, features: int, use_bias: bool = True) -> nn.Dense:
        return nn.Dense(features, use_bias=use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=nn.initializers.normal(self.config.initializer_range),
                        dot_general=_dense_dot_general)

    def _layer_norm(self) -> nn.Module:
        """The norm of ``config.norm_type``: LayerNorm (V1) or the parameter-free RMS norm (V2)."""
        if self.config.norm_type == "rms_norm":
            return RMSNorm(self.config.layer_norm_eps, self.dtype)
        # two-pass variance, as PyTorch computes it: the one-pass form costs parity digits
        return nn.LayerNorm(epsilon=self.config.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                            use_fast_variance=False)

    def _embed(self, num: int, features: int) -> nn.Embed:
        return nn.Embed(num, features, dtype=self.dtype, param_dtype=self.param_dtype,
                        embedding_init=nn.initializers.normal(self.config.initializer_range))

    def _child(self, cls, **kwargs):
        return cls(self.config, self.dtype, self.param_dtype, self.gradient_checkpointing, **kwargs)


class RMSNorm(nn.Module):
    """RoFormer-V2's norm: ``x / sqrt(mean(x^2) + eps)`` over the last axis, no parameters (float32 inside).

    Example:
        >>> norm = RMSNorm(1e-12)
        >>> norm.apply({}, jnp.array([[3.0, -3.0]])).tolist(), norm.init(jax.random.PRNGKey(0), jnp.ones((1, 2)))
        ([[1.0, -1.0]], {})
    """

    eps: float
    dtype: Any = jnp.float32

    def __call__(self, x):
        h = x.astype(jnp.float32)
        return (h * lax.rsqrt(jnp.mean(jnp.square(h), axis=-1, keepdims=True) + self.eps)).astype(self.dtype)


# -- encoder ------------------------------------------------------------------------------
class RoFormerEmbeddings(_Module):
    """word + token-type embeddings -> norm -> dropout (no position embedding: RoPE)."""

    def setup(self):
        self.word_embeddings = self._embed(self.config.vocab_size, self.config.embedding_size)
        self.token_type_embeddings = self._embed(self.config.type_vocab_size, self.config.embedding_size)
        self.LayerNorm = self._layer_norm()
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)

    def __call__(self, input_ids=None, token_type_ids=None, inputs_embeds=None, deterministic: bool = True):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros(inputs_embeds.shape[:-1], dtype=jnp.int32)
        embeddings = inputs_embeds.astype(self.dtype) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings), deterministic=deterministic)


def rotate_pairs(x: jax.Array) -> jax.Array:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) on the last axis."""
    pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)  # not -1: an empty batch has no size to infer from
    return jnp.stack((-pairs[..., 1], pairs[..., 0]), axis=-1).reshape(x.shape)


def apply_rotary(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """Rotate ``x`` [batch, heads, seq, head_dim] by the angles of its positions."""
    return x * cos + rotate_pairs(x) * sin


def _extend_cache(past: jax.Array, new: jax.Array, cache_index) -> jax.Array:
    """Append ``new`` positions to a growing cache, or write them into a fixed buffer at ``cache_index``."""
    if cache_index is None:
        return jnp.concatenate([past, new.astype(past.dtype)], axis=2)
    return lax.dynamic_update_slice_in_dim(past, new.astype(past.dtype), cache_index, axis=2)


class RoFormerSelfAttention(_Module):
    """Multi-head attention with rotary q/k (and v when ``rotary_value``); also cross-attention."""

    is_cross_attention: bool = False

    def setup(self):
        self.num_heads = self.config.num_attention_heads
        self.head_dim = self.config.head_dim
        self.query = self._linear(self.config.hidden_size, self.config.use_bias)
        self.key = self._linear(self.config.hidden_size, self.config.use_bias)
        self.value = self._linear(self.config.hidden_size, self.config.use_bias)
        self.dropout = nn.Dropout(self.config.attention_probs_dropout_prob)
        self.rotary_value = self.config.rotary_value

    def split_heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:2], self.num_heads, self.head_dim).swapaxes(1, 2)

    def __call__(self, hidden_states, attention_mask=None, sin_cos=None, head_mask=None, encoder_hidden_states=None,
                 past_key_value=None, cache_index=None, output_attentions=False, deterministic: bool = True):
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
                key = _extend_cache(past_key_value[0], key, cache_index)
                value = _extend_cache(past_key_value[1], value, cache_index)
        dropout_on = not deterministic and self.config.attention_probs_dropout_prob > 0
        if output_attentions or head_mask is not None or dropout_on:
            scores = query @ key.swapaxes(-1, -2) / math.sqrt(self.head_dim)
            if attention_mask is not None:
                scores = scores + attention_mask
            # softmax in float32 even for bf16 compute: it is where half precision loses the most
            probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
            probs = self.dropout(probs, deterministic=deterministic)
            if head_mask is not None:
                probs = probs * head_mask
            context = (probs @ value).swapaxes(1, 2)
        else:  # jax picks a fused kernel where the platform has one; it wants [batch, seq, heads, head_dim]
            probs = None
            context = jax.nn.dot_product_attention(query.swapaxes(1, 2), key.swapaxes(1, 2), value.swapaxes(1, 2),
                                                   bias=attention_mask)
        context = context.reshape(*context.shape[:2], context.shape[2] * context.shape[3])
        return context, probs, (key, value)


class RoFormerSelfOutput(_Module):
    """dense -> dropout -> residual -> norm."""

    def setup(self):
        self.dense = self._linear(self.config.hidden_size, self.config.use_bias)
        self.LayerNorm = self._layer_norm()
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)

    def __call__(self, hidden_states, input_tensor, deterministic: bool = True):
        return self.LayerNorm(self.dropout(self.dense(hidden_states), deterministic=deterministic) + input_tensor)


class RoFormerAttention(_Module):
    """Self (or cross) attention followed by its output block."""

    is_cross_attention: bool = False

    def setup(self):
        self.self = self._child(RoFormerSelfAttention, is_cross_attention=self.is_cross_attention)
        self.output = self._child(RoFormerSelfOutput)

    def __call__(self, hidden_states, attention_mask=None, sin_cos=None, head_mask=None, encoder_hidden_states=None,
                 past_key_value=None, cache_index=None, output_attentions=False, deterministic: bool = True):
        context, probs, present = self.self(hidden_states, attention_mask, sin_cos, head_mask, encoder_hidden_states,
                                            past_key_value, cache_index, output_attentions, deterministic)
        return self.output(context, hidden_states, deterministic), probs, present


class RoFormerIntermediate(_Module):
    """dense -> activation."""

    def setup(self):
        self.dense = self._linear(self.config.intermediate_size, self.config.use_bias)
        self.intermediate_act_fn = ACT2FN[self.config.hidden_act]

    def __call__(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class RoFormerOutput(_Module):
    """dense -> dropout -> residual -> norm."""

    def setup(self):
        self.dense = self._linear(self.config.hidden_size, self.config.use_bias)
        self.LayerNorm = self._layer_norm()
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)

    def __call__(self, hidden_states, input_tensor, deterministic: bool = True):
        return self.LayerNorm(self.dropout(self.dense(hidden_states), deterministic=deterministic) + input_tensor)


class RoFormerLayer(_Module):
    """attention -> (cross-attention) -> feed-forward, post-norm."""

    def setup(self):
        self.attention = self._child(RoFormerAttention)
        self.has_cross_attention = self.config.is_decoder and self.config.add_cross_attention
        if self.has_cross_attention:
            self.crossattention = self._child(RoFormerAttention, is_cross_attention=True)
        self.intermediate = self._child(RoFormerIntermediate)
        self.output = self._child(RoFormerOutput)

    def __call__(self, hidden_states, attention_mask=None, sin_cos=None, head_mask=None, encoder_hidden_states=None,
                 encoder_attention_mask=None, past_key_value=None, cache_index=None, output_attentions=False,
                 deterministic: bool = True):
        self_past = past_key_value[:2] if past_key_value is not None else None
        hidden_states, self_probs, present = self.attention(
            hidden_states, attention_mask, sin_cos, head_mask, past_key_value=self_past, cache_index=cache_index,
            output_attentions=output_attentions, deterministic=deterministic)
        cross_probs = None
        if encoder_hidden_states is None and self.has_cross_attention and self.is_initializing():
            # linen creates params on first use; the checkpoint has cross-attention whether used or not
            self.crossattention(hidden_states, encoder_hidden_states=hidden_states)
        if encoder_hidden_states is not None:  # the model checked that the config has cross-attention
            cross_past = past_key_value[2:] if past_key_value is not None and len(past_key_value) == 4 else None
            hidden_states, cross_probs, cross_present = self.crossattention(
                hidden_states, encoder_attention_mask, None, head_mask, encoder_hidden_states, cross_past,
                output_attentions=output_attentions, deterministic=deterministic)
            present = present + cross_present
        hidden_states = self.output(self.intermediate(hidden_states), hidden_states, deterministic)
        return hidden_states, self_probs, cross_probs, present


class _LayerList(_Module):
    """Flax's counterpart of ``torch.nn.ModuleList``: children named "0", "1", ..., so the params
    read ``encoder/layer/0/...`` as in the reference Flax RoFormer (a plain list would give ``layer_0``)."""

    def setup(self):
        # remat keeps each layer's inputs only and runs the layer again in the backward pass; the
        # flags (output_attentions, deterministic: arguments 9 and 10, self being 0) stay Python values
        layer = nn.remat(RoFormerLayer, static_argnums=(9, 10)) if self.gradient_checkpointing else RoFormerLayer
        self.layers = [self._child(layer, name=str(i)) for i in range(self.config.num_hidden_layers)]


def _cache_positions(past_key_values, cache_index, seq_length: int):
    """(first position of the new tokens, number of key positions attended) for a cache mode.

    A growing cache holds exactly the past positions; a fixed buffer (``cache_index`` given,
    possibly traced under jit) holds every position up to its length, the unwritten ones masked.
    """
    past_length = 0 if past_key_values is None else past_key_values[0][0].shape[2]
    if cache_index is None:
        return past_length, past_length + seq_length
    return cache_index, past_length


class RoFormerEncoder(_Module):
    """The stack of layers; owns the rotary table (a constant, never a parameter)."""

    def setup(self):
        self.layer = self._child(_LayerList)

    def sin_cos(self, offset, seq_length: int, key_length: int):
        """Rotary sin/cos for positions ``offset .. offset + seq_length``; ``offset`` may be traced."""
        rows = table_rows(key_length, self.config.max_position_embeddings)
        sin, cos = rotary_sin_cos(rows, self.config.head_dim, dtype=np.float32)
        return tuple(lax.dynamic_slice_in_dim(jnp.asarray(t, self.dtype), offset, seq_length) for t in (sin, cos))

    def __call__(self, hidden_states, attention_mask=None, head_mask=None, encoder_hidden_states=None,
                 encoder_attention_mask=None, past_key_values=None, cache_index=None, use_cache=False,
                 output_attentions=False, output_hidden_states=False, deterministic: bool = True):
        offset, key_length = _cache_positions(past_key_values, cache_index, hidden_states.shape[1])
        sin_cos = self.sin_cos(offset, hidden_states.shape[1], key_length)
        all_hidden, all_attn, all_cross, presents = [], [], [], []
        for i, layer in enumerate(self.layer.layers):
            if output_hidden_states:
                all_hidden.append(hidden_states)
            hidden_states, probs, cross, present = layer(
                hidden_states, attention_mask, sin_cos, None if head_mask is None else head_mask[i],
                encoder_hidden_states, encoder_attention_mask,
                None if past_key_values is None else past_key_values[i], cache_index, output_attentions,
                deterministic)
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
@jax.custom_vjp
def add_bias(x, bias):
    """``x + bias`` over the last axis, whose backward sums the output gradient over the rows with a
    matrix-vector product instead of a column reduction: XLA:CPU (jax 0.10, YNNPACK fusions) runs
    the reduction of a [tokens, vocab] gradient ~50x slower (1.6 s against 0.03 s at 2048 x 50,000),
    which was a third of a masked-LM training step.

    Example:
        >>> g = jax.grad(lambda b: add_bias(jnp.ones((3, 2)), b).sum())(jnp.zeros(2))
        >>> g.tolist()
        [3.0, 3.0]
    """
    return x + bias


def _add_bias_fwd(x, bias):
    return x + bias, jnp.zeros((0,), bias.dtype)  # the residual only carries the bias's dtype


def _add_bias_bwd(residual, g):
    rows = g.reshape(-1, g.shape[-1])
    summed = jnp.dot(jnp.ones((rows.shape[0],), rows.dtype), rows, precision=lax.Precision.HIGHEST,
                     preferred_element_type=jnp.float32)
    return g, summed.astype(residual.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class RoFormerPredictionHeadTransform(_Module):
    """dense(H -> E) -> activation -> LayerNorm(E)."""

    def setup(self):
        self.dense = self._linear(self.config.embedding_size)
        self.transform_act_fn = ACT2FN[self.config.hidden_act]
        self.LayerNorm = self._layer_norm()

    def __call__(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class RoFormerLMPredictionHead(_Module):
    """transform -> decoder (the word embeddings, tied unless the config unties them) + bias."""

    def setup(self):
        self.transform = self._child(RoFormerPredictionHeadTransform)
        if not self.config.tie_word_embeddings:
            self.decoder = self._linear(self.config.vocab_size, use_bias=False)
        self.bias = self.param("bias", nn.initializers.zeros, (self.config.vocab_size,), self.param_dtype)

    def __call__(self, hidden_states, word_embeddings):
        hidden_states = self.transform(hidden_states)
        if self.config.tie_word_embeddings:
            logits = matmul(hidden_states, jnp.asarray(word_embeddings, self.dtype).T)
        else:
            logits = self.decoder(hidden_states)
        return add_bias(logits, jnp.asarray(self.bias, self.dtype))


class RoFormerV2LMPredictionHead(_Module):
    """RoFormer-V2's LM head: only the decoder (the word embeddings unless untied), no transform, no bias."""

    def setup(self):
        if not self.config.tie_word_embeddings:
            self.decoder = self._linear(self.config.vocab_size, use_bias=False)

    def __call__(self, hidden_states, word_embeddings):
        if self.config.tie_word_embeddings:
            return matmul(hidden_states, jnp.asarray(word_embeddings, self.dtype).T)
        return self.decoder(hidden_states)


class RoFormerOnlyMLMHead(_Module):
    """The ``cls`` of the LM heads: only the predictions."""

    def setup(self):
        v2 = self.config.norm_type == "rms_norm"
        self.predictions = self._child(RoFormerV2LMPredictionHead if v2 else RoFormerLMPredictionHead)

    def __call__(self, sequence_output, word_embeddings):
        return self.predictions(sequence_output, word_embeddings)


class RoFormerPooler(_Module):
    """First token -> dense -> ``pooler_activation`` (``pooler_output``; RoFormer-Sim's sentence vector).

    Example:
        >>> cfg = RoFormerConfig(hidden_size=8, num_attention_heads=2, pooler_activation="linear")
        >>> pooler = RoFormerPooler(cfg)
        >>> pooler.apply(pooler.init(jax.random.PRNGKey(0), jnp.zeros((2, 5, 8))), jnp.zeros((2, 5, 8))).shape
        (2, 8)
    """

    def setup(self):
        self.dense = self._linear(self.config.hidden_size)
        self.activation = POOLER_ACT2FN[self.config.pooler_activation]

    def __call__(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))


class RoFormerClassificationHead(_Module):
    """First token -> dropout -> dense -> hidden_act -> dropout -> out_proj."""

    def setup(self):
        self.dense = self._linear(self.config.hidden_size)
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)
        self.out_proj = self._linear(self.config.num_labels)
        self.act = ACT2FN[self.config.hidden_act]

    def __call__(self, features, deterministic: bool = True):
        x = self.dropout(features[:, 0, :], deterministic=deterministic)
        x = self.dropout(self.act(self.dense(x)), deterministic=deterministic)
        return self.out_proj(x)


# -- losses -----------------------------------------------------------------------------
# Each loss is built from (sum, count) terms so that data-parallel training can divide by the
# count over ALL devices (roformer_flax.training); the model itself reports their mean.
def cross_entropy_sum(logits, labels, ignore_index: int = -100, weights=None):
    """(summed cross-entropy over positions whose label is not ``ignore_index``, their number), in
    float32; with ``weights`` (``masked_weights``) each position counts with its weight, in the sum
    and in the count."""
    logits = logits.reshape(-1, logits.shape[-1]).astype(jnp.float32)
    labels = labels.reshape(-1)
    valid = labels != ignore_index
    weight = valid.astype(jnp.float32)
    if weights is not None:
        weight = jnp.where(valid, weights.reshape(-1).astype(jnp.float32), 0.0)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, jnp.where(valid, labels, 0)[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return -jnp.sum(jnp.where(valid, picked * weight, 0.0)), jnp.sum(weight)


def problem_type(config: RoFormerConfig, labels) -> str:
    """``roformer_core.heads.problem_type`` for these labels' dtype."""
    return _problem_type(config, bool(jnp.issubdtype(labels.dtype, jnp.integer)))


def classification_terms(logits, labels, config: RoFormerConfig):
    """(sum, count) of MSE, cross-entropy or binary cross-entropy, by :func:`problem_type`."""
    problem = problem_type(config, labels)
    if problem == "regression":
        if config.num_labels == 1:
            logits, labels = logits.reshape(-1), labels.reshape(-1)
        err = (logits.astype(jnp.float32) - labels.astype(jnp.float32)) ** 2
        return jnp.sum(err), jnp.float32(err.size)
    if problem == "single_label_classification":
        return cross_entropy_sum(logits, labels)
    x, y = logits.astype(jnp.float32), labels.astype(jnp.float32)
    bce = jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))  # stable BCE with logits
    return jnp.sum(bce), jnp.float32(bce.size)


def span_terms(start_logits, end_logits, start_positions, end_positions):
    """Start and end cross-entropy terms; positions outside the sequence are ignored."""
    ignored = start_logits.shape[1]
    start = jnp.clip(start_positions.reshape(-1), 0, ignored)
    end = jnp.clip(end_positions.reshape(-1), 0, ignored)
    return cross_entropy_sum(start_logits, start, ignored), cross_entropy_sum(end_logits, end, ignored)


def token_terms(config: RoFormerConfig, out, y: dict) -> tuple:
    """The token cross-entropy term of a batch: on full-sequence ``labels``, or, for a masked batch
    (``masked_positions`` given, so ``out.logits`` is [batch, P, vocab]), on ``masked_labels``
    weighted by ``masked_weights`` when given."""
    if y.get("masked_positions") is not None:
        return (cross_entropy_sum(out.logits, y["masked_labels"], weights=y.get("masked_weights")),)
    return (cross_entropy_sum(out.logits, y["labels"]),)


#: loss kind (``roformer_core.heads.LOSS_KINDS``) -> (config, outputs, labels dict) -> (sum, count) terms
LOSS_TERMS = {
    "token_cross_entropy": token_terms,
    "shifted_token_cross_entropy": lambda config, out, y: (cross_entropy_sum(out.logits[:, :-1],
                                                                            y["labels"][:, 1:]),),
    "sequence_classification": lambda config, out, y: (classification_terms(out.logits, y["labels"], config),),
    "choice_cross_entropy": lambda config, out, y: (cross_entropy_sum(out.logits, y["labels"]),),
    "span_cross_entropy": lambda config, out, y: span_terms(out.start_logits, out.end_logits,
                                                            y["start_positions"], y["end_positions"]),
}


def mean_of_terms(*terms):
    """Mean over terms of sum / count (a term with nothing counted adds 0; counts may be weights below 1)."""
    return sum(s / jnp.where(c > 0, c, 1.0) for s, c in terms) / len(terms)


def token_cross_entropy(logits, labels, weights=None):
    """Cross-entropy at every position whose label is not -100 (masked LM, token classification),
    weighted per position by ``weights`` when given (``masked_weights``)."""
    return mean_of_terms(cross_entropy_sum(logits, labels, weights=weights))


def shifted_token_cross_entropy(logits, labels):
    """Causal LM: position t predicts token t+1."""
    return token_cross_entropy(logits[:, :-1], labels[:, 1:])


def sequence_classification_loss(logits, labels, config: RoFormerConfig):
    """Regression (MSE), single-label (cross-entropy) or multi-label (BCE) by ``problem_type``."""
    return mean_of_terms(classification_terms(logits, labels, config))


def choice_cross_entropy(logits, labels):
    """Cross-entropy over the choices."""
    return mean_of_terms(cross_entropy_sum(logits, labels))


def span_cross_entropy(start_logits, end_logits, start_positions, end_positions):
    """Mean of start and end cross-entropy; positions outside the sequence are ignored."""
    return mean_of_terms(*span_terms(start_logits, end_logits, start_positions, end_positions))


# the names these had before the loss kinds were named
lm_loss, classification_loss, span_loss = token_cross_entropy, sequence_classification_loss, span_cross_entropy


# -- shared model behaviour: init, loading, saving ------------------------------------------
class RoFormerPreTrainedModel:
    """The model object of the reference Flax API: ``.module``, ``.params``, ``__call__``, loading, saving.

    ``dtype`` is the computation dtype, ``param_dtype`` the storage dtype of the params
    (bfloat16 mixed precision: ``dtype=jnp.bfloat16`` with float32 params; the losses are float32).
    ``add_pooling_layer`` (as the ``roformer`` port's ``RoFormerModel`` takes it) adds
    ``roformer/pooler`` and ``pooler_output``; None follows the config. ``gradient_checkpointing``
    recomputes each layer's activations in the backward pass (``flax.linen.remat``): the same
    gradients, with activation memory that no longer grows with the depth.
    """

    head = "model"
    module_class: type = None
    #: shape of the dummy input that initialises the params
    dummy_shape = (1, 1)

    def __init__(self, config: RoFormerConfig, input_shape: tuple | None = None, seed: int = 0,
                 dtype=jnp.float32, param_dtype=jnp.float32, _do_init: bool = True,
                 add_pooling_layer: bool | None = None, gradient_checkpointing: bool = False):
        config = with_pooler(config, add_pooling_layer)
        self.config = config
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.input_shape = tuple(input_shape or self.dummy_shape)
        self._build_module(gradient_checkpointing)
        self._params = self.init_weights(jax.random.PRNGKey(seed), self.input_shape) if _do_init else None

    def _build_module(self, gradient_checkpointing: bool) -> None:
        self.module = self.module_class(self.config, dtype=self.dtype, param_dtype=self.param_dtype,
                                        gradient_checkpointing=bool(gradient_checkpointing))
        # traced shapes and compiled functions, shared by every model of this class, config and
        # dtypes (loading the same architecture twice traces and compiles nothing new)
        key = (type(self), json.dumps(self.config.to_dict(), sort_keys=True), jnp.dtype(self.dtype).name,
               jnp.dtype(self.param_dtype).name, bool(gradient_checkpointing))
        self._cache: dict = _SHARED_CACHE.pop(key, None) or {}
        _SHARED_CACHE[key] = self._cache
        while len(_SHARED_CACHE) > SHARED_CACHE_SIZE:
            _SHARED_CACHE.popitem(last=False)

    def gradient_checkpointing_enable(self, enabled: bool = True):
        """Activation recomputation in training: each layer keeps only its inputs and runs again in the
        backward pass (``flax.linen.remat``), trading about a third more compute for activation memory
        that no longer grows with the depth. Same gradients. Build the train state after this call
        (it holds ``module.apply``). Returns the model.

        Example:
            >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
            ...                      num_attention_heads=4, intermediate_size=64)
            >>> RoFormerModel.from_config(cfg).gradient_checkpointing_enable().is_gradient_checkpointing
            True
        """
        if bool(enabled) != self.module.gradient_checkpointing:
            self._build_module(enabled)
        return self

    def gradient_checkpointing_disable(self):
        """Keep every activation again (the default). Returns the model."""
        return self.gradient_checkpointing_enable(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether the layers recompute their activations in the backward pass."""
        return self.module.gradient_checkpointing

    def enable_gradient_checkpointing(self, enabled: bool = True):
        """The name transformers' Flax models give :meth:`gradient_checkpointing_enable`."""
        return self.gradient_checkpointing_enable(enabled)

    @property
    def params(self):
        if self._params is None:
            raise InputError(f"{type(self).__name__} was built with _do_init=False: set .params or call init_weights")
        return self._params

    @params.setter
    def params(self, params):
        self._params = params

    def init_weights(self, rng, input_shape: tuple | None = None, params: dict | None = None) -> dict:
        """Reference initialisation: normal(0, initializer_range) matrices, zero biases, unit LayerNorm,
        zero padding row; leaves present in ``params`` are kept (a head added to a loaded encoder).

        Like PyTorch's ``init_weights`` this goes by rule over the leaves (their shapes from
        :meth:`abstract_params`), drawing from a numpy generator seeded by ``rng``: running
        ``module.init`` would compile the whole forward pass just to throw its result away.

        Example:
            >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
            ...                      num_attention_heads=4, intermediate_size=64)
            >>> model = RoFormerForMaskedLM(cfg, _do_init=False)
            >>> params = model.init_weights(jax.random.PRNGKey(0), (1, 4))
            >>> params["cls"]["predictions"]["bias"].shape
            (100,)
        """
        given = flatten_dict(params) if params is not None else {}
        generator = np.random.default_rng(np.asarray(jax.random.key_data(rng)).ravel())
        std = self.config.initializer_range
        word_embeddings = ("embeddings", "word_embeddings", "embedding")
        if self.head != "model":
            word_embeddings = ("roformer",) + word_embeddings
        flat = {}
        for path, leaf in flatten_dict(self.abstract_params(input_shape)).items():
            if path in given:
                flat[path] = given[path]
                continue
            if path[-1] in ("kernel", "embedding"):
                value = generator.normal(0.0, std, leaf.shape)
                if path == word_embeddings:  # the reference zeroes the padding row
                    value[self.config.pad_token_id] = 0
            else:  # biases (the LM bias too) are zero, LayerNorm scales one
                value = np.full(leaf.shape, 1.0 if path[-1] == "scale" else 0.0)
            flat[path] = jnp.asarray(value, dtype=leaf.dtype)
        return unflatten_dict(flat)

    def abstract_params(self, input_shape: tuple | None = None) -> dict:
        """The params' shapes and dtypes (``jax.ShapeDtypeStruct`` leaves), traced without computing anything."""
        input_shape = tuple(input_shape or self.input_shape)
        if ("abstract", input_shape) not in self._cache:
            module = self.module

            def init():
                key = jax.random.PRNGKey(0)
                return module.init({"params": key, "dropout": key}, jnp.zeros(input_shape, jnp.int32))["params"]
            self._cache["abstract", input_shape] = jax.eval_shape(init)
        return self._cache["abstract", input_shape]

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, params=None,
                 dropout_rng=None, train: bool = False, output_attentions: bool = False,
                 output_hidden_states: bool = False, return_dict: bool = True, **kwargs):
        """Run the model; ``kwargs`` are the head's extra inputs (``labels``, ``past_key_values`` ...).

        ``train=True`` turns dropout on and needs ``dropout_rng`` when the config has dropout.
        Like the reference, this runs ``module.apply`` eagerly and checks concrete ids; for speed
        wrap it, params passed in: ``jax.jit(lambda p, ids: model(ids, params=p).logits)``.
        """
        if train and dropout_rng is None and (self.config.hidden_dropout_prob > 0
                                              or self.config.attention_probs_dropout_prob > 0):
            raise InputError("train=True with dropout in the config needs dropout_rng (a jax.random key)")
        arrays = {k: _as_array(v) for k, v in kwargs.items()}
        input_ids, attention_mask, token_type_ids = (_as_array(x) for x in (input_ids, attention_mask, token_type_ids))
        # the whole call, labels included, on the concrete arrays: the module only sees shapes under jit
        check_inputs(self.config, input_ids, attention_mask, token_type_ids, arrays.get("inputs_embeds"), None,
                     self.head, arrays.get("encoder_hidden_states"),
                     **{k: arrays[k] for k in LABEL_INPUTS + ("prediction_mask",) if arrays.get(k) is not None})
        if self.head == "masked_lm":
            first = input_ids if input_ids is not None else arrays.get("inputs_embeds")
            check_masked_inputs(self.config, {k: _facts("labels" if k == "masked_labels" else k, arrays[k])
                                              for k in MASKED_INPUTS if arrays.get(k) is not None},
                                tuple(first.shape[:2]), arrays.get("labels") is not None,
                                arrays.get("prediction_mask") is not None)
        prediction_mask = arrays.pop("prediction_mask", None)
        if prediction_mask is not None:  # a data-dependent count: resolved here, on the concrete mask
            arrays["prediction_positions"] = tuple(jnp.asarray(i) for i in np.nonzero(np.asarray(prediction_mask)))
        return self.module.apply({"params": self.params if params is None else params}, input_ids,
                                 attention_mask, token_type_ids, _as_array(head_mask),
                                 output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                 return_dict=return_dict, deterministic=not train,
                                 rngs={} if dropout_rng is None else {"dropout": dropout_rng}, **arrays)

    @classmethod
    def from_config(cls, config: RoFormerConfig, dtype=jnp.float32, param_dtype=jnp.float32, seed: int = 0,
                    add_pooling_layer: bool | None = None, gradient_checkpointing: bool = False):
        """A freshly initialised model.

        Example:
            >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
            ...                      num_attention_heads=4, intermediate_size=64)
            >>> RoFormerModel.from_config(cfg).params["embeddings"]["word_embeddings"]["embedding"].shape
            (100, 32)
            >>> RoFormerModel.from_config(cfg, add_pooling_layer=True).params["pooler"]["dense"]["kernel"].shape
            (32, 32)
        """
        return cls(config, seed=seed, dtype=dtype, param_dtype=param_dtype, add_pooling_layer=add_pooling_layer,
                   gradient_checkpointing=gradient_checkpointing)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype=jnp.float32, param_dtype=None,
                        config: RoFormerConfig | None = None, seed: int = 0, **kwargs):
        """Load a checkpoint: a folder (canonical safetensors, shards, ``flax_model.msgpack``,
        ``pytorch_model.bin``, ``tf_model.h5``), a weights file, or a hub id (``revision=`` ...).

        ``dtype`` is the computation dtype; ``param_dtype=None`` keeps the stored float dtype.
        Other keyword arguments override config fields (``num_labels=3`` ...). A bare-model
        checkpoint loads into a head model (the head is initialised, and a warning says so).

        Example:
            >>> import tempfile
            >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
            ...                      num_attention_heads=4, intermediate_size=64)
            >>> d = tempfile.mkdtemp(); RoFormerForMaskedLM.from_config(cfg).save_pretrained(d)
            >>> model = RoFormerForMaskedLM.from_pretrained(d, dtype=jnp.bfloat16)
            >>> model(np.array([[2, 5, 3]])).logits.dtype
            dtype(bfloat16)
        """
        return LIFECYCLE.load(cls, path, config, dict(dtype=dtype, param_dtype=param_dtype, seed=seed),
                              **kwargs)

    def save_pretrained(self, directory: str | os.PathLike, params=None, flax_msgpack: bool = False) -> None:
        """Write ``config.json`` + ``model.safetensors`` (canonical names, the params' dtype), atomically.

        ``params`` defaults to ``self.params`` (pass unreplicated params after pmap training);
        ``flax_msgpack=True`` also writes ``flax_model.msgpack`` for the reference Flax classes.
        """
        params = self.params if params is None else params
        extra = None
        if flax_msgpack:
            def extra(tmp: str) -> None:
                with open(os.path.join(tmp, MSGPACK_NAME), "wb") as fh:
                    fh.write(serialization.msgpack_serialize(jax.tree.map(np.asarray, params)))
        LIFECYCLE.save(self, directory, extra_files=extra, params=params)
        stale = os.path.join(os.fspath(directory), MSGPACK_NAME)
        if not flax_msgpack and os.path.exists(stale):  # older weights beside the new ones would mislead readers
            os.remove(stale)


def _as_array(x):
    """Array-likes (numpy, lists) become jax arrays; pytrees (caches) and None pass through."""
    if x is None or isinstance(x, (jax.Array, tuple, dict)):
        return x
    return jnp.asarray(x)


def _concrete(x) -> bool:
    return x is not None and not isinstance(x, jax.core.Tracer)


def check_inputs(config: RoFormerConfig, input_ids, attention_mask, token_type_ids, inputs_embeds,
                 past_length: int | None = 0, head: str = "model", encoder_hidden_states=None, **labels) -> None:
    """One clear :class:`InputError` for missing, mistyped or mis-shaped inputs or labels
    (``roformer_core.inputs.validate_inputs``). Values are checked only when concrete: under
    ``jax.jit`` they are unknown until run (``make_train_step`` checks each batch on the host)."""
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids, **labels}
    facts = {k: _facts(k, v) for k, v in arrays.items() if v is not None}
    if inputs_embeds is not None:
        facts["inputs_embeds"] = ArrayFacts(tuple(inputs_embeds.shape), False)
    validate_inputs(config, head, facts, past_length, encoder_hidden_states is not None)


def _facts(name: str, x) -> ArrayFacts:
    integer = bool(jnp.issubdtype(x.dtype, jnp.integer))
    return ArrayFacts.of(np.asarray(x) if integer and _concrete(x) else None, tuple(x.shape), integer, name)


#: the masked LM's fixed-shape inputs: positions to predict [batch, P], their labels and weights
def _check_cache_room(cache_index, seq_length: int, capacity: int) -> None:
    """A fixed cache buffer must hold the new positions (checked when ``cache_index`` is concrete):
    past its end, ``dynamic_update_slice`` would silently overwrite the last positions."""
    if _concrete(cache_index) and not 0 <= int(cache_index) <= capacity - seq_length:
        raise InputError(f"the cache holds {capacity} positions; cache_index {int(cache_index)} + {seq_length} new "
                         f"tokens do not fit (make a larger one with init_cache)")


def _extended_mask(attention_mask, input_shape, offset, key_length: int, is_decoder: bool, dtype,
                   unilm_types=None):
    """Additive mask [batch, 1, q, k] (or [batch, 1, 1, k]); None when nothing is masked.

    ``unilm_types`` (the new tokens' token types, ``config.unilm``) replaces the causal mask by
    the UniLM one (``roformer_core.generation.unilm_attention_mask``). Cumulative sums only grow,
    so a cached position never has a larger one than a new token: cached positions are always
    visible, and the new tokens compare the cumulative sums of their own types, which is why
    incremental decoding equals the one-pass forward without the cache's token types.
    """
    batch, seq = input_shape
    mask = None
    if attention_mask is not None:
        mask = attention_mask[:, None, :, :] if attention_mask.ndim == 3 else attention_mask[:, None, None, :]
        mask = mask.astype(bool)
    if unilm_types is not None:
        idx = jnp.cumsum(unilm_types, axis=-1)
        new = idx[:, None, :] <= idx[:, :, None]
        # a fixed buffer's unwritten positions (past offset + seq) are never visible
        cached = jnp.broadcast_to((jnp.arange(key_length) < offset)[None, None, :], (new.shape[0], seq, key_length))
        unilm = lax.dynamic_update_slice(cached, new, (0, 0, offset))[:, None]
        mask = unilm if mask is None else mask & unilm
    elif is_decoder:  # each query sees the cache and itself and what came before
        q = offset + jnp.arange(seq)[:, None]
        causal = (jnp.arange(key_length)[None, :] <= q)[None, None]
        mask = causal if mask is None else mask & causal
    if mask is None:
        return None
    return jnp.where(mask, 0.0, jnp.finfo(dtype).min).astype(dtype)


def _head_mask(head_mask, num_layers: int, dtype):
    """[heads] or [layers, heads] -> [layers, 1, heads, 1, 1] (or None)."""
    if head_mask is None:
        return None
    if head_mask.ndim == 1:
        head_mask = jnp.broadcast_to(head_mask[None], (num_layers, head_mask.shape[0]))
    return head_mask[:, None, :, None, None].astype(dtype)


# -- the models ---------------------------------------------------------------------------
class RoFormerModule(_Module):
    """The bare RoFormer encoder (or decoder, with ``is_decoder``) as a linen Module.

    ``past_key_values`` is a growing cache (new keys appended); with ``cache_index`` it is a
    fixed-size buffer (``RoFormerForCausalLM.init_cache``) written at that index, which may be
    a traced value, so one jitted decoding step serves every position.
    """

    def setup(self):
        self.embeddings = self._child(RoFormerEmbeddings)
        if self.config.embedding_size != self.config.hidden_size:
            self.embeddings_project = self._linear(self.config.hidden_size)
        self.encoder = self._child(RoFormerEncoder)
        if self.config.add_pooling_layer:
            self.pooler = self._child(RoFormerPooler)

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                 encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None, cache_index=None,
                 use_cache=None, output_attentions=False, output_hidden_states=False, return_dict=True,
                 deterministic: bool = True):
        first = input_ids if input_ids is not None else inputs_embeds
        seq_length = first.shape[1] if first is not None and first.ndim > 1 else 0  # bad shapes: check_inputs says
        offset, key_length = _cache_positions(past_key_values, cache_index, seq_length)
        check_inputs(self.config, input_ids, attention_mask, token_type_ids, inputs_embeds, key_length - seq_length,
                     encoder_hidden_states=encoder_hidden_states)
        if cache_index is not None:
            _check_cache_room(cache_index, seq_length, key_length)
        c = self.config
        use_cache = (c.is_decoder or c.unilm) and (c.use_cache if use_cache is None else use_cache)
        hidden = self.embeddings(input_ids, token_type_ids, inputs_embeds, deterministic)
        if self.config.embedding_size != self.config.hidden_size:
            hidden = self.embeddings_project(hidden)
        unilm_types = None
        if c.unilm:  # no token types: all segment 0, bidirectional (the cached positions stay visible)
            unilm_types = token_type_ids if token_type_ids is not None else jnp.zeros(hidden.shape[:2], jnp.int32)
        mask = _extended_mask(attention_mask, hidden.shape[:2], offset, key_length, c.is_decoder, self.dtype,
                              unilm_types)
        encoder_mask = None
        if encoder_hidden_states is not None and encoder_attention_mask is not None:
            encoder_mask = _extended_mask(encoder_attention_mask, encoder_hidden_states.shape[:2], 0,
                                          encoder_hidden_states.shape[1], False, self.dtype)
        out = self.encoder(hidden, mask, _head_mask(head_mask, self.config.num_hidden_layers, self.dtype),
                           encoder_hidden_states, encoder_mask, past_key_values, cache_index, use_cache,
                           output_attentions, output_hidden_states, deterministic)
        if self.config.add_pooling_layer:
            out.pooler_output = self.pooler(out.last_hidden_state)
        return out if return_dict else out.to_tuple()


class RoFormerModel(RoFormerPreTrainedModel):
    """The bare RoFormer encoder (or decoder, with ``is_decoder``).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> model = RoFormerModel.from_config(cfg)
        >>> model(np.array([[2, 5, 7, 3]])).last_hidden_state.shape
        (1, 4, 32)
    """

    head = "model"
    module_class = RoFormerModule


class RoFormerForMaskedLMModule(_Module):
    """The linen Module of :class:`RoFormerForMaskedLM` (its ``.module``)."""

    def setup(self):
        self.roformer = self._child(RoFormerModule)
        self.cls = self._child(RoFormerOnlyMLMHead)

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                 labels=None, output_attentions=False, output_hidden_states=False, return_dict=True,
                 prediction_positions=None, masked_positions=None, masked_labels=None, masked_weights=None,
                 deterministic: bool = True):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                            deterministic=deterministic)
        sequence = out.last_hidden_state
        weights = None
        if masked_positions is not None:  # [batch, P], a static shape: jit, pmap and XLA take it as it is
            given = {"masked_positions": masked_positions, "masked_labels": masked_labels,
                     "masked_weights": masked_weights}
            check_masked_inputs(self.config, {k: _facts("labels" if k == "masked_labels" else k, v)
                                              for k, v in given.items() if v is not None},
                                tuple(sequence.shape[:2]), labels is not None, prediction_positions is not None)
            sequence = jnp.take_along_axis(sequence, masked_positions[..., None].astype(jnp.int32), axis=1)
            labels, weights = masked_labels, masked_weights
        elif prediction_positions is not None:  # (rows, cols) of the positions to predict
            rows, cols = prediction_positions
            sequence = sequence[rows, cols]
            labels = labels[rows, cols] if labels is not None and labels.ndim > 1 else labels
        logits = self.cls(sequence, self.roformer.embeddings.word_embeddings.embedding)
        loss = token_cross_entropy(logits, labels, weights) if labels is not None else None
        result = MaskedLMOutput(loss, logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


class RoFormerForMaskedLM(RoFormerPreTrainedModel):
    """RoFormer with the masked-language-model head.

    ``prediction_mask`` (bool [batch, seq]) computes vocabulary logits only where it is True,
    returning ``[num_true, vocab]`` (the module takes the positions, ``prediction_positions=
    np.nonzero(mask)``, since a data-dependent count cannot be traced).

    Training, the fixed-shape way (``roformer_core.collator.MaskedLMCollator`` makes these):
    ``masked_positions`` (int [batch, P], padded) are the positions to predict, ``masked_labels``
    ([batch, P], -100 at padding) their labels and ``masked_weights`` (float [batch, P], 0 at
    padding, optional) their weights in the loss; the transform and the vocabulary projection run
    only there and ``logits`` is ``[batch, P, vocab]``. The shapes are static, so this works under
    ``jax.jit``, ``pmap`` and :func:`roformer_flax.training.make_train_step` (whose loss reads
    ``masked_labels``/``masked_weights`` from the batch); the loss is the full-sequence loss on
    the same labels.

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> model = RoFormerForMaskedLM.from_config(cfg)
        >>> ids = np.array([[2, 5, 4, 3]])
        >>> model(ids).logits.shape, model(ids, prediction_mask=ids == 4).logits.shape
        ((1, 4, 100), (1, 100))
        >>> out = model(ids, masked_positions=np.array([[2, 0]]), masked_labels=np.array([[7, -100]]))
        >>> full = model(ids, labels=np.array([[-100, -100, 7, -100]]))
        >>> out.logits.shape, abs(float(out.loss - full.loss)) < 1e-6
        ((1, 2, 100), True)
    """

    head = "masked_lm"
    module_class = RoFormerForMaskedLMModule


class RoFormerForCausalLMModule(_Module):
    """The linen Module of :class:`RoFormerForCausalLM` (its ``.module``)."""

    def setup(self):
        self.roformer = self._child(RoFormerModule)
        self.cls = self._child(RoFormerOnlyMLMHead)

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                 encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None, labels=None,
                 use_cache=None, output_attentions=False, output_hidden_states=False, return_dict=True,
                 cache_index=None, deterministic: bool = True):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            encoder_hidden_states, encoder_attention_mask, past_key_values, cache_index, use_cache,
                            output_attentions, output_hidden_states, deterministic=deterministic)
        logits = self.cls(out.last_hidden_state, self.roformer.embeddings.word_embeddings.embedding)
        loss = shifted_token_cross_entropy(logits, labels) if labels is not None else None
        result = CausalLMOutput(loss, logits, out.past_key_values, out.hidden_states, out.attentions,
                                out.cross_attentions, out.pooler_output)
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
        >>> model = RoFormerForCausalLM.from_config(cfg)
        >>> model.generate(np.array([[2, 5]]), max_new_tokens=3).shape
        (1, 5)
        >>> sim = RoFormerForCausalLM.from_config(cfg.replace(unilm=True), add_pooling_layer=True)
        >>> sim.generate(np.array([[2, 5, 3]]), max_new_tokens=4, do_sample=True, top_p=0.9,
        ...              num_return_sequences=3, seed=0).shape
        (3, 7)
    """

    head = "causal_lm"
    module_class = RoFormerForCausalLMModule

    def __init__(self, config: RoFormerConfig, *args, **kwargs):
        if not (config.is_decoder or config.unilm):
            warnings.warn("RoFormerForCausalLM with is_decoder=False has no causal mask; set is_decoder=True "
                          "(or unilm=True for UniLM seq2seq)", stacklevel=2)
        super().__init__(config, *args, **kwargs)

    def init_cache(self, batch_size: int, max_length: int):
        """Zero key/value buffers for ``max_length`` positions, to use with ``cache_index``.

        Example:
            >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
            ...                      num_attention_heads=4, intermediate_size=64, is_decoder=True)
            >>> model = RoFormerForCausalLM.from_config(cfg)
            >>> cache = model.init_cache(1, 8)
            >>> out = model(np.array([[2, 5]]), np.array([[1, 1] + [0] * 6]), past_key_values=cache, cache_index=0)
            >>> out.past_key_values[0][0].shape
            (1, 4, 8, 8)
        """
        c = self.config
        zeros = jnp.zeros((batch_size, c.num_attention_heads, max_length, c.head_dim), self.dtype)
        return tuple((zeros, zeros) for _ in range(c.num_hidden_layers))

    def _decode_step(self):
        """One jitted step over fixed-size buffers: compiled once for the prompt, once for single tokens."""
        if "decode" not in self._cache:
            module = self.module  # not self: the shared cache must not keep this model's params alive

            def step(params, ids, mask, types, cache, index, encoder_hidden_states, encoder_attention_mask):
                out = module.apply({"params": params}, ids, mask, types, encoder_hidden_states=encoder_hidden_states,
                                   encoder_attention_mask=encoder_attention_mask, past_key_values=cache,
                                   cache_index=index, use_cache=True)
                return out.logits[:, -1].astype(jnp.float32), out.past_key_values
            self._cache["decode"] = jax.jit(step)
        return self._cache["decode"]

    def generate(self, input_ids, attention_mask=None, max_new_tokens: int = 20, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, eos_token_id=None, pad_token_id=None,
                 seed=None, encoder_hidden_states=None, encoder_attention_mask=None, token_type_ids=None,
                 num_return_sequences: int = 1, params=None) -> jax.Array:
        """Greedy or sampled continuation (temperature, top-k, top-p) using the key/value cache.

        ``num_return_sequences`` samples per prompt (rows ``i*n .. i*n+n-1`` for prompt i);
        ``token_type_ids`` are the prompt's; with ``config.unilm`` new tokens get type 1
        (paraphrase generation: the prompt is the source). Tokens are chosen in
        ``roformer_core.generation``, so every backend picks the same ones for a seed.
        """
        ids = np.asarray(input_ids)
        types = None if token_type_ids is None else np.asarray(token_type_ids)
        # the decode step is compiled: out-of-range ids would give garbage there, not an error
        check_inputs(self.config, ids, None if attention_mask is None else np.asarray(attention_mask), types, None)
        capacity = ids.shape[1] + max_new_tokens
        step_fn = self._decode_step()
        params = self.params if params is None else params
        enc = _as_array(encoder_hidden_states)
        enc_mask = _as_array(encoder_attention_mask)
        if num_return_sequences > 1 and enc is not None:  # one copy per returned sequence, like the prompts
            enc = jnp.repeat(enc, num_return_sequences, axis=0)
            enc_mask = None if enc_mask is None else jnp.repeat(enc_mask, num_return_sequences, axis=0)

        def step(new_ids, mask, past, token_type_ids=None):
            batch = new_ids.shape[0]
            cache, index = past if past is not None else (self.init_cache(batch, capacity), 0)
            full_mask = np.zeros((batch, capacity), np.int32)  # fixed shape: one compiled step for every position
            full_mask[:, :mask.shape[1]] = mask
            new_types = np.zeros_like(new_ids) if token_type_ids is None else token_type_ids
            logits, cache = step_fn(params, jnp.asarray(new_ids, jnp.int32), jnp.asarray(full_mask),
                                    jnp.asarray(new_types, jnp.int32), cache, jnp.asarray(index, jnp.int32), enc,
                                    enc_mask)
            return np.asarray(logits), (cache, index + new_ids.shape[1])

        out = generate_loop(step, input_ids, None if attention_mask is None else np.asarray(attention_mask),
                            max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                            top_k=top_k, top_p=top_p, eos_token_id=eos_token_id,
                            pad_token_id=self.config.pad_token_id if pad_token_id is None else pad_token_id,
                            seed=seed, token_type_ids=types, new_token_type=1 if self.config.unilm else None,
                            num_return_sequences=num_return_sequences)
        return jnp.asarray(out)


class RoFormerForSequenceClassificationModule(_Module):
    """The linen Module of :class:`RoFormerForSequenceClassification` (its ``.module``)."""

    def setup(self):
        self.roformer = self._child(RoFormerModule)
        self.classifier = self._child(RoFormerClassificationHead)

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                 labels=None, output_attentions=False, output_hidden_states=False, return_dict=True,
                 deterministic: bool = True):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                            deterministic=deterministic)
        logits = self.classifier(out.last_hidden_state, deterministic)
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        result = SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


class RoFormerForSequenceClassification(RoFormerPreTrainedModel):
    """RoFormer with a sentence-level head on the first token (regression, single- or multi-label).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64, num_labels=3)
        >>> RoFormerForSequenceClassification.from_config(cfg)(np.array([[2, 5, 3]])).logits.shape
        (1, 3)
    """

    head = "sequence_classification"
    module_class = RoFormerForSequenceClassificationModule


class RoFormerForMultipleChoiceModule(_Module):
    """The linen Module of :class:`RoFormerForMultipleChoice` (its ``.module``)."""

    def setup(self):
        self.roformer = self._child(RoFormerModule)
        self.classifier = self._linear(1)

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                 labels=None, output_attentions=False, output_hidden_states=False, return_dict=True,
                 deterministic: bool = True):
        check_inputs(self.config, input_ids, attention_mask, token_type_ids, inputs_embeds, head="multiple_choice")
        num_choices = (input_ids if input_ids is not None else inputs_embeds).shape[1]

        def flat(x):
            return None if x is None else x.reshape(-1, *x.shape[2:])

        out = self.roformer(flat(input_ids), flat(attention_mask), flat(token_type_ids), head_mask,
                            flat(inputs_embeds), output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states, deterministic=deterministic)
        # the reference summarises each choice by its LAST position, even when that is padding
        logits = self.classifier(out.last_hidden_state[:, -1]).reshape(-1, num_choices)
        loss = choice_cross_entropy(logits, labels) if labels is not None else None
        result = SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


class RoFormerForMultipleChoice(RoFormerPreTrainedModel):
    """RoFormer scoring each choice from its last position; inputs are [batch, choices, seq].

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> RoFormerForMultipleChoice.from_config(cfg)(np.array([[[2, 5, 3], [2, 6, 3]]])).logits.shape
        (1, 2)
    """

    head = "multiple_choice"
    module_class = RoFormerForMultipleChoiceModule
    dummy_shape = (1, 1, 1)


class RoFormerForTokenClassificationModule(_Module):
    """The linen Module of :class:`RoFormerForTokenClassification` (its ``.module``)."""

    def setup(self):
        self.roformer = self._child(RoFormerModule)
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)
        self.classifier = self._linear(self.config.num_labels)

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                 labels=None, output_attentions=False, output_hidden_states=False, return_dict=True,
                 deterministic: bool = True):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                            deterministic=deterministic)
        logits = self.classifier(self.dropout(out.last_hidden_state, deterministic=deterministic))
        loss = token_cross_entropy(logits, labels) if labels is not None else None
        result = TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


class RoFormerForTokenClassification(RoFormerPreTrainedModel):
    """RoFormer with a per-token classifier (NER, POS tagging).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64, num_labels=5)
        >>> RoFormerForTokenClassification.from_config(cfg)(np.array([[2, 5, 3]])).logits.shape
        (1, 3, 5)
    """

    head = "token_classification"
    module_class = RoFormerForTokenClassificationModule


class RoFormerForQuestionAnsweringModule(_Module):
    """The linen Module of :class:`RoFormerForQuestionAnswering` (its ``.module``)."""

    def setup(self):
        self.roformer = self._child(RoFormerModule)
        self.qa_outputs = self._linear(2)

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
                 start_positions=None, end_positions=None, output_attentions=False, output_hidden_states=False,
                 return_dict=True, deterministic: bool = True):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                            deterministic=deterministic)
        logits = self.qa_outputs(out.last_hidden_state)
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_cross_entropy(start_logits, end_logits, start_positions, end_positions)
        result = QuestionAnsweringModelOutput(loss, start_logits, end_logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


class RoFormerForQuestionAnswering(RoFormerPreTrainedModel):
    """RoFormer with span start/end logits (extractive QA).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> out = RoFormerForQuestionAnswering.from_config(cfg)(np.array([[2, 5, 3]]))
        >>> out.start_logits.shape, out.end_logits.shape
        ((1, 3), (1, 3))
    """

    head = "question_answering"
    module_class = RoFormerForQuestionAnsweringModule


MODEL_CLASSES = {cls.head: cls for cls in (
    RoFormerModel, RoFormerForMaskedLM, RoFormerForCausalLM, RoFormerForSequenceClassification,
    RoFormerForMultipleChoice, RoFormerForTokenClassification, RoFormerForQuestionAnswering)}

# the names people know from the reference Flax classes
FlaxRoFormerPreTrainedModel = RoFormerPreTrainedModel
FlaxRoFormerModel = RoFormerModel
FlaxRoFormerForMaskedLM = RoFormerForMaskedLM
FlaxRoFormerForCausalLM = RoFormerForCausalLM
FlaxRoFormerForSequenceClassification = RoFormerForSequenceClassification
FlaxRoFormerForMultipleChoice = RoFormerForMultipleChoice
FlaxRoFormerForTokenClassification = RoFormerForTokenClassification
FlaxRoFormerForQuestionAnswering = RoFormerForQuestionAnswering
