"""Plausibility of explanations against word timings (paper, section 8.1).

A word's saliency over time is the mean of its tokens' normalised spectrogram maps, maximised over
frequency. It is plausible when it is higher inside the word's span than outside; over many words
this is tested with a paired Student's t-test.
"""

from __future__ import annotations

import difflib
import unicodedata
import warnings
from dataclasses import dataclass

import numpy as np

from ..alignment import spoken_form
from ..audio import FRAME_SHIFT_S
from ..errors import SpesError, SpesWarning, count
from ..explanation import Explanation
from ..manifest import read_word_timings
from ..text import WORD_START, token_words


def hypothesis_words(pieces: list[str]) -> list[str]:
    """The spoken words of a hypothesis, in the order and numbering of ``token_words``."""
    index = token_words(pieces)
    words = [""] * (max(index, default=-1) + 1)
    for piece, w in zip(pieces, index):
        if w >= 0:
            words[w] += piece.replace(WORD_START, "")
    return words


def normalize_word(word: str) -> str:
    """Spelling-normalised form for matching: Unicode NFKC, case-folded, letters and digits only."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", word).casefold() if ch.isalnum())


def word_saliency(exp: Explanation) -> list[np.ndarray]:
    """Per spoken word of the explained hypothesis: (T,) saliency over frames."""
    norm = exp if exp.is_normalized else exp.normalized()
    index = token_words(exp.tokens)
    curves = []
    for w in range(max(index, default=-1) + 1):
        rows = [k for k, i in enumerate(index) if i == w]
        curves.append(norm.spectrogram_saliency[rows].mean(axis=0).max(axis=1))
    return curves


@dataclass(frozen=True)
class TimeAlignment:
    inside: np.ndarray  # mean saliency inside each word's span
    outside: np.ndarray  # mean saliency outside it
    t: float
    p: float
    n_words: int
    n_utterances: int


def time_alignment(pairs: list[tuple[Explanation, list[tuple[str, float, float]]]]) -> TimeAlignment:
    """Paired t-test of inside- vs outside-span saliency over every word of every utterance.

    pairs: explanations with one (word, start s, end s) span, or None (not timed), per hypothesis
    word (see ``match_timings``).
    """
    from scipy import stats

    inside, outside = [], []
    for exp, spans in pairs:
        curves = word_saliency(exp)
        if len(curves) != len(spans):
            raise ValueError(f"{exp.id}: {len(curves)} hypothesis words but {len(spans)} timed words")
        T = exp.spectrogram_saliency.shape[1]
        frames = np.arange(T) * FRAME_SHIFT_S + 0.0125  # window centres (25 ms window, 10 ms shift)
        for curve, timed in zip(curves, spans):
            if timed is None:
                continue
            span = (frames >= timed[1]) & (frames < timed[2])
            if span.any() and (~span).any():
                inside.append(curve[span].mean())
                outside.append(curve[~span].mean())
    inside, outside = np.array(inside), np.array(outside)
    t, p = stats.ttest_rel(inside, outside, alternative="greater")
    return TimeAlignment(inside, outside, float(t), float(p), len(inside), len(pairs))


def _matched(words: list[str], timed: list[str]) -> dict[int, list[int]]:
    """Hypothesis word index -> the indices of the timed words it matches (``align_words``)."""
    def spoken(labels: list[str]) -> tuple[list[str], list[int]]:
        parts = [spoken_form(w).split() or [normalize_word(w)] for w in labels]
        return [p for ps in parts for p in ps], [k for k, ps in enumerate(parts) for _ in ps]

    (a, word_of_a), (b, word_of_b) = spoken(words), spoken(timed)
    matched: dict[int, list[int]] = {}
    for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        for i in range(block.size):
            matched.setdefault(word_of_a[block.a + i], []).append(word_of_b[block.b + i])
    return matched


def timed_words(pieces: list[str], timed: list[tuple[str, float, float]] | None) -> list[list[int]]:
    """Per token of a hypothesis, the indices in ``timed`` of the timed words its word matches by
    spoken form (``align_words``: "ill-disposed" both "ill" and "disposed"); none for punctuation,
    </s> and words with no timed counterpart."""
    if not timed:
        return [[] for _ in pieces]
    matched = _matched(hypothesis_words(pieces), [w for w, _, _ in timed])
    return [matched.get(w, []) for w in token_words(pieces)]


def align_words(words: list[str], timed: list[tuple[str, float, float]]) -> list[tuple[str, float, float] | None]:
    """The timed span of each hypothesis word, matched by spoken form in order (the longest common
    subsequence of the two lists of spoken words, ``alignment.spoken_form``: "10" and "ten" match, and
    "150" spoken as "one hundred fifty" spans from "one" to "fifty"); None for a word with no timed
    counterpart."""
    spans: list = [None] * len(words)
    for k, js in _matched(words, [w for w, _, _ in timed]).items():
        first, last = timed[min(js)], timed[max(js)]
        spans[k] = first if first is last else (" ".join(w for w, _, _ in timed[min(js):max(js) + 1]), first[1], last[2])
    return spans


def match_timings(explanations, timings: dict[str, list[tuple[str, float, float]]], min_matched: float = 0.5):
    """Pairs explanations with the spans of their hypothesis words; returns (pairs, skipped ids).

    Words are matched by content (``align_words``), never by position: a hypothesis word gets the
    span of the same word in the timed transcript. An utterance is skipped when it has no timings or
    when fewer than ``min_matched`` of its hypothesis words are found there (timings of another
    transcript or language).
    """
    pairs, skipped = [], []
    for exp in explanations:
        words = hypothesis_words(exp.tokens)
        spans = align_words(words, timings[exp.id]) if exp.id in timings else []
        if not words or sum(s is not None for s in spans) < min_matched * len(words):
            skipped.append(exp.id)
        else:
            pairs.append((exp, spans))
    return pairs, skipped


def read_timings(path, explanations) -> dict[str, list[tuple[str, float, float]]]:
    """The word timings in ``path`` (CTM or JSON) of those ``explanations`` whose hypothesis words they
    time (``match_timings``). One error when the file times none of them or none of their hypotheses,
    one warning naming the utterances it times other words for, one counting the hypothesis words it
    has no timing for: drawing or testing maps against the timings of other words would be silently
    wrong."""
    explanations = list(explanations)
    timings = read_word_timings(path)
    timed = [e for e in explanations if e.id in timings]
    if not timed:
        ids = ", ".join(e.id for e in explanations[:3]) + (", ..." if len(explanations) > 3 else "")
        raise SpesError(f"{path} has no timings for {ids} (it times {', '.join(list(timings)[:3]) or 'nothing'}"
                        f"{', ...' if len(timings) > 3 else ''})")
    pairs, skipped = match_timings(timed, timings)
    said = lambda e: f"{e.id}: said {' '.join(hypothesis_words(e.tokens))!r}, timed " \
                     f"{' '.join(w for w, _, _ in timings[e.id])!r}"
    if not pairs:
        raise SpesError(f"the words in {path} do not match the hypotheses (e.g. {said(timed[0])}); the timings "
                        "must be of the words the model said, in its language")
    if skipped:
        first = next(e for e in timed if e.id == skipped[0])
        warnings.warn(SpesWarning(f"{path}: the words of {count(len(skipped), 'utterance')} do not match their "
                                  f"hypotheses (e.g. {said(first)}); they are left without word timings"))
    missing = [(exp.id, word) for exp, spans in pairs for word, span in zip(hypothesis_words(exp.tokens), spans)
               if span is None]
    if missing:
        n_words = sum(len(spans) for _, spans in pairs)
        warnings.warn(SpesWarning(f"{path}: {len(missing)} of the {count(n_words, 'hypothesis word')} "
                                  f"{'has' if len(missing) == 1 else 'have'} no timing "
                                  f"(e.g. {missing[0][1]!r} in {missing[0][0]}); they are left out of the time "
                                  "alignment"))
    return {exp.id: timings[exp.id] for exp, _ in pairs}


@dataclass(frozen=True)
class TokenKurtosis:
    token: str
    kurtosis: float  # mean over occurrences (Fisher's definition: 0 for a normal distribution)
    count: int


def kurtosis_ranking(explanations, min_count: int = 1) -> list[TokenKurtosis]:
    """Tokens by the mean kurtosis of their normalised spectrogram maps, most peaked first
    (paper, section 8.2: the paper keeps tokens seen over 100 times; ``min_count`` sets that)."""
    from scipy import stats

    values: dict[str, list[float]] = {}
    for exp in explanations:
        norm = exp if exp.is_normalized else exp.normalized()
        K = norm.spectrogram_saliency.shape[0]
        k = stats.kurtosis(norm.spectrogram_saliency.reshape(K, -1).astype(np.float64), axis=1)
        for token, v in zip(exp.tokens, k):
            if np.isfinite(v):
                values.setdefault(token, []).append(float(v))
    ranking = [TokenKurtosis(t, float(np.mean(v)), len(v)) for t, v in values.items() if len(v) >= min_count]
    return sorted(ranking, key=lambda r: -r.kurtosis)


@dataclass(frozen=True)
class PositionalSaliency:
    """Normalised prefix saliency by position (paper, section 8.3), over every explained token with
    at least one previous output token: ``start`` (position 0), ``latest`` (the token just before the
    explained one), ``intermediate`` (everything between). ``tests``: Welch t-tests of the means."""

    start: np.ndarray
    latest: np.ndarray
    intermediate: np.ndarray
    tests: dict  # "latest>start", "start>intermediate", "latest>intermediate" -> (t, one-sided p)


def positional_saliency(explanations) -> PositionalSaliency:
    from scipy import stats

    start, latest, inter = [], [], []
    for exp in explanations:
        p = (exp if exp.is_normalized else exp.normalized()).prefix_saliency
        for k in range(1, p.shape[0]):
            start.append(p[k, 0])
            latest.append(p[k, k])
            inter.extend(p[k, 1:k])
    start, latest, inter = (np.array(x, np.float64) for x in (start, latest, inter))

    def test(a, b):
        if len(a) < 2 or len(b) < 2:
            return (float("nan"), float("nan"))
        t, pv = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
        return (float(t), float(pv))

    return PositionalSaliency(start, latest, inter, {"latest>start": test(latest, start),
                                                     "start>intermediate": test(start, inter),
                                                     "latest>intermediate": test(latest, inter)})
