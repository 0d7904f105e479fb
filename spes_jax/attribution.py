"""The SPES sweep engine: masks -> model -> scores -> accumulated maps, on the device.

Per utterance the host supplies features, the hypothesis and the segment labels. Each compiled step
then derives a batch of masks from (seed, utterance, level, index), runs the teacher-forced model
under ``vmap``, scores every token with KL (or the probability drop) in float32, and adds the scores
into per-segment sums (levels x segments x tokens). Nothing per mask returns to the host; the sums are
scattered to (K, T, C) maps once at the end (Eq. 3). The prefix sweep reuses the unperturbed encoder
output and cross-attention keys/values. The mask batch is sharded over a 1-D device mesh with
``NamedSharding``; each device keeps partial sums that are reduced once per utterance.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from . import perturbation
from .config import SPESConfig
from .errors import SpesError
from .explanation import Explanation
from .models import S2TModel
from .pipeline import SpeechToTextModel, bucket
from .scoring import impact
from .segmentation import Segmentation, prefetch, segment
from .text import EOS, PAD

MIN_FRAMES = 16  # below this the encoder sees fewer than 4 frames: no meaningful map over time
TOKEN_BUCKET = 16
SEGMENT_BUCKET = 256


@flax.struct.dataclass
class SweepInputs:
    """Everything a step needs about one utterance (replicated on every device).

    features (T, C); labels (n_levels, T, C) int32 with 0 on padding; prev/target (L,) int32;
    log_p (L, V) float32 unperturbed log-probabilities; key: the utterance's PRNG key.
    """

    features: jax.Array
    length: jax.Array
    labels: jax.Array
    prev: jax.Array
    target: jax.Array
    n_tokens: jax.Array
    log_p: jax.Array
    key: jax.Array
    p_spec: jax.Array
    p_tok: jax.Array
    per_level: jax.Array
    n_token_masks: jax.Array
    channel_mean: jax.Array
    channel_std: jax.Array


@flax.struct.dataclass
class Sums:
    """Per-device partial sums of Eq. 3: numerator and denominator, leading axis = device."""

    num: jax.Array
    den: jax.Array


@dataclass(frozen=True)
class EngineOptions:
    """How the sweep is computed (never what it computes, except ``accumulate`` for continuous masks).

    masks: "device" samples masks inside the compiled step; "host" samples the same masks on the CPU
    and transfers full (B, T, C) masks every step (the reference's way, kept for comparison).
    accumulate: "segments" sums per segment (K x n_segments per level); "features" sums per (t, c).
    reuse_encoder: the prefix sweep reuses the unperturbed encoder output (else re-runs it per mask).
    """

    masks: str = "device"
    accumulate: str = "segments"
    reuse_encoder: bool = True


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


# Eq. 3 as pure functions: S = sum_i r_i (1 - M_i) / sum_i (1 - M_i), 0 where never perturbed.
# The sums keep a leading device axis (the batch is split as (devices, per-device)) so every device
# adds only its own masks; the partial sums are reduced once, in the map functions.

def segment_sums(keep: jax.Array, level: jax.Array, r: jax.Array, valid: jax.Array, n_levels: int,
                 n_devices: int = 1) -> tuple[jax.Array, jax.Array]:
    """keep (B, S) segment bits, level (B,), r (B, K) scores, valid (B,) ->
    numerator (D, n_levels, S, K) and denominator (D, n_levels, S)."""
    D = n_devices
    occluded = ((1.0 - keep) * valid[:, None]).reshape(D, -1, keep.shape[-1])
    onehot = jax.nn.one_hot(level, n_levels).reshape(D, -1, n_levels)
    r = (r * valid[:, None]).reshape(D, -1, r.shape[-1])
    return jnp.einsum("dbl,dbs,dbk->dlsk", onehot, occluded, r), jnp.einsum("dbl,dbs->dls", onehot, occluded)


def feature_sums(weights: jax.Array, r: jax.Array, valid: jax.Array, n_devices: int = 1
                 ) -> tuple[jax.Array, jax.Array]:
    """weights (B, T, C) perturbation amounts (1 - mask), r (B, K) -> (D, K, T, C) and (D, T, C)."""
    D = n_devices
    w = (weights * valid[:, None, None]).reshape(D, -1, *weights.shape[1:])
    r = (r * valid[:, None]).reshape(D, -1, r.shape[-1])
    return jnp.einsum("dbtc,dbk->dktc", w, r), w.sum(axis=1)


def prefix_sums(keep: jax.Array, r: jax.Array, valid: jax.Array, n_devices: int = 1
                ) -> tuple[jax.Array, jax.Array]:
    """keep (B, L) prefix bits, r (B, K) -> numerator (D, K, L) and denominator (D, L)."""
    D = n_devices
    occluded = ((1.0 - keep) * valid[:, None]).reshape(D, -1, keep.shape[-1])
    r = (r * valid[:, None]).reshape(D, -1, r.shape[-1])
    return jnp.einsum("dbj,dbk->dkj", occluded, r), occluded.sum(axis=1)


def ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def spectrogram_map(num: jax.Array, den: jax.Array, labels: jax.Array) -> jax.Array:
    """Segment sums num (L, S, K), den (L, S) and labels (L, T, C) -> (K, T, C) maps: a feature's
    sums are those of its segment at every level."""
    num_tc = sum(num[l][labels[l]] for l in range(labels.shape[0]))
    den_tc = sum(den[l][labels[l]] for l in range(labels.shape[0]))
    return ratio(num_tc, den_tc[..., None]).transpose(2, 0, 1)


def prefix_map(num: jax.Array, den: jax.Array) -> jax.Array:
    """num (K, L), den (L,) -> (K, L) causal map (0 where position j > token k)."""
    K, L = num.shape
    return jnp.where(jnp.tril(jnp.ones((K, L), bool)), ratio(num, den), 0.0)


class SweepEngine:
    """Compiled SPES sweeps for one model, configuration and device set; reuse it across utterances."""

    def __init__(self, model: SpeechToTextModel, cfg: SPESConfig, devices: Sequence[jax.Device] | None = None,
                 options: EngineOptions = EngineOptions()):
        self.model, self.cfg, self.options = model, cfg, options
        self.module: S2TModel = model.module
        devices = list(devices or jax.devices())
        self.n_devices = len(devices)
        self.mesh = Mesh(np.array(devices), ("masks",))
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P("masks"))
        self.batch = _round_up(cfg.batch_size, self.n_devices)
        self.token_batch = _round_up(cfg.token_batch_size, self.n_devices)
        dtype = jnp.bfloat16 if cfg.precision == "bfloat16" else jnp.float32
        self.dtype = dtype
        self.params = jax.device_put(
            jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), model.params), self.replicated)
        # Bubble Noise masks are continuous, so they can only be accumulated per feature.
        self.accumulate = "features" if cfg.perturbation == "bubble" else options.accumulate
        sums = self.sharded
        self._original = jax.jit(self._original_impl)
        self._spec_device = jax.jit(self._spec_device_impl, out_shardings=sums, donate_argnums=(2,),
                                   static_argnums=(4,))
        self._spec_host = jax.jit(self._spec_host_impl, out_shardings=sums, donate_argnums=(2,))
        self._prefix = jax.jit(self._prefix_impl, out_shardings=sums, donate_argnums=(3,))
        self._prefix_host = jax.jit(self._prefix_host_impl, out_shardings=sums, donate_argnums=(3,))
        self._spec_map = jax.jit(self._spec_map_impl)
        self._host_keep = jax.jit(self._keep_bits, static_argnums=(3,))  # run on CPU-placed inputs

    # ----------------------------------------------------------------------------- model calls
    def _logits(self, params, inp: SweepInputs, features: jax.Array) -> jax.Array:
        """Teacher-forced logits (L, V) of one (T, C) input."""
        logits, _ = self.module.apply({"params": params}, features[None], inp.length[None], inp.prev[None])
        return logits[0]

    def _scores(self, log_q: jax.Array, inp: SweepInputs) -> jax.Array:
        """(B, L, V) perturbed log-probs -> (B, L) impact, 0 on padded token positions."""
        r = impact(self.cfg.scorer, inp.log_p, log_q, inp.target)
        return jnp.where(jnp.arange(r.shape[-1]) < inp.n_tokens, r, 0.0)

    def _original_impl(self, params, inp: SweepInputs) -> tuple[jax.Array, tuple]:
        enc = self.module.apply({"params": params}, inp.features[None], inp.length[None],
                                method=S2TModel.encode)
        cross = self.module.apply({"params": params}, enc, method=S2TModel.cross_kv)
        logits = self.module.apply({"params": params}, inp.prev[None], cross, enc.valid,
                                   method=S2TModel.decode)[0]
        return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), (cross, enc.valid)

    # ----------------------------------------------------------------------------- spectrogram sweep
    def _coords(self, step: jax.Array, batch: int, inp: SweepInputs, n_levels: int):
        g = step * batch + jnp.arange(batch)
        level = g // inp.per_level
        valid = level < n_levels
        return jnp.minimum(level, n_levels - 1), g % inp.per_level, valid

    def _keep_bits(self, key, level, index, n_slots, p):
        return jax.vmap(perturbation.segment_keep, (None, 0, 0, None, None))(key, level, index, n_slots, p)

    def _accumulate(self, sums: Sums, keep, masks, level, r, valid, n_levels: int) -> Sums:
        if self.accumulate == "segments":
            num, den = segment_sums(keep, level, r, valid, n_levels, self.n_devices)
        else:
            num, den = feature_sums(1.0 - masks, r, valid, self.n_devices)
        return Sums(sums.num + num, sums.den + den)

    def _perturbed_scores(self, params, inp: SweepInputs, perturbed: jax.Array) -> jax.Array:
        logits = jax.vmap(lambda x: self._logits(params, inp, x))(perturbed.astype(self.dtype))
        return self._scores(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), inp)

    def _spec_device_impl(self, params, inp: SweepInputs, sums: Sums, step: jax.Array, slots: int) -> Sums:
        n_levels = inp.labels.shape[0]
        level, index, valid = self._coords(step, self.batch, inp, n_levels)
        if self.cfg.perturbation == "bubble":
            T, C = inp.features.shape
            sigma_t = self.cfg.bubble_width_s * 100 / 2.3548  # full width at half maximum -> sigma
            sigma_c = self.cfg.bubble_height_mel / 2.3548
            max_bubbles = max(1, math.ceil(self.cfg.bubbles_per_second * T / 100))
            reveal = jax.vmap(lambda i: perturbation.bubble_mask(
                inp.key, i, inp.length, (T, C), max_bubbles, self.cfg.bubbles_per_second / 100,
                sigma_t, sigma_c))(index)
            noise = jax.vmap(lambda i: perturbation.bubble_noise(
                inp.key, i, inp.channel_mean, inp.channel_std, (T, C)))(index)
            perturbed = reveal * inp.features[None] + (1.0 - reveal) * noise
            r = self._perturbed_scores(params, inp, perturbed)
            return self._accumulate(sums, None, reveal, level, r, valid, n_levels)
        keep = self._keep_bits(inp.key, level, index, slots, inp.p_spec)
        masks = jax.vmap(lambda kb, l: kb[inp.labels[l]])(keep, level)
        r = self._perturbed_scores(params, inp, inp.features[None] * masks)
        return self._accumulate(sums, keep, masks, level, r, valid, n_levels)

    def _spec_host_impl(self, params, inp: SweepInputs, sums: Sums, keep, masks, level, valid) -> Sums:
        r = self._perturbed_scores(params, inp, inp.features[None] * masks)
        return self._accumulate(sums, keep, masks, level, r, valid, inp.labels.shape[0])

    def _spec_map_impl(self, sums: Sums, labels: jax.Array) -> jax.Array:
        num, den = sums.num.sum(axis=0), sums.den.sum(axis=0)
        if self.accumulate == "segments":
            return spectrogram_map(num, den, labels)
        return ratio(num, den)

    # ----------------------------------------------------------------------------- prefix sweep
    def _prefix_scores(self, params, inp: SweepInputs, cross, enc_valid, keep) -> jax.Array:
        def decode(k, c, v):
            logits = self.module.apply({"params": params}, inp.prev[None], c, v, k[None], method=S2TModel.decode)
            return logits[0]

        if self.options.reuse_encoder:
            logits = jax.vmap(lambda k: decode(k, cross, enc_valid))(keep)
        else:  # what a plain forward does: encode again for every mask (the input is batched with it)
            def full(k, x):
                enc = self.module.apply({"params": params}, x[None], inp.length[None], method=S2TModel.encode)
                return decode(k, self.module.apply({"params": params}, enc, method=S2TModel.cross_kv), enc.valid)

            feats = jnp.broadcast_to(inp.features, (keep.shape[0],) + inp.features.shape)
            logits = jax.vmap(full)(keep, feats)
        return self._scores(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), inp)

    def _prefix_accumulate(self, sums: Sums, keep, r, valid) -> Sums:
        num, den = prefix_sums(keep, r, valid, self.n_devices)
        return Sums(sums.num + num, sums.den + den)

    def _prefix_impl(self, params, inp: SweepInputs, extra, sums: Sums, step: jax.Array) -> Sums:
        cross, enc_valid = extra
        g = step * self.token_batch + jnp.arange(self.token_batch)
        valid = g < inp.n_token_masks
        keep = jax.vmap(perturbation.prefix_keep, (None, 0, None, None))(inp.key, g, inp.prev.shape[0], inp.p_tok)
        r = self._prefix_scores(params, inp, cross, enc_valid, keep)
        return self._prefix_accumulate(sums, keep, r, valid)

    def _prefix_host_impl(self, params, inp: SweepInputs, extra, sums: Sums, keep, valid) -> Sums:
        cross, enc_valid = extra
        r = self._prefix_scores(params, inp, cross, enc_valid, keep)
        return self._prefix_accumulate(sums, keep, r, valid)

    # ----------------------------------------------------------------------------- driver
    def inputs(self, features: np.ndarray, tokens: Sequence[int], seg: Segmentation, utt_id: str) -> SweepInputs:
        """Pads one utterance to its buckets and places it on every device."""
        T, C = features.shape
        Tb = bucket(T)
        K = len(tokens)
        Lb = _round_up(K, TOKEN_BUCKET)
        labels = np.zeros((seg.labels.shape[0], Tb, C), np.int32)
        labels[:, :T] = seg.labels
        feats = np.zeros((Tb, C), np.float32)
        feats[:T] = features
        prev = np.full(Lb, PAD, np.int32)
        prev[:K] = [EOS] + list(tokens[:-1])
        target = np.full(Lb, PAD, np.int32)
        target[:K] = tokens
        cfg = self.cfg
        inp = SweepInputs(
            features=jnp.asarray(feats, self.dtype), length=jnp.int32(T), labels=jnp.asarray(labels),
            prev=jnp.asarray(prev), target=jnp.asarray(target), n_tokens=jnp.int32(K),
            log_p=jnp.zeros((Lb, self.model.cfg.vocab_size), jnp.float32),
            key=perturbation.utterance_key(cfg.seed, utt_id), p_spec=jnp.float32(cfg.p_spec),
            p_tok=jnp.float32(cfg.p_tok), per_level=jnp.int32(max(cfg.masks_per_level, 1)),
            n_token_masks=jnp.int32(cfg.n_token_masks),
            channel_mean=jnp.asarray(features.mean(0)), channel_std=jnp.asarray(features.std(0)))
        return jax.device_put(inp, self.replicated)

    def _zeros(self, shape) -> Sums:
        D = self.n_devices
        z = lambda s: jax.device_put(jnp.zeros((D, *s), jnp.float32), self.sharded)
        return Sums(z(shape[0]), z(shape[1]))

    def n_spectrogram_masks(self) -> int:
        return self.cfg.masks_per_level * self.cfg.n_levels

    def spectrogram_steps(self) -> int:
        return -(-self.n_spectrogram_masks() // self.batch)

    def prefix_steps(self) -> int:
        return -(-self.cfg.n_token_masks // self.token_batch)

    def sweep(self, inp: SweepInputs, n_segments: int, keep_fn: Callable | None = None,
              token_keep_fn: Callable | None = None, progress: Callable[[int], None] | None = None
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Runs both sweeps for one utterance.

        keep_fn(level, index) -> (B, S) keep bits and token_keep_fn(index) -> (B, L) replace the
        sampler (used to replay the reference's own masks). Returns the (Lb, T, C) spectrogram map,
        the (Lb, Lb) causal prefix map and the (Lb, V) unperturbed log-probabilities.
        """
        log_p, extra = self._original(self.params, inp)
        inp = inp.replace(log_p=log_p)
        n_levels, Tb, C = inp.labels.shape
        Lb = inp.prev.shape[0]
        slots = _round_up(n_segments + 1, SEGMENT_BUCKET)
        if self.accumulate == "segments":
            sums = self._zeros(((n_levels, slots, Lb), (n_levels, slots)))
        else:
            sums = self._zeros(((Lb, Tb, C), (Tb, C)))
        labels = np.asarray(inp.labels) if (keep_fn or self.options.masks == "host") else None
        n_spec = self.n_spectrogram_masks()
        if self.cfg.n_masks:
            for step in range(self.spectrogram_steps()):
                if keep_fn is None and self.options.masks == "device":
                    sums = self._spec_device(self.params, inp, sums, jnp.int32(step), slots)
                else:
                    sums = self._spec_host(self.params, inp, sums, *self._host_batch(inp, labels, step, slots,
                                                                                      keep_fn))
                if progress:
                    progress(min(self.batch, n_spec - step * self.batch))
        spec = self._spec_map(sums, inp.labels)
        prefix = jnp.zeros((Lb, Lb), jnp.float32)
        if self.cfg.n_token_masks:
            tsums = self._zeros(((Lb, Lb), (Lb,)))
            for step in range(self.prefix_steps()):
                if token_keep_fn is None:
                    tsums = self._prefix(self.params, inp, extra, tsums, jnp.int32(step))
                else:
                    g = step * self.token_batch + np.arange(self.token_batch)
                    keep = jax.device_put(token_keep_fn(g), self.sharded)
                    valid = jax.device_put(g < self.cfg.n_token_masks, self.sharded)
                    tsums = self._prefix_host(self.params, inp, extra, tsums, keep, valid)
                if progress:
                    progress(min(self.token_batch, self.cfg.n_token_masks - step * self.token_batch))
            prefix = prefix_map(tsums.num.sum(0), tsums.den.sum(0))
        return spec, prefix, log_p

    def _host_batch(self, inp: SweepInputs, labels: np.ndarray, step: int, slots: int, keep_fn):
        """Keep bits and full (B, T, C) masks built on the host for one step."""
        per_level = int(inp.per_level)
        g = step * self.batch + np.arange(self.batch)
        level = np.minimum(g // per_level, labels.shape[0] - 1)
        index = g % per_level
        valid = g // per_level < labels.shape[0]
        if keep_fn is None:
            cpu = jax.devices("cpu")[0]
            args = jax.device_put((inp.key, level, index, np.float32(self.cfg.p_spec)), cpu)
            keep = np.asarray(self._host_keep(*args[:3], slots, args[3]))
        else:
            keep = np.asarray(keep_fn(level, index), np.float32)
            keep = np.pad(keep, ((0, 0), (0, slots - keep.shape[1])), constant_values=1.0)
        masks = np.take_along_axis(keep[:, None, :], labels[level].reshape(len(g), 1, -1), axis=2)
        masks = masks.reshape(len(g), *labels.shape[1:])
        put = lambda x: jax.device_put(x, self.sharded)
        return put(keep), put(masks), put(level.astype(np.int32)), put(valid)



def _check_length(features: np.ndarray, utt_id: str) -> None:
    # NaN/inf are already rejected by model.features.
    if features.shape[0] < MIN_FRAMES:
        raise SpesError(f"{utt_id}: audio too short to explain: {features.shape[0]} frames "
                        f"({features.shape[0] / 100:.2f} s); need at least {MIN_FRAMES} frames")


def _utt_id(audio, i: int) -> str:
    if isinstance(audio, (str, os.PathLike)):
        return os.path.splitext(os.path.basename(os.fspath(audio)))[0]
    return str(i)


def explain(model: SpeechToTextModel, audio, config: SPESConfig | None = None, *, ids: Sequence[str] | None = None,
            targets: Sequence[Sequence[int]] | None = None, devices: Sequence[jax.Device] | None = None,
            progress: bool = False, engine: SweepEngine | None = None):
    """SPES explanations of the model's own hypotheses.

    audio: a WAV path, a waveform, a raw (T, C) fbank, or a list of these. The hypothesis of each
    input is the model's beam search output (beam 5, no-repeat-ngram 5) unless ``targets`` gives
    token ids (ending with </s>). Returns an ``Explanation`` (or a list for a list input).
    """
    cfg = config or SPESConfig.asr()
    single = not isinstance(audio, (list, tuple))
    audios = [audio] if single else list(audio)
    if not audios:
        raise SpesError("nothing to explain")
    ids = list(ids) if ids is not None else [_utt_id(a, i) for i, a in enumerate(audios)]
    if len(set(ids)) != len(ids):
        raise SpesError("utterance ids must be unique (two inputs share a file name?)")
    features = [model.features(a) for a in audios]
    for f, u in zip(features, ids):
        _check_length(f, u)
    if targets is None:
        hyps = [h[0] for h in model.decode(features)]
        targets = [list(h.tokens) for h in hyps]
    engine = engine or SweepEngine(model, cfg, devices)
    bar = None
    if progress:
        from tqdm import tqdm

        total = len(audios) * (engine.n_spectrogram_masks() + cfg.n_token_masks)
        bar = tqdm(total=total, unit="mask", desc="SPES", dynamic_ncols=True)
    results = []
    segmentations = prefetch(lambda f: segment(f, cfg), features)
    for utt_id, feats, tokens, seg in zip(ids, features, targets, segmentations):
        K, T = len(tokens), feats.shape[0]
        inp = engine.inputs(feats, tokens, seg, utt_id)
        spec, prefix, _ = engine.sweep(inp, int(seg.n_segments.max()), progress=bar.update if bar else None)
        spec, prefix = jax.device_get((spec, prefix))
        pieces = model.dictionary.pieces(tokens)
        results.append(Explanation(
            id=utt_id, tokens=pieces, spectrogram_saliency=np.asarray(spec[:K, :T], np.float32),
            prefix_saliency=np.asarray(prefix[:K, :K], np.float32), prefix_tokens=["</s>"] + pieces[:-1],
            text=model.tokenizer.decode(tokens), n_masks=cfg.masks_per_level * cfg.n_levels,
            n_token_masks=cfg.n_token_masks,
            meta={"requested_segments": list(seg.requested), "n_segments": [int(n) for n in seg.n_segments]}))
    if bar:
        bar.close()
    return results[0] if single else results
