"""Files a checkpoint refers to stay inside its folder: every backend, ``roformer-convert`` and its ``inspect``.

A crafted checkpoint may name ``../..`` paths or absolute paths in its sharded index, or hold
links (weights, shards, config, tokenizer files) to files elsewhere. Each case here is refused
by ``from_pretrained`` in PyTorch, Keras and Flax (``roformer_core.backends``), by the converter
and by ``inspect``, with one line that names the offending entry and shows nothing of the file
it points to. The "outside" files are valid checkpoints where that matters, so following the
reference would have loaded silently; links that stay inside the folder, and the links of a
Hugging Face cache snapshot into its ``blobs`` folder, keep working.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from roformer_core import RoFormerConfig, canonical_spec
from roformer_core.backends import get_backend
from roformer_core.checkpoint import Checkpoint
from roformer_core.errors import CheckpointError
from roformer_core.safetensors_io import write_safetensors
from roformer_core.tokenizer import RoFormerTokenizer
from roformer_convert.cli import main as convert_main

BACKENDS = ("torch", "tf", "flax")
CFG = RoFormerConfig(vocab_size=12, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
SPEC = canonical_spec(CFG, "model")
MARKER = "SECRET-CONTENT-MUST-NOT-LEAK"
SECRET = (MARKER + "\n") * 431  # 12,500 bytes: neither the size nor any byte may appear in a message
SHARD = "model-{:05d}-of-00002.safetensors"


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SPEC.items()}


def _sharded(folder, tensors, names=None) -> dict:
    """A two-shard canonical checkpoint in ``folder``; ``names`` replaces the file names in the index."""
    os.makedirs(folder, exist_ok=True)
    keys = list(tensors)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for i, half in enumerate(halves):
        write_safetensors(os.path.join(folder, SHARD.format(i + 1)), {k: tensors[k] for k in half})
        weight_map.update({k: (names or {}).get(i, SHARD.format(i + 1)) for k in half})
    CFG.save(str(folder))
    index = {"metadata": {}, "weight_map": weight_map}
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as fh:
        json.dump(index, fh)
    return index


def _write_index(folder, index) -> None:
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as fh:
        json.dump(index, fh)


@pytest.fixture
def world(tmp_path):
    """``outside/``: a valid sharded checkpoint (other values) and a secret file; ``ckpt/`` is built per test."""
    outside = tmp_path / "outside"
    _sharded(outside, _tensors(seed=1))
    (outside / "secret.txt").write_text(SECRET)
    return tmp_path


def _check_message(message: str, needles) -> None:
    assert "\n" not in message.strip(), message
    assert MARKER not in message and "SECRET" not in message, message
    assert str(len(SECRET)) not in message and f"{len(SECRET):,}" not in message, message
    for needle in needles:
        assert needle in message, message


def _refused_everywhere(path, tmp_path, capsys, *needles) -> None:
    """Every backend's from_pretrained, roformer-convert and roformer-convert inspect refuse ``path``."""
    for name in BACKENDS:
        with pytest.raises(CheckpointError) as info:
            get_backend(name).load("model", str(path))
        _check_message(str(info.value), needles)
    dst = tmp_path / "converted"
    capsys.readouterr()
    assert convert_main([str(path), str(dst)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("roformer-convert: error: ") and captured.err.count("\n") == 1, captured.err
    _check_message(captured.err, needles)
    assert not dst.exists() and not [n for n in os.listdir(tmp_path) if ".roformer-" in n]
    assert convert_main(["inspect", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("roformer-convert: error: ") and captured.err.count("\n") == 1, captured.err
    _check_message(captured.err + captured.out, needles)


def _loads_everywhere(path, tmp_path, tensors) -> None:
    for name in BACKENDS:
        backend = get_backend(name)
        state = backend.state_dict(backend.load("model", str(path)))
        for k, v in tensors.items():
            np.testing.assert_array_equal(np.asarray(state[k], np.float32), v)
    dst = tmp_path / "converted-ok"
    assert convert_main([str(path), str(dst), "--quiet"]) == 0
    ckpt = Checkpoint(str(dst))
    np.testing.assert_array_equal(ckpt.get("embeddings.word_embeddings.weight"),
                                  tensors["embeddings.word_embeddings.weight"])


# -- the sharded index ------------------------------------------------------------------------------
def _outside_shard(tmp_path, absolute: bool) -> str:
    target = tmp_path / "outside" / SHARD.format(1)
    return str(target) if absolute else os.path.join("..", "outside", SHARD.format(1))


INDEX_ATTACKS = {
    "dot-dot path": lambda t: _outside_shard(t, absolute=False),
    "absolute path": lambda t: _outside_shard(t, absolute=True),
    "absolute path to a non-checkpoint file": lambda t: str(t / "outside" / "secret.txt"),
    "dot-dot inside a subfolder": lambda t: "sub/../../outside/" + SHARD.format(1),
    "backslashes": lambda t: "..\\outside\\" + SHARD.format(1),
}


@pytest.mark.parametrize("case", list(INDEX_ATTACKS))
def test_index_naming_a_file_outside_the_folder_is_refused(world, capsys, case):
    ckpt = world / "ckpt"
    name = INDEX_ATTACKS[case](world)
    _sharded(ckpt, _tensors(), names={0: name})
    _refused_everywhere(ckpt, world, capsys, "outside the checkpoint folder", "refusing")
    # the index file named directly: the same rule
    with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
        get_backend("torch").load("model", str(ckpt / "model.safetensors.index.json"))


def test_index_shard_linked_outside_is_refused(world, capsys):
    ckpt = world / "ckpt"
    _sharded(ckpt, _tensors())
    os.remove(ckpt / SHARD.format(1))
    os.symlink(world / "outside" / SHARD.format(1), ckpt / SHARD.format(1))
    _refused_everywhere(ckpt, world, capsys, SHARD.format(1), "link to a file outside the folder")


def test_index_through_a_linked_subfolder_is_refused(world, capsys):
    ckpt = world / "ckpt"
    _sharded(ckpt, _tensors(), names={0: "sub/" + SHARD.format(1)})
    os.symlink(world / "outside", ckpt / "sub")
    _refused_everywhere(ckpt, world, capsys, "link to a file outside the folder")


def test_index_linked_outside_is_refused(world, capsys):
    ckpt = world / "ckpt"
    ckpt.mkdir()
    CFG.save(str(ckpt))
    os.symlink(world / "outside" / "model.safetensors.index.json", ckpt / "model.safetensors.index.json")
    _refused_everywhere(ckpt, world, capsys, "model.safetensors.index.json", "outside the folder")


BAD_WEIGHT_MAPS = {
    "a list": ([SHARD.format(1)], "a weight_map that is a list"),
    "a number for a shard": ({"embeddings.word_embeddings.weight": 1}, "a int, not a shard file name"),
    "null for a shard": ({"embeddings.word_embeddings.weight": None}, "null, not a shard file name"),
    "a dict for a shard": ({"embeddings.word_embeddings.weight": {"file": "x"}}, "not a shard file name"),
    "a list for a shard": ({"embeddings.word_embeddings.weight": [SHARD.format(1)]}, "not a shard file name"),
    "empty": ({}, "a weight_map that is an empty dict"),
    "a string": ("model.safetensors", "a weight_map that is a str"),
    "missing": (None, "no weight_map"),
    "empty file name": ({"embeddings.word_embeddings.weight": ""}, "is not a file name"),
}


@pytest.mark.parametrize("case", list(BAD_WEIGHT_MAPS))
def test_malformed_weight_map_is_one_line(world, capsys, case):
    ckpt = world / "ckpt"
    index = _sharded(ckpt, _tensors())
    weight_map, needle = BAD_WEIGHT_MAPS[case]
    if weight_map is None:
        del index["weight_map"]
    else:
        index["weight_map"] = weight_map
    _write_index(ckpt, index)
    _refused_everywhere(ckpt, world, capsys, needle)


@pytest.mark.parametrize("raw", [b"[1, 2]", b"7", b"[" * 100_000 + b"]" * 100_000, b"{\"weight_map\": {"],
                         ids=["list", "number", "nested 100k deep", "truncated"])
def test_index_that_is_not_an_object_is_one_line(world, capsys, raw):
    ckpt = world / "ckpt"
    _sharded(ckpt, _tensors())
    (ckpt / "model.safetensors.index.json").write_bytes(raw)
    _refused_everywhere(ckpt, world, capsys, "is not a valid safetensors index")


# -- links to the weights and the config ----------------------------------------------------------------
#: every weights file a folder is searched for by name
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "model.weights.h5",
                "bert_model.ckpt.index")


@pytest.mark.parametrize("name", WEIGHT_FILES)
def test_weights_file_linked_outside_is_refused(world, capsys, name):
    ckpt = world / "ckpt"
    ckpt.mkdir()
    CFG.save(str(ckpt))
    os.symlink(world / "outside" / "secret.txt", ckpt / name)
    _refused_everywhere(ckpt, world, capsys, name, "outside the folder")


def test_single_file_linked_to_a_valid_checkpoint_outside_is_refused(world, capsys):
    ckpt = world / "ckpt"
    ckpt.mkdir()
    CFG.save(str(ckpt))
    write_safetensors(str(world / "outside" / "model.safetensors"), _tensors(seed=1))
    os.symlink(world / "outside" / "model.safetensors", ckpt / "model.safetensors")
    _refused_everywhere(ckpt, world, capsys, "model.safetensors", "outside the folder")


def test_tf1_data_shard_linked_outside_is_refused(world, capsys):
    from test_reliability_files import TF_DATA, TF_INDEX

    ckpt = world / "ckpt"
    ckpt.mkdir()
    CFG.save(str(ckpt))
    (ckpt / "bert_model.ckpt.index").write_bytes(TF_INDEX)
    (world / "outside" / "data").write_bytes(TF_DATA)
    os.symlink(world / "outside" / "data", ckpt / "bert_model.ckpt.data-00000-of-00001")
    _refused_everywhere(ckpt, world, capsys, "data shard", "bert_model.ckpt.data-00000-of-00001", "outside the folder")


@pytest.mark.parametrize("name", ["config.json", "bert_config.json"])
def test_config_linked_outside_is_refused(world, capsys, name):
    ckpt = world / "ckpt"
    ckpt.mkdir()
    write_safetensors(str(ckpt / "model.safetensors"), _tensors())
    (world / "outside" / "other.json").write_text(json.dumps(CFG.to_dict()))  # a valid config
    if name == "bert_config.json":  # only TF1 checkpoints look for it: make this one a TF1 checkpoint
        from test_reliability_files import TF_DATA, TF_INDEX

        os.remove(ckpt / "model.safetensors")
        (ckpt / "bert_model.ckpt.index").write_bytes(TF_INDEX)
        (ckpt / "bert_model.ckpt.data-00000-of-00001").write_bytes(TF_DATA)
    os.symlink(world / "outside" / "other.json", ckpt / name)
    _refused_everywhere(ckpt, world, capsys, name, "outside the folder")
    if name == "config.json":  # the core reader on its own, which reads config.json itself
        with pytest.raises(CheckpointError, match="outside the folder"):
            Checkpoint(str(ckpt))


# -- what keeps working -----------------------------------------------------------------------------------
def test_links_inside_the_folder_load(world):
    ckpt = world / "ckpt"
    tensors = _tensors()
    _sharded(ckpt, tensors, names={1: "store/" + SHARD.format(2)})
    (ckpt / "store").mkdir()
    os.rename(ckpt / SHARD.format(2), ckpt / "store" / "real.safetensors")
    os.symlink(os.path.join("..", "store", "real.safetensors"), ckpt / "store" / SHARD.format(2))
    os.rename(ckpt / "config.json", ckpt / "store" / "config.json")
    os.symlink(os.path.join("store", "config.json"), ckpt / "config.json")
    _loads_everywhere(ckpt, world, tensors)


def test_hugging_face_cache_snapshot_loads_and_converts(world):
    """huggingface_hub keeps files in ``blobs/`` and links them from ``snapshots/<commit>/``."""
    repo = world / "models--org--roformer"
    snapshot, blobs = repo / "snapshots" / ("a" * 40), repo / "blobs"
    source = world / "plain"
    tensors = _tensors()
    _sharded(source, tensors)
    RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好"]).save_pretrained(str(source))
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for i, name in enumerate(sorted(os.listdir(source))):
        os.rename(source / name, blobs / f"blob{i}")
        os.symlink(os.path.join("..", "..", "blobs", f"blob{i}"), snapshot / name)
    _loads_everywhere(snapshot, world, tensors)
    out = world / "converted-ok"
    assert os.path.isfile(out / "vocab.txt") and not os.path.islink(out / "vocab.txt")
    assert (out / "vocab.txt").read_text().split() == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好"]


# -- tokenizer files the converter carries along ------------------------------------------------------------
def _with_tokenizer(folder) -> None:
    write_safetensors(str(folder / "model.safetensors"), _tensors())
    CFG.save(str(folder))
    RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好"]).save_pretrained(str(folder))


@pytest.mark.parametrize("name", ["vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                                  "tokenizer.json"])
@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_converter_refuses_tokenizer_files_linked_outside(world, capsys, name, target):
    ckpt = world / "ckpt"
    ckpt.mkdir()
    _with_tokenizer(ckpt)
    if os.path.exists(ckpt / name):
        os.remove(ckpt / name)
    secret = world / "outside" / "secret.txt"
    os.symlink(secret if target == "absolute" else os.path.join("..", "outside", "secret.txt"), ckpt / name)
    dst = world / "converted"
    capsys.readouterr()
    assert convert_main([str(ckpt), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("roformer-convert: error: ") and err.count("\n") == 1, err
    _check_message(err, [f"tokenizer file '{name}'", "outside the folder"])
    assert not dst.exists() and not [n for n in os.listdir(world) if ".roformer-" in n]
    # into an existing checkpoint (--force): refused before anything there changes
    dst.mkdir()
    _with_tokenizer(dst)
    before = {n: (dst / n).read_bytes() for n in os.listdir(dst)}
    assert convert_main([str(ckpt), str(dst), "--force"]) == 2
    assert {n: (dst / n).read_bytes() for n in os.listdir(dst)} == before


def test_converter_copies_tokenizer_files_linked_inside_as_files(world):
    ckpt = world / "ckpt"
    ckpt.mkdir()
    _with_tokenizer(ckpt)
    (ckpt / "tok").mkdir()
    os.rename(ckpt / "vocab.txt", ckpt / "tok" / "vocab.txt")
    os.symlink(os.path.join("tok", "vocab.txt"), ckpt / "vocab.txt")
    dst = world / "converted"
    assert convert_main([str(ckpt), str(dst), "--quiet"]) == 0
    assert not os.path.islink(dst / "vocab.txt")
    assert (dst / "vocab.txt").read_bytes() == (ckpt / "tok" / "vocab.txt").read_bytes()
    assert RoFormerTokenizer.from_pretrained(str(dst)).encode("好") == [2, 5, 3]
