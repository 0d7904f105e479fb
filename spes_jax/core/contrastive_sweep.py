"""The contrastive SPES sweep as pure, compiled functions (one word: the target against a foil).

The same engine as ``core.sweep`` (mask sources, per-device partial sums under ``shard_map`` over
the "masks" axis, one reduction in ``finalize``), with a contrastive step: every perturbed input is
encoded once and decoded twice, teacher-forced on the target sequence y and on the foil sequence
y' (identical to y before the word's start s); the word probabilities of both (pieces s..e of y,
s..e' of y') give one score r per mask (``core.contrastive.score``), and Eq. 3 accumulates r with
one row. Prefix masks occlude only decoder inputs 0..s (the shared prefix): the foil's decoder
gets the target's mask, which is all ones after s. Nothing per mask leaves the device.

Every function is jitted once at module level with a hashable ``ContrastivePlan`` as its static
argument: any two utterances with equal plans and equal padded shapes share one compilation.
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
from jax.sharding import PartitionSpec as P

from .._shapes import TOKEN_BUCKET, round_up
from ..config import SPESConfig
from ..errors import SpesError
from . import sweep
from .contrastive import SCORERS, WORD_PROBABILITIES, causal_word_prefix, score, word_pair_probabilities
from .pacing import StepQueue
from .segmentation import Segmentation
from .sweep import AXIS, Sums, SweepInputs, SweepPlan, feature_sums, prefix_sums, ratio, segment_sums

_traces: collections.Counter = collections.Counter()


def trace_counts() -> dict[str, int]:
    """Number of traces (= compilations) of each contrastive sweep function so far in this process."""
    return dict(_traces)


@dataclasses.dataclass(frozen=True)
class ContrastivePlan:
    """What a contrastive sweep computes and where (static: equal plans share compilations).

    sweep: the mask sources, batch sizes, model module and device mesh (its ``scorer`` is unused);
    scorer: one of ``core.contrastive.SCORERS``; word_probability: one of ``WORD_PROBABILITIES``.
    """

    sweep: SweepPlan
    scorer: str = "contrastive_parity_ratio"
    word_probability: str = "word_boundary"


def make_plan(module, config: SPESConfig, devices: Sequence[jax.Device] | None = None, *,
              scorer: str = "contrastive_parity_ratio", word_probability: str = "word_boundary",
              spectrogram_masks: Any = None, token_masks: Any = None) -> ContrastivePlan:
    """The contrastive plan of ``config`` on ``devices`` (see ``core.sweep.make_plan``)."""
    if scorer not in SCORERS:
        raise SpesError(f"unknown contrastive scorer {scorer!r}; choose from {', '.join(SCORERS)}")
    if word_probability not in WORD_PROBABILITIES:
        raise SpesError(f"unknown word probability {word_probability!r}; choose from {', '.join(WORD_PROBABILITIES)}")
    return ContrastivePlan(sweep.make_plan(module, config, devices, spectrogram_masks=spectrogram_masks,
                                           token_masks=token_masks), scorer, word_probability)


@flax.struct.dataclass
class ContrastiveInputs:
    """One utterance and its word, padded to the buckets (L tokens covers both sequences).

    base: the features, segmentation, key and mask counts (``SweepInputs``), with the target y in
    ``prev`` / ``target`` (L,); foil_prev, foil_target: (L,) int32 the foil sequence y' likewise;
    start, end, foil_end: () int32 the word's pieces s..e in y and s..e' in y'; bow: (V,) bool the
    word-initial vocabulary entries (``begins_word``).
    """

    base: SweepInputs
    foil_prev: jax.Array
    foil_target: jax.Array
    start: jax.Array
    end: jax.Array
    foil_end: jax.Array
    bow: jax.Array


@flax.struct.dataclass
class ContrastiveState:
    """p_orig, q_orig: () float32 target / foil word probability of the unperturbed input; cross,
    enc_valid: the unperturbed encoder's cross-attention keys/values and (1, S') validity (prefix
    masks); spectrogram: per segment (D, n_levels, S, 1) / (D, n_levels, S), or per feature
    (D, 1, T, C) / (D, T, C); prefix: (D, 1, L) / (D, L); nonfinite: (D,) masks whose score was
    not finite (counted, then left out of the sums)."""

    params: Any
    inputs: ContrastiveInputs
    p_orig: jax.Array
    q_orig: jax.Array
    cross: Any
    enc_valid: jax.Array
    spectrogram: Sums
    prefix: Sums
    nonfinite: jax.Array


def prepare(features: np.ndarray, target: Sequence[int], foil: Sequence[int], spans: tuple[int, int, int],
            segmentation: Segmentation, utt_id: str, config: SPESConfig, plan: ContrastivePlan, bow: np.ndarray,
            replay: dict | None = None, layout: sweep.InputLayout = sweep.InputLayout()) -> ContrastiveInputs:
    """Pads one utterance, its target and foil ids (each ending with </s>) and the word's
    (start, end, foil_end) from ``contrastive_spans`` to the buckets and places them, replicated, on
    the plan's devices. ``replay["prefix"]`` rows are padded by the caller to
    ``round_up(max(len(target), len(foil)), 16)`` columns."""
    base = sweep.prepare(features, target, segmentation, utt_id, config, plan.sweep, replay, layout)
    L = round_up(max(len(target), len(foil)), TOKEN_BUCKET)
    start, pad = layout.prompt[-1], plan.sweep.module.cfg.pad
    prev, tgt = sweep.teacher_forced(target, L, start, pad)
    foil_prev, foil_tgt = sweep.teacher_forced(foil, L, start, pad)
    s, e, ef = (np.int32(i) for i in spans)
    inputs = ContrastiveInputs(base.replace(prev=prev, target=tgt), foil_prev, foil_tgt, s, e, ef,
                               np.asarray(bow, bool))
    return jax.device_put(inputs, plan.sweep.replicated)


def _pair(plan: ContrastivePlan, params, inputs: ContrastiveInputs, cross, enc_valid, keep=None):
    """(P, Q) of one input given its encoder's keys/values; keep: (L,) prefix mask or None."""
    base = inputs.base

    def decoder(prev, k):
        return sweep.decode(plan.sweep.module, params, base, prev, cross, enc_valid, k)

    return word_pair_probabilities(decoder, (base.prev, base.target, keep),
                                   (inputs.foil_prev, inputs.foil_target, keep), inputs.start,
                                   (inputs.end, inputs.foil_end), plan.word_probability, inputs.bow)


def _scores(plan: ContrastivePlan, p_orig, q_orig, p, q, valid) -> tuple[jax.Array, jax.Array]:
    """(B,) word probabilities -> (B, 1) scores (0 for padded masks and non-finite scores) and the
    (B,) non-finite flags of the valid masks."""
    r = score(plan.scorer, p_orig, p, q_orig, q)
    bad = (~jnp.isfinite(r)) & (valid > 0)
    return jnp.where(bad, 0.0, r * valid)[:, None], bad


@functools.partial(jax.jit, static_argnames=("plan",))
def init(params, inputs: ContrastiveInputs, *, plan: ContrastivePlan) -> ContrastiveState:
    """Unperturbed pass (P_o, Q_o, cross-attention keys/values) and zero sums."""
    _traces["init"] += 1
    module, base = plan.sweep.module, inputs.base
    cross, enc_valid = sweep.encode(module, params, base.features, base.length)
    p_orig, q_orig = _pair(plan, params, inputs, cross, enc_valid)
    D, (n_levels, T, C), L = plan.sweep.n_devices, base.labels.shape, base.prev.shape[0]
    zeros = lambda *shape: jax.lax.with_sharding_constraint(jnp.zeros((D, *shape), jnp.float32),
                                                            plan.sweep.per_device)
    if plan.sweep.spectrogram_masks.per_segment:
        spec = Sums(zeros(n_levels, base.n_slots, 1), zeros(n_levels, base.n_slots))
    else:
        spec = Sums(zeros(1, T, C), zeros(T, C))
    return ContrastiveState(params, inputs, p_orig, q_orig, cross, enc_valid, spec, Sums(zeros(1, L), zeros(L)),
                            zeros())


@functools.partial(jax.jit, static_argnames=("plan",))
def spectrogram_step(state: ContrastiveState, step: jax.Array, *, plan: ContrastivePlan) -> ContrastiveState:
    """Adds ``plan.sweep.batch`` spectrogram masks; each device encodes its 1/D of them once and
    decodes each twice (target and foil)."""
    _traces["spectrogram_step"] += 1
    source, module = plan.sweep.spectrogram_masks, plan.sweep.module
    local = plan.sweep.batch // plan.sweep.n_devices

    def body(params, inputs, p_orig, q_orig, num, den, bad, step):
        base = inputs.base
        g = sweep._mask_numbers(step, plan.sweep.batch, local)
        valid = (g < base.n_masks).astype(jnp.float32)
        perturbed, occluded = jax.vmap(source, (None, 0))(base, g)

        def one(x):
            return _pair(plan, params, inputs, *sweep.encode(module, params, x, base.length))

        r, nonfinite = _scores(plan, p_orig, q_orig, *jax.vmap(one)(perturbed), valid)
        occluded = occluded * valid.reshape((-1,) + (1,) * (occluded.ndim - 1))
        if source.per_segment:
            d_num, d_den = segment_sums(occluded, base.coords(g)[0], r, base.labels.shape[0])
        else:
            d_num, d_den = feature_sums(occluded, r)
        return num + d_num[None], den + d_den[None], bad + nonfinite.sum()[None]

    num, den, bad = jax.shard_map(body, mesh=plan.sweep.mesh,
                                  in_specs=(P(), P(), P(), P(), P(AXIS), P(AXIS), P(AXIS), P()),
                                  out_specs=(P(AXIS), P(AXIS), P(AXIS)))(
        state.params, state.inputs, state.p_orig, state.q_orig, state.spectrogram.num, state.spectrogram.den,
        state.nonfinite, step)
    return state.replace(spectrogram=Sums(num, den), nonfinite=bad)


@functools.partial(jax.jit, static_argnames=("plan",))
def prefix_step(state: ContrastiveState, step: jax.Array, *, plan: ContrastivePlan) -> ContrastiveState:
    """Adds ``plan.sweep.token_batch`` prefix masks over decoder inputs 0..s (the unperturbed
    encoder output is reused); target and foil decoders get the same mask."""
    _traces["prefix_step"] += 1
    local = plan.sweep.token_batch // plan.sweep.n_devices

    def body(params, inputs, p_orig, q_orig, cross, enc_valid, num, den, bad, step):
        base = inputs.base
        g = sweep._mask_numbers(step, plan.sweep.token_batch, local)
        valid = (g < base.n_token_masks).astype(jnp.float32)
        keep = jax.vmap(plan.sweep.token_masks, (None, 0))(base, g)
        keep = jnp.where(jnp.arange(keep.shape[-1]) > inputs.start, 1.0, keep)  # the word's context only
        p, q = jax.vmap(lambda k: _pair(plan, params, inputs, cross, enc_valid, k))(keep)
        r, nonfinite = _scores(plan, p_orig, q_orig, p, q, valid)
        d_num, d_den = prefix_sums((1.0 - keep) * valid[:, None], r)
        return num + d_num[None], den + d_den[None], bad + nonfinite.sum()[None]

    num, den, bad = jax.shard_map(body, mesh=plan.sweep.mesh,
                                  in_specs=(P(), P(), P(), P(), P(), P(), P(AXIS), P(AXIS), P(AXIS), P()),
                                  out_specs=(P(AXIS), P(AXIS), P(AXIS)))(
        state.params, state.inputs, state.p_orig, state.q_orig, state.cross, state.enc_valid, state.prefix.num,
        state.prefix.den, state.nonfinite, step)
    return state.replace(prefix=Sums(num, den), nonfinite=bad)


@functools.partial(jax.jit, static_argnames=("plan",))
def finalize(state: ContrastiveState, *, plan: ContrastivePlan) -> dict[str, jax.Array]:
    """Reduces the devices' sums once: {"spectrogram": (1, T, C), "prefix": (1, L) zero after the
    word's start, "p_orig", "q_orig": (), "nonfinite": () int}."""
    _traces["finalize"] += 1
    num, den = state.spectrogram.num.sum(0), state.spectrogram.den.sum(0)
    if plan.sweep.spectrogram_masks.per_segment:
        spec = sweep.spectrogram_map(num, den, state.inputs.base.labels)
    else:
        spec = ratio(num, den)
    prefix = causal_word_prefix(ratio(state.prefix.num.sum(0), state.prefix.den.sum(0)), state.inputs.start)
    return {"spectrogram": spec, "prefix": prefix, "p_orig": state.p_orig, "q_orig": state.q_orig,
            "nonfinite": state.nonfinite.sum().astype(jnp.int32)}


def run(state: ContrastiveState, plan: ContrastivePlan, config: SPESConfig,
        progress: Callable[[int], None] | None = None) -> dict[str, jax.Array]:
    """All steps of ``config``'s mask counts, then ``finalize`` (as ``core.sweep.run``)."""
    queue = StepQueue(progress)
    for kind, total, batch, step_fn in (("spectrogram", config.n_masks, plan.sweep.batch, spectrogram_step),
                                        ("prefix", config.n_token_masks, plan.sweep.token_batch, prefix_step)):
        for i in range(-(-total // batch)):
            state = step_fn(state, np.int32(i), plan=plan)
            queue.push(getattr(state, kind).den, min(batch, total - i * batch))
    queue.drain()
    return finalize(state, plan=plan)


__all__ = ["ContrastiveInputs", "ContrastivePlan", "ContrastiveState", "finalize", "init", "make_plan", "prefix_step",
           "prepare", "run", "spectrogram_step", "trace_counts"]
