"""Training options, for every backend: bfloat16 mixed precision tracks the float32 loss curve, and
gradient checkpointing (activation recomputation) gives the gradients of the plain model.

Each backend is one small set of functions (:data:`TRAINERS`, :data:`GRADIENTS`): a model with
dropout, 20 AdamW steps on one masked batch (fixed-shape ``masked_positions``) in float32 and in
bfloat16 (PyTorch: autocast over float32 master weights; Flax: ``dtype=bfloat16`` computation over
float32 params), the losses in float32.
"""

import numpy as np
import pytest
from harness import config_for
from test_masked_positions import masked_batch

STEPS = 20
LEARNING_RATE = 3e-3


def _config():
    # dropout on: the recomputation must replay the same dropout masks
    return config_for("masked_lm").replace(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)


def _torch_losses(config, batch, bf16: bool) -> list[float]:
    import torch

    from roformer_torch import RoFormerForMaskedLM

    torch.manual_seed(0)
    model = RoFormerForMaskedLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    feed = {k: torch.as_tensor(v) for k, v in batch.items() if k != "labels"}
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(**feed)
        assert out.loss.dtype == torch.float32 and (out.logits.dtype == torch.bfloat16) == bf16
        out.loss.backward()
        assert all(p.dtype == torch.float32 for p in model.parameters())  # the master weights
        optimizer.step()
        losses.append(float(out.loss.detach()))
    return losses


def _flax_losses(config, batch, bf16: bool) -> list[float]:
    import jax
    import jax.numpy as jnp
    import optax

    from roformer_flax import RoFormerForMaskedLM
    from roformer_flax.training import create_train_state, make_train_step

    model = RoFormerForMaskedLM.from_config(config, dtype=jnp.bfloat16 if bf16 else jnp.float32, seed=0)
    logits = jax.eval_shape(lambda p: model.module.apply({"params": p}, batch["input_ids"]).logits, model.params)
    assert (logits.dtype == jnp.bfloat16) == bf16
    step = make_train_step(model, "jit")
    state = step.place_state(create_train_state(model, optax.adamw(LEARNING_RATE)))
    feed = step.shard(batch)
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, feed, jax.random.PRNGKey(0))
        assert metrics["loss"].dtype == jnp.float32
        losses.append(float(metrics["loss"]))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    return losses


def _keras_losses(config, batch, bf16: bool, jit: bool = False) -> list[float]:
    import keras
    import tensorflow as tf

    from roformer_tf import RoFormerForMaskedLM

    keras.utils.set_random_seed(0)  # the same weights and dropout seeds in both runs
    model = RoFormerForMaskedLM(config, dtype="mixed_bfloat16" if bf16 else "float32")
    model.compile(optimizer=keras.optimizers.AdamW(LEARNING_RATE), jit_compile=jit)
    feed = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**feed)
    assert out.loss.dtype == tf.float32 and (out.logits.dtype == tf.bfloat16) == bf16
    losses = []
    for _ in range(STEPS):
        model.reset_metrics()  # the logged loss is a running mean: this step's alone
        losses.append(float(model.train_on_batch(feed, return_dict=True)["loss"]))
    assert all(w.dtype == "float32" for w in model.weights)  # the master weights
    return losses


#: backend -> (config, numpy masked batch, bf16) -> the 20 training losses
TRAINERS = {"torch": _torch_losses, "flax": _flax_losses, "keras": _keras_losses,
            # under XLA Keras' bf16 products are ours (roformer_tf.modeling.matmul), outside it oneDNN's
            "keras-xla": lambda config, batch, bf16: _keras_losses(config, batch, bf16, jit=True)}


@pytest.mark.parametrize("backend", list(TRAINERS))
def test_bf16_training_tracks_the_float32_loss_curve(backend):
    config = _config()
    batch = masked_batch(config, batch=4, seq=16, probability=0.3)
    fp32 = np.array(TRAINERS[backend](config, batch, bf16=False))
    bf16 = np.array(TRAINERS[backend](config, batch, bf16=True))
    assert np.isfinite(bf16).all()
    assert fp32[-1] < fp32[0] - 1.0  # the curve moves: 20 steps on one batch
    # step by step within bf16's precision (8 bits of mantissa: ~0.4% per operation, averaged over the
    # labelled positions), never drifting away
    np.testing.assert_allclose(bf16, fp32, rtol=0.01, atol=0.01)
    assert abs(bf16[-1] - fp32[-1]) < 0.01 * (fp32[0] - fp32[-1])


def _flax_product(x, kernel, transpose_b):
    import jax
    import jax.numpy as jnp

    from roformer_flax.modeling import matmul

    x, kernel = jnp.asarray(x, jnp.bfloat16), jnp.asarray(kernel, jnp.bfloat16)
    product = (lambda x, k: matmul(x, k.T)) if transpose_b else matmul
    y, pullback = jax.vjp(jax.jit(product), x, kernel)
    return y, *pullback(jnp.ones_like(y))


def _keras_product(x, kernel, transpose_b):
    import tensorflow as tf

    from roformer_tf.modeling import matmul

    x, kernel = tf.constant(x, tf.bfloat16), tf.constant(kernel, tf.bfloat16)

    @tf.function(jit_compile=True)
    def product(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = matmul(x, kernel, transpose_b=transpose_b)
        return y, *tape.gradient(y, [x, kernel])
    return product(x, kernel)


@pytest.mark.parametrize("backend, transpose_b", [("flax", False), ("flax", True), ("keras", False), ("keras", True)])
def test_the_bf16_product_accumulates_in_float32_forward_and_backward(backend, transpose_b):
    """The bfloat16 products of Flax and of Keras under XLA (PyTorch's are autocast's): each of the three
    products of a [rows, in] x [in, out] layer, against float64 on the same bfloat16-rounded operands.
    A float32 accumulator leaves only the result's rounding to bfloat16 (2^-9 relative); summing 512
    terms in bfloat16 would lose several bits more."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, (2, 3, 512))  # positive terms: nothing cancels, so the relative error is clean
    kernel = rng.uniform(0.5, 1.5, (512, 512))
    stored = kernel.T if transpose_b else kernel
    y, grad_x, grad_kernel = (_flax_product if backend == "flax" else _keras_product)(x, stored, transpose_b)
    rounded = lambda a: np.asarray(np.asarray(a, np.float32).astype("bfloat16").astype(np.float64))  # noqa: E731
    xr, kr = rounded(x), rounded(kernel)
    want = {"y": xr @ kr, "grad_x": np.broadcast_to(kr.sum(1), x.shape),
            "grad_kernel": np.broadcast_to(xr.reshape(-1, 512).sum(0)[:, None], kernel.shape)}
    grad_kernel = np.asarray(grad_kernel)
    got = {"y": y, "grad_x": grad_x, "grad_kernel": grad_kernel.T if transpose_b else grad_kernel}
    for name, value in got.items():
        assert np.asarray(value).dtype.name == "bfloat16", name
        relative = np.abs(np.asarray(value, np.float64) - want[name]) / want[name]
        assert relative.max() <= 2.0 ** -8, (name, relative.max())  # one bf16 rounding, at most half an ulp


def _torch_gradients(config, batch, checkpointing: bool) -> dict:
    import torch

    from roformer_torch import RoFormerForMaskedLM

    torch.manual_seed(0)
    model = RoFormerForMaskedLM(config).train()
    if checkpointing:
        assert model.gradient_checkpointing_enable().is_gradient_checkpointing
    torch.manual_seed(1)  # the same dropout masks in both runs
    model(**{k: torch.as_tensor(v) for k, v in batch.items()}).loss.backward()
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def _flax_gradients(config, batch, checkpointing: bool) -> dict:
    import jax
    from flax.traverse_util import flatten_dict

    from roformer_flax import RoFormerForMaskedLM

    model = RoFormerForMaskedLM.from_config(config, seed=0, gradient_checkpointing=checkpointing)
    assert model.module.gradient_checkpointing == checkpointing
    arrays = {k: jax.numpy.asarray(v) for k, v in batch.items()}

    def loss(params):
        return model.module.apply({"params": params}, **arrays, deterministic=False,
                                  rngs={"dropout": jax.random.PRNGKey(1)}).loss
    return {"/".join(k): np.asarray(v) for k, v in flatten_dict(jax.jit(jax.grad(loss))(model.params)).items()}


def _keras_gradients(config, batch, checkpointing: bool) -> dict:
    import keras
    import tensorflow as tf

    from roformer_tf import RoFormerForMaskedLM

    keras.utils.set_random_seed(0)  # the same weights and dropout seeds in both runs
    model = RoFormerForMaskedLM(config, gradient_checkpointing=checkpointing)
    assert model.is_gradient_checkpointing == checkpointing
    with tf.GradientTape() as tape:
        loss = model(**batch, training=True).loss
    grads = tape.gradient(loss, model.trainable_weights)
    return {w.path.split("/", 1)[1]: tf.convert_to_tensor(g).numpy() for w, g in zip(model.trainable_weights, grads)}


#: backend -> (config, numpy batch with labels, checkpointing) -> {parameter: gradient}
GRADIENTS = {"torch": _torch_gradients, "flax": _flax_gradients, "keras": _keras_gradients}


@pytest.mark.parametrize("backend, form", [(name, "masked") for name in GRADIENTS] + [("torch", "labels")])
def test_gradient_checkpointing_gives_the_same_gradients(backend, form):
    """Masked batches everywhere; full-sequence labels too in PyTorch, whose projection backward
    skips unlabelled rows inside the recomputed graph."""
    config = _config()
    batch = masked_batch(config, batch=2, seq=12, probability=0.4)
    if form == "labels":
        batch = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
    else:
        batch = {k: v for k, v in batch.items() if k != "labels"}
    plain = GRADIENTS[backend](config, batch, checkpointing=False)
    recomputed = GRADIENTS[backend](config, batch, checkpointing=True)
    assert sorted(plain) == sorted(recomputed)
    for name, want in plain.items():
        np.testing.assert_allclose(recomputed[name], want, atol=1e-6, err_msg=name)
    assert max(np.abs(g).max() for g in plain.values()) > 1e-3


def test_flax_checkpointing_keeps_the_parameter_names_and_switches_back():
    import jax

    from roformer_flax import RoFormerForMaskedLM

    config = _config()
    model = RoFormerForMaskedLM.from_config(config)
    plain_module = model.module
    ids = np.array([[2, 7, 9, 3]])
    abstract = model.module.init(jax.random.PRNGKey(0), ids)["params"]
    remat = model.gradient_checkpointing_enable().module
    assert remat.gradient_checkpointing and remat is not plain_module
    assert jax.tree.structure(remat.init(jax.random.PRNGKey(0), ids)["params"]) == jax.tree.structure(abstract)
    np.testing.assert_allclose(np.asarray(model(ids).logits), np.asarray(plain_module.apply(
        {"params": model.params}, ids).logits), atol=1e-6)
    assert not model.gradient_checkpointing_disable().module.gradient_checkpointing
    assert model.enable_gradient_checkpointing().is_gradient_checkpointing  # transformers' Flax name


@pytest.mark.parametrize("backend", ["torch", "flax", "keras"])
def test_one_switch_for_recomputation_in_every_backend(backend):
    """The same three names in every backend (PyTorch's), whatever the framework does underneath."""
    import importlib

    package = importlib.import_module({"torch": "roformer_torch", "flax": "roformer_flax", "keras": "roformer_tf"}[backend])
    cls = package.RoFormerForMaskedLM
    model = cls.from_config(_config()) if backend == "flax" else cls(_config())
    assert model.is_gradient_checkpointing is False
    assert model.gradient_checkpointing_enable() is model and model.is_gradient_checkpointing is True
    assert model.gradient_checkpointing_disable() is model and model.is_gradient_checkpointing is False
