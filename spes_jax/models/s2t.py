"""The speech-to-text encoder-decoder as one Flax module with pure entry points."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .config import ModelConfig
from .conformer import ConformerEncoder
from .outputs import EncoderOutput
from .transformer import CrossKV, Decoder, TransformerEncoder


class S2TModel(nn.Module):
    """FBK ``conformer`` / ``s2t_transformer_fbk``. Call its methods through ``apply(..., method=...)``.

    ``dtype`` is the compute dtype (flax's policy): parameters stay float32 and are cast where they
    are used; LayerNorm / BatchNorm statistics, softmaxes and the output logits are float32.
    """

    cfg: ModelConfig
    dtype: Any = jnp.float32

    def setup(self):
        enc = ConformerEncoder if self.cfg.arch == "conformer" else TransformerEncoder
        self.encoder = enc(self.cfg, self.dtype)
        self.decoder = Decoder(self.cfg, self.dtype)

    def encode(self, features: jax.Array, lengths: jax.Array) -> EncoderOutput:
        """features: (B, T, C); lengths: (B,) valid frames."""
        return self.encoder(features, lengths)

    def cross_kv(self, enc: EncoderOutput) -> CrossKV:
        return self.decoder.cross_kv(enc.out)

    def decode(self, prev_tokens: jax.Array, cross: CrossKV, enc_valid: jax.Array,
               token_mask: jax.Array | None = None) -> jax.Array:
        """Teacher-forced logits (B, L, V) float32 from precomputed cross-attention keys/values."""
        return self.decoder(prev_tokens, cross, enc_valid, token_mask)

    def decode_step(self, tokens: jax.Array, step: jax.Array, cache: CrossKV, cross: CrossKV,
                    enc_valid: jax.Array) -> tuple[jax.Array, CrossKV]:
        return self.decoder.step(tokens, step, cache, cross, enc_valid)

    def __call__(self, features: jax.Array, lengths: jax.Array, prev_tokens: jax.Array,
                 token_mask: jax.Array | None = None) -> tuple[jax.Array, EncoderOutput]:
        """Full forward: (B, L, V) float32 logits and the encoder output."""
        enc = self.encode(features, lengths)
        return self.decode(prev_tokens, self.cross_kv(enc), enc.valid, token_mask), enc


def init_params(cfg: ModelConfig, seed: int = 0, frames: int = 64, tokens: int = 4) -> dict:
    """Random parameters for ``cfg`` (tests, benchmarks, training from scratch)."""
    model = S2TModel(cfg)
    feats = jnp.zeros((1, frames, cfg.input_feat_per_channel), jnp.float32)
    lengths = jnp.array([frames])
    prev = jnp.full((1, tokens), cfg.eos, jnp.int32)
    return model.init(jax.random.PRNGKey(seed), feats, lengths, prev)["params"]
