"""Corpus inputs: the project's TSV manifest, fairseq S2T TSV manifests (audio paths or
``features.zip:offset:length`` references into an uncompressed zip of .npy fbank arrays), or a folder
of audio files. Every input becomes a list of ``Utterance`` (id, source, reference, length estimate).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import SpesError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".sph")
_REFERENCE_COLUMNS = ("reference", "tgt_text", "text")
# fairseq's zip reference: path:byte offset:byte length (of one stored, uncompressed .npy member)
_ZIP_REF = re.compile(r"^(?P<path>.+\.zip):(?P<offset>\d+):(?P<length>\d+)$")


@dataclass(frozen=True)
class Utterance:
    """One corpus item. source: an audio path or a ``zip:offset:length`` reference; frames: a length
    estimate used only to sort and balance work (fairseq's n_frames, else the file size)."""

    id: str
    source: str
    reference: str
    frames: int


def is_zip_ref(source: str) -> bool:
    return _ZIP_REF.match(source) is not None


def read_zip_npy(source: str) -> np.ndarray:
    """Reads one array of a fairseq ``features.zip:offset:length`` reference without extracting the zip."""
    m = _ZIP_REF.match(source)
    if m is None:
        raise SpesError(f"not a zip reference (path.zip:offset:length): {source}")
    path, offset, length = m["path"], int(m["offset"]), int(m["length"])
    if not os.path.isfile(path):
        raise SpesError(f"feature zip not found: {path}")
    size = os.path.getsize(path)
    if offset + length > size:
        raise SpesError(f"{source}: offset {offset} + length {length} is past the end of {path} ({size} bytes)")
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as e:
        raise SpesError(f"{source}: no .npy array at this offset (a compressed zip? {e})") from None
    if arr.ndim != 2:
        raise SpesError(f"{source}: expected a (T, C) fbank array, got shape {arr.shape}")
    return arr


def load_source(model, source: str) -> np.ndarray:
    """The model input (T, C) of one utterance: fbank arrays from a zip get the model's CMVN,
    audio files are read by ``model.features``."""
    return model.features(read_zip_npy(source) if is_zip_ref(source) else source)


def _frames_estimate(source: str) -> int:
    m = _ZIP_REF.match(source)
    size = int(m["length"]) if m else (os.path.getsize(source) if os.path.isfile(source) else 0)
    return size // 320  # 16 kHz 16-bit audio and 80-bin float32 fbank both give ~320 bytes per 10 ms frame


def _resolve(base: str, audio: str) -> str:
    m = _ZIP_REF.match(audio)
    if m:
        return f"{os.path.join(base, m['path'])}:{m['offset']}:{m['length']}"
    return os.path.join(base, audio)


def read_tsv(path: str) -> list[Utterance]:
    """A TSV manifest with a header: ``audio`` plus a reference column (``reference``, ``tgt_text``
    or ``text``), optionally ``id`` and fairseq's ``n_frames``; paths relative to the manifest."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        columns = reader.fieldnames or []
        rows = list(reader)
    ref = next((c for c in _REFERENCE_COLUMNS if c in columns), None)
    if "audio" not in columns or ref is None:
        raise SpesError(f"{path}: needs an 'audio' column and one of {_REFERENCE_COLUMNS}; has {list(columns)}")
    if not rows:
        raise SpesError(f"{path}: empty manifest (no utterance after the header)")
    base = os.path.dirname(os.path.abspath(path))
    out, seen = [], {}
    for n, row in enumerate(rows, 2):
        if row["audio"] is None or row[ref] is None or None in row:
            raise SpesError(f"{path}:{n}: wrong number of fields (expected {len(columns)})")
        source = _resolve(base, row["audio"])
        uid = row.get("id") or os.path.splitext(os.path.basename(row["audio"]))[0]
        if uid in seen:
            raise SpesError(f"{path}:{n}: duplicate utterance id {uid!r} (first on line {seen[uid]})")
        seen[uid] = n
        try:
            frames = int(row["n_frames"]) if row.get("n_frames") else _frames_estimate(source)
        except ValueError:
            raise SpesError(f"{path}:{n}: n_frames is not an integer: {row['n_frames']!r}") from None
        out.append(Utterance(uid, source, row[ref].strip(), frames))
    return out


def read_folder(path: str) -> list[Utterance]:
    """Every audio file of a folder (not recursive), id = file name without extension, no reference."""
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(AUDIO_EXTENSIONS))
    if not names:
        raise SpesError(f"{path}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    out, seen = [], set()
    for n in names:
        uid = os.path.splitext(n)[0]
        if uid in seen:
            raise SpesError(f"{path}: two audio files share the id {uid!r}")
        seen.add(uid)
        full = os.path.join(path, n)
        out.append(Utterance(uid, full, "", _frames_estimate(full)))
    return out


def read_corpus(path: str | os.PathLike) -> list[Utterance]:
    """A manifest file (project or fairseq TSV) or a folder of audio files -> utterances in file order."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return read_folder(path)
    if not os.path.isfile(path):
        raise SpesError(f"manifest or audio folder not found: {path}")
    return read_tsv(path)
