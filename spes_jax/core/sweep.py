"""The SPES sweep, a probe of the sweep engine (``core.engine``): per explained token, Eq. 3 over
spectrogram masks (each perturbed input through the whole model) and over prefix masks (each
through the decoder, on the unperturbed encoder output computed once per utterance).

    plan = make_plan(model.module, config, devices)
    state = init(params, prepare(features, tokens, segment(features, config), utt_id, config, plan), plan=plan)
    result = run(state, plan, config)          # result.spectrogram (L, T, C), result.prefix (L, L)

This module holds what is particular to the kind: the padded utterance (``SweepInputs``), its
layout per model family (``InputLayout``), the model contract's encode/decode calls and the probe
(``SpesProbe``); steps, sums, convergence and ``run`` are the engine's.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ..config import SPESConfig
from ..errors import SpesError
from .._shapes import SEGMENT_BUCKET, TOKEN_BUCKET, bucket, round_up
from ..text import EOS, PAD
from . import engine
from .engine import (Features, Positions, Segments, SweepPlan, SweepResult, SweepState, finalize, init, ratio,
                     segment_sums, split_half_r)
from .perturbation import BubbleMasks, OrthogonalMasks, SegmentMasks, TokenMasks, utterance_key
from .scoring import impact
from .segmentation import Segmentation

KIND = "spes"
# This kind's traces of each engine function, and the per-device batch each step was traced for.
trace_counts = functools.partial(engine.trace_counts, KIND)
local_batch_shapes = functools.partial(engine.local_batch_shapes, KIND)


@flax.struct.dataclass
class SweepInputs:
    """One utterance padded to its buckets (T frames, L tokens, S segment ids per level).

    features: (T, C) float32 model input, zero beyond ``length``.
    length: () int32 valid frames.
    labels: (n_levels, T, C) int32 segment id of every feature per level, 1-based, 0 on padding.
    prev: (L,) int32 decoder input </s>, y_1 .. y_{K-1}, then <pad>.
    target: (L,) int32 explained tokens y_1 .. y_K (y_K = </s>), then <pad>.
    n_tokens: () int32 K.
    key: the utterance's PRNG key (seed folded with its id).
    p_spec, p_tok: () float32 occlusion probabilities of a segment / a prefix position.
    per_level: () int32 the most spectrogram masks of any level (row stride of level-major replayed masks).
    n_masks, n_token_masks: () int32 spectrogram / prefix masks of the sweep.
    channel_mean, channel_std: (C,) float32 statistics of the unpadded features (Bubble Noise).
    fill: (C,) float32 what an occluded feature becomes (the model family's choice: ``InputLayout``).
    replay: recorded masks for the replay sources ({"spectrogram": (N, S), "prefix": (N', L)}) or None.
    n_slots: S, static.
    prompt: the forced decoder prompt, static; its last token is ``prev[0]`` (the start column of the
    prefix map), the others precede every decoder input and are never occluded.
    """

    features: jax.Array
    length: jax.Array
    labels: jax.Array
    prev: jax.Array
    target: jax.Array
    n_tokens: jax.Array
    key: jax.Array
    p_spec: jax.Array
    p_tok: jax.Array
    per_level: jax.Array
    n_masks: jax.Array
    n_token_masks: jax.Array
    channel_mean: jax.Array
    channel_std: jax.Array
    fill: jax.Array
    replay: dict | None = None
    n_slots: int = flax.struct.field(pytree_node=False, default=SEGMENT_BUCKET)
    prompt: tuple[int, ...] = flax.struct.field(pytree_node=False, default=(EOS,))

    def coords(self, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Evaluation position -> (granularity level, index within the level).

        Levels are interleaved (position g evaluates mask g // n_levels of level g % n_levels), so
        every prefix of the sweep covers all levels equally and a sweep can stop early. The set of
        masks, and so the full sweep's maps, do not depend on this order.
        """
        n_levels = self.labels.shape[0]
        return g % n_levels, g // n_levels


@dataclasses.dataclass(frozen=True)
class InputLayout:
    """How a model family lays one utterance out for the sweep (``SpeechToTextModel.layout``).

    frames: padded input length (None: the 64-frame bucket of T); pad_value: the features beyond the
    utterance's T frames (never perturbed); fill: (C,) what an occluded feature becomes (None: 0);
    prompt: the forced decoder prompt (fairseq: the leading </s>).
    """

    frames: int | None = None
    pad_value: float = 0.0
    fill: np.ndarray | None = None
    prompt: tuple[int, ...] = (EOS,)


def make_plan(module, config: SPESConfig, devices: Sequence[jax.Device] | None = None, *,
              spectrogram_masks: Any = None, token_masks: Any = None) -> SweepPlan:
    """The SPES plan of ``config`` on ``devices`` (default: all): the configured mask sources (or
    those given) and scorer, batches and precision (``engine.make_plan``)."""
    return engine.make_plan(module, SpesProbe(spectrogram_masks or spectrogram_source(config),
                                              token_masks or TokenMasks(), config.scorer),
                            config.batches(), devices, config.precision)


def spectrogram_source(config: SPESConfig) -> Any:
    """The spectrogram mask source ``config`` asks for (perturbation and sampler)."""
    if config.perturbation == "bubble":
        return BubbleMasks(config.bubbles_per_second, config.bubble_width_s, config.bubble_height_mel)
    return OrthogonalMasks() if config.sampler == "orthogonal" else SegmentMasks()


def teacher_forced(tokens: Sequence[int], length: int, start: int = EOS, pad: int = PAD
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Explained ids y_1 .. y_K -> decoder input (start, y_1 .. y_{K-1}) and target, padded to ``length``."""
    prev, target = np.full(length, pad, np.int32), np.full(length, pad, np.int32)
    prev[:len(tokens)] = [start] + list(tokens[:-1])
    target[:len(tokens)] = tokens
    return prev, target


def prepare(features: np.ndarray, tokens: Sequence[int], segmentation: Segmentation, utt_id: str,
            config: SPESConfig, plan: SweepPlan, replay: dict | None = None,
            layout: InputLayout = InputLayout()) -> SweepInputs:
    """Pads one utterance to its buckets and places it, replicated, on the plan's devices.

    features: (T, C) the utterance's frames; tokens: the K explained ids ending with the model's end
    token; segmentation: labels (n_levels, T, C); layout: the model family's (``model.layout``).
    ``replay`` arrays are padded by the caller to S / L columns.
    """
    T, C = features.shape
    Tb, K = layout.frames or bucket(T), len(tokens)
    if Tb < T:
        raise SpesError(f"{utt_id}: {T} frames do not fit the model's {Tb}-frame input")
    Lb = round_up(K, TOKEN_BUCKET)
    n_levels = segmentation.labels.shape[0]
    labels = np.zeros((n_levels, Tb, C), np.int32)
    labels[:, :T] = segmentation.labels
    feats = np.full((Tb, C), layout.pad_value, np.float32)
    feats[:T] = features
    pad = plan.module.cfg.pad
    prev, target = teacher_forced(tokens, Lb, layout.prompt[-1], pad)
    fill = np.zeros(C, np.float32) if layout.fill is None else np.asarray(layout.fill, np.float32)
    inputs = SweepInputs(
        features=feats, length=np.int32(T), labels=labels, prev=prev, target=target, n_tokens=np.int32(K),
        key=utterance_key(config.seed, utt_id), p_spec=np.float32(config.p_spec),
        p_tok=np.float32(config.p_tok), per_level=np.int32(max(config.masks_per_level, 1)),
        n_masks=np.int32(config.n_masks), n_token_masks=np.int32(config.n_token_masks),
        channel_mean=features.mean(0), channel_std=features.std(0), fill=fill, replay=replay,
        n_slots=round_up(int(segmentation.n_segments.max()) + 1, SEGMENT_BUCKET), prompt=tuple(layout.prompt))
    return jax.device_put(inputs, plan.replicated)


# ------------------------------------------------------------------------------------ the model contract

def encode(module, params, features: jax.Array, length: jax.Array) -> tuple[Any, jax.Array]:
    """(T, C) features of one input -> the decoder's cross-attention keys/values and (1, S') validity."""
    enc = module.apply({"params": params}, features[None], length[None], method="encode")
    return module.apply({"params": params}, enc, method="cross_kv"), enc.valid


def decode(module, params, inputs, prev: jax.Array, cross, enc_valid: jax.Array,
           keep: jax.Array | None = None) -> jax.Array:
    """Teacher-forced logits (L, V) of decoder input ``prev`` (L,) after the prompt's fixed tokens
    (``inputs.prompt``).

    keep: (L,) multipliers of the input embeddings (prefix occlusion) or None; the fixed prompt
    tokens before ``prev`` are never occluded, and their positions are not returned.
    """
    n_fixed = len(inputs.prompt) - 1
    if n_fixed:
        prev = jnp.concatenate([jnp.asarray(inputs.prompt[:-1], prev.dtype), prev])
        keep = None if keep is None else jnp.concatenate([jnp.ones(n_fixed, keep.dtype), keep])
    logits = module.apply({"params": params}, prev[None], cross, enc_valid, None if keep is None else keep[None],
                          method="decode")[0]
    return logits[n_fixed:]


def log_probs(logits: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def token_scores(scorer: str, inputs, log_p: jax.Array, logits: jax.Array) -> jax.Array:
    """(L, V) perturbed logits -> (L,) float32 impact on each explained token, 0 on padded positions."""
    r = impact(scorer, log_p, log_probs(logits), inputs.target)
    return jnp.where(jnp.arange(r.shape[-1]) < inputs.n_tokens, r, 0.0)


def token_rows(inputs: SweepInputs, per_segment: bool, n_rows: int, valid_rows: jax.Array) -> Any:
    """The row layout of a spectrogram part with ``n_rows`` rows (``valid_rows``: (n_rows,) bool): per
    segment or per feature; the valid frames count in the split-half estimate."""
    T, C = inputs.features.shape
    frames = jnp.broadcast_to((jnp.arange(T) < inputs.length)[:, None], (T, C)).astype(jnp.float32)[None]
    if per_segment:
        return Segments(inputs.labels, inputs.n_slots, n_rows, frames, valid_rows)
    return Features((T, C), n_rows, frames, valid_rows)


# ------------------------------------------------------------------------------------ the probe

@dataclasses.dataclass(frozen=True)
class SpesProbe:
    """SPES (Eq. 3 per explained token): "spectrogram" masks from ``spectrogram_masks`` through the
    whole model, map (L, T, C); "prefix" masks from ``token_masks`` over the decoder inputs, through
    the decoder on the unperturbed encoder output, causal map (L, L). scorer: "kl" or "prob_diff".
    Context: the unperturbed log-probabilities ``log_p`` (L, V) and the encoder's ``cross`` keys/values
    and ``enc_valid`` (1, S')."""

    spectrogram_masks: Any = SegmentMasks()
    token_masks: Any = TokenMasks()
    scorer: str = "kl"

    kind: ClassVar[str] = KIND
    parts: ClassVar[tuple[str, ...]] = ("spectrogram", "prefix")

    def setup(self, module, params, inputs: SweepInputs) -> dict:
        cross, enc_valid = encode(module, params, inputs.features, inputs.length)
        log_p = log_probs(decode(module, params, inputs, inputs.prev, cross, enc_valid))
        return {"log_p": log_p, "cross": cross, "enc_valid": enc_valid}

    def n_masks(self, part: str, inputs: SweepInputs) -> jax.Array:
        return inputs.n_masks if part == "spectrogram" else inputs.n_token_masks

    def perturb(self, part: str, inputs: SweepInputs, ctx: dict, g: jax.Array):
        if part == "spectrogram":  # halves by the index within the level: each level split evenly
            return (*self.spectrogram_masks(inputs, g), inputs.coords(g)[1])
        keep = self.token_masks(inputs, g)
        return keep, 1.0 - keep, g

    def score(self, part: str, module, params, inputs: SweepInputs, ctx: dict, x: jax.Array) -> jax.Array:
        if part == "spectrogram":
            logits = decode(module, params, inputs, inputs.prev, *encode(module, params, x, inputs.length))
        else:
            logits = decode(module, params, inputs, inputs.prev, ctx["cross"], ctx["enc_valid"], x)
        return token_scores(self.scorer, inputs, ctx["log_p"], logits)

    def rows(self, part: str, inputs: SweepInputs, ctx: dict):
        L = inputs.prev.shape[0]
        tokens = jnp.arange(L) < inputs.n_tokens
        if part == "spectrogram":
            return token_rows(inputs, self.spectrogram_masks.per_segment, L, tokens)
        causal = jnp.tril(jnp.ones((L, L), bool))
        return Positions(L, L, causal, (causal & tokens[:, None]).astype(jnp.float32), None)

    def outputs(self, inputs: SweepInputs, ctx: dict) -> dict:
        return {}


spectrogram_step = functools.partial(engine.step, part="spectrogram")
prefix_step = functools.partial(engine.step, part="prefix")


def run(state: SweepState, plan: SweepPlan, config: SPESConfig,
        progress: Callable[[int], None] | None = None) -> SweepResult:
    """``engine.run`` with ``config``'s mask counts and ``until_r``: result.spectrogram (L, T, C) and
    result.prefix (L, L) maps."""
    return engine.run(state, plan, (config.n_masks, config.n_token_masks), until_r=config.until_r, progress=progress)


# The engine's functions are this kind's too (``sweep.init``, ...); Eq. 3's sums are re-exported for callers.
__all__ = ["InputLayout", "KIND", "SpesProbe", "SweepInputs", "SweepPlan", "SweepResult", "SweepState", "decode",
           "encode", "finalize", "init", "local_batch_shapes", "log_probs", "make_plan", "prefix_step", "prepare",
           "ratio", "run", "segment_sums", "spectrogram_source", "spectrogram_step", "split_half_r", "teacher_forced",
           "token_rows", "token_scores", "trace_counts"]
