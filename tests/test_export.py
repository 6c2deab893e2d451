"""Serving exports: every PyTorch head as ONNX (dynamic batch and length, run by onnxruntime) and the
Flax models as ``jax.export`` StableHLO (symbolic batch and length, serialized and read back), each
against the eager model of the same weights, on shapes other than the traced one, padding and
lengths past ``max_position_embeddings`` included."""

import numpy as np
import pytest
from harness import ALL_HEADS, config_for, make_inputs

from roformer_core.errors import InputError

#: (batch, seq): neither is the traced example's; 70 is past the tiny configs' 64 positions
SHAPES = ((3, 11), (1, 70))


@pytest.mark.parametrize("head", ALL_HEADS)
def test_onnx_export_equals_eager_torch(head, tmp_path):
    import torch

    from roformer_torch import MODEL_CLASSES
    from roformer_torch.export import export_onnx, onnx_session, run_onnx

    config = config_for(head, "rotary_value")
    torch.manual_seed(0)
    model = MODEL_CLASSES[head](config).train()  # the export runs in eval mode and leaves the mode as it was
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # biases and norms off their 0 and 1
    session = onnx_session(export_onnx(model, tmp_path / f"{head}.onnx"))
    assert model.training
    model.eval()
    for batch, seq in SHAPES:
        inputs = make_inputs(config, head, batch=batch, seq=seq)
        got = run_onnx(session, inputs)
        with torch.no_grad():
            want = model(**{k: torch.as_tensor(v) for k, v in inputs.items()})
        assert set(got) == {k for k in want.keys() if k in got} and len(got) >= 1
        for field, value in got.items():
            expected = getattr(want, field).numpy()
            assert value.shape == expected.shape, field
            np.testing.assert_allclose(value, expected, atol=1e-5, rtol=0, err_msg=f"{head}.{field} {batch}x{seq}")


def test_onnx_export_refuses_what_it_cannot_serve(tmp_path):
    import torch

    from roformer_torch import RoFormerModel
    from roformer_torch.export import export_onnx, onnx_session, run_onnx

    model = RoFormerModel(config_for("model")).to(torch.bfloat16)
    with pytest.raises(InputError, match="float32 or float16"):
        export_onnx(model, tmp_path / "bf16.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written
    with pytest.raises(InputError, match="no ONNX file"):
        onnx_session(tmp_path / "missing.onnx")
    session = onnx_session(export_onnx(model.float(), tmp_path / "m.onnx"))
    with pytest.raises(InputError, match="not labels"):
        run_onnx(session, {"input_ids": np.array([[2, 3]]), "labels": np.array([[2, 3]])})


@pytest.mark.parametrize("head", ["masked_lm", "causal_lm", "multiple_choice"])
def test_jax_export_round_trip_equals_eager_flax(head, tmp_path):
    import jax

    from roformer_flax import MODEL_CLASSES
    from roformer_flax.export import export_model, load_exported, run_exported, save_exported

    config = config_for(head)
    model = MODEL_CLASSES[head].from_config(config, seed=1)
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(2), p.shape, p.dtype),
                          model.params)
    model.params = params
    exported = load_exported(save_exported(export_model(model, max_length=128), tmp_path / head))
    assert "batch" in str(exported.in_avals[-3].shape) and "seq" in str(exported.in_avals[-3].shape)
    for batch, seq in SHAPES:
        inputs = make_inputs(config, head, batch=batch, seq=seq)
        got = run_exported(exported, params, inputs)
        with jax.default_matmul_precision("highest"):
            want = model(**inputs)
        for field, value in got.items():
            np.testing.assert_allclose(value, np.asarray(getattr(want, field)), atol=1e-5, rtol=0,
                                       err_msg=f"{head}.{field} {batch}x{seq}")
    with pytest.raises(InputError, match="do not fit the exported shapes"):
        run_exported(exported, params, make_inputs(config, head, batch=1, seq=130))


def test_jax_export_bad_files_are_one_clear_error(tmp_path):
    from roformer_flax.export import load_exported

    (tmp_path / "junk").write_bytes(b"not an export")
    with pytest.raises(InputError, match="not a serialized jax.export"):
        load_exported(tmp_path / "junk")
    with pytest.raises(InputError, match="no exported model"):
        load_exported(tmp_path / "missing")
