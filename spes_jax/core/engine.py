"""The sweep engine: every kind of SPES sweep as ``init`` -> ``step``* -> ``finalize``, written once.

A sweep kind is a *probe* (a hashable value, part of the plan): what is computed once per utterance
(``setup``: e.g. the unperturbed log-probabilities, or the encoder's cross-attention keys/values)
and how one perturbed input is scored into a row of Eq. 3 (``perturb``: mask number g -> the
perturbed input and its occlusion weights; ``score``: the perturbed input -> R scores, one per row of
the map). A probe has one or more *parts* (the SPES sweep: "spectrogram" and "prefix"), each with its
own masks, batch and map. Everything else is here: mask numbering over the devices, padding
validity, the split into even and odd halves, non-finite scores, the one ``shard_map``, the
reduction in ``finalize``, the split-half convergence estimate and ``run`` with ``until_r``.

Every function is jitted once at module level with a hashable ``SweepPlan`` (the model module, the
device mesh, the probe and the parts' batch sizes) static, so any two sweeps with equal plans and
equal padded shapes share one compilation, whoever calls them.

Per step, each device of the plan's 1-D mesh (axis ``"masks"``) derives its own share of the batch
(mask numbers offset by its axis index), scores it under ``vmap`` and adds the scores into its own
partial sums of Eq. 3 (state fields with a leading device axis, one row per device). Nothing per
mask leaves the device; ``finalize`` reduces the rows once.

A probe provides (``part`` is one of its ``parts``; ``inputs`` its padded utterance, a pytree;
``ctx`` what ``setup`` returned):

    kind: str                                       names its trace counters
    parts: tuple[str, ...]                          run in this order
    setup(module, params, inputs) -> ctx            the unperturbed pass, a pytree
    n_masks(part, inputs) -> () int32               the part's configured masks (more are padding)
    perturb(part, inputs, ctx, g) -> (x, occluded, half)
        mask g: the perturbed input x, its occlusion weights (the rows' layout), and the index whose
        parity puts the mask in one of the two halves
    score(part, module, params, inputs, ctx, x) -> (R,) float32
    rows(part, inputs, ctx) -> Segments | Features | Positions   the layout of the part's Eq. 3 sums
    outputs(inputs, ctx) -> dict                    per-utterance values ``finalize`` also returns
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .._shapes import round_up
from .pacing import StepQueue

AXIS = "masks"

# How often each compiled function has been traced per probe kind, and the per-device batch of
# perturbed inputs it was traced for: what tests and benchmarks read to check that work is neither
# recompiled nor replicated.
_traces: collections.Counter = collections.Counter()
_local_batch: dict[tuple[str, str], tuple[int, ...]] = {}


def trace_counts(kind: str) -> dict[str, int]:
    """Number of traces (= compilations) of each engine function for sweeps of ``kind`` so far."""
    return {name: n for (k, name), n in _traces.items() if k == kind}


def local_batch_shapes(kind: str) -> dict[str, tuple[int, ...]]:
    """Shape of the perturbed inputs one device evaluated, per step function, at its last trace."""
    return {name: shape for (k, name), shape in _local_batch.items() if k == kind}


# ------------------------------------------------------------------------------------ Eq. 3, pure
# S = sum_i r_i (1 - M_i) / sum_i (1 - M_i), 0 where a feature or position was never perturbed.

def segment_sums(occluded: jax.Array, level: jax.Array, r: jax.Array, n_levels: int
                 ) -> tuple[jax.Array, jax.Array]:
    """occluded (B, S) per-segment weights of each mask's level, level (B,), r (B, K) ->
    numerator (n_levels, S, K) and denominator (n_levels, S)."""
    onehot = jax.nn.one_hot(level, n_levels)
    return jnp.einsum("bl,bs,bk->lsk", onehot, occluded, r), jnp.einsum("bl,bs->ls", onehot, occluded)


def feature_sums(occluded: jax.Array, r: jax.Array) -> tuple[jax.Array, jax.Array]:
    """occluded (B, T, C) per-feature weights, r (B, K) -> (K, T, C) and (T, C)."""
    return jnp.einsum("btc,bk->ktc", occluded, r), occluded.sum(axis=0)


def prefix_sums(occluded: jax.Array, r: jax.Array) -> tuple[jax.Array, jax.Array]:
    """occluded (B, L) per-position weights, r (B, K) -> numerator (K, L) and denominator (L,)."""
    return jnp.einsum("bj,bk->kj", occluded, r), occluded.sum(axis=0)


def ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def spectrogram_map(num: jax.Array, den: jax.Array, labels: jax.Array) -> jax.Array:
    """Segment sums num (n_levels, S, K), den (n_levels, S) and labels (n_levels, T, C) -> (K, T, C):
    a feature's sums are those of its segment at every level."""
    num_tc = sum(num[l][labels[l]] for l in range(labels.shape[0]))
    den_tc = sum(den[l][labels[l]] for l in range(labels.shape[0]))
    return ratio(num_tc, den_tc[..., None]).transpose(2, 0, 1)


def prefix_map(num: jax.Array, den: jax.Array) -> jax.Array:
    """num (K, L), den (L,) -> (K, L) causal map (0 where position j > token k)."""
    K, L = num.shape
    return jnp.where(jnp.tril(jnp.ones((K, L), bool)), ratio(num, den), 0.0)


# ------------------------------------------------------------------------------------ row layouts
# How a part's occlusion weights enter Eq. 3 and become a map of R rows. ``cells``: the weights of
# the map's cells in the split-half estimate; ``valid_rows``: (R,) bool rows whose estimates are
# averaged for ``until_r``, or None to correlate the whole map at once.

@dataclasses.dataclass(frozen=True)
class Segments:
    """Weights per segment of the mask's level, (S,); mask g is of level g % n_levels. Map (R, T, C)."""

    labels: jax.Array  # (n_levels, T, C) int segment ids, 0 on padding
    n_slots: int
    n_rows: int
    cells: jax.Array
    valid_rows: jax.Array | None

    def zeros(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        n_levels = self.labels.shape[0]
        return (n_levels, self.n_slots, self.n_rows), (n_levels, self.n_slots)

    def sums(self, occluded: jax.Array, g: jax.Array, r: jax.Array) -> tuple[jax.Array, jax.Array]:
        n_levels = self.labels.shape[0]
        return segment_sums(occluded, g % n_levels, r, n_levels)

    def map(self, num: jax.Array, den: jax.Array) -> jax.Array:
        return spectrogram_map(num, den, self.labels)


@dataclasses.dataclass(frozen=True)
class Features:
    """Weights per feature, (T, C) (continuous masks). Map (R, T, C)."""

    shape: tuple[int, int]
    n_rows: int
    cells: jax.Array
    valid_rows: jax.Array | None

    def zeros(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.n_rows, *self.shape), self.shape

    def sums(self, occluded: jax.Array, g: jax.Array, r: jax.Array) -> tuple[jax.Array, jax.Array]:
        return feature_sums(occluded, r)

    def map(self, num: jax.Array, den: jax.Array) -> jax.Array:
        return ratio(num, den[None])


@dataclasses.dataclass(frozen=True)
class Positions:
    """Weights per position, (n,) (decoder inputs, encoder frames). Map (R, n), 0 outside ``shown``."""

    n_rows: int
    n: int
    shown: jax.Array | None  # (R, n) bool or None: every cell
    cells: jax.Array
    valid_rows: jax.Array | None

    def zeros(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.n_rows, self.n), (self.n,)

    def sums(self, occluded: jax.Array, g: jax.Array, r: jax.Array) -> tuple[jax.Array, jax.Array]:
        return prefix_sums(occluded, r)

    def map(self, num: jax.Array, den: jax.Array) -> jax.Array:
        return ratio(num, den) if self.shown is None else jnp.where(self.shown, ratio(num, den), 0.0)


# ------------------------------------------------------------------------------------ plan and state

class MeshPlan:
    """The shardings of a plan with a 1-D ``mesh`` over the "masks" axis."""

    mesh: Mesh

    @property
    def n_devices(self) -> int:
        return self.mesh.devices.size

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def per_device(self) -> NamedSharding:
        return NamedSharding(self.mesh, P(AXIS))


@dataclasses.dataclass(frozen=True)
class SweepPlan(MeshPlan):
    """What a sweep computes and where (static: equal plans share compilations).

    module: the model, in its compute precision; mesh: 1-D device mesh with axis "masks"; probe: the
    sweep's kind with its mask sources and scorer (None: a plan that only places inputs, ``prepare``);
    batches: masks per step of each of the probe's parts over all devices (multiples of the mesh size).
    """

    module: Any
    mesh: Mesh
    probe: Any = None
    batches: tuple[int, ...] = ()

    def batch(self, part: str) -> int:
        return self.batches[self.probe.parts.index(part)]


def make_plan(module, probe, batches: Sequence[int], devices: Sequence[jax.Device] | None = None,
              precision: str = "float32") -> SweepPlan:
    """The plan of ``probe`` on ``devices`` (default: all): ``module`` (any model family's Flax module,
    ``docs/architecture.md``) computing in ``precision``, each part's batch rounded up to a multiple of
    the device count."""
    devices = list(devices or jax.devices())
    module = module.clone(dtype=jnp.bfloat16 if precision == "bfloat16" else jnp.float32)
    return SweepPlan(module, Mesh(np.array(devices), (AXIS,)), probe,
                     tuple(round_up(b, len(devices)) for b in batches))


@flax.struct.dataclass
class Sums:
    """Partial sums of Eq. 3: num (D, 2, ...) and den (D, 2, ...), one row per device and two halves
    (masks whose half index is even / odd): two independent estimates of the same map whose
    agreement tells how far the sweep is from convergence (``split_half_r``)."""

    num: jax.Array
    den: jax.Array


@flax.struct.dataclass
class SweepState:
    """Everything a sweep carries between steps: what every device holds whole (params, the padded
    inputs, the probe's ``setup`` values) and what each holds its own row of (the parts' sums; the
    masks whose score was not finite, (D,), counted and left out of the sums).

    The probe's values and the parts' sums read as attributes: ``state.log_p``, ``state.prefix``.
    """

    params: Any
    inputs: Any
    context: dict
    sums: dict
    nonfinite: jax.Array

    def __getattr__(self, name: str):
        for field in ("sums", "context"):
            values = self.__dict__.get(field) or {}
            if name in values:
                return values[name]
        raise AttributeError(name)


def _trace(plan: SweepPlan, name: str) -> None:
    _traces[plan.probe.kind, name] += 1


@functools.partial(jax.jit, static_argnames=("plan",))
def init(params, inputs, *, plan: SweepPlan) -> SweepState:
    """The probe's unperturbed pass and zero sums."""
    _trace(plan, "init")
    probe = plan.probe
    context = probe.setup(plan.module, params, inputs)
    zeros = lambda shape: jax.lax.with_sharding_constraint(jnp.zeros((plan.n_devices, 2, *shape), jnp.float32),
                                                           plan.per_device)
    sums = {part: Sums(*map(zeros, probe.rows(part, inputs, context).zeros())) for part in probe.parts}
    nonfinite = jax.lax.with_sharding_constraint(jnp.zeros(plan.n_devices, jnp.int32), plan.per_device)
    return SweepState(params, inputs, context, sums, nonfinite)


def _by_half(rows, occluded: jax.Array, half: jax.Array, g: jax.Array, r: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``rows.sums`` split by the parity of each mask's half index: outputs get a leading axis of 2."""
    halves = jax.nn.one_hot(half % 2, 2, dtype=occluded.dtype).T  # (2, B)
    return jax.vmap(lambda w: rows.sums(occluded * w.reshape((-1,) + (1,) * (occluded.ndim - 1)), g, r))(halves)


def _on_devices(plan: SweepPlan, body: Callable, whole, own, *args):
    """``body(whole, own, *args)`` on every device of the plan: ``whole`` and ``args`` replicated,
    ``own`` (and the result) split along the leading device axis of every leaf."""
    return jax.shard_map(body, mesh=plan.mesh, in_specs=(P(), P(AXIS)) + (P(),) * len(args),
                         out_specs=P(AXIS))(whole, own, *args)


def step(state: SweepState, i: jax.Array, *, plan: SweepPlan, part: str) -> SweepState:
    """Adds ``plan.batch(part)`` masks of ``part`` (numbers i*batch ...) to the sums; each device does 1/D."""
    sums, bad = _step_sums(state, i, plan=plan, part=part)
    return state.replace(sums={**state.sums, part: sums}, nonfinite=bad)


# The compiled step returns only what it changes: a compiled function copies every input it returns
# (the parameters: 464 MB at paper size, on every step).

@functools.partial(jax.jit, static_argnames=("plan", "part"))
def _step_sums(state: SweepState, i: jax.Array, *, plan: SweepPlan, part: str) -> tuple[Sums, jax.Array]:
    name = f"{part}_step"
    _trace(plan, name)
    probe, batch = plan.probe, plan.batch(part)
    local = batch // plan.n_devices

    def body(whole, own, i):
        params, inputs, ctx = whole
        sums, bad = own
        g = i * batch + jax.lax.axis_index(AXIS) * local + jnp.arange(local)
        valid = (g < probe.n_masks(part, inputs)).astype(jnp.float32)
        x, occluded, half = jax.vmap(lambda g: probe.perturb(part, inputs, ctx, g))(g)
        _local_batch[probe.kind, name] = x.shape
        r = jax.vmap(lambda x: probe.score(part, plan.module, params, inputs, ctx, x))(x)  # (B, R)
        nonfinite = ~jnp.isfinite(r) & (valid[:, None] > 0)
        r = jnp.where(nonfinite, 0.0, r * valid[:, None])
        occluded = occluded * valid.reshape((-1,) + (1,) * (occluded.ndim - 1))
        d_num, d_den = _by_half(probe.rows(part, inputs, ctx), occluded, half, g, r)
        return Sums(sums.num + d_num[None], sums.den + d_den[None]), bad + nonfinite.any(-1).sum()[None]

    return _on_devices(plan, body, (state.params, state.inputs, state.context), (state.sums[part], state.nonfinite), i)


def _maps(state: SweepState, plan: SweepPlan, part: str, halves: bool):
    """The part's map (R, ...) of the sums reduced over devices and halves, or its two half maps (2, R, ...)
    with their row layout."""
    rows = plan.probe.rows(part, state.inputs, state.context)
    sums = state.sums[part]
    if halves:
        return jax.vmap(rows.map)(sums.num.sum(0), sums.den.sum(0)), rows
    return rows.map(sums.num.sum((0, 1)), sums.den.sum((0, 1))), rows


@functools.partial(jax.jit, static_argnames=("plan",))
def finalize(state: SweepState, *, plan: SweepPlan) -> dict[str, jax.Array]:
    """Reduces the devices' sums once: {part: its map (R, ...)} with the probe's ``outputs`` and
    "nonfinite": () the masks whose score was not finite."""
    _trace(plan, "finalize")
    maps = {part: _maps(state, plan, part, halves=False)[0] for part in plan.probe.parts}
    return {**maps, **plan.probe.outputs(state.inputs, state.context), "nonfinite": state.nonfinite.sum()}


def _pearson(a: jax.Array, b: jax.Array, w: jax.Array) -> jax.Array:
    """Weighted Pearson r of a and b along the last axis (weights w, broadcast); 1 where both are constant."""
    n = w.sum(-1)
    ca, cb = a - (a * w).sum(-1, keepdims=True) / n[..., None], b - (b * w).sum(-1, keepdims=True) / n[..., None]
    saa, sbb, sab = (ca * ca * w).sum(-1), (cb * cb * w).sum(-1), (ca * cb * w).sum(-1)
    flat = (saa <= 0) & (sbb <= 0)
    return jnp.where(flat, 1.0, sab / jnp.sqrt(jnp.maximum(saa * sbb, 1e-30)))


def _spearman_brown(rho: jax.Array) -> jax.Array:
    """Split-half correlation -> estimated correlation of the full-sweep map with its limit."""
    rho = jnp.clip(rho, 0.0, 1.0)
    return jnp.sqrt(2.0 * rho / (1.0 + rho))


@functools.partial(jax.jit, static_argnames=("plan",))
def split_half_r(state: SweepState, *, plan: SweepPlan) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Online convergence estimate, on the device: {part: (estimate, summary)}, the estimated Pearson
    r of each row's map ((R,); of the whole map, ()) with the map of infinitely many masks, and
    the () value ``until_r`` compares (the mean over the valid rows).

    The even- and odd-half masks give two independent half-budget maps; their correlation rho is
    the half sweep's reliability, and the Spearman-Brown formula 2 rho / (1 + rho) the full sweep's,
    whose square root is the expected correlation with the limit. Only the cells the part's layout
    weights count (not padding frames, tokens beyond K, non-causal cells); a map that is constant in
    both halves counts as 1.
    """
    _trace(plan, "split_half_r")
    out = {}
    for part in plan.probe.parts:
        (a, b), rows = _maps(state, plan, part, halves=True)
        if rows.valid_rows is None:
            r = _spearman_brown(_pearson(a.reshape(-1), b.reshape(-1), rows.cells.reshape(-1)))
            out[part] = (r, r)
        else:
            R = a.shape[0]
            cells = rows.cells.reshape(rows.cells.shape[0], -1)
            r = _spearman_brown(_pearson(a.reshape(R, -1), b.reshape(R, -1), cells))
            out[part] = (r, jnp.where(rows.valid_rows, r, 0.0).sum() / rows.valid_rows.sum())
    return out


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What ``run`` returns: ``finalize``'s outputs (device arrays; also read as attributes,
    ``result.spectrogram``), the masks of each part actually evaluated (fewer than asked when
    ``until_r`` stopped it early), and with ``until_r`` the last split-half estimate of each part
    (``split_half_r``'s estimate), else None."""

    outputs: dict[str, jax.Array]
    n_masks: dict[str, int]
    r: dict[str, jax.Array] | None = None

    def __getattr__(self, name: str):
        outputs = self.__dict__.get("outputs") or {}
        if name in outputs:
            return outputs[name]
        raise AttributeError(name)


def _checkpoints(n_steps: int, first: int) -> set[int]:
    """Step counts after which ``run`` checks convergence: from ``first`` on, every ~10 % more masks."""
    out, s = set(), max(1, first)
    while s < n_steps:
        out.add(s)
        s = max(s + 1, int(s * 1.1))
    return out


def run(state: SweepState, plan: SweepPlan, n_masks: Sequence[int], *, until_r: float | None = None,
        progress: Callable[[int], None] | None = None) -> SweepResult:
    """All steps of ``n_masks`` (one count per part of the probe), then ``finalize``. ``progress(n)``
    is told the masks of each step once the device has finished it; at most a few steps are queued at
    a time (``StepQueue``).

    With ``until_r``, each part stops once the split-half estimate says its map correlates with the
    limit at >= until_r (``split_half_r``'s summary), checked after 1/32 of its budget and then every
    ~10 % more masks; one scalar per check leaves the device, nothing per mask. The counts are then
    the maximum.
    """
    used = {}
    queue = StepQueue(progress)
    for part, total in zip(plan.probe.parts, n_masks, strict=True):
        batch = plan.batch(part)
        n_steps = -(-total // batch)
        checks = _checkpoints(n_steps, -(-n_steps // 32)) if until_r is not None else set()
        done = n_steps
        for i in range(n_steps):
            state = step(state, np.int32(i), plan=plan, part=part)
            queue.push(state.sums[part].den, min(batch, total - i * batch))
            if i + 1 in checks and float(split_half_r(state, plan=plan)[part][1]) >= until_r:
                done = i + 1
                break
        used[part] = min(total, done * batch)
    queue.drain()
    outputs = finalize(state, plan=plan)
    r = None if until_r is None else {part: est for part, (est, _) in split_half_r(state, plan=plan).items()}
    return SweepResult(outputs, used, r)
