"""On-device masks. Mask ``i`` of level ``l`` is a pure function of (seed, utterance, l, i).

All samplers take an utterance key (``utterance_key``) and integer mask coordinates, so a sweep gives
the same masks whatever its batch size, device count or order of evaluation. The mask sources at the
end of this module wrap them (and recorded masks) as the values the sweep is parameterised by.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from ..audio import FRAME_SHIFT_S

# fold_in tags of the prefix-token masks and of the orthogonal design's blocks, distinct from every
# spectrogram level.
PREFIX_LEVEL = 0x70726566
DESIGN_BLOCK = 0x6F727468


def utterance_key(seed: int, utt_id: str) -> jax.Array:
    """The root key of one utterance: the seed folded with a stable 32-bit hash of its id."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(utt_id.encode("utf-8")) & 0x7FFFFFFF)


def mask_key(key: jax.Array, level: jax.Array, index: jax.Array) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(key, level), index)


def segment_keep(key: jax.Array, level: jax.Array, index: jax.Array, n_slots: int, p: jax.Array) -> jax.Array:
    """Keep bits of every segment for one mask: (n_slots,) float, slot 0 (padding) always kept.

    A segment is occluded (0) with probability p: keep = U[0, 1) >= p, as in the reference.
    """
    u = jax.random.uniform(mask_key(key, level, index), (n_slots,))
    return jnp.where(jnp.arange(n_slots) == 0, 1.0, (u >= p).astype(jnp.float32))


def _permute_bits(x: jax.Array, key: jax.Array, k: int) -> jax.Array:
    """A pseudo-random bijection of [0, 2**k) (uint32 in, uint32 out), one per key.

    Three rounds of (multiply by an odd constant, xor a constant, xor-shift right), each a bijection
    modulo 2**k: multiplication carries low bits up, the shift carries high bits down.
    """
    mask = jnp.uint32((1 << k) - 1)
    mult, add = jax.random.bits(key, (2, 3), jnp.uint32)
    shift = jnp.uint32(max(1, (k + 1) // 2))
    for i in range(3):
        x = (x * (mult[i] | jnp.uint32(1))) & mask
        x = (x ^ add[i]) & mask
        x = x ^ (x >> shift)
    return x


def design_bits(n_slots: int) -> int:
    """k of the orthogonal design: the Hadamard order 2**k exceeds the slot count (a spare column)."""
    return max(1, int(n_slots).bit_length())


def orthogonal_keep(key: jax.Array, level: jax.Array, index: jax.Array, n_slots: int) -> jax.Array:
    """Keep bits (n_slots,) of mask ``index`` of ``level`` from a randomised Sylvester-Hadamard design.

    Masks come in blocks of n = 2**k (``design_bits``). In block b, mask row x and segment column
    c_s are pseudo-random bijections of the row number and the slot (fresh per block), and segment s
    is occluded when parity(x & c_s) xor f_s, f_s a fair random bit per block and segment. Over a full
    block every pair of segments is occluded together in exactly n/4 masks (an orthogonal array of
    strength 2), so one segment's effect does not leak into another's estimate. For any single mask,
    the f_s make the bits independent fair coins: the reference sampler's distribution at p = 0.5,
    hence the same Eq. 3 limit.
    """
    k = design_bits(n_slots)
    block, row = index // (1 << k), index % (1 << k)
    k_row, k_col, k_flip = jax.random.split(jax.random.fold_in(mask_key(key, level, block), DESIGN_BLOCK), 3)
    x = _permute_bits(row.astype(jnp.uint32), k_row, k)
    cols = _permute_bits(jnp.arange(n_slots + 1, dtype=jnp.uint32), k_col, k)
    cols = jnp.where(cols[:-1] == 0, cols[-1], cols[:-1])  # column 0 is constant: use the spare slot's
    flip = jax.random.bits(k_flip, (n_slots,), jnp.uint32) & jnp.uint32(1)
    occluded = (jax.lax.population_count(x & cols) & jnp.uint32(1)) ^ flip
    return jnp.where(jnp.arange(n_slots) == 0, 1.0, 1.0 - occluded.astype(jnp.float32))


def prefix_keep(key: jax.Array, index: jax.Array, n_tokens: int, p: jax.Array) -> jax.Array:
    """Keep bits of every prefix position for one token mask: (n_tokens,) float."""
    u = jax.random.uniform(mask_key(key, PREFIX_LEVEL, index), (n_tokens,))
    return (u >= p).astype(jnp.float32)


def bubble_mask(key: jax.Array, index: jax.Array, length: jax.Array, shape: tuple[int, int], max_bubbles: int,
                bubbles_per_frame: float, sigma_t: float, sigma_c: float) -> jax.Array:
    """Bubble Noise reveal mask (T, C) in [0, 1]: the maximum of Gaussian bubbles placed uniformly at
    random over the valid frames; 1 at a bubble centre (speech kept), near 0 far from every bubble."""
    T, C = shape
    k_t, k_c = jax.random.split(mask_key(key, 0, index))
    n = jnp.maximum(1, jnp.round(bubbles_per_frame * length)).astype(jnp.int32)
    centre_t = jax.random.uniform(k_t, (max_bubbles,)) * length
    centre_c = jax.random.uniform(k_c, (max_bubbles,)) * C
    dt = (jnp.arange(T)[None, :] - centre_t[:, None]) / sigma_t
    dc = (jnp.arange(C)[None, :] - centre_c[:, None]) / sigma_c
    g = jnp.exp(-0.5 * (dt[:, :, None] ** 2 + dc[:, None, :] ** 2))  # (n_bubbles, T, C)
    g = jnp.where((jnp.arange(max_bubbles) < n)[:, None, None], g, 0.0)
    return g.max(axis=0)


def bubble_noise(key: jax.Array, index: jax.Array, mean: jax.Array, std: jax.Array, shape) -> jax.Array:
    """Gaussian noise with the utterance's per-channel mean and standard deviation, (T, C)."""
    z = jax.random.normal(jax.random.fold_in(mask_key(key, 1, index), 1), shape)
    return mean + std * z


# --------------------------------------------------------------------------------------- mask sources
# A mask source is a hashable value (a frozen dataclass) that the sweep calls once per mask, under
# vmap, with the utterance's ``SweepInputs`` and the mask's global number g. Being hashable makes it
# part of the compiled step's identity: two sweeps with equal sources share one compilation.
# Spectrogram sources return (perturbed features (T, C), occlusion weights); ``per_segment`` says
# whether the weights are per segment of the mask's level, shape (S,), or per feature, (T, C).


def _occlude_segments(inputs, level: jax.Array, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keep bits (S,) of one level -> the masked (T, C) features (occluded cells become ``inputs.fill``)
    and the (S,) occlusion weights."""
    kept = keep[inputs.labels[level]]
    return inputs.features * kept + inputs.fill * (1.0 - kept), 1.0 - keep


@dataclass(frozen=True)
class SegmentMasks:
    """The reference's sampler: each segment of the mask's level occluded with probability p_spec."""

    per_segment: ClassVar[bool] = True

    def __call__(self, inputs, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        level, index = inputs.coords(g)
        return _occlude_segments(inputs, level, segment_keep(inputs.key, level, index, inputs.n_slots,
                                                             inputs.p_spec))


@dataclass(frozen=True)
class OrthogonalMasks:
    """Segments occluded by a randomised orthogonal design (``orthogonal_keep``); needs p_spec = 0.5.

    Each mask has the reference sampler's distribution, so Eq. 3 converges to the same maps; within a
    block of 2**k masks of a level the segments' occlusion patterns are exactly balanced and pairwise
    orthogonal, which removes the other segments' first-order effects from each segment's estimate.
    """

    per_segment: ClassVar[bool] = True

    def __call__(self, inputs, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        level, index = inputs.coords(g)
        return _occlude_segments(inputs, level, orthogonal_keep(inputs.key, level, index, inputs.n_slots))


@dataclass(frozen=True)
class ReplayedSegmentMasks:
    """Keep bits recorded elsewhere (e.g. the reference's own masks): ``inputs.replay["spectrogram"]``
    is (N, S), level-major: row ``level * per_level + index`` holds mask ``index`` of ``level``."""

    per_segment: ClassVar[bool] = True

    def __call__(self, inputs, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        recorded = inputs.replay["spectrogram"]
        level, index = inputs.coords(g)
        row = jnp.minimum(level * inputs.per_level + index, recorded.shape[0] - 1)
        return _occlude_segments(inputs, level, recorded[row])


@dataclass(frozen=True)
class BubbleMasks:
    """Bubble Noise: Gaussian bubbles reveal the speech, noise with the utterance's channel statistics
    replaces the rest. Continuous masks, so Eq. 3 is accumulated per feature."""

    per_second: float = 10.0
    width_s: float = 0.43
    height_mel: float = 31.0
    frames_per_second: float = 1.0 / FRAME_SHIFT_S

    per_segment: ClassVar[bool] = False

    def __call__(self, inputs, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        T, C = inputs.features.shape
        _, index = inputs.coords(g)
        fwhm = 2.3548  # full width at half maximum -> sigma
        max_bubbles = max(1, math.ceil(self.per_second * T / self.frames_per_second))
        reveal = bubble_mask(inputs.key, index, inputs.length, (T, C), max_bubbles,
                             self.per_second / self.frames_per_second,
                             self.width_s * self.frames_per_second / fwhm, self.height_mel / fwhm)
        noise = bubble_noise(inputs.key, index, inputs.channel_mean, inputs.channel_std, (T, C))
        return reveal * inputs.features + (1.0 - reveal) * noise, 1.0 - reveal


@dataclass(frozen=True)
class TokenMasks:
    """The reference's prefix sampler: each prefix position occluded with probability p_tok. (L,) keep."""

    def __call__(self, inputs, g: jax.Array) -> jax.Array:
        return prefix_keep(inputs.key, g, inputs.prev.shape[0], inputs.p_tok)


@dataclass(frozen=True)
class ReplayedTokenMasks:
    """Prefix keep bits recorded elsewhere: ``inputs.replay["prefix"]`` is (N, L), row g = mask g."""

    def __call__(self, inputs, g: jax.Array) -> jax.Array:
        recorded = inputs.replay["prefix"]
        return recorded[jnp.minimum(g, recorded.shape[0] - 1)]
