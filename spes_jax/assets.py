"""Files shipped with the package: the embedded models and sample utterances with word timings."""

from __future__ import annotations

import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
SAMPLES = os.path.join(ROOT, "samples")
MODELS = os.path.join(ROOT, "models")


# name -> task. The -robust models were trained on continuous speech, new voices, noise and silence as well
# (docs/models.md); asr and st stay the defaults until robust models also get the bundled samples exactly.
EMBEDDED = {"asr": "asr", "st": "st", "asr-robust": "asr", "st-robust": "st"}


def model_dir(name: str) -> str:
    """Directory of an embedded model (a name of ``EMBEDDED``)."""
    return os.path.join(MODELS, name)


def samples() -> dict[str, str]:
    """Bundled sample utterances: id -> WAV path (16 kHz mono, held-out voice and sentences)."""
    return {os.path.splitext(f)[0]: os.path.join(SAMPLES, f)
            for f in sorted(os.listdir(SAMPLES)) if f.endswith(".wav")}


def sample_timings() -> dict[str, dict]:
    """id -> {"text", "translation", "voice", "words": [{"word", "start", "end"}]} (seconds)."""
    with open(os.path.join(SAMPLES, "timings.json"), encoding="utf-8") as f:
        return json.load(f)
