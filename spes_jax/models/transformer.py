"""fairseq Transformer layers: FBK's ``s2t_transformer_fbk`` encoder and the Transformer decoder."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from .config import ModelConfig
from .ctc import ctc_head, run_layers
from .layers import (Dense, MultiheadAttention, Subsampler, activation, fairseq_sinusoids, layer_norm,
                     length_mask, make_positions)
from .outputs import EncoderOutput


class EncoderLayer(nn.Module):
    """fairseq ``TransformerEncoderLayer`` (pre- or post-norm; Whisper's: pre-norm, GELU, no key bias)."""

    dim: int
    heads: int
    ffn_dim: int
    normalize_before: bool
    dtype: Any = jnp.float32
    activation_fn: str = "relu"
    key_bias: bool = True

    def setup(self):
        self.self_attn = MultiheadAttention(self.dim, self.heads, self.dtype, self.key_bias)
        self.self_attn_layer_norm = layer_norm("self_attn_layer_norm", self.dtype)
        self.fc1 = Dense(self.ffn_dim, dtype=self.dtype)
        self.fc2 = Dense(self.dim, dtype=self.dtype)
        self.final_layer_norm = layer_norm("final_layer_norm", self.dtype)

    def __call__(self, x: jax.Array, valid: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        """x: (B, T, D); valid: (B, T) bool (``lengths`` is implied by it)."""
        allowed = valid[:, None, None, :]
        h = self.self_attn_layer_norm(x) if self.normalize_before else x
        x = x + self.self_attn(h, h, allowed)
        if not self.normalize_before:
            x = self.self_attn_layer_norm(x)
        h = self.final_layer_norm(x) if self.normalize_before else x
        x = x + self.fc2(activation(self.activation_fn)(self.fc1(h)))
        return x if self.normalize_before else self.final_layer_norm(x)


class TransformerEncoder(nn.Module):
    """FBK ``s2t_transformer_fbk`` encoder: subsampler, sinusoidal positions, Transformer layers, CTC."""

    cfg: ModelConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.cfg
        self.subsample = Subsampler(c.conv_channels, c.encoder_embed_dim, c.conv_kernel_sizes, self.dtype)
        self.transformer_layers = [
            EncoderLayer(c.encoder_embed_dim, c.encoder_attention_heads, c.encoder_ffn_embed_dim,
                         c.encoder_normalize_before, self.dtype) for _ in range(c.encoder_layers)]
        if c.encoder_normalize_before:
            self.layer_norm = layer_norm("layer_norm", self.dtype)
        if c.ctc_encoder_layer:
            self.ctc_fc = ctc_head(c)

    def __call__(self, features: jax.Array, lengths: jax.Array) -> EncoderOutput:
        """features: (B, T, C) CMVN fbank; lengths: (B,) frames."""
        c = self.cfg
        x, lengths = self.subsample(features, lengths)
        positions = make_positions(length_mask(lengths, x.shape[1]), c.pad)
        x = c.embed_scale * x + fairseq_sinusoids(positions, c.encoder_embed_dim, c.pad).astype(x.dtype)
        head = self.ctc_fc if c.ctc_encoder_layer else None
        x, valid, ctc_logits, states, _ = run_layers(self.transformer_layers, x, lengths,
                                                     c.ctc_encoder_layer, head)
        if c.encoder_normalize_before:
            x = self.layer_norm(x)
        return EncoderOutput(x, valid, ctc_logits, lengths, states)


class DecoderLayer(nn.Module):
    """fairseq ``TransformerDecoderLayer``: self-attention, encoder attention, FFN (Whisper's: pre-norm,
    GELU, no key bias)."""

    dim: int
    heads: int
    ffn_dim: int
    normalize_before: bool
    activation_fn: str
    dtype: Any = jnp.float32
    key_bias: bool = True

    def setup(self):
        self.self_attn = MultiheadAttention(self.dim, self.heads, self.dtype, self.key_bias)
        self.self_attn_layer_norm = layer_norm("self_attn_layer_norm", self.dtype)
        self.encoder_attn = MultiheadAttention(self.dim, self.heads, self.dtype, self.key_bias)
        self.encoder_attn_layer_norm = layer_norm("encoder_attn_layer_norm", self.dtype)
        self.fc1 = Dense(self.ffn_dim, dtype=self.dtype)
        self.fc2 = Dense(self.dim, dtype=self.dtype)
        self.final_layer_norm = layer_norm("final_layer_norm", self.dtype)

    def _block(self, x, norm, fn):
        if self.normalize_before:
            return x + fn(norm(x))
        return norm(x + fn(x))

    def __call__(self, x: jax.Array, self_kv: tuple[jax.Array, jax.Array], self_allowed: jax.Array,
                 cross_kv: tuple[jax.Array, jax.Array], cross_allowed: jax.Array) -> jax.Array:
        """x: (B, L, D) queries; self_kv: keys/values of this layer's input (B, S, H, D/H)."""
        x = self._block(x, self.self_attn_layer_norm,
                        lambda h: self.self_attn.attend(h, *self_kv, self_allowed))
        x = self._block(x, self.encoder_attn_layer_norm,
                        lambda h: self.encoder_attn.attend(h, *cross_kv, cross_allowed))
        act = activation(self.activation_fn)
        return self._block(x, self.final_layer_norm, lambda h: self.fc2(act(self.fc1(h))))

    def self_kv(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys/values this layer's self-attention derives from its input x: (B, L, D)."""
        return self.self_attn.kv(self.self_attn_layer_norm(x) if self.normalize_before else x)


# Cross-attention keys/values of every decoder layer, each (B, S, H, D/H).
CrossKV = Sequence[tuple[jax.Array, jax.Array]]


def cached_step(layers: Sequence[DecoderLayer], x: jax.Array, step: jax.Array, cache: CrossKV,
                cross: CrossKV, enc_valid: jax.Array) -> tuple[jax.Array, CrossKV]:
    """Runs decoder layers on one position with a fixed-size self-attention cache.

    x: (N, 1, D) the embedded input at position ``step``; cache: per layer (keys, values) of shape
    (N, L_max, H, D/H) holding positions < step. Returns (N, 1, D) and the cache with ``step`` written.
    """
    L_max = cache[0][0].shape[1]
    self_allowed = (jnp.arange(L_max) <= step)[None, None, None, :]
    cross_allowed = enc_valid[:, None, None, :]
    new_cache = []
    for layer, (k_cache, v_cache), kv in zip(layers, cache, cross):
        k, v = layer.self_kv(x)
        k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), step, axis=1)
        v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), step, axis=1)
        x = layer(x, (k_cache, v_cache), self_allowed, kv, cross_allowed)
        new_cache.append((k_cache, v_cache))
    return x, tuple(new_cache)


class Decoder(nn.Module):
    """fairseq ``TransformerDecoder``: scaled embeddings + sinusoids, layers, final norm, projection."""

    cfg: ModelConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.cfg
        self.embed_tokens = nn.Embed(c.vocab_size, c.decoder_embed_dim, dtype=self.dtype)
        self.layers = [DecoderLayer(c.decoder_embed_dim, c.decoder_attention_heads, c.decoder_ffn_embed_dim,
                                    c.decoder_normalize_before, c.decoder_activation_fn, self.dtype)
                       for _ in range(c.decoder_layers)]
        # The final norm and the output projection compute in float32 whatever the compute dtype:
        # SPES scores are KL divergences between next-token distributions, and bfloat16 logits
        # (8-bit mantissa) would add rounding noise of the order of the scores of weak masks.
        if c.decoder_normalize_before:
            self.layer_norm = layer_norm("layer_norm", jnp.float32)
        if not c.share_decoder_input_output_embed:
            self.output_projection = Dense(c.vocab_size, use_bias=False)

    def embed(self, tokens: jax.Array, positions: jax.Array, token_mask: jax.Array | None = None) -> jax.Array:
        """tokens, positions: (B, L) ints; token_mask: optional (B, L) multiplier of the scaled token
        embeddings, applied before positions are added (SPES prefix occlusion). Returns (B, L, D)."""
        c = self.cfg
        x = c.decoder_embed_scale * self.embed_tokens(tokens)
        if token_mask is not None:
            x = x * token_mask[..., None].astype(x.dtype)
        return x + fairseq_sinusoids(positions, c.decoder_embed_dim, c.pad).astype(x.dtype)

    def cross_kv(self, enc_out: jax.Array) -> CrossKV:
        """Encoder-attention keys/values of every layer, computed once per encoder output (B, S, D)."""
        return tuple(layer.encoder_attn.kv(enc_out) for layer in self.layers)

    def init_cache(self, batch: int, length: int) -> CrossKV:
        """An empty self-attention cache for ``step``: per layer (keys, values) zeros of shape
        (batch, length, H, D/H) in the compute dtype."""
        c = self.cfg
        shape = (batch, length, c.decoder_attention_heads, c.decoder_embed_dim // c.decoder_attention_heads)
        return tuple((jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype)) for _ in range(c.decoder_layers))

    def project(self, x: jax.Array) -> jax.Array:
        """Final norm and output projection: (B, L, D) -> (B, L, V) float32 logits."""
        x = x.astype(jnp.float32)
        if self.cfg.decoder_normalize_before:
            x = self.layer_norm(x)
        if self.cfg.share_decoder_input_output_embed:
            return x @ self.embed_tokens.embedding.T
        return self.output_projection(x)

    def __call__(self, prev_tokens: jax.Array, cross: CrossKV, enc_valid: jax.Array,
                 token_mask: jax.Array | None = None) -> jax.Array:
        """Teacher-forced logits.

        prev_tokens: (B, L) right-padded with <pad>; cross: from ``cross_kv``; enc_valid: (B, S) bool.
        Returns (B, L, V) float32 logits.
        """
        c = self.cfg
        not_pad = prev_tokens != c.pad
        x = self.embed(prev_tokens, make_positions(not_pad, c.pad), token_mask)
        L = prev_tokens.shape[1]
        causal = jnp.tril(jnp.ones((L, L), bool))
        self_allowed = causal[None, None] & not_pad[:, None, None, :]
        cross_allowed = enc_valid[:, None, None, :]
        for layer, kv in zip(self.layers, cross):
            x = layer(x, layer.self_kv(x), self_allowed, kv, cross_allowed)
        return self.project(x)

    def step(self, tokens: jax.Array, step: jax.Array, cache: CrossKV, cross: CrossKV,
             enc_valid: jax.Array) -> tuple[jax.Array, CrossKV]:
        """One incremental decoding step with a fixed-size self-attention cache.

        tokens: (N,) the tokens at position ``step`` (0 = the leading </s>); cache: per layer
        (keys, values) of shape (N, L_max, H, D/H) holding positions < step.
        Returns (N, V) float32 logits and the cache with position ``step`` written.
        """
        c = self.cfg
        positions = jnp.full(tokens.shape + (1,), c.pad + 1, jnp.int32) + step
        x, cache = cached_step(self.layers, self.embed(tokens[:, None], positions), step, cache, cross,
                               enc_valid)
        return self.project(x)[:, 0], cache
