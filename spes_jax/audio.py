"""Audio reading and the features FBK-fairseq models consume.

``fbank`` reproduces ``torchaudio.compliance.kaldi.fbank`` with Kaldi's defaults as FBK's
``extract_fbank_features`` calls it (25 ms Povey window, 10 ms shift, no dither, pre-emphasis 0.97,
DC removal, 512-point FFT power spectrum, 80 triangular mel filters from 20 Hz to Nyquist, natural
log floored at float32 epsilon). ``utterance_cmvn`` is fairseq's ``UtteranceCMVN`` transform.
"""

from __future__ import annotations

import os
import wave

import numpy as np

from .errors import SpesError

SAMPLE_RATE = 16000
_FRAME_LENGTH = 400  # 25 ms at 16 kHz
_FRAME_SHIFT = 160  # 10 ms
FRAME_SHIFT_S = _FRAME_SHIFT / SAMPLE_RATE  # seconds per feature frame
_FFT_SIZE = 512  # next power of two above the frame length
_PREEMPHASIS = 0.97
_LOW_FREQ = 20.0
_EPS = float(np.finfo(np.float32).eps)


def read_wav(path: str | os.PathLike) -> np.ndarray:
    """Reads a 16 kHz mono PCM WAV file.

    Returns:
      (N,) float32 waveform in [-1, 1), as soundfile (the reference's reader) returns it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SpesError(f"audio file not found: {path}")
    try:
        with wave.open(path, "rb") as f:
            rate, channels, width, n = f.getframerate(), f.getnchannels(), f.getsampwidth(), f.getnframes()
            raw = f.readframes(n)
    except (wave.Error, EOFError) as e:
        raise SpesError(f"{path}: not a PCM WAV file ({e}); convert it with e.g. "
                        f"'sox IN -r 16000 -c 1 -b 16 OUT.wav'") from None
    if rate != SAMPLE_RATE:
        raise SpesError(f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz; resample with "
                        f"'sox IN -r 16000 OUT.wav'")
    if channels != 1:
        raise SpesError(f"{path}: {channels} channels, expected mono; downmix with 'sox IN -c 1 OUT.wav'")
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        dtype = np.dtype(f"<i{width}")
        x = np.frombuffer(raw, dtype).astype(np.float64) / float(2 ** (8 * width - 1))
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)
    else:
        raise SpesError(f"{path}: unsupported sample width {width} bytes")
    if x.size == 0:
        raise SpesError(f"{path}: the file holds no audio samples")
    return x.astype(np.float32)


def _mel(f: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + f / 700.0)


def mel_filterbank(num_bins: int = 80) -> np.ndarray:
    """Kaldi's triangular mel filters on the mel scale.

    Returns:
      (num_bins, FFT_SIZE // 2 + 1) float64 weights (the Nyquist column is zero, as in Kaldi).
    """
    nyquist = SAMPLE_RATE / 2
    mel_low, mel_high = _mel(np.float64(_LOW_FREQ)), _mel(np.float64(nyquist))
    delta = (mel_high - mel_low) / (num_bins + 1)
    left = mel_low + np.arange(num_bins)[:, None] * delta
    center, right = left + delta, left + 2 * delta
    fft_mel = _mel(np.arange(_FFT_SIZE // 2) * (SAMPLE_RATE / _FFT_SIZE))[None, :]
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1)))


def fbank(waveform: np.ndarray, num_mel_bins: int = 80) -> np.ndarray:
    """Kaldi-compatible log-mel filterbank of a 16 kHz waveform in [-1, 1).

    Args:
      waveform: (N,) samples.
    Returns:
      (T, num_mel_bins) float32 with T = 1 + (N - 400) // 160.
    """
    x = np.asarray(waveform, np.float64) * 32768.0  # FBK scales to the int16 range first
    if x.ndim != 1:
        raise SpesError(f"expected a 1-D waveform, got shape {x.shape}")
    if x.size < _FRAME_LENGTH:
        raise SpesError(f"audio too short: {x.size} samples, need at least {_FRAME_LENGTH} (25 ms)")
    n_frames = 1 + (x.size - _FRAME_LENGTH) // _FRAME_SHIFT
    idx = np.arange(n_frames)[:, None] * _FRAME_SHIFT + np.arange(_FRAME_LENGTH)[None, :]
    frames = x[idx]
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = frames - _PREEMPHASIS * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    n = np.arange(_FRAME_LENGTH)
    povey = (0.5 - 0.5 * np.cos(2 * np.pi * n / (_FRAME_LENGTH - 1))) ** 0.85
    spectrum = np.fft.rfft(frames * povey, n=_FFT_SIZE)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    energies = power @ mel_filterbank(num_mel_bins).T
    return np.log(np.maximum(energies, _EPS)).astype(np.float32)


def utterance_cmvn(features: np.ndarray) -> np.ndarray:
    """fairseq's utterance-level CMVN: per channel, mean 0 and variance 1 over time (float32).

    Args:
      features: (T, C).
    Returns:
      (T, C) float32.
    """
    x = np.asarray(features, np.float32)
    mean = x.mean(axis=0)
    square_sums = (x ** 2).sum(axis=0)
    var = square_sums / x.shape[0] - mean ** 2
    std = np.sqrt(np.maximum(var, 1e-10))
    return np.divide(np.subtract(x, mean), std)


def load_features(audio: str | os.PathLike | np.ndarray, num_mel_bins: int = 80,
                  cmvn: bool = True) -> np.ndarray:
    """The model input for one utterance: a WAV path, a (N,) waveform or a raw (T, C) fbank.

    Returns:
      (T, C) float32 features, utterance-CMVN normalised when ``cmvn``.
    """
    if isinstance(audio, (str, os.PathLike)):
        feats = fbank(read_wav(audio), num_mel_bins)
    else:
        arr = np.asarray(audio)
        feats = fbank(arr, num_mel_bins) if arr.ndim == 1 else arr
    if feats.ndim != 2 or feats.shape[1] != num_mel_bins:
        raise SpesError(f"expected features of shape (T, {num_mel_bins}), got {feats.shape}")
    if not np.all(np.isfinite(feats)):
        raise SpesError("features contain NaN or infinite values")
    return utterance_cmvn(feats) if cmvn else feats.astype(np.float32)
