"""Impact of a perturbation on each next-token distribution, always in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def kl(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """KL(P || Q) = sum_v P (log P - log Q). log_p, log_q: (..., V) -> (...)."""
    log_p, log_q = log_p.astype(jnp.float32), log_q.astype(jnp.float32)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def prob_diff(log_p: jax.Array, log_q: jax.Array, target: jax.Array) -> jax.Array:
    """P(y_k) - Q(y_k) of the explained token. log_p, log_q: (..., K, V); target: (K,) -> (..., K)."""
    pick = lambda lp: jnp.take_along_axis(lp.astype(jnp.float32),
                                          jnp.broadcast_to(target[..., None], lp.shape[:-1] + (1,)), -1)[..., 0]
    return jnp.exp(pick(log_p)) - jnp.exp(pick(log_q))


def impact(kind: str, log_p: jax.Array, log_q: jax.Array, target: jax.Array) -> jax.Array:
    """Scores (..., K) of perturbed log-probs log_q (..., K, V) against the original log_p (K, V)."""
    return kl(log_p, log_q) if kind == "kl" else prob_diff(log_p, log_q, target)
