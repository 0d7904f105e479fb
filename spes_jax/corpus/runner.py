"""``explain_corpus``: a streamed, resumable, sharded SPES run over a whole corpus.

Per process: pick this process's share of the corpus (length-balanced), decode the hypotheses in
batches once (stored in the run), then sweep the utterances longest first so each bucket's compiled
steps are reused; reading + fbank + SLIC run ahead in a background thread, and finished shards are
written and committed by a second background thread while the device sweeps the next utterances.
Decoded targets and explanations are both committed at least every ``commit_every`` seconds, so a
kill loses at most about that much work (or one utterance's sweep, if that takes longer); Ctrl-C and
errors commit every utterance explained so far before the run stops.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

from .._io import keep_on_interrupt, write_json
from ..audio import FRAME_SHIFT_S
from ..config import SPESConfig
from ..core import sweep
from ..core.segmentation import prefetch, segment
from ..errors import SpesError, count
from ..driver import sweeps
from ..explainer import explanation
from ..explanation import Explanation
from ..provenance import file_provenance, record_utterance
from . import rundir
from .sources import Utterance, load_source, read_corpus

TARGETS = ("hypothesis", "reference")


def assign(utterances: Sequence[Utterance], n_processes: int) -> list[list[Utterance]]:
    """Deterministic length-balanced split: longest first, each to the least-loaded process (ties:
    lowest process number). Loads differ by at most one utterance's length."""
    load = [0] * n_processes
    parts: list[list[Utterance]] = [[] for _ in range(n_processes)]
    for u in sorted(utterances, key=lambda u: (-u.frames, u.id)):
        p = min(range(n_processes), key=lambda i: (load[i], i))
        parts[p].append(u)
        load[p] += max(u.frames, 1)
    return parts


def _duration(seconds: float) -> str:
    """Audio time as a person reads it: "7.0 s", "12.5 min", "3.20 h"."""
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


@dataclasses.dataclass
class Summary:
    """What a run did (this process). seconds: wall time of each phase; host work overlapped with the
    sweep is counted in ``read_slic`` and ``write`` but only adds to the wall time where waited for."""

    utterances: int = 0
    already_done: int = 0
    skipped: int = 0
    errors_file: str = ""  # where the skipped inputs are logged, one JSON line each (id, source, error)
    audio_seconds: float = 0.0
    masks: int = 0
    wall: float = 0.0
    seconds: dict = dataclasses.field(default_factory=lambda: {"decode": 0.0, "read_slic": 0.0, "sweep": 0.0,
                                                                "write": 0.0})

    @property
    def masks_per_second(self) -> float:
        return self.masks / self.seconds["sweep"] if self.seconds["sweep"] else 0.0

    def line(self) -> str:
        return (f"{count(self.utterances, 'utterance')} explained ({self.already_done} already done, {self.skipped} "
                f"skipped), {_duration(self.audio_seconds)} of audio, wall {self.wall:.1f} s, "
                f"{self.masks_per_second:.0f} masks/s in the sweep; time: " +
                ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))


class _Clock:
    """Whether ``seconds`` have passed since the last ``restart`` (or since it was made)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.restart()

    def restart(self) -> None:
        self.start = time.perf_counter()

    def due(self) -> bool:
        return time.perf_counter() - self.start >= self.seconds


class _Errors:
    """Appends skips to the process's errors.jsonl as they happen (one line each, flushed)."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, rundir.ERRORS_FILE)
        self.lock = threading.Lock()
        self.count = 0

    def skip(self, uid: str, source: str, reason: str) -> None:
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": uid, "source": source, "error": reason}) + "\n")
            self.count += 1


def _load_all(model, todo: Sequence[Utterance], errors: _Errors, fn):
    """(utterance, fn(utterance)) in order, read one ahead in a background thread; a SpesError or an
    OSError skips the utterance (logged) instead of ending the run."""
    def safe(u):
        try:
            return u, fn(u)
        except (SpesError, OSError) as e:
            return u, e

    for u, out in prefetch(safe, todo, depth=2):
        if isinstance(out, Exception):
            errors.skip(u.id, u.source, str(out))
        else:
            yield u, out


def _targets(model, todo: Sequence[Utterance], mode: str, known: dict[str, list[int]], errors: _Errors,
             batch: int, store, commit_every: float) -> dict[str, list[int]]:
    """Explained token ids of every utterance not in ``known``: the manifest's text or the model's
    beam output, decoded ``batch`` utterances at a time (features are not kept). ``store(new)`` is
    given everything decoded so far at least every ``commit_every`` seconds and at the end."""
    out: dict[str, list[int]] = {}
    missing = [u for u in todo if u.id not in known]
    if mode == "reference":
        for u in missing:
            if not u.reference:
                errors.skip(u.id, u.source, "no reference text (--targets reference)")
            else:
                try:
                    out[u.id] = model.target_ids(u.reference, "reference")
                except SpesError as e:
                    errors.skip(u.id, u.source, str(e))
    else:
        clock = _Clock(commit_every)
        chunk: list[tuple[Utterance, np.ndarray]] = []
        for item in _load_all(model, missing, errors, lambda u: load_source(model, u.source)):
            chunk.append(item)
            if len(chunk) == batch:
                out.update(_decode(model, chunk, batch))
                chunk = []
                if clock.due():
                    store(out)
                    clock.restart()
        if chunk:
            out.update(_decode(model, chunk, batch))
    if out:
        store(out)
    return out


def _decode(model, chunk, batch) -> dict[str, list[int]]:
    hyps = model.decode([f for _, f in chunk], batch_size=batch)
    return {u.id: [int(t) for t in h[0].tokens] for (u, _), h in zip(chunk, hyps)}


def explain_corpus(model, manifest: str | os.PathLike, out_dir: str | os.PathLike,
                   config: SPESConfig | None = None, *, targets: str = "hypothesis", task: str = "asr",
                   resume: bool = False, limit: int | None = None, shard_size: int = 16,
                   commit_every: float = 60.0, decode_batch: int = 8, process_index: int | None = None,
                   process_count: int | None = None,
                   devices: Sequence[jax.Device] | None = None, map_dtype: str = "float32",
                   progress: bool = False) -> Summary:
    """Explains every utterance of ``manifest`` (a TSV manifest, a fairseq S2T manifest or a folder of
    audio files) into the run directory ``out_dir`` (layout: ``spes_jax.corpus.rundir``).

    Explanations are committed ``shard_size`` utterances at a time, or sooner once ``commit_every``
    seconds have passed since the last commit (decoded targets likewise); ``resume`` continues a run
    in ``out_dir`` (refused if the model, configuration or seed differ). Under ``jax.distributed`` each
    process explains its length-balanced share with its local devices (default ``process_index`` /
    ``process_count`` from JAX). Unreadable or too short inputs are skipped and logged. ``map_dtype``
    "float16" halves the stored maps (see ``save_explanations``). Returns this process's ``Summary``.
    """
    t_start = time.perf_counter()
    cfg = model.sweep_config(config or SPESConfig.asr())
    if targets not in TARGETS:
        raise SpesError(f"targets must be one of {TARGETS}, got {targets!r}")
    if shard_size < 1 or not commit_every > 0:
        raise SpesError(f"the shard size must be >= 1 and the commit interval > 0 s, got {shard_size} and "
                        f"{commit_every}")
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    out_dir = os.path.abspath(os.fspath(out_dir))
    utterances = read_corpus(manifest)[:limit]

    attrs = file_provenance(model, cfg, task, targets=targets)
    identity = {"model": attrs["model_sha256"], "model_options": attrs["model_options"],
                "model_config": repr(model.module.cfg), "config": cfg.to_json(),
                "seed": cfg.seed, "targets": targets, "task": task, "map_dtype": map_dtype, "attrs": attrs}
    mine = rundir.proc_dir(out_dir, process_index)
    if os.path.isdir(out_dir) and not resume:
        if os.path.isfile(os.path.join(mine, rundir.RUN_FILE)):
            raise SpesError(f"{out_dir} already holds a run; pass --resume to continue it or choose a new --out")
        if any(not n.startswith("proc-") for n in os.listdir(out_dir)):
            raise SpesError(f"{out_dir} exists and is not a corpus run directory; choose a new --out")
    recorded = rundir.read_identity(out_dir) if os.path.isdir(out_dir) else None
    why = recorded and rundir.identity_mismatch(recorded, identity)
    if why:
        raise SpesError(f"cannot {'resume' if resume else 'add to'} the run in {out_dir}: {why}")
    os.makedirs(mine, exist_ok=True)
    write_json(os.path.join(mine, rundir.RUN_FILE), {**identity, "process_count": process_count})

    errors = _Errors(mine)
    done = rundir.committed(out_dir)
    part = assign(utterances, process_count)[process_index]
    todo = [u for u in part if u.id not in done]
    summary = Summary(already_done=len(part) - len(todo))

    t0 = time.perf_counter()
    known = rundir.stored_targets(out_dir)
    targets_path = os.path.join(mine, rundir.TARGETS_FILE)
    stored_here = rundir._read_json(targets_path, {})
    new = _targets(model, todo, targets, known, errors, decode_batch,
                   lambda decoded: write_json(targets_path, {**stored_here, **decoded}), commit_every)
    tokens = {**known, **new}
    todo = [u for u in todo if u.id in tokens]
    summary.seconds["decode"] = time.perf_counter() - t0

    plan = sweep.make_plan(model.module, cfg, devices or jax.local_devices())
    writer = rundir.ShardWriter(mine, rundir.file_attrs(identity), map_dtype)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="utt", desc=f"SPES corpus [{process_index}]", dynamic_ncols=True,
                   file=sys.stderr)

    def read(u: Utterance):
        t = time.perf_counter()
        feats = load_source(model, u.source)
        seg = segment(feats, cfg)
        return feats, seg, time.perf_counter() - t

    def prepare(loaded):
        u, (feats, seg, _) = loaded
        return sweep.prepare(feats, tokens[u.id], seg, u.id, cfg, plan, layout=model.layout(feats)), None

    buffer: list[tuple[Explanation, str]] = []  # and its source, recorded when the shard is written
    lock = threading.Lock()  # the sweep's thread commits, and on Ctrl-C the command line's main thread
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None

        def flush(wait: bool = False):
            """Starts writing the buffered explanations after the previous write; ``wait``: and waits."""
            nonlocal pending, buffer
            with lock:
                if pending is not None:
                    _wait_write(pending, summary)
                    pending = None
                if buffer:
                    pending = pool.submit(_timed_commit, writer, model, buffer)
                    buffer = []
                if wait and pending is not None:
                    _wait_write(pending, summary)
                    pending = None

        def keep_explained():
            flush(wait=True)
            print(f"spes-jax: {count(summary.already_done + summary.utterances, 'utterance')} of the run committed "
                  f"in {out_dir}; the same command with --resume explains the rest", file=sys.stderr)

        t_sweep = time.perf_counter()
        clock = _Clock(commit_every)
        skipped_before = errors.count
        with keep_on_interrupt(keep_explained):
            try:
                for swept in sweeps(model, plan, _load_all(model, todo, errors, read), prepare,
                                    (cfg.n_masks, cfg.n_token_masks), until_r=cfg.until_r):
                    u, (feats, seg, host_s) = swept.item
                    summary.seconds["read_slic"] += host_s
                    t = time.perf_counter()
                    exp = explanation(model, u.id, tokens[u.id], feats.shape[0], seg, cfg, swept.result,
                                      given=targets == "reference")
                    with lock:
                        buffer.append((exp, u.source))
                        summary.utterances += 1
                    summary.seconds["sweep"] += swept.seconds + time.perf_counter() - t
                    summary.masks += sum(swept.result.n_masks.values())
                    summary.audio_seconds += feats.shape[0] * FRAME_SHIFT_S
                    if len(buffer) >= shard_size or clock.due():
                        flush()
                        clock.restart()
                    if bar:
                        bar.total = len(todo) - (errors.count - skipped_before)  # skipped inputs leave the total
                        bar.set_postfix_str(f"{summary.masks / max(time.perf_counter() - t_sweep, 1e-9):.0f} masks/s")
                        bar.update(1)
            finally:  # errors and a Python caller's Ctrl-C too: what is explained is committed, --resume skips it
                flush(wait=True)
    if bar:
        bar.total = bar.n  # inputs skipped after the last explained one
        bar.close()
    summary.skipped, summary.errors_file = errors.count, errors.path
    summary.wall = time.perf_counter() - t_start
    return summary


def _timed_commit(writer: rundir.ShardWriter, model, explained: list[tuple[Explanation, str]]) -> float:
    """Writes one shard, each explanation with its record (token ids; audio path and sha256)."""
    t = time.perf_counter()
    writer.commit([record_utterance(model, exp, source) for exp, source in explained])
    return time.perf_counter() - t


def _wait_write(future, summary: Summary) -> None:
    try:
        summary.seconds["write"] += future.result()
    except OSError as e:
        raise SpesError(f"cannot write a shard ({e.strerror or e}); every committed shard is intact: free "
                        f"space and rerun with --resume") from None
