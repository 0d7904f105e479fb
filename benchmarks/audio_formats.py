"""What an audio format changes in the model input, on the bundled samples.

    python benchmarks/audio_formats.py

Writes each bundled 16 kHz sample as FLAC, MP3 and OGG/Vorbis (with soundfile) and as a 44.1 kHz WAV
(polyphase up-sampling), reads it back through ``spes_jax.audio`` and compares the CMVN features with
the original WAV's (max and mean absolute difference) and the embedded ASR model's transcripts.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from common import device_name, print_table, write_results
from spes_jax import load_model
from spes_jax.assets import samples
from spes_jax.audio import fbank, read_audio, utterance_cmvn
from spes_jax.errors import SpesNote

# name -> how the 16 kHz waveform x is written to path
FORMATS = {
    "FLAC (16-bit)": lambda p, x: sf.write(p + ".flac", x, 16000, subtype="PCM_16") or p + ".flac",
    "WAV 44.1 kHz (16 -> 44.1 -> 16 kHz)": lambda p, x: sf.write(
        p + ".wav", resample_poly(x.astype(np.float64), 441, 160), 44100, subtype="FLOAT") or p + ".wav",
    "MP3 (default quality)": lambda p, x: sf.write(p + ".mp3", x, 16000, format="MP3") or p + ".mp3",
    "MP3 (compression_level 0)": lambda p, x: sf.write(p + ".mp3", x, 16000, format="MP3",
                                                       compression_level=0.0) or p + ".mp3",
    "OGG/Vorbis (default quality)": lambda p, x: sf.write(p + ".ogg", x, 16000, format="OGG",
                                                          subtype="VORBIS") or p + ".ogg",
}


def main():
    warnings.simplefilter("ignore", SpesNote)
    model = load_model("asr")
    results = {name: [] for name in FORMATS}
    with tempfile.TemporaryDirectory() as tmp:
        for uid, path in samples().items():
            x = read_audio(path)
            ref = utterance_cmvn(fbank(x))
            text = model.transcribe(ref).text
            for name, write in FORMATS.items():
                coded = write(os.path.join(tmp, uid), x)
                feats = utterance_cmvn(fbank(read_audio(coded)))[: len(ref)]  # resampling may add a sample
                diff = np.abs(feats - ref)
                results[name].append((diff.max(), diff.mean(), model.transcribe(feats).text == text))
    rows = [{"format": name, "max_abs_diff": float(max(r[0] for r in rs)),
             "mean_abs_diff": float(np.mean([r[1] for r in rs])),
             "same_transcript": f"{sum(r[2] for r in rs)}/{len(rs)}"} for name, rs in results.items()]
    print_table(rows, ["format", "max_abs_diff", "mean_abs_diff", "same_transcript"])
    print(write_results("audio_formats", rows, {"device": device_name(), "utterances": len(samples())}))


if __name__ == "__main__":
    main()
