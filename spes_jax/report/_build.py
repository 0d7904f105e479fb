"""Builds the report page: explanations -> quantised, deflated arrays in JSON -> one HTML file.

Size: every array is quantised to 8 bits and deflated (the browser inflates it with its built-in
``DecompressionStream``). Token maps are stored once, quantised between each token's raw minimum and
maximum; the normalised map is an increasing affine function of the raw one per token (z-score, then
min-max), so the page recovers both from the same bytes and the per-token ranges. Audio is 8-bit
mu-law (mu = 255) at 16 kHz. The colour range of every map the page can show is computed here, by
the figures' rule (``plotting.color_limits``), and stored with the maps. See docs/report.md.
"""

from __future__ import annotations

import base64
import html
import json
import os
import zlib
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from .._io import write_text
from ..analysis.plotting import (CLIP_PERCENTILE, OVERLAY_ALPHA, OVERLAY_GAMMA, OVERLAY_PALE, OVERLAY_RGB,
                                 color_limits)
from ..analysis.plausibility import timed_words
from ..alignment import spoken_form
from ..audio import FRAME_SHIFT_S, SAMPLE_RATE, read_audio
from ..errors import SpesError, count
from ..explanation import Explanation
from ..text import pieces_text, token_words, word_groups

Timing = list[tuple[str, float, float]]
# WER with both sides in spoken form (case, punctuation, numerals): Whisper writes "Go forward 10 meters."
SPOKEN_WER = "spoken WER"


@dataclass(frozen=True)
class Utterance:
    """One utterance of a report: its explanation and what is known about it.

    audio: a 16 kHz WAV path or (N,) waveform (embedded for playback; also gives the spectrogram).
    timings: (word, start s, end s) spans. scores: extra index columns, e.g. {"deletion AUC": 91.2}.
    """

    explanation: Explanation
    audio: str | os.PathLike | np.ndarray | None = None
    timings: Timing | None = None
    reference: str = ""
    scores: dict = field(default_factory=dict)


def resolve_audio(spec: str | os.PathLike | None, ids: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """``--audio``: a WAV file, a folder of ``<id>.wav`` files, or a manifest TSV (id, audio and
    optionally reference columns) -> ({id: WAV path}, {id: reference})."""
    from ..manifest import read_manifest

    if spec is None:
        return {}, {}
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        found = {i: os.path.join(spec, f"{i}.wav") for i in ids}
        return {i: p for i, p in found.items() if os.path.isfile(p)}, {}
    if not os.path.isfile(spec):
        raise SpesError(f"--audio not found: {spec}")
    if spec.endswith((".tsv", ".txt")):
        entries = read_manifest(spec, require_reference=False, ids=set(ids))
        return {e.id: e.audio for e in entries}, {e.id: e.reference for e in entries if e.reference}
    name = os.path.splitext(os.path.basename(spec))[0]
    if name in ids or len(ids) == 1:
        return {name if name in ids else ids[0]: spec}, {}
    raise SpesError(f"--audio {spec}: the result has {count(len(ids), 'utterance')} and none is called {name!r}; "
                    f"give a folder of <id>.wav files or a manifest")


def _utterance_scores(curves: dict, uid: str, reference: str) -> dict:
    """Per-utterance deletion / insertion AUC (p as a fraction, as ``evaluate`` reports) from the
    decoded hypotheses that ``spes-jax evaluate`` stores in metrics.json."""
    from ..analysis.metrics import auc, corpus_score

    out = {}
    for metric in ("deletion", "insertion"):
        c = curves.get(metric)
        if not c or uid not in c.get("hypotheses", {}) or not reference:
            continue
        scores = [corpus_score(c["scorer"], [reference], [h]) for h in c["hypotheses"][uid]]
        out[f"{metric} AUC"] = auc(scores, np.asarray(c["percentages"], np.float64) / 100)
    return out


def utterances(explanations: dict[str, Explanation], audio: str | os.PathLike | None = None,
               timings: str | os.PathLike | None = None, metrics: str | os.PathLike | None = None
               ) -> list[Utterance]:
    """Joins a run with ``--audio`` (file, folder or manifest; else the audio file each explanation
    records, where it is still there and unchanged), ``--timings`` (CTM or JSON) and ``--metrics``
    (the metrics.json of ``spes-jax evaluate``; needs references from a manifest)."""
    from ..analysis.plausibility import read_timings
    from ..provenance import given_audio, recorded_audio

    ids = list(explanations)
    paths, refs = resolve_audio(audio, ids)
    spans = read_timings(timings, explanations.values()) if timings else {}
    curves = {}
    if metrics:
        try:
            with open(metrics, encoding="utf-8") as f:
                curves = json.load(f)
        except (OSError, ValueError) as e:
            raise SpesError(f"--metrics {metrics}: not a metrics.json of 'spes-jax evaluate' ({e})") from None
        if not refs:
            raise SpesError("--metrics needs the references: give --audio as a manifest with a reference column")
    return [Utterance(exp, given_audio(exp, paths[uid]) if uid in paths else recorded_audio(exp), spans.get(uid),
                      refs.get(uid, ""),
                      _utterance_scores(curves, uid, refs.get(uid, ""))) for uid, exp in explanations.items()]


def _pack(a: np.ndarray) -> str:
    """uint8 array -> base64 of its deflated bytes (C order)."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(a, np.uint8).tobytes(), 9)).decode("ascii")


def _quantise(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Maps [lo, hi] (broadcast) to 0..255; flat ranges map to 0."""
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.clip(np.rint((x - lo) / span * 255), 0, 255).astype(np.uint8)


def _mu_law(wave: np.ndarray) -> np.ndarray:
    y = np.sign(wave) * np.log1p(255 * np.minimum(np.abs(wave), 1.0)) / np.log(256.0)
    return np.rint((y + 1) * 127.5).astype(np.uint8)


def _round(x: np.ndarray, digits: int = 4) -> list:
    return np.round(np.nan_to_num(np.asarray(x, np.float64)), digits).tolist()


def _limits(exp: Explanation, norm: Explanation, percentile: float | None) -> dict:
    """The colour range (``color_limits``) of every map the page shows: raw (one range shared by
    all tokens), normalised per token, word (per token: its word's mean map) and sentence level."""
    spec = norm.spectrogram_saliency
    word = [None] * len(exp.tokens)
    for g in word_groups(exp.tokens):
        limits = color_limits(spec[g].mean(axis=0), percentile)
        for k in g:
            word[k] = limits
    return {"raw": color_limits(exp.spectrogram_saliency, percentile, per_map=True),
            "norm": [color_limits(m, percentile) for m in spec], "word": word,
            "sentence": color_limits(norm.sentence_level(), percentile)}


def _significant(x: np.ndarray, digits: int = 6) -> list:
    """Like ``_round`` but to significant digits: raw maps may be tiny (contrastive scores ~1e-5)."""
    a = np.nan_to_num(np.asarray(x, np.float64))
    return np.array([float(f"{v:.{digits}g}") for v in a.ravel()]).reshape(a.shape).tolist()


def _maps(exp: Explanation, norm: Explanation) -> dict:
    """The spectrogram maps, quantised once between each row's raw minimum and maximum, and the
    per-row raw and normalised ranges that recover both (the normalisation is affine per row)."""
    K = exp.spectrogram_saliency.shape[0]
    raw = np.asarray(exp.spectrogram_saliency, np.float64).reshape(K, -1)
    finite = np.isfinite(raw)
    rlo = np.where(finite, raw, np.inf).min(1)
    rhi = np.where(finite, raw, -np.inf).max(1)
    rlo, rhi = np.where(np.isfinite(rlo), rlo, 0.0), np.where(np.isfinite(rhi), rhi, 0.0)
    nflat = norm.spectrogram_saliency.reshape(K, -1)
    return {"maps": _pack(_quantise(np.where(finite, raw, rlo[:, None]), rlo[:, None], rhi[:, None])),
            "raw": [_significant(rlo), _significant(rhi)], "norm": [_round(nflat.min(1), 6), _round(nflat.max(1), 6)]}


def _payload(u: Utterance, task: str, clip_percentile: float | None, normalizer: str | None,
             attrs: dict) -> tuple[dict, dict]:
    """(index row, view data) of one utterance."""
    from ..analysis.metrics import corpus_score, size_curve

    exp = u.explanation
    if exp.contrastive:
        return _contrastive_payload(u, normalizer, attrs)
    K, T, C = exp.spectrogram_saliency.shape
    norm = exp.normalized()
    view = {
        "id": exp.id, "K": K, "T": T, "C": C, "shift": FRAME_SHIFT_S, "tokens": exp.tokens,
        "words": token_words(exp.tokens), "text": exp.text, "given": exp.meta.get("targets") == "given",
        "reference": u.reference, **_maps(exp, norm),
        "prefixRaw": _round(np.tril(exp.prefix_saliency), 6), "prefixNorm": _round(norm.prefix_saliency),
        "limits": _limits(exp, norm, clip_percentile),
        "timings": [list(s) for s in u.timings] if u.timings else None,
        "timedWords": timed_words(exp.tokens, u.timings), **_audio(u, exp, attrs),
    }
    row = {"id": exp.id, "duration": round(T * FRAME_SHIFT_S, 2), "tokens": K, "hypothesis": exp.text,
           "reference": u.reference, "size AUC": round(size_curve([norm]).auc, 2), "given": view["given"]}
    if u.reference:
        name = "BLEU" if task == "st" else "WER"
        row[name] = round(corpus_score(name.lower(), [u.reference], [exp.text]), 2)
        if task != "st":
            row[SPOKEN_WER] = round(corpus_score("wer", [spoken_form(u.reference)], [spoken_form(exp.text)]), 2)
    row.update({k: round(float(v), 2) for k, v in u.scores.items()})
    return row, view


def _contrastive_payload(u: Utterance, normalizer: str | None, attrs: dict) -> tuple[dict, dict]:
    """(index row, view data) of a contrastive explanation: its one map (raw and normalised, both
    shown on a scale centred on 0), target and foil, and P_o / Q_o. The per-token metrics (WER of
    the hypothesis, size AUC, deletion) do not apply."""
    from ..analysis.plotting import contrastive_normalizer

    exp, info = u.explanation, u.explanation.contrastive
    name = contrastive_normalizer(exp, normalizer)
    norm = exp.normalized(name)
    T, C = exp.spectrogram_saliency.shape[1:]
    view = {
        "id": exp.id, "K": 1, "T": T, "C": C, "shift": FRAME_SHIFT_S, "tokens": info["target"],
        "words": token_words(info["target"]), "text": exp.text, "reference": u.reference,
        **_maps(exp, norm), "prefixRaw": _significant(exp.prefix_saliency), "prefixNorm": _round(norm.prefix_saliency),
        "timings": [list(s) for s in u.timings] if u.timings else None,
        "timedWords": timed_words(info["target"], u.timings), **_audio(u, exp, attrs),
        "contrastive": {**{k: info[k] for k in ("word", "foil_word", "start", "end", "scorer", "word_probability")},
                        "foil": pieces_text(info["foil"][:-1]), "normalizer": name,
                        "p": float(f"{info['p_orig']:.4g}"), "q": float(f"{info['q_orig']:.4g}")},
    }
    row = {"id": exp.id, "duration": round(T * FRAME_SHIFT_S, 2), "hypothesis": view["text"],
           "reference": u.reference, "word": info["word"], "foil": info["foil_word"], "P_o": view["contrastive"]["p"],
           "Q_o": view["contrastive"]["q"]}
    return row, view


def _audio(u: Utterance, exp: Explanation, attrs: dict) -> dict:
    """The view's spectrogram (computed by the model ``attrs`` record) and audio (None without audio)."""
    from ..provenance import explained_features

    view = {"features": None, "audio": None}
    if u.audio is not None:
        wave = read_audio(u.audio) if isinstance(u.audio, (str, os.PathLike)) else np.asarray(u.audio, np.float32)
        feats = explained_features(exp, wave, attrs, u.audio if isinstance(u.audio, (str, os.PathLike)) else "the audio")
        lo, hi = np.percentile(feats, [1, 99.5])
        view["features"] = _pack(_quantise(feats, lo, hi))
        view["audio"] = {"rate": SAMPLE_RATE, "n": int(wave.size), "data": _pack(_mu_law(wave))}
    return view


def _colormap(name: str) -> list[int]:
    """256 RGB entries of a matplotlib colour map, flattened."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(int).ravel().tolist()


def _script_json(payload, element_id: str) -> str:
    # "<" only occurs inside JSON strings; escaping it keeps "</script>" and "<!--" from ending the element
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


@dataclass(frozen=True)
class Page:
    """One explanation's page (``page``): ``html`` is the self-contained document; a notebook shows it
    in a sandboxed ``<iframe srcdoc>``, so its script and styles stay out of the notebook's."""

    html: str

    def _repr_html_(self) -> str:
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" sandbox="allow-scripts" '
                f'style="width: 100%; height: 820px; border: 0"></iframe>')


def page(explanation: Explanation, audio=None, timings: Timing | None = None, reference: str = "",
         task: str = "asr") -> Page:
    """The interactive page of one explanation (in a notebook, the value of a cell displays it).

    audio: the explained 16 kHz WAV path or (N,) waveform, embedded for playback and the spectrogram;
    timings: [(word, start s, end s)] drawn under the map."""
    return Page(build_report([Utterance(explanation, audio, timings, reference)], title=f"SPES: {explanation.id}",
                             task=task))


def build_report(items: list[Utterance], title: str = "SPES explanations", task: str = "asr",
                 source: str = "", clip_percentile: float | None = CLIP_PERCENTILE, normalizer: str | None = None,
                 attrs: dict | None = None) -> str:
    """The page as one HTML string: a sortable index of the utterances and, per utterance, the
    interactive view (token strip, maps over the spectrogram, prefix bars, audio).

    clip_percentile: the colour range of every per-token map, as in the figures
    (``plotting.color_limits``); None: min-max. normalizer: for contrastive explanations, the
    normalised map's normaliser (default: the recorded one, else
    ``analysis.plotting.CONTRASTIVE_NORMALIZER``); their maps use a diverging scale centred on 0.
    attrs: the result's file attributes; the model they record computes the spectrogram shown
    (``provenance.display_features``)."""
    from ..analysis.plotting import DIVERGING

    if not items:
        raise SpesError("no explanations to report")
    if clip_percentile is not None and clip_percentile >= 100:
        clip_percentile = None
    rows, views = zip(*(_payload(u, task, clip_percentile, normalizer, attrs or {}) for u in items))
    if all(r.get(SPOKEN_WER) == r.get("WER") for r in rows):  # a second column only where formatting counts
        for r in rows:
            r.pop(SPOKEN_WER, None)
    overlay = {"rgb": [round(255 * c) for c in OVERLAY_RGB], "alpha": OVERLAY_ALPHA, "gamma": OVERLAY_GAMMA,
               "pale": OVERLAY_PALE}
    meta = {"title": title, "source": source, "task": task, "colormap": _colormap("inferno"), "overlay": overlay,
            "clip": clip_percentile, "rows": list(rows)}
    if any(u.explanation.contrastive for u in items):
        meta["diverging"] = _colormap(DIVERGING)
    files = resources.files(__package__)
    page = files.joinpath("template.html").read_text("utf-8")
    data = "\n".join([_script_json(meta, "spes-meta")] + [_script_json(v, f"spes-u{i}") for i, v in enumerate(views)])
    for key, value in (("TITLE", html.escape(title)), ("CSS", files.joinpath("report.css").read_text("utf-8")),
                       ("JS", files.joinpath("report.js").read_text("utf-8")), ("DATA", data)):
        page = page.replace("{{%s}}" % key, value)
    return page


def write_report(path: str | os.PathLike, items: list[Utterance], **kwargs) -> None:
    """Writes ``build_report(items, **kwargs)`` to ``path`` atomically."""
    write_text(path, build_report(items, **kwargs))
