"""Plausibility of explanations against word timings (paper, section 8.1).

A word's saliency over time is the mean of its tokens' normalised spectrogram maps, maximised over
frequency. It is plausible when it is higher inside the word's span than outside; over many words
this is tested with a paired Student's t-test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .explanation import Explanation

_SPACE = "\u2581"
FRAME_SHIFT_S = 0.01


def token_words(pieces: list[str]) -> list[int]:
    """Word index of every SentencePiece token (-1 for </s> and for punctuation-only tokens)."""
    out, word = [], -1
    for p in pieces:
        text = p.replace(_SPACE, "")
        if p == "</s>" or (text and not any(ch.isalnum() for ch in text)):
            out.append(-1)
            continue
        if p.startswith(_SPACE) or word < 0:
            word += 1
        out.append(word)
    return out


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

    pairs: explanations with the (word, start s, end s) spans of the words their hypothesis says, in
    order; utterances whose hypothesis has a different number of words are left out by the caller.
    """
    from scipy import stats

    inside, outside = [], []
    for exp, spans in pairs:
        curves = word_saliency(exp)
        if len(curves) != len(spans):
            raise ValueError(f"{exp.id}: {len(curves)} hypothesis words but {len(spans)} timed words")
        T = exp.spectrogram_saliency.shape[1]
        frames = np.arange(T) * FRAME_SHIFT_S + 0.0125  # window centres (25 ms window, 10 ms shift)
        for curve, (_, start, end) in zip(curves, spans):
            span = (frames >= start) & (frames < end)
            if span.any() and (~span).any():
                inside.append(curve[span].mean())
                outside.append(curve[~span].mean())
    inside, outside = np.array(inside), np.array(outside)
    t, p = stats.ttest_rel(inside, outside, alternative="greater")
    return TimeAlignment(inside, outside, float(t), float(p), len(inside), len(pairs))
