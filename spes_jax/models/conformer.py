"""FBK-fairseq ``conformer`` encoder (the "bug-free" variant: padding never changes a result)."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .config import ModelConfig
from .ctc import ctc_head, run_layers
from .layers import Dense, Subsampler, layer_norm, matmul
from .outputs import EncoderOutput


def interleaved_sinusoids(length: int, dim: int) -> jax.Array:
    """The Conformer's ``PositionalEncoding`` table: pe[p, 2i] = sin(p w_i), pe[p, 2i+1] = cos(p w_i).

    Returns (length, dim) float32, computed in float32 in the reference's operation order.
    """
    position = jnp.arange(length, dtype=jnp.float32)[:, None]
    div = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * -(math.log(10000.0) / dim))
    angles = position * div
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(length, dim)


def relative_shift(pos: jax.Array, lengths: jax.Array) -> jax.Array:
    """FBK's padding-aware Transformer-XL relative shift.

    For an utterance of valid length L, with S = pos scores against absolute positions 0..T-1:
    O[i, j] = S[i, L-1-(i-j)] for j <= i, O[i, i+1] = 0, O[i, j] = S[i+1, j-i-2] for j >= i+2, and 0
    outside the L x L block. Depending on L (not on the padded T) is what makes it batch independent.

    pos: (B, H, T, T); lengths: (B,). Returns (B, H, T, T).
    """
    T = pos.shape[-1]
    i = jnp.arange(T)[:, None]
    j = jnp.arange(T)[None, :]
    L = lengths[:, None, None]
    lower = j <= i
    upper = j >= i + 2
    col = jnp.clip(jnp.where(lower, L - 1 - i + j, j - i - 2), 0, T - 1)[:, None]  # (B, 1, T, T)
    same_row = jnp.take_along_axis(pos, col, axis=-1)
    next_row = jnp.take_along_axis(jnp.pad(pos[:, :, 1:], ((0, 0), (0, 0), (0, 1), (0, 0))), col, axis=-1)
    inside = (i < L) & (j < L)
    return jnp.where((lower & inside)[:, None], same_row, jnp.where((upper & inside)[:, None], next_row, 0))


class RelativeMultiHeadAttention(nn.Module):
    """Transformer-XL attention with content (u) and position (v) biases, scaled by sqrt(d_model)."""

    dim: int
    heads: int
    dtype: Any = jnp.float32

    def setup(self):
        dh = self.dim // self.heads
        self.u_bias = self.param("u_bias", nn.initializers.xavier_uniform(), (self.heads, dh))
        self.v_bias = self.param("v_bias", nn.initializers.xavier_uniform(), (self.heads, dh))
        self.query_proj = Dense(self.dim, dtype=self.dtype)
        self.key_proj = Dense(self.dim, dtype=self.dtype)
        self.value_proj = Dense(self.dim, dtype=self.dtype)
        self.pos_proj = Dense(self.dim, use_bias=False, dtype=self.dtype)
        self.out_proj = Dense(self.dim, dtype=self.dtype)

    def __call__(self, x: jax.Array, valid: jax.Array, lengths: jax.Array) -> jax.Array:
        """x: (B, T, D); valid: (B, T) bool; lengths: (B,)."""
        B, T, D = x.shape
        split = lambda y: y.reshape(*y.shape[:-1], self.heads, D // self.heads)
        q, k, v = split(self.query_proj(x)), split(self.key_proj(x)), split(self.value_proj(x))
        p = split(self.pos_proj(interleaved_sinusoids(T, D).astype(x.dtype)))
        content = matmul("bihd,bjhd->bhij", q + self.u_bias.astype(x.dtype), k, self.dtype)
        pos = matmul("bihd,jhd->bhij", q + self.v_bias.astype(x.dtype), p, self.dtype)
        scores = (content + relative_shift(pos, lengths)) / math.sqrt(D)
        pad = ~valid
        masked = (pad[:, :, None] | pad[:, None, :])[:, None]
        # The reference fills masked scores with -1e4 and zeroes masked probabilities afterwards.
        probs = jax.nn.softmax(jnp.where(masked, -1e4, scores), axis=-1)
        probs = jnp.where(masked, 0.0, probs)
        out = matmul("bhij,bjhd->bihd", probs, v, self.dtype).reshape(B, T, D)
        return self.out_proj(out)


class SelfAttentionModule(nn.Module):
    """``MultiHeadedSelfAttentionModule``: LayerNorm then relative-position attention."""

    dim: int
    heads: int
    dtype: Any = jnp.float32

    def setup(self):
        self.layer_norm = layer_norm("layer_norm", self.dtype)
        self.attention = RelativeMultiHeadAttention(self.dim, self.heads, self.dtype)

    def __call__(self, x, valid, lengths):
        return self.attention(self.layer_norm(x), valid, lengths)


class FeedForwardModule(nn.Module):
    """LayerNorm -> Linear(d, e*d) -> SiLU -> Linear(e*d, d)."""

    dim: int
    expansion: int
    dtype: Any = jnp.float32

    def setup(self):
        self.layernorm = layer_norm("layernorm", self.dtype)
        self.first_linear = Dense(self.dim * self.expansion, dtype=self.dtype)
        self.second_linear = Dense(self.dim, dtype=self.dtype)

    def __call__(self, x):
        return self.second_linear(nn.silu(self.first_linear(self.layernorm(x))))


class FrozenBatchNorm(nn.Module):
    """Inference BatchNorm1d with running statistics stored as parameters (eps 1e-5)."""

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,))
        bias = self.param("bias", nn.initializers.zeros, (d,))
        mean = self.param("mean", nn.initializers.zeros, (d,))
        var = self.param("var", nn.initializers.ones, (d,))
        inv = (scale * jax.lax.rsqrt(var + 1e-5)).astype(x.dtype)
        return x * inv + (bias - mean * scale * jax.lax.rsqrt(var + 1e-5)).astype(x.dtype)


class DepthwiseConv(nn.Module):
    """Depthwise 1-D convolution, zero padding, no bias; the kernel (k, 1, C) of a grouped ``nn.Conv``.

    A sum of k shifted, scaled copies of the input in float32, which XLA fuses into one loop: its
    grouped convolution runs ~15x slower on a CPU.
    """

    kernel_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, T, C) -> (B, T, C) (odd kernel_size)."""
        k, pad = self.kernel_size, (self.kernel_size - 1) // 2
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, 1, x.shape[-1]))[:, 0]
        x = jnp.pad(x.astype(jnp.float32), ((0, 0), (pad, pad), (0, 0)))
        n_out = x.shape[1] - k + 1
        out = x[:, :n_out] * kernel[0]
        for i in range(1, k):
            out = out + x[:, i:i + n_out] * kernel[i]
        return out.astype(self.dtype)


class ConvModule(nn.Module):
    """``ConformerConvModule``, pad frames zeroed after every step that could leak into them."""

    dim: int
    kernel_size: int
    expansion: int
    dtype: Any = jnp.float32

    def setup(self):
        self.layernorm = layer_norm("layernorm", self.dtype)
        self.first_pointwise_conv1d = Dense(self.dim * self.expansion, dtype=self.dtype)
        self.depthwise_conv1d = DepthwiseConv(self.kernel_size, self.dtype)
        self.batchnorm = FrozenBatchNorm()
        self.second_pointwise_conv1d = Dense(self.dim, dtype=self.dtype)

    def __call__(self, x, valid):
        keep = valid[..., None]
        x = nn.glu(self.first_pointwise_conv1d(self.layernorm(x)), axis=-1)
        x = jnp.where(keep, x, 0)
        x = jnp.where(keep, self.depthwise_conv1d(x), 0)
        x = jnp.where(keep, self.batchnorm(x), 0)
        return jnp.where(keep, self.second_pointwise_conv1d(nn.silu(x)), 0)


class ConformerLayer(nn.Module):
    """Macaron FFN, relative MHSA, convolution, FFN, final LayerNorm."""

    cfg: ModelConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.cfg
        d = c.encoder_embed_dim
        self.first_feed_forward = FeedForwardModule(d, c.feed_forward_expansion_factor, self.dtype)
        self.attention = SelfAttentionModule(d, c.encoder_attention_heads, self.dtype)
        self.conv_module = ConvModule(d, c.conformer_conv_kernel_size, c.conv_expansion_factor, self.dtype)
        self.second_feed_forward = FeedForwardModule(d, c.feed_forward_expansion_factor, self.dtype)
        self.layernorm = layer_norm("layernorm", self.dtype)

    def __call__(self, x, valid, lengths):
        half = 0.5 if self.cfg.conformer_half_step_residual else 1.0
        x = x + half * self.first_feed_forward(x)
        x = x + self.attention(x, valid, lengths)
        x = x + self.conv_module(x, valid)
        x = x + half * self.second_feed_forward(x)
        return self.layernorm(x)


class ConformerEncoder(nn.Module):
    """Subsampler (x sqrt(d)), Conformer layers, CTC head (and compression) at the configured layer."""

    cfg: ModelConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.cfg
        self.subsample = Subsampler(c.conv_channels, c.encoder_embed_dim, c.conv_kernel_sizes, self.dtype)
        self.conformer_layers = [ConformerLayer(c, self.dtype) for _ in range(c.encoder_layers)]
        if c.ctc_encoder_layer:
            self.ctc_fc = ctc_head(c)

    def __call__(self, features: jax.Array, lengths: jax.Array) -> EncoderOutput:
        """features: (B, T, C) CMVN fbank; lengths: (B,) frames."""
        c = self.cfg
        x, lengths = self.subsample(features, lengths)
        head = self.ctc_fc if c.ctc_encoder_layer else None
        x, valid, ctc_logits, states, _ = run_layers(self.conformer_layers, c.embed_scale * x, lengths,
                                                     c.ctc_encoder_layer, head)
        return EncoderOutput(x, valid, ctc_logits, lengths, states)
