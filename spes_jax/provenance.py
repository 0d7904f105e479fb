"""What an explanation file records about how it was made, so that a reader needs no spes-jax code.

``file_provenance`` (``model_provenance`` and the SPES configuration) builds the HDF5 file attributes (library version, task, SPES configuration, model
and its parameter hash, sample rate, frame shift, feature kind), ``record_utterance`` adds to an
explanation the token ids of its hypothesis and, for audio given as a file, the file's absolute path
and sha256 (``provenance`` does both for a list). The layout is documented in
docs/explanation-files.md. Readers use the record: ``recorded_audio`` finds an explanation's audio,
``result_model`` the model a result was made with, ``display_features`` the spectrogram its maps are
drawn over.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Sequence

import jax
import numpy as np

from .audio import FRAME_SHIFT_S, SAMPLE_RATE, load_features
from .config import SPESConfig
from .errors import SpesError, SpesWarning
from .explanation import Explanation


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parameters_sha256(params) -> str:
    """sha256 over every parameter array in key-path order (its path, dtype, shape and bytes): the
    same for a model however it is stored (orbax directory, converted checkpoint, in memory)."""
    digest = hashlib.sha256()
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        x = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)} {x.dtype.str} {x.shape}\n".encode())
        digest.update(x.tobytes())
    return digest.hexdigest()


def feature_kind(model) -> str:
    """E.g. '80-bin log-mel filterbank (Kaldi, 25 ms Povey window, 10 ms shift), utterance CMVN'."""
    return model.feature_kind


def model_provenance(model, task: str) -> dict:
    """The attributes every result file records about the model and its input (docs/explanation-files.md):
    library version, task, model (source, path, parameter hash, loading options), sample rate, frame
    shift, feature kind."""
    from . import __version__

    return {"library": f"spes-jax {__version__}", "task": task, "model": json.dumps(model.info or {}),
            "model_path": os.path.abspath(model.path) if model.path else "",
            "model_sha256": parameters_sha256(model.params), "model_options": json.dumps(model.options, sort_keys=True),
            "sample_rate": SAMPLE_RATE, "frame_shift_s": FRAME_SHIFT_S, "features": feature_kind(model)}


def recorded_options(attrs: dict) -> dict:
    """The model's loading options a result records (``SpeechToTextModel.options``; {} for files
    written before they were recorded)."""
    return json.loads(attrs.get("model_options") or "{}")


def options_note(attrs: dict, model, result: str) -> str | None:
    """One line when ``model`` runs with other loading options than ``result`` was made with (e.g. a
    Whisper occlusion given on the command line), else None."""
    recorded = recorded_options(attrs)
    changed = [f"{k} {model.options[k]} (explained with {v})" for k, v in recorded.items()
               if k in model.options and model.options[k] != v]
    return f"{result}: running the model with {', '.join(changed)}" if changed else None


def file_provenance(model, config: SPESConfig, task: str, **extra) -> dict:
    """The file attributes of docs/explanation-files.md for results of ``model`` under ``config``:
    ``model_provenance`` and the SPES configuration.

    extra: further file attributes (e.g. ``seconds``, or a corpus run's ``targets``).
    """
    return {**model_provenance(model, task), "config": config.to_json(), "seed": config.seed, **extra}


def is_audio_file(source) -> bool:
    """Whether an input is an audio file (recorded with its sha256), not a waveform, a feature array,
    a ``.npy`` filterbank or a ``features.zip:offset:length`` reference."""
    return (isinstance(source, (str, os.PathLike)) and os.path.isfile(source)
            and not os.fspath(source).endswith(".npy"))


def record_utterance(model, explanation: Explanation, source=None) -> Explanation:
    """``explanation`` with ``meta`` extended by ``token_ids`` and, when ``source`` is an audio file,
    its absolute path ``audio`` and ``audio_sha256``."""
    ids = explanation.meta.get("token_ids")  # the explainer records the ids it explained
    if ids is None:
        ids = [model.dictionary.index(p) for p in explanation.tokens]
    meta = {**explanation.meta, "token_ids": np.asarray(ids, np.int32), **audio_record(source)}
    return dataclasses.replace(explanation, meta=meta)


def audio_record(source) -> dict:
    """What a result records of its input: an audio file's absolute path ``audio`` and ``audio_sha256``
    (nothing for waveforms and feature arrays)."""
    if not is_audio_file(source):
        return {}
    return {"audio": os.path.abspath(os.fspath(source)), "audio_sha256": file_sha256(source)}


def provenance(model, config: SPESConfig, task: str, explanations: Sequence[Explanation],
               audio: Sequence | None = None, **extra) -> tuple[dict, list[Explanation]]:
    """File attributes for ``save_explanations`` and the explanations with their per-utterance record:
    ``file_provenance`` and ``record_utterance`` of each explanation.

    audio: the input each explanation was computed from (files record path and sha256; waveforms
    and feature arrays record nothing).
    """
    audio = list(audio) if audio is not None else [None] * len(explanations)
    return (file_provenance(model, config, task, **extra),
            [record_utterance(model, exp, source) for exp, source in zip(explanations, audio)])


def recorded_audio(explanation: Explanation) -> str | None:
    """The audio file an explanation records, if it is still there and unchanged (else a warning)."""
    path = explanation.meta.get("audio")
    if not path:
        return None
    if not os.path.isfile(path):
        warnings.warn(f"{explanation.id}: the recorded audio {path} is not there; drawing the maps only "
                      "(pass --audio)", SpesWarning)
        return None
    if explanation.meta.get("audio_sha256") not in (None, file_sha256(path)):
        warnings.warn(f"{explanation.id}: {path} changed since it was explained; drawing the maps only",
                      SpesWarning)
        return None
    return path


def given_audio(explanation: Explanation, path: str) -> str:
    """``--audio`` for an explanation: ``path``, with a warning when the explanation records another
    file's sha256 (the maps would be drawn over audio they were not computed from)."""
    recorded = explanation.meta.get("audio_sha256")
    if recorded is not None and os.path.isfile(path) and file_sha256(path) != recorded:
        warnings.warn(f"{explanation.id}: {path} is not the audio that was explained (its sha256 differs from the "
                      f"recorded one of {explanation.meta.get('audio', 'the explained file')}); drawing the maps over "
                      "it anyway", SpesWarning)
    return path


def model_name(path: str | os.PathLike | None) -> str:
    """How messages name a model: 'embedded model asr', else its directory."""
    from . import assets

    if not path:
        return "a model not loaded from a directory"
    path = os.path.abspath(os.fspath(path))
    if os.path.dirname(path) == os.path.abspath(assets.MODELS):
        return f"embedded model {os.path.basename(path)}"
    return path


def _recorded_locations(recorded: str) -> list[str]:
    """Where a recorded model directory may be now: the directory itself, and for an embedded model
    (recorded by this or another installation, under its name then or now) this installation's
    embedded models, the one of that name first: the parameter hash decides which it was."""
    from . import assets

    out = [os.path.abspath(recorded)] if os.path.isdir(recorded) else []
    name = assets.embedded_name(os.path.basename(os.path.normpath(recorded)))
    if name and os.path.basename(os.path.dirname(os.path.normpath(recorded))) == "models":
        for other in [name, *(n for n in assets.EMBEDDED if n != name)]:
            embedded = os.path.abspath(assets.model_dir(other))
            if os.path.isdir(embedded) and embedded not in out:
                out.append(embedded)
    return out


def _recorded_model(recorded: str, sha: str, load):
    """The model at one of ``_recorded_locations(recorded)`` whose parameters hash to ``sha``, else None."""
    for path in _recorded_locations(recorded):
        model = load(path)
        if parameters_sha256(model.params) == sha:
            return model
    return None


def result_model(attrs: dict, result: str, requested: str | None = None, force: bool = False,
                 default: str = "asr", load=None):
    """The model to run on a result (to score it, e.g. deletion), and one line saying which it is.

    attrs: the result's file attributes (``model_path``, ``model_sha256``). Without ``requested``:
    the model the result was made with (its recorded directory, or this installation's embedded
    model of the same name), identified by its parameter hash; the model ``default`` when the result
    records none. With ``requested`` (a model directory or an embedded name): that model, refused
    when its parameters differ from the recorded ones unless ``force``. load: name or directory ->
    model (default ``speech_model.load_model``), e.g. to pass further loading options. Returns
    (model, line).
    """
    if load is None:
        from .speech_model import load_model as load

    recorded, sha = attrs.get("model_path") or "", attrs.get("model_sha256") or ""
    made_with = f"{model_name(recorded)} (parameters sha256 {sha[:12]})"
    if requested is not None:
        model = load(requested)
        name = model_name(model.path)
        if not sha:
            return model, f"{name} (--model; {result} records no model)"
        if parameters_sha256(model.params) == sha:
            return model, f"{name} (the one {result} was made with)"
        if not force:
            raise SpesError(f"{result} was made with {made_with}, not with --model {requested}: its scores would "
                            f"not be those of the explained model. Drop --model to use the model it was made with, "
                            f"or add --force-model to run {requested} on it anyway")
        return model, f"{name}, by --force-model; {result} was made with {made_with}"
    if not sha:
        model = load(default)
        return model, f"{model_name(model.path)} (the default: {result} records no model; choose one with --model)"
    model = _recorded_model(recorded, sha, load)
    if model is not None:
        return model, f"{model_name(model.path)} (the one {result} was made with)"
    if not recorded:
        raise SpesError(f"{result} was made with a model not loaded from a directory (parameters sha256 "
                        f"{sha[:12]}); pass that model with --model DIR")
    if os.path.isdir(recorded):
        raise SpesError(f"{result} was made with {made_with}, whose parameters have changed since; pass the model "
                        f"it was made with as --model DIR (or --model {recorded} --force-model to run it as it "
                        "is now)")
    raise SpesError(f"{result} was made with {made_with}, which is not there any more; pass that model "
                    "with --model DIR")


@functools.lru_cache(maxsize=1)  # a report draws every utterance with the same model
def _display_model(recorded: str, sha: str):
    from .speech_model import load_model

    return _recorded_model(recorded, sha, load_model)


def explained_features(explanation: Explanation, audio, attrs: dict, where: str) -> np.ndarray:
    """``display_features`` of ``audio`` for ``explanation``'s maps, (T, C); one error, naming ``where``
    the audio came from, when it gives another number of frames than the maps cover."""
    T, C = explanation.spectrogram_saliency.shape[1:]
    feats = display_features(audio, attrs, C)
    if feats.shape[0] != T:
        raise SpesError(f"{where}: gives {feats.shape[0]} frames but explanation {explanation.id!r} has {T}; it is "
                        f"not the audio that was explained ({explanation.meta.get('audio', 'recorded in the file')})")
    return feats


def display_features(audio, attrs: dict, n_bins: int) -> np.ndarray:
    """The (T, n_bins) features a result's maps are drawn over, for an audio file or a (N,) 16 kHz
    waveform: those the model recorded in ``attrs`` (the result's file attributes) computes, e.g. a
    Whisper model's log-mel frames; ``audio.load_features`` (the FBK filterbank) when the result
    records no model or it is not found (unchanged) where it was."""
    sha = attrs.get("model_sha256") or ""
    model = _display_model(attrs.get("model_path") or "", sha) if sha else None
    return load_features(audio, n_bins) if model is None else model.features(audio)
