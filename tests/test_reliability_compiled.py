"""No silent garbage from compiled paths: every way a batch reaches a compiled step is checked first.

Under XLA and ``jax.jit`` an id past the vocabulary gathers garbage (or NaN) instead of failing, and
graph mode wraps -1 to the last row; so each compiled entry point checks its batch on the host. Each
case is written once and run for every backend through the shared adapter where the entry point is
shared (``generate``, the pipelines, empty inputs), and per framework where it is the framework's
own (Keras ``fit``, Flax ``make_train_step``).
"""

import numpy as np
import pytest

from roformer_core import RoFormerConfig
from roformer_core.backends import get_backend
from roformer_core.errors import InputError

BACKENDS = ("torch", "keras", "flax")
CONFIG = RoFormerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_generate_refuses_ids_past_the_vocabulary(backend):
    adapter = get_backend(backend)
    model = adapter.from_config("causal_lm", CONFIG.replace(is_decoder=True))
    with pytest.raises(InputError, match=r"input_ids holds ids up to 77, outside \[0, 50\)"):
        adapter.generate(model, np.array([[2, 77]]), max_new_tokens=2)
    with pytest.raises(InputError, match="down to -1"):
        adapter.generate(model, np.array([[2, -1]]), max_new_tokens=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_inference_refuses_what_eager_refuses(backend):
    """The adapter's compiled forward (``predictor``: tf.function / jax.jit) checks before it runs."""
    adapter = get_backend(backend)
    model = adapter.from_config("sequence_classification", CONFIG)
    predict = adapter.predictor(model)
    assert predict({"input_ids": np.array([[2, 7, 3]])}).shape == (1, 2)
    for bad, message in ((np.array([[2, 50, 3]]), "outside"), (np.array([[2, -1, 3]]), "down to -1")):
        with pytest.raises(InputError, match=message):
            predict({"input_ids": bad})


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_gives_empty_outputs_and_empty_sequence_one_error(backend):
    adapter = get_backend(backend)
    for head, field, shape in (("model", "last_hidden_state", (0, 5, 16)), ("masked_lm", "logits", (0, 5, 50)),
                               ("sequence_classification", "logits", (0, 2))):
        model = adapter.from_config(head, CONFIG)
        assert adapter.run(model, {"input_ids": np.zeros((0, 5), np.int64)})[field].shape == shape
        with pytest.raises(InputError, match="sequence length 0"):
            adapter.run(model, {"input_ids": np.zeros((2, 0), np.int64)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels_outside_the_head_are_one_error(backend):
    adapter = get_backend(backend)
    ids = np.array([[2, 7, 3]])
    cases = (("masked_lm", {"labels": np.array([[-100, 60, -100]])}, r"labels holds 60, outside \[0, 50\)"),
             ("token_classification", {"labels": np.array([[0, 5, 1]])}, r"labels holds 5, outside \[0, 2\)"),
             ("sequence_classification", {"labels": np.array([3])}, r"labels holds 3, outside \[0, 2\)"),
             ("sequence_classification", {"labels": np.zeros((1, 5), np.float32)}, "labels has shape"))
    for head, labels, message in cases:
        with pytest.raises(InputError, match=message):
            adapter.run(adapter.from_config(head, CONFIG), {"input_ids": ids, **labels})


def test_keras_fit_under_xla_refuses_a_bad_batch_in_one_line():
    import keras

    model = get_backend("keras").from_config("masked_lm", CONFIG)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    before = [w.numpy().copy() for w in model.weights]
    ids = np.array([[2, 7, 3, 4], [2, 49, 60, 3]])
    with pytest.raises(InputError, match="input_ids holds ids up to 60") as info:
        model.fit({"input_ids": ids, "labels": np.where(ids < 50, ids, -100)}, epochs=1, batch_size=2, verbose=0)
    assert "\n" not in str(info.value)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))  # no step was taken


def test_flax_train_step_refuses_a_bad_batch_before_the_parameters_turn_to_nan():
    import jax

    from roformer_flax.training import create_train_state, make_optimizer, make_train_step

    model = get_backend("flax").from_config("masked_lm", CONFIG)
    step = make_train_step(model, "jit")
    state = step.place_state(create_train_state(model, make_optimizer(1e-3, num_train_steps=10)))
    ids = np.array([[2, 7, 3, 4], [2, 9, 60, 3]] * (step.num_devices if step.num_devices > 1 else 1))
    with pytest.raises(InputError, match="input_ids holds ids up to 60"):
        step(state, step.shard({"input_ids": ids, "labels": np.where(ids < 50, ids, -100)}), jax.random.PRNGKey(0))
