"""The run directory of a corpus explanation: what is committed, and how to read or merge it.

    RUN_DIR/
      proc-00000/                    one folder per process (one process per host)
        run.json                     model hash, configuration, seed, targets, task, the files' attributes,
                                     process count
        targets.json                 the explained token ids per utterance (decoded once, before the sweep)
        shard-00000.h5 ...           explanations in the reference HDF5 layout, each committed atomically
        index.json                   the committed shards and their ids (replaced atomically after a shard)
        errors.jsonl                 skipped utterances and why (one JSON object per line)

A shard counts only once ``index.json`` names it: a crash between writing a shard and replacing the
index leaves an unlisted shard, which a resumed run deletes and redoes.
"""

from __future__ import annotations

import glob
import json
import os

from .._io import atomic_output, write_json
from ..errors import SpesError
from ..explanation import Explanation, load_explanations, save_explanations

RUN_FILE, INDEX_FILE, TARGETS_FILE, ERRORS_FILE = "run.json", "index.json", "targets.json", "errors.jsonl"
# Recorded but free to change on resume: they do not change any result.
_FREE_CONFIG_KEYS = ("batch_size", "token_batch_size")
# What a run made before a key was recorded had: float32 maps, and no model options (FBK models).
_BEFORE_RECORDED = {"map_dtype": "float32", "model_options": "{}"}


def proc_dir(run_dir: str, process: int) -> str:
    return os.path.join(run_dir, f"proc-{process:05d}")


def proc_dirs(run_dir: str) -> list[str]:
    return sorted(d for d in glob.glob(os.path.join(run_dir, "proc-*")) if os.path.isdir(d))


def _read_json(path: str, default=None):
    if not os.path.isfile(path):
        return default
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise SpesError(f"{path}: unreadable ({e}); the run directory was modified by hand?") from None


def identity_mismatch(recorded: dict, current: dict) -> str | None:
    """Why a recorded run identity differs from the current one (None when compatible)."""
    for key in ("model", "model_options", "model_config", "seed", "targets", "task", "map_dtype"):
        if recorded.get(key, _BEFORE_RECORDED.get(key)) != current.get(key):
            return f"{key} differs (run: {recorded.get(key)!r}, now: {current.get(key)!r})"
    a, b = json.loads(recorded["config"]), json.loads(current["config"])
    for key in sorted(set(a) | set(b)):
        if key not in _FREE_CONFIG_KEYS and a.get(key) != b.get(key):
            return f"config.{key} differs (run: {a.get(key)!r}, now: {b.get(key)!r})"
    return None


def read_identity(run_dir: str) -> dict | None:
    """The recorded run identity (all processes must agree), or None for a new directory."""
    found = [(d, _read_json(os.path.join(d, RUN_FILE))) for d in proc_dirs(run_dir)]
    found = [(d, r) for d, r in found if r is not None]
    if not found:
        return None
    first_dir, first = found[0]
    for d, r in found[1:]:
        why = identity_mismatch(first, r)
        if why:
            raise SpesError(f"{run_dir}: {d} and {first_dir} belong to different runs: {why}")
    return first


def committed(run_dir: str) -> dict[str, str]:
    """Every committed utterance id -> its shard file, over all processes."""
    out: dict[str, str] = {}
    for d in proc_dirs(run_dir):
        for shard in _read_json(os.path.join(d, INDEX_FILE), {"shards": []})["shards"]:
            for uid in shard["ids"]:
                out.setdefault(uid, os.path.join(d, shard["file"]))
    return out


def stored_targets(run_dir: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for d in proc_dirs(run_dir):
        out.update(_read_json(os.path.join(d, TARGETS_FILE), {}))
    return out


def errors(run_dir: str) -> list[dict]:
    """The logged skips of all processes (a line cut by a crash is ignored)."""
    out = []
    for d in proc_dirs(run_dir):
        path = os.path.join(d, ERRORS_FILE)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    return out


class ShardWriter:
    """Commits explanations of one process in shards: HDF5 under a temporary name, renamed into place,
    then the index replaced. Only this process's folder is written."""

    def __init__(self, directory: str, attrs: dict, map_dtype: str = "float32"):
        self.directory = directory
        self.attrs = attrs
        self.map_dtype = map_dtype
        self.index = _read_json(os.path.join(directory, INDEX_FILE), {"shards": []})
        listed = {s["file"] for s in self.index["shards"]}
        for path in glob.glob(os.path.join(directory, "shard-*.h5")) + glob.glob(os.path.join(directory, ".spes-jax-*")):
            if os.path.basename(path) not in listed:  # written but never committed: redo its utterances
                os.unlink(path)
        self.next = 1 + max((int(f[6:11]) for f in listed), default=-1)

    def commit(self, explanations: list[Explanation]) -> None:
        name = f"shard-{self.next:05d}.h5"
        save_explanations(os.path.join(self.directory, name), explanations, self.attrs, self.map_dtype)
        self.index["shards"].append({"file": name, "ids": [e.id for e in explanations]})
        write_json(os.path.join(self.directory, INDEX_FILE), self.index)
        self.next += 1


def load_run(run_dir: str | os.PathLike) -> dict[str, Explanation]:
    """All committed explanations of a run directory (every process's shards) -> {id: Explanation}."""
    run_dir = os.fspath(run_dir)
    if read_identity(run_dir) is None:
        raise SpesError(f"{run_dir}: not a corpus run directory (no proc-*/run.json)")
    by_shard: dict[str, list[str]] = {}
    for uid, shard in committed(run_dir).items():
        by_shard.setdefault(shard, []).append(uid)
    out: dict[str, Explanation] = {}
    for shard, ids in sorted(by_shard.items()):
        exps = load_explanations(shard)
        out.update((i, exps[i]) for i in ids)
    return out


def file_attrs(identity: dict) -> dict:
    """The HDF5 file attributes of a run's shards and merged file: those ``spes-jax explain`` writes
    (``provenance.file_provenance``) plus the run's ``targets``."""
    return identity.get("attrs") or {}  # empty for runs of spes-jax versions that did not record them


def merge(run_dir: str | os.PathLike, out: str | os.PathLike) -> int:
    """Writes every committed explanation of ``run_dir`` into one HDF5 file in the reference layout
    (atomically; shard groups are copied, not loaded, so memory stays flat). Returns the count."""
    import h5py

    run_dir = os.fspath(run_dir)
    if not os.path.exists(run_dir):
        raise SpesError(f"run directory not found: {run_dir}")
    if read_identity(run_dir) is None:
        raise SpesError(f"{run_dir}: not an explain-corpus run directory (no proc-*/run.json); merge joins the "
                        "shards of such a run (every command that reads results takes a folder of explanation "
                        "files as it is)")
    done = committed(run_dir)
    if not done:
        raise SpesError(f"{run_dir}: no committed utterance yet")
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as dst:
        for key, value in file_attrs(read_identity(run_dir)).items():
            dst.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
        by_shard: dict[str, list[str]] = {}
        for uid, shard in done.items():
            by_shard.setdefault(shard, []).append(uid)
        for shard, ids in sorted(by_shard.items()):
            with h5py.File(shard, "r") as src:
                for uid in sorted(ids):
                    src.copy(src[uid], dst, name=uid)
    return len(done)
