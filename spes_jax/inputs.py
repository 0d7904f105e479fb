"""Checks on what is about to be explained, before the sweep: targets, very long and silent audio.

The sweep's cost grows with (spectrogram + prefix masks) x input length, so a long file is announced
with its cost before any mask runs; a silent file is announced because a model's output for silence
is a hallucination whose explanation says little.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import numpy as np

from .audio import FRAME_SHIFT_S, read_audio
from .config import SPESConfig
from .errors import SpesError, SpesWarning, count

SILENCE_DBFS = -50.0  # loudest 25 ms frame below this: no speech (speech peaks near -20..0 dBFS)


def peak_frame_dbfs(waveform: np.ndarray, frame: int = 400) -> float:
    """Level of the loudest 25 ms frame (RMS, dB relative to full scale) of a (N,) waveform."""
    x = np.asarray(waveform, np.float64)
    x = np.pad(x, (0, -len(x) % frame))
    rms = np.sqrt(np.mean(x.reshape(-1, frame) ** 2, axis=1))
    return float(20 * np.log10(max(rms.max(), 1e-10)))


def check_silence(waveform: np.ndarray, name: str) -> None:
    """Warns when even the loudest 25 ms of a (N,) waveform is below ``SILENCE_DBFS``."""
    level = peak_frame_dbfs(waveform)
    if level < SILENCE_DBFS:
        warnings.warn(f"{name}: the audio is silent (loudest 25 ms at {level:.0f} dBFS, below {SILENCE_DBFS:.0f}); "
                      "any words the model writes for it are not in the audio", SpesWarning, stacklevel=2)


def check_length(frames: int, model, cfg: SPESConfig | None, name: str) -> None:
    """Warns when the input is longer than the model's ``max_source_positions`` (fairseq drops such
    utterances from training, so the model never saw one), with the cost of explaining it with
    ``cfg`` (None: the input is only transcribed). Models that state their longest input
    (``data.max_seconds``) refuse longer ones when reading them."""
    limit = model.max_input_frames
    if frames <= limit:
        return
    if cfg is None:
        consequence = "expect words dropped or made up"
    else:
        consequence = (f"explaining it runs {cfg.n_masks + cfg.n_token_masks} forward passes over {frames} frames, "
                       f"at least the cost of {frames / 1000:.0f} 10-second utterances")
    warnings.warn(f"{name}: {frames * FRAME_SHIFT_S:.0f} s ({frames} frames) is longer than the model's max source "
                  f"positions ({limit} frames), so it never saw such an input; {consequence}",
                  SpesWarning, stacklevel=2)


def input_features(model, audio, cfg: SPESConfig | None, name: str) -> np.ndarray:
    """(T, C) model input of an audio path, a (N,) waveform or a (T, C) fbank, read once; warns when
    the audio is silent (paths and waveforms) or longer than the model's range (with the cost of
    explaining it with ``cfg``; None when it is only transcribed)."""
    is_waveform = isinstance(audio, (str, os.PathLike)) or np.ndim(audio) == 1
    if is_waveform:
        audio = read_audio(audio) if isinstance(audio, (str, os.PathLike)) else np.asarray(audio)
    try:
        feats = model.features(audio)  # refuses empty, too short and too long input first
    except SpesError as e:  # name the input
        raise SpesError(f"{name}: {e}") from None
    if is_waveform:
        check_silence(audio, name)
    check_length(feats.shape[0], model, cfg, name)
    return feats


@contextlib.contextmanager
def warnings_if_all_succeed() -> Iterator[None]:
    """Holds the warnings of the block (e.g. reading every input) and issues them once it has ended
    without an error: when one input fails, the notes about the others are moot, and the error is
    the only message."""
    with warnings.catch_warnings(record=True) as held:
        warnings.simplefilter("always")
        yield
    for w in held:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def read_targets(model, text_or_file: str, n_inputs: int) -> list[list[int]]:
    """Token ids (ending with </s>) of given transcripts or translations, one per input.

    text_or_file: a text (for a single input) or a UTF-8 file with one line per input.
    """
    if os.path.isfile(text_or_file):
        with open(text_or_file, encoding="utf-8") as f:
            lines = [line.strip() for line in f.read().splitlines()]
        where = [f"{text_or_file}:{n}" for n in range(1, len(lines) + 1)]
        if len(lines) != n_inputs:
            raise SpesError(f"--targets {text_or_file}: {len(lines)} lines for {count(n_inputs, 'audio file')}; "
                            "give one line per audio file")
    else:
        if n_inputs != 1:
            raise SpesError(f"--targets: a text explains one audio file, got {n_inputs}; "
                            "give a file with one line per audio file")
        lines, where = [text_or_file.strip()], ["--targets"]
    return [model.target_ids(line, loc) for line, loc in zip(lines, where)]
