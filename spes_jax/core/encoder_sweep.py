"""Encoder-output saliency as compiled functions: ``init`` -> ``step``* -> ``finalize``.

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

Like ``core.sweep``: every function is jitted once at module level with the hashable ``EncoderPlan``
static; each device of the plan's mesh (axis ``"masks"``) derives its own share of the masks from
(seed, utterance, index) and adds into its own row of the sums under ``shard_map``; nothing per mask
leaves the device and ``finalize`` reduces the rows once.
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
from jax.sharding import Mesh, PartitionSpec as P

from .._shapes import TOKEN_BUCKET, bucket, round_up
from ..errors import SpesError
from ..text import EOS
from .pacing import StepQueue
from .perturbation import mask_key, utterance_key
from .scoring import impact
from .sweep import AXIS, InputLayout, MeshPlan, decode, prefix_sums, ratio, teacher_forced

# fold_in tag of the encoder-output masks, distinct from the spectrogram levels and the prefix tag.
ENCODER_LEVEL = 0x656E636F

_traces: collections.Counter = collections.Counter()
_local_batch: dict[str, tuple[int, ...]] = {}


def trace_counts() -> dict[str, int]:
    """Number of traces (= compilations) of each encoder-sweep function so far in this process."""
    return dict(_traces)


def local_batch_shapes() -> dict[str, tuple[int, ...]]:
    """Shape of the keep bits one device evaluated per step, at the step's last trace."""
    return dict(_local_batch)


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


@flax.struct.dataclass
class EncoderState:
    """What the sweep carries between steps.

    log_p: (L, V) float32 unperturbed log-probabilities. cross / blank: per decoder layer the
    cross-attention (keys, values) of H, (1, S', H, D/H) each, and of a zero frame, (1, 1, H, D/H).
    enc_valid: (1, S') bool. num: (D, L, S') and den: (D, S'), the partial sums of Eq. 3, one row
    per device.
    """

    params: Any
    inputs: EncoderInputs
    log_p: jax.Array
    cross: Any
    blank: Any
    enc_valid: jax.Array
    num: jax.Array
    den: jax.Array


@dataclasses.dataclass(frozen=True)
class EncoderPlan(MeshPlan):
    """What an encoder-output sweep computes and where (static: equal plans share compilations).

    module: the model (its dtype is the compute precision); scorer: "kl" or "prob_diff"; batch:
    masks per step over all devices (a multiple of the mesh size); mesh: 1-D, axis "masks".
    """

    module: Any
    mesh: Mesh
    scorer: str = "kl"
    batch: int = 64


def make_plan(module, *, scorer: str = "kl", batch: int = 64, precision: str = "float32",
              devices: Sequence[jax.Device] | None = None) -> EncoderPlan:
    """The plan on ``devices`` (default: all): ``module`` computing in ``precision``, ``batch``
    rounded up to a multiple of the device count."""
    if scorer not in ("kl", "prob_diff"):
        raise SpesError(f"scorer must be 'kl' or 'prob_diff', got {scorer!r}")
    if precision not in ("float32", "bfloat16"):
        raise SpesError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
    if batch < 1:
        raise SpesError(f"batch size must be >= 1, got {batch}")
    devices = list(devices or jax.devices())
    module = module.clone(dtype=jnp.bfloat16 if precision == "bfloat16" else jnp.float32)
    return EncoderPlan(module=module, mesh=Mesh(np.array(devices), (AXIS,)), scorer=scorer,
                       batch=round_up(batch, len(devices)))


def prepare(features: np.ndarray, tokens: Sequence[int], utt_id: str, *, seed: int, p: float, n_masks: int,
            plan: EncoderPlan, layout: InputLayout = InputLayout()) -> EncoderInputs:
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


@functools.partial(jax.jit, static_argnames=("plan",))
def init(params, inputs: EncoderInputs, *, plan: EncoderPlan) -> EncoderState:
    """The one encoder pass: H's keys/values, a zero frame's keys/values, the unperturbed
    log-probabilities, and zero sums."""
    _traces["init"] += 1
    apply = lambda *a, **k: plan.module.apply({"params": params}, *a, **k)
    enc = apply(inputs.features[None], inputs.length[None], method="encode")
    cross = apply(enc, method="cross_kv")
    blank = apply(enc.replace(out=jnp.zeros_like(enc.out[:, :1])), method="cross_kv")
    logits = decode(plan.module, params, inputs, inputs.prev, cross, enc.valid)
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    D, L, S = plan.n_devices, inputs.prev.shape[0], enc.valid.shape[1]
    zeros = lambda *shape: jax.lax.with_sharding_constraint(jnp.zeros((D, *shape), jnp.float32), plan.per_device)
    return EncoderState(params, inputs, log_p, cross, blank, enc.valid, zeros(L, S), zeros(S))


@functools.partial(jax.jit, static_argnames=("plan",))
def step(state: EncoderState, i: jax.Array, *, plan: EncoderPlan) -> EncoderState:
    """Adds ``plan.batch`` masks (numbers i*batch ...) to the sums; each device evaluates 1/D of them."""
    _traces["step"] += 1
    local = plan.batch // plan.n_devices

    def body(params, inputs, log_p, cross, blank, enc_valid, num, den, i):
        g = i * plan.batch + jax.lax.axis_index(AXIS) * local + jnp.arange(local)
        valid = (g < inputs.n_masks).astype(jnp.float32)
        S = enc_valid.shape[1]
        keep = jax.vmap(frame_keep, (None, 0, None, None))(inputs.key, g, S, inputs.p)  # (B, S')
        _local_batch["step"] = keep.shape

        def logits(k):
            kept = k.astype(bool)[None, :, None, None]
            perturbed = jax.tree_util.tree_map(lambda h, z: jnp.where(kept, h, z), cross, blank)
            return decode(plan.module, params, inputs, inputs.prev, perturbed, enc_valid)

        lq = jax.nn.log_softmax(jax.vmap(logits)(keep).astype(jnp.float32), axis=-1)
        r = impact(plan.scorer, log_p, lq, inputs.target)
        r = jnp.where(jnp.arange(r.shape[-1]) < inputs.n_tokens, r, 0.0) * valid[:, None]
        # Padding frames are never attended to: they get no occlusion weight (and a 0 in the map).
        occluded = (1.0 - keep) * enc_valid.astype(jnp.float32) * valid[:, None]
        d_num, d_den = prefix_sums(occluded, r)  # the same contraction as per prefix position: (L, S'), (S',)
        return num + d_num[None], den + d_den[None]

    num, den = jax.shard_map(body, mesh=plan.mesh,
                             in_specs=(P(), P(), P(), P(), P(), P(), P(AXIS), P(AXIS), P()),
                             out_specs=(P(AXIS), P(AXIS)))(
        state.params, state.inputs, state.log_p, state.cross, state.blank, state.enc_valid,
        state.num, state.den, i)
    return state.replace(num=num, den=den)


@functools.partial(jax.jit, static_argnames=("plan",))
def finalize(state: EncoderState, *, plan: EncoderPlan) -> tuple[jax.Array, jax.Array]:
    """Reduces the devices' sums once: the (L, S') map (0 on padding and on never-occluded frames)
    and the encoder's valid length ()."""
    _traces["finalize"] += 1
    return ratio(state.num.sum(0), state.den.sum(0)), state.enc_valid[0].sum()


def run(state: EncoderState, plan: EncoderPlan, n_masks: int,
        progress: Callable[[int], None] | None = None) -> tuple[jax.Array, jax.Array]:
    """All steps of ``n_masks`` masks, then ``finalize``; ``progress(n)`` is told each step's masks once
    the device has finished it (as ``core.sweep.run``)."""
    queue = StepQueue(progress)
    for i in range(-(-n_masks // plan.batch)):
        state = step(state, np.int32(i), plan=plan)
        queue.push(state.den, min(plan.batch, n_masks - i * plan.batch))
    queue.drain()
    return finalize(state, plan=plan)
