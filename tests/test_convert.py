"""roformer-convert on its own: exact round trips, shards, dtypes, heads, inspect, verify, bad input.

The reference-made checkpoints are in test_convert_reference.py; everything here runs
without the oracle.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
import torch

from harness import config_for, save_random_checkpoint
from roformer_convert import api, convert, inspect
from roformer_convert.cli import main
from roformer_convert.formats import FILE_NAMES, tf1_to_canonical
from roformer_core.checkpoint import WEIGHTS_INDEX_NAME, WEIGHTS_NAME, Checkpoint, canonical_spec
from roformer_core.safetensors_io import (SafetensorsReader, bf16_bits_to_float32, float32_to_bf16_bits,
                                          write_safetensors)

WRITABLE = ["canonical", "tf-h5", "flax", "keras"]
HEADS = ["model", "masked_lm", "causal_lm", "sequence_classification", "multiple_choice", "token_classification",
         "question_answering"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random canonical checkpoints, made once per (head, variant)."""
    root = tmp_path_factory.mktemp("canonical")
    made = {}

    def get(head="masked_lm", variant="default"):
        if (head, variant) not in made:
            made[head, variant] = save_random_checkpoint(root / f"{head}-{variant}", config_for(head, variant), head)
        return made[head, variant]
    return get


def tensors(folder) -> dict[str, np.ndarray]:
    ckpt = Checkpoint(folder)
    return {n: np.array(ckpt.get(n)) for n in ckpt.names()}


def assert_identical(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, name
        assert np.array_equal(got[name].view(np.uint8), want[name].view(np.uint8)), name


def through(src, formats, tmp_path, **options):
    """Convert ``src`` through each format in turn, then back to canonical; return the last folder."""
    current = src
    for i, fmt in enumerate(list(formats) + ["canonical"]):
        nxt = tmp_path / f"{i}-{fmt}"
        convert(current, nxt, to=fmt, **options)
        current = nxt
    return current


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# -- exactness -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("first,second", [p for p in itertools.product(WRITABLE, WRITABLE) if p[0] != p[1]])
def test_round_trip_between_every_pair_of_formats_is_bit_exact(checkpoints, first, second, tmp_path):
    src = checkpoints("masked_lm")
    assert_identical(tensors(through(src, [first, second], tmp_path)), tensors(src))


@pytest.mark.parametrize("head", HEADS)
def test_every_head_survives_every_format(checkpoints, head, tmp_path):
    src = checkpoints(head)
    for fmt in WRITABLE[1:]:
        back = through(src, [fmt], tmp_path / fmt)
        assert_identical(tensors(back), tensors(src))
        assert inspect(back).head == head


@pytest.mark.parametrize("variant", ["embedding_size", "decoder_cross", "rotary_value"])
def test_config_variants_survive_every_format(checkpoints, variant, tmp_path):
    head = "causal_lm" if variant == "decoder_cross" else "masked_lm"
    src = checkpoints(head, variant)
    for fmt in WRITABLE[1:]:
        back = through(src, [fmt], tmp_path / fmt)
        assert_identical(tensors(back), tensors(src))
        assert Checkpoint(back).config == Checkpoint(src).config


def test_untied_decoder_goes_through_flax_and_keras_but_not_the_reference_tf_format(tmp_path, capsys):
    config = config_for("masked_lm").replace(tie_word_embeddings=False)
    src = save_random_checkpoint(tmp_path / "untied", config, "masked_lm")
    assert "cls.predictions.decoder.weight" in tensors(src)
    for fmt in ("flax", "keras"):
        assert_identical(tensors(through(src, [fmt], tmp_path / fmt)), tensors(src))
    code, _, err = cli(capsys, src, tmp_path / "tf", "--to", "tf-h5")
    assert code == 2 and "untied decoder" in err and not (tmp_path / "tf").exists()


def test_reference_style_bin_with_table_and_tied_decoder(checkpoints, tmp_path):
    """An older reference .bin: the whole state dict, sinusoid table and tied decoder included."""
    src = checkpoints("masked_lm")
    state = {n: torch.from_numpy(a) for n, a in tensors(src).items()}
    state["roformer.encoder.embed_positions.weight"] = torch.zeros(64, 8)
    state["cls.predictions.decoder.weight"] = state["roformer.embeddings.word_embeddings.weight"]
    state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    for legacy in (False, True):  # zip (memory-mapped) and the legacy non-zip pickle
        folder = tmp_path / f"bin-{legacy}"
        folder.mkdir()
        torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=not legacy)
        Checkpoint(src).config.save(folder)
        result = convert(folder, tmp_path / f"out-{legacy}")
        assert (result.source_format, result.head) == ("torch", "masked_lm")
        assert_identical(tensors(tmp_path / f"out-{legacy}"), tensors(src))


def test_bfloat16_bin_reads_exactly(checkpoints, tmp_path):
    src = checkpoints("question_answering")
    state = {n: torch.from_numpy(a).to(torch.bfloat16) for n, a in tensors(src).items()}
    (tmp_path / "bin").mkdir()
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    Checkpoint(src).config.save(tmp_path / "bin")
    convert(tmp_path / "bin", tmp_path / "out")
    got = tensors(tmp_path / "out")
    for name, value in state.items():
        assert np.array_equal(got[name], value.view(torch.int16).numpy().view(np.uint16)), name
        assert Checkpoint(tmp_path / "out").dtype(name) == "BF16"


@pytest.mark.parametrize("head", ["masked_lm", "multiple_choice"])
def test_files_saved_by_the_keras_and_flax_backends_themselves(checkpoints, head, tmp_path):
    """roformer_tf's ``save_weights`` and roformer_flax's msgpack, written by the backends, read back exactly."""
    import roformer_flax
    import roformer_tf

    src = checkpoints(head)
    config = Checkpoint(src).config
    (tmp_path / "keras").mkdir()
    config.save(tmp_path / "keras")
    roformer_tf.MODEL_CLASSES[head].from_pretrained(src).save_weights(str(tmp_path / "keras" / "ours.weights.h5"))
    roformer_flax.MODEL_CLASSES[head].from_pretrained(src).save_pretrained(tmp_path / "flax", flax_msgpack=True)
    os.remove(tmp_path / "flax" / WEIGHTS_NAME)  # leave only the msgpack
    for kind in ("keras", "flax"):
        result = convert(tmp_path / kind, tmp_path / f"{kind}-back")
        assert (result.source_format, result.head) == (kind, head)
        assert_identical(tensors(tmp_path / f"{kind}-back"), tensors(src))


def _bert_name(name: str) -> str:
    """The original TF1 variable name of a canonical name (written out the way bert4keras named them)."""
    name = name.replace("roformer.embeddings_project.", "bert.encoder.embedding_hidden_mapping_in.")
    name = re.sub(r"encoder\.layer\.(\d+)\.", r"encoder.layer_\1.", name.replace("roformer.", "bert."))
    name = name.replace("cls.predictions.bias", "cls.predictions.output_bias")
    name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
    name = name.replace("_embeddings.weight", "_embeddings")
    name = name.replace(".weight", ".kernel")
    return name.replace(".", "/")


def test_tf1_checkpoint_with_projection_optimizer_slots_and_pooler(tmp_path):
    """embedding_hidden_mapping_in -> embeddings_project; the pooler kept (RoFormer-Sim has one); NSP head,
    Adam slots and global_step skipped."""
    import tensorflow as tf  # only to write the checkpoint; the converter reads it without TensorFlow

    config = config_for("masked_lm", "embedding_size")
    src = save_random_checkpoint(tmp_path / "src", config, "masked_lm")
    want = tensors(src)
    values = {}
    for name, array in want.items():
        original = _bert_name(name)
        assert tf1_to_canonical(original) == (name, original.endswith("kernel"))
        values[original] = array.T if original.endswith("kernel") else array
        values[original + "/adam_m"] = np.ones_like(values[original])
    pooler = np.random.default_rng(3).standard_normal((32, 32)).astype(np.float32)  # [in, out] in TF1
    values.update({"global_step": np.int64(7), "bert/pooler/dense/kernel": pooler,
                   "bert/pooler/dense/bias": np.arange(32, dtype=np.float32),
                   "cls/seq_relationship/output_bias": np.ones(2, np.float32)})
    ckpt = tmp_path / "tf1"
    tf.compat.v1.train.Saver(var_list={n: tf.Variable(v) for n, v in values.items()}).save(
        None, str(ckpt / "bert_model.ckpt"))
    config.save(ckpt)
    (ckpt / "config.json").rename(ckpt / "bert_config.json")
    result = convert(ckpt, tmp_path / "out")
    assert result.source_format == "tf1"
    want.update({"roformer.pooler.dense.weight": np.ascontiguousarray(pooler.T), "roformer.pooler.dense.bias": np.arange(32, dtype=np.float32)})
    assert_identical(tensors(tmp_path / "out"), want)


# -- shards, dtypes, heads ---------------------------------------------------------------------------------
def test_sharded_out_and_in(checkpoints, tmp_path, capsys):
    src = checkpoints("masked_lm")
    code, _, _ = cli(capsys, src, tmp_path / "sharded", "--max-shard-size", "20KB")
    assert code == 0
    files = sorted(p.name for p in (tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(files) > 2 and WEIGHTS_INDEX_NAME in os.listdir(tmp_path / "sharded")
    assert not (tmp_path / "sharded" / WEIGHTS_NAME).exists()
    for file in files:
        reader = SafetensorsReader(tmp_path / "sharded" / file)
        sizes = [reader.get(n).nbytes for n in reader.names()]
        assert sum(sizes) <= 20_000 or len(sizes) == 1
    assert_identical(tensors(tmp_path / "sharded"), tensors(src))
    # sharded in: to another format and back, and into a single file over the shards with --force
    assert_identical(tensors(through(tmp_path / "sharded", ["flax"], tmp_path / "via-flax")), tensors(src))
    code, _, _ = cli(capsys, tmp_path / "sharded", tmp_path / "sharded", "--force")
    assert code == 0
    assert sorted(os.listdir(tmp_path / "sharded")) == ["config.json", WEIGHTS_NAME]
    assert_identical(tensors(tmp_path / "sharded"), tensors(src))


def test_dtype_casts(checkpoints, tmp_path, capsys):
    src = checkpoints("sequence_classification")
    want = tensors(src)
    convert(src, tmp_path / "bf16", dtype="bfloat16")
    bf16 = tensors(tmp_path / "bf16")
    assert all(Checkpoint(tmp_path / "bf16").dtype(n) == "BF16" for n in bf16)
    assert_identical(bf16, {n: float32_to_bf16_bits(a) for n, a in want.items()})
    # bfloat16 round trips exactly through flax and keras, and widens exactly back to float32
    for fmt in ("flax", "keras"):
        assert_identical(tensors(through(tmp_path / "bf16", [fmt], tmp_path / fmt)), bf16)
    convert(tmp_path / "bf16", tmp_path / "f32", dtype="float32")
    assert_identical(tensors(tmp_path / "f32"), {n: bf16_bits_to_float32(a) for n, a in bf16.items()})
    # float16 through the reference TF format
    assert_identical(tensors(through(src, ["tf-h5"], tmp_path / "f16", dtype="float16")),
                     {n: a.astype(np.float16) for n, a in want.items()})
    code, _, err = cli(capsys, tmp_path / "bf16", tmp_path / "tf", "--to", "tf-h5")
    assert code == 2 and "bfloat16" in err and not (tmp_path / "tf").exists()
    config = Checkpoint(tmp_path / "bf16").config
    assert config.extra["architectures"] == ["RoFormerForSequenceClassification"]


def test_head_drop_keep_and_choose(checkpoints, tmp_path, capsys):
    src = checkpoints("masked_lm")
    want = tensors(src)
    code, _, err = cli(capsys, src, tmp_path / "bare", "--head", "drop")
    assert code == 0 and "left out" in err and "cls.predictions.bias" in err
    bare = tensors(tmp_path / "bare")
    assert list(bare) == list(canonical_spec(Checkpoint(src).config, "model"))
    assert_identical(bare, {n: want["roformer." + n] for n in bare})
    code, _, err = cli(capsys, src, tmp_path / "qa", "--head", "question_answering")
    assert code == 2 and "no weights for the question_answering head" in err
    assert not (tmp_path / "qa").exists()
    # multiple choice and one-label token classification have the same tensors: the config tells them apart
    mc = checkpoints("multiple_choice")
    assert inspect(mc).head == "multiple_choice"
    config = Checkpoint(mc).config.replace(num_labels=1)
    config.extra.pop("architectures", None)
    assert api.detect_head({n: Checkpoint(mc).shape(n) for n in Checkpoint(mc).names()}, config) \
        == "token_classification"
    config.extra["architectures"] = ["TFRoFormerForMultipleChoice"]
    assert api.detect_head({n: Checkpoint(mc).shape(n) for n in Checkpoint(mc).names()}, config) \
        == "multiple_choice"


def test_vocab_and_tokenizer_files_are_carried(checkpoints, tmp_path):
    src = tmp_path / "src"
    convert(checkpoints("model"), src)
    (src / "vocab.txt").write_text("[PAD]\n[UNK]\n你\n")
    (src / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    for fmt in WRITABLE:
        convert(src, tmp_path / fmt, to=fmt)
        assert (tmp_path / fmt / "vocab.txt").read_text() == "[PAD]\n[UNK]\n你\n"
        assert (tmp_path / fmt / "tokenizer_config.json").exists()
        assert FILE_NAMES[fmt] in os.listdir(tmp_path / fmt)


# -- inspect, verify, the command line --------------------------------------------------------------------
def test_inspect(checkpoints, tmp_path, capsys):
    src = checkpoints("token_classification")
    convert(src, tmp_path / "tf", to="tf-h5")
    code, out, _ = cli(capsys, "inspect", tmp_path / "tf")
    spec = canonical_spec(Checkpoint(src).config, "token_classification")
    assert code == 0
    assert "format:      tf-h5" in out and "token_classification" in out
    assert f"parameters:  {sum(int(np.prod(s)) for s in spec.values()):,}" in out
    line = next(line for line in out.splitlines() if "roformer.encoder.layer.1.output.dense.weight" in line)
    assert line.split()[1:] == ["F32", "[32,", "37]"]  # canonical [out, in], though the h5 holds [in, out]
    assert "embed_positions" in out and "(ignored" in out  # the reference TF table is listed but not used


def test_verify_all_backends_and_a_failing_one(checkpoints, tmp_path, capsys, monkeypatch):
    src = checkpoints("question_answering")
    code, out, _ = cli(capsys, "verify", src)
    assert code == 0, out
    for backend in api.BACKENDS:
        assert backend in out
    assert "start_logits" in out and "end_logits" in out

    from roformer_core import backends
    from roformer_torch.adapter import TorchBackend

    class Drifting(TorchBackend):  # a backend whose start logits are off by 1e-3
        def forward(self, model, inputs, **options):
            out = super().forward(model, inputs, **options)
            out.start_logits = out.start_logits + 1e-3
            return out

    module = type(sys)("drifting_backend.adapter")
    module.BACKEND = Drifting()
    monkeypatch.setitem(sys.modules, "drifting_backend.adapter", module)
    monkeypatch.setitem(backends.PACKAGES, "drifting", ("drifting_backend", "x"))
    monkeypatch.setattr(api, "BACKENDS", ("torch", "drifting", "not_a_backend"))
    code, out, _ = cli(capsys, "verify", src)
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith("drifting"))
    assert "FAIL" in row and "1.00e-03" in row
    assert "not installed" in next(line for line in out.splitlines() if line.startswith("not_a_backend"))
    code, _, _ = cli(capsys, "verify", src, "--atol", "1e-2")
    assert code == 0
    code, _, err = cli(capsys, "verify", checkpoints("model"), "--head", "masked_lm")
    assert code == 2 and "no weights for the masked_lm head" in err


def test_progress_bar_only_when_asked(checkpoints, tmp_path, capsys):
    src = checkpoints("model")
    convert(src, tmp_path / "a", progress=True)
    assert "converting" in capsys.readouterr().err
    code, out, err = cli(capsys, src, tmp_path / "b", "--quiet")  # stderr is not a terminal under pytest
    assert code == 0 and out == "" and err == ""


def test_console_command_runs_as_a_process(checkpoints, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    ok = subprocess.run([sys.executable, "-m", "roformer_convert.cli", checkpoints("model"), tmp_path / "out"],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and (tmp_path / "out" / WEIGHTS_NAME).exists()
    bad = subprocess.run([sys.executable, "-m", "roformer_convert.cli", tmp_path / "missing", tmp_path / "x"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr


# -- bad input: exit 2, one clear line, nothing left behind ---------------------------------------------------
class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _bad_inputs(base, good):
    """name -> (source path, extra args, words the message must hold); each made in its own folder."""
    good = Path(good)
    config = Checkpoint(good).config

    def folder(name, files):
        d = base / name
        d.mkdir()
        config.save(d)
        for file, data in files.items():
            (d / file).write_bytes(data)
        return d

    raw = (good / WEIGHTS_NAME).read_bytes()
    spec = canonical_spec(config, "masked_lm")
    extra = folder("unknown_names", {})
    write_safetensors(extra / WEIGHTS_NAME, {**tensors(good), "bert.pooler.dense.weight": np.zeros((2, 2), np.float32)})
    wrong = folder("wrong_shape", {WEIGHTS_NAME: raw})
    config.replace(intermediate_size=40).save(wrong)
    no_config = folder("no_config", {WEIGHTS_NAME: raw})
    (no_config / "config.json").unlink()
    evil = base / "evil.bin"
    torch.save({"x": Evil()}, evil)  # a .bin whose pickle would run a shell command
    return {
        "missing": (base / "nowhere", [], ["does not exist"]),
        "unknown_file": (folder("unknown", {"weights.dat": b"\x01\x02" * 50}) / "weights.dat", [], ["cannot tell"]),
        "empty_folder": (folder("empty", {}), [], ["no checkpoint"]),
        "corrupt_safetensors": (folder("corrupt_st", {WEIGHTS_NAME: b"\xff" * 64}), [], ["not a readable safetensors"]),
        "truncated_safetensors": (folder("truncated", {WEIGHTS_NAME: raw[: len(raw) // 2]}), [], ["truncated"]),
        "corrupt_bin": (folder("corrupt_bin", {"pytorch_model.bin": b"PK\x03\x04garbage"}), [],
                        ["not a readable"]),
        "pickle_with_code": (evil, ["--config", good / "config.json"], ["refuses to load", "system"]),
        "corrupt_h5": (folder("corrupt_h5", {"tf_model.h5": b"\x89HDF\r\n\x1a\n" + b"\0" * 64}), [], ["HDF5"]),
        "corrupt_msgpack": (folder("corrupt_msgpack", {"flax_model.msgpack": b"\x81\xa1a\xc1"}), [], ["Flax msgpack"]),
        "truncated_tf1_index": (folder("tf1", {"bert_model.ckpt.index": b"\x00" * 20}), [], ["TF checkpoint index"]),
        "unknown_names": (extra, [], ["unexpected", "bert.pooler.dense.weight"]),
        "shapes_contradict_config": (wrong, [], ["wrong shape", "intermediate.dense.weight"]),
        "missing_config": (no_config, [], ["no config.json"]),
        "bad_shard_size": (good, ["--max-shard-size", "lots"], ["cannot read the size"]),
        "unknown_head_file": (good, ["--head", "question_answering"], ["no weights for the question_answering"]),
    }, spec


def test_every_bad_input_exits_2_with_one_clear_line_and_no_leftovers(checkpoints, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the hostile pickle would leave its mark
    good = checkpoints("masked_lm")
    cases, _ = _bad_inputs(tmp_path, good)
    for name, (src, extra, words) in cases.items():
        out_parent = tmp_path / f"out-{name}"
        out_parent.mkdir()
        code, out, err = cli(capsys, src, out_parent / "dst", *extra)
        assert code == 2, (name, err)
        assert err.startswith("roformer-convert: error: ") and err.count("\n") == 1, (name, err)
        assert "Traceback" not in err
        for word in words:
            assert word in err, (name, err)
        assert os.listdir(out_parent) == [], (name, os.listdir(out_parent))
    assert not (tmp_path / "pwned").exists()


def test_existing_destination_needs_force(checkpoints, tmp_path, capsys):
    src = checkpoints("model")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "notes.txt").write_text("keep me")
    code, _, err = cli(capsys, src, tmp_path / "dst")
    assert code == 2 and "--force" in err and sorted(os.listdir(tmp_path / "dst")) == ["notes.txt"]
    code, _, _ = cli(capsys, src, tmp_path / "dst", "--force")
    assert code == 0 and sorted(os.listdir(tmp_path / "dst")) == ["config.json", WEIGHTS_NAME, "notes.txt"]
    assert sorted(os.listdir(tmp_path)) == ["dst"]  # no temporary folder left beside it


def test_failure_while_writing_leaves_nothing(checkpoints, tmp_path, monkeypatch):
    src = checkpoints("masked_lm")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("roformer_convert.flax_msgpack.write_msgpack", broken)
    with pytest.raises(OSError, match="disk full"):
        convert(src, tmp_path / "out", to="flax")
    assert os.listdir(tmp_path) == []


def test_docstring_examples_run():
    import doctest

    import roformer_convert
    from roformer_convert import api as api_module
    from roformer_convert import cli, flax_msgpack, formats, tf_bundle, writers

    for module in (roformer_convert, api_module, cli, formats, writers, flax_msgpack, tf_bundle):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
