"""Whisper's log-mel front end in numpy (the features Hugging Face's ``WhisperFeatureExtractor`` gives).

The waveform is zero-padded (or cut) to ``chunk_length`` seconds, framed by a 400-point periodic Hann
window every 160 samples with ``n_fft // 2`` samples of reflect padding at both ends, and turned into
a power spectrum; the last frame is dropped (3001 -> 3000 frames for 30 s). Slaney-scale, Slaney-
normalised triangular filters (0 Hz to Nyquist) give mel energies whose ``log10`` (floored at 1e-10)
is compressed to at most 8 decades below the maximum and mapped by ``(x + 4) / 4``.

Frames are time-major ``(T, n_mels)`` float32, the project's convention (Hugging Face stores them
``(n_mels, T)``). The spectrum is computed in float64; the reference (``torch.stft`` in float32) agrees
to about 1e-5.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from .._io import read_json
from ..errors import SpesError

_LOG_FLOOR = 1e-10  # mel energy floor before log10
_DYNAMIC_RANGE = 2.0  # 8 decades of log10 energy, after the (x + 4) / 4 scaling
_SILENCE = (np.log10(_LOG_FLOOR) + 4.0) / 4.0  # -1.5: the value of a frame of digital silence


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    """The front end's settings (``preprocessor_config.json`` of a Hugging Face Whisper directory)."""

    n_mels: int = 80
    sampling_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    chunk_length: int = 30

    @property
    def n_samples(self) -> int:
        """Samples of one input window (480000 = 30 s at 16 kHz)."""
        return self.chunk_length * self.sampling_rate

    @property
    def n_frames(self) -> int:
        """Frames of one input window (3000)."""
        return self.n_samples // self.hop_length

    @classmethod
    def from_dir(cls, path: str | os.PathLike, n_mels: int | None = None) -> "FeatureSettings":
        """Reads ``preprocessor_config.json`` in ``path`` if there is one, else the defaults.

        ``n_mels`` (the model's ``num_mel_bins``) overrides or fills in ``feature_size``.
        """
        file = os.path.join(os.fspath(path), "preprocessor_config.json")
        values = {}
        if os.path.isfile(file):
            cfg = read_json(file)
            keys = {"feature_size": "n_mels", "sampling_rate": "sampling_rate", "n_fft": "n_fft",
                    "hop_length": "hop_length", "chunk_length": "chunk_length"}
            try:
                values = {ours: int(cfg[theirs]) for theirs, ours in keys.items() if theirs in cfg}
            except (TypeError, ValueError) as e:
                raise SpesError(f"{file}: a setting is not an integer ({e})") from None
        if n_mels is not None:
            values["n_mels"] = int(n_mels)
        return cls(**values)

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """``log_mel`` with these settings."""
        return log_mel(wave, **dataclasses.asdict(self))

    def utterance_frames(self, n_samples: int) -> int:
        """``utterance_frames`` with these settings."""
        return utterance_frames(n_samples, hop_length=self.hop_length, n_fft=self.n_fft, n_frames=self.n_frames)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 mel per 200 Hz) below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    log_part = 15.0 + 27.0 * np.log(np.maximum(f, 1e-3) / 1000.0) / np.log(6.4)
    return np.where(f < 1000.0, 3.0 * f / 200.0, log_part)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m < 15.0, 200.0 * m / 3.0, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0))


def mel_filters(n_mels: int, n_fft: int = 400, sr: int = 16000) -> np.ndarray:
    """Whisper's mel filter bank, for any number of bands (80 for most models, 128 for large-v3).

    ``n_mels`` triangles with corners equally spaced on Slaney's mel scale from 0 Hz to ``sr / 2``,
    each divided by its width in Hz / 2 so that every filter has unit area (Slaney normalisation).

    Returns:
      (n_fft // 2 + 1, n_mels) float32; ``power @ mel_filters(...)`` maps a power spectrum to mel energies.
    """
    fft_hz = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    corners = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    lo, mid, hi = corners[:-2, None], corners[1:-1, None], corners[2:, None]
    rising = (fft_hz - lo) / (mid - lo)
    falling = (hi - fft_hz) / (hi - mid)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return (triangles * (2.0 / (hi - lo))).T.astype(np.float32)


def utterance_frames(n_samples: int, *, hop_length: int = 160, n_fft: int = 400, n_frames: int = 3000) -> int:
    """Number of frames whose analysis window touches the first ``n_samples`` samples of audio.

    Frame ``t``'s window starts at sample ``t * hop - n_fft // 2``; its first coefficient is 0 (periodic
    Hann), so the frame sees the audio iff ``t * hop - n_fft // 2 + 1 <= n_samples - 1``. Every later
    frame sees only the zero padding, and ``log_mel`` gives it exactly ``silence_floor(features)``.
    """
    if n_samples <= 0:
        return 0
    return min((int(n_samples) + n_fft // 2 - 2) // hop_length + 1, n_frames)


def log_mel(wave: np.ndarray, n_mels: int = 80, *, sampling_rate: int = 16000, n_fft: int = 400,
            hop_length: int = 160, chunk_length: int = 30) -> np.ndarray:
    """Whisper's input features for one utterance.

    Args:
      wave: (N,) waveform at ``sampling_rate``, float in [-1, 1]; padded with zeros or cut to
        ``chunk_length`` seconds.

    Returns:
      (chunk_length * sampling_rate // hop_length, n_mels) float32 (3000 frames for 30 s), time-major.
    """
    wave = np.asarray(wave)
    if wave.ndim != 1 or not np.issubdtype(wave.dtype, np.floating):
        raise SpesError(f"log_mel expects a 1-D float waveform, got {wave.dtype} with shape {wave.shape}")
    n_samples = chunk_length * sampling_rate
    x = np.zeros(n_samples, np.float64)
    x[:min(wave.size, n_samples)] = wave[:n_samples]
    x = np.pad(x, n_fft // 2, mode="reflect")
    # Frame 3001 (whose centre is the last padded sample) is dropped, as Whisper does.
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop_length][:-1]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    energy = power @ mel_filters(n_mels, n_fft, sampling_rate).astype(np.float64)
    logs = ((np.log10(np.maximum(energy, _LOG_FLOOR)) + 4.0) / 4.0).astype(np.float32)
    # Clamping in the scaled domain (max - 2 == 8 decades) makes the floor exactly max(x.max() - 2, -1.5).
    return np.maximum(logs, logs.max() - np.float32(_DYNAMIC_RANGE))


def silence_floor(features: np.ndarray) -> np.float32:
    """The value ``log_mel`` gives frames of digital silence: ``max(features.max() - 2, -1.5)``."""
    return np.maximum(np.float32(features.max()) - np.float32(_DYNAMIC_RANGE), np.float32(_SILENCE))
