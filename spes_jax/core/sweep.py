"""The SPES sweep as pure, compiled functions: ``init`` -> ``spectrogram_step``/``prefix_step`` -> ``finalize``.

Every function is jitted once at module level with a hashable ``SweepPlan`` (the model module, the
mask sources, the scorer, the batch sizes and the device mesh) as its static argument, so any two
sweeps with equal plans and equal padded shapes share one compilation, whoever calls them.

Per step, each device of the plan's 1-D mesh (axis ``"masks"``) derives its own share of the batch
(mask numbers offset by its axis index), runs the teacher-forced model under ``vmap``, scores every
token in float32 and adds the scores into its own partial sums of Eq. 3 (state fields with a leading
device axis, one row per device). Nothing per mask leaves the device; ``finalize`` reduces the rows
once and scatters the per-segment sums to (K, T, C) maps.
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

from ..config import SPESConfig
from ..errors import SpesError
from .._shapes import SEGMENT_BUCKET, TOKEN_BUCKET, bucket, round_up
from ..text import EOS, PAD
from .pacing import StepQueue
from .perturbation import BubbleMasks, OrthogonalMasks, SegmentMasks, TokenMasks, utterance_key
from .scoring import impact
from .segmentation import Segmentation

AXIS = "masks"

# How often each compiled function has been traced, and the per-device mask batch it was traced
# for: what tests and benchmarks read to check that work is neither recompiled nor replicated.
_traces: collections.Counter = collections.Counter()
_local_batch: dict[str, tuple[int, ...]] = {}


def trace_counts() -> dict[str, int]:
    """Number of traces (= compilations) of each sweep function so far in this process."""
    return dict(_traces)


def local_batch_shapes() -> dict[str, tuple[int, ...]]:
    """Shape of the perturbed batch one device evaluated, per step function, at its last trace."""
    return dict(_local_batch)


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


@flax.struct.dataclass
class Sums:
    """Partial sums of Eq. 3, one row per device: num (D, ...) and den (D, ...).

    The SPES sweep adds a half axis, (D, 2, ...): masks with even and odd index go to separate halves,
    two independent estimates of the same map whose agreement tells how far the sweep is from
    convergence (``split_half_r``).
    """

    num: jax.Array
    den: jax.Array


@flax.struct.dataclass
class SweepState:
    """Everything a sweep carries between steps.

    log_p: (L, V) float32 unperturbed log-probabilities; cross / enc_valid: the unperturbed encoder's
    cross-attention keys/values and (1, S') validity, reused by every prefix mask.
    spectrogram: per segment (D, 2, n_levels, S, L) / (D, 2, n_levels, S), or per feature
    (D, 2, L, T, C) / (D, 2, T, C). prefix: (D, 2, L, L) / (D, 2, L).
    """

    params: Any
    inputs: SweepInputs
    log_p: jax.Array
    cross: Any
    enc_valid: jax.Array
    spectrogram: Sums
    prefix: Sums


class MeshPlan:
    """The shardings of a plan with a 1-D ``mesh`` over the "masks" axis (for the sweeps' plans)."""

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

    module: the model; spectrogram_masks / token_masks: mask sources (``core.perturbation``);
    scorer: "kl" or "prob_diff"; batch / token_batch: masks per step over all devices (a multiple of
    the mesh size); mesh: 1-D device mesh with axis "masks".
    """

    module: Any
    mesh: Mesh
    spectrogram_masks: Any = SegmentMasks()
    token_masks: Any = TokenMasks()
    scorer: str = "kl"
    batch: int = 64
    token_batch: int = 256


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
    """The plan of ``config`` on ``devices`` (default: all): ``module`` (any model family's Flax module,
    ``docs/architecture.md``) computing in the configured precision, batches rounded up to a multiple
    of the device count."""
    devices = list(devices or jax.devices())
    module = module.clone(dtype=jnp.bfloat16 if config.precision == "bfloat16" else jnp.float32)
    n = len(devices)
    if spectrogram_masks is None:
        if config.perturbation == "bubble":
            spectrogram_masks = BubbleMasks(config.bubbles_per_second, config.bubble_width_s, config.bubble_height_mel)
        else:
            spectrogram_masks = OrthogonalMasks() if config.sampler == "orthogonal" else SegmentMasks()
    return SweepPlan(module=module, mesh=Mesh(np.array(devices), (AXIS,)),
                     spectrogram_masks=spectrogram_masks, token_masks=token_masks or TokenMasks(),
                     scorer=config.scorer, batch=round_up(config.batch_size, n),
                     token_batch=round_up(config.token_batch_size, n))


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
    """occluded (B, L) prefix weights, r (B, K) -> numerator (K, L) and denominator (L,)."""
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


# ------------------------------------------------------------------------------------ compiled steps

def _trace(name: str) -> None:
    _traces[name] += 1


def _scores(plan: SweepPlan, inputs: SweepInputs, log_p: jax.Array, logits: jax.Array) -> jax.Array:
    """(B, L, V) perturbed logits -> (B, L) float32 impact, 0 on padded token positions."""
    r = impact(plan.scorer, log_p, jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), inputs.target)
    return jnp.where(jnp.arange(r.shape[-1]) < inputs.n_tokens, r, 0.0)


def encode(module, params, features: jax.Array, length: jax.Array) -> tuple[Any, jax.Array]:
    """(T, C) features of one input -> the decoder's cross-attention keys/values and (1, S') validity."""
    enc = module.apply({"params": params}, features[None], length[None], method="encode")
    return module.apply({"params": params}, enc, method="cross_kv"), enc.valid


def decode(module, params, inputs: SweepInputs, prev: jax.Array, cross, enc_valid: jax.Array,
           keep: jax.Array | None = None) -> jax.Array:
    """Teacher-forced logits (L, V) of decoder input ``prev`` (L,) after the prompt's fixed tokens.

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


@functools.partial(jax.jit, static_argnames=("plan",))
def init(params, inputs: SweepInputs, *, plan: SweepPlan) -> SweepState:
    """Unperturbed pass (log-probabilities, cross-attention keys/values) and zero sums."""
    _trace("init")
    cross, enc_valid = encode(plan.module, params, inputs.features, inputs.length)
    logits = decode(plan.module, params, inputs, inputs.prev, cross, enc_valid)
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    D, (n_levels, T, C), L = plan.n_devices, inputs.labels.shape, inputs.prev.shape[0]
    zeros = lambda *shape: jax.lax.with_sharding_constraint(jnp.zeros((D, 2, *shape), jnp.float32), plan.per_device)
    if plan.spectrogram_masks.per_segment:
        spec = Sums(zeros(n_levels, inputs.n_slots, L), zeros(n_levels, inputs.n_slots))
    else:
        spec = Sums(zeros(L, T, C), zeros(T, C))
    return SweepState(params, inputs, log_p, cross, enc_valid, spec, Sums(zeros(L, L), zeros(L)))


def _mask_numbers(step: jax.Array, batch: int, local: int) -> jax.Array:
    """The global numbers of this device's masks in ``step``: (local,) int32."""
    return step * batch + jax.lax.axis_index(AXIS) * local + jnp.arange(local)


def _by_half(sums: Callable, occluded: jax.Array, index: jax.Array, *args) -> tuple[jax.Array, jax.Array]:
    """``sums(occluded, *args)`` split by the parity of each mask's index: outputs get a leading axis of 2."""
    halves = jax.nn.one_hot(index % 2, 2, dtype=occluded.dtype).T  # (2, B)
    return jax.vmap(lambda w: sums(occluded * w.reshape((-1,) + (1,) * (occluded.ndim - 1)), *args))(halves)


def spectrogram_step(state: SweepState, step: jax.Array, *, plan: SweepPlan) -> SweepState:
    """Adds ``plan.batch`` spectrogram masks (numbers step*batch ...) to the sums; each device does 1/D."""
    return state.replace(spectrogram=_spectrogram_sums(state, step, plan=plan))


def prefix_step(state: SweepState, step: jax.Array, *, plan: SweepPlan) -> SweepState:
    """Adds ``plan.token_batch`` prefix masks; the unperturbed encoder output is reused by all of them."""
    return state.replace(prefix=_prefix_sums(state, step, plan=plan))


# The compiled steps return only the new sums: a compiled function copies every input it returns
# (the parameters, 464 MB at paper size, on every step), unless the input is donated.

@functools.partial(jax.jit, static_argnames=("plan",))
def _spectrogram_sums(state: SweepState, step: jax.Array, *, plan: SweepPlan) -> Sums:
    _trace("spectrogram_step")
    source = plan.spectrogram_masks
    local = plan.batch // plan.n_devices

    def body(params, inputs, log_p, num, den, step):
        g = _mask_numbers(step, plan.batch, local)
        valid = (g < inputs.n_masks).astype(jnp.float32)
        perturbed, occluded = jax.vmap(source, (None, 0))(inputs, g)
        _local_batch["spectrogram_step"] = perturbed.shape
        logits = jax.vmap(lambda x: decode(plan.module, params, inputs, inputs.prev,
                                           *encode(plan.module, params, x, inputs.length)))(perturbed)
        r = _scores(plan, inputs, log_p, logits) * valid[:, None]
        occluded = occluded * valid.reshape((-1,) + (1,) * (occluded.ndim - 1))
        level, index = inputs.coords(g)
        if source.per_segment:
            d_num, d_den = _by_half(segment_sums, occluded, index, level, r, inputs.labels.shape[0])
        else:
            d_num, d_den = _by_half(feature_sums, occluded, index, r)
        return num + d_num[None], den + d_den[None]

    num, den = jax.shard_map(body, mesh=plan.mesh, in_specs=(P(), P(), P(), P(AXIS), P(AXIS), P()),
                             out_specs=(P(AXIS), P(AXIS)))(
        state.params, state.inputs, state.log_p, state.spectrogram.num, state.spectrogram.den, step)
    return Sums(num, den)


@functools.partial(jax.jit, static_argnames=("plan",))
def _prefix_sums(state: SweepState, step: jax.Array, *, plan: SweepPlan) -> Sums:
    _trace("prefix_step")
    local = plan.token_batch // plan.n_devices

    def body(params, inputs, log_p, cross, enc_valid, num, den, step):
        g = _mask_numbers(step, plan.token_batch, local)
        valid = (g < inputs.n_token_masks).astype(jnp.float32)
        keep = jax.vmap(plan.token_masks, (None, 0))(inputs, g)
        _local_batch["prefix_step"] = keep.shape
        logits = jax.vmap(lambda k: decode(plan.module, params, inputs, inputs.prev, cross, enc_valid, k))(keep)
        r = _scores(plan, inputs, log_p, logits) * valid[:, None]
        d_num, d_den = _by_half(prefix_sums, (1.0 - keep) * valid[:, None], g, r)
        return num + d_num[None], den + d_den[None]

    num, den = jax.shard_map(body, mesh=plan.mesh, in_specs=(P(), P(), P(), P(), P(), P(AXIS), P(AXIS), P()),
                             out_specs=(P(AXIS), P(AXIS)))(
        state.params, state.inputs, state.log_p, state.cross, state.enc_valid, state.prefix.num,
        state.prefix.den, step)
    return Sums(num, den)


@functools.partial(jax.jit, static_argnames=("plan",))
def finalize(state: SweepState, *, plan: SweepPlan) -> tuple[jax.Array, jax.Array]:
    """Reduces the devices' sums once: (L, T, C) spectrogram maps and (L, L) causal prefix maps."""
    _trace("finalize")
    return _maps(state, plan, (0, 1))


def _maps(state: SweepState, plan: SweepPlan, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Spectrogram and prefix maps of the sums reduced over ``axes`` (device, half)."""
    num, den = state.spectrogram.num.sum(axes), state.spectrogram.den.sum(axes)
    if plan.spectrogram_masks.per_segment:
        labels = state.inputs.labels
        spec = (spectrogram_map(num, den, labels) if num.ndim == 3 else
                jax.vmap(spectrogram_map, (0, 0, None))(num, den, labels))
    else:
        spec = ratio(num, den[..., None, :, :])
    pre_num, pre_den = state.prefix.num.sum(axes), state.prefix.den.sum(axes)
    pre = prefix_map(pre_num, pre_den) if pre_num.ndim == 2 else jax.vmap(prefix_map)(pre_num, pre_den)
    return spec, pre


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
def split_half_r(state: SweepState, *, plan: SweepPlan) -> tuple[jax.Array, jax.Array]:
    """Online convergence estimate, on the device: ((L,), ()) estimated Pearson r of each token's
    spectrogram map, and of the whole causal prefix map, with the maps of infinitely many masks.

    The even- and odd-index masks give two independent half-budget maps; their correlation rho is
    the half sweep's reliability, and the Spearman-Brown formula 2 rho / (1 + rho) the full sweep's,
    whose square root is the expected correlation with the limit. Padding frames, tokens beyond K
    and non-causal prefix cells are left out; a map that is constant in both halves counts as 1.
    """
    _trace("split_half_r")
    inputs = state.inputs
    spec, pre = _maps(state, plan, (0,))  # (2, L, T, C), (2, L, L)
    _, L, T, C = spec.shape
    frames = (jnp.arange(T) < inputs.length)[:, None] * jnp.ones((1, C))
    r_spec = _spearman_brown(_pearson(spec[0].reshape(L, -1), spec[1].reshape(L, -1), frames.reshape(1, -1)))
    causal = jnp.tril(jnp.ones((L, L))) * (jnp.arange(L) < inputs.n_tokens)[:, None]
    r_pre = _spearman_brown(_pearson(pre[0].reshape(-1), pre[1].reshape(-1), causal.reshape(-1)))
    return r_spec, r_pre


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What ``run`` returns. spectrogram (L, T, C) and prefix (L, L) maps (device arrays); the masks
    actually evaluated (fewer than configured when ``until_r`` stopped early); the last online
    estimate of each token's spectrogram-map r (L,) and of the prefix map's r (), or None."""

    spectrogram: jax.Array
    prefix: jax.Array
    n_masks: int
    n_token_masks: int
    spectrogram_r: jax.Array | None = None
    prefix_r: jax.Array | None = None


def _checkpoints(n_steps: int, first: int) -> set[int]:
    """Step counts after which ``run`` checks convergence: from ``first`` on, every ~10 % more masks."""
    out, s = set(), max(1, first)
    while s < n_steps:
        out.add(s)
        s = max(s + 1, int(s * 1.1))
    return out


def run(state: SweepState, plan: SweepPlan, config: SPESConfig,
        progress: Callable[[int], None] | None = None) -> SweepResult:
    """All steps of ``config``'s mask counts, then ``finalize``. ``progress(n)`` is told the masks of
    each step once the device has finished it; at most a few steps are queued at a time (``StepQueue``).

    With ``config.until_r``, each part (spectrogram, prefix) stops once the split-half estimate says
    its map correlates with the limit at >= until_r (spectrogram: mean over the K tokens), checked
    after 1/32 of its budget and then every ~10 % more masks; one (L,) vector per check leaves the
    device, nothing per mask. The configured counts are then the maximum.
    """
    used = {}
    K = int(state.inputs.n_tokens)
    queue = StepQueue(progress)
    for kind, total, batch, step_fn in (("spectrogram", config.n_masks, plan.batch, spectrogram_step),
                                        ("prefix", config.n_token_masks, plan.token_batch, prefix_step)):
        n_steps = -(-total // batch)
        checks = _checkpoints(n_steps, -(-n_steps // 32)) if config.until_r is not None else set()
        done = n_steps
        for i in range(n_steps):
            state = step_fn(state, np.int32(i), plan=plan)
            queue.push(getattr(state, kind).den, min(batch, total - i * batch))
            if i + 1 in checks:
                r_spec, r_pre = jax.device_get(split_half_r(state, plan=plan))
                r = float(r_spec[:K].mean()) if kind == "spectrogram" else float(r_pre)
                if r >= config.until_r:
                    done = i + 1
                    break
        used[kind] = min(total, done * batch)
    queue.drain()
    spec, pre = finalize(state, plan=plan)
    r_spec, r_pre = split_half_r(state, plan=plan) if config.until_r is not None else (None, None)
    return SweepResult(spec, pre, used["spectrogram"], used["prefix"], r_spec, r_pre)
