"""The model lifecycle, once for every backend: open a checkpoint, plan the load, fill a model, save.

A backend supplies only what is framework-specific, as a :class:`Lifecycle` subclass of a
few dozen lines (see ``roformer_torch.modeling.TorchLifecycle``):

- ``build(cls, config, tag, **options)``: a model of class ``cls`` whose float dtype fits the
  stored tensors' tag (``"F32"``, ``"F16"``, ``"BF16"``) unless ``options`` name one;
- ``variables(model)``: ``(canonical name, transpose, get, set)`` for every parameter, where
  ``get()`` returns a numpy array (bfloat16 as ``uint16`` bits, or ml_dtypes' ``bfloat16``)
  and ``set(array, tag)`` takes the stored array (``[in, out]`` when ``transpose``);
- ``finish(model, plan)``: anything left after the tensors are in (optional).

Everything else, from where a checkpoint is (a folder, a file, a hub id), through which
format it is in, to which tensor fills which parameter and what the messages say, is here.

Example:
    >>> import tempfile
    >>> import numpy as np
    >>> from roformer_core import RoFormerConfig
    >>> class Dict(dict):                       # a "model" that is a dict of numpy arrays
    ...     head = "model"
    >>> class DictLifecycle(Lifecycle):
    ...     name = "numpy"
    ...     def build(self, cls, config, tag, **options):
    ...         model = cls({n: np.zeros(s, np.float32) for n, s in canonical_spec(config, cls.head).items()})
    ...         model.config = config
    ...         return model
    ...     def variables(self, model):
    ...         for n in model:
    ...             yield n, False, (lambda n=n: model[n]), (lambda a, tag, n=n: model.__setitem__(n, a))
    >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                      intermediate_size=16)
    >>> life, d = DictLifecycle(), tempfile.mkdtemp()
    >>> m = life.build(Dict, cfg, "F32"); m["embeddings.word_embeddings.weight"][:] = 1
    >>> life.save(m, d)
    >>> float(life.load(Dict, d)["embeddings.word_embeddings.weight"].sum())
    80.0
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import numpy as np

from roformer_core.checkpoint import HEADS, LoadPlan, canonical_spec, plan_load, save_checkpoint
from roformer_core.config import RoFormerConfig
from roformer_core.errors import CheckpointError
from roformer_core.formats import FILE_NAMES, Source, open_source

#: which weight file a hub download prefers: safetensors, shards, pytorch_model.bin, then the backend's own
HUB_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
HUB_OPTIONS = ("revision", "cache_dir", "local_files_only", "token", "force_download")
#: keyword arguments of ``from_pretrained`` that are not config overrides: the hub's, and ``report``
#: (False: no warning about a head initialised or left out, for callers who expect it)
LOAD_OPTIONS = HUB_OPTIONS + ("report",)

Variable = tuple[str, bool, Callable[[], np.ndarray], Callable[[np.ndarray, str], None]]


def storage(array: np.ndarray) -> tuple[np.ndarray, str | None]:
    """``(array as safetensors stores it, its tag)``: bfloat16 becomes its uint16 bits, tag BF16.

    Example:
        >>> storage(np.zeros(2, np.uint16))[1], storage(np.zeros(2, np.float32))[1]
        ('BF16', None)
    """
    array = np.ascontiguousarray(array)
    if array.dtype.name == "bfloat16":
        return array.view(np.uint16), "BF16"
    if array.dtype == np.uint16:  # the backends hand bfloat16 over as its bits
        return array, "BF16"
    return array, None


def check_state_dict(state: dict[str, np.ndarray], config: RoFormerConfig, head: str, hint: str = "") -> dict:
    """``state`` in reference order if it is exactly ``canonical_spec(config, head)``, else one
    :class:`CheckpointError` listing every wrong shape, missing and unexpected name.

    Example:
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                      intermediate_size=16)
        >>> check_state_dict({}, cfg, "model")
        Traceback (most recent call last):
        ...
        roformer_core.errors.CheckpointError: the 'model' weights do not fit the config: missing: ...
    """
    spec = canonical_spec(config, head)
    missing, unexpected = [n for n in spec if n not in state], [n for n in state if n not in spec]
    wrong = [f"{n} {tuple(state[n].shape)} (config wants {spec[n]})" for n in spec
             if n in state and tuple(state[n].shape) != tuple(spec[n])]
    problems = (["wrong shape: " + "; ".join(wrong)] if wrong else []) \
        + (["missing: " + ", ".join(missing)] if missing else []) \
        + (["unexpected: " + ", ".join(unexpected)] if unexpected else [])
    if problems:
        raise CheckpointError(f"the {head!r} weights do not fit the config: " + " | ".join(problems)
                              + (hint if wrong else ""))
    return {n: state[n] for n in spec}


def open_checkpoint(path: str | os.PathLike, config: RoFormerConfig | None = None, native: str | None = None,
                    **hub_options) -> Source:
    """Open ``path`` (a folder, a weights file, or a hub id) in whatever format it holds.

    ``native`` is the backend's own file name (``tf_model.h5``, ``flax_model.msgpack``), tried on
    the hub after the common formats.

    Example:
        >>> open_checkpoint("/nowhere/at/all")
        Traceback (most recent call last):
        ...
        roformer_core.errors.CheckpointError: /nowhere/at/all does not exist
    """
    path = os.fspath(path)
    unknown = sorted(set(hub_options) - set(HUB_OPTIONS))
    if unknown:
        raise CheckpointError(f"unknown option {', '.join(unknown)}")
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        from roformer_core import hub

        if not hub.is_local(path):
            weights = HUB_WEIGHTS + ((native,) if native else ())
            path = hub.resolve_folder(path, files=("config.json",), weights=weights, **hub_options)
    return open_source(path, config=config)


class Lifecycle:
    """What a backend implements to get ``from_pretrained``/``save_pretrained`` (see the module docs).

    Example: see the module docstring.
    """

    name = ""
    #: the backend's own weights file, tried on the hub after the common formats
    native_file: str | None = None

    def build(self, cls, config: RoFormerConfig, tag: str, **options) -> Any:
        raise NotImplementedError

    def variables(self, model, **options) -> Iterable[Variable]:
        raise NotImplementedError

    def finish(self, model, plan: LoadPlan) -> Any:
        return model

    # -- the lifecycle itself ---------------------------------------------------------------------
    def load(self, cls, path: str | os.PathLike, config: RoFormerConfig | None = None, options: dict | None = None,
             **config_overrides) -> Any:
        """``cls.from_pretrained(path, ...)``: open, plan, build, fill, report.

        ``options`` go to :meth:`build` (dtype, device ...) except :data:`LOAD_OPTIONS` (the hub's
        ``revision``, ``cache_dir`` ..., and ``report``), which may also come among the keyword
        arguments; the other keyword arguments change the config.
        """
        options = dict(options or {})
        options.update({k: config_overrides.pop(k) for k in LOAD_OPTIONS if k in config_overrides})
        hub_options = {k: options.pop(k) for k in list(options) if k in HUB_OPTIONS}
        report = options.pop("report", True)
        source = open_checkpoint(path, config, self.native_file, **hub_options)
        try:
            config = source.config.replace(**config_overrides) if config_overrides else source.config
            plan = plan_load(source.shapes(), config, cls.head)
            config = plan.config
            first = next(iter(plan.sources.values()), None)
            tag = source.tensors[first].tag if first is not None else "F32"
            model = self.build(cls, config, tag, **options)
            slots = {name: (transpose, set_) for name, transpose, _, set_ in self.variables(model)}
            for name, stored_name in plan.sources.items():
                tensor = source.tensors[stored_name]
                transpose, set_ = slots[name]
                set_(tensor.read(transposed=transpose), tensor.tag)
            model = self.finish(model, plan)
        finally:
            source.close()
        if report:
            plan.report(cls.__name__)
        return model

    def state_dict(self, model, **options) -> dict[str, np.ndarray]:
        """``{canonical name: numpy array}`` of the model, canonical layout, reference order.

        Example: see the module docstring.
        """
        state = {}
        for name, transpose, get, _ in self.variables(model, **options):
            array = np.asarray(get())
            state[name] = array.T if transpose and array.ndim == 2 else array
        return check_state_dict(state, model.config, model.head)

    def save(self, model, directory: str | os.PathLike, extra_files: Callable[[str], None] | None = None,
             **options) -> None:
        """``model.save_pretrained(directory)``: config.json + model.safetensors, atomically."""
        tags, tensors = {}, []
        for name, array in self.state_dict(model, **options).items():
            array, tag = storage(array)
            if tag:
                tags[name] = tag
            tensors.append((name, array))
        config = model.config
        if config.extra.get("architectures") != [HEADS[model.head]]:
            # which head the weights are for: heads with the same tensors (masked vs causal LM; a
            # tied V2 masked LM has no head tensors at all) are told apart by it, as in the reference
            config = config.replace(architectures=[HEADS[model.head]])
        save_checkpoint(directory, config, tensors, tags=tags, extra_files=extra_files)


__all__ = ["Lifecycle", "open_checkpoint", "check_state_dict", "storage", "HUB_WEIGHTS", "HUB_OPTIONS", "LOAD_OPTIONS", "FILE_NAMES"]
