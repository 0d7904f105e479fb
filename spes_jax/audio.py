"""Audio reading and the features FBK-fairseq models consume.

``read_audio`` decodes any file libsndfile reads (WAV in every PCM/float variant, FLAC, OGG/Vorbis,
MP3, ...), down-mixes to mono and resamples to 16 kHz. ``fbank`` reproduces
``torchaudio.compliance.kaldi.fbank`` with Kaldi's defaults as FBK's ``extract_fbank_features`` calls
it (25 ms Povey window, 10 ms shift, no dither, pre-emphasis 0.97, DC removal, 512-point FFT power
spectrum, 80 triangular mel filters from 20 Hz to Nyquist, natural log floored at float32 epsilon).
``utterance_cmvn`` is fairseq's ``UtteranceCMVN`` transform.
"""

from __future__ import annotations

import math
import os
import struct
import warnings

import numpy as np

from .errors import SpesError, SpesNote

SAMPLE_RATE = 16000
_FRAME_LENGTH = 400  # 25 ms at 16 kHz
_FRAME_SHIFT = 160  # 10 ms
FRAME_SHIFT_S = _FRAME_SHIFT / SAMPLE_RATE  # seconds per feature frame
_FFT_SIZE = 512  # next power of two above the frame length
_PREEMPHASIS = 0.97
_LOW_FREQ = 20.0
_EPS = float(np.finfo(np.float32).eps)


def _riff_truncation(path: str) -> tuple[int, int] | None:
    """(bytes the WAV header announces, bytes present) when a RIFF/WAVE file's data chunk is cut short.

    libsndfile reads what is there without complaint; a cut-off download should not pass silently.
    Streamed WAVs announce 0 or 0xFFFFFFFF bytes (length unknown) and are not flagged.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(12)[8:] != b"WAVE":
            return None
        while True:
            header = f.read(8)
            if len(header) < 8:
                return None
            chunk, n = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"data":
                present = size - f.tell()
                return (n, present) if 0 < n < 0xFFFFFFFF and n > present else None
            f.seek(n + (n & 1), os.SEEK_CUR)  # chunks are padded to an even size


def read_audio(path: str | os.PathLike) -> np.ndarray:
    """Reads an audio file as the models' input waveform: 16 kHz, mono, float32 in [-1, 1).

    Any format libsndfile decodes is accepted (WAV with any PCM or float sample format, FLAC,
    OGG/Vorbis, MP3, AIFF, ...). Several channels are averaged and other sample rates are resampled
    (polyphase, ``scipy.signal.resample_poly``); each conversion issues a ``SpesNote`` naming the file.
    16 kHz mono files are returned exactly as soundfile (the reference's reader) decodes them.

    Returns:
      (N,) float32 waveform.
    """
    import soundfile as sf

    path = os.fspath(path)
    if os.path.isdir(path):
        raise SpesError(f"{path}: is a directory, not an audio file")
    if not os.path.isfile(path):
        raise SpesError(f"audio file not found: {path}")
    if os.path.getsize(path) == 0:
        raise SpesError(f"{path}: empty file")
    truncated = _riff_truncation(path)
    if truncated:
        raise SpesError(f"{path}: truncated WAV file: the header announces {truncated[0]} bytes of audio, "
                        f"the file holds {truncated[1]}")
    try:
        x, rate = sf.read(path, dtype="float32", always_2d=True)
    except sf.SoundFileError as e:
        raise SpesError(f"{path}: not a readable audio file ({e}); formats: WAV, FLAC, OGG/Vorbis, MP3 "
                        "and the others libsndfile reads") from None
    if x.size == 0:
        raise SpesError(f"{path}: the file holds no audio samples")
    if x.shape[1] > 1:
        warnings.warn(f"{path}: {x.shape[1]} channels mixed down to mono", SpesNote, stacklevel=2)
        x = x.mean(axis=1, keepdims=True)
    x = x[:, 0]
    if rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = math.gcd(int(rate), SAMPLE_RATE)
        warnings.warn(f"{path}: resampled from {rate} Hz to {SAMPLE_RATE} Hz", SpesNote, stacklevel=2)
        x = resample_poly(x.astype(np.float64), SAMPLE_RATE // g, int(rate) // g).astype(np.float32)
    return x


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
      (T, num_mel_bins) float32 with T = max(0, 1 + (N - 400) // 160): a waveform shorter than one
      window has no frame (models refuse inputs below their minimum, ``speech_model.MIN_FRAMES``).
    """
    x = np.asarray(waveform, np.float64) * 32768.0  # FBK scales to the int16 range first
    if x.ndim != 1:
        raise SpesError(f"expected a 1-D waveform, got shape {x.shape}")
    if x.size < _FRAME_LENGTH:
        return np.zeros((0, num_mel_bins), np.float32)
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
    if x.shape[0] == 0:
        return x
    mean = x.mean(axis=0)
    square_sums = (x ** 2).sum(axis=0)
    var = square_sums / x.shape[0] - mean ** 2
    std = np.sqrt(np.maximum(var, 1e-10))
    return np.divide(np.subtract(x, mean), std)


def load_features(audio: str | os.PathLike | np.ndarray, num_mel_bins: int = 80,
                  cmvn: bool = True) -> np.ndarray:
    """The model input for one utterance: an audio file, a (N,) 16 kHz waveform or a raw (T, C) fbank.

    Returns:
      (T, C) float32 features, utterance-CMVN normalised when ``cmvn``.
    """
    if isinstance(audio, (str, os.PathLike)):
        waveform = read_audio(audio)
        try:
            feats = fbank(waveform, num_mel_bins)
        except SpesError as e:  # name the file
            raise SpesError(f"{os.fspath(audio)}: {e}") from None
    else:
        arr = np.asarray(audio)
        feats = fbank(arr, num_mel_bins) if arr.ndim == 1 else arr
    if feats.ndim != 2 or feats.shape[1] != num_mel_bins:
        raise SpesError(f"expected features of shape (T, {num_mel_bins}), got {feats.shape}")
    if not np.all(np.isfinite(feats)):
        raise SpesError("features contain NaN or infinite values")
    return utterance_cmvn(feats) if cmvn else feats.astype(np.float32)
