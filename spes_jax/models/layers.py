"""Building blocks shared by the encoders and the decoder.

Parameter names mirror the fairseq module names (``q_proj``, ``layer_norm`` ...) so that the
converter maps a state_dict key to a Flax path by rule, not by table.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# Large finite negative for masked logits: exp() underflows to 0 in float32 and bfloat16, and a
# fully masked row stays finite.
NEG_INF = -1e9


def layer_norm(name: str, dtype: Any = jnp.float32) -> nn.LayerNorm:
    # Two-pass variance, eps 1e-5: torch.nn.LayerNorm's numerics. Statistics are reduced in float32
    # whatever the compute dtype; the output is in the compute dtype.
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=dtype, name=name)


def matmul(equation: str, a: jax.Array, b: jax.Array, dtype: Any) -> jax.Array:
    """``jnp.einsum`` of a and b cast to the compute ``dtype``, accumulated and returned in float32.

    Every dot of the models goes through here. A bfloat16 dot asked for a bfloat16 result runs on
    XLA:CPU as a float32 dot between converts (no faster than float32); with float32 accumulation
    it runs at the bfloat16 rate of the hardware (avx512_bf16, AMX, GPU/TPU matrix units). In float32
    this is a plain einsum.
    """
    return jnp.einsum(equation, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


class Dense(nn.Module):
    """``nn.Dense`` (same parameters and initialisers) with ``matmul``'s precision policy: operands in
    ``dtype``, float32 accumulation and bias, output in ``dtype``."""

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (..., D_in) -> (..., features)."""
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        y = matmul("...i,io->...o", x, kernel, self.dtype)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y.astype(self.dtype)


class Conv1d(nn.Module):
    """``nn.Conv`` over (B, T, C) with symmetric zero padding (same kernel (k, C_in, C_out) and bias),
    computed as one ``matmul`` over the k strided taps side by side (im2col): XLA:CPU runs a
    strided 1-D convolution at a fraction of its matmul rate, and the matmul takes bfloat16."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, T, C_in) -> (B, (T + 2 padding - kernel_size) // stride + 1, features)."""
        k, s = self.kernel_size, self.stride
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x = jnp.pad(x, ((0, 0), (self.padding, self.padding), (0, 0)))
        n_out = (x.shape[1] - k) // s + 1
        taps = jnp.concatenate([x[:, i:i + s * (n_out - 1) + 1:s] for i in range(k)], axis=-1)
        y = matmul("bti,io->bto", taps, kernel.reshape(-1, self.features), self.dtype) + bias
        return y.astype(self.dtype)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    return {
        "relu": nn.relu,
        "gelu": lambda x: nn.gelu(x, approximate=False),
        "swish": nn.silu,
        "silu": nn.silu,
        "tanh": jnp.tanh,
        "linear": lambda x: x,
    }[name]


def fairseq_sinusoids(positions: jax.Array, dim: int, padding_idx: int) -> jax.Array:
    """fairseq ``SinusoidalPositionalEmbedding``: [sin | cos] halves, zero row at ``padding_idx``.

    Args:
      positions: (..., L) integer positions (``padding_idx + 1`` is the first real position).
    Returns:
      (..., L, dim) float32.
    """
    half = dim // 2
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(10000.0) / (half - 1)))
    angles = positions.astype(jnp.float32)[..., None] * freqs
    emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, 1)])
    return jnp.where((positions == padding_idx)[..., None], 0.0, emb)


def make_positions(valid: jax.Array, padding_idx: int) -> jax.Array:
    """fairseq ``make_positions``: ``padding_idx + cumsum(valid)`` on valid items, ``padding_idx`` on pads.

    Args:
      valid: (B, L) bool.
    Returns:
      (B, L) int32.
    """
    v = valid.astype(jnp.int32)
    return jnp.cumsum(v, axis=-1) * v + padding_idx


def length_mask(lengths: jax.Array, size: int) -> jax.Array:
    """(B,) lengths -> (B, size) bool, True on valid items."""
    return jnp.arange(size)[None, :] < lengths[:, None]


class Subsampler(nn.Module):
    """fairseq ``Conv1dSubsampler`` with FBK's padding fix: stride-2 Conv1d + GLU per layer, pads zeroed."""

    conv_channels: int
    out_dim: int
    kernel_sizes: tuple[int, ...]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: (B, T, C) features; lengths: (B,). Returns (B, T', out_dim) and (B,) T'."""
        x = jnp.where(length_mask(lengths, x.shape[1])[..., None], x, 0)
        n = len(self.kernel_sizes)
        for i, k in enumerate(self.kernel_sizes):
            out = self.conv_channels if i < n - 1 else 2 * self.out_dim
            x = Conv1d(out, k, 2, k // 2, self.dtype, name=f"conv_layers_{i}")(x)
            x = nn.glu(x, axis=-1)
            lengths = (lengths - 1) // 2 + 1
            x = jnp.where(length_mask(lengths, x.shape[1])[..., None], x, 0)
        return x, lengths


# Scores of one block of queries (per batch row and head): small enough to stay in the CPU's caches
# between the two dots. 4 MiB ran Whisper's encoder fastest on a 2-core EPYC (3 blocks of 500 queries
# at 1,500 frames; 2 MiB: 0.9x, one block per head: 0.6x).
_TILE_BYTES = 4 << 20


def _tiled(queries: int, keys: int) -> bool:
    """Whether attention over (queries, keys) runs tile by tile: on the CPU, when the scores of one
    head would not fit in a tile (Whisper's encoder: 1,500 x 1,500). GPUs and TPUs fuse the dense form."""
    return jax.default_backend() == "cpu" and queries * keys * 4 > _TILE_BYTES


def tiled_attention(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array, dtype: Any) -> jax.Array:
    """Softmax attention one (batch row, head, block of queries) at a time; the same function as the
    dense form up to float rounding.

    The dense form writes the (B, H, Q, S) scores to memory and reads them back for the softmax and
    the second dot; on XLA:CPU that ran Whisper's encoder attention at 0.3 of the matmul rate, while
    a block's scores stay in cache. The softmax is normalised after the second dot ((c, d) divisions
    instead of (c, S)).

    q: (B, Q, H, d) scaled queries; k, v: (B, S, H, d); allowed: bool, broadcastable to (B, 1, Q, S)
    (key padding or a causal mask; one mask for all heads). Returns (B, Q, H, d) float32.
    """
    B, Q, H, d = q.shape
    S = k.shape[1]
    blocks = math.ceil(Q * S * 4 / _TILE_BYTES)
    rows = math.ceil(Q / blocks)
    pad = blocks * rows - Q
    allowed = jnp.broadcast_to(allowed, (B, 1, allowed.shape[2], S))[:, 0]        # (B, 1 or Q, S)
    if allowed.shape[1] == 1:
        allowed = jnp.broadcast_to(allowed[:, None], (B, blocks, 1, S))
    else:
        allowed = jnp.pad(allowed, ((0, 0), (0, pad), (0, 0)), constant_values=True).reshape(B, blocks, rows, S)
    q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(B, blocks, rows, H, d).transpose(0, 3, 1, 2, 4)
    k, v = (t.transpose(0, 2, 1, 3).astype(dtype) for t in (k, v))

    def block(q_t: jax.Array, k_h: jax.Array, v_h: jax.Array, allowed_t: jax.Array) -> jax.Array:
        scores = jnp.where(allowed_t, jnp.dot(q_t.astype(dtype), k_h.T, preferred_element_type=jnp.float32),
                           NEG_INF)
        e = jnp.exp(scores - scores.max(-1, keepdims=True))
        return jnp.dot(e.astype(dtype), v_h, preferred_element_type=jnp.float32) / e.sum(-1, keepdims=True)

    def head(q_h: jax.Array, k_h: jax.Array, v_h: jax.Array, allowed_b: jax.Array) -> jax.Array:
        return jax.lax.map(lambda t: block(t[0], k_h, v_h, t[1]), (q_h, allowed_b))

    def row(q_b: jax.Array, k_b: jax.Array, v_b: jax.Array, allowed_b: jax.Array) -> jax.Array:
        return jax.lax.map(lambda h: head(h[0], h[1], h[2], allowed_b), (q_b, k_b, v_b))

    out = jax.lax.map(lambda b: row(*b), (q, k, v, allowed))              # (B, H, blocks, rows, d)
    return out.reshape(B, H, blocks * rows, d)[:, :, :Q].transpose(0, 2, 1, 3)


class MultiheadAttention(nn.Module):
    """fairseq ``MultiheadAttention`` (q scaled by d_head^-0.5, biases on all projections; Whisper's
    attention is the same with ``key_bias=False``)."""

    dim: int
    heads: int
    dtype: Any = jnp.float32
    key_bias: bool = True

    def setup(self):
        self.q_proj = Dense(self.dim, dtype=self.dtype)
        self.k_proj = Dense(self.dim, use_bias=self.key_bias, dtype=self.dtype)
        self.v_proj = Dense(self.dim, dtype=self.dtype)
        self.out_proj = Dense(self.dim, dtype=self.dtype)

    def _split(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:-1], self.heads, self.dim // self.heads)

    def kv(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """y: (B, S, D) -> keys and values, each (B, S, H, D/H)."""
        return self._split(self.k_proj(y)), self._split(self.v_proj(y))

    def attend(self, x: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array) -> jax.Array:
        """x: (B, Q, D) queries; k, v: (B, S, H, D/H); allowed: bool, broadcastable to (B, H, Q, S).
        Sows the float32 weights (B, H, Q, S) as intermediates/attention_weights."""
        q = self._split(self.q_proj(x)) * (self.dim // self.heads) ** -0.5
        if _tiled(q.shape[1], k.shape[1]) and not self.is_mutable_collection("intermediates"):
            out = tiled_attention(q, k, v, allowed, self.dtype)
            return self.out_proj(out.reshape(*x.shape[:-1], self.dim))
        scores = matmul("bqhd,bshd->bhqs", q, k, self.dtype)
        probs = jax.nn.softmax(jnp.where(allowed, scores, NEG_INF), axis=-1)
        # Recorded only when the caller makes "intermediates" mutable (cross_attention); otherwise
        # a no-op, so the default outputs and numerics are unchanged.
        self.sow("intermediates", "attention_weights", probs)
        out = matmul("bhqs,bshd->bqhd", probs, v, self.dtype)
        return self.out_proj(out.reshape(*x.shape[:-1], self.dim))

    def __call__(self, x: jax.Array, y: jax.Array, allowed: jax.Array) -> jax.Array:
        k, v = self.kv(y)
        return self.attend(x, k, v, allowed)
