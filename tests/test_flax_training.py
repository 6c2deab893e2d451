"""Flax training: losses, optimizer, one step against PyTorch, accumulation, pmap and sharded jit on 8 devices.

The 8-device checks run this file as a script in a subprocess: ``XLA_FLAGS`` must be set
before jax is first imported, and the pytest process has imported it already.
"""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from harness import config_for, make_inputs, make_labels, save_random_checkpoint

from roformer_core.errors import InputError
from roformer_flax import MODEL_CLASSES, params_to_state_dict
from roformer_flax.training import (LABEL_KEYS, compute_loss, create_train_state, decay_mask, dropout_key,
                                    loss_terms, make_optimizer, make_schedule, make_train_step, train_step)

TRAINABLE = list(LABEL_KEYS)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root, made = tmp_path_factory.mktemp("flax-train"), {}

    def get(head):
        if head not in made:
            cfg = config_for(head)
            made[head] = (save_random_checkpoint(root / head, cfg, head), cfg)
        return made[head]
    return get


def _batch(cfg, head, seed=0):
    inputs = make_inputs(cfg, head, seed=seed)
    return {**inputs, **make_labels(cfg, head, inputs, seed=seed + 1)}


def test_decay_mask_skips_biases_and_layernorm():
    params = MODEL_CLASSES["masked_lm"].from_config(config_for("masked_lm")).params
    mask = {"/".join(str(p.key) for p in path): m
            for path, m in jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]}
    assert mask["roformer/encoder/layer/0/attention/self/query/kernel"]
    assert mask["roformer/embeddings/word_embeddings/embedding"]
    assert not mask["roformer/encoder/layer/0/attention/self/query/bias"]
    assert not mask["roformer/embeddings/LayerNorm/scale"] and not mask["cls/predictions/transform/LayerNorm/bias"]
    assert not mask["cls/predictions/bias"]


def test_schedule_warms_up_then_decays():
    lr, total, warmup = 0.3, 20, 5
    linear = make_schedule(lr, total, warmup)
    for step in range(total + 1):
        want = lr * step / warmup if step < warmup else lr * (total - step) / (total - warmup)
        assert abs(float(linear(step)) - want) < 1e-6
    cosine = make_schedule(lr, total, warmup, decay="cosine")
    assert abs(float(cosine(warmup)) - lr) < 1e-6 and float(cosine(total)) < 1e-6
    assert float(cosine(12)) > float(linear(12))  # cosine stays higher in the middle
    with pytest.raises(InputError, match="warmup_steps"):
        make_schedule(lr, 10, 11)


@pytest.mark.parametrize("head", TRAINABLE)
def test_loss_terms_give_the_model_loss(head, checkpoints):
    path, cfg = checkpoints(head)
    model = MODEL_CLASSES[head].from_pretrained(path)
    batch = _batch(cfg, head)
    loss = compute_loss(model.module.apply, model.params, {k: jnp.asarray(v) for k, v in batch.items()},
                        jax.random.PRNGKey(0), head=head, config=cfg, train=False)
    assert abs(float(loss) - float(model(**batch).loss)) < 1e-6
    assert len(loss_terms(head, cfg, model(**batch), batch)) == (2 if head == "question_answering" else 1)


@pytest.mark.parametrize("head", TRAINABLE)
def test_one_sgd_step_matches_torch(head, checkpoints, jax_device):
    import torch

    import roformer_torch

    path, cfg = checkpoints(head)
    batch, lr = _batch(cfg, head), 0.5
    torch_model = roformer_torch.MODEL_CLASSES[head].from_pretrained(path).train()
    torch_model(**{k: torch.as_tensor(v) for k, v in batch.items()}).loss.backward()
    with torch.no_grad():
        for p in torch_model.parameters():
            p -= lr * p.grad
    model = MODEL_CLASSES[head].from_pretrained(path)
    state = create_train_state(model, optax.sgd(lr))
    # eagerly: six heads share their ops' compilations (the jitted step is checked on 8 devices below)
    new_state, metrics = train_step(state, {k: jnp.asarray(v) for k, v in batch.items()}, jax.random.PRNGKey(0),
                                    head=head, config=cfg)
    before = params_to_state_dict(model.params, cfg, head)
    after = params_to_state_dict(new_state.params, cfg, head)
    want = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    moved = max(float(np.abs(after[k] - before[k]).max()) for k in after)
    assert moved > 1e-3, "the step changed nothing"
    diffs = {k: float(np.abs(after[k] - want[k]).max()) for k in after}
    assert max(diffs.values()) <= 1e-5, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]


def test_gradient_accumulation_averages_micro_batches():
    params = MODEL_CLASSES["masked_lm"].from_config(config_for("masked_lm")).params
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(0)
    g1, g2 = (jax.tree.unflatten(tree, [jnp.asarray(rng.standard_normal(x.shape), jnp.float32) for x in leaves])
              for _ in range(2))
    full = make_optimizer(1e-2, 10, 0)
    updates, _ = jax.jit(full.update)(jax.tree.map(lambda a, b: (a + b) / 2, g1, g2), full.init(params), params)
    want = optax.apply_updates(params, updates)
    accumulated = make_optimizer(1e-2, 10, 0, grad_accum_steps=2)
    update = jax.jit(accumulated.update)
    opt_state = accumulated.init(params)
    updates, opt_state = update(g1, opt_state, params)
    assert not any(jnp.any(u != 0) for u in jax.tree.leaves(updates)), "the first micro-batch must not move params"
    updates, opt_state = update(g2, opt_state, params)
    got = optax.apply_updates(params, updates)
    assert max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))) <= 1e-5
    assert max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(got), leaves)) > 1e-3


def test_training_bad_input(checkpoints):
    path, cfg = checkpoints("masked_lm")
    model = MODEL_CLASSES["masked_lm"].from_pretrained(path)
    batch = {k: jnp.asarray(v) for k, v in _batch(cfg, "masked_lm").items()}
    with pytest.raises(InputError, match="missing: labels"):
        compute_loss(model.module.apply, model.params, {"input_ids": batch["input_ids"]}, jax.random.PRNGKey(0),
                     head="masked_lm", config=cfg)
    with pytest.raises(InputError, match="has no training loss"):
        loss_terms("model", cfg, None, batch)
    with pytest.raises(InputError, match="mode must be"):
        make_train_step(model, "spmd")
    with pytest.raises(InputError, match="disagree on the batch size"):
        make_train_step(model, "jit").shard({"input_ids": np.zeros((4, 3)), "labels": np.zeros((2, 3))})
    with pytest.raises(InputError, match="grad_accum_steps"):
        make_optimizer(grad_accum_steps=0)


def test_one_host_loads_the_whole_batch(checkpoints):
    step = make_train_step(MODEL_CLASSES["masked_lm"].from_pretrained(checkpoints("masked_lm")[0]), "jit")
    rows = step.process_rows(12)
    assert np.arange(12)[rows].tolist() == list(range(12)) and jax.process_count() == 1
    sharded = step.shard({"input_ids": np.arange(24).reshape(12, 2)})
    np.testing.assert_array_equal(np.asarray(sharded["input_ids"]), np.arange(24).reshape(12, 2))


# -- 8 devices, in a subprocess ---------------------------------------------------------------
@pytest.fixture(scope="module")
def multi_device(tmp_path_factory):
    out = tmp_path_factory.mktemp("flax-8dev")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([os.path.join(os.path.dirname(__file__), "..", "src"),
                                           os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, __file__, str(out)], capture_output=True, text=True, timeout=900, env=env,
                          cwd=os.path.dirname(__file__))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_pmap_and_sharded_jit_equal_single_device(multi_device):
    assert multi_device["devices"] == 8
    assert multi_device["batch_shards"] == 8  # the sharded-jit batch really is split over the devices
    assert multi_device["label_counts_per_device"] != [multi_device["label_counts_per_device"][0]] * 8
    for mode in ("pmap", "jit"):
        assert multi_device[f"{mode}_param_diff"] <= 1e-5, mode
        assert abs(multi_device[f"{mode}_loss"] - multi_device["single_loss"]) <= 1e-5, mode


@pytest.mark.slow
def test_loss_falls_over_20_steps(multi_device):
    for mode in ("pmap", "jit"):
        losses = multi_device[f"{mode}_losses"]
        assert len(losses) == 20 and losses[-1] < 0.7 * losses[0], (mode, losses)


@pytest.mark.slow
def test_each_device_gets_its_own_dropout_key(multi_device):
    assert multi_device["distinct_dropout_masks"] == 8


@pytest.mark.slow
def test_checkpoint_from_unreplicated_params(multi_device):
    assert multi_device["saved_equals_trained"]


def _multi_device_report(out_dir: str) -> dict:
    """Run in the subprocess with 8 host devices; everything the tests above assert."""
    cfg = config_for("masked_lm").replace(num_hidden_layers=1)  # one layer: a third less to compile
    model = MODEL_CLASSES["masked_lm"].from_config(cfg, seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, cfg.vocab_size, (16, 12))
    mask = (np.arange(12)[None] < rng.integers(4, 13, (16, 1))).astype(np.int64)  # ragged padding
    labels = np.where((mask == 1) & (rng.random((16, 12)) < 0.5), ids, -100)
    batch = {"input_ids": ids * mask, "attention_mask": mask, "labels": labels}
    key = jax.random.PRNGKey(0)
    optimizer = make_optimizer(1e-2, num_train_steps=20, warmup_steps=1)
    report = {"devices": jax.device_count(),
              "label_counts_per_device": [int((labels[i:i + 2] != -100).sum()) for i in range(0, 16, 2)]}

    single = jax.jit(functools.partial(train_step, head="masked_lm", config=cfg))
    want, metrics = single(create_train_state(model, optimizer), {k: jnp.asarray(v) for k, v in batch.items()}, key)
    report["single_loss"] = float(metrics["loss"])
    want_params = jax.device_get(want.params)
    for mode in ("pmap", "jit"):
        step = make_train_step(model, mode)
        state = step.place_state(create_train_state(model, optimizer))
        sharded = step.shard(batch)
        if mode == "jit":
            report["batch_shards"] = len(sharded["input_ids"].addressable_shards)
        losses = []
        for i in range(20):
            state, metrics = step(state, sharded, key)
            losses.append(float(np.asarray(metrics["loss"]).reshape(-1)[0]))
            if i == 0:
                diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), step.host_params(state), want_params)
                report[f"{mode}_param_diff"] = max(jax.tree.leaves(diff))
                report[f"{mode}_loss"] = losses[0]
        report[f"{mode}_losses"] = losses
        if mode == "pmap":
            trained = step.host_params(state)
            model.save_pretrained(os.path.join(out_dir, "trained"), params=trained)
            again = MODEL_CLASSES["masked_lm"].from_pretrained(os.path.join(out_dir, "trained")).params
            same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), again, trained)
            report["saved_equals_trained"] = all(jax.tree.leaves(same))

    # the dropout key of a pmapped step (dropout_key, what train_step uses): one per device
    keys = jax.pmap(lambda step: dropout_key(key, step, "data"), axis_name="data")(jnp.zeros(8, jnp.int32))
    masks = jax.pmap(lambda k: jax.random.bernoulli(k, 0.5, (64,)))(keys)
    report["distinct_dropout_masks"] = len({np.asarray(m).tobytes() for m in masks})
    return report


if __name__ == "__main__":
    print(json.dumps(_multi_device_report(sys.argv[1])))


@pytest.mark.slow
def test_docstring_examples_run():
    import doctest

    import roformer_flax
    from roformer_flax import modeling, training

    for module in (roformer_flax, modeling, training):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
