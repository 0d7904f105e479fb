"""Corpus files: manifests of utterances with references, and word-timing files (CTM or JSON)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Collection
from dataclasses import dataclass

from ._io import write_text
from .errors import SpesError

_REFERENCE_COLUMNS = ("reference", "tgt_text", "text")


@dataclass(frozen=True)
class Entry:
    id: str
    audio: str  # path to an audio file
    reference: str


def read_rows(path: str, hint: str) -> list[dict]:
    """The rows of a TSV manifest with a header line; one clear error for a missing file, and for an
    empty one (``hint`` says what the file should hold)."""
    if not os.path.isfile(path):
        raise SpesError(f"manifest not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise SpesError(f"{path}: empty manifest ({hint})")
    return rows


def read_manifest(path: str | os.PathLike, require_reference: bool = True,
                  ids: Collection[str] | None = None) -> list[Entry]:
    """Reads a TSV manifest with a header: ``audio`` and a reference column (``reference``,
    ``tgt_text`` or ``text``), optionally ``id`` (default: the audio file name). Audio paths are
    relative to the manifest's folder. ``require_reference=False`` accepts manifests without a
    reference column (the references are then empty). ids: only these utterances' rows are
    returned and their audio checked (a result's: a corpus run skips rows whose audio is unusable)."""
    path = os.fspath(path)
    rows = read_rows(path, "a TSV with a header line 'id, audio, reference'")
    columns = rows[0].keys()
    ref = next((c for c in _REFERENCE_COLUMNS if c in columns), None)
    if "audio" not in columns or (ref is None and require_reference):
        raise SpesError(f"{path}: needs an 'audio' column and one of {_REFERENCE_COLUMNS}; has {list(columns)}")
    base = os.path.dirname(os.path.abspath(path))
    entries, seen = [], []
    for n, row in enumerate(rows, 2):
        if row["audio"] is None or (ref is not None and row[ref] is None):
            raise SpesError(f"{path}:{n}: missing fields")
        audio = os.path.join(base, row["audio"])
        uid = row.get("id") or os.path.splitext(os.path.basename(audio))[0]
        seen.append(uid)
        if ids is not None and uid not in ids:
            continue
        if not os.path.isfile(audio):
            raise SpesError(f"{path}:{n}: audio file not found: {audio}")
        entries.append(Entry(uid, audio, row[ref].strip() if ref else ""))
    if len(set(seen)) != len(seen):
        raise SpesError(f"{path}: utterance ids are not unique")
    return entries


def write_manifest(path: str | os.PathLike, entries: list[Entry]) -> None:
    """Writes a manifest with audio paths relative to its folder."""
    base = os.path.dirname(os.path.abspath(path))
    write_text(path, "id\taudio\treference\n" +
               "".join(f"{e.id}\t{os.path.relpath(e.audio, base)}\t{e.reference}\n" for e in entries))


Timings = dict[str, list[tuple[str, float, float]]]


def read_word_timings(path: str | os.PathLike) -> Timings:
    """Word spans per utterance: id -> [(word, start s, end s)].

    Accepts a CTM file (``utt channel start duration word [confidence]`` per line) or JSON in the
    layout of ``spes_jax.assets.sample_timings()`` (id -> {"words": [{"word", "start", "end"}]}).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SpesError(f"word-timing file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
            return {uid: [(w["word"], float(w["start"]), float(w["end"])) for w in u["words"]]
                    for uid, u in data.items()}
        except (ValueError, KeyError, TypeError) as e:
            raise SpesError(f"{path}: not a word-timing JSON file ({e})") from None
    out: Timings = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith(";;"):
            continue
        parts = line.split()
        try:
            uid, start, dur, word = parts[0], float(parts[2]), float(parts[3]), parts[4]
        except (IndexError, ValueError):
            raise SpesError(f"{path}:{n}: not a CTM line (utt channel start duration word)") from None
        out.setdefault(uid, []).append((word, start, start + dur))
    for spans in out.values():
        spans.sort(key=lambda s: s[1])
    return out
