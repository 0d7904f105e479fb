"""The converted model directory: config.json, orbax parameters, dictionary, SentencePiece, data config.

Layout::

    DIR/config.json    {"format": "spes-jax-model", "version": 1, "model": {...}, "data": {...},
                        "source": {...}, "search": {...} (optional: default decoding options)}
    DIR/params/        orbax checkpoint of the Flax parameter tree (float32)
    DIR/dict.txt       fairseq target dictionary
    DIR/spm.model      SentencePiece model of the targets (optional)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np

from ..errors import SpesError
from .config import ModelConfig

FORMAT = "spes-jax-model"
VERSION = 1
DEFAULT_DATA_CONFIG = {"cmvn": "utterance", "num_mel_bins": 80, "sample_rate": 16000}


def save_model_dir(out_dir: str | os.PathLike, cfg: ModelConfig, params: Any, dict_path: str,
                   spm_path: str | None, data: dict | None = None, source: dict | None = None,
                   overwrite: bool = False, search: dict | None = None) -> str:
    """Writes a model directory atomically: into a temporary sibling, then renamed into place.

    ``search`` holds the model's default decoding options (``SearchConfig`` fields), e.g.
    ``{"min_len": 0}`` for a model trained to output the empty hypothesis on silence."""
    import orbax.checkpoint as ocp

    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and not overwrite:
        raise SpesError(f"output directory exists: {out_dir} (pass --overwrite to replace it)")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".spes-jax-", dir=parent)
    try:
        config = {"format": FORMAT, "version": VERSION, "model": cfg.to_dict(),
                  "data": {**DEFAULT_DATA_CONFIG, **(data or {})}, "source": source or {}}
        if search:
            config["search"] = search
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        shutil.copyfile(dict_path, os.path.join(tmp, "dict.txt"))
        if spm_path:
            shutil.copyfile(spm_path, os.path.join(tmp, "spm.model"))
        params = _to_numpy(params)
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(tmp, "params"), params)
        checkpointer.wait_until_finished()
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; the directory is meant to be shared
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def read_model_dir(path: str | os.PathLike) -> tuple[ModelConfig, dict, dict, str, str | None]:
    """Returns (model config, params, whole config.json, dictionary path, SentencePiece path or None)."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.fspath(path))
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise SpesError(f"not a spes-jax model directory (no config.json): {path}")
    try:
        with open(cfg_path) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SpesError(f"{cfg_path}: unreadable ({e})") from None
    if config.get("format") != FORMAT:
        raise SpesError(f"{cfg_path}: not a spes-jax model config")
    if config.get("version") != VERSION:
        raise SpesError(f"{cfg_path}: model format version {config.get('version')}, this spes-jax reads {VERSION}")
    cfg = ModelConfig.from_dict(config["model"])
    params_dir = os.path.join(path, "params")
    if not os.path.isdir(params_dir):
        raise SpesError(f"{path}: parameters missing (no params/ directory)")
    try:
        params = ocp.StandardCheckpointer().restore(params_dir)
    except Exception as e:  # orbax raises assorted types for a damaged checkpoint
        raise SpesError(f"{params_dir}: cannot read parameters ({type(e).__name__}: {e})") from None
    spm = os.path.join(path, "spm.model")
    return cfg, params, config, os.path.join(path, "dict.txt"), spm if os.path.isfile(spm) else None
