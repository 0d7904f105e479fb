"""``explain_contrastive``: why the model produced a word rather than a foil, for one utterance.

Host-side work (features, tokenisation and span checks, SLIC one utterance ahead) around the
compiled contrastive sweep of ``core.contrastive_sweep``. The result is an ``Explanation`` with one
row, the word: spectrogram map (1, T, C), prefix map (1, L) over the target's decoder inputs, zero
after the word's start, and what was explained in ``meta["contrastive"]`` (see
``Explanation.contrastive``); HDF5 files keep the reference's layout for it.
"""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import jax
import numpy as np

from .config import SPESConfig
from .core import contrastive_sweep
from .core.contrastive import begins_word, contrastive_spans
from .core.segmentation import Segmentation, segment
from .errors import SpesError, SpesWarning
from .explainer import _check_length, _utt_id
from .explanation import Explanation
from .inputs import input_features
from .pipeline import SpeechToTextModel
from .text import EOS, UNK, WORD_START


def token_ids(model: SpeechToTextModel, text_or_ids, name: str) -> list[int]:
    """A text (encoded with the model's tokenizer) or ids ending with </s> -> ids ending with </s>."""
    if isinstance(text_or_ids, str):
        if not text_or_ids.strip():
            raise SpesError(f"{name}: empty text")
        ids = model.tokenizer.encode(text_or_ids.strip())
        unknown = [p for p, i in zip(model.tokenizer.split(text_or_ids.strip()), ids) if i == UNK]
        if unknown:
            raise SpesError(f"{name}: {text_or_ids!r} has pieces the model's dictionary does not know: "
                            f"{' '.join(unknown)}")
        return ids
    ids = [int(i) for i in text_or_ids]
    if not ids or ids[-1] != EOS:
        raise SpesError(f"{name}: token ids must end with </s> ({EOS})")
    if not all(0 <= i < len(model.dictionary) for i in ids):
        raise SpesError(f"{name}: token ids outside the model's vocabulary of {len(model.dictionary)}")
    return ids


def word_pair(model: SpeechToTextModel, target, foil, start: int | None = None, end: int | None = None,
              strict: bool = True) -> tuple[list[int], list[int], tuple[int, int, int]]:
    """Target and foil ids and the word's (start, end, foil_end): ``contrastive_spans`` on their
    pieces (start/end: 0-based inclusive piece indices of the word in the target, or None to take
    where the two differ)."""
    if (start is None) != (end is None):
        raise SpesError("give both the word's start and end piece indices, or neither")
    target_ids, foil_ids = token_ids(model, target, "target"), token_ids(model, foil, "foil")
    pieces = model.dictionary.pieces
    return target_ids, foil_ids, contrastive_spans(pieces(target_ids), pieces(foil_ids), start, end, strict)


def _word(pieces: Sequence[str]) -> str:
    return "".join(pieces).replace(WORD_START, " ").strip()


def sweep_utterance(model: SpeechToTextModel, features: np.ndarray, target_ids: list[int], foil_ids: list[int],
                    spans: tuple[int, int, int], segmentation: Segmentation, utt_id: str, config: SPESConfig,
                    plan: contrastive_sweep.ContrastivePlan, params, normalizer: str | None = None,
                    replay: dict | None = None, progress=None) -> Explanation:
    """One checked utterance through the compiled contrastive sweep -> its ``Explanation``."""
    bow = begins_word(model.dictionary.symbols)
    inputs = contrastive_sweep.prepare(features, target_ids, foil_ids, spans, segmentation, utt_id, config, plan,
                                       bow, replay)
    state = contrastive_sweep.init(params, inputs, plan=plan)
    out = jax.device_get(contrastive_sweep.run(state, plan, config, progress))
    if out["nonfinite"]:
        warnings.warn(f"{utt_id}: {int(out['nonfinite'])} mask(s) gave a non-finite {plan.scorer} score (a word "
                      f"probability of 0?) and were left out of the maps", SpesWarning, stacklevel=2)
    s, e, ef = spans
    K, T = len(target_ids), features.shape[0]
    target, foil = model.dictionary.pieces(target_ids), model.dictionary.pieces(foil_ids)
    info = {"target": target, "foil": foil, "start": s, "end": e, "foil_end": ef, "word": _word(target[s:e + 1]),
            "foil_word": _word(foil[s:ef + 1]), "scorer": plan.scorer, "word_probability": plan.word_probability,
            "normalizer": normalizer, "p_orig": float(out["p_orig"]), "q_orig": float(out["q_orig"]),
            "nonfinite_scores": int(out["nonfinite"])}
    return Explanation(
        id=utt_id, tokens=[info["word"]], spectrogram_saliency=np.asarray(out["spectrogram"][:, :T], np.float32),
        prefix_saliency=np.asarray(out["prefix"][:, :K], np.float32), prefix_tokens=["</s>"] + target[:-1],
        text=model.tokenizer.decode(target_ids), n_masks=config.masks_per_level * config.n_levels,
        n_token_masks=config.n_token_masks,
        meta={"requested_segments": list(segmentation.requested),
              "n_segments": [int(n) for n in segmentation.n_segments], "contrastive": info})


def check_normalizer(normalizer: str | None) -> None:
    from .core.contrastive import NORMALIZERS

    if normalizer is not None and normalizer not in NORMALIZERS:
        raise SpesError(f"unknown contrastive normaliser {normalizer!r}; choose from {', '.join(NORMALIZERS)}")


def explain_contrastive(model: SpeechToTextModel, audio, target, foil, config: SPESConfig | None = None, *,
                        start: int | None = None, end: int | None = None,
                        scorer: str = "contrastive_parity_ratio", word_probability: str = "word_boundary",
                        normalizer: str | None = None, strict: bool = True, utt_id: str | None = None,
                        devices: Sequence[jax.Device] | None = None) -> Explanation:
    """Contrastive SPES explanation of one word: which parts of the input make the model produce
    the target word rather than the foil.

    audio: an audio path, a (N,) 16 kHz waveform or a (T, C) fbank. target: the teacher-forced
    hypothesis (a text, ids ending with </s>, or None for the model's beam-search output); foil:
    the same sequence with the word replaced (text or ids). start, end: the word's 0-based
    inclusive piece indices in the target (default: where target and foil differ, widened to whole
    words). scorer: one of ``core.contrastive.SCORERS``; word_probability: chain_rule, length_norm,
    first_only or word_boundary; normalizer (recorded, applied by ``Explanation.normalized()``):
    single_mean_std, paired_min_max or single_min_max. strict=False accepts a span that does not
    match word boundaries. Returns an ``Explanation`` with one row (maps (1, T, C) and (1, L)).
    """
    cfg = config or SPESConfig.asr()
    check_normalizer(normalizer)
    utt_id = utt_id or _utt_id(audio, 0)
    features = input_features(model, audio, cfg, os.fspath(audio) if isinstance(audio, (str, os.PathLike)) else utt_id)
    _check_length(features, utt_id)
    if target is None:
        target = list(model.decode([features])[0][0].tokens)
    target_ids, foil_ids, spans = word_pair(model, target, foil, start, end, strict)
    plan = contrastive_sweep.make_plan(model.module, cfg, devices, scorer=scorer, word_probability=word_probability)
    params = jax.device_put(model.params, plan.sweep.replicated)
    return sweep_utterance(model, features, target_ids, foil_ids, spans, segment(features, cfg), utt_id, cfg, plan,
                           params, normalizer)
