"""The Python API behind ``roformer-convert``: :func:`convert`, :func:`inspect`, :func:`verify`.

Example:
    >>> import tempfile, os
    >>> import numpy as np
    >>> from roformer_core import RoFormerConfig, canonical_spec, save_checkpoint
    >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
    ...                      num_attention_heads=2, intermediate_size=16)
    >>> src, dst = tempfile.mkdtemp(), os.path.join(tempfile.mkdtemp(), "flax")
    >>> save_checkpoint(src, cfg, {k: np.ones(s, np.float32) for k, s in canonical_spec(cfg).items()})
    >>> convert(src, dst, to="flax").tensors
    20
    >>> sorted(os.listdir(dst))
    ['config.json', 'flax_model.msgpack']
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np

from roformer_core.checkpoint import HEADS, STALE_WEIGHTS, canonical_spec, plan_load, resolve_inside
from roformer_core.backends import PACKAGES, get_backend
from roformer_core.config import RoFormerConfig
from roformer_core.errors import CheckpointError, InputError
from roformer_core.io import atomic_dir
from roformer_core.safetensors_io import FLOAT_TAGS, STORAGE, float32_to_bf16_bits, to_float32

from roformer_convert.formats import CARRIED_FILES, ConvertError, Source, Tensor, detect_head, open_source
from roformer_convert.writers import WRITERS, parse_size

DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
HEAD_CHOICES = ("keep", "drop") + tuple(HEADS)


def _resolve_head(source: Source, head: str) -> str:
    if head not in HEAD_CHOICES:
        raise ConvertError(f"unknown --head {head!r}; choose from {', '.join(HEAD_CHOICES)}")
    if head == "keep":
        return detect_head(source.shapes(), source.config)
    return "model" if head == "drop" else head


# -- streaming tensors into a writer ----------------------------------------------------------------
def cast(array: np.ndarray, tag: str, out_tag: str) -> np.ndarray:
    """``array`` stored as ``tag`` converted to ``out_tag`` (BF16 as uint16 bits); no copy if equal.

    Example:
        >>> bits = cast(np.array([1.0, -2.5], np.float32), "F32", "BF16")
        >>> bits.dtype.name, cast(bits, "BF16", "F32").tolist()
        ('uint16', [1.0, -2.5])
    """
    if tag == out_tag:
        return array
    if tag not in FLOAT_TAGS or out_tag not in FLOAT_TAGS:
        raise ConvertError(f"cannot cast a {tag} tensor to {out_tag}")
    f32 = to_float32(array, tag)
    return float32_to_bf16_bits(f32) if out_tag == "BF16" else f32.astype(STORAGE[out_tag])


class _Feed:
    """Hands tensors to a writer one at a time and frees each once the next is asked for."""

    def __init__(self, progress=None):
        self.progress = progress
        self._last: Tensor | None = None

    def load(self, tensor: Tensor, out_tag: str, transposed: bool = False) -> np.ndarray:
        self.done()  # a writer asks for the next tensor only after writing the previous one
        array = cast(tensor.read(transposed), tensor.tag, out_tag)
        self._last = tensor
        if self.progress is not None:
            self.progress.update(array.nbytes)
        return array

    def done(self) -> None:
        if self._last is not None and self._last.release is not None:
            self._last.release()
        self._last = None


class _LazyArray:
    """What a writer gets: ``shape`` and safetensors ``tag`` now, the data on ``np.asarray``."""

    def __init__(self, tensor: Tensor, tag: str, feed: _Feed, transposed: bool = False):
        self.tensor, self.tag, self.feed, self.transposed = tensor, tag, feed, transposed
        self.shape = tuple(reversed(tensor.shape)) if transposed else tensor.shape
        self.dtype = np.dtype(STORAGE[tag])

    @property
    def T(self) -> "_LazyArray":
        return _LazyArray(self.tensor, self.tag, self.feed, not self.transposed)

    def __array__(self, dtype=None, copy=None):
        array = self.feed.load(self.tensor, self.tag, self.transposed)
        return array if dtype is None else array.astype(dtype)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc="converting", leave=False)


# -- the destination ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _destination(dst: str, to: str, force: bool):
    """A temporary folder that becomes ``dst`` only when everything in it is written."""
    if os.path.exists(dst):
        if not os.path.isdir(dst):
            raise ConvertError(f"the destination {dst} exists and is not a folder")
        if os.listdir(dst) and not force:
            raise ConvertError(f"the destination {dst} exists and is not empty; pass --force to overwrite it")
    # old weights of the other layout (single vs shards) would shadow or contradict the new ones
    with atomic_dir(dst, remove=STALE_WEIGHTS if to == "canonical" else ()) as tmp:
        yield tmp


@dataclass
class ConversionResult:
    """What :func:`convert` did: formats, head, tensors written, names left out.

    Example:
        >>> ConversionResult("torch", "canonical", "masked_lm", tensors=41, parameters=18093).dropped
        []
    """

    source_format: str
    target_format: str
    head: str
    tensors: int
    parameters: int
    dropped: list[str] = field(default_factory=list)


def convert(src, dst, *, to: str = "canonical", src_format: str | None = None, dtype: str | None = None,
            head: str = "keep", max_shard_size: int | str | None = None, config=None, force: bool = False,
            progress: bool = False, pooler_activation: str | None = None) -> ConversionResult:
    """Convert the checkpoint at ``src`` (any format) into a ``to`` checkpoint folder ``dst``.

    Tensors go through at most a transpose and a dtype cast (``dtype``: float32, bfloat16,
    float16) one at a time; ``head`` is ``keep`` (the head the file holds), ``drop`` (bare
    model) or a head name; ``max_shard_size`` (bytes or "500MB") shards canonical output;
    ``config`` (object or json path) replaces the config found beside the weights. Nothing
    is left at ``dst`` if anything fails; an existing non-empty ``dst`` needs ``force``.
    ``pooler_activation`` sets the config field of that name, which no original file holds
    (RoFormer-Sim's TF1 checkpoint: ``"linear"``).

    Example:
        >>> import tempfile, os
        >>> import numpy as np
        >>> from roformer_core import RoFormerConfig, canonical_spec, save_checkpoint
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> src = tempfile.mkdtemp()
        >>> save_checkpoint(src, cfg, {k: np.ones(s, np.float32) for k, s in canonical_spec(cfg).items()})
        >>> r = convert(src, os.path.join(tempfile.mkdtemp(), "bf16"), dtype="bfloat16")
        >>> r.source_format, r.target_format, r.head, r.parameters
        ('canonical', 'canonical', 'model', 712)
    """
    if to not in WRITERS:
        raise ConvertError(f"cannot write format {to!r}; writable: {', '.join(WRITERS)}")
    if dtype is not None and dtype not in DTYPES:
        raise ConvertError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if max_shard_size is not None:
        if to != "canonical":
            raise ConvertError("--max-shard-size applies to canonical (safetensors) output only")
        max_shard_size = parse_size(max_shard_size)
    src, dst = os.fspath(src), os.fspath(dst)
    source = open_source(src, src_format, config)
    try:
        if pooler_activation is not None:
            source.config = source.config.replace(pooler_activation=pooler_activation)
        return _convert(source, dst, to, dtype, head, max_shard_size, force, progress)
    finally:
        source.close()


def _plan(source: Source, head: str):
    """Which stored tensor is which parameter of ``head``; a clear error if they do not fit."""
    plan = plan_load(source.shapes(), source.config, head)
    if plan.initialised:
        raise ConvertError(f"{source.path} has no weights for the {head} head ({', '.join(plan.initialised)})")
    return plan


def _convert(source: Source, dst: str, to: str, dtype, head: str, max_shard_size, force: bool, progress: bool):
    head = _resolve_head(source, head)
    plan = _plan(source, head)
    config = plan.config  # the file's config, completed from its tensors (a pooler it holds)
    out_config = RoFormerConfig.from_dict(config.to_dict())
    out_config.extra["architectures"] = [HEADS[head]]
    for key in ("torch_dtype", "dtype"):
        if dtype and key in out_config.extra:
            out_config.extra[key] = dtype
    names = [m for m in canonical_spec(config, head) if m in plan.sources]
    tensors = [source.tensors[plan.sources[m]] for m in names]
    bar = _progress(sum(int(np.prod(t.shape)) * np.dtype(STORAGE[DTYPES.get(dtype, t.tag)]).itemsize
                        for t in tensors), progress)
    feed = _Feed(bar)
    items = [(m, _LazyArray(t, DTYPES.get(dtype, t.tag), feed)) for m, t in zip(names, tensors)]
    # copying follows links: one leaving the source folder would copy any file the user can read
    # into the output, so it is refused before anything is written
    carried = [resolve_inside(source.folder, name, "tokenizer file") for name in CARRIED_FILES
               if os.path.lexists(os.path.join(source.folder, name))]
    try:
        with _destination(dst, to, force) as tmp:
            WRITERS[to](tmp, out_config, head, items, max_shard_size)
            feed.done()
            out_config.save(tmp)
            for path in carried:
                if os.path.isfile(path):
                    shutil.copyfile(path, os.path.join(tmp, os.path.basename(path)))
    finally:
        if bar is not None:
            bar.close()
    return ConversionResult(source.format, to, head, len(items), sum(int(np.prod(t.shape)) for t in tensors),
                            dropped=plan.unused)


# -- inspect ------------------------------------------------------------------------------------------
@dataclass
class Inspection:
    """What :func:`inspect` found: format, config, head, tensors, and whether they fit the config.

    Example:
        >>> info = Inspection("canonical", "m.safetensors", RoFormerConfig(), "model", [("x", (2,), "F32")], 2)
        >>> info.problem is None
        True
    """

    format: str
    path: str
    config: RoFormerConfig
    head: str
    tensors: list[tuple[str, tuple[int, ...], str]]
    parameters: int
    problem: str | None = None
    ignored: list[str] = field(default_factory=list)


def inspect(src, src_format: str | None = None, config=None) -> Inspection:
    """Detect the format of ``src`` and list its canonical names, shapes and dtypes.

    ``problem`` holds why the tensors do not fit the config (None when they do).

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from roformer_core import RoFormerConfig, canonical_spec, save_checkpoint
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> d = tempfile.mkdtemp()
        >>> save_checkpoint(d, cfg, {k: np.ones(s, np.float32) for k, s in canonical_spec(cfg).items()})
        >>> info = inspect(d)
        >>> info.format, info.head, info.parameters, info.problem
        ('canonical', 'model', 712, None)
    """
    source = open_source(os.fspath(src), src_format, config)
    try:
        head = detect_head(source.shapes(), source.config)
        listing = [(n, t.shape, t.tag) for n, t in source.tensors.items()]
        problem, ignored = None, []
        try:
            ignored = plan_load(source.shapes(), source.config, head).ignored
        except CheckpointError as e:  # reported beside the listing, which is still useful
            problem = str(e)
        count = sum(int(np.prod(s)) for n, s, _ in listing if n not in ignored)
        return Inspection(source.format, source.path, source.config, head, listing, count, problem, ignored)
    finally:
        source.close()


# -- verify -------------------------------------------------------------------------------------------
BACKENDS = tuple(PACKAGES)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def verification_inputs(config: RoFormerConfig, head: str, batch: int = 2, seq: int = 8, seed: int = 0) -> dict:
    """Random ids with padding at the end of the last row and both token types ([B, C, S] for multiple choice).

    Example:
        >>> inputs = verification_inputs(RoFormerConfig(vocab_size=10), "multiple_choice")
        >>> inputs["input_ids"].shape, int(inputs["attention_mask"][1, 1, -1])
        ((2, 2, 8), 0)
    """
    rng = np.random.default_rng(seed)
    shape = (batch, 2, seq) if head == "multiple_choice" else (batch, seq)
    mask = np.ones(shape, dtype=np.int64)
    mask[..., -1, seq - 2:] = 0
    ids = np.where(mask == 1, rng.integers(0, config.vocab_size, size=shape), config.pad_token_id)
    types = np.zeros(shape, dtype=np.int64)
    types[..., seq // 2:] = min(1, config.type_vocab_size - 1)
    return {"input_ids": ids.astype(np.int64), "attention_mask": mask, "token_type_ids": types}


def _run_backend(name: str, head: str, path: str, inputs: dict) -> dict[str, np.ndarray]:
    """Load ``path`` as ``head`` in backend ``name`` (float32) and return its head outputs as numpy."""
    backend = get_backend(name)
    out = backend.run(backend.load(head, path, "float32"), inputs)
    # caches and per-layer tuples aside: the head outputs are what is compared
    return {k: v for k, v in out.items() if not isinstance(v, tuple)}


@dataclass
class Verification:
    """Per backend: ``status`` ("ok", "not installed", "failed: ...") and max abs diff per output.

    Example:
        >>> v = Verification("model", "torch", {"torch": ("ok", {"last_hidden_state": 0.0}),
        ...                  "tf": ("ok", {"last_hidden_state": 3e-5})}, atol=1e-5)
        >>> v.ok, "FAIL" in v.table()
        (False, True)
    """

    head: str
    reference: str | None
    rows: dict[str, tuple[str, dict[str, float]]]
    atol: float

    @property
    def ok(self) -> bool:
        """No backend failed and every difference is within ``atol``."""
        return all(status in ("ok", "not installed") and all(d <= self.atol for d in diffs.values())
                   for status, diffs in self.rows.values())

    def table(self) -> str:
        """A plain-text table: one row per backend, one column per head output."""
        fields = sorted({k for _, diffs in self.rows.values() for k in diffs})
        lines = [f"{'backend':<16}{'status':<16}" + "".join(f"{k:>20}" for k in fields)]
        for name, (status, diffs) in self.rows.items():
            cells = []
            for k in fields:
                if k not in diffs:
                    cells.append(f"{'-':>20}")
                elif name == self.reference:
                    cells.append(f"{'(reference)':>20}")
                else:
                    flag = "" if diffs[k] <= self.atol else " FAIL"
                    cells.append(f"{diffs[k]:>15.2e}{flag:>5}")
            lines.append(f"{name:<16}{status[:60]:<16}" + "".join(cells))
        return "\n".join(lines)


def verify(path, atol: float = 1e-5, head: str | None = None, src_format: str | None = None,
           config=None, backends=None) -> Verification:
    """Load the checkpoint at ``path`` in every installed backend and compare the outputs.

    Backends (default :data:`BACKENDS`) are found by importing them and taking
    ``roformer_core.backends.get_backend``; the first that runs (PyTorch when installed) is the reference.
    A checkpoint in another format is converted to a temporary canonical folder first.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from roformer_core import RoFormerConfig, canonical_spec, save_checkpoint
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> d = tempfile.mkdtemp()
        >>> save_checkpoint(d, cfg, {k: np.ones(s, np.float32) for k, s in canonical_spec(cfg).items()})
        >>> verify(d, backends=("torch",)).rows["torch"][0]
        'ok'
    """
    path = os.fspath(path)
    source = open_source(path, src_format, config)
    with tempfile.TemporaryDirectory(prefix="roformer-verify-") as scratch:
        try:
            if head is None:
                head = detect_head(source.shapes(), source.config)
            if source.format != "canonical" or config is not None:
                weights = os.path.join(scratch, "canonical")
                _convert(source, weights, "canonical", None, head, None, False, False)
            else:
                _plan(source, head)  # a clear error before any backend runs
                weights = source.path
        finally:
            source.close()
        inputs = verification_inputs(source.config, head)
        rows: dict[str, tuple[str, dict]] = {}
        outputs: dict[str, dict[str, np.ndarray]] = {}
        for package in BACKENDS if backends is None else backends:
            try:
                get_backend(package).classes
            except InputError:  # its framework (or the backend itself) is not installed
                rows[package] = ("not installed", {})
                continue
            except Exception as e:  # installed but broken: a row of the table, not the end
                rows[package] = (f"failed: import: {type(e).__name__}: {_first_line(e)}", {})
                continue
            try:
                outputs[package] = _run_backend(package, head, weights, inputs)
                rows[package] = ("ok", {})
            except Exception as e:  # one backend's failure is a row of the table, not the end
                rows[package] = (f"failed: {type(e).__name__}: {_first_line(e)}", {})
    reference = next(iter(outputs), None)
    for package, out in outputs.items():
        want = outputs[reference]
        diffs = {}
        for k in want:
            if k not in out or out[k].shape != want[k].shape:
                rows[package] = (f"failed: output {k} missing or of another shape", {})
                break
            diffs[k] = float(np.max(np.abs(out[k] - want[k]))) if want[k].size else 0.0
        else:
            rows[package] = ("ok", diffs)
    return Verification(head, reference, rows, atol)


__all__ = ["convert", "inspect", "verify", "detect_head", "ConversionResult", "Inspection", "Verification",
           "ConvertError", "DTYPES", "HEAD_CHOICES", "BACKENDS"]
