"""The speech-to-text encoder-decoder as one Flax module with pure entry points."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..errors import SpesError
from .config import ModelConfig
from .conformer import ConformerEncoder
from .layers import Dense
from .outputs import EncoderOutput
from .transformer import CrossKV, Decoder, TransformerEncoder


class AuxiliaryCTC(nn.Module):
    """``conformer_joint_ctc``'s ``CtcDecoder``: a linear CTC layer on the final encoder states."""

    vocab_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, enc: EncoderOutput) -> jax.Array:
        """Returns (B, S, V) float32 logits, zero on pad positions (as the reference fills them)."""
        logits = Dense(self.vocab_size, dtype=self.dtype, name="fc")(enc.out).astype(jnp.float32)
        return jnp.where(enc.valid[..., None], logits, 0.0)


class S2TModel(nn.Module):
    """FBK ``conformer`` / ``conformer_joint_ctc`` / ``s2t_transformer_fbk`` and fairseq's
    ``s2t_transformer``. Call its methods through ``apply(..., method=...)``.

    ``dtype`` is the compute dtype (flax's policy): parameters stay float32 and are cast where they
    are used; LayerNorm / BatchNorm statistics, softmaxes and the output logits are float32.
    """

    cfg: ModelConfig
    dtype: Any = jnp.float32

    def setup(self):
        enc = ConformerEncoder if self.cfg.is_conformer else TransformerEncoder
        self.encoder = enc(self.cfg, self.dtype)
        self.decoder = Decoder(self.cfg, self.dtype)
        if self.cfg.auxiliary_ctc_vocab_size:
            self.auxiliary_decoder = AuxiliaryCTC(self.cfg.auxiliary_ctc_vocab_size, self.dtype)

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

    def init_cache(self, batch: int, length: int) -> CrossKV:
        """The empty self-attention cache ``decode_step`` fills: per layer (keys, values) zeros
        (batch, length, H, D/H) in the compute dtype."""
        return self.decoder.init_cache(batch, length)

    def auxiliary_ctc(self, enc: EncoderOutput) -> jax.Array:
        """CTC logits (B, S, V) of the auxiliary decoder on the final encoder output
        (``conformer_joint_ctc`` only; its vocabulary is the target dictionary with <ctc_blank>)."""
        if not self.cfg.auxiliary_ctc_vocab_size:
            raise SpesError(f"this {self.cfg.arch} model has no auxiliary CTC decoder")
        return self.auxiliary_decoder(enc)

    def __call__(self, features: jax.Array, lengths: jax.Array, prev_tokens: jax.Array,
                 token_mask: jax.Array | None = None) -> tuple[jax.Array, EncoderOutput]:
        """Full forward: (B, L, V) float32 logits and the encoder output."""
        enc = self.encode(features, lengths)
        return self.decode(prev_tokens, self.cross_kv(enc), enc.valid, token_mask), enc


def init_params(cfg: ModelConfig, seed: int = 0, frames: int = 64, tokens: int = 4) -> dict:
    """Random parameters for ``cfg`` (tests, benchmarks, training from scratch)."""
    feats = jnp.zeros((1, frames, cfg.input_feat_per_channel), jnp.float32)
    lengths = jnp.array([frames])
    prev = jnp.full((1, tokens), cfg.eos, jnp.int32)
    return S2TModel(cfg).init(jax.random.PRNGKey(seed), feats, lengths, prev, method=_every_part)["params"]


def _every_part(model: S2TModel, features, lengths, prev_tokens):
    """Runs every submodule once, so that ``init`` creates all parameters."""
    logits, enc = model(features, lengths, prev_tokens)
    if model.cfg.auxiliary_ctc_vocab_size:
        model.auxiliary_ctc(enc)
    return logits
