"""Continuous espeak-ng speech with word timings from espeak-ng's own synthesis events.

espeak-ng's C library (Debian package ``libespeak-ng1``) reports, through its synthesis callback, an
event for the start of every word and (when enabled at initialisation) of every phoneme, each with
the index of the output sample at which it happens. A word therefore starts at its WORD event's
sample and ends at the first later event that starts another word, a pause phoneme (``_``, ``_:``,
...), or the end of the clause; both come from the synthesiser, no alignment is estimated. The
library is loaded through ctypes on first use, only to build data.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import threading

import numpy as np

from ..audio import SAMPLE_RATE
from ..errors import SpesError

_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: AUDIO_OUTPUT_SYNCHRONOUS
_PHONEME_EVENTS, _DONT_EXIT = 0x0001, 0x8000  # espeak_Initialize options
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_POS_CHARACTER, _CHARS_UTF8, _SSML = 1, 1, 0x10
_LIST_TERMINATED, _WORD, _END, _MSG_TERMINATED, _PHONEME = 0, 1, 5, 6, 7


class _Event(ctypes.Structure):  # espeak_EVENT (speak_lib.h)
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _Engine:
    """The process-wide espeak-ng instance (the library keeps global state, hence one lock)."""

    def __init__(self):
        path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(path)
        except OSError:
            raise SpesError("libespeak-ng is not installed (Debian: apt-get install libespeak-ng1)") from None
        self.rate = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, None, _PHONEME_EVENTS | _DONT_EXIT)
        if self.rate <= 0:
            raise SpesError("espeak-ng failed to initialise (is espeak-ng-data installed?)")
        self.lock = threading.Lock()
        self._chunks, self._events = [], []
        self._callback = _CALLBACK(self._collect)  # kept alive: the library holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n, events) -> int:
        i = 0
        while events[i].type != _LIST_TERMINATED:
            e = events[i]
            self._events.append((e.type, e.text_position, e.length, e.sample, bytes(e.id)))
            i += 1
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        return 0

    def run(self, text: str, voice: str, speed: int, pitch: int, ssml: bool) -> tuple[np.ndarray, list]:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise SpesError(f"espeak-ng has no voice {voice!r}")
            self.lib.espeak_SetParameter(_RATE, int(speed), 0)
            self.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
            self._chunks, self._events = [], []
            data = text.encode()
            flags = _CHARS_UTF8 | (_SSML if ssml else 0)
            err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
            self.lib.espeak_Synchronize()
            if err != 0:
                raise SpesError(f"espeak-ng failed on {text!r} (error {err})")
            x = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return x, self._events


_engine: _Engine | None = None


def _get_engine() -> _Engine:
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


# espeak-ng speaks a few word groups as one unit ("for the", "on the", "does not"; "a huge" in the New
# York voice, which drops the /h/; "of the huge") and then reports one WORD event for all of them. Each
# later word starts at the last run of its onset phonemes before the next word's start ("the": /D/,
# or /d/ after /n/; "not": /n/; "huge": /h j/ or /j/).
_MERGED_ONSETS = {"the": (b"D", b"d"), "not": (b"n",), "huge": (b"h", b"j")}


def _split_merged(group: list[str], phonemes: list[tuple[int, bytes]], start: int, end: int) -> list[int] | None:
    """Start samples of ``group``'s words 2..n inside one WORD event's [start, end), found from the last
    word backwards; None when a word has no known onset or its onset is not among the phonemes."""
    splits, stop = [], end
    for word in reversed(group[1:]):
        onsets = _MERGED_ONSETS.get(word.lower(), ())
        inner = [(s, name in onsets) for s, name in phonemes if start < s < stop]
        last = max((i for i, (_, hit) in enumerate(inner) if hit), default=None)
        if last is None:
            return None
        while last and inner[last - 1][1]:
            last -= 1
        stop = inner[last][0]
        splits.append(stop)
    return splits[::-1]


def word_spans(text: str, events: list, rate: int) -> list[tuple[str, float, float]]:
    """[(word, start s, end s)] for every word of ``text`` from espeak-ng's events
    [(type, text position (1-based), length, sample, id)].

    A word starts at its WORD event and ends at the next WORD event, pause phoneme or clause end; the
    groups espeak-ng merges into one event are split at the later words' onset phoneme events.
    """
    plain = re.sub(r"<[^>]*>", lambda m: " " * len(m.group()), text)  # SSML tags are not words
    words = [(m.start() + 1, m.group()) for m in re.finditer(r"[\w']+", plain)]
    phonemes = [(s, name.rstrip(b"\0")) for t, _, _, s, name in events if t == _PHONEME]
    marks = [(k, pos, s) for k, (t, pos, n, s, _) in enumerate(events) if t == _WORD and n > 0]
    spans = []
    for j, (k, pos, start) in enumerate(marks):
        end = next((s for t, _, n, s, name in events[k + 1:]
                    if (t == _WORD and n > 0) or t in (_END, _MSG_TERMINATED)
                    or (t == _PHONEME and name.startswith(b"_"))), None)
        stop = marks[j + 1][1] if j + 1 < len(marks) else len(plain) + 1
        group = [w for p, w in words if pos <= p < stop]
        if end is None or end <= start or pos not in {p for p, _ in words}:
            raise SpesError(f"espeak-ng's events do not match the words of {text!r} at position {pos}")
        bounds = [start] + (_split_merged(group, phonemes, start, end) or []) + [end]
        if len(bounds) != len(group) + 1:
            raise SpesError(f"espeak-ng spoke {' '.join(group)!r} as one word in {text!r}; cannot split it")
        spans += [(w, a / rate, b / rate) for w, a, b in zip(group, bounds[:-1], bounds[1:])]
    return spans


def synthesize(text: str, voice: str, speed: int, pitch: int, ssml: bool = False
               ) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Continuous speech for ``text`` and espeak-ng's word spans.

    Args:
      text: what to say (punctuation shapes the prosody and is not a word).
      voice: espeak-ng voice and variant, e.g. "en-gb-x-rp+f2"; speed in words per minute; pitch 0-99.
      ssml: read ``<...>`` as SSML (e.g. ``<break time="300ms"/>``) rather than as text.
    Returns:
      (N,) float32 waveform at 16 kHz in [-1, 1) and [(word, start s, end s)] in text order.
    """
    engine = _get_engine()
    raw, events = engine.run(text, voice, speed, pitch, ssml)
    spans = word_spans(text, events, engine.rate)
    x = raw.astype(np.float32) / 32768.0
    if engine.rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = np.gcd(engine.rate, SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, engine.rate // g).astype(np.float32)
    return x, spans
