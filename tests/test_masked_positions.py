"""Fixed-shape masked positions (``masked_positions`` / ``masked_labels`` / ``masked_weights``), once for
every backend: the masked batch gives the full-sequence loss and gradients on the same labels, the
logits at the positions, weighted losses, and one clear error for bad inputs. Then the training
steps that take masked batches (Flax ``make_train_step`` under ``jit`` and ``pmap``, with its
host-side batch check; the PyTorch ``train_step``).

Each backend appears through ``roformer_core.backends.get_backend``; what the adapter has no verb
for (gradients) is one small function per backend in :data:`GRADIENTS`.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from harness import config_for

from roformer_core.backends import get_backend
from roformer_core.collator import MaskedLMCollator
from roformer_core.errors import InputError

BACKENDS = ("torch", "flax", "keras")
VARIANTS = ("default", "embedding_size")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend, float32 matmuls at full precision (the comparisons are at 1e-5)."""
    if request.param == "flax":
        import jax

        with jax.default_matmul_precision("highest"):
            yield get_backend("flax")
    elif request.param == "keras":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
        yield get_backend("keras")
    else:
        yield get_backend(request.param)


def masked_batch(config, batch=3, seq=16, seed=0, probability=0.3):
    """A collator batch (full-sequence ``labels`` and the masked form of the same labels) with
    padding in the last row."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(batch):
        n = seq - 2 - (5 if b == batch - 1 else 0)
        rows.append([2] + rng.integers(5, config.vocab_size, n).tolist() + [3])
    collator = MaskedLMCollator(vocab_size=config.vocab_size, mask_token_id=4, pad_token_id=0,
                                special_ids=(0, 1, 2, 3, 4), max_length=seq, mlm_probability=probability, seed=seed)
    out = collator(rows)
    assert out["masked_weights"].sum() >= 3  # the comparisons below need some labels
    return {k: v.astype(np.int64) if v.dtype.kind == "i" else v for k, v in out.items()}


def split(batch):
    """(inputs, full-sequence labels, masked inputs) of a collator batch."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    masked = {k: batch[k] for k in ("masked_positions", "masked_labels", "masked_weights")}
    return inputs, {"labels": batch["labels"]}, masked


def _torch_gradients(model, feed):
    import torch

    model.zero_grad(set_to_none=True)
    out = model(**{k: torch.as_tensor(v) for k, v in feed.items()})
    out.loss.backward()
    return {n: p.grad.detach().numpy().copy() for n, p in model.named_parameters() if p.grad is not None}


def _flax_gradients(model, feed):
    import jax
    from flax.traverse_util import flatten_dict

    arrays = {k: jax.numpy.asarray(v) for k, v in feed.items()}
    grads = jax.jit(jax.grad(lambda p, a: model.module.apply({"params": p}, **a).loss))(model.params, arrays)
    return {"/".join(k): np.asarray(v) for k, v in flatten_dict(grads).items()}


def _keras_gradients(model, feed):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = model(**feed, training=True).loss
    grads = tape.gradient(loss, model.trainable_weights)
    return {w.path: tf.convert_to_tensor(g).numpy() for w, g in zip(model.trainable_weights, grads) if g is not None}


#: backend name -> (model, numpy feed with labels) -> {parameter name: gradient of the loss}
GRADIENTS = {"torch": _torch_gradients, "flax": _flax_gradients, "keras": _keras_gradients}


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("variant", VARIANTS)
def test_masked_positions_give_the_full_sequence_loss_logits_and_gradients(backend, variant):
    config = config_for("masked_lm", variant)
    model = backend.from_config("masked_lm", config, seed=0)
    inputs, labels, masked = split(masked_batch(config))
    full = backend.run(model, {**inputs, **labels})
    got = backend.run(model, {**inputs, **masked})
    positions = masked["masked_positions"]
    assert got["logits"].shape == positions.shape + (config.vocab_size,)
    np.testing.assert_allclose(got["logits"], np.take_along_axis(full["logits"], positions[..., None], 1), atol=1e-5)
    np.testing.assert_allclose(got["loss"], full["loss"], atol=1e-5)
    # the labels' own cross-entropy, computed here from the logits
    picked = np.take_along_axis(_log_softmax(full["logits"].astype(np.float64)),
                                np.maximum(labels["labels"], 0)[..., None], -1)[..., 0]
    assert abs(-picked[labels["labels"] != -100].mean() - got["loss"]) < 1e-5

    full_grads = GRADIENTS[backend.name](model, {**inputs, **labels})
    masked_grads = GRADIENTS[backend.name](model, {**inputs, **masked})
    assert sorted(full_grads) == sorted(masked_grads) and len(full_grads) > 10
    for name, want in full_grads.items():
        np.testing.assert_allclose(masked_grads[name], want, atol=1e-5, err_msg=name)
    assert max(np.abs(g).max() for g in full_grads.values()) > 1e-3  # gradients that say something


def test_masked_weights_weight_each_position(backend):
    config = config_for("masked_lm")
    model = backend.from_config("masked_lm", config, seed=0)
    inputs, _, masked = split(masked_batch(config, seed=1))
    weights = masked["masked_weights"] * np.random.default_rng(2).uniform(0.1, 2.0, masked["masked_weights"].shape)
    got = backend.run(model, {**inputs, **masked, "masked_weights": weights.astype(np.float32)})
    labels = masked["masked_labels"]
    ce = -np.take_along_axis(_log_softmax(got["logits"].astype(np.float64)), np.maximum(labels, 0)[..., None],
                             -1)[..., 0]
    real = labels != -100
    want = (ce * weights)[real].sum() / weights[real].sum()
    assert abs(got["loss"] - want) < 1e-5
    unweighted = backend.run(model, {**inputs, **masked})["loss"]
    assert abs(unweighted - ce[real].mean()) < 1e-5 and abs(unweighted - want) > 1e-4


def test_masked_positions_without_labels_give_logits_only(backend):
    config = config_for("masked_lm")
    model = backend.from_config("masked_lm", config)
    inputs, _, masked = split(masked_batch(config))
    out = backend.run(model, {**inputs, "masked_positions": masked["masked_positions"]})
    assert out.get("loss") is None and out["logits"].shape == masked["masked_positions"].shape + (config.vocab_size,)


@pytest.mark.parametrize("change, message", [
    (lambda m, b: {**m, "masked_positions": m["masked_positions"] + b["input_ids"].shape[1]},
     "outside [0, 16) (the sequence length)"),
    (lambda m, b: {**m, "masked_labels": np.where(m["masked_labels"] >= 0, 500, -100)},
     "masked_labels holds 500, outside [0, 99)"),
    (lambda m, b: {k: v for k, v in m.items() if k != "masked_positions"}, "need masked_positions"),
    (lambda m, b: {**m, "masked_weights": m["masked_weights"][:, :-1]}, "masked_weights has shape"),
    (lambda m, b: {**m, "masked_positions": m["masked_positions"].astype(np.float32)}, "must hold integers"),
    (lambda m, b: {"masked_positions": m["masked_positions"], "labels": b["labels"]}, "as masked_labels"),
    (lambda m, b: {**m, "prediction_mask": b["input_ids"] == 4}, "not both"),
])
def test_bad_masked_inputs_are_one_clear_error(backend, change, message):
    config = config_for("masked_lm")
    model = backend.from_config("masked_lm", config)
    batch = masked_batch(config)
    inputs, _, masked = split(batch)
    with pytest.raises(InputError, match=re.escape(message)):
        backend.run(model, {**inputs, **change(masked, batch)})


# -- training steps -------------------------------------------------------------------------------------
def test_flax_train_step_takes_masked_batches():
    """make_train_step on a masked batch: the step of the full-sequence batch with the same labels;
    the collator's full-sequence labels ride along unused (pmap: the multi-device test below)."""
    import jax
    import optax

    from roformer_flax import RoFormerForMaskedLM
    from roformer_flax.training import create_train_state, loss_terms, make_train_step

    config = config_for("masked_lm")
    model = RoFormerForMaskedLM.from_config(config)
    batch = masked_batch(config, batch=4)
    inputs, labels, masked = split(batch)
    key = jax.random.PRNGKey(0)
    results = {}
    with jax.default_matmul_precision("highest"):
        for mode in ("jit",):
            for name, feed in (("full", {**inputs, **labels}), ("masked", batch)):
                step = make_train_step(model, mode)
                state = step.place_state(create_train_state(model, optax.sgd(0.5)))
                state, metrics = step(state, step.shard(feed), key)
                params = step.host_params(state)
                results[mode, name] = (float(np.asarray(metrics["loss"]).reshape(-1)[0]), params)
    base_loss, base_params = results["jit", "full"]
    for key_, (loss, params) in results.items():
        assert abs(loss - base_loss) < 1e-5, key_
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(base_params)):
            np.testing.assert_allclose(a, b, atol=1e-6, err_msg=str(key_))
    moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(base_params), jax.tree.leaves(model.params)))
    assert moved > 1e-4
    # the (sum, count) terms of a masked batch count its labelled positions
    out = model(**inputs, masked_positions=masked["masked_positions"])
    (total, count), = loss_terms("masked_lm", config, out, masked)
    assert float(count) == float((masked["masked_labels"] != -100).sum())


def test_flax_step_checks_each_batch_on_the_host():
    """Out-of-range ids give one InputError before the compiled step, and the state is untouched
    (inside the step they would be clamped or read garbage, silently)."""
    import jax
    import optax

    from roformer_flax import RoFormerForMaskedLM
    from roformer_flax.training import create_train_state, make_train_step, train_step

    config = config_for("masked_lm")
    model = RoFormerForMaskedLM.from_config(config)
    batch = masked_batch(config)
    bad_batches = {
        "input_ids holds ids up to": {**batch, "input_ids": batch["input_ids"] + config.vocab_size},
        "token_type_ids holds ids up to": {**batch, "token_type_ids": batch["token_type_ids"] + 7},
        "labels holds": {**batch, "labels": np.where(batch["labels"] >= 0, 1000, -100)},
        "masked_labels holds 1000": {**batch, "masked_labels": np.where(batch["masked_labels"] >= 0, 1000, -100)},
        "masked_positions holds": {**batch, "masked_positions": batch["masked_positions"] - 1},
    }
    for mode in ("jit", "pmap"):
        step = make_train_step(model, mode)
        state = step.place_state(create_train_state(model, optax.sgd(0.1)))
        for message, bad in bad_batches.items():
            with pytest.raises(InputError, match=message):
                state = step(state, step.shard(bad), jax.random.PRNGKey(0))[0]
        assert int(np.asarray(state.step).reshape(-1)[0]) == 0
    plain = create_train_state(model, optax.sgd(0.1))
    with pytest.raises(InputError, match="input_ids holds ids up to"):  # train_step called eagerly checks too
        train_step(plain, {k: jax.numpy.asarray(v) for k, v in bad_batches["input_ids holds ids up to"].items()},
                   jax.random.PRNGKey(0), head="masked_lm", config=config)


def test_torch_train_step_takes_a_masked_batch():
    import torch

    from roformer_torch import RoFormerForMaskedLM
    from roformer_torch.training import train_step

    config = config_for("masked_lm")
    batch = masked_batch(config)
    inputs, labels, masked = split(batch)
    losses = []
    for feed in ({**inputs, **labels}, batch):
        torch.manual_seed(0)
        model = RoFormerForMaskedLM(config)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        losses.append(train_step(model, feed, optimizer))
        losses.append(train_step(model, feed, optimizer))  # the second loss sees the first update
    assert abs(losses[0] - losses[2]) < 1e-5 and abs(losses[1] - losses[3]) < 1e-5 and losses[1] < losses[0]


# -- several devices: pmap and sharded jit split a masked batch whose rows carry different counts -------
_SCRIPT_FLAG = "--multi-device-script"


def _multi_device_script():
    import jax
    import optax

    from roformer_flax import RoFormerForMaskedLM
    from roformer_flax.training import create_train_state, make_train_step

    config = config_for("masked_lm")
    model = RoFormerForMaskedLM.from_config(config)
    batch = masked_batch(config, batch=4, seed=3)
    batch["masked_weights"][:2] *= 0.5  # the devices' halves weigh differently
    out = {}
    with jax.default_matmul_precision("highest"):
        for mode in ("single", "pmap", "jit"):
            mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",)) if mode == "single" else None
            step = make_train_step(model, "jit" if mode == "single" else mode, mesh=mesh)
            state = step.place_state(create_train_state(model, optax.sgd(0.5)))
            state, metrics = step(state, step.shard(batch), jax.random.PRNGKey(0))
            params = step.host_params(state)
            out[mode] = {"loss": float(np.asarray(metrics["loss"]).reshape(-1)[0]),
                         "params": [np.asarray(p).ravel()[:50].tolist() for p in jax.tree.leaves(params)],
                         "devices": step.num_devices}
    print(json.dumps(out))


def test_pmap_and_sharded_jit_split_a_masked_batch_like_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([os.path.dirname(__file__)] + sys.path))
    run = subprocess.run([sys.executable, __file__, _SCRIPT_FLAG], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["pmap"]["devices"] == out["jit"]["devices"] == 2 and out["single"]["devices"] == 1
    for mode in ("pmap", "jit"):
        assert abs(out[mode]["loss"] - out["single"]["loss"]) < 1e-5
        for a, b in zip(out[mode]["params"], out["single"]["params"]):
            np.testing.assert_allclose(a, b, atol=1e-6)


if __name__ == "__main__" and _SCRIPT_FLAG in sys.argv:
    _multi_device_script()
