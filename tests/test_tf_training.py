"""roformer_tf training and deployment: one SGD step against PyTorch, model.fit (XLA, mixed precision,
user losses and metrics), MirroredStrategy, Keras files and a SavedModel served without this package."""

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
