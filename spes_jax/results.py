"""Reading results: one reader for every kind of result a command is given.

A result is an explanation HDF5 file (written by ``explain``, ``merge``, ``aggregate``, ``compare``,
or the reference's scripts; one or many utterances), a folder of such files, or an ``explain-corpus``
run directory (its committed shards). Every command that reads results goes through ``load_result``
(the explanations and the provenance attributes) or ``result_attrs`` (the attributes alone, without
reading any map), so every command accepts every kind. The attributes are those documented in
docs/explanation-files.md (model, task, features, ...); a file that records none gives ``{}``.
"""

from __future__ import annotations

import os

from .errors import SpesError
from .explanation import Explanation, load_explanations


def _files(path: str) -> list[str]:
    """The explanation files of a result that is not a run directory (checked to exist)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith((".h5", ".hdf5")))
        if not files:
            raise SpesError(f"{path}: no .h5 explanation files in this folder")
        return files
    if os.path.isfile(path):
        return [path]
    raise SpesError(f"result not found: {path}")


def _run_identity(path: str) -> dict | None:
    from .corpus import rundir

    return rundir.read_identity(path) if os.path.isdir(path) else None


def result_attrs(path: str | os.PathLike) -> dict:
    """The provenance attributes of a result (its first file's, or a run's recorded ones), without
    reading any map; ``{}`` when it records none."""
    path = os.fspath(path)
    return _attrs(path, _run_identity(path))


def _attrs(path: str, identity: dict | None) -> dict:
    import h5py

    from .corpus import rundir

    if identity is not None:
        return rundir.file_attrs(identity)
    try:
        with h5py.File(_files(path)[0], "r") as f:
            return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError:  # not HDF5: ``load_result`` says so
        return {}


def _one_model(path: str, files: list[str]) -> None:
    """A folder's files must explain one model: its maps are drawn and scored with that model's features."""
    if len(files) < 2:
        return
    models = {}
    for f in files:
        attrs = _attrs(f, None)
        if attrs.get("model_sha256"):
            models.setdefault(attrs["model_sha256"], (f, attrs.get("model_path") or "a model"))
    if len(models) > 1:
        (f1, m1), (f2, m2) = list(models.values())[:2]
        raise SpesError(f"{path}: its files explain different models ({os.path.basename(f1)}: {m1}; "
                        f"{os.path.basename(f2)}: {m2}); give one file, or a folder of one model's results")


def load_result(path: str | os.PathLike) -> tuple[dict[str, Explanation], dict]:
    """A result -> ({utterance id: Explanation}, ``result_attrs(path)``).

    The one place that knows result layouts: a new layout needs only a new branch here. An id found in
    two files of a folder is an error (which of them would be meant is unknown).
    """
    from .corpus import rundir

    path = os.fspath(path)
    identity = _run_identity(path)
    if identity is not None:
        return rundir.load_run(path), _attrs(path, identity)
    exps: dict[str, Explanation] = {}
    files = _files(path)
    _one_model(path, files)
    for f in files:
        for uid, exp in load_explanations(f).items():
            if uid in exps:
                raise SpesError(f"{f}: utterance {uid!r} appears in more than one file of {path}")
            exps[uid] = exp
    return exps, _attrs(path, None)
