"""Synthetic speech with exact word timings, from espeak-ng.

Method: every word of the grammar's vocabulary is synthesised once per voice setting (espeak-ng voice
+ variant, speed, pitch), resampled to 16 kHz and trimmed of silence. An utterance is the
concatenation of its words' recordings with random pauses between them, random leading and trailing
silence, a random gain and faint white noise. The span of every word is therefore known exactly:
it is where its recording was placed. espeak-ng is a Debian package (``apt-get install espeak-ng``);
it is only needed to build data, never at import time.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..audio import SAMPLE_RATE
from ..errors import SpesError

TRAIN_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
TRAIN_VARIANTS = ("", "+m3", "+f2", "+f4", "+m7")
HELD_OUT_VOICE = "en-gb-x-gbcwmd+f3"  # West Midlands accent, female variant: never in training


@dataclass(frozen=True)
class Voice:
    name: str  # espeak-ng voice and variant, e.g. "en-gb+f2"
    speed: int  # words per minute
    pitch: int  # 0-99

    def key(self) -> str:
        return f"{self.name}|{self.speed}|{self.pitch}"


def train_voices(rng: np.random.Generator, n: int) -> list[Voice]:
    """n distinct training voice settings."""
    pool = [Voice(v + var, s, p) for v in TRAIN_VOICES for var in TRAIN_VARIANTS
            for s in (135, 155, 175) for p in (35, 50, 65)]
    return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]


def held_out_voices() -> list[Voice]:
    return [Voice(HELD_OUT_VOICE, s, p) for s, p in ((145, 45), (165, 60))]


def _espeak(text: str, voice: Voice) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpesError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    out = subprocess.run([exe, "-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch), "--stdout", text],
                         capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(out)) as f:
        rate, raw = f.getframerate(), f.readframes(f.getnframes())
    x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    if rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = np.gcd(rate, SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, rate // g).astype(np.float32)
    return _trim(x)


def _trim(x: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > threshold * np.abs(x).max())
    return x[loud[0]: loud[-1] + 1] if loud.size else x


class WordBank:
    """Recordings of every vocabulary word for every voice setting, synthesised in parallel.

    ``synth(word, voice)`` makes one trimmed 16 kHz recording (default: the espeak-ng program).
    """

    def __init__(self, words: list[str], voices: list[Voice], workers: int = 4, synth=None):
        jobs = [(w, v) for v in voices for w in words]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            audio = list(pool.map(lambda job: (synth or _espeak)(*job), jobs))
        self.audio = {(w, v.key()): a for (w, v), a in zip(jobs, audio)}

    def utterance(self, words: list[str], voice: Voice, rng: np.random.Generator
                  ) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
        """Waveform (N,) at 16 kHz and [(word, start s, end s)] for each spoken word."""
        pieces, spans, t = [], [], 0
        lead = int(rng.uniform(0.1, 0.3) * SAMPLE_RATE)
        pieces.append(np.zeros(lead, np.float32))
        t += lead
        for i, word in enumerate(words):
            if i:
                gap = int(rng.uniform(0.02, 0.15) * SAMPLE_RATE)
                pieces.append(np.zeros(gap, np.float32))
                t += gap
            a = self.audio[(word, voice.key())]
            pieces.append(a)
            spans.append((word, t / SAMPLE_RATE, (t + len(a)) / SAMPLE_RATE))
            t += len(a)
        pieces.append(np.zeros(int(rng.uniform(0.1, 0.3) * SAMPLE_RATE), np.float32))
        x = np.concatenate(pieces) * rng.uniform(0.5, 1.0)
        x = x + rng.standard_normal(x.shape).astype(np.float32) * 10 ** rng.uniform(-4, -3)
        return np.clip(x, -1, 1 - 2 ** -15).astype(np.float32), spans


def spoken_words(text: str) -> list[str]:
    """The words espeak-ng speaks for a grammar sentence (punctuation is not spoken)."""
    return [w.strip(".,?") for w in text.split()]


def write_wav(path: str, x: np.ndarray) -> None:
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes((np.clip(x, -1, 1 - 2 ** -15) * 32768).astype("<i2").tobytes())
