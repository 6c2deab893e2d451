"""The main job's settings (every one a command-line option) and where it writes its files.

The defaults are sized so the whole default run (``./run main``) takes about five minutes
on two CPU cores: a 2-layer, 128-wide RoFormer, a short masked-LM pass, two epochs on the
reviews. ``--tiny`` shrinks everything to a smoke test of a minute.

Example:
    >>> s = Settings(out="runs/x")
    >>> s.layout.classifier, s.model_config(vocab_size=100).num_hidden_layers
    ('runs/x/classifier', 2)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

from roformer_core.config import RoFormerConfig
from roformer_core.errors import InputError
from roformer_demo.data import LABELS


@dataclass(frozen=True)
class Layout:
    """The files of one run under its output folder.

    Example:
        >>> Layout("runs/demo").split("test")
        'runs/demo/data/test.jsonl'
    """

    root: str

    def _at(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    data = property(lambda self: self._at("data"))
    tokenizer = property(lambda self: self._at("tokenizer"))
    mlm = property(lambda self: self._at("mlm"))
    classifier = property(lambda self: self._at("classifier"))
    flax_continued = property(lambda self: self._at("classifier-flax"))
    classifier_v2 = property(lambda self: self._at("classifier-v2"))
    converted = property(lambda self: self._at("converted"))
    reports = property(lambda self: self._at("reports"))
    summary = property(lambda self: self._at("summary.txt"))
    metrics = property(lambda self: self._at("metrics.json"))

    def split(self, name: str) -> str:
        """The JSON-lines file of one split (train, validation, test)."""
        return self._at("data", f"{name}.jsonl")

    def report(self, stage: str) -> str:
        """The JSON report a stage writes."""
        return self._at("reports", f"{stage}.json")


@dataclass
class Settings:
    """Everything a run can change; the defaults are the main job's.

    Example:
        >>> Settings(hidden=30, heads=4)
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: --hidden (30) must be a multiple of --heads (4)
    """

    out: str = "runs/demo"
    seed: int = 0
    # data and vocabulary
    max_examples: int | None = None
    news_sentences: int = 20000
    vocab_size: int = 8000
    max_length: int = 128
    # model
    layers: int = 2
    hidden: int = 128
    heads: int = 4
    intermediate: int = 256
    # training
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-3
    mlm_steps: int = 300
    max_steps: int | None = None
    # flax continuation and conversion
    flax_steps: int = 6
    # RoFormer-V2 (rms_norm, no biases, relu): a classifier trained from scratch in PyTorch
    v2_steps: int = 300
    #: the backend that trains (``run`` trains with Keras)
    backend: str = "keras"

    def __post_init__(self):
        for name in ("news_sentences", "vocab_size", "max_length", "layers", "hidden", "heads", "intermediate",
                     "epochs", "batch_size", "v2_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("mlm_steps", "flax_steps"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"--max-steps must be a positive integer, got {self.max_steps}")
        if self.hidden % self.heads:
            raise InputError(f"--hidden ({self.hidden}) must be a multiple of --heads ({self.heads})")
        if (self.hidden // self.heads) % 2:
            raise InputError(f"rotary embeddings need an even head size; --hidden / --heads is "
                             f"{self.hidden // self.heads}")
        if self.max_length < 8:
            raise InputError(f"--max-length must be at least 8, got {self.max_length}")
        if not self.learning_rate > 0:
            raise InputError(f"--learning-rate must be positive, got {self.learning_rate}")

    @property
    def layout(self) -> Layout:
        """Where this run's files go."""
        return Layout(self.out)

    def model_config(self, vocab_size: int) -> RoFormerConfig:
        """The RoFormer config of the sentiment classifier (and of the masked LM before it)."""
        return RoFormerConfig(vocab_size=vocab_size, hidden_size=self.hidden, num_hidden_layers=self.layers,
                              num_attention_heads=self.heads, intermediate_size=self.intermediate,
                              max_position_embeddings=max(512, self.max_length), num_labels=len(LABELS),
                              id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})

    def v2_config(self, vocab_size: int) -> RoFormerConfig:
        """The same sizes as :meth:`model_config`, as RoFormer-V2: RMS norm, no biases, relu.

        Example:
            >>> Settings().v2_config(vocab_size=100).norm_type
            'rms_norm'
        """
        return self.model_config(vocab_size).replace(norm_type="rms_norm", use_bias=False, hidden_act="relu")

    def to_dict(self) -> dict:
        """A JSON-ready dict of every setting."""
        return asdict(self)


#: ``--tiny``: the whole pipeline in about a minute (the test runs this on a few hundred reviews)
TINY = dict(max_examples=400, news_sentences=300, vocab_size=1500, max_length=32, layers=1, hidden=32, heads=2,
            intermediate=64, epochs=1, batch_size=16, mlm_steps=4, max_steps=12, flax_steps=2, v2_steps=6)

SETTING_NAMES = tuple(f.name for f in fields(Settings))
