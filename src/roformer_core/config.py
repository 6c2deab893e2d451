"""RoFormer configuration: the fields of the reference ``config.json``, checked once.

The same object configures all three backends. It reads and writes the ``config.json``
that existing RoFormer checkpoints ship (``"model_type": "roformer"``) and keeps keys it
does not know, so a round trip never drops information.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from roformer_core.errors import ConfigError
from roformer_core.io import atomic_write_text

#: Activations every backend implements. "gelu" is the exact erf form, "gelu_new" the tanh form.
ACTIVATIONS = ("gelu", "gelu_new", "relu", "selu", "silu")
#: "layer_norm": LayerNorm with scale and bias (V1); "rms_norm": parameter-free x / sqrt(mean(x^2) + eps) (V2)
NORM_TYPES = ("layer_norm", "rms_norm")
#: The pooler's activation: tanh as in BERT, "linear" (none) for RoFormer-Sim, or any hidden activation.
POOLER_ACTIVATIONS = ("tanh", "linear") + ACTIVATIONS
PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")
CONFIG_NAME = "config.json"

_BOOL_FIELDS = ("rotary_value", "use_cache", "is_decoder", "add_cross_attention", "tie_word_embeddings", "use_bias",
                "unilm", "add_pooling_layer")
_INT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "type_vocab_size", "pad_token_id")
_OPTIONAL_INT_FIELDS = ("embedding_size", "num_labels", "bos_token_id", "eos_token_id")
_FLOAT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps")
_INT_KEY = re.compile(r"-?[0-9]+")


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened: a message names the bad value without pasting all of it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
#: Keys the reference RoFormerConfig (transformers 4.x and 5.x, PretrainedConfig's common and
#: generation attributes included) writes or reads, beyond our fields: ``replace`` accepts them
#: (into ``extra``), any other keyword is taken for a typo.
REFERENCE_KEYS = frozenset({
    "_attn_implementation", "_commit_hash", "_name_or_path", "architectures", "attn_implementation",
    "bad_words_ids", "begin_suppress_tokens", "chunk_size_feed_forward", "cross_attention_hidden_size",
    "decoder_start_token_id", "diversity_penalty", "do_sample", "dtype", "early_stopping",
    "encoder_no_repeat_ngram_size", "exponential_decay_length_penalty", "finetuning_task", "forced_bos_token_id",
    "forced_eos_token_id", "gradient_checkpointing", "is_encoder_decoder", "length_penalty", "max_length",
    "min_length", "model_type", "no_repeat_ngram_size", "num_beam_groups", "num_beams", "num_return_sequences",
    "output_attentions", "output_hidden_states", "output_past", "output_scores", "prefix", "pruned_heads",
    "remove_invalid_values", "repetition_penalty", "return_dict", "return_dict_in_generate", "sep_token_id",
    "suppress_tokens", "task_specific_params", "temperature", "tf_legacy_loss", "tie_encoder_decoder",
    "tokenizer_class", "top_k", "top_p", "torch_dtype", "torchscript", "transformers_version", "typical_p",
    "use_bfloat16",
})


@dataclass
class RoFormerConfig:
    """Hyper-parameters of a RoFormer model, with the reference defaults.

    Example:
        >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                      num_attention_heads=4, intermediate_size=64)
        >>> cfg.embedding_size, cfg.head_dim
        (32, 8)
        >>> RoFormerConfig.from_dict(cfg.to_dict()) == cfg
        True
        >>> v2 = cfg.replace(norm_type="rms_norm", use_bias=False, hidden_act="relu")   # RoFormer-V2
        >>> cfg.replace(norm_type="rms")
        Traceback (most recent call last):
        ...
        roformer_core.errors.ConfigError: config field 'norm_type' is 'rms'; known: layer_norm, rms_norm
    """

    vocab_size: int = 50000
    embedding_size: int | None = None
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 1536
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    rotary_value: bool = False
    use_cache: bool = True
    is_decoder: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True
    num_labels: int | None = None
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    # -- the RoFormer family (the field names of the ``roformer`` 0.4.3 port's folders) --------------
    #: "rms_norm" for RoFormer-V2: every norm is parameter-free (see NORM_TYPES)
    norm_type: str = "layer_norm"
    #: False (RoFormer-V2) removes the bias of every encoder Linear: q, k, v, attention output, FFN
    use_bias: bool = True
    #: activation after ``roformer.pooler.dense`` (RoFormer-Sim: "linear")
    pooler_activation: str = "tanh"
    #: the UniLM mask from token_type_ids: segment 0 bidirectional, segment 1 sees segment 0 and its own past
    unilm: bool = False
    #: the model has ``roformer.pooler.dense`` (set on loading when the checkpoint holds one)
    add_pooling_layer: bool = False
    #: Keys of a loaded config.json that RoFormer does not use; written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._check_types()
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        if self.num_labels is None:
            self.num_labels = len(self.id2label) if self.id2label else 2
        if self.id2label is None:
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        if self.label2id is None:
            self.label2id = {v: k for k, v in self.id2label.items()}
        self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
        self.validate()

    def _check_types(self) -> None:
        """One ConfigError naming the first field of the wrong JSON type, before any use of it.

        Booleans must be true/false (``"no"`` or ``1`` would be silently truthy or falsy);
        integers must be integers (not booleans, not floats); float fields take any finite
        number and are stored as floats.
        """
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"config field {name!r} must be true or false, got {_show(value)}")
        for name in _INT_FIELDS + _OPTIONAL_INT_FIELDS:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL_INT_FIELDS:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"config field {name!r} must be an integer, got {_show(value)}")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"config field {name!r} must be a finite number, got {_show(value)}")
            setattr(self, name, float(value))
        if self.id2label is not None:
            if not isinstance(self.id2label, dict):
                raise ConfigError(f"config field 'id2label' must map label ids to names, got a "
                                  f"{type(self.id2label).__name__}")
            for k, v in self.id2label.items():
                if not (isinstance(k, int) and not isinstance(k, bool)
                        or isinstance(k, str) and _INT_KEY.fullmatch(k)):
                    raise ConfigError(f"config field 'id2label' has the key {_show(k)}, not an integer label id")
                if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                    raise ConfigError(f"config field 'id2label' maps {_show(k)} to {_show(v)}, not a label name")
        if self.label2id is not None:
            if not isinstance(self.label2id, dict):
                raise ConfigError(f"config field 'label2id' must map label names to ids, got a "
                                  f"{type(self.label2id).__name__}")
            for k, v in self.label2id.items():
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ConfigError(f"config field 'label2id' maps {_show(k)} to {_show(v)}, not an integer label id")
        if not isinstance(self.extra, dict):
            raise ConfigError(f"config field 'extra' must be a dict, got a {type(self.extra).__name__}")

    # -- checks ---------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first impossible field."""
        positive = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers",
                    "num_attention_heads", "intermediate_size", "max_position_embeddings",
                    "type_vocab_size", "num_labels")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config field {name!r} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"config field 'hidden_size' ({self.hidden_size}) must be divisible by "
                f"'num_attention_heads' ({self.num_attention_heads})")
        if self.head_dim % 2:
            raise ConfigError(
                f"config field 'hidden_size' gives an odd head size {self.head_dim} "
                f"(hidden_size / num_attention_heads); rotary embeddings rotate pairs, so it must be even")
        for name, known_values in (("norm_type", NORM_TYPES), ("pooler_activation", POOLER_ACTIVATIONS)):
            value = getattr(self, name)
            if value not in known_values:
                raise ConfigError(f"config field {name!r} is {_show(value)}; known: {', '.join(known_values)}")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"config field 'hidden_act' is {self.hidden_act!r}; known: {', '.join(ACTIVATIONS)}")
        if self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"config field 'problem_type' is {self.problem_type!r}; known: {PROBLEM_TYPES[1:]}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"config field {name!r} must be in [0, 1), got {p!r}")
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"config field 'layer_norm_eps' must be positive, got {self.layer_norm_eps!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"config field 'pad_token_id' ({self.pad_token_id}) is outside the vocabulary")
        if self.add_cross_attention and not self.is_decoder:
            raise ConfigError("config field 'add_cross_attention' needs 'is_decoder' = true")
        if len(self.id2label) != self.num_labels:
            raise ConfigError(f"config field 'id2label' has {len(self.id2label)} labels, num_labels is {self.num_labels}")
        if sorted(self.id2label) != list(range(self.num_labels)):
            raise ConfigError(f"config field 'id2label' must have the label ids 0..{self.num_labels - 1}, "
                              f"got {sorted(self.id2label)}")

    @property
    def head_dim(self) -> int:
        """Size of one attention head, ``hidden_size // num_attention_heads``."""
        return self.hidden_size // self.num_attention_heads

    # -- (de)serialisation --------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RoFormerConfig":
        """Build from a ``config.json`` dictionary; unknown keys are kept in ``extra``."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {k: v for k, v in data.items() if k not in known}
        extra.pop("model_type", None)
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            return cls(**kwargs, extra=extra)
        except TypeError as e:  # a field of the wrong JSON type
            raise ConfigError(f"bad config: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` dictionary (reference key names, ``model_type`` first)."""
        out: dict[str, Any] = {"model_type": "roformer"}
        out.update(copy.deepcopy(self.extra))
        for f in fields(self):
            if f.name != "extra":
                out[f.name] = copy.deepcopy(getattr(self, f.name))
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["architectures"] = out.get("architectures")
        if out["architectures"] is None:
            del out["architectures"]
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "RoFormerConfig":
        """Read a ``config.json`` file (or the one inside a checkpoint folder).

        Example:
            >>> import tempfile
            >>> d = tempfile.mkdtemp(); _ = RoFormerConfig(hidden_size=64, num_attention_heads=4).save(d)
            >>> RoFormerConfig.from_json_file(d).hidden_size
            64
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        if not os.path.isfile(path):
            raise ConfigError(f"no config found at {path}")
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        except RecursionError:  # json's parser guards its stack; a config is never this deep
            raise ConfigError(f"{path} is not a config: its JSON nests too deeply") from None
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
        if isinstance(data, dict) and data.get("model_type", "roformer") != "roformer":
            raise ConfigError(f"{path} describes a {data.get('model_type')!r} model, not 'roformer'")
        return cls.from_dict(data)

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, **kwargs: Any) -> "RoFormerConfig":
        """Read ``config.json`` from a checkpoint folder, a ``.json`` file or a Hub repo id.

        Keyword arguments named in ``roformer_core.hub.HUB_OPTIONS`` (``revision``, ``cache_dir``,
        ``local_files_only``, ``token``, ``force_download``) choose what is fetched for a hub id
        (through the optional huggingface_hub: ``pip install 'roformer-tri[hub]'``); the others
        replace config fields.

        Example:
            >>> import tempfile
            >>> d = tempfile.mkdtemp(); _ = RoFormerConfig(hidden_size=64, num_attention_heads=4).save(d)
            >>> RoFormerConfig.from_pretrained(d, num_labels=3).num_labels
            3
            >>> RoFormerConfig.from_pretrained(d + "/config.json").hidden_size
            64
            >>> # RoFormerConfig.from_pretrained("junnyu/roformer_chinese_base", revision="main")
        """
        from roformer_core.hub import resolve_folder, split_hub_options

        hub_options, overrides = split_hub_options(kwargs)
        path = os.fspath(path_or_id) if isinstance(path_or_id, os.PathLike) else path_or_id
        if not (isinstance(path, str) and os.path.isfile(path)):
            path = resolve_folder(path_or_id, files=(CONFIG_NAME,), **hub_options)
        config = cls.from_json_file(path)
        if not overrides:
            return config
        known = {f.name for f in fields(cls)} - {"extra"}
        unknown = sorted(k for k in overrides if k not in known and k not in config.extra)
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(map(repr, unknown))} given to from_pretrained")
        return config.replace(**overrides)

    def save(self, directory: str | os.PathLike) -> str:
        """Write ``config.json`` into ``directory`` atomically; returns its path."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(os.fspath(directory), CONFIG_NAME)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False, sort_keys=False) + "\n")
        return path

    def replace(self, **changes: Any) -> "RoFormerConfig":
        """A copy with some fields changed (and checked again).

        A keyword must be a field, a key already in :attr:`extra`, or a key the reference
        config knows (:data:`REFERENCE_KEYS`, kept in ``extra``); anything else is taken for a
        typo and refused with the closest field name.

        Example:
            >>> cfg = RoFormerConfig(hidden_size=64, num_attention_heads=4)
            >>> cfg.replace(num_labels=3, architectures=["RoFormerForSequenceClassification"]).num_labels
            3
            >>> cfg.replace(hiden_size=32)
            Traceback (most recent call last):
            ...
            roformer_core.errors.ConfigError: unknown config field 'hiden_size' (did you mean 'hidden_size'?)
        """
        known = [f.name for f in fields(self) if f.name != "extra"]
        for key in changes:
            if key not in known and key not in REFERENCE_KEYS and key not in self.extra:
                close = difflib.get_close_matches(key, known + sorted(REFERENCE_KEYS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; the fields are {', '.join(known)}"
                raise ConfigError(f"unknown config field {key!r}{hint}")
        data = self.to_dict()
        data.update(changes)
        if "hidden_size" in changes and "embedding_size" not in changes and self.embedding_size == self.hidden_size:
            data["embedding_size"] = None
        if "num_labels" in changes and "id2label" not in changes:
            data["id2label"] = data["label2id"] = None
        return RoFormerConfig.from_dict(data)


def with_pooler(config: RoFormerConfig, add_pooling_layer: bool | None) -> RoFormerConfig:
    """``config`` with ``add_pooling_layer`` set when it is given and differs (a copy: the caller's stays as it is).

    Example:
        >>> cfg = RoFormerConfig(hidden_size=8, num_attention_heads=2)
        >>> with_pooler(cfg, None) is cfg, with_pooler(cfg, True).add_pooling_layer, cfg.add_pooling_layer
        (True, True, False)
    """
    if add_pooling_layer is None or add_pooling_layer == config.add_pooling_layer:
        return config
    return config.replace(add_pooling_layer=bool(add_pooling_layer))
