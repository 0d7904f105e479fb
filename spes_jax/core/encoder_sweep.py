"""Encoder-output saliency, a probe of the sweep engine (``core.engine``).

The decoder-only counterpart of ``core.sweep`` (EXTENSIONS.md section 3): the unperturbed encoder
runs once, in ``init``; each mask occludes frames of the encoder output H (S', D), each valid frame
independently with probability p, an occluded frame's vector replaced by zeros; the decoder then
scores the teacher-forced hypothesis under the perturbed H with the sweep's scorer, and Eq. 3 is
accumulated per encoder frame:

    S[k, j] = sum_i r_ik (1 - M_ij) / sum_i (1 - M_ij),   a (K, S') map.

The decoder sees H only through the cross-attention keys/values, and those are projections of each
frame on its own, so the keys/values of the perturbed H are, frame by frame, either those of H or
those of a zero vector. ``init`` computes both once and a mask selects rows between them: the same
numbers as projecting the perturbed H, without the projections per mask.

Masks are pure functions of (seed, utterance, index); steps, sums, convergence and ``run`` are the
engine's.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, ClassVar, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from .._shapes import TOKEN_BUCKET, bucket, round_up
from ..config import SCORERS
from ..errors import SpesError
from ..text import EOS
from . import engine
from .engine import Positions, SweepPlan, SweepResult, SweepState, finalize, init, split_half_r
from .perturbation import mask_key, utterance_key
from .sweep import InputLayout, decode, log_probs, teacher_forced, token_scores

# fold_in tag of the encoder-output masks, distinct from the spectrogram levels and the prefix tag.
ENCODER_LEVEL = 0x656E636F
KIND = "encoder"
# This kind's traces of each engine function, and the per-device batch each step was traced for.
trace_counts = functools.partial(engine.trace_counts, KIND)
local_batch_shapes = functools.partial(engine.local_batch_shapes, KIND)


def frame_keep(key: jax.Array, index: jax.Array, n_frames: int, p: jax.Array) -> jax.Array:
    """Keep bits (n_frames,) float32 of encoder-output mask ``index``: frame j is occluded (0) when
    U_j < p, with U_j drawn from the key folded with j, so a frame's bit does not depend on padding."""
    k = mask_key(key, ENCODER_LEVEL, index)
    u = jax.vmap(lambda j: jax.random.uniform(jax.random.fold_in(k, j)))(jnp.arange(n_frames))
    return (u >= p).astype(jnp.float32)


@flax.struct.dataclass
class EncoderInputs:
    """One utterance padded to its buckets (T frames, L tokens).

    features: (T, C) float32 model input, zero beyond ``length``; length: () int32 valid frames.
    prev: (L,) int32 decoder input </s>, y_1 .. y_{K-1}, then <pad>; target: (L,) int32 y_1 .. y_K
    (y_K = </s>), then <pad>; n_tokens: () int32 K. key: the utterance's PRNG key (seed folded with
    its id); p: () float32 occlusion probability of an encoder frame; n_masks: () int32; prompt: the
    forced decoder prompt, static (as in ``core.sweep.SweepInputs``).
    """

    features: jax.Array
    length: jax.Array
    prev: jax.Array
    target: jax.Array
    n_tokens: jax.Array
    key: jax.Array
    p: jax.Array
    n_masks: jax.Array
    prompt: tuple[int, ...] = flax.struct.field(pytree_node=False, default=(EOS,))


def make_plan(module, *, scorer: str = "kl", batch: int, precision: str = "float32",
              devices: Sequence[jax.Device] | None = None) -> SweepPlan:
    """The plan on ``devices`` (default: all): ``module`` computing in ``precision``, ``batch``
    masks per step rounded up to a multiple of the device count."""
    if scorer not in SCORERS:
        raise SpesError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    if precision not in ("float32", "bfloat16"):
        raise SpesError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
    if batch < 1:
        raise SpesError(f"batch size must be >= 1, got {batch}")
    return engine.make_plan(module, EncoderProbe(scorer), (batch,), devices, precision)


def prepare(features: np.ndarray, tokens: Sequence[int], utt_id: str, *, seed: int, p: float, n_masks: int,
            plan: SweepPlan, layout: InputLayout = InputLayout()) -> EncoderInputs:
    """Pads one utterance to its buckets and places it, replicated, on the plan's devices.

    features: (T, C) the utterance's frames; tokens: the K explained ids ending with the end token;
    layout: the model family's (``model.layout``).
    """
    T, C = features.shape
    K = len(tokens)
    feats = np.full((layout.frames or bucket(T), C), layout.pad_value, np.float32)
    feats[:T] = features
    prev, target = teacher_forced(tokens, round_up(K, TOKEN_BUCKET), layout.prompt[-1], plan.module.cfg.pad)
    inputs = EncoderInputs(features=feats, length=np.int32(T), prev=prev, target=target, n_tokens=np.int32(K),
                           key=utterance_key(seed, utt_id), p=np.float32(p), n_masks=np.int32(n_masks),
                           prompt=tuple(layout.prompt))
    return jax.device_put(inputs, plan.replicated)


@dataclasses.dataclass(frozen=True)
class EncoderProbe:
    """Encoder-output saliency: one part, "encoder", whose masks occlude encoder output frames; map
    (L, S'), 0 on frames outside the utterance and on never-occluded ones. scorer: one of ``config.SCORERS``. Context:
    ``log_p`` (L, V) unperturbed log-probabilities; ``cross`` / ``blank``: per decoder layer the
    cross-attention (keys, values) of H, (1, S', H, D/H) each, and of a zero frame, (1, 1, H, D/H);
    ``enc_valid`` (1, S') bool (what the decoder attends to); ``shown`` (S',) bool, the utterance's frames
    among them (all of ``enc_valid`` for fairseq models; Whisper's padding excluded). Output: ``frames``,
    the number of shown frames ()."""

    scorer: str = "kl"

    kind: ClassVar[str] = KIND
    parts: ClassVar[tuple[str, ...]] = ("encoder",)

    def setup(self, module, params, inputs: EncoderInputs) -> dict:
        apply = lambda *a, **k: module.apply({"params": params}, *a, **k)
        enc = apply(inputs.features[None], inputs.length[None], method="encode")
        cross = apply(enc, method="cross_kv")
        blank = apply(enc.replace(out=jnp.zeros_like(enc.out[:, :1])), method="cross_kv")
        log_p = log_probs(decode(module, params, inputs, inputs.prev, cross, enc.valid))
        # The utterance's encoder frames: those the decoder may attend to (``enc.valid``) that come from
        # the utterance's input frames. The same for fairseq models; Whisper attends over its 30 s of
        # padding too, which is neither perturbed nor shown (as for the spectrogram sweep).
        S, T_in = enc.valid.shape[1], inputs.features.shape[0]
        shown = enc.valid[0] & (jnp.arange(S) * T_in < inputs.length * S)
        return {"log_p": log_p, "cross": cross, "blank": blank, "enc_valid": enc.valid, "shown": shown}

    def n_masks(self, part: str, inputs: EncoderInputs) -> jax.Array:
        return inputs.n_masks

    def perturb(self, part: str, inputs: EncoderInputs, ctx: dict, g: jax.Array):
        shown = ctx["shown"].astype(jnp.float32)
        # Frames outside the utterance stay as they are: no occlusion, no weight (a 0 in the map).
        keep = jnp.where(ctx["shown"], frame_keep(inputs.key, g, shown.shape[0], inputs.p), 1.0)
        return keep, (1.0 - keep) * shown, g

    def score(self, part: str, module, params, inputs: EncoderInputs, ctx: dict, x: jax.Array) -> jax.Array:
        kept = x.astype(bool)[None, :, None, None]
        perturbed = jax.tree_util.tree_map(lambda h, z: jnp.where(kept, h, z), ctx["cross"], ctx["blank"])
        return token_scores(self.scorer, inputs, ctx["log_p"], decode(module, params, inputs, inputs.prev,
                                                                     perturbed, ctx["enc_valid"]))

    def rows(self, part: str, inputs: EncoderInputs, ctx: dict):
        L, S = inputs.prev.shape[0], ctx["enc_valid"].shape[1]
        return Positions(L, S, None, ctx["shown"][None].astype(jnp.float32), jnp.arange(L) < inputs.n_tokens)

    def outputs(self, inputs: EncoderInputs, ctx: dict) -> dict:
        return {"frames": ctx["shown"].sum()}


step = functools.partial(engine.step, part="encoder")


def run(state: SweepState, plan: SweepPlan, n_masks: int, *, until_r: float | None = None,
        progress: Callable[[int], None] | None = None) -> SweepResult:
    """``engine.run`` of ``n_masks`` masks: result.encoder (L, S') map, result.frames ()."""
    return engine.run(state, plan, (n_masks,), until_r=until_r, progress=progress)


__all__ = ["ENCODER_LEVEL", "EncoderInputs", "EncoderProbe", "KIND", "finalize", "frame_keep", "init",
           "local_batch_shapes", "make_plan", "prepare", "run", "split_half_r", "step", "trace_counts"]
