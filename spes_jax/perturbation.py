"""On-device mask samplers. Mask ``i`` of level ``l`` is a pure function of (seed, utterance, l, i).

All samplers take an utterance key (``utterance_key``) and integer mask coordinates, so a sweep gives
the same masks whatever its batch size, device count or order of evaluation.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp

# fold_in tag of the prefix-token masks, distinct from every spectrogram level.
PREFIX_LEVEL = 0x70726566


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
