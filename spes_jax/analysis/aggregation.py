"""Aggregation of SPES maps: words and phrases, time spans, frequency, sentence.

The semantics are those of FBK-fairseq's aggregators (``phrase_and_token``, ``phrase_and_word``,
``time_aggregator``, ``frequency_embed``, ``sentence``), restated in token indices and with errors
where the reference silently produces NaN, loses a span or deletes an utterance (docs/aggregation.md).

Index convention: spans are inclusive and index ``Explanation.tokens`` (0 = the first generated
piece); the final </s> (index K-1) is never part of a span, its row is asked for with
``include_eos``. Prefix maps keep their column 0 = the start token, column j = tokens[j-1].
The functions work on any trailing axes of the prefix map (the reference's (K, L, E) layout too).
``by_words``, ``by_time``, ``by_frequency`` and ``by_sentence`` apply them to an ``Explanation`` (and
can be chained: words, then time, then frequency; sentence last).
"""

from __future__ import annotations

import dataclasses
import json
import os
import string
from typing import Sequence

import numpy as np

from ..errors import SpesError
from ..explanation import Explanation
from ..text import WORD_START, word_groups, word_text

Span = tuple[int, int]


def _is_punctuation(piece: str) -> bool:
    # The reference's test: the piece without markers is a substring of string.punctuation, so
    # "<=>" and a lone marker count, "?!" and "</s>" do not.
    return piece.strip(WORD_START) in string.punctuation


def word_spans(pieces: Sequence[str]) -> tuple[list[str], list[Span]]:
    """Groups SentencePiece pieces into words: a piece starting with the marker opens a word,
    continuation pieces join the open word, a punctuation piece is a word of its own; a
    continuation piece with no open word (at the start, or right after punctuation) is a word of
    its own. Returns the words and their inclusive piece spans."""
    words: list[str] = []
    spans: list[Span] = []
    current, start = "", 0

    def close(end: int) -> None:
        nonlocal current
        if current:
            words.append(current)
            spans.append((start, end))
            current = ""

    for i, piece in enumerate(pieces):
        if _is_punctuation(piece):
            close(i - 1)
            words.append(piece.strip(WORD_START))
            spans.append((i, i))
        elif piece.startswith(WORD_START):
            close(i - 1)
            current, start = piece[1:], i
        elif current:
            current += piece
        else:
            words.append(piece)
            spans.append((i, i))
    close(len(pieces) - 1)
    return words, spans


WORD_GROUPINGS = ("spoken", "fbk")


def _words(pieces: Sequence[str], grouping: str) -> tuple[list[str], list[Span]]:
    """The words of ``pieces`` under ``grouping`` (``by_words``) and their inclusive piece spans."""
    if grouping == "fbk":
        return word_spans(pieces)
    if grouping != "spoken":
        raise SpesError(f"word grouping must be one of {', '.join(WORD_GROUPINGS)}, got {grouping!r}")
    groups = word_groups(list(pieces))
    return [word_text(pieces, g) for g in groups], [(g[0], g[-1]) for g in groups]


def check_token_spans(spans: Sequence[Span], n_tokens: int, what: str = "word span") -> list[Span]:
    """Validates inclusive spans over the K-1 generated pieces (the final </s> excluded)."""
    if not isinstance(spans, (list, tuple)):
        raise SpesError(f"{what}s must be a list of [start, end] pairs, got {spans!r}")
    out = []
    for span in spans:
        try:
            s, e = (int(x) for x in span)
        except (TypeError, ValueError):
            raise SpesError(f"{what} {span!r} is not a pair of integers") from None
        if not 0 <= s <= e < n_tokens - 1:
            raise SpesError(f"{what} ({s}, {e}) is outside the generated pieces 0..{n_tokens - 2} "
                            f"(inclusive token indices; the final </s> is requested with include_eos)")
        out.append((s, e))
    if not out:
        raise SpesError(f"empty list of {what}s (pass None for the automatic words)")
    return out


def aggregate_rows(spec: np.ndarray, prefix: np.ndarray, spans: Sequence[Span], include_eos: bool
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Rows averaged per phrase (the reference's ``phrase_and_token``).

    spec: (K, T, C); prefix: (K, K, ...); spans: inclusive token spans (validated). A phrase's
    prefix row keeps only the columns 0..s (the start token and the pieces before the phrase).
    With include_eos the unchanged </s> row is appended last. Returns (n, T, C), (n, K, ...).
    """
    rows_s, rows_p = [], []
    for s, e in spans:
        rows_s.append(spec[s:e + 1].astype(np.float64).mean(0))
        p = prefix[s:e + 1].astype(np.float64).mean(0)
        p[s + 1:] = 0.0
        rows_p.append(p)
    if include_eos:
        rows_s.append(spec[-1].astype(np.float64))
        rows_p.append(prefix[-1].astype(np.float64))
    if not rows_s:
        raise SpesError("no phrase to aggregate: give at least one span or include_eos")
    return np.stack(rows_s).astype(np.float32), np.stack(rows_p).astype(np.float32)


def aggregate_columns(prefix: np.ndarray, column_spans: Sequence[Span]) -> np.ndarray:
    """Prefix columns averaged per inclusive column span: (n, L, ...) -> (n, len(column_spans), ...)."""
    cols = [prefix[:, s:e + 1].astype(np.float64).mean(1) for s, e in column_spans]
    return np.stack(cols, axis=1).astype(np.float32)


def check_frame_spans(spans: Sequence[Span], n_frames: int) -> list[Span]:
    """Validates inclusive frame spans against the T frames of the map."""
    if not isinstance(spans, (list, tuple)):
        raise SpesError(f"time spans must be a list of [start, end] pairs, got {spans!r}")
    out = []
    for span in spans:
        try:
            s, e = (int(x) for x in span)
        except (TypeError, ValueError):
            raise SpesError(f"time span {span!r} is not a pair of integers") from None
        if not 0 <= s <= e < n_frames:
            raise SpesError(f"time span ({s}, {e}) is outside the {n_frames} frames 0..{n_frames - 1} "
                            f"(inclusive frame indices)")
        out.append((s, e))
    if not out:
        raise SpesError("no time span given (pass None for the mean over all frames)")
    return out


def aggregate_time(spec: np.ndarray, spans: Sequence[Span] | None) -> np.ndarray:
    """(K, T, C) -> (K, n_spans, C): each validated span's mean over its frames; None: (K, 1, C)."""
    if spans is None:
        return spec.astype(np.float64).mean(1, keepdims=True).astype(np.float32)
    cols = [spec[:, s:e + 1].astype(np.float64).mean(1) for s, e in spans]
    return np.stack(cols, axis=1).astype(np.float32)


def frames_from_seconds(intervals: Sequence[tuple[float, float]], n_frames: int, shift_s: float
                        ) -> list[Span]:
    """(start s, end s) intervals -> inclusive frame spans: frame t starts at t * shift_s. An end
    past the last frame (the final partial window) is clipped to it; a start past it is an error."""
    out = []
    for start, end in intervals:
        s = int(np.floor(start / shift_s + 1e-6))
        e = max(s, int(np.ceil(end / shift_s - 1e-6)) - 1)
        if s >= n_frames or start > end:
            raise SpesError(f"time interval ({start:.3f} s, {end:.3f} s) is outside the audio "
                            f"({n_frames} frames, {n_frames * shift_s:.2f} s)")
        out.append((s, min(e, n_frames - 1)))
    return out


def read_spans(path: str, what: str) -> dict[str, list]:
    """A JSON span file: {utterance id: [[start, end], ...]} (inclusive), or for phrases
    {id: {"spans": [[start, end], ...], "phrases": [label, ...]}}."""
    if not os.path.isfile(path):
        raise SpesError(f"{what} file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise SpesError(f"{path}: not a JSON {what} file ({e})") from None
    if not isinstance(data, dict):
        raise SpesError(f"{path}: expected {{utterance id: [[start, end], ...]}}")
    return data


def read_textgrid(path: str, tier: str | None = None) -> list[tuple[str, float, float]]:
    """Labelled intervals (label, start s, end s) of a Praat TextGrid (long text format) interval
    tier: ``tier`` by name, else the first; intervals with an empty label (pauses) are left out."""
    import re

    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise SpesError(f"{path}: cannot read the TextGrid ({e})") from None
    tiers = re.split(r'\n\s*item \[\d+\]:', text)[1:]
    for block in tiers:
        name = re.search(r'name = "(.*)"', block)
        if 'class = "IntervalTier"' not in block or (tier and (not name or name.group(1) != tier)):
            continue
        found = re.findall(r'xmin = ([\d.eE+-]+)\s*xmax = ([\d.eE+-]+)\s*text = "(.*)"', block)
        return [(label, float(a), float(b)) for a, b, label in found if label.strip()]
    raise SpesError(f"{path}: no interval tier{f' named {tier!r}' if tier else ''} in the TextGrid")


def time_spans_for(path: str, n_frames: dict[str, int]) -> dict[str, list[Span]]:
    """Frame spans per utterance from: a JSON frame-span file {id: [[start, end], ...]}; a CTM or
    word-timing JSON file (seconds); or a folder of ``<id>.TextGrid`` files (seconds; the first
    interval tier, pauses left out). Seconds are converted with ``frames_from_seconds``."""
    from ..audio import FRAME_SHIFT_S
    from ..manifest import read_word_timings

    if os.path.isdir(path):
        grids = {uid: os.path.join(path, f"{uid}.TextGrid") for uid in n_frames}
        return {uid: frames_from_seconds([(s, e) for _, s, e in read_textgrid(g)], n_frames[uid], FRAME_SHIFT_S)
                for uid, g in grids.items() if os.path.isfile(g)}
    if not os.path.isfile(path):
        raise SpesError(f"time-span file not found: {path}")
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if head.startswith("{") and '"words"' not in head:
        return read_spans(path, "time-span")
    timings = read_word_timings(path)
    return {uid: frames_from_seconds([(s, e) for _, s, e in timings[uid]], n_frames[uid], FRAME_SHIFT_S)
            for uid in n_frames if uid in timings}


# -- on explanations: each returns a new Explanation and records the step in ``meta["aggregation"]`` ---------

def _aggregated(exp: Explanation, step: dict, **changes) -> Explanation:
    done = {s["op"] for s in exp.aggregation}
    if "sentence" in done or (step["op"] in ("words", "time") and step["op"] in done):
        raise SpesError(f"{exp.id}: cannot aggregate by {step['op']} after {sorted(done)}")
    return dataclasses.replace(exp, meta={**exp.meta, "aggregation": exp.aggregation + [step]}, **changes)


def by_words(exp: Explanation, spans: Sequence[Span] | None = None, *, grouping: str = "spoken",
             include_eos: bool = True, columns: bool = False, labels: list[str] | None = None) -> Explanation:
    """Rows averaged per word or per given phrase span.

    spans: inclusive (start, end) indices into ``exp.tokens`` (None: automatic words). grouping: how
    pieces form the automatic words (and the prefix columns' words): "spoken", the words of the
    figures, the report and the plausibility analyses (``text.word_groups``: punctuation inside a
    word belongs to it, "ill-disposed" is one word), or "fbk", the grouping of FBK's SPES code
    (``get_words``, here ``word_spans``: four words there). Each row keeps the prefix columns before its phrase;
    include_eos appends the </s> row last; columns also averages the prefix columns per word.
    Returns an Explanation with maps (n, T, C) and (n, K) or (n, n_words + 1), ``tokens`` = the row
    labels.
    """
    if exp.aggregation:
        raise SpesError(f"{exp.id}: aggregate words first (rows must still be tokens)")
    if spans is None:
        phrases, spans = _words(exp.tokens[:-1], grouping)
    else:
        spans = check_token_spans(spans, len(exp.tokens))
        phrases = labels or ["".join(exp.tokens[s:e + 1]).replace(WORD_START, " ").strip() for s, e in spans]
        if len(phrases) != len(spans):
            raise SpesError(f"{len(labels)} labels for {len(spans)} spans")
    spec, prefix = aggregate_rows(exp.spectrogram_saliency, exp.prefix_saliency, spans, include_eos)
    prefix_tokens = exp.prefix_tokens or ["</s>"] + list(exp.tokens[:-1])
    if columns:
        prefix_tokens, col_spans = _words(prefix_tokens, grouping)
        prefix = aggregate_columns(prefix, col_spans)
    step = {"op": "words", "spans": [list(s) for s in spans], "include_eos": include_eos, "columns": columns,
            "grouping": grouping}
    return _aggregated(exp, step, tokens=list(phrases) + ["</s>"] * include_eos, spectrogram_saliency=spec,
                       prefix_saliency=prefix, prefix_tokens=prefix_tokens)


def by_time(exp: Explanation, spans: Sequence[Span] | None = None) -> Explanation:
    """Spectrogram maps averaged over each inclusive frame span: (n, T, C) -> (n, n_spans, C) (None: over
    all frames, (n, 1, C)); e.g. per phone of a forced alignment. Prefix maps unchanged."""
    if spans is not None:
        spans = check_frame_spans(spans, exp.spectrogram_saliency.shape[1])
    step = {"op": "time", "spans": None if spans is None else [list(s) for s in spans]}
    return _aggregated(exp, step, spectrogram_saliency=aggregate_time(exp.spectrogram_saliency, spans))


def by_frequency(exp: Explanation) -> Explanation:
    """Spectrogram maps averaged over channels: (n, T, C) -> (n, T, 1)."""
    spec = exp.spectrogram_saliency.astype(np.float64).mean(2, keepdims=True).astype(np.float32)
    return _aggregated(exp, {"op": "frequency"}, spectrogram_saliency=spec)


def by_sentence(exp: Explanation) -> Explanation:
    """Both maps averaged over their rows: (1, T, C) and (1, L) (of the maps as they are: ``normalized()``
    first for the paper's sentence-level map)."""
    mean = lambda x: x.astype(np.float64).mean(0, keepdims=True).astype(np.float32)
    return _aggregated(exp, {"op": "sentence"}, tokens=["<sentence>"], spectrogram_saliency=mean(exp.spectrogram_saliency),
                       prefix_saliency=mean(exp.prefix_saliency))
