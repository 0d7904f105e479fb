"""``explain_encoder``: encoder-output saliency, the decoder-only view of SPES (docs/cross_attention.md).

Host side of ``core.encoder_sweep``: features and hypotheses as in ``explain``, then the driver
(``spes_jax.driver``) runs one compiled sweep per utterance that perturbs the encoder output frames
instead of the spectrogram (no encoder pass per mask). A second call with the same settings and
buckets compiles nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import jax
import numpy as np

from .config import SCORERS, SPESConfig
from .core import encoder_sweep
from .driver import sweeps
from .errors import SpesError
from .explainer import model_inputs
from .speech_model import SpeechToTextModel


@dataclass(frozen=True, repr=False)
class EncoderSaliency:
    """Encoder-output saliency of one utterance's hypothesis.

    saliency: (K, T') float32 Eq. 3 map, row k for explained token k, column j for encoder frame j
    (T' = the encoder's valid length: after subsampling, and after CTC compression if any).
    tokens: the K pieces (ending with </s>); token_ids: their ids. n_masks: the masks evaluated (fewer
    than asked when ``until_r`` stopped the sweep early); estimated_r: with ``until_r``, each token's
    split-half estimate of its row's correlation with the converged map.
    """

    id: str
    tokens: list[str]
    token_ids: tuple[int, ...]
    saliency: np.ndarray
    text: str
    n_masks: int
    p: float
    scorer: str
    seed: int
    until_r: float | None = None
    estimated_r: tuple[float, ...] | None = None

    def __repr__(self) -> str:
        return (f"EncoderSaliency(id={self.id!r}, tokens={len(self.tokens)}, frames={self.saliency.shape[1]}, "
                f"n_masks={self.n_masks}, p={self.p})")


def _check_settings(n_masks: int, p: float, scorer: str, seed: int, until_r: float | None) -> None:
    if not (isinstance(n_masks, (int, np.integer)) and n_masks >= 1):
        raise SpesError(f"n_masks must be a positive integer, got {n_masks!r}")
    if not 0.0 < p < 1.0:
        raise SpesError(f"p (the occlusion probability of an encoder frame) must be in (0, 1), got {p}")
    if scorer not in SCORERS:
        raise SpesError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    if not 0 <= seed < 2 ** 32:
        raise SpesError("seed must fit in 32 bits")
    if until_r is not None and not 0.0 < until_r < 1.0:
        raise SpesError(f"until_r must be in (0, 1), got {until_r}")


def explain_encoder(model: SpeechToTextModel, audio, n_masks: int = 2000, p: float = 0.5, *, scorer: str = "kl",
                    seed: int = 0, batch_size: int | None = None, precision: str = "float32", until_r: float | None = None,
                    ids: Sequence[str] | None = None, targets: Sequence[Sequence[int]] | None = None,
                    devices: Sequence[jax.Device] | None = None, progress: bool = False):
    """Encoder-output saliency of the model's own hypotheses.

    audio: as for ``explain`` (a path, a (N,) 16 kHz waveform, a (T, C) fbank, or a list). Each of
    ``n_masks`` masks occludes every valid encoder output frame independently with probability ``p``
    (the frame's vector set to zeros); the teacher-forced hypothesis is scored with ``scorer`` (KL
    divergence by default, as SPES) and Eq. 3 gives each (token, encoder frame) the mean score of
    the masks that occluded the frame. Masks depend only on (seed, utterance id, mask index). With
    ``until_r`` the sweep stops once the split-half estimate of the map's correlation with its limit
    (mean over the tokens) reaches it; ``n_masks`` is then the maximum.
    Hypotheses are the beam search output unless ``targets`` gives token ids (ending with </s>).
    ``batch_size``: masks per compiled step (default: the model's for the platform, as ``explain``'s).
    Returns an ``EncoderSaliency`` (or a list for a list input).
    """
    _check_settings(n_masks, p, scorer, seed, until_r)
    batch = model.sweep_config(SPESConfig()).batch_size if batch_size is None else batch_size
    plan = encoder_sweep.make_plan(model.module, scorer=scorer, batch=batch, precision=precision,
                                   devices=devices)
    # The input checks and warnings of ``explain``; the mask count shown in long-input warnings is ours.
    single, ids, features, targets = model_inputs(model, audio, SPESConfig(n_masks=0, n_token_masks=n_masks), ids,
                                                  targets)

    def prepare(job):
        utt_id, feats, tokens = job
        return encoder_sweep.prepare(feats, tokens, utt_id, seed=seed, p=p, n_masks=n_masks, plan=plan,
                                     layout=model.layout(feats)), None

    results = []
    for swept in sweeps(model, plan, list(zip(ids, features, targets)), prepare, (n_masks,), until_r=until_r,
                        progress="encoder output" if progress else None):
        utt_id, _, tokens = swept.item
        result, K = swept.result, len(tokens)
        sal, frames = jax.device_get((result.encoder, result.frames))
        estimated = None if result.r is None else tuple(round(float(x), 4) for x in np.asarray(result.r["encoder"])[:K])
        results.append(EncoderSaliency(
            id=utt_id, tokens=model.dictionary.pieces(tokens), token_ids=tuple(tokens),
            saliency=np.asarray(sal[:K, : int(frames)], np.float32), text=model.tokenizer.decode(tokens),
            n_masks=result.n_masks["encoder"], p=float(p), scorer=scorer, seed=seed, until_r=until_r,
            estimated_r=estimated))
    return results[0] if single else results
