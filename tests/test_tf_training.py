"""roformer_tf training and deployment: one SGD step against PyTorch, model.fit (XLA, mixed precision,
user losses and metrics), masked positions, recomputation and bf16 training, the checks at fit's data
boundary, MirroredStrategy, Keras files and a SavedModel served without this package."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

import keras  # noqa: E402
from harness import (ALL_HEADS, assert_outputs_close, config_for, make_inputs, make_labels,  # noqa: E402
                     save_random_checkpoint, torch_outputs)
from test_tf_modeling import checkpoint, tf_device  # noqa: E402,F401  (shared fixtures)

import roformer_torch  # noqa: E402
import roformer_tf  # noqa: E402
from roformer_core import MaskedLMCollator  # noqa: E402
from roformer_core.errors import InputError  # noqa: E402
from roformer_tf import MODEL_CLASSES  # noqa: E402

SRC = os.path.dirname(os.path.dirname(os.path.abspath(roformer_tf.__file__)))
HEADS = [h for h in ALL_HEADS if h != "model"]


def _y(head, labels):
    """The ``y`` a dataset gives: the labels tensor, or (start, end) for QA."""
    return (labels["start_positions"], labels["end_positions"]) if head == "question_answering" else labels["labels"]


def _mlm_data(config, n=8, seq=12, seed=0):
    inputs = make_inputs(config, "masked_lm", batch=n, seq=seq, seed=seed)
    return inputs, make_labels(config, "masked_lm", inputs)["labels"]


def _run_python(code: str, payload, pythonpath: str):
    """Run ``code`` in a fresh interpreter (JSON in on stdin, the last line of stdout is JSON out)."""
    env = dict(os.environ, PYTHONPATH=pythonpath, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], input=json.dumps(payload), text=True,
                          capture_output=True, env=env, timeout=600, cwd="/")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- one optimizer step, Keras vs PyTorch ------------------------------------------------------------
def _assert_weights_match_torch(model, torch_model, atol=1e-5):
    state = torch_model.state_dict()
    moved = 0.0
    for name, variable, transpose in model.named_variables():
        array = variable.numpy()
        array = array.T if transpose else array
        np.testing.assert_allclose(array, state[name].numpy(), atol=atol, err_msg=name)
        moved = max(moved, float(np.abs(array).max()))
    assert moved > 0


def _torch_sgd_step(folder, head, inputs, labels, lr):
    model = roformer_torch.MODEL_CLASSES[head].from_pretrained(folder, dtype=torch.float32).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss = model(**{k: torch.as_tensor(v) for k, v in {**inputs, **labels}.items()}).loss
    loss.backward()
    optimizer.step()
    changed = max(float((model.state_dict()[k] - v).abs().max()) for k, v in before.items())
    assert changed > 1e-3, "the step should move the weights"
    return model, float(loss.detach())


@pytest.mark.parametrize("head", HEADS)
def test_one_sgd_step_matches_torch(head, checkpoint, tf_device):
    folder, config = checkpoint(head), config_for(head)
    inputs = make_inputs(config, head)
    labels = make_labels(config, head, inputs)
    torch_model, torch_loss = _torch_sgd_step(folder, head, inputs, labels, lr=0.5)
    with tf_device.scope():
        model = MODEL_CLASSES[head].from_pretrained(folder)
        optimizer = keras.optimizers.SGD(learning_rate=0.5)

    def step():
        with tf.GradientTape() as tape:
            loss = model(**inputs, **labels, training=True).loss
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    loss = tf_device.run(step)
    assert abs(float(loss) - torch_loss) < 1e-5
    _assert_weights_match_torch(model, torch_model)


def test_train_on_batch_without_a_loss_matches_torch(checkpoint):
    """The compiled graph path: compile() with no loss trains on the head's own loss (-100 ignored)."""
    folder, config = checkpoint("masked_lm"), config_for("masked_lm")
    inputs, labels = _mlm_data(config, n=4)
    torch_model, torch_loss = _torch_sgd_step(folder, "masked_lm", inputs, {"labels": labels}, lr=0.5)
    model = MODEL_CLASSES["masked_lm"].from_pretrained(folder)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    logs = model.train_on_batch(inputs, labels, return_dict=True)
    assert abs(logs["loss"] - torch_loss) < 1e-5
    _assert_weights_match_torch(model, torch_model)


# -- the head's own loss from fit's (x, y) -----------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_compute_loss_takes_labels_as_y_or_in_the_features(head, checkpoint):
    config = config_for(head)
    model = MODEL_CLASSES[head].from_pretrained(checkpoint(head))
    inputs = make_inputs(config, head)
    labels = make_labels(config, head, inputs)
    want = float(model(**inputs, **labels).loss)
    prediction = model(inputs)
    forms = [_y(head, labels), None] + ([labels] if head == "question_answering" else [])
    for y in forms:
        x = {**inputs, **labels} if y is None else inputs
        assert abs(float(model.compute_loss(x, y, prediction)) - want) < 1e-6
    with pytest.raises(InputError, match="needs"):
        model.compute_loss(inputs, None, prediction)


def test_the_bare_model_needs_a_compiled_loss():
    config = config_for("model")
    model = MODEL_CLASSES["model"](config)
    inputs = make_inputs(config, "model")
    with pytest.raises(InputError, match="no loss of its own"):
        model.compute_loss(inputs, None, model(inputs))
    model.compile(optimizer="sgd", loss="mse")
    target = np.zeros((2, 7, config.hidden_size), np.float32)
    want = float(np.mean(model(inputs).last_hidden_state.numpy() ** 2))
    assert abs(float(model.compute_loss(inputs, target, model(inputs))) - want) < 1e-5


@pytest.mark.parametrize("problem", ["regression", "single_label_classification", "multi_label_classification"])
def test_classification_problem_types_match_torch(problem, tmp_path):
    head = "sequence_classification"
    config = config_for(head).replace(problem_type=problem, num_labels=1 if problem == "regression" else 3)
    folder = save_random_checkpoint(tmp_path, config, head)
    inputs = make_inputs(config, head)
    rng = np.random.default_rng(0)
    labels = {"regression": rng.standard_normal((2, 1)).astype(np.float32),
              "single_label_classification": np.array([2, 0]),
              "multi_label_classification": rng.integers(0, 2, (2, 3)).astype(np.float32)}[problem]
    want = torch_outputs(folder, head, inputs, {"labels": labels})
    got = MODEL_CLASSES[head].from_pretrained(folder)(**inputs, labels=labels)
    assert_outputs_close({"loss": got.loss.numpy(), "logits": got.logits.numpy()}, want, keys=["loss", "logits"])


# -- model.fit ---------------------------------------------------------------------------------------
def test_fit_with_xla_lowers_the_loss(checkpoint):
    folder, config = checkpoint("masked_lm"), config_for("masked_lm")
    inputs, labels = _mlm_data(config)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(8)  # one step per epoch
    model = MODEL_CLASSES["masked_lm"].from_pretrained(folder)
    start = float(model(**inputs, labels=labels).loss)
    model.compile(optimizer=keras.optimizers.SGD(0.2), jit_compile=True)
    history = model.fit(dataset, epochs=4, verbose=0, shuffle=False).history["loss"]
    assert model.jit_compile
    assert abs(history[0] - start) < 1e-5  # the logged loss is the real loss before the first step
    assert all(b < a for a, b in zip(history, history[1:])), history
    assert float(model(**inputs, labels=labels).loss) < history[-1]


def test_fit_with_a_user_loss_and_metrics(checkpoint):
    head = "sequence_classification"
    folder, config = checkpoint(head), config_for(head)
    inputs = make_inputs(config, head, batch=8)
    labels = make_labels(config, head, inputs)["labels"]
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(4)
    model = MODEL_CLASSES[head].from_pretrained(folder)
    own = float(model(**inputs, labels=labels).loss)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def doubled(y_true, y_pred):  # differs from the head's own loss, so the test sees which one ran
        return 2.0 * cross_entropy(y_true, y_pred)

    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=doubled, metrics=["accuracy"])
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    assert abs(result["loss"] - 2 * own) < 1e-5
    logits = model.predict(dataset, verbose=0)["logits"]
    assert logits.shape == (8, config.num_labels)
    assert abs(result["accuracy"] - float(np.mean(logits.argmax(-1) == labels))) < 1e-6
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False).history
    assert set(history) == {"loss", "accuracy"}


def test_fit_takes_labels_inside_the_features(checkpoint):
    folder, config = checkpoint("question_answering"), config_for("question_answering")
    inputs = make_inputs(config, "question_answering", batch=4)
    labels = make_labels(config, "question_answering", inputs)
    model = MODEL_CLASSES["question_answering"].from_pretrained(folder)
    want = float(model(**inputs, **labels).loss)
    model.compile(optimizer="sgd")
    dataset = tf.data.Dataset.from_tensor_slices({**inputs, **labels}).batch(4)
    assert abs(model.evaluate(dataset, verbose=0) - want) < 1e-5


def test_fit_under_mixed_bfloat16(checkpoint):
    folder, config = checkpoint("masked_lm"), config_for("masked_lm")
    inputs, labels = _mlm_data(config)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = MODEL_CLASSES["masked_lm"].from_pretrained(folder)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.roformer.encoder.layer[0].attention.self.query.dtype_policy.name == "mixed_bfloat16"
    assert all(w.dtype == "float32" for w in model.weights)
    out = model(**inputs, labels=labels)
    assert out.logits.dtype == tf.bfloat16 and out.loss.dtype == tf.float32
    full = MODEL_CLASSES["masked_lm"].from_pretrained(folder)(**inputs).logits.numpy()
    assert np.abs(out.logits.numpy().astype(np.float32) - full).max() < 0.1  # bf16 rounding, not a mix-up
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    history = model.fit(tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(8), epochs=3, verbose=0,
                        shuffle=False).history["loss"]
    assert np.isfinite(history).all() and history[-1] < history[0], history


def test_fit_rejects_bad_input_with_a_clear_error(checkpoint):
    model = MODEL_CLASSES["masked_lm"].from_pretrained(checkpoint("masked_lm"))
    inputs, labels = _mlm_data(config_for("masked_lm"), n=4)
    model.compile(optimizer="sgd")
    bad = dict(inputs, input_ids=inputs["input_ids"].astype(np.float32))
    with pytest.raises(InputError, match="input_ids must hold integers"):
        model.fit(tf.data.Dataset.from_tensor_slices((bad, labels)).batch(4), verbose=0, shuffle=False)


# -- masked positions, recomputation, bf16 ---------------------------------------------------------
def _collator_batches(config, count, batch=8, seq=24, seed=0):
    """``count`` MaskedLMCollator batches (numpy dicts) of the same rows, masked differently each time."""
    collator = MaskedLMCollator(vocab_size=config.vocab_size, mask_token_id=4, pad_token_id=0,
                                special_ids=(0, 1, 2, 3, 4), max_length=seq, seed=seed)
    rng = np.random.default_rng(seed)
    rows = [[2] + rng.integers(5, 40, rng.integers(seq // 2, seq - 1)).tolist() + [3] for _ in range(batch)]
    return [collator(rows) for _ in range(count)]


def _stack(batches):
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


SEQUENCE = ("input_ids", "attention_mask", "token_type_ids")
MASKED = ("masked_positions", "masked_labels", "masked_weights")


def _loss_and_gradients(model, inputs):
    with tf.GradientTape() as tape:
        loss = model(**inputs, training=True).loss
    return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_weights)]


def _gradients(model, inputs, jit=None):
    """(loss, gradients as numpy): eager, or in one XLA-compiled function with ``jit=True``."""
    step = lambda: _loss_and_gradients(model, inputs)  # noqa: E731
    loss, grads = tf.function(step, jit_compile=True)() if jit else step()
    return float(loss), [g.numpy() for g in grads]


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_masked_positions_loss_and_gradients_equal_the_full_sequence(variant):
    config = config_for("masked_lm")
    if variant == "v2":
        config = config.replace(norm_type="rms_norm", use_bias=False, hidden_act="relu")
    keras.utils.set_random_seed(0)
    model = MODEL_CLASSES["masked_lm"](config)
    batch = _collator_batches(config, 1)[0]
    sequence = {k: batch[k] for k in SEQUENCE}
    assert (batch["masked_weights"] == 0).any()  # padded positions are part of the case
    full_loss, full = _gradients(model, {**sequence, "labels": batch["labels"]})
    masked_loss, masked = _gradients(model, {**sequence, **{k: batch[k] for k in MASKED}})
    assert abs(full_loss - masked_loss) < 1e-5
    for name, a, b in zip([w.path for w in model.trainable_weights], full, masked):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5, err_msg=name)
    # the logits are the full pass's at the gathered positions, and the weights are real weights
    out = model(**sequence, masked_positions=batch["masked_positions"])
    every = model(**sequence).logits.numpy()
    np.testing.assert_allclose(out.logits.numpy(), np.take_along_axis(every, batch["masked_positions"][..., None], 1),
                               atol=1e-5)
    labels = np.where(batch["masked_weights"] > 0, batch["masked_labels"], 3)  # no -100: the weights decide
    weights = batch["masked_weights"] * np.where(np.arange(labels.shape[1]) % 2, 2.0, 1.0)
    weighted = float(model(**sequence, masked_positions=batch["masked_positions"], masked_labels=labels,
                           masked_weights=weights).loss)
    log_probs = tf.nn.log_softmax(out.logits).numpy()
    picked = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    assert abs(weighted - (weights * picked).sum() / weights.sum()) < 1e-5


def test_fit_with_xla_on_collator_batches_uses_the_masked_positions(checkpoint, monkeypatch):
    import roformer_tf.modeling

    folder, config = checkpoint("masked_lm"), config_for("masked_lm")
    batches = _collator_batches(config, 4)
    model = MODEL_CLASSES["masked_lm"].from_pretrained(folder)
    start = np.mean([float(model(**b).loss) for b in batches])
    traced = []  # the length axis of the logits the step's loss is computed on
    loss = roformer_tf.modeling.token_cross_entropy
    monkeypatch.setattr(roformer_tf.modeling, "token_cross_entropy",
                        lambda logits, *a: traced.append(logits.shape[1]) or loss(logits, *a))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=True)
    # the collator's batches as they are (numpy dicts, the full-sequence labels too)
    dataset = tf.data.Dataset.from_tensor_slices(_stack(batches)).batch(8)
    history = model.fit(dataset, epochs=3, verbose=0, shuffle=False).history["loss"]
    assert set(traced) == {batches[0]["masked_positions"].shape[1]} and model.jit_compile  # only the P positions
    assert all(b < a for a, b in zip([start] + history, history)), (start, history)
    out = model(**batches[0])
    assert out.logits.shape == (8, batches[0]["masked_positions"].shape[1], config.vocab_size)


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(checkpoint, monkeypatch):
    """With dropout on: the recomputation draws the forward pass's dropout masks (eager and XLA)."""
    config = config_for("masked_lm")
    folder = checkpoint("masked_lm")
    dropout = dict(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    model = MODEL_CLASSES["masked_lm"].from_pretrained(folder, gradient_checkpointing=True, **dropout)
    assert model.is_gradient_checkpointing
    runs = []
    recompute_grad = tf.recompute_grad

    def counting(f):
        return recompute_grad(lambda *a: runs.append(1) or f(*a))

    monkeypatch.setattr(tf, "recompute_grad", counting)
    inputs, labels = _mlm_data(config, n=4)
    weights = {id(w) for w in model.weights}
    seeds = [v for v in model.variables if id(v) not in weights]  # the dropout layers' seed states
    start = [v.numpy() for v in seeds]

    def gradients(on, jit):
        model.gradient_checkpointing_enable(on)
        for v, value in zip(seeds, start):
            v.assign(value)
        return _gradients(model, {**inputs, "labels": labels}, jit)

    for jit in (False, True):
        runs.clear()
        plain = gradients(False, jit)
        assert not runs
        recomputed = gradients(True, jit)
        assert len(runs) == 2 * config.num_hidden_layers  # each layer: its forward pass, then once more
        assert abs(plain[0] - recomputed[0]) < 1e-6
        for a, b in zip(plain[1], recomputed[1]):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
        assert max(np.abs(a).max() for a in plain[1]) > 1e-3
    # inference never recomputes; and its loss differs from the training passes': dropout was on
    runs.clear()
    assert abs(float(model(**inputs, labels=labels).loss) - plain[0]) > 1e-4
    assert not runs and not model.gradient_checkpointing_disable().is_gradient_checkpointing


def test_twenty_bf16_steps_track_the_float32_loss_curve(checkpoint):
    """``mixed_bfloat16`` fit on collator batches (masked positions) against float32 from the same start.

    Tolerance: bfloat16 keeps 8 significant bits, so each matmul input is rounded by up to 2^-9
    (0.2%) relative; on this model the per-step losses (3-4.6 nats) then differ by a few 1e-3
    (3.6e-3 at most measured over 20 Adam steps). 0.02 nats allows that drift to grow five-fold
    while the float32 curve itself falls by more than 0.5 nats, with steps of 0.1 and more: a
    bf16 run that did not follow it step by step (a wrong loss, a diverging update) fails.
    """
    folder, config = checkpoint("masked_lm"), config_for("masked_lm")
    dataset = tf.data.Dataset.from_tensor_slices(_stack(_collator_batches(config, 20))).batch(8)

    def curve(policy):
        model = MODEL_CLASSES["masked_lm"].from_pretrained(folder, dtype=policy)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        means = []
        log = keras.callbacks.LambdaCallback(on_train_batch_end=lambda _, logs: means.append(float(logs["loss"])))
        model.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=[log])
        totals = np.asarray(means, np.float64) * np.arange(1, len(means) + 1)  # Keras logs the running mean
        return model, np.diff(totals, prepend=0.0)

    fp32_model, fp32 = curve("float32")
    bf16_model, bf16 = curve("mixed_bfloat16")
    assert len(fp32) == len(bf16) == 20
    out = bf16_model(**_collator_batches(config, 1, seed=3)[0])
    assert out.logits.dtype == tf.bfloat16 and out.loss.dtype == tf.float32  # bf16 compute, fp32 loss
    assert all(w.dtype == "float32" for w in bf16_model.weights)  # fp32 master weights
    assert fp32[0] - fp32[-5:].mean() > 0.5, fp32
    np.testing.assert_allclose(bf16, fp32, rtol=0, atol=0.02)
    assert np.abs(bf16 - fp32).max() > 0  # bf16 really ran


# -- fit's data boundary: bad batches are one InputError before any compiled step ----------------------
def _bad(case, inputs, labels, collated):
    """(features, labels) of one bad case; the first batch of 2 holds the bad value."""
    inputs, labels, collated = dict(inputs), labels.copy(), dict(collated)
    if case == "id past the vocabulary":
        inputs["input_ids"] = inputs["input_ids"].copy()
        inputs["input_ids"][1, 2] = 99
    elif case == "id -1":
        inputs["input_ids"] = inputs["input_ids"].copy()
        inputs["input_ids"][0, 1] = -1
    elif case == "token type 2":
        inputs["token_type_ids"] = np.full_like(inputs["input_ids"], 2)
    elif case == "label past the vocabulary":
        labels[0, 3] = 150
    elif case == "masked position past the sequence":
        collated["masked_positions"] = collated["masked_positions"].copy()
        collated["masked_positions"][1, 0] = 30
        return collated, None
    elif case == "masked label past the vocabulary":
        collated["masked_labels"] = collated["masked_labels"].copy()
        collated["masked_labels"][0, 0] = 120
        return collated, None
    return inputs, labels


BAD_BATCHES = {
    "id past the vocabulary": "input_ids holds ids up to 99, outside [0, 99) (config vocab_size = 99)",
    "id -1": "input_ids holds ids down to -1, outside [0, 99) (config vocab_size = 99)",
    "token type 2": "token_type_ids holds ids up to 2, outside [0, 2) (config type_vocab_size = 2)",
    "label past the vocabulary": "labels holds 150, outside [0, 99) (vocab_size = 99); -100 marks a position "
                                 "without a label",
    "masked position past the sequence": "masked_positions holds 30, outside [0, 24) (the sequence length)",
    "masked label past the vocabulary": "masked_labels holds 120, outside [0, 99) (vocab_size = 99); -100 marks "
                                        "padding",
}


def _one_line(call, message):
    with pytest.raises(InputError) as info:
        call()
    assert str(info.value) == message
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


@pytest.mark.parametrize("jit", [True, False])
def test_fit_checks_every_batch_at_its_data_boundary(checkpoint, jit):
    """Under XLA, out-of-range ids would gather garbage and graph mode reads id -1 as the last row,
    silently; a bad batch from a dataset, arrays, a generator or validation data, in fit, evaluate,
    predict or train_on_batch, is the eager path's one InputError, before any step runs on it."""
    folder, config = checkpoint("masked_lm"), config_for("masked_lm")
    model = MODEL_CLASSES["masked_lm"].from_pretrained(folder)
    model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit)
    before = [w.numpy() for w in model.weights]
    inputs, labels = _mlm_data(config, n=4, seq=24)
    collated = _collator_batches(config, 1, batch=4)[0]
    cases = BAD_BATCHES if jit else {k: BAD_BATCHES[k] for k in ("id -1", "label past the vocabulary")}
    for case, message in cases.items():
        x, y = _bad(case, inputs, labels, collated)
        eager = (lambda: model(**x, labels=y)) if y is not None else (lambda: model(**x))
        _one_line(eager, message)  # the eager path's message, word for word
        dataset = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y)).batch(2)
        _one_line(lambda: model.fit(dataset, verbose=0, shuffle=False), message)
        _one_line(lambda: model.fit(x, y, batch_size=2, verbose=0, shuffle=False), message)
        for w, b in zip(model.weights, before):
            np.testing.assert_array_equal(w.numpy(), b, err_msg=case)  # no step ran
    x, y = _bad("id -1", inputs, labels, collated)
    good = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(2)
    bad = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    message = BAD_BATCHES["id -1"]
    _one_line(lambda: model.evaluate(bad, verbose=0), message)
    _one_line(lambda: model.predict(bad, verbose=0), message)
    _one_line(lambda: model.train_on_batch(x, y), message)
    _one_line(lambda: model.fit((b for b in [(inputs, labels), (x, y)]), verbose=0, shuffle=False), message)
    _one_line(lambda: model.fit(good, validation_data=bad, verbose=0, shuffle=False), message)
    _one_line(lambda: model.fit(good, validation_data=(x, y), verbose=0, shuffle=False), message)
    assert np.isfinite(model.fit(good, validation_data=good, verbose=0, shuffle=False).history["val_loss"]).all()


# -- distribution ----------------------------------------------------------------------------------
MIRRORED = """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]  # before TensorFlow initialises its devices
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from roformer_tf import RoFormerForMaskedLM

    p = json.load(sys.stdin)
    features = {k: np.asarray(v) for k, v in p["features"].items()}
    labels = np.asarray(p["labels"])

    def train(strategy):
        dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(len(labels))
        with strategy.scope():
            model = RoFormerForMaskedLM.from_pretrained(p["checkpoint"])
            model.compile(optimizer=keras.optimizers.SGD(0.5))
        loss = model.fit(dataset, epochs=2, verbose=0, shuffle=False).history["loss"]
        return {name: v.numpy() for name, v, _ in model.named_variables()}, loss

    initial = {name: v.numpy() for name, v, _ in RoFormerForMaskedLM.from_pretrained(p["checkpoint"]).named_variables()}
    single, single_loss = train(tf.distribute.get_strategy())
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored, mirrored_loss = train(strategy)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "diff": max(float(np.abs(single[k] - mirrored[k]).max()) for k in single),
        "moved": max(float(np.abs(single[k] - initial[k]).max()) for k in single),
        "single_loss": single_loss, "mirrored_loss": mirrored_loss}))
"""


@pytest.mark.slow
def test_mirrored_strategy_equals_one_device(checkpoint):
    """Two logical CPUs, one global batch of 8 split 4 + 4 with unequal numbers of ignored labels."""
    config = config_for("masked_lm")
    inputs, labels = _mlm_data(config)
    labels[:4, ::2] = -100  # the first replica's half has far fewer real labels
    result = _run_python(MIRRORED, {"checkpoint": checkpoint("masked_lm"), "labels": labels.tolist(),
                                    "features": {k: v.tolist() for k, v in inputs.items()}}, SRC)
    assert result["replicas"] == 2
    assert result["moved"] > 1e-3
    assert result["diff"] <= 1e-5, result
    np.testing.assert_allclose(result["mirrored_loss"], result["single_loss"], atol=1e-5)


# -- Keras files and SavedModel ------------------------------------------------------------------------
def test_keras_weights_and_model_files_reload(checkpoint, tmp_path):
    head = "question_answering"
    folder, config = checkpoint(head), config_for(head)
    inputs = make_inputs(config, head)
    model = MODEL_CLASSES[head].from_pretrained(folder)
    want = model(inputs)

    model.save_weights(tmp_path / "m.weights.h5")
    fresh = MODEL_CLASSES[head](config)
    fresh.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_array_equal(fresh(inputs).start_logits.numpy(), want.start_logits.numpy())

    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded) is MODEL_CLASSES[head] and loaded.config == config
    np.testing.assert_array_equal(loaded(inputs).end_logits.numpy(), want.end_logits.numpy())
    assert type(MODEL_CLASSES[head].from_config(model.get_config())) is MODEL_CLASSES[head]


def test_keras_weights_files_of_the_earlier_layout_still_load(tmp_path):
    """Files written before the output blocks were ``output_block`` keep them under ``_output_for_saving``."""
    import h5py

    head = "causal_lm"
    config = config_for(head, "decoder_cross")
    keras.utils.set_random_seed(3)
    model = MODEL_CLASSES[head](config)
    path = tmp_path / "old.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r+") as f:
        groups = []
        f.visit(lambda name: groups.append(name) if name.endswith("/output_block") else None)
        assert len(groups) == 3 * config.num_hidden_layers  # attention, crossattention and the layer's own
        for name in groups:
            f.move(name, name[:-len("output_block")] + "_output_for_saving")
    fresh = MODEL_CLASSES[head](config)
    fresh.load_weights(path)
    for (name, want, _), (_, got, _) in zip(model.named_variables(), fresh.named_variables()):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=name)
    with pytest.raises(ValueError, match="could not be loaded"):  # a file of another shape still fails
        MODEL_CLASSES[head](config.replace(intermediate_size=48)).load_weights(path)


def test_from_roformer_config_and_from_config():
    """``from_roformer_config`` builds from a RoFormerConfig; ``from_config`` is Keras' hook for
    ``get_config`` dicts and still takes a RoFormerConfig, as earlier code calls it."""
    config = config_for("sequence_classification")
    cls = MODEL_CLASSES["sequence_classification"]
    built = cls.from_roformer_config(config, dtype="bfloat16")
    assert type(built) is cls and built.config == config and built.weights[0].dtype == "bfloat16"
    assert cls.from_config(config, dtype="bfloat16").weights[0].dtype == "bfloat16"
    assert cls.from_config(config.to_dict()).config == config
    again = cls.from_config(cls(config, name="classifier", trainable=False).get_config())
    assert (again.name, again.trainable, again.config) == ("classifier", False, config)


SERVE = """
    import importlib, json, sys
    for name in ("roformer_core", "roformer_tf", "roformer_torch", "roformer_flax"):
        sys.modules[name] = None  # not importable here, even when installed
    try:
        importlib.import_module("roformer_tf")
        raise SystemExit("roformer_tf is importable")
    except ImportError:
        pass
    import numpy as np, tensorflow as tf

    p = json.load(sys.stdin)
    serve = tf.saved_model.load(p["path"]).signatures["serving_default"]
    out = serve(**{k: tf.constant(v, tf.int32) for k, v in p["inputs"].items()})
    print(json.dumps({"inputs": sorted(serve.structured_input_signature[1]),
                      "outputs": {k: v.numpy().tolist() for k, v in out.items()}}))
"""


@pytest.mark.slow
def test_saved_model_serves_in_a_fresh_process_without_this_package(checkpoint, tmp_path):
    """Exported, loaded by bare TensorFlow, and run on 70 positions (past max_position_embeddings=64)."""
    folder, config = checkpoint("masked_lm"), config_for("masked_lm")
    inputs = make_inputs(config, "masked_lm", seq=70)
    MODEL_CLASSES["masked_lm"].from_pretrained(folder).export(tmp_path / "served", verbose=False)
    result = _run_python(SERVE, {"path": str(tmp_path / "served"),
                                 "inputs": {k: v.tolist() for k, v in inputs.items()}}, "")
    assert result["inputs"] == ["attention_mask", "input_ids", "token_type_ids"]
    assert list(result["outputs"]) == ["logits"]
    want = torch_outputs(folder, "masked_lm", inputs)
    assert_outputs_close({"logits": np.asarray(result["outputs"]["logits"])}, want, keys=["logits"])
