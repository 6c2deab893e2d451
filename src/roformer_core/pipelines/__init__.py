"""Pipelines, as in the reference library: ``pipeline(task, model)`` then call it on texts.

Tasks: ``fill-mask``, ``text-classification`` (``sentiment-analysis``), ``token-classification``
(``ner``), ``question-answering``, ``feature-extraction``, ``text-generation``. Each takes the
reference pipeline's arguments and returns its results (lists of dicts with the same keys,
scores as Python floats). The model runs in PyTorch, Keras or Flax through
:class:`roformer_core.backends.Backend`, imported only when asked for.

Example:
    >>> import tempfile
    >>> from roformer_core import RoFormerConfig, RoFormerTokenizer
    >>> from roformer_torch import RoFormerForMaskedLM
    >>> folder = tempfile.mkdtemp()
    >>> tok = RoFormerTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "水", "在", "零", "度", "时"])
    >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                      intermediate_size=16)
    >>> RoFormerForMaskedLM(cfg).save_pretrained(folder); _ = tok.save_pretrained(folder)
    >>> fill = pipeline("fill-mask", folder, backend="torch")      # or a hub id; backend="keras", "flax"
    >>> best = fill("水在零度时[MASK]", top_k=3)
    >>> len(best), sorted(best[0])
    (3, ['score', 'sequence', 'token', 'token_str'])
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from roformer_core.backends import PACKAGES, available_backends, backend_name, get_backend
from roformer_core.errors import InputError
from roformer_core.heads import HEAD_TABLE
from roformer_core.pipelines.base import Pipeline
from roformer_core.pipelines.classification import TextClassificationPipeline, TokenClassificationPipeline
from roformer_core.pipelines.fill_mask import FillMaskPipeline
from roformer_core.pipelines.generation import FeatureExtractionPipeline, TextGenerationPipeline
from roformer_core.pipelines.question_answering import QuestionAnsweringPipeline

#: task name -> pipeline class
TASKS: dict[str, type[Pipeline]] = {cls.task: cls for cls in (
    FillMaskPipeline, TextClassificationPipeline, TokenClassificationPipeline, QuestionAnsweringPipeline,
    FeatureExtractionPipeline, TextGenerationPipeline)}
#: other names of the same tasks
TASK_ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
#: the checkpoints' heads each task can serve (a language-model head serves both LM tasks; any encoder
#: serves feature extraction)
ACCEPTED_HEADS = {
    "fill-mask": ("masked_lm", "causal_lm"),
    "text-generation": ("causal_lm", "masked_lm"),
    "text-classification": ("sequence_classification",),
    "token-classification": ("token_classification",),
    "question-answering": ("question_answering",),
    "feature-extraction": tuple(HEAD_TABLE),
}
_DTYPES = {"float32": "float32", "fp32": "float32", "float": "float32", "float16": "float16", "fp16": "float16",
           "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}
_HUB_OPTIONS = ("revision", "cache_dir", "local_files_only", "token", "force_download")


def task_name(task: str) -> str:
    """The task's one name, or one clear error listing the tasks.

    Example:
        >>> task_name("sentiment-analysis")
        'text-classification'
        >>> task_name("summarization")
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: unknown task 'summarization'; tasks: fill-mask, text-classification, token-classification, question-answering, feature-extraction, text-generation (aliases: sentiment-analysis, ner)
    """
    key = TASK_ALIASES.get(str(task), str(task))
    if key not in TASKS:
        raise InputError(f"unknown task {task!r}; tasks: {', '.join(TASKS)} (aliases: {', '.join(TASK_ALIASES)})")
    return key


def dtype_name(dtype) -> str | None:
    """``"float32"``, ``"float16"``, ``"bfloat16"`` (or None) for a name or a torch/numpy/jax dtype.

    Example:
        >>> dtype_name("fp16"), dtype_name(None), dtype_name("bf16")
        ('float16', None, 'bfloat16')
        >>> dtype_name("int8")
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: unknown dtype 'int8'; use float32, float16 or bfloat16
    """
    if dtype is None:
        return None
    text = dtype if isinstance(dtype, str) else getattr(dtype, "__name__", None) or str(dtype)
    key = text.lower().replace("torch.", "").replace("<class '", "").rstrip("'>").split(".")[-1]
    if key not in _DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16")
    return _DTYPES[key]


def pipeline(task: str, model: Any, tokenizer: Any = None, backend: str | None = None, dtype=None, device=None,
             batch_size: int = 8, **hub_options) -> Pipeline:
    """A pipeline for ``task`` over ``model``: a folder, a hub id, or a loaded model (then pass ``tokenizer``).

    ``backend``: ``"torch"``, ``"tf"`` (``"keras"``) or ``"flax"`` (``"jax"``); default the first
    installed of these, in that order (a loaded model brings its own). ``tokenizer``: a
    :class:`~roformer_core.tokenizer.RoFormerTokenizer`, or a folder or hub id to load one from
    (default: the model's folder). ``dtype``: ``"float32"``, ``"float16"``, ``"bfloat16"`` (or a
    torch/jax dtype; default float32). ``device``: ``"cpu"``, ``"cuda:0"``, an index, ...
    ``batch_size``: texts per forward pass. ``revision=``, ``cache_dir=``, ``local_files_only=``,
    ``token=``, ``force_download=`` go to the hub. The checkpoint must hold the task's head
    (a classifier for ``text-classification`` ...); the tokenizer is checked against the model.

    Example: see the module docstring.
    """
    name = task_name(task)
    cls = TASKS[name]
    if "torch_dtype" in hub_options:  # the reference's spelling
        if dtype is not None:
            raise InputError("give dtype or torch_dtype, not both")
        dtype = hub_options.pop("torch_dtype")
    unknown = sorted(set(hub_options) - set(_HUB_OPTIONS))
    if unknown:
        raise InputError(f"pipeline() has no option {', '.join(unknown)}; hub options are {', '.join(_HUB_OPTIONS)}")
    dtype = dtype_name(dtype)
    if isinstance(model, (str, os.PathLike)):
        chosen = get_backend(backend_name(backend) if backend is not None else _default_backend())
        loaded = _load(name, cls, model, chosen, dtype, hub_options)
        tokenizer = _tokenizer(model if tokenizer is None else tokenizer, hub_options)
    else:
        chosen = _backend_of(model)
        if backend is not None and backend_name(backend) != chosen.name:
            raise InputError(f"the model is a {chosen.name} model, but backend={backend!r} was asked for")
        if dtype is not None:
            raise InputError("dtype applies when loading from a folder or hub id; a loaded model keeps its own")
        if tokenizer is None:
            raise InputError("a loaded model needs its tokenizer: pipeline(task, model, tokenizer=...)")
        head = getattr(model, "head", None)
        if head not in ACCEPTED_HEADS[name]:
            raise InputError(f"the {name} pipeline needs a {_needs(name)}, got {type(model).__name__}")
        loaded = model
        tokenizer = _tokenizer(tokenizer, hub_options)
    return cls(chosen.place(loaded, device), tokenizer, chosen, batch_size=batch_size)


def for_backend(backend: str):
    """``pipeline`` with the backend fixed (what each backend package exports as its ``pipeline``).

    Example:
        >>> for_backend("keras").__name__, for_backend("flax").__doc__.splitlines()[0]
        ('pipeline', 'pipeline(task, model, ...) running the model in Flax (see roformer_core.pipeline).')
    """
    key = backend_name(backend)
    package = PACKAGES[key][0]
    label = {"roformer_torch": "PyTorch", "roformer_tf": "Keras (TensorFlow)", "roformer_flax": "Flax"}[package]

    def backend_pipeline(task: str, model: Any, tokenizer: Any = None, dtype=None, device=None, batch_size: int = 8,
                         **hub_options) -> Pipeline:
        return pipeline(task, model, tokenizer, key, dtype, device, batch_size, **hub_options)

    backend_pipeline.__name__ = backend_pipeline.__qualname__ = "pipeline"
    backend_pipeline.__doc__ = (f"pipeline(task, model, ...) running the model in {label} (see roformer_core.pipeline)."
                                f"\n\n    Example:\n        >>> from {package} import "
                                f"pipeline  # doctest: +SKIP\n        >>> pipeline('fill-mask', 'path/to/checkpoint')"
                                f"  # doctest: +SKIP\n")
    return backend_pipeline


#: ``pipeline`` in each backend (exported by roformer_torch, roformer_tf and roformer_flax)
torch_pipeline = for_backend("torch")
tf_pipeline = for_backend("tf")
flax_pipeline = for_backend("flax")


def _needs(task: str) -> str:
    if task == "feature-extraction":
        return "RoFormer model"
    return HEAD_TABLE[ACCEPTED_HEADS[task][0]].class_name + " (a checkpoint with that head)"


def _default_backend() -> str:
    found = available_backends()
    if not found:
        raise InputError("no backend is installed: pip install 'roformer-tri[torch]' (or [tf], [flax])")
    return found[0]


def _backend_of(model):
    package = type(model).__module__.split(".")[0]
    for key, (name, _) in PACKAGES.items():
        if name == package:
            return get_backend(key)
    raise InputError(f"model must be a folder, a hub id, or a roformer_torch / roformer_tf / roformer_flax model, "
                     f"got {type(model).__name__}")


def _load(task: str, cls, location, backend, dtype: str | None, hub_options: dict):
    from roformer_core.heads import detect_head
    from roformer_core.lifecycle import open_checkpoint

    native = getattr(importlib.import_module(f"{backend.package}.adapter").LIFECYCLE, "native_file", None)
    source = open_checkpoint(location, None, native, **hub_options)
    try:
        stored = detect_head(source.shapes(), source.config)
        config = source.config
        resolved = os.fspath(location) if os.path.exists(os.fspath(location)) else source.folder
    finally:
        source.close()
    if stored not in ACCEPTED_HEADS[task]:
        what = "a bare encoder" if stored == "model" else f"a {HEAD_TABLE[stored].class_name} checkpoint"
        raise InputError(f"{os.fspath(location)} holds {what}: the {task} pipeline needs a {_needs(task)}")
    options: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
    if cls.head == "causal_lm" and not config.is_decoder:  # generation needs the causal mask
        options["is_decoder"] = True
    return backend.load(cls.head, resolved, **options)


def _tokenizer(tokenizer, hub_options: dict):
    from roformer_core.tokenizer import VOCAB_NAME, RoFormerTokenizer

    if isinstance(tokenizer, (str, os.PathLike)):
        folder = os.fspath(tokenizer)
        if os.path.isdir(folder) and not os.path.exists(os.path.join(folder, VOCAB_NAME)):
            raise InputError(f"{folder} has no {VOCAB_NAME}: save the tokenizer beside the model "
                             f"(tokenizer.save_pretrained(folder)) or pass tokenizer=")
        return RoFormerTokenizer.from_pretrained(tokenizer, **hub_options)
    return tokenizer


__all__ = ["pipeline", "for_backend", "task_name", "dtype_name", "TASKS", "TASK_ALIASES", "Pipeline",
           "FillMaskPipeline", "TextClassificationPipeline", "TokenClassificationPipeline",
           "QuestionAnsweringPipeline", "FeatureExtractionPipeline", "TextGenerationPipeline",
           "torch_pipeline", "tf_pipeline", "flax_pipeline"]
