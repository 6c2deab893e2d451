"""Hub ids for from_pretrained (roformer_core.hub), against a fake Hub on 127.0.0.1: no network.

The fake Hub (tests/hub_server.py) is reached through HF_ENDPOINT. conftest.py turns
HF_HUB_OFFLINE on for the whole suite, so the tests that download turn it off again.
"""

import doctest
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from hub_server import FakeHub

import roformer_core.hub as hub_module
from roformer_core import (Checkpoint, CheckpointError, ConfigError, RoFormerConfig, RoFormerTokenizer,
                           canonical_spec, save_checkpoint)
from roformer_core.hub import DEFAULT_WEIGHTS, HUB_OPTIONS, is_local, resolve_folder, split_hub_options
from roformer_core.safetensors_io import write_safetensors

import huggingface_hub.constants as hf_constants  # noqa: E402  (the test extra installs it)
import huggingface_hub.file_download as hf_file_download  # noqa: E402

WEIGHTS = DEFAULT_WEIGHTS + ("flax_model.msgpack",)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "今", "天", "好", "天气"]


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_hub():
    hub = FakeHub()
    yield hub
    hub.close()


def _point_at(monkeypatch, url: str, constants_too: bool = True) -> None:
    """HF_ENDPOINT for a run: the variable (read by roformer_core.hub at call time) and the constants
    huggingface_hub derived from it when first imported (ENDPOINT and the url template, which
    hf_hub_url needs to agree)."""
    monkeypatch.setenv("HF_ENDPOINT", url)
    if constants_too:
        monkeypatch.setattr(hf_constants, "ENDPOINT", url)
        template = url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def online(fake_hub, monkeypatch):
    _point_at(monkeypatch, fake_hub.url)
    return fake_hub


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "hf-cache")


def _config(hidden: int = 8) -> RoFormerConfig:
    return RoFormerConfig(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=16)


def _tensors(cfg: RoFormerConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in canonical_spec(cfg).items()}


def _read(folder) -> dict[str, bytes]:
    out = {}
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as fh:
            out[name] = fh.read()
    return out


def _checkpoint_files(tmp_path, name: str, hidden: int = 8, seed: int = 0, tokenizer: bool = True):
    """config.json + model.safetensors (+ the tokenizer files) as bytes, and the tensors written."""
    folder = tmp_path / name
    cfg = _config(hidden)
    tensors = _tensors(cfg, seed)
    save_checkpoint(folder, cfg, tensors)
    if tokenizer:
        RoFormerTokenizer(vocab=VOCAB).save_pretrained(folder)
    return _read(folder), tensors


def _snapshot_files(cache_dir: str, repo_id: str) -> list[str]:
    """Every file in every snapshot of ``repo_id`` in the cache, as 'commit/name'."""
    root = os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"), "snapshots")
    if not os.path.isdir(root):
        return []
    return sorted(f"{c}/{n}" for c in os.listdir(root) for n in os.listdir(os.path.join(root, c)))


def _assert_one_line(error: BaseException, *parts: str) -> None:
    text = str(error)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, text
    # `raise ... from None`: what the user sees is this line, not a chain of tracebacks
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


# -- local paths and ids ----------------------------------------------------------------------
@pytest.mark.parametrize("text, local", [
    ("org/name", False), ("bert-base-chinese", False), ("junnyu/roformer_chinese_base", False),
    ("./org/name", True), ("/abs/org/name", True), ("a/b/c", True), ("org/na..me", True), ("org--x/y", True),
    ("org/name.git", True), ("-org/name", True), ("C:\\models\\x", True), ("", True), ("x" * 97, True),
])
def test_is_local_tells_paths_from_repo_ids(text, local):
    assert is_local(text) is local


def test_is_local_existing_folder_and_pathlike(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("org/name")
    assert is_local("org/name")                        # looks like an id, but it is on disk
    assert is_local(tmp_path / "not-there")            # a Path is a path
    assert resolve_folder("org/name", revision="v1") == "org/name"
    assert resolve_folder(tmp_path / "org") == str(tmp_path / "org")


def test_split_hub_options():
    hub, rest = split_hub_options({"revision": "v1", "token": "t", "num_labels": 3})
    assert hub == {"revision": "v1", "token": "t"} and rest == {"num_labels": 3}
    assert set(HUB_OPTIONS) == {"revision", "cache_dir", "local_files_only", "token", "force_download"}


def test_bad_argument_types():
    with pytest.raises(CheckpointError, match="expected a folder or a Hub repo id, got int"):
        resolve_folder(3)


def test_docstring_examples_of_hub_module():
    result = doctest.testmod(hub_module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# -- downloads --------------------------------------------------------------------------------
def test_download_into_cache_layout_only_needed_files(online, cache, tmp_path):
    files, tensors = _checkpoint_files(tmp_path, "tiny")
    files["pytorch_model.bin"] = b"the same weights, second format"
    commit = online.add_repo("org/tiny", files)

    folder = resolve_folder("org/tiny", weights=WEIGHTS, cache_dir=cache)

    assert folder == os.path.join(cache, "models--org--tiny", "snapshots", commit)
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]
    assert online.gets("org/tiny") == ["config.json", "model.safetensors"]  # no .bin, no tokenizer files
    with open(os.path.join(cache, "models--org--tiny", "refs", "main")) as fh:
        assert fh.read() == commit
    ckpt = Checkpoint(folder)
    assert ckpt.config == _config()
    for name, value in tensors.items():
        np.testing.assert_array_equal(ckpt.get(name), value)


@pytest.mark.parametrize("present, chosen", [
    (("pytorch_model.bin",), "pytorch_model.bin"),
    (("pytorch_model.bin", "flax_model.msgpack"), "pytorch_model.bin"),
    (("flax_model.msgpack",), "flax_model.msgpack"),
])
def test_one_weight_format_in_preference_order(online, cache, tmp_path, present, chosen):
    files, _ = _checkpoint_files(tmp_path, "fmt", tokenizer=False)
    del files["model.safetensors"]
    files.update({name: f"bytes of {name}".encode() for name in present})
    repo = "org/fmt-" + "-".join(n.split(".")[0].replace("_", "") for n in present)
    online.add_repo(repo, files)

    folder = resolve_folder(repo, weights=WEIGHTS, cache_dir=cache)

    assert sorted(os.listdir(folder)) == sorted(["config.json", chosen])
    assert online.gets(repo) == ["config.json", chosen]
    with open(os.path.join(folder, chosen), "rb") as fh:
        assert fh.read() == files[chosen]


def _sharded_files(tmp_path, name, shard_names=None):
    cfg = _config()
    tensors = _tensors(cfg, seed=3)
    names = sorted(tensors)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    shard_names = shard_names or ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    folder = tmp_path / name
    folder.mkdir()
    for shard, part in zip(shard_names, halves):
        if "/" not in shard and ".." not in shard:
            write_safetensors(str(folder / shard), {k: tensors[k] for k in part}, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, part in zip(shard_names, halves) for k in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    cfg.save(folder)
    return _read(folder), tensors


def test_sharded_checkpoint_downloads_index_and_every_shard(online, cache, tmp_path):
    files, tensors = _sharded_files(tmp_path, "sharded")
    files["pytorch_model.bin"] = b"not wanted"
    online.add_repo("org/sharded", files)

    folder = resolve_folder("org/sharded", weights=WEIGHTS, cache_dir=cache)

    assert sorted(os.listdir(folder)) == ["config.json", "model-00001-of-00002.safetensors",
                                          "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    assert "pytorch_model.bin" not in online.gets("org/sharded")
    ckpt = Checkpoint(folder)
    assert sorted(ckpt.names()) == sorted(tensors)
    for name, value in tensors.items():
        np.testing.assert_array_equal(ckpt.get(name), value)


@pytest.mark.parametrize("evil", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_shard_names_leaving_the_repo_are_refused(online, cache, tmp_path, evil):
    files, _ = _sharded_files(tmp_path, "evil", ["model-00001-of-00002.safetensors", evil])
    repo = f"org/evil{len(evil)}"
    online.add_repo(repo, files)

    with pytest.raises(CheckpointError) as info:
        resolve_folder(repo, weights=WEIGHTS, cache_dir=cache)

    _assert_one_line(info.value, "model.safetensors.index.json", repr(evil), "refusing")
    assert not any(name.endswith("safetensors") and "model-" in name for name in online.gets(repo))


def test_revisions_each_get_their_own_snapshot(online, cache, tmp_path):
    main_files, _ = _checkpoint_files(tmp_path, "rev-main", hidden=8, seed=1)
    v1_files, v1_tensors = _checkpoint_files(tmp_path, "rev-v1", hidden=16, seed=2)
    main_commit = online.add_repo("org/revs", main_files)
    v1_commit = online.add_repo("org/revs", v1_files, revision="v1")

    main = resolve_folder("org/revs", weights=WEIGHTS, cache_dir=cache)
    v1 = resolve_folder("org/revs", weights=WEIGHTS, cache_dir=cache, revision="v1")
    by_commit = resolve_folder("org/revs", weights=WEIGHTS, cache_dir=cache, revision=main_commit)

    assert os.path.basename(main) == main_commit and os.path.basename(v1) == v1_commit
    assert by_commit == main
    assert RoFormerConfig.from_json_file(main).hidden_size == 8
    assert RoFormerConfig.from_json_file(v1).hidden_size == 16
    np.testing.assert_array_equal(Checkpoint(v1).get("embeddings.word_embeddings.weight"),
                                  v1_tensors["embeddings.word_embeddings.weight"])


def test_force_download_fetches_again(online, cache, tmp_path):
    files, _ = _checkpoint_files(tmp_path, "force", tokenizer=False)
    online.add_repo("org/force", files)
    first = resolve_folder("org/force", weights=WEIGHTS, cache_dir=cache)
    again = resolve_folder("org/force", weights=WEIGHTS, cache_dir=cache)
    assert again == first and online.gets("org/force") == ["config.json", "model.safetensors"]
    forced = resolve_folder("org/force", weights=WEIGHTS, cache_dir=cache, force_download=True)
    assert forced == first and online.gets("org/force") == ["config.json", "model.safetensors"] * 2


def test_endpoint_is_read_when_called(fake_hub, cache, tmp_path, monkeypatch):
    # huggingface_hub's constants keep what HF_ENDPOINT said when it was imported (the default here)
    assert hf_constants.ENDPOINT != fake_hub.url
    _point_at(monkeypatch, fake_hub.url, constants_too=False)
    files, _ = _checkpoint_files(tmp_path, "late", tokenizer=False)
    fake_hub.add_repo("org/late", files)
    assert os.listdir(resolve_folder("org/late", cache_dir=cache)) == ["config.json"]


# -- failures: one clear line each -----------------------------------------------------------
def test_missing_repo(online, cache):
    with pytest.raises(CheckpointError) as info:
        resolve_folder("org/absent", weights=WEIGHTS, cache_dir=cache)
    _assert_one_line(info.value, "'org/absent' is not a local folder", "has no repo of that name", online.url)


def test_missing_required_file_and_missing_weights(online, cache, tmp_path):
    files, _ = _checkpoint_files(tmp_path, "partial")
    online.add_repo("org/no-config", {k: v for k, v in files.items() if k != "config.json"})
    online.add_repo("org/no-weights", {k: v for k, v in files.items() if k != "model.safetensors"})

    with pytest.raises(CheckpointError) as info:
        resolve_folder("org/no-config", weights=WEIGHTS, cache_dir=cache)
    _assert_one_line(info.value, "the Hub repo 'org/no-config' has no config.json")
    with pytest.raises(CheckpointError) as info:
        resolve_folder("org/no-weights", weights=WEIGHTS, cache_dir=cache)
    _assert_one_line(info.value, "'org/no-weights' has no weights", "model.safetensors, ", "flax_model.msgpack")
    assert online.gets("org/no-config") == [] and online.gets("org/no-weights") == []


def test_file_listed_but_not_served(online, cache, tmp_path):
    files, _ = _checkpoint_files(tmp_path, "liar")
    online.add_repo("org/liar", files, faults={"config.json": "missing"})
    with pytest.raises(CheckpointError) as info:
        resolve_folder("org/liar", weights=WEIGHTS, cache_dir=cache)
    _assert_one_line(info.value, "'org/liar' has no config.json")


def test_unknown_revision(online, cache, tmp_path):
    files, _ = _checkpoint_files(tmp_path, "revless", tokenizer=False)
    online.add_repo("org/revless", files)
    with pytest.raises(CheckpointError) as info:
        resolve_folder("org/revless", weights=WEIGHTS, cache_dir=cache, revision="v9")
    _assert_one_line(info.value, "'org/revless' has no revision 'v9'")


def test_gated_repo_needs_a_token(online, cache, tmp_path):
    files, _ = _checkpoint_files(tmp_path, "gated", tokenizer=False)
    online.add_repo("org/gated", files, gated_token="hf_right")

    with pytest.raises(CheckpointError) as info:
        resolve_folder("org/gated", weights=WEIGHTS, cache_dir=cache)
    _assert_one_line(info.value, "'org/gated' is gated", "token=")
    with pytest.raises(CheckpointError) as info:
        resolve_folder("org/gated", weights=WEIGHTS, cache_dir=cache, token="hf_wrong")
    _assert_one_line(info.value, "'org/gated' is gated", "your token has no access")
    assert _snapshot_files(cache, "org/gated") == []

    folder = resolve_folder("org/gated", weights=WEIGHTS, cache_dir=cache, token="hf_right")
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize("fault, words", [("truncate", "broke off"), ("wrong_length", "was incomplete")])
def test_broken_download_is_an_error_and_leaves_nothing_loadable(online, cache, tmp_path, monkeypatch, fault, words):
    # huggingface_hub retries a cut connection 5 times, 1 s apart: no need to wait here
    monkeypatch.setattr(hf_file_download.time, "sleep", lambda seconds: None)
    files, tensors = _checkpoint_files(tmp_path, fault, tokenizer=False)
    repo = f"org/{fault.replace('_', '-')}"
    online.add_repo(repo, files, faults={"model.safetensors": fault})

    with pytest.raises(CheckpointError) as info:
        resolve_folder(repo, weights=WEIGHTS, cache_dir=cache)

    _assert_one_line(info.value, f"model.safetensors of {repo!r}", words, "nothing of it was kept")
    assert not any(n.endswith("model.safetensors") for n in _snapshot_files(cache, repo))
    leftovers = [n for _, _, names in os.walk(cache) for n in names if n.endswith(".incomplete")]
    assert leftovers == []
    with pytest.raises(CheckpointError, match="no weights of"):
        resolve_folder(repo, weights=WEIGHTS, cache_dir=cache, local_files_only=True)

    online.add_repo(repo, files)  # the same commit, now served whole: a second try works
    ckpt = Checkpoint(resolve_folder(repo, weights=WEIGHTS, cache_dir=cache))
    np.testing.assert_array_equal(ckpt.get("embeddings.word_embeddings.weight"),
                                  tensors["embeddings.word_embeddings.weight"])


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_hub_down_and_not_cached(cache, monkeypatch):
    url = _dead_url()
    _point_at(monkeypatch, url)
    with pytest.raises(CheckpointError) as info:
        resolve_folder("org/unreachable", weights=WEIGHTS, cache_dir=cache)
    _assert_one_line(info.value, "cannot download 'org/unreachable'", f"the Hub ({url}) cannot be reached",
                     "the cache", "does not hold it")


# -- the cache, offline ------------------------------------------------------------------------
def test_prefilled_cache_offline(cache, tmp_path, monkeypatch):
    hub = FakeHub()
    try:
        _point_at(monkeypatch, hub.url)
        files, tensors = _checkpoint_files(tmp_path, "offline")
        sharded, _ = _sharded_files(tmp_path, "offline-sharded")
        hub.add_repo("org/offline", files)
        hub.add_repo("org/offline", sharded, revision="v2")
        folder = resolve_folder("org/offline", weights=WEIGHTS, cache_dir=cache)
        folder_v2 = resolve_folder("org/offline", weights=WEIGHTS, cache_dir=cache, revision="v2")
        RoFormerTokenizer.from_pretrained("org/offline", cache_dir=cache)
    finally:
        hub.close()
    requests_made = len(hub.log)

    # the server is gone; HF_HUB_OFFLINE=1 set after huggingface_hub was imported still counts
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_folder("org/offline", weights=WEIGHTS, cache_dir=cache) == folder
    assert resolve_folder("org/offline", weights=WEIGHTS, cache_dir=cache, revision="v2") == folder_v2
    with pytest.raises(CheckpointError) as info:
        resolve_folder("org/offline", weights=WEIGHTS, cache_dir=cache, revision="v3")
    _assert_one_line(info.value, "config.json of 'org/offline' at revision 'v3' is not in the cache",
                     "offline mode is on (HF_HUB_OFFLINE=1)")
    with pytest.raises(CheckpointError) as info:
        resolve_folder("org/offline", weights=WEIGHTS, cache_dir=cache, force_download=True)
    _assert_one_line(info.value, "cannot force a download")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve_folder("org/offline", weights=WEIGHTS, cache_dir=cache, local_files_only=True) == folder
    # not offline, but the Hub cannot be reached: the cache serves
    assert resolve_folder("org/offline", weights=WEIGHTS, cache_dir=cache) == folder
    assert len(hub.log) == requests_made

    np.testing.assert_array_equal(Checkpoint(folder).get("embeddings.word_embeddings.weight"),
                                  tensors["embeddings.word_embeddings.weight"])
    tok = RoFormerTokenizer.from_pretrained("org/offline", cache_dir=cache, local_files_only=True)
    assert tok.encode("今天天气好") == RoFormerTokenizer(vocab=VOCAB).encode("今天天气好")
    assert RoFormerConfig.from_pretrained("org/offline", cache_dir=cache, local_files_only=True) == _config()


# -- without huggingface_hub ----------------------------------------------------------------------
def test_without_huggingface_hub(tmp_path):
    folder = tmp_path / "ckpt"
    _checkpoint_files(tmp_path, "ckpt")
    script = """
import sys
from roformer_core import CheckpointError, RoFormerConfig, RoFormerTokenizer
from roformer_core.hub import resolve_folder
folder = sys.argv[1]
assert resolve_folder(folder) == folder
print("hidden", RoFormerConfig.from_pretrained(folder).hidden_size)
print("tokens", RoFormerTokenizer.from_pretrained(folder).tokenize("今天"))
print("imported", "huggingface_hub" in sys.modules)
sys.modules["huggingface_hub"] = None  # as if it were not installed
print("hidden", RoFormerConfig.from_pretrained(folder).hidden_size)
for call in (lambda: resolve_folder("org/some-model"), lambda: RoFormerConfig.from_pretrained("org/some-model"),
             lambda: RoFormerTokenizer.from_pretrained("org/some-model")):
    try:
        call()
    except CheckpointError as e:
        print("error", e)
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:4] == ["hidden 8", "tokens ['今', '天']", "imported False", "hidden 8"]
    assert lines[4:] == ["error 'org/some-model' is not a local folder; to load it from the Hugging Face Hub, "
                         "install huggingface_hub: pip install 'roformer-tri[hub]'"] * 3


# -- RoFormerConfig / RoFormerTokenizer.from_pretrained with a hub id ------------------------------
def test_config_from_pretrained_hub_id(online, cache, tmp_path):
    main_files, _ = _checkpoint_files(tmp_path, "cfg-main", hidden=8)
    v1_files, _ = _checkpoint_files(tmp_path, "cfg-v1", hidden=16)
    online.add_repo("org/cfg", main_files)
    online.add_repo("org/cfg", v1_files, revision="v1")

    cfg = RoFormerConfig.from_pretrained("org/cfg", cache_dir=cache)
    v1 = RoFormerConfig.from_pretrained("org/cfg", cache_dir=cache, revision="v1", num_labels=3)

    assert cfg == _config(8)
    assert v1.hidden_size == 16 and v1.num_labels == 3 and len(v1.id2label) == 3
    assert online.gets("org/cfg") == ["config.json", "config.json"]  # no weights, no tokenizer
    with pytest.raises(ConfigError, match="unknown config field.*'hidden_sise'"):
        RoFormerConfig.from_pretrained("org/cfg", cache_dir=cache, hidden_sise=3)
    direct = os.path.join(resolve_folder("org/cfg", cache_dir=cache), "config.json")
    assert RoFormerConfig.from_pretrained(direct, hidden_size=32) == _config(8).replace(hidden_size=32)
    with pytest.raises(CheckpointError, match="'org/cfg-absent' is not a local folder"):
        RoFormerConfig.from_pretrained("org/cfg-absent", cache_dir=cache)


def test_tokenizer_from_pretrained_hub_id(online, cache, tmp_path):
    files, _ = _checkpoint_files(tmp_path, "tok")
    online.add_repo("org/tok", files)
    online.add_repo("org/tok-bare", {"vocab.txt": files["vocab.txt"]})
    online.add_repo("org/tok-none", {"config.json": files["config.json"]})
    local = RoFormerTokenizer.from_pretrained(tmp_path / "tok")

    tok = RoFormerTokenizer.from_pretrained("org/tok", cache_dir=cache, model_max_length=7)
    bare = RoFormerTokenizer.from_pretrained("org/tok-bare", cache_dir=cache, revision="main")

    assert sorted(online.gets("org/tok")) == ["special_tokens_map.json", "tokenizer_config.json", "vocab.txt"]
    assert online.gets("org/tok-bare") == ["vocab.txt"]
    text = "今天天气好"
    assert tok.encode(text) == bare.encode(text) == local.encode(text)
    assert tok.model_max_length == 7
    with pytest.raises(CheckpointError) as info:
        RoFormerTokenizer.from_pretrained("org/tok-none", cache_dir=cache)
    _assert_one_line(info.value, "'org/tok-none' has no vocab.txt")
