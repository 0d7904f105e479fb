"""The contrastive SPES sweep, a probe of the sweep engine (``core.engine``): one word, the target
against a foil.

Every perturbed input is encoded once and decoded twice, teacher-forced on the target sequence y
and on the foil sequence y' (identical to y before the word's start s); the word probabilities of
both (pieces s..e of y, s..e' of y') give one score r per mask (``core.contrastive.score``), and
Eq. 3 accumulates r with one row. Prefix masks occlude only decoder inputs 0..s (the shared prefix):
the foil's decoder gets the target's mask, which is all ones after s. Non-finite scores (a word
probability of 0) are counted and left out, by the engine.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from .._shapes import TOKEN_BUCKET, round_up
from ..config import SPESConfig
from ..errors import SpesError
from . import engine, sweep
from .contrastive import SCORERS, WORD_PROBABILITIES, score, word_pair_probabilities
from .engine import Positions, SweepPlan, SweepResult, SweepState, finalize, init, split_half_r
from .perturbation import SegmentMasks, TokenMasks
from .segmentation import Segmentation
from .sweep import SweepInputs

KIND = "contrastive"
# This kind's traces of each engine function.
trace_counts = functools.partial(engine.trace_counts, KIND)


def make_plan(module, config: SPESConfig, devices: Sequence[jax.Device] | None = None, *,
              scorer: str = "contrastive_parity_ratio", word_probability: str = "word_boundary",
              spectrogram_masks: Any = None, token_masks: Any = None) -> SweepPlan:
    """The contrastive plan of ``config`` on ``devices``: ``scorer`` one of ``core.contrastive.SCORERS``,
    ``word_probability`` one of ``WORD_PROBABILITIES``; mask sources, batches and precision as
    ``core.sweep.make_plan`` (the configured SPES scorer is unused)."""
    if scorer not in SCORERS:
        raise SpesError(f"unknown contrastive scorer {scorer!r}; choose from {', '.join(SCORERS)}")
    if word_probability not in WORD_PROBABILITIES:
        raise SpesError(f"unknown word probability {word_probability!r}; choose from {', '.join(WORD_PROBABILITIES)}")
    probe = ContrastiveProbe(spectrogram_masks or sweep.spectrogram_source(config), token_masks or TokenMasks(),
                             scorer, word_probability)
    return engine.make_plan(module, probe, config.batches(), devices, config.precision)


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


def prepare(features: np.ndarray, target: Sequence[int], foil: Sequence[int], spans: tuple[int, int, int],
            segmentation: Segmentation, utt_id: str, config: SPESConfig, plan: SweepPlan, bow: np.ndarray,
            replay: dict | None = None, layout: sweep.InputLayout = sweep.InputLayout()) -> ContrastiveInputs:
    """Pads one utterance, its target and foil ids (each ending with </s>) and the word's
    (start, end, foil_end) from ``contrastive_spans`` to the buckets and places them, replicated, on
    the plan's devices. ``replay["prefix"]`` rows are padded by the caller to
    ``round_up(max(len(target), len(foil)), 16)`` columns."""
    base = sweep.prepare(features, target, segmentation, utt_id, config, plan, replay, layout)
    L = round_up(max(len(target), len(foil)), TOKEN_BUCKET)
    start, pad = layout.prompt[-1], plan.module.cfg.pad
    prev, tgt = sweep.teacher_forced(target, L, start, pad)
    foil_prev, foil_tgt = sweep.teacher_forced(foil, L, start, pad)
    s, e, ef = (np.int32(i) for i in spans)
    inputs = ContrastiveInputs(base.replace(prev=prev, target=tgt), foil_prev, foil_tgt, s, e, ef,
                               np.asarray(bow, bool))
    return jax.device_put(inputs, plan.replicated)


def _pair(probe: "ContrastiveProbe", module, params, inputs: ContrastiveInputs, cross, enc_valid, keep=None):
    """(P, Q) of one input given its encoder's keys/values; keep: (L,) prefix mask or None."""
    base = inputs.base

    def decoder(prev, k):
        return sweep.decode(module, params, base, prev, cross, enc_valid, k)

    return word_pair_probabilities(decoder, (base.prev, base.target, keep),
                                   (inputs.foil_prev, inputs.foil_target, keep), inputs.start,
                                   (inputs.end, inputs.foil_end), probe.word_probability, inputs.bow)


@dataclasses.dataclass(frozen=True)
class ContrastiveProbe:
    """Contrastive SPES: "spectrogram" masks through the whole model, map (1, T, C); "prefix" masks
    over decoder inputs 0..s through the decoder on the unperturbed encoder output, map (1, L) zero
    after s. Context: the unperturbed word probabilities ``p_orig``, ``q_orig`` and the encoder's
    ``cross`` keys/values and ``enc_valid``; both probabilities are also outputs."""

    spectrogram_masks: Any = SegmentMasks()
    token_masks: Any = TokenMasks()
    scorer: str = "contrastive_parity_ratio"
    word_probability: str = "word_boundary"

    kind: ClassVar[str] = KIND
    parts: ClassVar[tuple[str, ...]] = ("spectrogram", "prefix")

    def setup(self, module, params, inputs: ContrastiveInputs) -> dict:
        cross, enc_valid = sweep.encode(module, params, inputs.base.features, inputs.base.length)
        p_orig, q_orig = _pair(self, module, params, inputs, cross, enc_valid)
        return {"p_orig": p_orig, "q_orig": q_orig, "cross": cross, "enc_valid": enc_valid}

    def n_masks(self, part: str, inputs: ContrastiveInputs) -> jax.Array:
        return inputs.base.n_masks if part == "spectrogram" else inputs.base.n_token_masks

    def perturb(self, part: str, inputs: ContrastiveInputs, ctx: dict, g: jax.Array):
        base = inputs.base
        if part == "spectrogram":
            return (*self.spectrogram_masks(base, g), base.coords(g)[1])
        keep = self.token_masks(base, g)
        keep = jnp.where(jnp.arange(keep.shape[-1]) > inputs.start, 1.0, keep)  # the word's context only
        return keep, 1.0 - keep, g

    def score(self, part: str, module, params, inputs: ContrastiveInputs, ctx: dict, x: jax.Array) -> jax.Array:
        if part == "spectrogram":
            p, q = _pair(self, module, params, inputs, *sweep.encode(module, params, x, inputs.base.length))
        else:
            p, q = _pair(self, module, params, inputs, ctx["cross"], ctx["enc_valid"], x)
        return score(self.scorer, ctx["p_orig"], p, ctx["q_orig"], q)[None]

    def rows(self, part: str, inputs: ContrastiveInputs, ctx: dict):
        if part == "spectrogram":
            return sweep.token_rows(inputs.base, self.spectrogram_masks.per_segment, 1, jnp.ones(1, bool))
        L = inputs.base.prev.shape[0]
        context = (jnp.arange(L) <= inputs.start)[None]
        return Positions(1, L, context, context.astype(jnp.float32), None)

    def outputs(self, inputs: ContrastiveInputs, ctx: dict) -> dict:
        return {"p_orig": ctx["p_orig"], "q_orig": ctx["q_orig"]}


spectrogram_step = functools.partial(engine.step, part="spectrogram")
prefix_step = functools.partial(engine.step, part="prefix")


def run(state: SweepState, plan: SweepPlan, config: SPESConfig,
        progress: Callable[[int], None] | None = None) -> SweepResult:
    """``engine.run`` with ``config``'s mask counts and ``until_r``: result.spectrogram (1, T, C),
    result.prefix (1, L), result.p_orig, result.q_orig, result.nonfinite."""
    return engine.run(state, plan, (config.n_masks, config.n_token_masks), until_r=config.until_r, progress=progress)


__all__ = ["ContrastiveInputs", "ContrastiveProbe", "KIND", "finalize", "init", "make_plan", "prefix_step", "prepare",
           "round_up", "run", "spectrogram_step", "split_half_r", "trace_counts"]
