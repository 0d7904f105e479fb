"""``explain_encoder``: encoder-output saliency, the decoder-only view of SPES (docs/cross_attention.md).

Host side of ``core.encoder_sweep``: features and hypotheses as in ``explain``, then the driver
(``spes_jax.driver``) runs one compiled sweep per utterance that perturbs the encoder output frames
instead of the spectrogram (no encoder pass per mask). A second call with the same settings and
buckets compiles nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Sequence

import jax
import numpy as np

from ._io import atomic_output
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
    split-half estimate of its row's correlation with the converged map. meta: what a file records
    beyond these (``audio`` and ``audio_sha256`` of an audio file input).
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
    meta: dict = field(default_factory=dict)

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


FILE_KIND = "encoder_saliency"  # the ``kind`` attribute of encoder-saliency files (explanation files have none)


def save_encoder_saliency(path: str | os.PathLike, items: Sequence[EncoderSaliency], attrs: dict | None = None) -> None:
    """Writes encoder-output saliency to an HDF5 file atomically (docs/explanation-files.md,
    "Encoder-output saliency files"): file attributes ``attrs`` (e.g. ``provenance.model_provenance``)
    and ``kind``; one group per utterance with ``saliency`` (K, T') float32, ``tokens``, ``token_ids``
    and the settings it was computed with."""
    import h5py

    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in {**(attrs or {}), "kind": FILE_KIND}.items():
            f.attrs[key] = value
        for e in items:
            g = f.create_group(e.id)
            g.create_dataset("saliency", data=np.asarray(e.saliency, np.float32), compression="gzip")
            g.create_dataset("tokens", data=np.array(e.tokens, dtype=object), dtype=h5py.string_dtype())
            g.create_dataset("token_ids", data=np.asarray(e.token_ids, np.int32))
            g.attrs.update(text=e.text, n_masks=e.n_masks, p=e.p, scorer=e.scorer, seed=e.seed,
                           until_r=json.dumps(e.until_r), estimated_r=json.dumps(e.estimated_r), **e.meta)


def load_encoder_saliency(path: str | os.PathLike) -> tuple[dict[str, EncoderSaliency], dict]:
    """Reads a file of ``save_encoder_saliency`` -> ({utterance id: EncoderSaliency}, file attributes)."""
    import h5py

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SpesError(f"encoder-saliency file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in f.attrs.items()}
            if attrs.get("kind") != FILE_KIND:
                raise SpesError(f"{path}: not an encoder-output saliency file (written by spes-jax explain-encoder)")
            out = {}
            for key, g in f.items():
                a = g.attrs
                estimated = json.loads(a["estimated_r"])
                out[key] = EncoderSaliency(
                    id=key, tokens=[t.decode() if isinstance(t, bytes) else t for t in g["tokens"][()]],
                    token_ids=tuple(int(t) for t in g["token_ids"][()]), saliency=np.asarray(g["saliency"][()]),
                    text=str(a["text"]), n_masks=int(a["n_masks"]), p=float(a["p"]), scorer=str(a["scorer"]),
                    seed=int(a["seed"]), until_r=json.loads(a["until_r"]),
                    estimated_r=None if estimated is None else tuple(estimated),
                    meta={k: a[k] for k in ("audio", "audio_sha256") if k in a})
    except (OSError, KeyError, ValueError) as e:
        raise SpesError(f"{path}: not a readable encoder-output saliency file ({e})") from None
    return out, attrs
