"""``explain``: audio in, ``Explanation`` out. The SPES kind's host side (``core.sweep``).

Features and hypotheses are computed first; the driver (``spes_jax.driver``) then runs SLIC one
utterance ahead in a background thread and sweeps each utterance with the engine's module-level
compiled functions: a second call with the same configuration and buckets compiles nothing.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np

from .config import SPESConfig
from .core import sweep
from .core.engine import SweepResult
from .core.segmentation import Segmentation, segment
from .driver import params_on_devices, sweeps
from .errors import SpesError, count
from .explanation import Explanation
from .inputs import input_features, warnings_if_all_succeed
from .speech_model import SpeechToTextModel

def _utt_id(audio, i: int) -> str:
    if isinstance(audio, (str, os.PathLike)):
        return os.path.splitext(os.path.basename(os.fspath(audio)))[0]
    return str(i)


def model_inputs(model: SpeechToTextModel, audio, cfg: SPESConfig, ids: Sequence[str] | None,
                 targets: Sequence[Sequence[int] | str] | None = None
                 ) -> tuple[bool, list[str], list[np.ndarray], list[list[int]]]:
    """What is explained, checked: whether ``audio`` was a single input; the utterance ids (default:
    the file names); the (T, C) features of each input, with the input warnings; and the token ids
    explained (``targets``, checked by ``model.target_ids``, else the model's beam search output)."""
    single = not isinstance(audio, (list, tuple))
    audios = [audio] if single else list(audio)
    if not audios:
        raise SpesError("nothing to explain")
    ids = list(ids) if ids is not None else [_utt_id(a, i) for i, a in enumerate(audios)]
    if len(ids) != len(audios):
        raise SpesError(f"{count(len(ids), 'id')} for {count(len(audios), 'input')}: give one unique utterance id "
                        "per input")
    if len(set(ids)) != len(ids):
        raise SpesError("utterance ids must be unique (two inputs share a file name?)")
    if single and (isinstance(targets, str) or (targets and isinstance(targets[0], (int, np.integer)))):
        targets = [targets]  # one input's one target: a text or its token ids
    if targets is not None and len(targets) != len(audios):
        raise SpesError(f"{count(len(targets), 'target')} for {count(len(audios), 'input')}")
    with warnings_if_all_succeed():
        features = [input_features(model, a, cfg, os.fspath(a) if isinstance(a, (str, os.PathLike)) else u)
                    for a, u in zip(audios, ids)]
        if targets is None:
            targets = [list(h[0].tokens) for h in model.decode(features)]
        else:
            targets = [model.target_ids(t, f"{u}: target") for t, u in zip(targets, ids)]
    return single, ids, features, targets


# The parameters on a plan's devices, under the name tests and benchmarks import.
compute_params = params_on_devices


def explanation(model: SpeechToTextModel, utt_id: str, tokens: Sequence[int], n_frames: int,
                seg: Segmentation, cfg: SPESConfig, result: SweepResult, given: bool = False) -> Explanation:
    """The ``Explanation`` of one swept utterance (maps cut to its K tokens and T frames). given: the
    tokens are a given target, not the model's hypothesis (recorded as ``meta["targets"] = "given"``)."""
    spec, prefix = jax.device_get((result.spectrogram, result.prefix))
    K = len(tokens)
    pieces = model.dictionary.pieces(tokens)
    meta = {"token_ids": np.asarray(tokens, np.int32), "requested_segments": list(seg.requested),
            "n_segments": [int(n) for n in seg.n_segments],
            "sampler": cfg.sampler, **({"targets": "given"} if given else {})}
    if result.r is not None:
        meta["until_r"] = cfg.until_r
        meta["estimated_r"] = {"spectrogram": [round(float(x), 4) for x in np.asarray(result.r["spectrogram"])[:K]],
                               "prefix": round(float(result.r["prefix"]), 4)}
    return Explanation(
        id=utt_id, tokens=pieces, spectrogram_saliency=np.asarray(spec[:K, :n_frames], np.float32),
        prefix_saliency=np.asarray(prefix[:K, :K], np.float32),
        prefix_tokens=model.dictionary.pieces(model.prompt[-1:]) + pieces[:-1],
        text=model.tokenizer.decode(tokens), n_masks=result.n_masks["spectrogram"],
        n_token_masks=result.n_masks["prefix"], meta=meta)


def explain(model: SpeechToTextModel, audio, config: SPESConfig | None = None, *, ids: Sequence[str] | None = None,
            targets: Sequence[Sequence[int]] | None = None, devices: Sequence[jax.Device] | None = None,
            progress: bool | str = False):
    """SPES explanations of the model's own hypotheses.

    audio: an audio path, a (N,) 16 kHz waveform, a raw (T, C) fbank, or a list of these (silent and
    overly long inputs get a ``SpesWarning``). The hypothesis of each
    input is the model's beam search output (beam 5, no-repeat-ngram 5) unless ``targets`` gives
    token ids (ending with the end token) or texts, one per input (for a single input, its one
    target). The masks are split over ``devices`` (default: all local devices).
    ``progress``: a progress bar on stderr, named by the string if one is given (default "SPES").
    Returns an ``Explanation`` (or a list for a list input).
    """
    cfg = model.sweep_config(config or SPESConfig.asr())
    given = targets is not None
    single, ids, features, targets = model_inputs(model, audio, cfg, ids, targets)
    plan = sweep.make_plan(model.module, cfg, devices)

    def prepare(job):
        utt_id, feats, tokens = job
        seg = segment(feats, cfg)
        return sweep.prepare(feats, tokens, seg, utt_id, cfg, plan, layout=model.layout(feats)), seg

    results = []
    for swept in sweeps(model, plan, list(zip(ids, features, targets)), prepare, (cfg.n_masks, cfg.n_token_masks),
                        until_r=cfg.until_r,
                        progress=(progress if isinstance(progress, str) else "SPES") if progress else None):
        utt_id, feats, tokens = swept.item
        results.append(explanation(model, utt_id, tokens, feats.shape[0], swept.host, cfg, swept.result, given))
    return results[0] if single else results
