"""Batched beam search and greedy search for any encoder-decoder module with the spes-jax contract.

One ``jax.lax.while_loop`` over decoding steps, a fixed-size self-attention cache (the module's
``init_cache``) and cross-attention keys/values computed once per utterance. The search starts from a
forced prompt (FBK: ``(</s>,)``; Whisper tiny.en: ``<|startoftranscript|> <|notimestamps|>``) whose
tokens but the last are fed through ``decode_step`` first; scores, lengths and the returned tokens
count generated tokens only.

Beam search is fairseq's ``SequenceGenerator``: the top 2 x beam of the summed scores are candidates,
end-of-sentence candidates among the best ``beam`` are finished with the length-normalised score
``sum / len ** lenpen``, the best ``beam`` others continue. ``SearchConfig.early_stopping`` says when a
sentence is done: fairseq's rule (as soon as ``beam`` hypotheses are finished; True) or Hugging Face's
``early_stopping=False`` (the finished set keeps the best ``beam`` so far, and the sentence goes on while
its best running beam, normalised by its current length, beats the worst finished one). Per-step rules:
``suppress`` / ``begin_suppress``, the <unk> penalty, ``min_len``, the no-repeat-n-gram block and
``max_len`` (the last step may only produce </s>).

No-speech detection (Whisper; ``SearchConfig.no_speech``): the probability of the no-speech token right
after the prompt's first token, one softmax over the whole vocabulary (where Whisper was trained to emit
it for audio without speech). Above ``no_speech_threshold`` the utterance's search ends before the first
step with the empty hypothesis (just the end token, scored with the no-speech token's log-probability),
as Whisper's own transcription skips such audio, instead of decoding up to ``max_len`` tokens of
hallucinated text.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from .errors import SpesError
from .text import PAD, UNK


@dataclass(frozen=True)
class SearchConfig:
    """Decoding options. The defaults are the FBK reference's (fairseq: beam 5, no-repeat-ngram 5,
    <pad> never generated, <unk> = 3); other model families give their own.

    min_len: </s> is banned while fewer than ``min_len`` tokens are generated. max_len_a/b: the most
    generated tokens before the final </s> is ``a * source frames + b`` (see ``max_len``).
    suppress: ids never generated; begin_suppress: ids banned at the first generated token only.
    unk_penalty is subtracted from the log-probability of id ``unk``. early_stopping: see the module.
    no_speech: the no-speech token id (-1: no detection), no_speech_threshold: see the module.
    """

    beam: int = 5
    no_repeat_ngram_size: int = 5
    max_len_a: float = 0.0
    max_len_b: int = 200
    min_len: int = 1
    lenpen: float = 1.0
    unk_penalty: float = 0.0
    unk: int = UNK
    suppress: tuple[int, ...] = (PAD,)
    begin_suppress: tuple[int, ...] = ()
    early_stopping: bool = True
    no_speech: int = -1
    no_speech_threshold: float = 0.6

    def __post_init__(self):
        # Lists would make the config unhashable, and it is a static argument of the jitted searches.
        for name in ("suppress", "begin_suppress"):
            object.__setattr__(self, name, tuple(int(t) for t in getattr(self, name)))

    @classmethod
    def from_dict(cls, d: dict, where: str = "search options") -> "SearchConfig":
        """A model directory's ``"search"`` section: the defaults it was trained to decode with."""
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(kinds))
        if unknown:
            raise SpesError(f"{where}: unknown search option(s) {', '.join(unknown)} (known: {', '.join(kinds)})")
        values = {}
        for k, v in d.items():
            try:
                values[k] = _option(kinds[k], v)
            except (TypeError, ValueError) as e:
                raise SpesError(f"{where}: bad search option {k} ({e})") from None
        return cls(**values)

    def max_len(self, src_frames: int, max_target_positions: int, prompt_len: int = 1) -> int:
        """``a * src_frames + b``, capped so that the decoder reads no position beyond
        ``max_target_positions - 1`` (the prompt takes the first ``prompt_len``)."""
        return min(int(self.max_len_a * src_frames + self.max_len_b), max_target_positions - prompt_len)


def _option(kind: str, value: Any) -> Any:
    """A JSON value as the field type ``kind`` (the annotation's text) wants it."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    if kind.startswith("tuple"):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list of token ids, got {value!r}")
        return tuple(int(t) for t in value)
    return float(value) if kind == "float" else int(value)


@flax.struct.dataclass
class SearchResult:
    """Hypotheses per utterance, best first.

    tokens: (B, N, max_len + 1) generated ids (the prompt excluded) ending with </s>, then <pad>;
    lengths: (B, N) including </s>; scores: (B, N) length-normalised log-probabilities;
    positional_scores: (B, N, max_len + 1). N is the beam size (beam search) or 1 (greedy).
    """

    tokens: jax.Array
    lengths: jax.Array
    scores: jax.Array
    positional_scores: jax.Array


def _constrain(lprobs: jax.Array, tokens: jax.Array, pos: jax.Array, gen: jax.Array, max_len: int,
               cfg: SearchConfig, eos: int) -> jax.Array:
    """The per-step rules on (N, V) log-probs of generated token ``gen`` (0-based), predicted at
    decoder position ``pos``; tokens: (N, P + max_len + 1) with positions <= pos set (prompt included)."""
    lprobs = jnp.where(jnp.isnan(lprobs), -jnp.inf, lprobs)
    if cfg.suppress:
        lprobs = lprobs.at[:, jnp.array(cfg.suppress)].set(-jnp.inf)
    if cfg.begin_suppress:
        ids = jnp.array(cfg.begin_suppress)
        lprobs = lprobs.at[:, ids].set(jnp.where(gen == 0, -jnp.inf, lprobs[:, ids]))
    if cfg.unk_penalty:
        lprobs = lprobs.at[:, cfg.unk].add(-cfg.unk_penalty)
    vocab = jnp.arange(lprobs.shape[1])
    lprobs = jnp.where((gen >= max_len) & (vocab != eos), -jnp.inf, lprobs)
    lprobs = jnp.where((gen < cfg.min_len) & (vocab == eos), -jnp.inf, lprobs)
    n = cfg.no_repeat_ngram_size
    if n > 0:
        # Ban t if (last n-1 tokens, t) already occurs in tokens[0..pos] (the prompt included).
        P = tokens.shape[1] - (n - 1)
        windows = jnp.stack([tokens[:, k:k + P] for k in range(n - 1)], axis=-1)  # (N, P, n-1)
        last = jax.lax.dynamic_slice_in_dim(tokens, jnp.maximum(pos - n + 2, 0), n - 1, axis=1)
        match = jnp.all(windows == last[:, None, :], axis=-1) & (jnp.arange(P) <= pos - n + 1)
        following = tokens[:, n - 1:n - 1 + P]
        rows = jnp.arange(tokens.shape[0])[:, None]
        banned = jnp.zeros(lprobs.shape, bool).at[rows, following].max(match)
        lprobs = jnp.where(banned, -jnp.inf, lprobs)
    return lprobs


def _check(model: nn.Module, prompt: tuple[int, ...], max_len: int, cfg: SearchConfig) -> None:
    if not prompt:
        raise SpesError("the decoder prompt is empty (it holds at least the start token)")
    if cfg.no_speech >= 0 and len(prompt) < 2:
        raise SpesError("no-speech detection needs a prompt of at least two tokens")
    if max_len < 0 or len(prompt) + max_len > model.cfg.max_target_positions:
        raise SpesError(f"max_len {max_len} with a {len(prompt)}-token prompt does not fit the decoder's "
                        f"{model.cfg.max_target_positions} positions")


def _start(model: nn.Module, params, features: jax.Array, lengths: jax.Array, prompt: tuple[int, ...],
           copies: int, max_len: int, cfg: SearchConfig):
    """Encodes the batch, feeds the prompt but its last token through ``decode_step`` and repeats
    everything ``copies`` times (the beams of an utterance are adjacent rows).

    Returns cross keys/values, the (B * copies, S) encoder mask, the self-attention cache, the
    (B * copies, P + max_len + 1) token buffer holding the prompt, then <pad>, and the (B,) log-probability
    of ``cfg.no_speech`` after the first prompt token (-inf without detection).
    """
    apply = functools.partial(model.apply, {"params": params})
    enc = apply(features, lengths, method="encode")
    cross = apply(enc, method="cross_kv")
    B, P = features.shape[0], len(prompt)
    ids = jnp.array(prompt, jnp.int32)
    cache = apply(B, P + max_len, method="init_cache")
    no_speech = jnp.full((B,), -jnp.inf, jnp.float32)
    if P > 1:
        feed = lambda pos, cache: apply(jnp.full((B,), ids[pos]), pos, cache, cross, enc.valid,
                                        method="decode_step")
        logits, cache = feed(0, cache)
        if cfg.no_speech >= 0:
            no_speech = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)[:, cfg.no_speech]
        cache = jax.lax.fori_loop(1, P - 1, lambda pos, cache: feed(pos, cache)[1], cache)
    rep = lambda x: jnp.repeat(x, copies, axis=0)
    cross, valid, cache = jax.tree_util.tree_map(rep, (cross, enc.valid, cache))
    tokens = jnp.full((B * copies, P + max_len + 1), model.cfg.pad, jnp.int32).at[:, :P].set(ids)
    return cross, valid, cache, tokens, no_speech


def _silent(no_speech: jax.Array, cfg: SearchConfig) -> jax.Array:
    """(B,) whether the no-speech probability ends an utterance's search before its first step."""
    return no_speech > jnp.log(cfg.no_speech_threshold)


def _default_prompt(model: nn.Module, prompt: tuple[int, ...] | None) -> tuple[int, ...]:
    return (model.cfg.eos,) if prompt is None else tuple(prompt)


@functools.partial(jax.jit, static_argnames=("model", "cfg", "max_len", "prompt"))
def beam_search(model: nn.Module, params, features: jax.Array, lengths: jax.Array, *, cfg: SearchConfig,
                max_len: int, prompt: tuple[int, ...] | None = None) -> SearchResult:
    """Beam search for a batch of utterances.

    features: (B, T, C) what the module's ``encode`` takes; lengths: (B,) frames. ``max_len``: the most
    tokens generated before the final </s>; ``prompt``: the forced decoder prefix (default ``(eos,)``).
    Returns a ``SearchResult``.
    """
    prompt = _default_prompt(model, prompt)
    _check(model, prompt, max_len, cfg)
    mc = model.cfg
    B, K, V, P = features.shape[0], cfg.beam, mc.vocab_size, len(prompt)
    if V <= 2 * K:
        raise SpesError(f"beam {K} needs a vocabulary larger than {2 * K}")
    N, pad, eos = B * K, mc.pad, mc.eos
    cross, enc_valid, cache, tokens, no_speech = _start(model, params, features, lengths, prompt, K, max_len, cfg)
    scores = jnp.zeros((N, max_len + 1), jnp.float32)  # cumulative, per generated position
    empty = SearchResult(jnp.full((B, K, max_len + 1), pad, jnp.int32), jnp.zeros((B, K), jnp.int32),
                         jnp.full((B, K), -jnp.inf, jnp.float32), jnp.zeros((B, K, max_len + 1), jnp.float32))
    gen_pos = jnp.arange(max_len + 1)
    done = _silent(no_speech, cfg)
    first = (jnp.arange(K) == 0)[None, :] & done[:, None]  # slot 0 of a silent utterance: the empty hypothesis
    at0 = first[..., None] & (gen_pos == 0)
    fin = SearchResult(jnp.where(at0, eos, empty.tokens), jnp.where(first, 1, empty.lengths),
                       jnp.where(first, no_speech[:, None], empty.scores),
                       jnp.where(at0, no_speech[:, None, None], empty.positional_scores))

    def body(state):
        gen, tokens, scores, cache, fin, done = state
        pos = gen + P - 1
        logits, cache = model.apply({"params": params}, tokens[:, pos], pos, cache, cross, enc_valid,
                                    method="decode_step")
        lprobs = _constrain(jax.nn.log_softmax(logits, axis=-1), tokens, pos, gen, max_len, cfg, eos)
        lprobs = lprobs.reshape(B, K, V)
        prev = jax.lax.dynamic_index_in_dim(scores, jnp.maximum(gen - 1, 0), axis=1, keepdims=False)
        summed = lprobs + prev.reshape(B, K, 1)
        # First step: every beam holds the same prefix, so only beam 0's candidates count.
        summed = jnp.where(gen == 0, jnp.where(jnp.arange(K)[None, :, None] == 0, lprobs, -jnp.inf), summed)
        cand_scores, cand_flat = jax.lax.top_k(summed.reshape(B, K * V), 2 * K)
        cand_beams, cand_tokens = cand_flat // V, cand_flat % V
        cand_src = cand_beams + (jnp.arange(B) * K)[:, None]  # (B, 2K) rows of the flat beam

        # </s> candidates among the best K finish; merged with the finished set, K are kept.
        is_eos = (cand_tokens == eos) & (cand_scores != -jnp.inf)
        new = is_eos[:, :K] & ~done[:, None]
        src = cand_src[:, :K]
        cum = jnp.where(gen_pos == gen, cand_scores[:, :K, None], scores[src])
        hyps = SearchResult(
            jnp.where(gen_pos == gen, eos, jnp.where(gen_pos < gen, tokens[src, P:], pad)),
            jnp.full((B, K), gen + 1),
            cand_scores[:, :K] / (gen + 1.0) ** cfg.lenpen,
            jnp.where(gen_pos <= gen, cum - jnp.pad(cum[..., :-1], ((0, 0), (0, 0), (1, 0))), 0.0))
        fin = _keep_finished(fin, hyps, new, empty, cfg.early_stopping)

        # The best K candidates that are not </s> continue.
        order = jnp.argsort(is_eos * (2 * K) + jnp.arange(2 * K), axis=1)[:, :K]
        active = jnp.take_along_axis(cand_src, order, axis=1).reshape(N)
        running = jnp.take_along_axis(cand_scores, order, axis=1)  # (B, K), best first
        tokens = tokens[active].at[:, pos + 1].set(jnp.take_along_axis(cand_tokens, order, axis=1).reshape(N))
        scores = scores[active].at[:, gen].set(running.reshape(N))
        cache = jax.tree_util.tree_map(lambda x: x[active], cache)

        full = jnp.all(fin.lengths > 0, axis=1)
        if not cfg.early_stopping:
            # Hugging Face's heuristic: done once the best running beam, normalised by its current
            # length, cannot beat the worst finished hypothesis.
            full &= running[:, 0] / (gen + 1.0) ** cfg.lenpen <= jnp.min(fin.scores, axis=1)
        done = done | full | (gen >= max_len)
        return gen + 1, tokens, scores, cache, fin, done

    def cond(state):
        gen, *_, done = state
        return (gen <= max_len) & ~jnp.all(done)

    state = (jnp.int32(0), tokens, scores, cache, fin, done)
    fin = jax.lax.while_loop(cond, body, state)[4]
    return _take(fin, jnp.argsort(-fin.scores, axis=1))


def _take(res: SearchResult, order: jax.Array) -> SearchResult:
    """The (B, M) hypotheses ``order`` picks, per utterance, from (B, M') ones."""
    take = lambda x: jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1)
    return jax.tree_util.tree_map(take, res)


def _keep_finished(fin: SearchResult, hyps: SearchResult, new: jax.Array, empty: SearchResult,
                   earliest: bool) -> SearchResult:
    """Merges the (B, K) finished hypotheses (empty slots: length 0) with the (B, K) ``hyps`` where
    ``new`` and keeps K: the earliest (fairseq; slots fill in order) or the best-scoring (Hugging Face)."""
    K = new.shape[1]
    hyps = jax.tree_util.tree_map(lambda h, e: jnp.where(new.reshape(new.shape + (1,) * (h.ndim - 2)), h, e),
                                  hyps, empty)
    merged = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b], axis=1), fin, hyps)
    valid = merged.lengths > 0
    key = jnp.where(valid, jnp.arange(2 * K) if earliest else -merged.scores, jnp.inf)
    return _take(merged, jnp.argsort(key, axis=1)[:, :K])


@functools.partial(jax.jit, static_argnames=("model", "cfg", "max_len", "prompt"))
def greedy_search(model: nn.Module, params, features: jax.Array, lengths: jax.Array, *, cfg: SearchConfig,
                  max_len: int, prompt: tuple[int, ...] | None = None) -> SearchResult:
    """Greedy decoding under the same per-step rules as beam search (``cfg.beam`` and
    ``cfg.early_stopping`` are ignored)."""
    prompt = _default_prompt(model, prompt)
    _check(model, prompt, max_len, cfg)
    B, P, pad, eos = features.shape[0], len(prompt), model.cfg.pad, model.cfg.eos
    cross, enc_valid, cache, tokens, no_speech = _start(model, params, features, lengths, prompt, 1, max_len, cfg)
    silent = _silent(no_speech, cfg)
    tokens = tokens.at[:, P].set(jnp.where(silent, eos, pad))
    pos_scores = jnp.zeros((B, max_len + 1), jnp.float32).at[:, 0].set(jnp.where(silent, no_speech, 0.0))
    length = silent.astype(jnp.int32)

    def body(state):
        gen, tokens, pos_scores, length, cache = state
        pos = gen + P - 1
        logits, cache = model.apply({"params": params}, tokens[:, pos], pos, cache, cross, enc_valid,
                                    method="decode_step")
        lprobs = _constrain(jax.nn.log_softmax(logits, axis=-1), tokens, pos, gen, max_len, cfg, eos)
        best = jnp.argmax(lprobs, axis=-1)
        live = length == 0
        tokens = tokens.at[:, pos + 1].set(jnp.where(live, best, tokens[:, pos + 1]))
        pos_scores = pos_scores.at[:, gen].set(jnp.where(live, jnp.max(lprobs, axis=-1), pos_scores[:, gen]))
        length = jnp.where(live & (best == eos), gen + 1, length)
        return gen + 1, tokens, pos_scores, length, cache

    def cond(state):
        gen, _, _, length, _ = state
        return (gen <= max_len) & jnp.any(length == 0)

    _, tokens, pos_scores, length, _ = jax.lax.while_loop(
        cond, body, (jnp.int32(0), tokens, pos_scores, length, cache))
    score = pos_scores.sum(axis=1) / length.astype(jnp.float32) ** cfg.lenpen
    return SearchResult(tokens[:, None, P:], length[:, None], score[:, None], pos_scores[:, None])
