"""Training RoFormer with JAX: losses per head, optax optimizers, data-parallel train steps.

Small pure functions in the style of the Flax examples:

* :func:`loss_terms` — the loss of every head as ``(sum, count)`` terms; :func:`compute_loss`
  runs the model and reduces them (over all devices when data-parallel);
* :func:`make_optimizer` — AdamW with linear warmup and linear/cosine decay, a weight-decay
  mask that skips biases and LayerNorm, gradient clipping and gradient accumulation;
* :func:`create_train_state`, :func:`train_step` — one optimisation step, pure;
* :func:`make_train_step` — ONE call that builds the data-parallel step, either ``jax.pmap``
  (replicated state, batch split per device, gradients reduced with ``lax.psum``) or
  ``jax.jit`` over a ``Mesh`` (batch sharded along a data axis); both work across processes;
* :func:`initialize_distributed` — ``jax.distributed.initialize`` with bounded waits, for runs
  over several processes or hosts.

The canonical folder is written by ``step.save_pretrained(model, state, dir)`` (one process
writes, the others wait); the whole training state for resuming goes through
:class:`roformer_flax.checkpointing.TrainingCheckpoints` (Orbax).

Example (one device):
    >>> import numpy as np, jax
    >>> from roformer_flax import RoFormerConfig, RoFormerForMaskedLM
    >>> cfg = RoFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
    ...                      num_attention_heads=4, intermediate_size=64)
    >>> model = RoFormerForMaskedLM.from_config(cfg)
    >>> state = create_train_state(model, make_optimizer(1e-3, num_train_steps=10, warmup_steps=2))
    >>> step = make_train_step(model, "jit")
    >>> state = step.place_state(state)
    >>> ids = np.random.default_rng(0).integers(1, 100, (8, 16))
    >>> batch = step.shard({"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": ids})
    >>> state, metrics = step(state, batch, jax.random.PRNGKey(0))
    >>> int(state.step), bool(metrics["loss"] > 0)
    (1, True)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.jax_utils
import jax
import jax.numpy as jnp  # noqa: F401 (the examples use it)
import numpy as np
import optax
from flax.training import train_state
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from roformer_core.config import RoFormerConfig
from roformer_core.errors import DistributedError, InputError
from roformer_core.heads import HEAD_TABLE
from roformer_core.inputs import MASKED_INPUTS, ArrayFacts, check_masked_inputs, validate_inputs
from roformer_flax.modeling import LOSS_TERMS, RoFormerPreTrainedModel, mean_of_terms

#: The batch keys that hold each head's targets (everything else goes to the model).
LABEL_KEYS = {name: head.label_keys for name, head in HEAD_TABLE.items() if head.loss is not None}

TrainState = train_state.TrainState


# -- losses -----------------------------------------------------------------------------
def loss_terms(head: str, config: RoFormerConfig, outputs, batch: dict) -> tuple:
    """The loss of ``head`` as ``(sum, count)`` terms; the loss is the mean over terms of sum/count.

    Keeping sums and counts apart lets a data-parallel step divide by the count over all
    devices: the mean of per-device means is wrong when devices see different numbers of
    labelled tokens (padding, -100).

    Example:
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> from roformer_core.outputs import MaskedLMOutput
        >>> out = MaskedLMOutput(logits=jnp.zeros((1, 3, 10)))
        >>> (s, n), = loss_terms("masked_lm", cfg, out, {"labels": jnp.array([[1, -100, 2]])})
        >>> round(float(s / n), 4), float(n)   # log(10), two labelled tokens
        (2.3026, 2.0)
    """
    if head in LABEL_KEYS:
        return LOSS_TERMS[HEAD_TABLE[head].loss](config, outputs, batch)
    raise InputError(f"head {head!r} has no training loss; train one of: {', '.join(LABEL_KEYS)}")


def check_batch(head: str, config: RoFormerConfig, batch: dict, device_axis: bool = False) -> None:
    """Check one training batch on the host, before a compiled step sees it: ids and token types
    within the config's vocabularies, labels (and a masked batch's positions and labels) in
    range, shapes that fit. A compiled step cannot raise: an out-of-range id would be clamped or
    read garbage and could turn the parameters into NaN. One :class:`InputError` naming the array.

    ``device_axis``: the arrays have a leading per-device axis (a ``pmap`` batch). Arrays sharded
    over several processes are checked on this process's shards.

    Example:
        >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=16)
        >>> check_batch("masked_lm", cfg, {"input_ids": np.array([[1, 12]]), "labels": np.array([[1, -100]])})
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: input_ids holds ids up to 12, outside [0, 10) (config vocab_size = 10)
    """
    facts = {k: _host_facts("labels" if k == "masked_labels" else k, v, device_axis) for k, v in batch.items()
             if v is not None and k not in ("head_mask", "inputs_embeds")}
    if batch.get("inputs_embeds") is not None:
        shape = tuple(batch["inputs_embeds"].shape)
        facts["inputs_embeds"] = ArrayFacts((shape[0] * shape[1],) + shape[2:] if device_axis else shape, False)
    core = {k: f for k, f in facts.items() if k in ("input_ids", "inputs_embeds", "attention_mask", "token_type_ids")
            or k in LABEL_KEYS.get(head, ())}
    validate_inputs(config, head, core, 0)
    masked = {k: f for k, f in facts.items() if k in MASKED_INPUTS}
    if masked:
        first = core.get("input_ids") or core.get("inputs_embeds")
        check_masked_inputs(config, masked, tuple(first.shape[:2]), False)


def _host_facts(name: str, x, device_axis: bool) -> ArrayFacts:
    """:class:`ArrayFacts` of a batch array (numpy, or a jax array: its shards on this process)."""
    shape = tuple(x.shape)
    if device_axis:
        shape = (shape[0] * shape[1],) + shape[2:]
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        local = np.concatenate([np.asarray(s.data).reshape(-1) for s in x.addressable_shards])
    else:
        local = np.asarray(x)
    integer = bool(np.issubdtype(local.dtype, np.integer))
    return ArrayFacts.of(local if integer else None, shape, integer, name)


def compute_loss(apply_fn: Callable, params, batch: dict, dropout_rng, *, head: str, config: RoFormerConfig,
                 train: bool = True, axis_name: str | None = None):
    """Run the model on ``batch`` and return the scalar loss.

    With ``axis_name`` (inside ``pmap``) the counts are summed over devices first, so the
    gradients summed over devices are those of the global-batch loss.
    """
    masked = batch.get("masked_positions") is not None
    if masked and head != "masked_lm":
        raise InputError(f"masked_positions is a masked_lm input; the {head!r} head does not take it")
    needed = ("masked_labels",) if masked else LABEL_KEYS.get(head, ())
    missing = [k for k in needed if k not in batch]
    if head not in LABEL_KEYS or missing:
        raise InputError(f"a {head!r} training batch needs {', '.join(needed or ('a trainable head',))}; "
                         f"missing: {', '.join(missing) or head}")
    # the loss reads the targets from the batch (a masked batch: per-position labels and weights;
    # the collator's full-sequence labels ride along unused)
    targets = set(LABEL_KEYS[head]) | {"masked_labels", "masked_weights"}
    inputs = {k: v for k, v in batch.items() if k not in targets}
    outputs = apply_fn({"params": params}, **inputs, deterministic=not train, rngs={"dropout": dropout_rng})
    terms = loss_terms(head, config, outputs, batch)
    if axis_name is not None:
        terms = [(s, lax.psum(n, axis_name)) for s, n in terms]
    return mean_of_terms(*terms)


# -- optimizer ----------------------------------------------------------------------------
def decay_mask(params) -> Any:
    """True where weight decay applies: not on biases, not on LayerNorm (the BERT recipe).

    Example:
        >>> decay_mask({"dense": {"kernel": 1, "bias": 2}, "LayerNorm": {"scale": 3, "bias": 4}})
        {'LayerNorm': {'bias': False, 'scale': False}, 'dense': {'bias': False, 'kernel': True}}
    """
    def decays(path, _):
        names = [getattr(p, "key", str(p)) for p in path]
        return names[-1] != "bias" and "LayerNorm" not in names

    return jax.tree_util.tree_map_with_path(decays, params)


def make_schedule(learning_rate: float, num_train_steps: int, warmup_steps: int = 0, decay: str = "linear",
                  end_learning_rate: float = 0.0) -> optax.Schedule:
    """Linear warmup from 0 to ``learning_rate``, then linear or cosine decay to ``end_learning_rate``.

    Example:
        >>> sched = make_schedule(1.0, num_train_steps=10, warmup_steps=2)
        >>> [round(float(sched(s)), 3) for s in (0, 1, 2, 6, 10)]
        [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if num_train_steps <= 0 or not 0 <= warmup_steps <= num_train_steps:
        raise InputError(f"need 0 <= warmup_steps ({warmup_steps}) <= num_train_steps ({num_train_steps}), "
                         f"num_train_steps > 0")
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    rest = max(num_train_steps - warmup_steps, 1)
    if decay == "linear":
        after = optax.linear_schedule(learning_rate, end_learning_rate, rest)
    elif decay == "cosine":
        after = optax.cosine_decay_schedule(learning_rate, rest, alpha=end_learning_rate / learning_rate)
    else:
        raise InputError(f"decay must be 'linear' or 'cosine', got {decay!r}")
    return optax.join_schedules([warmup, after], [warmup_steps])


def make_optimizer(learning_rate: float = 5e-5, num_train_steps: int = 10_000, warmup_steps: int = 0,
                   weight_decay: float = 0.01, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6,
                   max_grad_norm: float | None = 1.0, grad_accum_steps: int = 1, decay: str = "linear"
                   ) -> optax.GradientTransformation:
    """AdamW with warmup + decay, decay mask, optional clipping and gradient accumulation.

    ``num_train_steps`` counts optimizer updates; with ``grad_accum_steps = k`` the returned
    transformation (``optax.MultiSteps``) is called k times per update and applies the mean
    of the k gradients on the k-th call.

    Example:
        >>> tx = make_optimizer(1e-3, num_train_steps=100, warmup_steps=10, grad_accum_steps=4)
        >>> type(tx).__name__
        'MultiSteps'
    """
    if grad_accum_steps < 1:
        raise InputError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
    schedule = make_schedule(learning_rate, num_train_steps, warmup_steps, decay)
    parts = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm else []
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask))
    tx = optax.chain(*parts)
    return optax.MultiSteps(tx, every_k_schedule=grad_accum_steps) if grad_accum_steps > 1 else tx


def create_train_state(model: RoFormerPreTrainedModel, optimizer: optax.GradientTransformation,
                       params=None) -> TrainState:
    """A flax ``TrainState`` over ``model.module.apply`` and the model's params (or ``params``)."""
    return TrainState.create(apply_fn=model.module.apply, params=model.params if params is None else params,
                             tx=optimizer)


# -- one step ---------------------------------------------------------------------------
def dropout_key(rng, step, axis_name: str | None = None):
    """The dropout key of one step: ``rng`` folded with the step number and, inside ``pmap``, the
    device index, so one base key serves a whole run and every device drops different units.

    Example:
        >>> a, b = (dropout_key(jax.random.PRNGKey(0), s) for s in (1, 2))
        >>> bool((a != b).any())
        True
    """
    rng = jax.random.fold_in(rng, step)
    if axis_name is not None:
        rng = jax.random.fold_in(rng, lax.axis_index(axis_name))
    return rng


def train_step(state: TrainState, batch: dict, dropout_rng, *, head: str, config: RoFormerConfig,
               axis_name: str | None = None):
    """One optimisation step on ``batch``; returns ``(new state, {"loss": ...})``.

    The same base ``dropout_rng`` can be passed every step (see :func:`dropout_key`). Called on
    concrete arrays (not under ``jit``) it checks the batch first (:func:`check_batch`); a step
    jitted by hand cannot, so check each batch with :func:`check_batch` before it, or use
    :func:`make_train_step`, which does.

    Example:
        >>> cfg = RoFormerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
        ...                      num_attention_heads=2, intermediate_size=32, num_labels=2)
        >>> from roformer_flax import RoFormerForSequenceClassification
        >>> model = RoFormerForSequenceClassification.from_config(cfg)
        >>> state = create_train_state(model, optax.sgd(0.1))
        >>> step = jax.jit(functools.partial(train_step, head=model.head, config=cfg))
        >>> batch = {"input_ids": jnp.ones((2, 4), jnp.int32), "labels": jnp.array([0, 1])}
        >>> int(step(state, batch, jax.random.PRNGKey(0))[0].step)
        1
    """
    if not any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(batch)):
        check_batch(head, config, batch, device_axis=False)
    loss_fn = functools.partial(compute_loss, state.apply_fn, batch=batch,
                                dropout_rng=dropout_key(dropout_rng, state.step, axis_name), head=head, config=config,
                                axis_name=axis_name)
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    if axis_name is not None:  # each device's loss is its share of the global loss: sum the shares
        loss, grads = lax.psum((loss, grads), axis_name)
    return state.apply_gradients(grads=grads), {"loss": loss}


# -- data parallel ------------------------------------------------------------------------
@dataclasses.dataclass
class DataParallelStep:
    """A data-parallel train step and the helpers that put state and batches where it wants them.

    Build it with :func:`make_train_step`. ``place_state`` once, ``shard`` every batch, call it,
    and ``host_params`` for saving. Each call checks the batch on the host first
    (:func:`check_batch`, when ``head`` and ``config`` are set), so bad ids are one
    :class:`InputError` instead of NaN parameters.
    """

    mode: str
    step_fn: Callable
    mesh: Mesh | None = None
    axis_name: str = "data"
    head: str | None = None
    config: RoFormerConfig | None = None

    @property
    def num_devices(self) -> int:
        """Devices one global batch is split over (this host's devices for pmap, the mesh for jit)."""
        return jax.local_device_count() if self.mode == "pmap" else self.mesh.devices.size

    def place_state(self, state):
        """Replicate ``state`` on every device."""
        if self.mode == "pmap":
            return flax.jax_utils.replicate(state)
        replicated = NamedSharding(self.mesh, PartitionSpec())

        def put(x):  # every process fills its own devices from its own (identical) copy
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, replicated, lambda index: x[index])
        return jax.tree.map(put, state)

    def shard(self, batch: dict) -> dict:
        """Split a batch over the devices.

        For ``pmap``, ``batch`` is this host's batch, reshaped to ``[local devices, per device, ...]``.
        For ``jit``, ``batch`` is this process's share of the global batch (all of it on one host;
        with several hosts, process ``jax.process_index()`` passes its own slice): the result is one
        global array sharded along the mesh's data axis.
        """
        batch = {k: np.asarray(v) for k, v in batch.items()}
        sizes = {v.shape[0] for v in batch.values()}
        if len(sizes) != 1:
            raise InputError(f"batch arrays disagree on the batch size: {sorted(sizes)}")
        size = sizes.pop()
        if self.mode == "pmap":
            n = jax.local_device_count()
            if size % n:
                raise InputError(f"batch size {size} is not divisible by the {n} local devices")
            return {k: v.reshape(n, size // n, *v.shape[1:]) for k, v in batch.items()}
        local = len(self.mesh.local_devices)
        if size % local:
            raise InputError(f"this process's batch size {size} is not divisible by its {local} devices of the mesh")
        sharding = NamedSharding(self.mesh, PartitionSpec(self.axis_name))
        return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}

    def process_rows(self, global_batch_size: int) -> slice:
        """The rows of each global batch that this process loads and passes to :meth:`shard`
        (all of them on one host; with N hosts, process ``jax.process_index()`` takes 1/N).

        Example (one host):
            >>> from roformer_flax import RoFormerForMaskedLM
            >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
            ...                      intermediate_size=16)
            >>> make_train_step(RoFormerForMaskedLM.from_config(cfg)).process_rows(32)
            slice(0, 32, None)
        """
        hosts = jax.process_count()
        if global_batch_size % hosts:
            raise InputError(f"global batch size {global_batch_size} is not divisible by the {hosts} processes")
        rows = global_batch_size // hosts
        return slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)

    def __call__(self, state, batch: dict, dropout_rng):
        if self.config is not None:
            check_batch(self.head, self.config, batch, device_axis=self.mode == "pmap")
        try:
            return self.step_fn(state, batch, dropout_rng)
        except jax.errors.JaxRuntimeError as e:
            if jax.process_count() > 1 and _lost_peer(e):
                raise DistributedError(f"process {jax.process_index()} of {jax.process_count()}: another process of this "
                                   f"run stopped during the step ({_first_line(e)}); start every process again "
                                   "(and resume from the last checkpoint)") from None
            raise

    def host_params(self, state):
        """The params as host numpy arrays, one copy (for ``save_pretrained`` or evaluation)."""
        return self.host_state(state.params)

    def host_state(self, tree):
        """Any replicated pytree of this step (the whole ``TrainState``, its params) as host numpy arrays,
        one copy; every process reads its own local copy.

        Example (one host):
            >>> from roformer_flax import RoFormerForMaskedLM
            >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
            ...                      intermediate_size=16)
            >>> model = RoFormerForMaskedLM.from_config(cfg)
            >>> step = make_train_step(model)
            >>> state = step.place_state(create_train_state(model, optax.sgd(0.1)))
            >>> type(step.host_state(state).step).__name__
            'ndarray'
        """
        if self.mode == "pmap":
            return jax.device_get(flax.jax_utils.unreplicate(tree))
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)

    def save_pretrained(self, model: RoFormerPreTrainedModel, state, path, **kwargs) -> str:
        """Save the trained params as the canonical folder: process 0 writes, every process waits
        until the folder is complete (with one process this is ``model.save_pretrained``).

        ``kwargs`` go to ``model.save_pretrained``. Every process must call it (a barrier).

        Example (one host):
            >>> import os, tempfile
            >>> from roformer_flax import RoFormerForMaskedLM
            >>> cfg = RoFormerConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
            ...                      intermediate_size=16)
            >>> model = RoFormerForMaskedLM.from_config(cfg)
            >>> step = make_train_step(model)
            >>> state = step.place_state(create_train_state(model, optax.sgd(0.1)))
            >>> path = step.save_pretrained(model, state, os.path.join(tempfile.mkdtemp(), "out"))
            >>> sorted(os.listdir(path))
            ['config.json', 'model.safetensors']
        """
        params = self.host_params(state)
        path = str(path)
        if jax.process_index() == 0:
            model.save_pretrained(path, params=params, **kwargs)
        barrier(f"roformer save_pretrained {path}")
        return path


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _lost_peer(error: BaseException) -> bool:
    text = str(error).lower()
    return any(sign in text for sign in ("gloo", "connection reset", "connection closed", "socket closed",
                                         "coordination service", "heartbeat", "unavailable"))


def barrier(name: str) -> None:
    """Wait until every process of the run reaches the barrier called ``name`` (nothing to wait
    for with one process). A process that died makes the others stop: JAX's coordination
    service ends them once its heartbeats are missing (see :func:`initialize_distributed`).

    Example:
        >>> barrier("after saving")   # one process: returns at once
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, heartbeat_timeout_s: int = 60,
                           initialization_timeout_s: int = 300) -> tuple[int, int]:
    """Join a run over several processes (or hosts): ``jax.distributed.initialize`` with bounded waits.

    Call it first, before anything runs on a JAX device, in every process, with the same
    ``coordinator_address`` (``host:port`` of process 0, which runs the coordinator), the same
    ``num_processes`` and each its own ``process_id``; on TPU pods, SLURM and other clusters JAX
    reads all three from the environment (leave them None). CPU collectives go through gloo.

    A process that cannot reach the others gives up after ``initialization_timeout_s``; once
    running, a process that stops sending heartbeats for ``heartbeat_timeout_s`` (it died, or its
    host did) makes JAX end every other process with a message naming it, so no process waits
    forever on a collective. Returns ``(process_index, process_count)``.

    Example:
        >>> initialize_distributed("10.0.0.1:1234", num_processes=0, process_id=0)
        Traceback (most recent call last):
        ...
        roformer_core.errors.InputError: num_processes must be at least 1, got 0
    """
    if num_processes is not None and num_processes < 1:
        raise InputError(f"num_processes must be at least 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise InputError(f"process_id must be in [0, {num_processes}), got {process_id}")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   heartbeat_timeout_seconds=heartbeat_timeout_s,
                                   initialization_timeout=initialization_timeout_s)
    except jax.errors.JaxRuntimeError as e:
        raise DistributedError(f"process {process_id} could not join the run at {coordinator_address} within "
                           f"{initialization_timeout_s}s ({_first_line(e)}): start all {num_processes} processes "
                           "with the same coordinator address") from None
    return jax.process_index(), jax.process_count()


def make_train_step(model: RoFormerPreTrainedModel, mode: str = "jit", mesh: Mesh | None = None,
                    axis_name: str = "data") -> DataParallelStep:
    """Build the data-parallel train step for ``model``'s head: ``mode="pmap"`` or ``"jit"``.

    ``jit`` (what current JAX recommends) shards the batch along ``axis_name`` of ``mesh``
    (default: every device of every process in one data axis) and lets XLA insert the
    gradient all-reduce; ``pmap`` runs :func:`train_step` per local device with ``lax.psum``.
    Both compute exactly the single-device step on the whole batch (dropout aside).

    On CPU the ``jit`` step is compiled with XLA's memory-optimised scheduler (:func:`cpu_memory_options`).

    Example: see the module docstring.
    """
    step = functools.partial(train_step, head=model.head, config=model.config)
    if mode == "pmap":
        fn = jax.pmap(functools.partial(step, axis_name=axis_name), axis_name=axis_name, in_axes=(0, 0, None),
                      donate_argnums=(0,))
        return DataParallelStep("pmap", fn, None, axis_name, model.head, model.config)
    if mode != "jit":
        raise InputError(f"mode must be 'pmap' or 'jit', got {mode!r}")
    if mesh is None:
        mesh = Mesh(np.asarray(jax.devices()), (axis_name,))
    if axis_name not in mesh.axis_names:
        raise InputError(f"the mesh has axes {mesh.axis_names}, not the data axis {axis_name!r}")
    replicated = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec(axis_name))
    options = cpu_memory_options() if all(d.platform == "cpu" for d in mesh.devices.flat) else {}
    fn = jax.jit(step, in_shardings=(replicated, data, replicated), out_shardings=(replicated, replicated),
                 donate_argnums=(0,), compiler_options=options or None)
    return DataParallelStep("jit", fn, mesh, axis_name, model.head, model.config)


#: XLA:CPU's default scheduler orders work for concurrency and runs a rematerialised layer's forward
#: as soon as its inputs exist, long before the backward needs it: activation recomputation then
#: saves no memory at all (and a plain step holds more than it needs). The memory-optimised one
#: keeps both small at the same speed (the gradient of a 4-layer 256-hidden encoder, batch 16 x 512:
#: 1.8 GB of temporaries -> 1.2 GB, and 0.6 GB with gradient checkpointing).
_CPU_MEMORY_OPTIONS = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


@functools.lru_cache(maxsize=None)
def cpu_memory_options() -> dict:
    """The XLA compiler options of a CPU training step (the memory-optimised scheduler), or ``{}``
    when this jaxlib does not know them.

    Example:
        >>> sorted(cpu_memory_options()) in ([], ["xla_cpu_scheduler_type"])
        True
    """
    try:
        jax.jit(lambda x: x + 1, compiler_options=_CPU_MEMORY_OPTIONS).lower(np.float32(0)).compile()
    except Exception:  # an older or newer jaxlib without the option: its default scheduler
        return {}
    return dict(_CPU_MEMORY_OPTIONS)
