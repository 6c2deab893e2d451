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
    """Names and shapes of the bare model (no ``roformer.`` prefix), in reference order."""
    c = config
    V, E, H, I, T = c.vocab_size, c.embedding_size, c.hidden_size, c.intermediate_size, c.type_vocab_size
    spec: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (V, E),
        "embeddings.token_type_embeddings.weight": (T, E),
        "embeddings.LayerNorm.weight": (E,),
        "embeddings.LayerNorm.bias": (E,),
    }
    if E != H:
        spec["embeddings_project.weight"] = (H, E)
        spec["embeddings_project.bias"] = (H,)
    blocks = ["attention"] + (["crossattention"] if c.is_decoder and c.add_cross_attention else [])
    for i in range(c.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for blk in blocks:
            for proj in ("query", "key", "value"):
                spec[f"{p}{blk}.self.{proj}.weight"] = (H, H)
                spec[f"{p}{blk}.self.{proj}.bias"] = (H,)
            spec[f"{p}{blk}.output.dense.weight"] = (H, H)
            spec[f"{p}{blk}.output.dense.bias"] = (H,)
            spec[f"{p}{blk}.output.LayerNorm.weight"] = (H,)
            spec[f"{p}{blk}.output.LayerNorm.bias"] = (H,)
        spec[f"{p}intermediate.dense.weight"] = (I, H)
        spec[f"{p}intermediate.dense.bias"] = (I,)
        spec[f"{p}output.dense.weight"] = (H, I)
        spec[f"{p}output.dense.bias"] = (H,)
        spec[f"{p}output.LayerNorm.weight"] = (H,)
        spec[f"{p}output.LayerNorm.bias"] = (H,)
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
            if path.endswith(".json"):
                return _shards_from_index(path)
            return [path]
        single = os.path.join(path, WEIGHTS_NAME)
        index = os.path.join(path, WEIGHTS_INDEX_NAME)
        if os.path.isfile(single):
            return [single]
        if os.path.isfile(index):
            return _shards_from_index(index)
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


def _shards_from_index(index_path: str) -> list[str]:
    try:
        with open(index_path, encoding="utf-8") as fh:
            weight_map = json.load(fh)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path} is not a valid safetensors index: {e}") from None
    folder = os.path.dirname(os.path.abspath(index_path))
    files = sorted(set(weight_map.values()))
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise CheckpointError(f"{index_path} lists shards that are not there: {', '.join(missing)}")
    return [os.path.join(folder, f) for f in files]


# -- matching a checkpoint to a model -------------------------------------------------------
@dataclass
class LoadPlan:
    """Which stored tensor fills which parameter, and what is left out or initialised."""

    sources: dict[str, str]                       # model name -> checkpoint name
    initialised: list[str] = field(default_factory=list)  # head parameters the file lacks
    unused: list[str] = field(default_factory=list)        # another head's parameters, dropped
    ignored: list[str] = field(default_factory=list)       # sinusoid table, tied decoder

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

    Example:
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> plan = plan_load(canonical_spec(cfg, "model"), cfg, "question_answering")
        >>> plan.initialised
        ['qa_outputs.weight', 'qa_outputs.bias']
    """
    spec = canonical_spec(config, head)
    ignored = [n for n in stored if _IGNORED.match(n) or (n == _TIED_DECODER and config.tie_word_embeddings)]
    names = [n for n in stored if n not in ignored]
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
    own_head = list(head_spec(config, head))
    initialised = []
    if missing and set(missing) == set(own_head) and not any(m in sources for m in own_head):
        initialised, missing = own_head, []
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
    return LoadPlan(sources, initialised, unused, ignored)


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
