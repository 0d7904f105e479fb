"""Files shipped with the package: the embedded models and sample utterances with word timings."""

from __future__ import annotations

import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
SAMPLES = os.path.join(ROOT, "samples")
MODELS = os.path.join(ROOT, "models")


# name -> task. asr and st were trained on continuous speech, new voices, noise and silence as well as on
# single spliced sentences; asr-spliced and st-spliced on the spliced sentences only (docs/models.md).
EMBEDDED = {"asr": "asr", "st": "st", "asr-spliced": "asr", "st-spliced": "st"}
# What asr and st were called before they became the defaults (2026-12-03); still accepted.
FORMER_NAMES = {"asr-robust": "asr", "st-robust": "st"}


def embedded_name(name: str) -> str | None:
    """The embedded model ``name`` refers to (a name of ``EMBEDDED`` or a former name), else None."""
    name = FORMER_NAMES.get(name, name)
    return name if name in EMBEDDED else None


def model_dir(name: str) -> str:
    """Directory of an embedded model (a name of ``EMBEDDED`` or ``FORMER_NAMES``)."""
    return os.path.join(MODELS, FORMER_NAMES.get(name, name))


def task(name: str, default: str = "asr") -> str:
    """The task of embedded model ``name``; ``default`` for anything else (a model directory)."""
    return EMBEDDED.get(embedded_name(name) or "", default)


def samples() -> dict[str, str]:
    """Bundled sample utterances: id -> WAV path (16 kHz mono, held-out voice and sentences)."""
    return {os.path.splitext(f)[0]: os.path.join(SAMPLES, f)
            for f in sorted(os.listdir(SAMPLES)) if f.endswith(".wav")}


def sample_timings() -> dict[str, dict]:
    """id -> {"text", "translation", "voice", "words": [{"word", "start", "end"}]} (seconds)."""
    with open(os.path.join(SAMPLES, "timings.json"), encoding="utf-8") as f:
        return json.load(f)
