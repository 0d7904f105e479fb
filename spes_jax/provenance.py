"""What an explanation file records about how it was made, so that a reader needs no spes-jax code.

``provenance`` builds the HDF5 file attributes (library version, task, SPES configuration, model and
its parameter hash, sample rate, frame shift, feature kind) and adds to every explanation the token
ids of its hypothesis and, for audio given as a file, the file's absolute path and sha256. The
layout is documented in docs/explanation-files.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence

import jax
import numpy as np

from .audio import FRAME_SHIFT_S, SAMPLE_RATE
from .config import SPESConfig
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


def provenance(model, config: SPESConfig, task: str, explanations: Sequence[Explanation],
               audio: Sequence | None = None, **extra) -> tuple[dict, list[Explanation]]:
    """File attributes for ``save_explanations`` and the explanations with their per-utterance record.

    audio: the input each explanation was computed from (files record path and sha256; waveforms
    and feature arrays record nothing). extra: further file attributes (e.g. ``seconds``).
    Returns (attributes, explanations with ``meta`` extended by ``token_ids`` and, for files,
    ``audio`` and ``audio_sha256``).
    """
    from . import __version__

    attrs = {"library": f"spes-jax {__version__}", "task": task, "config": config.to_json(), "seed": config.seed,
             "model": json.dumps(model.info or {}), "model_path": os.path.abspath(model.path) if model.path else "",
             "model_sha256": parameters_sha256(model.params), "sample_rate": SAMPLE_RATE,
             "frame_shift_s": FRAME_SHIFT_S, "features": feature_kind(model), **extra}
    audio = list(audio) if audio is not None else [None] * len(explanations)
    out = []
    for exp, source in zip(explanations, audio):
        meta = {**exp.meta, "token_ids": np.array([model.dictionary.index(p) for p in exp.tokens], np.int32)}
        if isinstance(source, (str, os.PathLike)):
            meta.update(audio=os.path.abspath(os.fspath(source)), audio_sha256=file_sha256(source))
        out.append(dataclasses.replace(exp, meta=meta))
    return attrs, out
