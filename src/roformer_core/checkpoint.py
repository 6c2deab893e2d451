"""The canonical checkpoint: reference PyTorch RoFormer names and layouts, in safetensors.

A checkpoint is a folder with ``config.json`` and ``model.safetensors`` (or shards with a
``model.safetensors.index.json``). Names and shapes are those of the reference PyTorch
state dict, Linear weights ``[out, in]``, so RoFormer checkpoints people already have load
as they are. :func:`canonical_spec` gives, for a config and a head, every name and shape;
each backend's parameters equal it (tested), and each backend maps its own variable paths
to these names by the rules in :func:`to_canonical_name`, never a per-layer table.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

from roformer_core.config import RoFormerConfig
from roformer_core.errors import CheckpointError
from roformer_core.heads import HEADS as _HEADS, head_params
from roformer_core.io import atomic_dir
from roformer_core.safetensors_io import SafetensorsReader, write_safetensors

logger = logging.getLogger("roformer")

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
BASE_PREFIX = "roformer."
#: weight files a new checkpoint replaces; removed only once the new files are in place, so a
#: failed save leaves the old checkpoint whole (an old single file would shadow a new index)
STALE_WEIGHTS = (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, "model-*-of-*.safetensors")

#: The task heads (head name -> class name); the whole table is ``roformer_core.heads.HEAD_TABLE``.
HEADS = _HEADS

#: Names in reference files that are not parameters here: the sinusoid table (always
#: recomputed, never trusted) and the decoder tied to the word embeddings.
_IGNORED = re.compile(r"^(roformer\.)?encoder\.embed_positions\.weight$|^cls\.predictions\.decoder\.bias$")
_TIED_DECODER = "cls.predictions.decoder.weight"


def base_spec(config: RoFormerConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the bare model (no ``roformer.`` prefix), in reference order.

    ``norm_type="rms_norm"`` (RoFormer-V2) has no norm parameters, ``use_bias=False`` no bias in
    the encoder's Linears (``embeddings_project`` and the pooler keep theirs, as in the port),
    and ``add_pooling_layer`` adds ``pooler.dense``.

    Example:
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                      intermediate_size=16, norm_type="rms_norm", use_bias=False, add_pooling_layer=True)
        >>> list(base_spec(cfg))[:3], list(base_spec(cfg))[-2:]
        (['embeddings.word_embeddings.weight', 'embeddings.token_type_embeddings.weight', 'encoder.layer.0.attention.self.query.weight'], ['pooler.dense.weight', 'pooler.dense.bias'])
    """
    c = config
    V, E, H, I, T = c.vocab_size, c.embedding_size, c.hidden_size, c.intermediate_size, c.type_vocab_size
    norm = c.norm_type == "layer_norm"
    spec: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (V, E),
        "embeddings.token_type_embeddings.weight": (T, E),
    }

    def linear(name: str, out: int, inp: int, bias: bool = c.use_bias) -> None:
        spec[name + ".weight"] = (out, inp)
        if bias:
            spec[name + ".bias"] = (out,)

    def layer_norm(name: str, size: int) -> None:
        if norm:
            spec[name + ".weight"] = (size,)
            spec[name + ".bias"] = (size,)

    layer_norm("embeddings.LayerNorm", E)
    if E != H:
        linear("embeddings_project", H, E, bias=True)
    blocks = ["attention"] + (["crossattention"] if c.is_decoder and c.add_cross_attention else [])
    for i in range(c.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for blk in blocks:
            for proj in ("query", "key", "value"):
                linear(f"{p}{blk}.self.{proj}", H, H)
            linear(f"{p}{blk}.output.dense", H, H)
            layer_norm(f"{p}{blk}.output.LayerNorm", H)
        linear(f"{p}intermediate.dense", I, H)
        linear(f"{p}output.dense", H, I)
        layer_norm(f"{p}output.LayerNorm", H)
    if c.add_pooling_layer:
        linear("pooler.dense", H, H, bias=True)
    return spec


#: A task head's own parameters (the rule lives with the head table).
head_spec = head_params


def canonical_spec(config: RoFormerConfig, head: str = "model") -> dict[str, tuple[int, ...]]:
    """Every parameter name and shape of ``head`` for ``config``, as in the reference.

    The bare model has no prefix; head models put the encoder under ``roformer.``.

    Example:
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> spec = canonical_spec(cfg, "masked_lm")
        >>> spec["roformer.encoder.layer.0.attention.self.query.weight"], spec["cls.predictions.bias"]
        ((8, 8), (10,))
    """
    prefix = "" if head == "model" else BASE_PREFIX
    spec = {prefix + k: v for k, v in base_spec(config).items()}
    spec.update(head_spec(config, head))
    return spec


# -- naming rules between backends and canonical names ------------------------------------
#: backend leaf name -> (canonical leaf, transpose a 2-D array)
_LEAF_RULES = {
    "kernel": ("weight", True),     # Dense in Flax and Keras: [in, out]
    "embedding": ("weight", False),  # nn.Embed in Flax
    "embeddings": ("weight", False),  # keras.layers.Embedding
    "scale": ("weight", False),     # nn.LayerNorm in Flax
    "gamma": ("weight", False),     # keras.layers.LayerNormalization
    "beta": ("bias", False),
    "bias": ("bias", False),
    "weight": ("weight", False),
}


def to_canonical_name(path: Iterable[str]) -> tuple[str, bool]:
    """Map a backend variable path to ``(canonical name, transpose?)`` by rule.

    Works for Flax param paths and Keras variable paths alike, because the module trees
    carry the same names as the reference PyTorch modules.

    Example:
        >>> to_canonical_name(("roformer", "encoder", "layer", "0", "attention", "self", "query", "kernel"))
        ('roformer.encoder.layer.0.attention.self.query.weight', True)
        >>> to_canonical_name(("roformer", "embeddings", "LayerNorm", "scale"))
        ('roformer.embeddings.LayerNorm.weight', False)
    """
    parts = [str(p) for p in path]
    leaf, transpose = _LEAF_RULES.get(parts[-1], (parts[-1], False))
    parts = [re.sub(r"^layer_(\d+)$", r"layer.\1", p) for p in parts[:-1]]
    name = ".".join(p for p in parts if p) + "." + leaf
    return name, transpose


# -- reading ------------------------------------------------------------------------------
class Checkpoint:
    """An opened canonical checkpoint: its config and memory-mapped tensors.

    ``path`` is a folder (``model.safetensors`` or a sharded index), a ``.safetensors``
    file, or an index json. The config comes from ``config.json`` beside the weights
    unless one is given.

    Example:
        >>> import tempfile
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> d = tempfile.mkdtemp()
        >>> save_checkpoint(d, cfg, {k: np.zeros(s, np.float32) for k, s in canonical_spec(cfg).items()})
        >>> ckpt = Checkpoint(d)
        >>> ckpt.config.hidden_size, ckpt.shape("embeddings.word_embeddings.weight")
        (8, (10, 8))
    """

    def __init__(self, path: str | os.PathLike, config: RoFormerConfig | None = None):
        path = os.fspath(path)
        if not os.path.exists(path):
            raise CheckpointError(f"no checkpoint at {path}: the path does not exist")
        folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        files = self._weight_files(path)
        self.path = path
        self.readers = [SafetensorsReader(f) for f in files]
        self._where: dict[str, SafetensorsReader] = {}
        for r in self.readers:
            for name in r.names():
                self._where[name] = r
        if config is None:
            cfg_path = os.path.join(folder, "config.json")
            if not os.path.isfile(cfg_path):
                raise CheckpointError(f"no config.json beside the weights in {folder}")
            config = RoFormerConfig.from_json_file(cfg_path)
        self.config = config

    @staticmethod
    def _weight_files(path: str) -> list[str]:
        if os.path.isfile(path):
            folder = os.path.dirname(os.path.abspath(path))
            _config_inside(folder)
            if path.endswith(".json"):
                return _shards_from_index(path)
            return [path]  # the file named itself is taken as asked; only what it leads to is checked
        _config_inside(path)
        single = os.path.join(path, WEIGHTS_NAME)
        index = os.path.join(path, WEIGHTS_INDEX_NAME)
        if os.path.lexists(single):
            return [resolve_inside(path, WEIGHTS_NAME)]
        if os.path.lexists(index):
            return _shards_from_index(resolve_inside(path, WEIGHTS_INDEX_NAME))
        present = sorted(os.listdir(path))
        other = [f for f in present if f in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")
                 or f.endswith((".ckpt.index", ".weights.h5"))]
        hint = f"; it holds {', '.join(other)}: convert it with `roformer-convert {path} OUT`" if other else ""
        raise CheckpointError(f"no checkpoint in {path}: neither {WEIGHTS_NAME} nor {WEIGHTS_INDEX_NAME}{hint}")

    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._where[name].shape(name)

    def dtype(self, name: str) -> str:
        return self._where[name].dtype(name)

    def get(self, name: str) -> np.ndarray:
        """The stored tensor as a memory-mapped numpy view (BF16 as uint16 bits)."""
        return self._where[name].get(name)


def _shown(name, limit: int = 80) -> str:
    text = repr(name)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _hub_blobs(folder: str) -> str | None:
    """``<repo>/blobs`` when ``folder`` is a Hugging Face cache snapshot (``<repo>/snapshots/<commit>``),
    whose files are links into it; else None."""
    parent = os.path.dirname(folder)
    if os.path.basename(parent) != "snapshots":
        return None
    blobs = os.path.join(os.path.dirname(parent), "blobs")
    return os.path.realpath(blobs) if os.path.isdir(blobs) else None


def resolve_inside(folder: str | os.PathLike, name, what: str = "file") -> str:
    """``folder/name``, provided it lies inside ``folder`` once every link is followed; else one
    :class:`CheckpointError` that names ``name`` and shows nothing of what it points to.

    A checkpoint names files of its own (shards in an index, ``config.json``, tokenizer files);
    a crafted one could name ``../../etc/shadow``, an absolute path, or carry a link to one.
    The one place links may lead is the ``blobs`` folder of a Hugging Face cache snapshot.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> resolve_inside(d, "model.safetensors") == os.path.join(d, "model.safetensors")
        True
        >>> resolve_inside(d, "../x.safetensors", "shard")
        Traceback (most recent call last):
        ...
        roformer_core.errors.CheckpointError: the shard '../x.safetensors' is outside the checkpoint folder ...
    """
    folder = os.path.abspath(os.fspath(folder))
    if not isinstance(name, str) or not name or "\0" in name:
        raise CheckpointError(f"the {what} {_shown(name)} named in {folder} is not a file name")
    refuse = (f"the {what} {_shown(name)} is outside the checkpoint folder {folder}; refusing it "
              "(a checkpoint may only refer to files inside its own folder)")
    parts = re.split(r"[\\/]", name)
    if os.path.isabs(name) or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
        raise CheckpointError(refuse)
    path = os.path.join(folder, *[p for p in parts if p])
    real = os.path.realpath(path)
    roots = [os.path.realpath(folder)] + [b for b in [_hub_blobs(folder)] if b]
    if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
        raise CheckpointError(f"the {what} {_shown(name)} in {folder} is a link to a file outside the folder; "
                              "refusing it (copy the file into the folder instead)")
    return path


def _config_inside(folder: str) -> None:
    # config.json is read beside the weights (Checkpoint.__init__): the same rule as the weights
    if os.path.lexists(os.path.join(folder, "config.json")):
        resolve_inside(folder, "config.json", "config")


def _shards_from_index(index_path: str) -> list[str]:
    try:
        with open(index_path, encoding="utf-8") as fh:
            index = json.load(fh)
    except OSError as e:
        raise CheckpointError(f"cannot read the safetensors index {index_path}: {e.strerror or e}") from None
    except (ValueError, RecursionError) as e:  # RecursionError: JSON nested deeper than the parser's stack
        reason = "its JSON nests too deeply" if isinstance(e, RecursionError) else f"not valid JSON ({e})"
        raise CheckpointError(f"{index_path} is not a valid safetensors index: {reason}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        got = "no weight_map" if weight_map is None else f"a weight_map that is {_kind(weight_map)}"
        raise CheckpointError(f"{index_path} is not a valid safetensors index: it has {got}, where a mapping "
                              "of tensor names to shard file names is expected")
    for name, file in weight_map.items():
        if not isinstance(file, str):
            raise CheckpointError(f"{index_path} is not a valid safetensors index: its weight_map gives "
                                  f"{_shown(name)} {_kind(file)}, not a shard file name")
    folder = os.path.dirname(os.path.abspath(index_path))
    files = [resolve_inside(folder, f, "shard") for f in sorted(set(weight_map.values()))]
    missing = [os.path.relpath(f, folder) for f in files if not os.path.isfile(f)]
    if missing:
        raise CheckpointError(f"{index_path} lists shards that are not there: {', '.join(missing)}")
    return files


def _kind(value) -> str:
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__} of {len(value)}" if value else f"an empty {type(value).__name__}"
    return "null" if value is None else f"a {type(value).__name__}"


# -- matching a checkpoint to a model -------------------------------------------------------
@dataclass
class LoadPlan:
    """Which stored tensor fills which parameter, and what is left out or initialised."""

    sources: dict[str, str]                       # model name -> checkpoint name
    initialised: list[str] = field(default_factory=list)  # head parameters the file lacks
    unused: list[str] = field(default_factory=list)        # another head's parameters, dropped
    ignored: list[str] = field(default_factory=list)       # sinusoid table, tied decoder
    config: RoFormerConfig | None = None                   # the config to build: the one given, completed

    def report(self, cls_name: str) -> None:
        """Log what was initialised or dropped (the reference does the same)."""
        if self.initialised:
            logger.warning("%s: the checkpoint has no weights for %s; they are newly initialised "
                           "and should be trained", cls_name, ", ".join(self.initialised))
        if self.unused:
            logger.warning("%s: weights of another head were not used: %s", cls_name, ", ".join(self.unused))


def _all_head_names(config: RoFormerConfig) -> set[str]:
    names: set[str] = {_TIED_DECODER}
    for head in HEADS:
        names.update(head_spec(config, head))
    return names


def plan_load(stored: Mapping[str, tuple[int, ...]], config: RoFormerConfig, head: str) -> LoadPlan:
    """Match stored names/shapes to ``canonical_spec(config, head)``.

    A bare-model file fills a head model's encoder (the head is initialised, and said so);
    a head model's file fills a bare model (the head is dropped). Anything else missing,
    unexpected or of the wrong shape raises one :class:`CheckpointError` listing all of it.

    The family's variants: a config whose ``norm_type``/``use_bias`` contradict the tensors
    (a V2 config over LayerNorm tensors, a V1 config without them) is refused with the
    tensors named. A checkpoint holding ``roformer.pooler.*`` has a pooler whatever its config says:
    ``plan.config`` is then a copy of ``config`` with ``add_pooling_layer`` set (build the model
    from ``plan.config``; ``config`` itself is left as it is); a pooler asked for but absent from
    the file is initialised, like a head.

    Example:
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> plan = plan_load(canonical_spec(cfg, "model"), cfg, "question_answering")
        >>> plan.initialised
        ['qa_outputs.weight', 'qa_outputs.bias']
        >>> plan_load(canonical_spec(cfg, "model"), cfg.replace(norm_type="rms_norm", use_bias=False), "model")
        Traceback (most recent call last):
        ...
        roformer_core.errors.CheckpointError: the config says norm_type 'rms_norm' (RoFormer-V2: norms without parameters), but the checkpoint holds LayerNorm tensors: embeddings.LayerNorm.weight, embeddings.LayerNorm.bias, encoder.layer.0.attention.output.LayerNorm.weight, encoder.layer.0.attention.output.LayerNorm.bias, encoder.layer.0.output.LayerNorm.weight, encoder.layer.0.output.LayerNorm.bias; set norm_type to 'layer_norm' or fix the config
        >>> pooled = {**canonical_spec(cfg, "model"), "pooler.dense.weight": (8, 8), "pooler.dense.bias": (8,)}
        >>> plan_load(pooled, cfg, "model").config.add_pooling_layer, cfg.add_pooling_layer
        (True, False)
    """
    ignored = [n for n in stored if _IGNORED.match(n) or (n == _TIED_DECODER and config.tie_word_embeddings)]
    names = [n for n in stored if n not in ignored]
    _check_variant(names, config)
    if not config.add_pooling_layer and any(_POOLER.match(n) for n in names):
        # The checkpoint decides whether there is a pooler (the port's folders and the original
        # TF1 Sim files have one; their configs do not say so): the config is completed here, so
        # the model built from it, and what is saved from it, hold the pooler.
        config = config.replace(add_pooling_layer=True)
    spec = canonical_spec(config, head)
    head_names = _all_head_names(config)
    stored_has_prefix = any(n.startswith(BASE_PREFIX) for n in names)

    def model_name(n: str) -> str:
        if head == "model":
            return n[len(BASE_PREFIX):] if n.startswith(BASE_PREFIX) else n
        if not stored_has_prefix and n not in head_names:
            return BASE_PREFIX + n
        return n

    sources: dict[str, str] = {}
    unused, unexpected = [], []
    for n in names:
        m = model_name(n)
        if m in spec:
            sources[m] = n
        elif n in head_names or (head == "model" and not n.startswith(BASE_PREFIX) and stored_has_prefix):
            unused.append(n)
        else:
            unexpected.append(n)
    missing = [m for m in spec if m not in sources]
    initialised = []
    pooler = [m for m in spec if _POOLER.match(m)]
    if pooler and set(pooler) <= set(missing):  # a pooler asked for (add_pooling_layer) that the file lacks
        initialised = pooler
        missing = [m for m in missing if m not in pooler]
    own_head = list(head_spec(config, head))
    if missing and set(missing) == set(own_head) and not any(m in sources for m in own_head):
        initialised, missing = own_head + initialised, []
    wrong = [f"{n} {tuple(stored[n])} (model wants {spec[m]})"
             for m, n in sources.items() if tuple(stored[n]) != tuple(spec[m])]
    problems = []
    if wrong:
        problems.append("wrong shape: " + "; ".join(wrong))
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected: " + ", ".join(unexpected))
    if problems:
        raise CheckpointError("checkpoint does not fit the config " + _summary(config) + ": " + " | ".join(problems))
    return LoadPlan(sources, initialised, unused, ignored, config)


_POOLER = re.compile(r"^(roformer\.)?pooler\.dense\.(weight|bias)$")
#: encoder norm parameters (not the MLM head's transform.LayerNorm) and encoder Linear biases
_ENCODER_NORM = re.compile(r"^(roformer\.)?(embeddings|encoder\.layer\.\d+\.(attention|crossattention|output)"
                           r"(\.output)?)\.LayerNorm\.(weight|bias)$")
_ENCODER_BIAS = re.compile(r"^(roformer\.)?encoder\.layer\.\d+\.((attention|crossattention)\.(self\.(query|key|value)"
                           r"|output\.dense)|intermediate\.dense|output\.dense)\.bias$")


def _named(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _check_variant(names: list[str], config: RoFormerConfig) -> None:
    """One :class:`CheckpointError` when the config's ``norm_type``/``use_bias`` contradict the tensors.

    A RoFormer-V2 config over V1 tensors (or the other way round) would otherwise load without
    a word and compute garbage, or fail with a list of every missing tensor; this says which
    field is wrong and names the tensors that show it.
    """
    encoder = [n for n in names if re.match(r"^(roformer\.)?(embeddings|encoder)\.", n)]
    if not encoder:
        return
    norms = [n for n in encoder if _ENCODER_NORM.match(n)]
    biases = [n for n in encoder if _ENCODER_BIAS.match(n)]
    if config.norm_type == "rms_norm" and norms:
        raise CheckpointError(f"the config says norm_type 'rms_norm' (RoFormer-V2: norms without parameters), but "
                              f"the checkpoint holds LayerNorm tensors: {_named(norms)}; set norm_type to "
                              f"'layer_norm' or fix the config")
    if config.norm_type == "layer_norm" and not norms:
        expected = [n for n in base_spec(config) if n.endswith(("LayerNorm.weight", "LayerNorm.bias"))]
        raise CheckpointError(f"the config says norm_type 'layer_norm', but the checkpoint holds none of its LayerNorm "
                              f"tensors ({_named(expected)}): a RoFormer-V2 checkpoint? set norm_type to 'rms_norm'")
    if not config.use_bias and biases:
        raise CheckpointError(f"the config says use_bias false (RoFormer-V2: no bias in the encoder), but the "
                              f"checkpoint holds the biases {_named(biases)}; set use_bias to true or fix the config")
    if config.use_bias and not biases:
        expected = [n for n in base_spec(config) if _ENCODER_BIAS.match(n)]
        raise CheckpointError(f"the config says use_bias true, but the checkpoint holds none of the encoder biases "
                              f"({_named(expected)}): a RoFormer-V2 checkpoint? set use_bias to false")


def _summary(config: RoFormerConfig) -> str:
    c = config
    return (f"(vocab_size={c.vocab_size}, hidden_size={c.hidden_size}, embedding_size={c.embedding_size}, "
            f"layers={c.num_hidden_layers}, intermediate_size={c.intermediate_size}, num_labels={c.num_labels})")


# -- writing --------------------------------------------------------------------------------
def save_checkpoint(directory: str | os.PathLike, config: RoFormerConfig,
                    tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
                    tags: Mapping[str, str] | None = None, extra_files: Callable[[str], None] | None = None) -> None:
    """Write ``config.json`` + ``model.safetensors`` into ``directory`` atomically.

    ``tensors`` are canonical names to numpy arrays (read one at a time while writing);
    ``tags`` marks arrays whose numpy dtype is not their stored dtype (``"BF16"`` bits).
    Tied weights are written once: pass only canonical names.

    Example:
        >>> import tempfile
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> d = tempfile.mkdtemp()
        >>> save_checkpoint(d, cfg, {k: np.zeros(s, np.float32) for k, s in canonical_spec(cfg).items()})
        >>> sorted(os.listdir(d))
        ['config.json', 'model.safetensors']
    """
    with atomic_dir(directory, remove=STALE_WEIGHTS) as tmp:
        write_safetensors(os.path.join(tmp, WEIGHTS_NAME), tensors, metadata={"format": "pt"}, tags=tags)
        config.save(tmp)
        if extra_files is not None:
            extra_files(tmp)
