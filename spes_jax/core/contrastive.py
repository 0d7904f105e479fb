"""Contrastive SPES scores: why the model produced a word (the target) rather than a foil.

Pure ``jnp`` functions, jit- and vmap-friendly (indices may be traced): per perturbed input the
engine gives the teacher-forced probabilities of the target sequence y and of the foil sequence
y' (identical to y before the word's start s); a word-probability aggregator turns each into the
probability of the word (target pieces s..e, foil pieces s..e'), a scorer turns the four word
probabilities (original and perturbed, target and foil) into the mask's score r, and Eq. 3
accumulates r as usual, with one row. Semantics follow FBK-fairseq's gender scorers (the
"Unheard Alternative" paper); docs/contrastive.md states them and the deviations (NaN guards).

Positions index the target sequence: ``probs[i]`` is the distribution that predicts ``tokens[i]``
(no start-token shift). Prefix maps keep column 0 = the start token, so a word starting at s may
use columns 0..s.
"""

from __future__ import annotations

import string
import warnings
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import SpesError, SpesWarning
from ..text import WORD_START

WORD_PROBABILITIES = ("chain_rule", "length_norm", "first_only", "word_boundary")
SCORERS = ("predicted_diff", "predicted_ratio", "contrastive_raw_difference", "contrastive_ratio_difference",
           "contrastive_cross_ratio", "contrastive_parity_ratio")
NORMALIZERS = ("single_mean_std", "paired_min_max", "single_min_max")

# What may begin a word after Pimentel and Meister (2024): the marker, punctuation other than the
# apostrophe (which belongs to the preceding word), and the specials, which all start with "<".
_WORD_INITIAL = set(string.punctuation) - {"'"} | {WORD_START}


def begins_word(symbols: Sequence[str]) -> np.ndarray:
    """(V,) bool: the vocabulary entries that begin a word (the reference's ``bow_tokens_mask``)."""
    return np.array([bool(s) and s[0] in _WORD_INITIAL for s in symbols])


def token_probabilities(probs: jax.Array, tokens: jax.Array) -> jax.Array:
    """probs (S, V), tokens (S,) -> (S,) the probability of each forced piece."""
    return jnp.take_along_axis(probs, tokens[:, None].astype(jnp.int32), axis=-1)[:, 0]


def word_probability(probs: jax.Array, tokens: jax.Array, start: jax.Array, end: jax.Array, method: str,
                     bow: jax.Array | None = None) -> jax.Array:
    """Probability of the word at pieces start..end (inclusive) of one teacher-forced sequence.

    probs: (S, V) probabilities; tokens: (S,); start, end: scalar ints (end + 1 < S for
    word_boundary: the sequence continues after the word, at least with </s>); bow: (V,) bool from
    ``begins_word`` (word_boundary only). Returns a float32 scalar:
    chain_rule prod p_i; length_norm (prod p_i)^(1/n); first_only p_start; word_boundary
    prod p_i * B(end + 1) / B(start), B(i) = the probability mass of word-initial entries at step i.
    """
    p = token_probabilities(probs, tokens)
    pos = jnp.arange(p.shape[0])
    chain = jnp.prod(jnp.where((pos >= start) & (pos <= end), p, 1.0))
    if method == "chain_rule":
        return chain
    if method == "length_norm":
        return chain ** (1.0 / (end - start + 1))
    if method == "first_only":
        return p[start]
    if method == "word_boundary":
        if bow is None:
            raise SpesError("word_boundary needs the word-initial vocabulary mask (begins_word)")
        mass = lambda i: jnp.sum(jnp.where(bow, jax.lax.dynamic_index_in_dim(probs, i, keepdims=False), 0.0))
        return chain * mass(end + 1) / mass(start)
    raise SpesError(f"unknown word probability {method!r}; choose from {WORD_PROBABILITIES}")


def score(name: str, p_orig: jax.Array, p_pert: jax.Array, q_orig: jax.Array | None = None,
          q_pert: jax.Array | None = None) -> jax.Array:
    """A mask's score from the target word's probability on the original and perturbed input
    (p_orig, p_pert) and the foil's (q_orig, q_pert); any broadcastable shapes.

    predicted_diff p - p'; predicted_ratio p / p'; contrastive_raw_difference (p - p') - (q - q');
    contrastive_ratio_difference p / p' - q / q'; contrastive_cross_ratio p / q - p' / q';
    contrastive_parity_ratio p / (p + q) - p' / (p' + q'). Divisions are unguarded, as in the
    reference: a zero denominator gives inf/NaN (check the word probabilities upstream).
    """
    if name == "predicted_diff":
        return p_orig - p_pert
    if name == "predicted_ratio":
        return p_orig / p_pert
    if name not in SCORERS:
        raise SpesError(f"unknown scorer {name!r}; choose from {SCORERS}")
    if q_orig is None or q_pert is None:
        raise SpesError(f"{name} needs the foil's word probabilities")
    if name == "contrastive_raw_difference":
        return (p_orig - p_pert) - (q_orig - q_pert)
    if name == "contrastive_ratio_difference":
        return p_orig / p_pert - q_orig / q_pert
    if name == "contrastive_cross_ratio":
        return p_orig / q_orig - p_pert / q_pert
    return p_orig / (p_orig + q_orig) - p_pert / (p_pert + q_pert)


def word_pair_probabilities(decoder: Callable[[jax.Array, jax.Array | None], jax.Array],
                            target: tuple[jax.Array, jax.Array, jax.Array | None],
                            foil: tuple[jax.Array, jax.Array, jax.Array | None], start: jax.Array,
                            spans: tuple[jax.Array, jax.Array], method: str, bow: jax.Array | None = None
                            ) -> tuple[jax.Array, jax.Array]:
    """One input's target and foil word probabilities from its encoder output: two teacher-forced
    decoder passes over the same cross-attention keys/values.

    decoder: (prev (L,), keep (L,) multipliers of the decoder input embeddings or None) -> (L, V)
    logits of one encoder output (``core.sweep.decode``); target / foil: (prev (L,), tokens (L,),
    keep or None); spans: (end, foil_end). Returns P, Q: float32 scalars.
    """

    def probs(prev, keep):
        return jax.nn.softmax(decoder(prev, keep).astype(jnp.float32), axis=-1)

    return (word_probability(probs(target[0], target[2]), target[1], start, spans[0], method, bow),
            word_probability(probs(foil[0], foil[2]), foil[1], start, spans[1], method, bow))


def perturbed_word_probabilities(module, params, features: jax.Array, length: jax.Array, masks: jax.Array,
                                 target: tuple[jax.Array, jax.Array, jax.Array],
                                 foil: tuple[jax.Array, jax.Array, jax.Array], start: jax.Array,
                                 spans: tuple[jax.Array, jax.Array], method: str, bow: jax.Array | None = None
                                 ) -> tuple[jax.Array, jax.Array]:
    """Target and foil word probabilities on B perturbed inputs: one encoder pass per mask and two
    teacher-forced decoder passes (the engine's contrastive step without its mask sources and
    accumulation; ``core.contrastive_sweep`` is the engine's).

    features (T, C); length: valid frames; masks (B, T, C) multipliers of the features; target /
    foil: (prev (L,), tokens (L,), keep (B, L)) with L the sequence's length (L' for the foil);
    spans: (end, foil_end). Returns P_p, Q_p, each (B,).
    """
    def one(mask, keep, foil_keep):
        enc = module.apply({"params": params}, (features * mask)[None], length[None], method="encode")
        cross = module.apply({"params": params}, enc, method="cross_kv")

        def decoder(prev, k):
            return module.apply({"params": params}, prev[None], cross, enc.valid, k[None], method="decode")[0]

        return word_pair_probabilities(decoder, (*target[:2], keep), (*foil[:2], foil_keep), start, spans, method, bow)

    return jax.vmap(one)(masks, target[2], foil[2])


def causal_word_prefix(prefix: jax.Array, start: jax.Array) -> jax.Array:
    """(..., L) prefix map of a word starting at ``start`` -> columns after ``start`` zeroed (the
    word may use the start token and the pieces before it)."""
    return jnp.where(jnp.arange(prefix.shape[-1]) <= start, prefix, 0.0)


def _guarded(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(x), x, 0.0)


def normalize(name: str, spec: jax.Array, prefix: jax.Array, start: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Normalises one word's maps: spec (T, C), prefix (L,) whose valid cells are columns 0..start.

    single_mean_std: z-score of each map (sample std, n - 1); paired_min_max: one min-max over
    both maps; single_min_max: a min-max per map. Invalid prefix cells become 0. Where the
    reference divides by zero (a constant map, a single valid prefix cell) the result is 0 here
    instead of NaN/inf (the reference guards only single_mean_std).
    """
    valid = jnp.arange(prefix.shape[-1]) <= start
    spec = jnp.asarray(spec, jnp.float32)
    prefix = jnp.asarray(prefix, jnp.float32)
    if name == "single_mean_std":
        n = spec.size
        s = (spec - spec.mean()) / jnp.sqrt(jnp.sum((spec - spec.mean()) ** 2) / (n - 1))
        m = valid.sum()
        mean = jnp.sum(jnp.where(valid, prefix, 0.0)) / m
        std = jnp.sqrt(jnp.sum(jnp.where(valid, (prefix - mean) ** 2, 0.0)) / (m - 1))
        return _guarded(s), jnp.where(valid, _guarded((prefix - mean) / std), 0.0)
    lo_p, hi_p = jnp.min(jnp.where(valid, prefix, jnp.inf)), jnp.max(jnp.where(valid, prefix, -jnp.inf))
    lo_s, hi_s = spec.min(), spec.max()
    if name == "paired_min_max":
        lo_s = lo_p = jnp.minimum(lo_s, lo_p)
        hi_s = hi_p = jnp.maximum(hi_s, hi_p)
    elif name != "single_min_max":
        raise SpesError(f"unknown normaliser {name!r}; choose from {NORMALIZERS}")
    s = _guarded((spec - lo_s) / (hi_s - lo_s))
    return s, jnp.where(valid, _guarded((prefix - lo_p) / (hi_p - lo_p)), 0.0)


def contrastive_spans(target: Sequence[str], foil: Sequence[str], start: int | None = None,
                      end: int | None = None, strict: bool = True) -> tuple[int, int, int]:
    """Checks a target/foil pair of piece sequences (each ending with </s>) and the word's span.

    Without start/end the span is where the two differ (their common prefix and suffix are
    shared context). Returns (start, end, foil_end), inclusive target positions. Errors: a foil
    that differs from the target before the word or after it, an empty word, a span reaching the
    final </s>, and (strict) a span that cuts a word: its first piece must begin a word (or the
    sequence) and the piece after it must begin the next word (or be </s>).
    """
    target, foil = list(target), list(foil)
    for name, seq in (("target", target), ("foil", foil)):
        if not seq or seq[-1] != "</s>":
            raise SpesError(f"the {name} pieces must end with </s>")
    if target == foil:
        raise SpesError("the foil is identical to the target")
    if start is None or end is None:
        start = next(i for i, (a, b) in enumerate(zip(target, foil)) if a != b)
        common = next(i for i, (a, b) in enumerate(zip(target[::-1], foil[::-1])) if a != b)
        common = min(common, len(target) - start, len(foil) - start)
        end = len(target) - common - 1
        if end < start:
            raise SpesError(f"the foil adds {' '.join(foil[start:start + len(foil) - len(target)])!r} to the target: "
                            "a contrastive explanation compares a word of the target with the foil's word in its "
                            "place; replace a word instead of adding one")
        # widen the differing pieces to whole words (e.g. '▁wait ress' vs '▁wait er')
        is_initial = lambda piece: bool(begins_word([piece])[0])
        while start > 0 and not is_initial(target[start]):
            start -= 1
        while end + 1 < len(target) - 1 and not is_initial(target[end + 1]):
            end += 1
        words = sum(map(is_initial, target[start + 1:end + 1])) + 1
        if words > 1:
            warnings.warn(SpesWarning(
                f"the target and the foil differ in {words} words: {' '.join(target[start:end + 1])!r} vs "
                f"{' '.join(foil[start:end + 1 + len(foil) - len(target)])!r} is explained as one word (one "
                "changed word gives the clearest contrast)"), stacklevel=2)
    start, end = int(start), int(end)
    if not 0 <= start <= end < len(target) - 1:
        raise SpesError(f"word span ({start}, {end}) is outside the target's pieces 0..{len(target) - 2} "
                        f"(the word must be followed by at least </s>)")
    foil_end = end + len(foil) - len(target)
    if foil[:start] != target[:start]:
        i = next(i for i, (a, b) in enumerate(zip(target, foil)) if a != b)
        raise SpesError(f"the foil tokenises to a different prefix than the target: piece {i} is "
                        f"{foil[i]!r} in the foil, {target[i]!r} in the target (the word starts at {start})")
    if foil_end < start or foil[foil_end + 1:] != target[end + 1:]:
        raise SpesError(f"the foil differs from the target after the word ({start}, {end}): only the word "
                        f"may change ({' '.join(target[start:end + 1])!r} -> the foil's pieces from {start})")
    if strict:
        initial = begins_word([target[start], foil[start], target[end + 1]])
        if (start > 0 and not initial[:2].all()) or not initial[2]:
            raise SpesError(f"word span ({start}, {end}) does not match piece boundaries: "
                            f"{' '.join(target[max(start - 1, 0):end + 2])!r} (a word begins with "
                            f"'{WORD_START}' or punctuation, and the piece after it must begin the next word)")
    return start, end, foil_end
