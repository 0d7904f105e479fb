"""Batched beam search and greedy search with fairseq ``SequenceGenerator`` semantics.

One ``jax.lax.while_loop`` over decoding steps, a fixed-size self-attention cache and cross-attention
keys/values computed once per utterance. Beam search reproduces fairseq's candidate selection (top
2 x beam of the summed scores, end-of-sentence candidates among the best ``beam`` are finalised,
the best ``beam`` others continue), length normalisation ``score / len ** lenpen``, the
no-repeat-n-gram block, ``min_len`` and the ``max_len = min(a * src_len + b, max_target_positions - 1)``
rule (the last step may only produce </s>).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import flax.struct
import jax
import jax.numpy as jnp

from .errors import SpesError
from .models import S2TModel
from .text import UNK


@dataclass(frozen=True)
class SearchConfig:
    """Decoding options; defaults are the reference's (beam 5, no-repeat-ngram 5, fairseq defaults)."""

    beam: int = 5
    no_repeat_ngram_size: int = 5
    max_len_a: float = 0.0
    max_len_b: int = 200
    min_len: int = 1
    lenpen: float = 1.0
    unk_penalty: float = 0.0

    @classmethod
    def from_dict(cls, d: dict, where: str = "search options") -> "SearchConfig":
        """A model directory's ``"search"`` section: the defaults it was trained to decode with."""
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise SpesError(f"{where}: unknown search option(s) {', '.join(unknown)} (known: {', '.join(fields)})")
        try:
            return cls(**{k: (float(v) if fields[k] == "float" else int(v)) for k, v in d.items()})
        except (TypeError, ValueError) as e:
            raise SpesError(f"{where}: bad search option ({e})") from None

    def max_len(self, src_frames: int, max_target_positions: int) -> int:
        return min(int(self.max_len_a * src_frames + self.max_len_b), max_target_positions - 1)


@flax.struct.dataclass
class SearchResult:
    """Hypotheses per utterance, best first.

    tokens: (B, N, max_len + 1) ids ending with </s>, then <pad>; lengths: (B, N) including </s>;
    scores: (B, N) length-normalised log-probabilities; positional_scores: (B, N, max_len + 1).
    N is the beam size (beam search) or 1 (greedy).
    """

    tokens: jax.Array
    lengths: jax.Array
    scores: jax.Array
    positional_scores: jax.Array


def _constrain(lprobs: jax.Array, tokens: jax.Array, step: jax.Array, max_len: int, cfg: SearchConfig,
               pad: int, eos: int) -> jax.Array:
    """fairseq's per-step rules on (N, V) log-probs; tokens: (N, max_len + 2) with positions <= step set."""
    lprobs = jnp.where(jnp.isnan(lprobs), -jnp.inf, lprobs)
    lprobs = lprobs.at[:, pad].set(-jnp.inf)
    lprobs = lprobs.at[:, UNK].add(-cfg.unk_penalty)
    vocab = jnp.arange(lprobs.shape[1])
    lprobs = jnp.where((step >= max_len) & (vocab != eos), -jnp.inf, lprobs)
    lprobs = jnp.where((step < cfg.min_len) & (vocab == eos), -jnp.inf, lprobs)
    n = cfg.no_repeat_ngram_size
    if n > 0:
        # Ban t if (last n-1 tokens, t) already occurs in tokens[0..step] (the leading </s> included).
        P = tokens.shape[1] - (n - 1)
        windows = jnp.stack([tokens[:, k:k + P] for k in range(n - 1)], axis=-1)  # (N, P, n-1)
        last = jax.lax.dynamic_slice_in_dim(tokens, jnp.maximum(step - n + 2, 0), n - 1, axis=1)
        match = jnp.all(windows == last[:, None, :], axis=-1) & (jnp.arange(P) <= step - n + 1)
        following = tokens[:, n - 1:n - 1 + P]
        rows = jnp.arange(tokens.shape[0])[:, None]
        banned = jnp.zeros(lprobs.shape, bool).at[rows, following].max(match)
        lprobs = jnp.where(banned, -jnp.inf, lprobs)
    return lprobs


def _prepare(model: S2TModel, params, features, lengths, copies: int, max_len: int, dtype):
    enc = model.apply({"params": params}, features, lengths, method=S2TModel.encode)
    cross = model.apply({"params": params}, enc, method=S2TModel.cross_kv)
    rep = lambda x: jnp.repeat(x, copies, axis=0)
    cross = jax.tree_util.tree_map(rep, cross)
    valid = rep(enc.valid)
    c = model.cfg
    shape = (valid.shape[0], max_len + 1, c.decoder_attention_heads, c.decoder_embed_dim // c.decoder_attention_heads)
    cache = tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(c.decoder_layers))
    return cross, valid, cache


@functools.partial(jax.jit, static_argnames=("model", "cfg", "max_len"))
def beam_search(model: S2TModel, params, features: jax.Array, lengths: jax.Array, *, cfg: SearchConfig,
                max_len: int) -> SearchResult:
    """Beam search for a batch of utterances.

    features: (B, T, C) zero-padded CMVN fbank; lengths: (B,) frames. Returns a ``SearchResult``.
    """
    mc = model.cfg
    B, K, V = features.shape[0], cfg.beam, mc.vocab_size
    if V <= 2 * K:
        raise SpesError(f"beam {K} needs a vocabulary larger than {2 * K}")
    N, pad, eos = B * K, mc.pad, mc.eos
    cross, enc_valid, cache = _prepare(model, params, features, lengths, K, max_len, features.dtype)
    tokens = jnp.full((N, max_len + 2), pad, jnp.int32).at[:, 0].set(eos)
    scores = jnp.zeros((N, max_len + 1), jnp.float32)
    fin = SearchResult(jnp.full((B, K, max_len + 1), pad, jnp.int32), jnp.zeros((B, K), jnp.int32),
                       jnp.full((B, K), -jnp.inf, jnp.float32), jnp.zeros((B, K, max_len + 1), jnp.float32))
    n_fin = jnp.zeros((B,), jnp.int32)
    done = jnp.zeros((B,), bool)
    pos = jnp.arange(max_len + 1)

    def body(state):
        step, tokens, scores, cache, fin, n_fin, done = state
        logits, cache = model.apply({"params": params}, tokens[:, step], step, cache, cross, enc_valid,
                                    method=S2TModel.decode_step)
        lprobs = _constrain(jax.nn.log_softmax(logits, axis=-1), tokens, step, max_len, cfg, pad, eos)
        lprobs = lprobs.reshape(B, K, V)
        prev = jax.lax.dynamic_index_in_dim(scores, jnp.maximum(step - 1, 0), axis=1, keepdims=False)
        summed = lprobs + prev.reshape(B, K, 1)
        # Step 0: every beam holds the same prefix, so only beam 0's candidates count.
        summed = jnp.where(step == 0, jnp.where(jnp.arange(K)[None, :, None] == 0, lprobs, -jnp.inf), summed)
        cand_scores, cand_flat = jax.lax.top_k(summed.reshape(B, K * V), 2 * K)
        cand_beams, cand_tokens = cand_flat // V, cand_flat % V
        cand_src = cand_beams + (jnp.arange(B) * K)[:, None]  # (B, 2K) rows of the flat beam

        # Finalise </s> candidates among the best K, in score order, while the sentence has room.
        is_eos = (cand_tokens == eos) & (cand_scores != -jnp.inf)
        top_eos = is_eos[:, :K] & ~done[:, None]
        slot = n_fin[:, None] + jnp.cumsum(top_eos, axis=1) - 1
        accept = top_eos & (slot < K)
        src = cand_src[:, :K]
        hyp_tokens = jnp.where(pos == step, eos, jnp.where(pos < step, tokens[src, 1:], pad))
        cum = jnp.where(pos == step, cand_scores[:, :K, None], scores[src])
        hyp_pos = jnp.where(pos <= step, cum - jnp.pad(cum[..., :-1], ((0, 0), (0, 0), (1, 0))), 0.0)
        hyp_score = cand_scores[:, :K] / (step + 1.0) ** cfg.lenpen
        for c in range(K):
            put = (jnp.arange(K)[None, :] == slot[:, c:c + 1]) & accept[:, c:c + 1]  # (B, K slots)
            fin = SearchResult(
                jnp.where(put[..., None], hyp_tokens[:, c:c + 1], fin.tokens),
                jnp.where(put, step + 1, fin.lengths),
                jnp.where(put, hyp_score[:, c:c + 1], fin.scores),
                jnp.where(put[..., None], hyp_pos[:, c:c + 1], fin.positional_scores))
        n_fin = n_fin + accept.sum(axis=1)
        done = done | (n_fin >= K) | (step >= max_len)

        # The best K candidates that are not </s> continue.
        order = jnp.argsort(is_eos * (2 * K) + jnp.arange(2 * K), axis=1)[:, :K]
        active = jnp.take_along_axis(cand_src, order, axis=1).reshape(N)
        tokens = tokens[active].at[:, step + 1].set(jnp.take_along_axis(cand_tokens, order, axis=1).reshape(N))
        scores = scores[active].at[:, step].set(jnp.take_along_axis(cand_scores, order, axis=1).reshape(N))
        cache = jax.tree_util.tree_map(lambda x: x[active], cache)
        return step + 1, tokens, scores, cache, fin, n_fin, done

    def cond(state):
        step, *_, done = state
        return (step <= max_len) & ~jnp.all(done)

    state = (jnp.int32(0), tokens, scores, cache, fin, n_fin, done)
    fin = jax.lax.while_loop(cond, body, state)[4]
    order = jnp.argsort(-fin.scores, axis=1)
    take = lambda x: jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1)
    return jax.tree_util.tree_map(take, fin)


@functools.partial(jax.jit, static_argnames=("model", "cfg", "max_len"))
def greedy_search(model: S2TModel, params, features: jax.Array, lengths: jax.Array, *, cfg: SearchConfig,
                  max_len: int) -> SearchResult:
    """Greedy decoding under the same per-step rules as beam search (``cfg.beam`` is ignored)."""
    mc = model.cfg
    B, pad, eos = features.shape[0], mc.pad, mc.eos
    cross, enc_valid, cache = _prepare(model, params, features, lengths, 1, max_len, features.dtype)
    tokens = jnp.full((B, max_len + 2), pad, jnp.int32).at[:, 0].set(eos)
    pos_scores = jnp.zeros((B, max_len + 1), jnp.float32)
    length = jnp.zeros((B,), jnp.int32)

    def body(state):
        step, tokens, pos_scores, length, cache = state
        logits, cache = model.apply({"params": params}, tokens[:, step], step, cache, cross, enc_valid,
                                    method=S2TModel.decode_step)
        lprobs = _constrain(jax.nn.log_softmax(logits, axis=-1), tokens, step, max_len, cfg, pad, eos)
        best = jnp.argmax(lprobs, axis=-1)
        live = length == 0
        tokens = tokens.at[:, step + 1].set(jnp.where(live, best, pad))
        pos_scores = pos_scores.at[:, step].set(jnp.where(live, jnp.max(lprobs, axis=-1), 0.0))
        length = jnp.where(live & (best == eos), step + 1, length)
        return step + 1, tokens, pos_scores, length, cache

    def cond(state):
        step, _, _, length, _ = state
        return (step <= max_len) & jnp.any(length == 0)

    _, tokens, pos_scores, length, _ = jax.lax.while_loop(
        cond, body, (jnp.int32(0), tokens, pos_scores, length, cache))
    score = pos_scores.sum(axis=1) / length.astype(jnp.float32) ** cfg.lenpen
    return SearchResult(tokens[:, None, 1:], length[:, None], score[:, None], pos_scores[:, None])
