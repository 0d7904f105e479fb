"""OpenAI Whisper as one Flax module, loaded from Hugging Face checkpoints.

Every published size (tiny .. large-v3, turbo) is this architecture with another ``WhisperConfig``.
Parameter names mirror the Hugging Face module names (``encoder.layers.0.self_attn.q_proj`` ->
``encoder/layers_0/self_attn/q_proj``), so checkpoint names map to Flax paths by rule, not by table.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ..errors import SpesError
from .layers import Conv1d, activation, fairseq_sinusoids, layer_norm
from .outputs import EncoderOutput
from .transformer import CrossKV, DecoderLayer, EncoderLayer, cached_step


@dataclasses.dataclass(frozen=True)
class WhisperConfig:
    """Sizes and special ids. ``pad`` is the id ``prev`` is right-padded with; Whisper masks nothing by
    it (causal attention keeps right padding out of real positions), so it is ``eos``."""

    num_mel_bins: int
    d_model: int
    encoder_layers: int
    encoder_attention_heads: int
    decoder_layers: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    vocab_size: int
    pad: int
    eos: int
    decoder_start_token_id: int
    max_source_positions: int = 1500
    max_target_positions: int = 448

    @classmethod
    def from_hf(cls, config: dict) -> WhisperConfig:
        """From a Hugging Face ``config.json`` dict (``WhisperForConditionalGeneration``)."""
        if not isinstance(config, dict):
            raise SpesError(f"Whisper config: expected a JSON object, got {type(config).__name__}")
        keys = {**{size: size for size in _SIZES}, **_IDS}
        problems = [f"missing {key}" for key in keys.values() if key not in config and key not in _DEFAULTED]
        problems += [f"{key}={config[key]!r} (expected an integer)" for key in keys.values()
                     if key in config and (not isinstance(config[key], int) or isinstance(config[key], bool))]
        problems += [f"{key}={config[key]!r} (expected {want!r})" for key, want in _FIXED.items()
                     if key in config and config[key] != want]
        if not problems:
            cfg = cls(pad=config["eos_token_id"], **{name: config[key] for name, key in keys.items() if key in config})
            problems = cfg._problems()
        if problems:
            raise SpesError("unsupported Whisper config.json: " + "; ".join(problems))
        return cfg

    def _problems(self) -> list[str]:
        sizes = [f"{size}={getattr(self, size)} (expected a positive integer)"
                 for size in _SIZES if getattr(self, size) < 1]
        if sizes:
            return sizes
        heads = [f"d_model {self.d_model} is not divisible by {key} {getattr(self, key)}"
                 for key in ("encoder_attention_heads", "decoder_attention_heads") if self.d_model % getattr(self, key)]
        return heads + [f"{key} {getattr(self, key)} is not a token id (vocab_size {self.vocab_size})"
                        for key in ("pad", "eos", "decoder_start_token_id")
                        if not 0 <= getattr(self, key) < self.vocab_size]

    def to_hf(self) -> dict:
        """The Hugging Face ``config.json`` fields this config stands for."""
        sizes = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("pad", "eos")}
        return {"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"], **sizes,
                "eos_token_id": self.eos, "pad_token_id": self.pad, "activation_function": "gelu",
                "scale_embedding": False, "tie_word_embeddings": True}


_SIZES = ("num_mel_bins", "d_model", "encoder_layers", "encoder_attention_heads", "decoder_layers",
          "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "vocab_size", "max_source_positions",
          "max_target_positions")
_DEFAULTED = ("max_source_positions", "max_target_positions")  # Hugging Face's defaults when absent
_IDS = {"eos": "eos_token_id", "decoder_start_token_id": "decoder_start_token_id"}  # field -> config.json key
# Settings every published Whisper has and this port assumes, checked when the config states them.
_FIXED = {"model_type": "whisper", "activation_function": "gelu", "scale_embedding": False}


def _sinusoids(key: jax.Array, shape: tuple[int, int], dtype: Any = jnp.float32) -> jax.Array:
    """Whisper's encoder positions ([sin | cos] halves, timescales 1 .. 10000): the initial value of
    ``embed_positions``; checkpoints store the table and loading honours it."""
    return fairseq_sinusoids(jnp.arange(shape[0]), shape[1], padding_idx=-1).astype(dtype)


class WhisperEncoder(nn.Module):
    """Two GELU convolutions (the second of stride 2), positions, pre-LN layers, final LayerNorm."""

    cfg: WhisperConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.cfg
        self.conv1 = Conv1d(c.d_model, 3, 1, 1, self.dtype)
        self.conv2 = Conv1d(c.d_model, 3, 2, 1, self.dtype)
        self.embed_positions = nn.Embed(c.max_source_positions, c.d_model, embedding_init=_sinusoids)
        self.layers = [EncoderLayer(c.d_model, c.encoder_attention_heads, c.encoder_ffn_dim, True, self.dtype,
                                    activation_fn="gelu", key_bias=False) for _ in range(c.encoder_layers)]
        self.layer_norm = layer_norm("layer_norm", self.dtype)

    def __call__(self, features: jax.Array) -> EncoderOutput:
        """features: (B, 2 * max_source_positions, num_mel_bins) log-mel."""
        gelu = activation("gelu")
        x = gelu(self.conv2(gelu(self.conv1(features))))
        x = x + self.embed_positions.embedding.astype(x.dtype)
        valid = jnp.ones(x.shape[:2], bool)
        states = []
        for layer in self.layers:
            x = layer(x, valid)
            states.append(x)
        lengths = jnp.full(x.shape[:1], x.shape[1], jnp.int32)
        return EncoderOutput(self.layer_norm(x), valid, None, lengths, tuple(states))


class WhisperDecoder(nn.Module):
    """Token embeddings + learned positions, pre-LN layers, final LayerNorm, tied output projection."""

    cfg: WhisperConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.cfg
        self.embed_tokens = nn.Embed(c.vocab_size, c.d_model, dtype=self.dtype)
        self.embed_positions = nn.Embed(c.max_target_positions, c.d_model, dtype=self.dtype)
        self.layers = [DecoderLayer(c.d_model, c.decoder_attention_heads, c.decoder_ffn_dim, True, "gelu",
                                    self.dtype, key_bias=False) for _ in range(c.decoder_layers)]
        # float32 whatever the compute dtype: SPES scores are KL divergences of these distributions.
        self.layer_norm = layer_norm("layer_norm", jnp.float32)

    def embed(self, tokens: jax.Array, positions: jax.Array, token_mask: jax.Array | None = None) -> jax.Array:
        """tokens, positions: (B, L) ints; token_mask: optional (B, L) multiplier of the token embeddings,
        applied before positions are added (SPES prefix occlusion). Returns (B, L, D)."""
        x = self.embed_tokens(tokens)
        if token_mask is not None:
            x = x * token_mask[..., None].astype(x.dtype)
        return x + self.embed_positions(positions)

    def cross_kv(self, enc_out: jax.Array) -> CrossKV:
        """Encoder-attention keys/values of every layer, each (B, S, H, D/H), from (B, S, D)."""
        return tuple(layer.encoder_attn.kv(enc_out) for layer in self.layers)

    def project(self, x: jax.Array) -> jax.Array:
        """Final norm and the tied output projection: (B, L, D) -> (B, L, V) float32 logits."""
        return self.layer_norm(x.astype(jnp.float32)) @ self.embed_tokens.embedding.T

    def __call__(self, prev: jax.Array, cross: CrossKV, enc_valid: jax.Array,
                 token_mask: jax.Array | None = None) -> jax.Array:
        """Teacher-forced (B, L, V) float32 logits; prev: (B, L), prev[:, j] at position j."""
        L = prev.shape[1]
        if L > self.cfg.max_target_positions:
            raise SpesError(f"{L} decoder positions exceed Whisper's {self.cfg.max_target_positions}")
        x = self.embed(prev, jnp.arange(L)[None], token_mask)
        causal = jnp.tril(jnp.ones((L, L), bool))[None, None]
        cross_allowed = enc_valid[:, None, None, :]
        for layer, kv in zip(self.layers, cross):
            x = layer(x, layer.self_kv(x), causal, kv, cross_allowed)
        return self.project(x)

    def step(self, tokens: jax.Array, step: jax.Array, cache: CrossKV, cross: CrossKV,
             enc_valid: jax.Array) -> tuple[jax.Array, CrossKV]:
        """tokens: (N,) at position ``step``; cache: per layer (k, v) (N, L_max, H, D/H).
        Returns (N, V) float32 logits and the cache with position ``step`` written."""
        positions = jnp.broadcast_to(step, tokens.shape)[:, None]
        x, cache = cached_step(self.layers, self.embed(tokens[:, None], positions), step, cache, cross, enc_valid)
        return self.project(x)[:, 0], cache


class WhisperModule(nn.Module):
    """Whisper encoder-decoder with the model interface's entry points (``apply(..., method=...)``).

    ``dtype`` is the compute dtype: parameters stay float32; LayerNorm statistics, softmaxes, the final
    decoder norm and the logits are float32.
    """

    cfg: WhisperConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.encoder = WhisperEncoder(self.cfg, self.dtype)
        self.decoder = WhisperDecoder(self.cfg, self.dtype)

    def encode(self, features: jax.Array, lengths: jax.Array) -> EncoderOutput:
        """features: (B, 2 * max_source_positions, num_mel_bins); lengths are ignored (Whisper always
        sees 30 s of features); every encoder frame is valid."""
        want = (2 * self.cfg.max_source_positions, self.cfg.num_mel_bins)
        if features.shape[1:] != want:
            raise SpesError(f"Whisper encodes features of shape (B, {want[0]}, {want[1]}), got {features.shape}")
        return self.encoder(features)

    def cross_kv(self, enc: EncoderOutput) -> CrossKV:
        return self.decoder.cross_kv(enc.out)

    def decode(self, prev: jax.Array, cross: CrossKV, enc_valid: jax.Array,
               token_mask: jax.Array | None = None) -> jax.Array:
        return self.decoder(prev, cross, enc_valid, token_mask)

    def decode_step(self, tokens: jax.Array, step: jax.Array, cache: CrossKV, cross: CrossKV,
                    enc_valid: jax.Array) -> tuple[jax.Array, CrossKV]:
        return self.decoder.step(tokens, step, cache, cross, enc_valid)

    def init_cache(self, batch: int, length: int) -> CrossKV:
        """The empty self-attention cache of ``decode_step``: per layer (k, v) zeros (batch, length, H, D/H)."""
        c = self.cfg
        if length > c.max_target_positions:
            raise SpesError(f"a cache of {length} positions exceeds Whisper's {c.max_target_positions}")
        heads = c.decoder_attention_heads
        zeros = jnp.zeros((batch, length, heads, c.d_model // heads), self.dtype)
        return tuple((zeros, zeros) for _ in range(c.decoder_layers))

    def __call__(self, features: jax.Array, lengths: jax.Array, prev: jax.Array,
                 token_mask: jax.Array | None = None) -> tuple[jax.Array, EncoderOutput]:
        enc = self.encode(features, lengths)
        return self.decode(prev, self.cross_kv(enc), enc.valid, token_mask), enc


def init_params(cfg: WhisperConfig, seed: int = 0) -> dict:
    """Random float32 parameters for ``cfg`` (tests, benchmarks)."""
    feats = jnp.zeros((1, 2 * cfg.max_source_positions, cfg.num_mel_bins), jnp.float32)
    prev = jnp.full((1, 1), cfg.decoder_start_token_id, jnp.int32)
    # Under jit the forward pass init runs is dead code: only the parameters are computed.
    init = jax.jit(WhisperModule(cfg).init)
    return init(jax.random.PRNGKey(seed), feats, jnp.ones((1,), jnp.int32), prev)["params"]


def _hf_name(path: tuple[str, ...]) -> str:
    """Flax parameter path -> Hugging Face state-dict name."""
    *module, leaf = path
    name = re.sub(r"layers_(\d+)", r"layers.\1", ".".join(module))
    return f"model.{name}.{'bias' if leaf == 'bias' else 'weight'}"


def _torch_layout(shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    """Torch's layout of a flax parameter: Linear (out, in) for (in, out), Conv1d (out, in, k) for (k, in, out)."""
    return shape[::-1] if leaf == "kernel" else shape


def params_from_state_dict(state: dict[str, np.ndarray], cfg: WhisperConfig) -> dict:
    """Flax parameters (float32 numpy) from a Hugging Face ``WhisperForConditionalGeneration`` state dict.

    ``proj_out.weight`` may be absent or equal to the token embeddings (Whisper ties them).
    """
    expected = traverse_util.flatten_dict(jax.eval_shape(functools.partial(init_params, cfg)))
    names = {_hf_name(path): path for path in expected}
    state = dict(state)
    proj = state.pop("proj_out.weight", None)
    tokens = state.get("model.decoder.embed_tokens.weight")
    problems = []
    if proj is not None and tokens is not None and not np.array_equal(proj, tokens):
        problems.append("proj_out.weight differs from model.decoder.embed_tokens.weight (untied)")
    for label, keys in (("missing", sorted(names.keys() - state.keys())),
                        ("unknown", sorted(state.keys() - names.keys()))):
        if keys:
            problems.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
    flat = {}
    for name, path in names.items():
        want = _torch_layout(expected[path].shape, path[-1])
        if name in state and np.shape(state[name]) != want:
            problems.append(f"{name} has shape {np.shape(state[name])}, expected {want}")
        elif name in state:
            value = np.asarray(state[name], np.float32)
            flat[path] = value.T if path[-1] == "kernel" else value
    if problems:
        raise SpesError("the state dict does not fit this Whisper config: " + "; ".join(problems[:5]))
    return traverse_util.unflatten_dict(flat)
