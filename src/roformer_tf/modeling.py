"""RoFormer in Keras 3 (TensorFlow backend), top to bottom.

The same classes in the same order as ``roformer_torch.modeling``; read them side by side.
Every layer carries its torch attribute name as its Keras name (``name="LayerNorm"``) and
builds its children inside ``keras.name_scope(self.name)``, so each variable's ``path`` is
the layer names the reference TF classes use
(``ro_former_for_masked_lm/roformer/encoder/layer_0/attention/self/query/kernel``), and
``roformer_core.checkpoint.to_canonical_name`` maps it to the canonical checkpoint name
(:meth:`RoFormerPreTrainedModel.named_variables`). Blocks are built at construction: the
shapes come from the config.

The Keras face of the models (the reference TF input forms, ``compile()`` without a loss,
``.keras`` files, ``export``) is ``roformer_tf.keras_api.KerasModelAPI``, which
:class:`RoFormerPreTrainedModel` inherits.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Optional

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # XLA's context: no public test

from roformer_core.checkpoint import to_canonical_name
from roformer_core.config import RoFormerConfig, with_pooler
from roformer_core.errors import InputError
from roformer_core.generation import generate as generate_loop
from roformer_core.heads import HEAD_TABLE, problem_type
from roformer_tf.adapter import LIFECYCLE
from roformer_tf.keras_api import KerasModelAPI, register_serializable
from roformer_core.outputs import (BaseModelOutput, CausalLMOutput, MaskedLMOutput, QuestionAnsweringModelOutput,
                                   SequenceClassifierOutput, TokenClassifierOutput)
from roformer_core.rotary import rotary_sin_cos, table_rows

ACT2FN = {
    "gelu": lambda x: keras.activations.gelu(x, approximate=False),
    "gelu_new": lambda x: keras.activations.gelu(x, approximate=True),
    "relu": keras.activations.relu,
    "selu": keras.activations.selu,
    "silu": keras.activations.silu,
}
#: the pooler's activations (``config.pooler_activation``): tanh as in BERT, none for RoFormer-Sim
POOLER_ACT2FN = {"tanh": keras.activations.tanh, "linear": keras.activations.linear, **ACT2FN}


# -- Keras building blocks, built at construction (shapes come from the config) -------------
def _initializer(config: RoFormerConfig):
    return keras.initializers.RandomNormal(mean=0.0, stddev=config.initializer_range)


def _in_xla() -> bool:
    """Whether the code being traced is compiled by XLA (``jit_compile=True``), where shapes must be static."""
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def matmul(x, kernel, transpose_b: bool = False):
    """``x @ kernel`` over the last axis of ``x`` (``kernel``: [in, out], or [out, in] with ``transpose_b``),
    as one 2-D product. Under XLA with bfloat16 operands (mixed precision) every product of the forward and
    the backward pass takes bfloat16 and accumulates in float32, as ``roformer_flax.modeling.matmul`` does:
    XLA:CPU runs that form on the AVX-512 BF16 units, while its bfloat16 product with a bfloat16 result is
    no faster than float32. Outside XLA, oneDNN's bfloat16 product is already the fast one.

    Example:
        >>> x, k = tf.ones((2, 5, 3), tf.bfloat16), tf.ones((4, 3), tf.bfloat16)
        >>> y = tf.function(lambda x, k: matmul(x, k, transpose_b=True), jit_compile=True)(x, k)
        >>> y.shape, y.dtype.name, float(y[0, 0, 0])
        (TensorShape([2, 5, 4]), 'bfloat16', 3.0)
    """
    shape = _shape_list(x)
    flat = tf.reshape(x, [-1, shape[-1]])
    if x.dtype == tf.bfloat16 and kernel.dtype == tf.bfloat16 and _in_xla():
        out = _bf16_matmul(flat, kernel, transpose_b)
    else:
        out = tf.matmul(flat, kernel, transpose_b=transpose_b)
    return tf.reshape(out, shape[:-1] + [out.shape[-1]])


def _f32_accumulated(a, b, adj_x=False, adj_y=False):
    return tf.raw_ops.BatchMatMulV3(x=a, y=b, Tout=tf.float32, adj_x=adj_x, adj_y=adj_y)


def _bf16_matmul(x, kernel, transpose_b):
    """[rows, in] x kernel in bfloat16 with float32 accumulation, forward and backward (XLA only: TensorFlow
    has no such kernel outside it). TensorFlow's own gradient would multiply in bfloat16 with a bfloat16 result."""

    @tf.custom_gradient
    def product(x, kernel):
        def grad(g):
            grad_x = _f32_accumulated(g, kernel, adj_y=not transpose_b)
            # the kernel's gradient in the kernel's own layout: no transpose of a [vocab, hidden] gradient
            grad_kernel = _f32_accumulated(g, x, adj_x=True) if transpose_b else _f32_accumulated(x, g, adj_x=True)
            return tf.cast(grad_x, x.dtype), tf.cast(grad_kernel, kernel.dtype)

        return tf.cast(_f32_accumulated(x, kernel, adj_y=transpose_b), x.dtype), grad

    return product(x, kernel)


class _Dense(keras.layers.Dense):
    """``keras.layers.Dense`` whose product is :func:`matmul` (bfloat16 accumulated in float32 under XLA);
    the same variables, names and initializers. Quantized or LoRA layers keep Keras' own call.

    Example:
        >>> layer = _Dense(4, name="query")
        >>> layer(tf.ones((2, 5, 3))).shape, [v.path for v in layer.weights]
        (TensorShape([2, 5, 4]), ['query/kernel', 'query/bias'])
    """

    def call(self, inputs, training=None):
        if self.quantization_mode is not None or self.lora_enabled:
            return super().call(inputs, training=training)
        x = matmul(inputs, self.kernel)
        if self.bias is not None:
            x = x + self.bias
        return x if self.activation is None else self.activation(x)


def _dense(config: RoFormerConfig, in_dim: int, units: int, name: str, dtype, use_bias: bool = True):
    layer = _Dense(units, use_bias=use_bias, kernel_initializer=_initializer(config), name=name, dtype=dtype)
    layer.build((None, in_dim))
    return layer


def _embedding(config: RoFormerConfig, rows: int, name: str, dtype):
    layer = keras.layers.Embedding(rows, config.embedding_size, embeddings_initializer=_initializer(config),
                                   name=name, dtype=dtype)
    layer.build()
    return layer


def _layer_norm(config: RoFormerConfig, dim: int, dtype, name: str = "LayerNorm"):
    layer = keras.layers.LayerNormalization(epsilon=config.layer_norm_eps, name=name, dtype=dtype)
    layer.build((None, dim))
    return layer


def _shape_list(x) -> list:
    """Static dimensions where known, dynamic ones (graph mode) elsewhere."""
    static = x.shape.as_list()
    dynamic = tf.shape(x)
    return [dynamic[i] if d is None else d for i, d in enumerate(static)]


class RMSNorm(keras.layers.Layer):
    """RoFormer-V2's norm: ``x / sqrt(mean(x^2) + eps)`` over the last axis, no parameters (float32 inside).

    Example:
        >>> norm = RMSNorm(1e-12)
        >>> norm(np.array([[3.0, -3.0]], np.float32)).numpy().tolist(), norm.weights
        ([[1.0, -1.0]], [])
    """

    def __init__(self, eps: float, **kwargs):
        super().__init__(**kwargs)
        self.eps = eps
        self.built = True

    def call(self, x):
        h = tf.cast(x, tf.float32)
        return tf.cast(h * tf.math.rsqrt(tf.reduce_mean(tf.square(h), axis=-1, keepdims=True) + self.eps), x.dtype)


def make_norm(config: RoFormerConfig, dim: int, dtype, name: str = "LayerNorm") -> keras.layers.Layer:
    """The norm of ``config.norm_type``: LayerNorm (V1) or the parameter-free RMS norm (V2), named ``LayerNorm``.

    Example:
        >>> type(make_norm(RoFormerConfig(norm_type="rms_norm"), 8, "float32")).__name__
        'RMSNorm'
    """
    if config.norm_type == "rms_norm":
        return RMSNorm(config.layer_norm_eps, name=name, dtype=dtype)
    return _layer_norm(config, dim, dtype, name)


# -- encoder ------------------------------------------------------------------------------
class RoFormerEmbeddings(keras.layers.Layer):
    """word + token-type embeddings -> norm -> dropout (no position embedding: RoPE)."""

    def __init__(self, config: RoFormerConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        with keras.name_scope(self.name):
            self.word_embeddings = _embedding(config, config.vocab_size, "word_embeddings", dtype)
            self.token_type_embeddings = _embedding(config, config.type_vocab_size, "token_type_embeddings", dtype)
            self.LayerNorm = make_norm(config, config.embedding_size, dtype)
            self.dropout = keras.layers.Dropout(config.hidden_dropout_prob, dtype=dtype)
        self.built = True

    def call(self, input_ids=None, token_type_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if token_type_ids is None:
            token_type_ids = tf.zeros(_shape_list(inputs_embeds)[:-1], dtype=tf.int32)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))


def rotate_pairs(x: tf.Tensor) -> tf.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) on the last axis."""
    shape = _shape_list(x)
    pairs = tf.reshape(x, shape[:-1] + [shape[-1] // 2, 2])
    # a reverse and a sign, not two strided slices: their gradient (StridedSliceGrad) took ~8% of a training step
    return tf.reshape(tf.reverse(pairs, [-1]) * tf.constant([-1, 1], x.dtype), shape)


def apply_rotary(x: tf.Tensor, sin: tf.Tensor, cos: tf.Tensor) -> tf.Tensor:
    """Rotate ``x`` [batch, heads, seq, head_dim] by the angles of its positions."""
    return x * cos + rotate_pairs(x) * sin


class RoFormerSelfAttention(keras.layers.Layer):
    """Multi-head attention with rotary q/k (and v when ``rotary_value``); also cross-attention."""

    def __init__(self, config: RoFormerConfig, is_cross_attention: bool = False, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        with keras.name_scope(self.name):
            self.query = _dense(config, config.hidden_size, config.hidden_size, "query", dtype, config.use_bias)
            self.key = _dense(config, config.hidden_size, config.hidden_size, "key", dtype, config.use_bias)
            self.value = _dense(config, config.hidden_size, config.hidden_size, "value", dtype, config.use_bias)
            self.dropout = keras.layers.Dropout(config.attention_probs_dropout_prob, dtype=dtype)
        self.rotary_value = config.rotary_value
        self.is_cross_attention = is_cross_attention
        self.built = True

    def split_heads(self, x: tf.Tensor) -> tf.Tensor:
        batch, seq, _ = _shape_list(x)
        return tf.transpose(tf.reshape(x, [batch, seq, self.num_heads, self.head_dim]), [0, 2, 1, 3])

    def call(self, hidden_states, attention_mask=None, sin_cos=None, head_mask=None, encoder_hidden_states=None,
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
                key = tf.concat([past_key_value[0], key], axis=2)
                value = tf.concat([past_key_value[1], value], axis=2)
        scores = tf.matmul(query, key, transpose_b=True) / math.sqrt(self.head_dim)
        if attention_mask is not None:
            scores = scores + attention_mask
        # softmax in float32 even under mixed precision: a bf16 exp-sum loses whole digits
        probs = tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1), scores.dtype)
        probs = self.dropout(probs)
        if head_mask is not None:
            probs = probs * head_mask
        context = tf.matmul(probs, value)
        batch, _, seq, _ = _shape_list(context)
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [batch, seq, self.num_heads * self.head_dim])
        return context, (probs if output_attentions else None), (key, value)


class RoFormerSelfOutput(keras.layers.Layer):
    """dense -> dropout -> residual -> norm."""

    def __init__(self, config: RoFormerConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        with keras.name_scope(self.name):
            self.dense = _dense(config, config.hidden_size, config.hidden_size, "dense", dtype, config.use_bias)
            self.LayerNorm = make_norm(config, config.hidden_size, dtype)
            self.dropout = keras.layers.Dropout(config.hidden_dropout_prob, dtype=dtype)
        self.built = True

    def call(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class RoFormerAttention(keras.layers.Layer):
    """Self (or cross) attention followed by its output block."""

    #: ``.weights.h5``/``.keras`` files written before the output block was ``output_block`` hold it
    #: under this name; Keras loads a layer again under its next attribute when the first one fails
    _output_for_saving = property(lambda self: self.output_block)

    def __init__(self, config: RoFormerConfig, is_cross_attention: bool = False, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        with keras.name_scope(self.name):
            self.self = RoFormerSelfAttention(config, is_cross_attention, name="self", dtype=dtype)
            # Keras' Layer.output is read-only: the block keeps its name "output" under another attribute
            self.output_block = RoFormerSelfOutput(config, name="output", dtype=dtype)
        self.built = True

    def call(self, hidden_states, attention_mask=None, sin_cos=None, head_mask=None, encoder_hidden_states=None,
             past_key_value=None, output_attentions=False):
        context, probs, present = self.self(hidden_states, attention_mask, sin_cos, head_mask, encoder_hidden_states,
                                            past_key_value, output_attentions=output_attentions)
        return self.output_block(context, hidden_states), probs, present


class RoFormerIntermediate(keras.layers.Layer):
    """dense -> activation."""

    def __init__(self, config: RoFormerConfig, **kwargs):
        super().__init__(**kwargs)
        with keras.name_scope(self.name):
            self.dense = _dense(config, config.hidden_size, config.intermediate_size, "dense", self.dtype_policy,
                                config.use_bias)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]
        self.built = True

    def call(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class RoFormerOutput(keras.layers.Layer):
    """dense -> dropout -> residual -> norm."""

    def __init__(self, config: RoFormerConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        with keras.name_scope(self.name):
            self.dense = _dense(config, config.intermediate_size, config.hidden_size, "dense", dtype, config.use_bias)
            self.LayerNorm = make_norm(config, config.hidden_size, dtype)
            self.dropout = keras.layers.Dropout(config.hidden_dropout_prob, dtype=dtype)
        self.built = True

    def call(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class RoFormerLayer(keras.layers.Layer):
    """attention -> (cross-attention) -> feed-forward, post-norm."""

    _output_for_saving = property(lambda self: self.output_block)  # see RoFormerAttention

    def __init__(self, config: RoFormerConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        with keras.name_scope(self.name):
            self.attention = RoFormerAttention(config, name="attention", dtype=dtype)
            if config.is_decoder and config.add_cross_attention:
                self.crossattention = RoFormerAttention(config, is_cross_attention=True, name="crossattention",
                                                        dtype=dtype)
            self.intermediate = RoFormerIntermediate(config, name="intermediate", dtype=dtype)
            self.output_block = RoFormerOutput(config, name="output", dtype=dtype)
        self.built = True

    def call(self, hidden_states, attention_mask=None, sin_cos=None, head_mask=None, encoder_hidden_states=None,
             encoder_attention_mask=None, past_key_value=None, output_attentions=False):
        self_past = past_key_value[:2] if past_key_value is not None else None
        hidden_states, self_probs, present = self.attention(
            hidden_states, attention_mask, sin_cos, head_mask, past_key_value=self_past,
            output_attentions=output_attentions)
        cross_probs = None
        if encoder_hidden_states is not None:  # RoFormerPreTrainedModel checked there is a crossattention
            cross_past = past_key_value[2:] if past_key_value is not None and len(past_key_value) == 4 else None
            hidden_states, cross_probs, cross_present = self.crossattention(
                hidden_states, encoder_attention_mask, None, head_mask, encoder_hidden_states, cross_past,
                output_attentions=output_attentions)
            present = present + cross_present
        hidden_states = self.output_block(self.intermediate(hidden_states), hidden_states)
        return hidden_states, self_probs, cross_probs, present


def _recompute_layer(layer, hidden_states, attention_mask, sin_cos, head_mask, encoder_hidden_states,
                     encoder_attention_mask):
    """``layer``'s training pass with its activations recomputed in the backward pass (``tf.recompute_grad``).

    What gradients flow to (hidden and encoder states, a head mask) are the recomputed function's
    arguments. Dropout draws its masks from seed states that advance on every draw, so they are
    read once here and set again at the start of each run: the recomputation draws the forward
    pass's masks, and the gradients are those of the pass that was run.
    """
    weights = {id(w) for w in layer.weights}
    seeds = [v for v in layer.variables if id(v) not in weights]  # the dropout layers' seed states
    start = [tf.identity(v.value) for v in seeds]
    given = [t for t in (encoder_hidden_states, head_mask) if t is not None]

    def run(hidden, *rest):
        rest = list(rest)
        encoder = rest.pop(0) if encoder_hidden_states is not None else None
        layer_head_mask = rest.pop(0) if head_mask is not None else None
        for variable, value in zip(seeds, start):
            variable.assign(value)
        return layer(hidden, attention_mask, sin_cos, layer_head_mask, encoder, encoder_attention_mask,
                     training=True)[0]

    return tf.recompute_grad(run)(hidden_states, *given)


class _RotaryTable:
    """Rotary sin/cos for any position, from two constant [rows, head_dim] tables.

    A position ``p = q * rows + r`` is the rotation by the angle of ``r`` (first table, the
    float64-exact rows of ``roformer_core.rotary``) times the rotation by the angle of
    ``q * rows`` (second table), combined with the angle-addition formulas. So the lookup is
    a gather that works in eager, graph and XLA code alike, also when the sequence length is
    only known at run time, for up to ``rows ** 2`` positions; for ``p < rows`` it returns
    the torch table's values bit for bit.
    """

    def __init__(self, rows: int, head_dim: int):
        sin, cos = rotary_sin_cos(rows + 1, head_dim, dtype=np.float64)
        step = cos[rows] + 1j * sin[rows]  # the rotation by the angle of position `rows`
        coarse = np.cumprod(np.concatenate([np.ones((1, head_dim)), np.repeat(step[None], rows - 1, axis=0)]), axis=0)
        self.rows = rows
        self.fine = (sin[:rows].astype(np.float32), cos[:rows].astype(np.float32))
        self.coarse = (coarse.imag.astype(np.float32), coarse.real.astype(np.float32))

    def sin_cos(self, positions, dtype):
        q, r = positions // self.rows, positions % self.rows
        fine_sin, fine_cos = (tf.gather(t, r) for t in self.fine)
        coarse_sin, coarse_cos = (tf.gather(t, q) for t in self.coarse)
        sin = coarse_sin * fine_cos + coarse_cos * fine_sin
        cos = coarse_cos * fine_cos - coarse_sin * fine_sin
        return tf.cast(sin, dtype), tf.cast(cos, dtype)


class RoFormerEncoder(keras.layers.Layer):
    """The stack of layers; owns the rotary table (a constant, never a variable)."""

    def __init__(self, config: RoFormerConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        with keras.name_scope(self.name):
            self.layer = [RoFormerLayer(config, name=f"layer_{i}", dtype=self.dtype_policy)
                          for i in range(config.num_hidden_layers)]
        self._rotary = _RotaryTable(table_rows(0, config.max_position_embeddings), config.head_dim)
        #: recompute each layer's activations in the backward pass instead of keeping them
        #: (``RoFormerPreTrainedModel.gradient_checkpointing_enable``)
        self.gradient_checkpointing = False
        self.built = True

    def sin_cos(self, past_length, seq_length, dtype):
        """Rotary sin/cos for positions ``past_length .. past_length + seq_length``."""
        rows = past_length + seq_length
        if isinstance(rows, int) and rows > self._rotary.rows ** 2:  # known now: grow the table
            self._rotary = _RotaryTable(table_rows(math.isqrt(rows - 1) + 1, self.config.max_position_embeddings),
                                        self.config.head_dim)
        return self._rotary.sin_cos(tf.range(past_length, rows), dtype)

    def call(self, hidden_states, attention_mask=None, head_mask=None, encoder_hidden_states=None,
             encoder_attention_mask=None, past_key_values=None, use_cache=False, output_attentions=False,
             output_hidden_states=False, training=None):
        past_length = _shape_list(past_key_values[0][0])[2] if past_key_values is not None else 0
        sin_cos = self.sin_cos(past_length, _shape_list(hidden_states)[1], hidden_states.dtype)
        # only a training pass keeps activations for the backward pass; the cache and attention maps are outputs
        recompute = (self.gradient_checkpointing and bool(training) and past_key_values is None and not use_cache
                     and not output_attentions)
        all_hidden, all_attn, all_cross, presents = [], [], [], []
        for i, layer in enumerate(self.layer):
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if recompute:
                hidden_states = _recompute_layer(layer, hidden_states, attention_mask, sin_cos,
                                                 None if head_mask is None else head_mask[i], encoder_hidden_states,
                                                 encoder_attention_mask)
                continue
            hidden_states, probs, cross, present = layer(
                hidden_states, attention_mask, sin_cos, None if head_mask is None else head_mask[i],
                encoder_hidden_states, encoder_attention_mask,
                None if past_key_values is None else past_key_values[i], output_attentions=output_attentions)
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
class RoFormerPredictionHeadTransform(keras.layers.Layer):
    """dense(H -> E) -> activation -> LayerNorm(E)."""

    def __init__(self, config: RoFormerConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        with keras.name_scope(self.name):
            self.dense = _dense(config, config.hidden_size, config.embedding_size, "dense", dtype)
            self.transform_act_fn = ACT2FN[config.hidden_act]
            self.LayerNorm = _layer_norm(config, config.embedding_size, dtype)
        self.built = True

    def call(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


def _sparse_rows_matmul(x, weight):
    """``x @ weight.T`` (``x``: [rows, in]) whose backward multiplies only the rows of the output gradient
    that are not all zero.

    The vocabulary projection's output gradient is zero at every position without a label (85% of
    them in masked-LM training), so its two backward matmuls shrink to the labelled rows; the rows
    are found in the gradient itself, so any loss on any positions gets exact gradients.
    """

    @tf.custom_gradient
    def product(x, weight):
        def grad(g):
            rows = tf.where(tf.reduce_any(tf.not_equal(g, 0), axis=-1))
            g = tf.gather_nd(g, rows)
            grad_x = tf.scatter_nd(rows, tf.matmul(g, weight), tf.shape(x, out_type=rows.dtype))
            grad_w = tf.matmul(g, tf.gather_nd(x, rows), transpose_a=True)
            return grad_x, grad_w

        return tf.matmul(x, weight, transpose_b=True), grad

    return product(x, weight)


def project(x, weight, bias=None, sparse_grad: bool = False):
    """``x @ weight.T + bias``; with ``sparse_grad`` the backward skips rows whose gradient is zero
    (the vocabulary projection when only some positions carry a label). Not under XLA, where the
    number of those rows would be a dynamic shape: there it is the plain product.

    Example:
        >>> x, w = tf.random.normal([4, 3]), tf.random.normal([5, 3])
        >>> with tf.GradientTape() as tape:
        ...     _ = tape.watch([x, w])
        ...     total = tf.reduce_sum(project(x, w, sparse_grad=True)[1])   # a loss on row 1 only
        >>> gx, gw = tape.gradient(total, [x, w])
        >>> float(tf.reduce_sum(tf.abs(tf.gather(gx, [0, 2, 3])))), bool(np.allclose(gw, tf.broadcast_to(x[1], [5, 3])))
        (0.0, True)
    """
    weight = tf.cast(weight, x.dtype)
    if not sparse_grad or _in_xla():
        out = matmul(x, weight, transpose_b=True)
    else:
        shape = _shape_list(x)
        out = _sparse_rows_matmul(tf.reshape(x, [-1, shape[-1]]), weight)
        out = tf.reshape(out, shape[:-1] + [out.shape[-1]])
    return out if bias is None else out + bias


class RoFormerLMPredictionHead(keras.layers.Layer):
    """transform -> decoder (the word embeddings, tied unless the config unties them) + bias."""

    def __init__(self, config: RoFormerConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        with keras.name_scope(self.name):
            self.transform = RoFormerPredictionHeadTransform(config, name="transform", dtype=dtype)
            if not config.tie_word_embeddings:
                self.decoder = _dense(config, config.embedding_size, config.vocab_size, "decoder", dtype,
                                      use_bias=False)
        self.bias = self.add_weight(shape=(config.vocab_size,), initializer="zeros", name="bias")  # in its own scope
        self.built = True

    def call(self, hidden_states, word_embeddings=None, sparse_grad=False):
        hidden_states = self.transform(hidden_states)
        if hasattr(self, "decoder"):
            return project(hidden_states, tf.transpose(self.decoder.kernel), self.bias, sparse_grad)
        return project(hidden_states, word_embeddings, self.bias, sparse_grad)


class RoFormerV2LMPredictionHead(keras.layers.Layer):
    """RoFormer-V2's LM head: only the decoder (the word embeddings unless untied), no transform, no bias."""

    def __init__(self, config: RoFormerConfig, **kwargs):
        super().__init__(**kwargs)
        with keras.name_scope(self.name):
            if not config.tie_word_embeddings:
                self.decoder = _dense(config, config.embedding_size, config.vocab_size, "decoder", self.dtype_policy,
                                      use_bias=False)
        self.built = True

    def call(self, hidden_states, word_embeddings=None, sparse_grad=False):
        if hasattr(self, "decoder"):
            return project(hidden_states, tf.transpose(self.decoder.kernel), None, sparse_grad)
        return project(hidden_states, word_embeddings, None, sparse_grad)


class RoFormerOnlyMLMHead(keras.layers.Layer):
    def __init__(self, config: RoFormerConfig, **kwargs):
        super().__init__(**kwargs)
        head = RoFormerV2LMPredictionHead if config.norm_type == "rms_norm" else RoFormerLMPredictionHead
        with keras.name_scope(self.name):
            self.predictions = head(config, name="predictions", dtype=self.dtype_policy)
        self.built = True

    def call(self, sequence_output, word_embeddings=None, sparse_grad=False):
        return self.predictions(sequence_output, word_embeddings=word_embeddings, sparse_grad=sparse_grad)


class RoFormerPooler(keras.layers.Layer):
    """First token -> dense -> ``pooler_activation`` (``pooler_output``; RoFormer-Sim's sentence vector).

    Example:
        >>> cfg = RoFormerConfig(hidden_size=8, num_attention_heads=2, pooler_activation="linear")
        >>> RoFormerPooler(cfg)(np.zeros((2, 5, 8), np.float32)).shape
        TensorShape([2, 8])
    """

    def __init__(self, config: RoFormerConfig, **kwargs):
        super().__init__(**kwargs)
        with keras.name_scope(self.name):
            self.dense = _dense(config, config.hidden_size, config.hidden_size, "dense", self.dtype_policy)
        self.activation = POOLER_ACT2FN[config.pooler_activation]
        self.built = True

    def call(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))


class RoFormerClassificationHead(keras.layers.Layer):
    """First token -> dropout -> dense -> hidden_act -> dropout -> out_proj."""

    def __init__(self, config: RoFormerConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        with keras.name_scope(self.name):
            self.dense = _dense(config, config.hidden_size, config.hidden_size, "dense", dtype)
            self.dropout = keras.layers.Dropout(config.hidden_dropout_prob, dtype=dtype)
            self.out_proj = _dense(config, config.hidden_size, config.num_labels, "out_proj", dtype)
        self.act = ACT2FN[config.hidden_act]
        self.built = True

    def call(self, features):
        x = self.dropout(features[:, 0, :])
        x = self.dropout(self.act(self.dense(x)))
        return self.out_proj(x)


# -- losses -----------------------------------------------------------------------------
def _mean(total, count):
    """``total / count``; inside one replica of a distribution strategy, that replica's share of
    the global mean (``count`` summed over replicas), so summed gradients are the global mean's."""
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return tf.math.divide_no_nan(total, count)


def _cross_entropy(logits, labels, ignore_index, weights=None):
    """Mean cross-entropy over the labelled positions (weighted by ``weights`` when given); 0 (and zero
    gradients) when there are none, in float32 whatever the logits' dtype."""
    logits = tf.reshape(logits, [-1, _shape_list(logits)[-1]])
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    valid = tf.not_equal(labels, ignore_index)
    if not _in_xla():  # the log-softmax of the labelled rows only: the others' would be thrown away
        rows = tf.where(valid)
        logits, labels = tf.gather_nd(logits, rows), tf.gather_nd(labels, rows)
        weights = None if weights is None else tf.gather_nd(tf.reshape(weights, [-1]), rows)
        valid = tf.ones_like(labels, tf.bool)
    logits = tf.cast(logits, tf.float32)
    per_item = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(valid, labels, 0), logits=logits)
    weights = tf.cast(valid, tf.float32) if weights is None else \
        tf.where(valid, tf.reshape(tf.cast(weights, tf.float32), [-1]), 0.0)
    return _mean(tf.reduce_sum(tf.where(valid, weights * per_item, 0.0)), tf.reduce_sum(weights))


def _elementwise_mean(values):
    return _mean(tf.reduce_sum(values), tf.cast(tf.size(values), tf.float32))


def token_cross_entropy(logits, labels, weights=None):
    """Cross-entropy at every position whose label is not -100 (masked LM, token classification),
    weighted per position by ``weights`` when given (``masked_weights``).

    Example:
        >>> float(token_cross_entropy(tf.zeros([1, 2, 4]), [[3, -100]])) == float(tf.math.log(4.0))
        True
    """
    return _cross_entropy(logits, labels, -100, weights)


def shifted_token_cross_entropy(logits, labels):
    """Causal LM: position t predicts token t+1."""
    return token_cross_entropy(logits[:, :-1], labels[:, 1:])


def sequence_classification_loss(logits, labels, config: RoFormerConfig):
    """Regression (MSE), single-label (cross-entropy) or multi-label (BCE) by ``problem_type``."""
    problem = problem_type(config, tf.as_dtype(labels.dtype).is_integer)
    logits = tf.cast(logits, tf.float32)
    if problem == "regression":
        if config.num_labels == 1:
            logits, labels = tf.reshape(logits, [-1]), tf.reshape(labels, [-1])
        return _elementwise_mean(tf.square(logits - tf.cast(labels, tf.float32)))
    if problem == "single_label_classification":
        return _cross_entropy(logits, labels, -100)
    return _elementwise_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(labels, tf.float32),
                                                                     logits=logits))


def choice_cross_entropy(logits, labels):
    """Cross-entropy over the choices."""
    return _cross_entropy(logits, labels, -100)


def span_cross_entropy(start_logits, end_logits, start_positions, end_positions):
    """Mean of start and end cross-entropy; positions outside the sequence are ignored."""
    ignored = _shape_list(start_logits)[1]
    start = tf.clip_by_value(tf.reshape(tf.cast(start_positions, tf.int32), [-1]), 0, ignored)
    end = tf.clip_by_value(tf.reshape(tf.cast(end_positions, tf.int32), [-1]), 0, ignored)
    return (_cross_entropy(start_logits, start, ignored) + _cross_entropy(end_logits, end, ignored)) / 2


#: loss kind (``roformer_core.heads.LOSS_KINDS``) -> (config, prediction, labels) -> loss
LOSSES = {
    "token_cross_entropy": lambda config, logits, labels: token_cross_entropy(logits, labels),
    "shifted_token_cross_entropy": lambda config, logits, labels: shifted_token_cross_entropy(logits, labels),
    "sequence_classification": lambda config, logits, labels: sequence_classification_loss(logits, labels, config),
    "choice_cross_entropy": lambda config, logits, labels: choice_cross_entropy(logits, labels),
    "span_cross_entropy": lambda config, prediction, labels: span_cross_entropy(*prediction, *labels),
}

# the names these had before the loss kinds were named
lm_loss, classification_loss, span_loss = token_cross_entropy, sequence_classification_loss, span_cross_entropy


# -- shared model behaviour: init, loading, saving ------------------------------------------
class RoFormerPreTrainedModel(KerasModelAPI, keras.Model):
    """Initialisation, ``from_pretrained`` / ``save_pretrained`` / ``from_roformer_config`` for every class;
    the Keras side (input forms, training on the head's own loss, ``.keras``, SavedModel) is
    :class:`roformer_tf.keras_api.KerasModelAPI`.

    ``add_pooling_layer`` (every class takes it, as the ``roformer`` port's ``RoFormerModel``
    does) adds ``roformer/pooler`` and ``pooler_output``; None follows the config.
    ``gradient_checkpointing=True`` (also an option of ``from_pretrained``) is
    :meth:`gradient_checkpointing_enable` from the start.
    """

    head = "model"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None,
                 gradient_checkpointing: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.config = with_pooler(config, add_pooling_layer)
        self._checkpointing_asked = bool(gradient_checkpointing)

    def init_weights(self):
        """Reference initialisation; Keras initialisers did the rest: the padding row is zeroed.
        Every class calls it last in its constructor, so it also applies the options that need
        the finished layers (``gradient_checkpointing``)."""
        embeddings = self._base_model().embeddings.word_embeddings.embeddings
        table = embeddings.numpy()
        table[self.config.pad_token_id] = 0
        embeddings.assign(table)
        self.gradient_checkpointing_enable(self._checkpointing_asked)

    def _base_model(self):
        return self.roformer if hasattr(self, "roformer") else self

    def gradient_checkpointing_enable(self, enabled: bool = True):
        """Activation recomputation in training: each layer keeps only its inputs and runs again in the
        backward pass (``tf.recompute_grad``, dropout masks replayed), trading about a third more
        compute for activation memory that no longer grows with the depth. Same gradients, in eager,
        graph and XLA code (``fit(jit_compile=True)``). Returns the model.

        Example:
            >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
            ...                      num_attention_heads=4, intermediate_size=64)
            >>> RoFormerModel(cfg).gradient_checkpointing_enable().is_gradient_checkpointing
            True
            >>> RoFormerForMaskedLM(cfg, gradient_checkpointing=True).is_gradient_checkpointing
            True
        """
        self._base_model().encoder.gradient_checkpointing = bool(enabled)
        return self

    def gradient_checkpointing_disable(self):
        """Keep every activation again (the default). Returns the model."""
        return self.gradient_checkpointing_enable(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether the layers recompute their activations in the backward pass."""
        return self._base_model().encoder.gradient_checkpointing

    @classmethod
    def from_roformer_config(cls, config: RoFormerConfig, dtype=None, add_pooling_layer: Optional[bool] = None,
                             gradient_checkpointing: bool = False):
        """A freshly initialised model; ``dtype`` is a Keras dtype policy (None: the global one).

        (``from_config`` is Keras' hook for ``get_config`` dicts; it takes a config too, as it always did.)

        Example:
            >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
            ...                      num_attention_heads=4, intermediate_size=64)
            >>> RoFormerModel.from_roformer_config(cfg, dtype="bfloat16").weights[0].dtype
            'bfloat16'
            >>> tuple(RoFormerModel.from_roformer_config(cfg, add_pooling_layer=True).pooler.dense.kernel.shape)
            (32, 32)
        """
        return cls(config, add_pooling_layer=add_pooling_layer, gradient_checkpointing=gradient_checkpointing,
                   dtype=dtype)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype=None, config: Optional[RoFormerConfig] = None,
                        gradient_checkpointing: bool = False, **kwargs):
        """Load a checkpoint: a folder (canonical safetensors, shards, ``pytorch_model.bin``, ``tf_model.h5``,
        ``flax_model.msgpack``), a weights file, or a hub id (``revision=``, ``cache_dir=``, ``token=`` ...).

        ``dtype`` is a Keras dtype policy (``"float32"``, ``"mixed_bfloat16"`` ...); ``None`` keeps a
        half-precision checkpoint's dtype and otherwise uses the global policy. Other keyword
        arguments override config fields (``num_labels=3``, ``add_pooling_layer=True`` ...). A
        bare-model checkpoint loads into a head model (the head is initialised, and a warning says
        so). Call it inside ``strategy.scope()`` to train with a distribution strategy.

        Example:
            >>> import tempfile
            >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
            ...                      num_attention_heads=4, intermediate_size=64)
            >>> d = tempfile.mkdtemp(); RoFormerForMaskedLM(cfg).save_pretrained(d)
            >>> RoFormerForMaskedLM.from_pretrained(d).config.vocab_size
            100
        """
        return LIFECYCLE.load(cls, path, config, dict(dtype=dtype, gradient_checkpointing=gradient_checkpointing),
                              **kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` (canonical names, the variables' dtype), atomically."""
        LIFECYCLE.save(self, directory)

    def named_variables(self):
        """``(canonical name, variable, transpose)`` for every weight, in torch's parameter order.

        Keras keeps both already: ``weights`` lists a layer's own variables, then its children's in
        the order they were made (torch's order), and a variable's ``path`` is its layer names;
        below the model's own name, ``to_canonical_name`` maps that path.

        Example:
            >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
            ...                      num_attention_heads=2, intermediate_size=16)
            >>> model = RoFormerForMaskedLM(cfg, name="mlm")
            >>> variable = model.roformer.encoder.layer[0].attention.output_block.dense.kernel
            >>> variable.path
            'mlm/roformer/encoder/layer_0/attention/output/dense/kernel'
            >>> next((n, t) for n, v, t in model.named_variables() if v is variable)
            ('roformer.encoder.layer.0.attention.output.dense.weight', True)
        """
        for variable in self.weights:
            parts = variable.path.split("/")
            name, transpose = to_canonical_name(parts[parts.index(self.name) + 1:])
            yield name, variable, transpose

    def head_loss(self, prediction, labels):
        """The head's own loss (its kind in ``roformer_core.heads.HEAD_TABLE``)."""
        kind = HEAD_TABLE[self.head].loss
        if kind is None:
            raise InputError(f"{type(self).__name__} has no loss of its own: give compile() a loss")
        return LOSSES[kind](self.config, prediction, labels)


def _extended_mask(attention_mask, input_shape, past_length, is_decoder, dtype, unilm_types=None):
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
        mask = tf.cast(attention_mask, tf.bool)
        mask = mask[:, None, :, :] if len(mask.shape) == 3 else mask[:, None, None, :]
    if unilm_types is not None:
        idx = tf.cumsum(tf.cast(unilm_types, tf.int32), axis=-1)
        new = idx[:, None, :] <= idx[:, :, None]
        cached = tf.ones([batch, seq, past_length], tf.bool)
        unilm = tf.concat([cached, new], axis=-1)[:, None]
        mask = unilm if mask is None else tf.logical_and(mask, unilm)
    elif is_decoder:  # each query sees the cache and itself and what came before
        q = tf.range(past_length, total)[:, None]
        causal = (tf.range(total)[None, :] <= q)[None, None]
        mask = causal if mask is None else tf.logical_and(mask, causal)
    if mask is None:
        return None
    return tf.where(mask, tf.zeros((), dtype), tf.constant(dtype.min, dtype))


def _head_mask(head_mask, num_layers, dtype):
    """[heads] or [layers, heads] -> [layers, 1, heads, 1, 1] (or None)."""
    if head_mask is None:
        return None
    head_mask = tf.cast(head_mask, dtype)
    if len(head_mask.shape) == 1:
        head_mask = tf.tile(head_mask[None], [num_layers, 1])
    return head_mask[:, None, :, None, None]


# -- the models ---------------------------------------------------------------------------
class RoFormerModel(RoFormerPreTrainedModel):
    """The bare RoFormer encoder (or decoder, with ``is_decoder``).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> model = RoFormerModel(cfg)
        >>> model(np.array([[2, 5, 7, 3]])).last_hidden_state.shape
        TensorShape([1, 4, 32])
    """

    head = "model"

    def __init__(self, config: RoFormerConfig, initialise: bool = True, add_pooling_layer: Optional[bool] = None,
                 **kwargs):
        super().__init__(config, add_pooling_layer, **kwargs)
        config = self.config
        dtype = self.dtype_policy
        with keras.name_scope(self.name):
            self.embeddings = RoFormerEmbeddings(config, name="embeddings", dtype=dtype)
            if config.embedding_size != config.hidden_size:
                self.embeddings_project = _dense(config, config.embedding_size, config.hidden_size,
                                                 "embeddings_project", dtype)
            self.encoder = RoFormerEncoder(config, name="encoder", dtype=dtype)
            if config.add_pooling_layer:
                self.pooler = RoFormerPooler(config, name="pooler", dtype=dtype)
        self.built = True
        if initialise:  # a head model initialises everything once, itself included
            self.init_weights()

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
             encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None, use_cache=None,
             output_attentions=False, output_hidden_states=False, return_dict=True, training=None):
        c = self.config
        use_cache = (c.is_decoder or c.unilm) and (c.use_cache if use_cache is None else use_cache)
        hidden = self.embeddings(input_ids, token_type_ids, inputs_embeds)
        if hasattr(self, "embeddings_project"):
            hidden = self.embeddings_project(hidden)
        past_length = _shape_list(past_key_values[0][0])[2] if past_key_values is not None else 0
        unilm_types = None
        if c.unilm:  # no token types: all segment 0, bidirectional (the cached positions stay visible)
            unilm_types = token_type_ids if token_type_ids is not None else tf.zeros(_shape_list(hidden)[:2], tf.int32)
        mask = _extended_mask(attention_mask, _shape_list(hidden)[:2], past_length, c.is_decoder, hidden.dtype,
                              unilm_types)
        encoder_mask = None
        if encoder_hidden_states is not None and encoder_attention_mask is not None:
            encoder_mask = _extended_mask(encoder_attention_mask, _shape_list(encoder_hidden_states)[:2], 0, False,
                                          hidden.dtype)
        out = self.encoder(hidden, mask, _head_mask(head_mask, self.config.num_hidden_layers, hidden.dtype),
                           encoder_hidden_states, encoder_mask, past_key_values, use_cache=use_cache,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        if hasattr(self, "pooler"):
            out.pooler_output = self.pooler(out.last_hidden_state)
        return out if return_dict else out.to_tuple()


class RoFormerForMaskedLM(RoFormerPreTrainedModel):
    """RoFormer with the masked-language-model head.

    ``prediction_mask`` (bool [batch, seq]) computes vocabulary logits only where it is True,
    returning ``[num_true, vocab]``: fill-mask needs them only at the [MASK] positions.

    Training, the fixed-shape way (``roformer_core.collator.MaskedLMCollator`` makes these):
    ``masked_positions`` (int [batch, P], padded) are the positions to predict, ``masked_labels``
    ([batch, P], -100 at padding) their labels and ``masked_weights`` (float [batch, P], 0 at
    padding, optional) their weights in the loss; the transform and the vocabulary projection run
    only there, and ``logits`` is ``[batch, P, vocab]``. The loss is the full-sequence loss on the
    same labels. The shapes are static, so it runs under XLA: ``fit(jit_compile=True)`` on the
    collator's batches trains this way (their full-sequence ``labels`` are then not used).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> model = RoFormerForMaskedLM(cfg)
        >>> ids = np.array([[2, 5, 4, 3]])
        >>> model(ids).logits.shape, model(ids, prediction_mask=ids == 4).logits.shape
        (TensorShape([1, 4, 100]), TensorShape([1, 100]))
        >>> out = model(ids, masked_positions=[[2, 0]], masked_labels=[[7, -100]])
        >>> out.logits.shape, out.loss.dtype
        (TensorShape([1, 2, 100]), tf.float32)
    """

    head = "masked_lm"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None, **kwargs):
        super().__init__(config, add_pooling_layer, **kwargs)
        config = self.config
        with keras.name_scope(self.name):
            self.roformer = RoFormerModel(config, initialise=False, name="roformer", dtype=self.dtype_policy)
            self.cls = RoFormerOnlyMLMHead(config, name="cls", dtype=self.dtype_policy)
        self.built = True
        self.init_weights()

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
             labels=None, output_attentions=False, output_hidden_states=False, return_dict=True,
             prediction_mask=None, masked_positions=None, masked_labels=None, masked_weights=None, training=None):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        sequence = out.last_hidden_state
        if masked_positions is not None:  # a static [batch, P] gather: one XLA program for every batch
            sequence = tf.gather(sequence, tf.cast(masked_positions, tf.int32), batch_dims=1)
        elif prediction_mask is not None:
            sequence = tf.boolean_mask(sequence, prediction_mask)
            if labels is not None and len(labels.shape) > 1:  # labels of the whole sequence, else of the positions
                labels = tf.boolean_mask(labels, prediction_mask)
        logits = self.cls(sequence, word_embeddings=self.roformer.embeddings.word_embeddings.embeddings,
                          sparse_grad=masked_positions is None and labels is not None)
        if masked_positions is not None:
            loss = token_cross_entropy(logits, masked_labels, masked_weights) if masked_labels is not None else None
        else:
            loss = self.head_loss(logits, labels) if labels is not None else None
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
        >>> model = RoFormerForCausalLM(cfg)
        >>> model.generate(np.array([[2, 5]]), max_new_tokens=3).shape
        TensorShape([1, 5])
        >>> sim = RoFormerForCausalLM(cfg.replace(unilm=True), add_pooling_layer=True)
        >>> sim.generate(np.array([[2, 5, 3]]), max_new_tokens=4, do_sample=True, top_p=0.9,
        ...              num_return_sequences=3, seed=0).shape
        TensorShape([3, 7])
    """

    head = "causal_lm"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None, **kwargs):
        super().__init__(config, add_pooling_layer, **kwargs)
        config = self.config
        if not (config.is_decoder or config.unilm):
            warnings.warn("RoFormerForCausalLM with is_decoder=False has no causal mask; set is_decoder=True "
                          "(or unilm=True for UniLM seq2seq)", stacklevel=2)
        with keras.name_scope(self.name):
            self.roformer = RoFormerModel(config, initialise=False, name="roformer", dtype=self.dtype_policy)
            self.cls = RoFormerOnlyMLMHead(config, name="cls", dtype=self.dtype_policy)
        self.built = True
        self.init_weights()

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
             encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None, labels=None,
             use_cache=None, output_attentions=False, output_hidden_states=False, return_dict=True, training=None):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            encoder_hidden_states, encoder_attention_mask, past_key_values, use_cache,
                            output_attentions, output_hidden_states)
        logits = self.cls(out.last_hidden_state, word_embeddings=self.roformer.embeddings.word_embeddings.embeddings)
        loss = self.head_loss(logits, labels) if labels is not None else None
        result = CausalLMOutput(loss, logits, out.past_key_values, out.hidden_states, out.attentions,
                                out.cross_attentions, out.pooler_output)
        return result if return_dict else result.to_tuple()

    def generate(self, input_ids, attention_mask=None, max_new_tokens: int = 20, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, eos_token_id=None, pad_token_id=None,
                 seed=None, encoder_hidden_states=None, encoder_attention_mask=None, token_type_ids=None,
                 num_return_sequences: int = 1) -> tf.Tensor:
        """Greedy or sampled continuation (temperature, top-k, top-p) using the key/value cache.

        ``num_return_sequences`` samples per prompt (rows ``i*n .. i*n+n-1`` for prompt i);
        ``token_type_ids`` are the prompt's; with ``config.unilm`` new tokens get type 1
        (paraphrase generation: the prompt is the source). Tokens are chosen in
        ``roformer_core.generation``, so every backend picks the same ones for a seed.
        """
        enc, enc_mask = encoder_hidden_states, encoder_attention_mask
        if num_return_sequences > 1 and enc is not None:  # one copy per returned sequence, like the prompts
            enc = tf.repeat(enc, num_return_sequences, axis=0)
            enc_mask = None if enc_mask is None else tf.repeat(enc_mask, num_return_sequences, axis=0)

        def step(new_ids, mask, past, token_type_ids=None):
            out = self(new_ids, mask, token_type_ids, encoder_hidden_states=enc, encoder_attention_mask=enc_mask,
                       past_key_values=past, use_cache=True, training=False)
            return tf.cast(out.logits[:, -1], tf.float32).numpy(), out.past_key_values

        ids = generate_loop(step, np.asarray(input_ids), None if attention_mask is None else np.asarray(attention_mask),
                            max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                            top_k=top_k, top_p=top_p, eos_token_id=eos_token_id,
                            pad_token_id=self.config.pad_token_id if pad_token_id is None else pad_token_id,
                            seed=seed, token_type_ids=None if token_type_ids is None else np.asarray(token_type_ids),
                            new_token_type=1 if self.config.unilm else None,
                            num_return_sequences=num_return_sequences)
        return tf.convert_to_tensor(ids)


class RoFormerForSequenceClassification(RoFormerPreTrainedModel):
    """RoFormer with a sentence-level head on the first token (regression, single- or multi-label).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64, num_labels=3)
        >>> RoFormerForSequenceClassification(cfg)(np.array([[2, 5, 3]])).logits.shape
        TensorShape([1, 3])
    """

    head = "sequence_classification"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None, **kwargs):
        super().__init__(config, add_pooling_layer, **kwargs)
        config = self.config
        with keras.name_scope(self.name):
            self.roformer = RoFormerModel(config, initialise=False, name="roformer", dtype=self.dtype_policy)
            self.classifier = RoFormerClassificationHead(config, name="classifier", dtype=self.dtype_policy)
        self.built = True
        self.init_weights()

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
             labels=None, output_attentions=False, output_hidden_states=False, return_dict=True, training=None):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.classifier(out.last_hidden_state)
        loss = self.head_loss(logits, labels) if labels is not None else None
        result = SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


class RoFormerForMultipleChoice(RoFormerPreTrainedModel):
    """RoFormer scoring each choice from its last position; inputs are [batch, choices, seq].

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> RoFormerForMultipleChoice(cfg)(np.array([[[2, 5, 3], [2, 6, 3]]])).logits.shape
        TensorShape([1, 2])
    """

    head = "multiple_choice"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None, **kwargs):
        super().__init__(config, add_pooling_layer, **kwargs)
        config = self.config
        with keras.name_scope(self.name):
            self.roformer = RoFormerModel(config, initialise=False, name="roformer", dtype=self.dtype_policy)
            self.classifier = _dense(config, config.hidden_size, 1, "classifier", self.dtype_policy)
        self.built = True
        self.init_weights()

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
             labels=None, output_attentions=False, output_hidden_states=False, return_dict=True, training=None):
        first = input_ids if input_ids is not None else inputs_embeds
        num_choices = _shape_list(first)[1]

        def flat(x):
            return None if x is None else tf.reshape(x, [-1] + _shape_list(x)[2:])

        out = self.roformer(flat(input_ids), flat(attention_mask), flat(token_type_ids), head_mask,
                            flat(inputs_embeds), output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states)
        # the reference summarises each choice by its LAST position, even when that is padding
        logits = tf.reshape(self.classifier(out.last_hidden_state[:, -1]), [-1, num_choices])
        loss = self.head_loss(logits, labels) if labels is not None else None
        result = SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


class RoFormerForTokenClassification(RoFormerPreTrainedModel):
    """RoFormer with a per-token classifier (NER, POS tagging).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64, num_labels=5)
        >>> RoFormerForTokenClassification(cfg)(np.array([[2, 5, 3]])).logits.shape
        TensorShape([1, 3, 5])
    """

    head = "token_classification"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None, **kwargs):
        super().__init__(config, add_pooling_layer, **kwargs)
        config = self.config
        with keras.name_scope(self.name):
            self.roformer = RoFormerModel(config, initialise=False, name="roformer", dtype=self.dtype_policy)
            self.dropout = keras.layers.Dropout(config.hidden_dropout_prob, dtype=self.dtype_policy)
            self.classifier = _dense(config, config.hidden_size, config.num_labels, "classifier", self.dtype_policy)
        self.built = True
        self.init_weights()

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
             labels=None, output_attentions=False, output_hidden_states=False, return_dict=True, training=None):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = self.head_loss(logits, labels) if labels is not None else None
        result = TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


class RoFormerForQuestionAnswering(RoFormerPreTrainedModel):
    """RoFormer with span start/end logits (extractive QA).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> out = RoFormerForQuestionAnswering(cfg)(np.array([[2, 5, 3]]))
        >>> out.start_logits.shape, out.end_logits.shape
        (TensorShape([1, 3]), TensorShape([1, 3]))
    """

    head = "question_answering"

    def __init__(self, config: RoFormerConfig, add_pooling_layer: Optional[bool] = None, **kwargs):
        super().__init__(config, add_pooling_layer, **kwargs)
        config = self.config
        with keras.name_scope(self.name):
            self.roformer = RoFormerModel(config, initialise=False, name="roformer", dtype=self.dtype_policy)
            self.qa_outputs = _dense(config, config.hidden_size, 2, "qa_outputs", self.dtype_policy)
        self.built = True
        self.init_weights()

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None, inputs_embeds=None,
             start_positions=None, end_positions=None, output_attentions=False, output_hidden_states=False,
             return_dict=True, training=None):
        out = self.roformer(input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        start_logits, end_logits = tf.unstack(self.qa_outputs(out.last_hidden_state), axis=-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = self.head_loss((start_logits, end_logits), (start_positions, end_positions))
        result = QuestionAnsweringModelOutput(loss, start_logits, end_logits, out.hidden_states, out.attentions)
        return result if return_dict else result.to_tuple()


MODEL_CLASSES = {cls.head: cls for cls in (
    RoFormerModel, RoFormerForMaskedLM, RoFormerForCausalLM, RoFormerForSequenceClassification,
    RoFormerForMultipleChoice, RoFormerForTokenClassification, RoFormerForQuestionAnswering)}
register_serializable(*MODEL_CLASSES.values())  # for keras.models.load_model

# The names of the reference TF classes, for people coming from them.
TFRoFormerPreTrainedModel = RoFormerPreTrainedModel
TFRoFormerModel = RoFormerModel
TFRoFormerForMaskedLM = RoFormerForMaskedLM
TFRoFormerForCausalLM = RoFormerForCausalLM
TFRoFormerForSequenceClassification = RoFormerForSequenceClassification
TFRoFormerForMultipleChoice = RoFormerForMultipleChoice
TFRoFormerForTokenClassification = RoFormerForTokenClassification
TFRoFormerForQuestionAnswering = RoFormerForQuestionAnswering
