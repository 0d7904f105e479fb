"""Forced alignment: where each word (and phone) of a known transcript lies in recorded speech.

The spans are independent of any explained model, so they can judge explanations (time alignment,
``spes_jax.analysis.plausibility``). The aligner is PocketSphinx 5 (optional dependency,
``pip install 'spes-jax[align]'``) with the US English acoustic model and CMU pronouncing dictionary
bundled in its wheel: a Viterbi pass constrained to the transcript's words, then a second pass for the
phones, both on 10 ms frames. Frame i covers [i, i + 1) x 10 ms, so a segment over frames a..b
(inclusive) spans [a x 0.01 s, (b + 1) x 0.01 s).

Transcripts are aligned in their spoken form (``spoken_form``): case-folded, numerals written out,
keypad symbols read out, punctuation dropped. The same function normalises hypotheses and references
before a WER, so "Press 1." and "press one" count as the same words.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from ._io import write_text
from .audio import SAMPLE_RATE
from .errors import SpesError

FRAME_S = 0.01  # PocketSphinx's frame shift (frate 100)

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SYMBOLS = {"*": "star", "#": "pound", "&": "and", "%": "percent", "@": "at", "+": "plus"}


def number_words(n: int) -> str:
    """English words of 0 <= n < 10**9, e.g. 1250 -> "one thousand two hundred fifty"."""
    if not 0 <= n < 10**9:
        raise SpesError(f"cannot write out the number {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError  # unreachable: every n >= 100 has a size above


def _numeral(digits: str) -> str:
    # "007" is read digit by digit; other numerals as numbers
    if len(digits) > 1 and digits.startswith("0"):
        return " ".join(_ONES[int(d)] for d in digits)
    return number_words(int(digits))


def spoken_form(text: str) -> str:
    """The words as spoken: NFKC, case-folded, numerals and keypad symbols written out, hyphens split,
    other punctuation dropped (apostrophes inside words kept: "party's"). "Press 1, then #." ->
    "press one then pound"; "3D" -> "three d"."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[*#&%@+]", lambda m: f" {_SYMBOLS[m.group()]} ", text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = re.sub(r"\d+", lambda m: f" {_numeral(m.group())} ", text)
    text = re.sub(r"[^\w']+", " ", text)  # hyphens, dots, commas, ... separate words
    words = (w.strip("'") for w in text.split())
    return " ".join(w for w in words if w)


@dataclass(frozen=True)
class Span:
    label: str
    start: float  # seconds
    end: float  # seconds, exclusive


@dataclass(frozen=True)
class Alignment:
    words: list[Span]  # the transcript's words in order (silences and fillers left out)
    phones: list[Span]  # their phones (CMU ARPAbet, no stress), in order


def frame_spans(segments: list[tuple[str, int, int]]) -> list[Span]:
    """Spans in seconds of (label, first frame, last frame inclusive) segments, without the aligner's
    silence and filler segments (labels in angle or square brackets: ``<sil>``, ``[NOISE]``) and its
    ``SIL`` phone; alternative pronunciations ("the(2)") take the word's own spelling."""
    out = []
    for label, first, last in segments:
        if label[:1] in "<[" or label == "SIL":
            continue
        # rounded to the frame: 0.81 s, not 0.8200000000000001
        out.append(Span(re.sub(r"\(\d+\)$", "", label), round(first * FRAME_S, 2), round((last + 1) * FRAME_S, 2)))
    return out


class Aligner:
    """A PocketSphinx decoder set up once (loading the model takes about half a second)."""

    def __init__(self, lexicon: dict[str, str] | None = None):
        """lexicon: pronunciations to add to the dictionary, word -> ARPAbet phones without stress
        ("unmute": "AH N M Y UW T")."""
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise SpesError("forced alignment needs PocketSphinx 5: pip install 'spes-jax[align]'") from None
        self._decoder = Decoder(samprate=SAMPLE_RATE, bestpath=False, loglevel="FATAL")
        for word, phones in (lexicon or {}).items():
            self._decoder.add_word(word, phones, update=True)

    def unknown_words(self, words: list[str]) -> list[str]:
        """The words the pronouncing dictionary lacks (an utterance with any cannot be aligned)."""
        return [w for w in words if self._decoder.lookup_word(w) is None]

    def _decode(self, pcm: bytes) -> None:
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()

    def __call__(self, waveform: np.ndarray, transcript: str) -> Alignment:
        """Aligns ``transcript`` (spoken form, see ``spoken_form``) to a (N,) 16 kHz waveform in [-1, 1)."""
        words = transcript.split()
        unknown = self.unknown_words(words)
        if not words or unknown:
            raise SpesError(f"cannot align {transcript!r}: " +
                            (f"not in the dictionary: {' '.join(unknown)}" if words else "empty transcript"))
        pcm = (np.clip(waveform, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()
        self._decoder.set_align_text(" ".join(words))
        self._decode(pcm)
        if self._decoder.hyp() is None:
            raise SpesError(f"the aligner found no path through {transcript!r}")
        self._decoder.set_alignment()
        self._decode(pcm)
        # read everything while the alignment object is alive: its entries point into its memory
        alignment = self._decoder.get_alignment()
        word_frames, phone_frames = [], []
        for w in alignment:
            word_frames.append((w.name, w.start, w.start + w.duration - 1))
            phone_frames += [(p.name, p.start, p.start + p.duration - 1) for p in w]
        aligned, phones = frame_spans(word_frames), frame_spans(phone_frames)
        if [s.label for s in aligned] != words:
            raise SpesError(f"the aligner returned {[s.label for s in aligned]} for {words}")
        return Alignment(aligned, phones)


def write_ctm(path: str | os.PathLike, spans: dict[str, list[Span]]) -> None:
    """A CTM file (``id 1 start duration label``, seconds to the centisecond frame) of every id's spans,
    the word-timing format ``spes_jax.manifest.read_word_timings`` reads."""
    write_text(path, "".join(f"{uid} 1 {s.start:.2f} {s.end - s.start:.2f} {s.label}\n"
                             for uid, ss in spans.items() for s in ss))
