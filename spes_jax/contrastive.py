"""``explain_contrastive``: why the model produced a word rather than a foil, for one utterance.

Host-side work (features, tokenisation and span checks) around the compiled contrastive sweep of
``core.contrastive_sweep``, run by ``spes_jax.driver``. The result is an ``Explanation`` with one
row, the word: spectrogram map (1, T, C), prefix map (1, L) over the target's decoder inputs, zero
after the word's start, and what was explained in ``meta["contrastive"]`` (see
``Explanation.contrastive``); HDF5 files keep the reference's layout for it.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Sequence

import jax
import numpy as np

from .config import SPESConfig
from .core import contrastive_sweep
from .core.contrastive import NORMALIZERS, begins_word, contrastive_spans
from .core.engine import SweepPlan, SweepResult
from .core.segmentation import Segmentation, segment
from .driver import sweep_one, sweeps
from .errors import SpesError, SpesWarning
from .explainer import _utt_id
from .explanation import Explanation
from .inputs import input_features
from .manifest import read_rows
from .speech_model import SpeechToTextModel
from .text import pieces_text


def word_pair(model: SpeechToTextModel, target, foil, start: int | None = None, end: int | None = None,
              strict: bool = True) -> tuple[list[int], list[int], tuple[int, int, int]]:
    """Target and foil ids and the word's (start, end, foil_end): ``contrastive_spans`` on their
    pieces (start/end: 0-based inclusive piece indices of the word in the target, or None to take
    where the two differ)."""
    if (start is None) != (end is None):
        raise SpesError("give both the word's start and end piece indices, or neither")
    target_ids, foil_ids = model.target_ids(target, "target"), model.target_ids(foil, "foil")
    pieces = model.dictionary.pieces
    return target_ids, foil_ids, contrastive_spans(pieces(target_ids), pieces(foil_ids), start, end, strict)


def sweep_utterance(model: SpeechToTextModel, features: np.ndarray, target_ids: list[int], foil_ids: list[int],
                    spans: tuple[int, int, int], segmentation: Segmentation, utt_id: str, config: SPESConfig,
                    plan: SweepPlan, params, normalizer: str | None = None, replay: dict | None = None,
                    progress=None) -> Explanation:
    """One checked utterance through the compiled contrastive sweep -> its ``Explanation``."""
    item = ContrastiveItem(utt_id, features, target_ids, foil_ids, spans)
    result = sweep_one(plan, params, _inputs(model, item, segmentation, config, plan, replay),
                       (config.n_masks, config.n_token_masks), until_r=config.until_r, progress=progress)
    return explanation(model, item, segmentation, config, plan, normalizer, result)


def _inputs(model: SpeechToTextModel, item: ContrastiveItem, segmentation: Segmentation, config: SPESConfig,
            plan: SweepPlan, replay: dict | None = None) -> contrastive_sweep.ContrastiveInputs:
    return contrastive_sweep.prepare(item.features, item.target, item.foil, item.spans, segmentation, item.id, config,
                                     plan, begins_word(model.dictionary.symbols), replay, model.layout(item.features))


def explanation(model: SpeechToTextModel, item: ContrastiveItem, segmentation: Segmentation, config: SPESConfig,
                plan: SweepPlan, normalizer: str | None, result: SweepResult) -> Explanation:
    """The ``Explanation`` of one swept word (maps cut to the target's tokens and T frames)."""
    out = jax.device_get(result.outputs)
    probe = plan.probe
    if out["nonfinite"]:
        warnings.warn(f"{item.id}: {int(out['nonfinite'])} mask(s) gave a non-finite {probe.scorer} score (a word "
                      f"probability of 0?) and were left out of the maps", SpesWarning, stacklevel=2)
    s, e, ef = item.spans
    K, T = len(item.target), item.features.shape[0]
    target, foil = model.dictionary.pieces(item.target), model.dictionary.pieces(item.foil)
    info = {"target": target, "foil": foil, "start": s, "end": e, "foil_end": ef, "word": pieces_text(target[s:e + 1]),
            "foil_word": pieces_text(foil[s:ef + 1]), "scorer": probe.scorer,
            "word_probability": probe.word_probability, "normalizer": normalizer, "p_orig": float(out["p_orig"]),
            "q_orig": float(out["q_orig"]), "nonfinite_scores": int(out["nonfinite"])}
    meta = {"requested_segments": list(segmentation.requested),
            "n_segments": [int(n) for n in segmentation.n_segments], "contrastive": info}
    if result.r is not None:
        meta["until_r"] = config.until_r
        meta["estimated_r"] = {part: round(float(np.asarray(r).reshape(-1)[0]), 4) for part, r in result.r.items()}
    return Explanation(
        id=item.id, tokens=[info["word"]], spectrogram_saliency=np.asarray(out["spectrogram"][:, :T], np.float32),
        prefix_saliency=np.asarray(out["prefix"][:, :K], np.float32),
        prefix_tokens=model.dictionary.pieces(model.prompt[-1:]) + target[:-1],
        text=model.tokenizer.decode(item.target), n_masks=result.n_masks["spectrogram"],
        n_token_masks=result.n_masks["prefix"], meta=meta)


def check_normalizer(normalizer: str | None) -> None:
    if normalizer is not None and normalizer not in NORMALIZERS:
        raise SpesError(f"unknown contrastive normaliser {normalizer!r}; choose from {', '.join(NORMALIZERS)}")


@dataclasses.dataclass(frozen=True)
class ContrastiveItem:
    """One checked utterance to explain: its id, (T, C) features, ids and word span."""

    id: str
    features: np.ndarray
    target: list[int]
    foil: list[int]
    spans: tuple[int, int, int]


def _item(model: SpeechToTextModel, audio, target, foil, cfg: SPESConfig, utt_id: str, start, end,
          strict: bool) -> ContrastiveItem:
    features = input_features(model, audio, cfg, os.fspath(audio) if isinstance(audio, (str, os.PathLike)) else utt_id)
    if target is None:
        target = list(model.decode([features])[0][0].tokens)
    try:
        return ContrastiveItem(utt_id, features, *word_pair(model, target, foil, start, end, strict))
    except SpesError as e:
        raise SpesError(f"{utt_id}: {e}") from None


def _explain_items(model: SpeechToTextModel, items: Sequence[ContrastiveItem], cfg: SPESConfig, scorer: str,
                   word_probability: str, normalizer: str | None, devices, progress: bool) -> list[Explanation]:
    plan = contrastive_sweep.make_plan(model.module, cfg, devices, scorer=scorer, word_probability=word_probability)

    def prepare(item: ContrastiveItem):
        seg = segment(item.features, cfg)
        return _inputs(model, item, seg, cfg, plan), seg

    return [explanation(model, swept.item, swept.host, cfg, plan, normalizer, swept.result)
            for swept in sweeps(model, plan, items, prepare, (cfg.n_masks, cfg.n_token_masks), until_r=cfg.until_r,
                                progress="contrastive SPES" if progress else None)]


def explain_contrastive(model: SpeechToTextModel, audio, target, foil, config: SPESConfig | None = None, *,
                        start: int | None = None, end: int | None = None,
                        scorer: str = "contrastive_parity_ratio", word_probability: str = "word_boundary",
                        normalizer: str | None = None, strict: bool = True, utt_id: str | None = None,
                        devices: Sequence[jax.Device] | None = None, progress: bool = False) -> Explanation:
    """Contrastive SPES explanation of one word: which parts of the input make the model produce
    the target word rather than the foil.

    audio: an audio path, a (N,) 16 kHz waveform or a (T, C) fbank. target: the teacher-forced
    hypothesis (a text, ids ending with </s>, or None for the model's beam-search output); foil:
    the same sequence with the word replaced (text or ids). start, end: the word's 0-based
    inclusive piece indices in the target (default: where target and foil differ, widened to whole
    words). scorer: one of ``core.contrastive.SCORERS``; word_probability: chain_rule, length_norm,
    first_only or word_boundary; normalizer (recorded, applied by ``Explanation.normalized()``):
    single_mean_std, paired_min_max or single_min_max. strict=False accepts a span that does not
    match word boundaries; progress shows a progress bar. Returns an ``Explanation`` with one row
    (maps (1, T, C) and (1, L)).
    """
    cfg = model.sweep_config(config or SPESConfig.asr())
    check_normalizer(normalizer)
    item = _item(model, audio, target, foil, cfg, utt_id or _utt_id(audio, 0), start, end, strict)
    return _explain_items(model, [item], cfg, scorer, word_probability, normalizer, devices, progress)[0]


@dataclasses.dataclass(frozen=True)
class ManifestRow:
    id: str
    audio: str
    target: str
    foil: str
    start: int | None
    end: int | None


TARGET_COLUMNS = ("target", "tgt_text")
FOIL_COLUMNS = ("foil", "swapped_tgt_text")
SPAN_COLUMNS = ("span", "gender_terms_indices")


def read_contrastive_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """A TSV with a header: ``id``, ``audio`` (relative to the manifest's folder; ``.npy`` files are
    raw (T, C) filterbanks), the generated text (``target`` or the reference's ``tgt_text``), the
    foil (``foil`` or ``swapped_tgt_text``) and optionally the word's pieces (``span`` or
    ``gender_terms_indices``: ``start-end``, 0-based inclusive; empty: where the two differ).
    Texts may be plain or SentencePiece pieces separated by spaces."""
    path = os.fspath(path)
    rows = read_rows(path, "a TSV with a header line: id, audio, target, foil[, span]")
    columns = list(rows[0].keys())
    pick = lambda names: next((c for c in names if c in columns), None)
    target_col, foil_col, span_col = pick(TARGET_COLUMNS), pick(FOIL_COLUMNS), pick(SPAN_COLUMNS)
    if "id" not in columns or "audio" not in columns or target_col is None or foil_col is None:
        raise SpesError(f"{path}: needs the columns id, audio, one of {TARGET_COLUMNS} and one of {FOIL_COLUMNS} "
                        f"(optional: one of {SPAN_COLUMNS}); has {columns}")
    base = os.path.dirname(os.path.abspath(path))
    out = []
    for n, row in enumerate(rows, 2):
        if any(row[c] is None for c in ("id", "audio", target_col, foil_col)):
            raise SpesError(f"{path}:{n}: missing fields")
        audio = os.path.join(base, row["audio"])
        if not os.path.isfile(audio):
            raise SpesError(f"{path}:{n}: audio file not found: {audio}")
        start = end = None
        span = (row.get(span_col) or "").strip() if span_col else ""
        if span:
            try:
                start, end = (int(x) for x in span.split("-"))
            except ValueError:
                raise SpesError(f"{path}:{n}: span {span!r} is not 'start-end' (0-based piece indices)") from None
        out.append(ManifestRow(row["id"], audio, row[target_col], row[foil_col], start, end))
    if len({r.id for r in out}) != len(out):
        raise SpesError(f"{path}: utterance ids are not unique")
    return out


def _audio(path: str):
    """An audio path as it is, or the (T, C) raw filterbank of a ``.npy`` file."""
    if not path.endswith(".npy"):
        return path
    try:
        return np.load(path)
    except (OSError, ValueError) as e:
        raise SpesError(f"{path}: not a readable .npy filterbank ({e})") from None


def explain_contrastive_manifest(model: SpeechToTextModel, rows: Sequence[ManifestRow],
                                 config: SPESConfig | None = None, *, scorer: str = "contrastive_parity_ratio",
                                 word_probability: str = "word_boundary", normalizer: str | None = None,
                                 strict: bool = True, devices: Sequence[jax.Device] | None = None,
                                 progress: bool = False) -> list[Explanation]:
    """``explain_contrastive`` for every row of a manifest (``read_contrastive_manifest``), one
    compiled plan for all; every row is read and checked before the first sweep."""
    cfg = model.sweep_config(config or SPESConfig.asr())
    check_normalizer(normalizer)
    items = [_item(model, _audio(r.audio), r.target, r.foil, cfg, r.id, r.start, r.end, strict) for r in rows]
    return _explain_items(model, items, cfg, scorer, word_probability, normalizer, devices, progress)
