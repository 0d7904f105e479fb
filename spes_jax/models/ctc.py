"""FBK's CTC support: a linear CTC head at an inner encoder layer and optional CTC compression.

Compression merges consecutive frames with the same CTC argmax (blank runs are groups too) into one
vector per group. Shapes stay static: the compressed sequence keeps the input length and is zero
beyond its new length, so one compiled function serves every utterance.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import length_mask, matmul


def compression_groups(logits: jax.Array, lengths: jax.Array, strategy: str, fixed_ratio: int,
                       max_out_size: int) -> tuple[jax.Array, jax.Array]:
    """Group index of every frame and the number of groups.

    logits: (B, T, V); lengths: (B,). Returns (B, T) int32 groups (arbitrary on pads) and (B,) counts.
    """
    T = logits.shape[1]
    t = jnp.arange(T)
    if strategy == "fixed":
        return jnp.broadcast_to(t // fixed_ratio, logits.shape[:2]), -(-lengths // fixed_ratio)
    pred = jnp.argmax(logits, axis=-1)
    starts = jnp.concatenate([jnp.ones_like(pred[:, :1], bool), pred[:, 1:] != pred[:, :-1]], axis=1)
    groups = jnp.cumsum(starts, axis=1) - 1
    n = jnp.take_along_axis(groups, (lengths - 1)[:, None], axis=1)[:, 0] + 1
    if max_out_size > 0:
        # FBK's ensure_max_ctc_out_len: merge runs of ceil(n / max) consecutive groups.
        factor = jnp.where(n > max_out_size, -(-n // max_out_size), 1)
        groups = groups // factor[:, None]
        n = -(-n // factor)
    return groups.astype(jnp.int32), n


def compress(x: jax.Array, logits: jax.Array, lengths: jax.Array, strategy: str, fixed_ratio: int = 4,
             max_out_size: int = -1) -> tuple[jax.Array, jax.Array]:
    """FBK ``average_same_ctc_features``.

    x: (B, T, D) encoder states; logits: (B, T, V) CTC logits; lengths: (B,).
    Returns (B, T, D) compressed states (zero beyond the new length) and (B,) new lengths.
    """
    T = x.shape[1]
    valid = length_mask(lengths, T)
    groups, n = compression_groups(logits, lengths, strategy, fixed_ratio, max_out_size)
    member = (groups[:, :, None] == jnp.arange(T)[None, None, :]) & valid[:, :, None]  # (B, T, T')
    if strategy in ("weighted", "softmax"):
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        label = jnp.argmax(logits, axis=-1)
        w = jnp.take_along_axis(probs, label[..., None], axis=-1)[..., 0]  # prob of the group's label
        if strategy == "softmax":
            w = jnp.exp(w)  # softmax over the group's probabilities
        weights = jnp.where(member, w[:, :, None], 0.0)
    else:
        weights = member.astype(jnp.float32)
    weights = weights / jnp.maximum(weights.sum(axis=1, keepdims=True), 1e-30)
    out = jnp.einsum("btd,btg->bgd", x.astype(jnp.float32), weights).astype(x.dtype)
    return out, n


class CTCHead(nn.Module):
    """``ctc_fc`` (parameters ``kernel``/``bias`` like a Dense) and the configured compression."""

    vocab_size: int
    strategy: str = "none"
    fixed_ratio: int = 4
    max_out_size: int = -1

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x: (B, T, D). Returns (possibly compressed) x, (B, T, V) float32 logits, new lengths."""
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.vocab_size))
        bias = self.param("bias", nn.initializers.zeros, (self.vocab_size,))
        logits = matmul("btd,dv->btv", x, kernel, x.dtype) + bias
        if self.strategy == "none":
            return x, logits, lengths
        x, lengths = compress(x, logits, lengths, self.strategy, self.fixed_ratio, self.max_out_size)
        return x, logits, lengths


def ctc_head(cfg) -> CTCHead:
    """The CTC head a ``ModelConfig`` asks for."""
    return CTCHead(cfg.ctc_vocab_size, cfg.ctc_compress_strategy, cfg.ctc_compress_fixed_ratio,
                   cfg.ctc_compress_max_out_size)


def run_layers(layers, x: jax.Array, lengths: jax.Array, ctc_layer: int, head: CTCHead | None):
    """Runs encoder layers ``layer(x, valid, lengths)``, applying the CTC head (and its compression)
    after layer ``ctc_layer`` (1-based). Returns (x, valid, ctc logits or None, per-layer states,
    lengths of the final sequence)."""
    valid = length_mask(lengths, x.shape[1])
    ctc_logits, states = None, []
    for i, layer in enumerate(layers):
        x = layer(x, valid, lengths)
        if i + 1 == ctc_layer:
            x, ctc_logits, lengths = head(x, lengths)
            valid = length_mask(lengths, x.shape[1])
        states.append(x)
    return x, valid, ctc_logits, tuple(states), lengths
