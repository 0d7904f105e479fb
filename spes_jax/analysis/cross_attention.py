"""Cross-attention against saliency ("Cross-Attention is Half Explanation", Papi et al. 2025).

Three pieces: the decoder's cross-attention weights of a teacher-forced hypothesis, SPES input
saliency pooled to the encoder's time resolution, and Pearson correlations per token, per head, per
layer and for the heads/layers average. Encoder frame i of a model whose subsampler has n stride-2
convolutions is taken to cover input frames [2^n i, 2^n (i + 1)) (its stride window; the
convolutions' receptive field is wider and overlaps its neighbours'); the last window may be short.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import jax
import numpy as np

from ..errors import SpesError


def _layer(path) -> int:
    """The decoder layer number of a sown leaf's key path (``.../layers_3/encoder_attn/...``)."""
    names = [str(getattr(k, "key", k)) for k in path]
    return next(int(n.split("_")[-1]) for n in names if n.startswith("layers_"))


@functools.partial(jax.jit, static_argnames=("module",))
def _weights(module, params, features, lengths, prev):
    """Every decoder layer's encoder-attention weights, as the model family's module sows them."""
    (_, enc), state = module.apply({"params": params}, features, lengths, prev, mutable=["intermediates"])
    leaves = [(path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(state["intermediates"]["decoder"])[0]
              if any(str(getattr(k, "key", "")) == "encoder_attn" for k in path)]
    layers = [leaf for _, leaf in sorted(leaves, key=lambda kv: _layer(kv[0]))]
    return jax.numpy.stack(layers)[:, 0], enc.valid[0].sum()


def cross_attention(model, audio, tokens: Sequence[int] | str) -> np.ndarray:
    """Cross-attention weights of the teacher-forced hypothesis ``tokens`` (ids ending with </s>,
    or a text to encode) over the encoder frames of ``audio`` (anything ``model.features`` reads).

    Returns (layers, heads, K, T') float32: row k is the decoder's attention while predicting token
    k; T' is the encoder's valid length (after subsampling, and after CTC compression if any).
    """
    ids = model.target_ids(tokens, "tokens")
    feats = model.features(audio)
    prompt = model.prompt
    batch, lengths = model.batch([feats])
    weights, n = _weights(model.module, model.params, batch, lengths, np.array([list(prompt) + ids[:-1]], np.int32))
    # Encoders that read a fixed padded window (Whisper's 30 s) attend over all of it: keep the
    # utterance's own frames. Elsewhere the encoder's valid length is exact (also under CTC compression).
    if model.layout(feats).frames is not None:
        n = min(int(n), -(-feats.shape[0] // model.encoder_stride))
    return np.asarray(weights[:, :, len(prompt) - 1:, :n], np.float32)


def encoder_stride(model) -> int:
    """Input frames per encoder frame (2 per stride-2 convolution of the subsampler)."""
    return model.encoder_stride


def pool_saliency(spec: np.ndarray, stride: int, time: str = "max", frequency: str = "max") -> np.ndarray:
    """(K, T, C) saliency -> (K, ceil(T / stride)): pooled over each encoder frame's window of
    ``stride`` input frames and over the channels, each with "max" or "mean"."""
    ops = {"max": np.max, "mean": np.mean}
    if time not in ops or frequency not in ops:
        raise SpesError(f"pooling must be 'max' or 'mean', got time={time!r} frequency={frequency!r}")
    T = spec.shape[1]
    x = ops[frequency](spec.astype(np.float64), axis=2)  # (K, T)
    starts = np.arange(0, T, stride)
    if time == "max":
        pooled = np.maximum.reduceat(x, starts, axis=1)
    else:  # the last window may be short: divide by its real size
        pooled = np.add.reduceat(x, starts, axis=1) / np.diff(np.append(starts, T))
    return pooled.astype(np.float32)


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation over the last axis (broadcast over the others); NaN where either side
    is constant."""
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


@dataclass(frozen=True)
class Correlations:
    """Per-token Pearson correlations between cross-attention and a saliency view (K tokens).

    per_head: (layers, heads, K); per_layer: (layers, K) of the heads' mean attention; average:
    (K,) of the mean over heads and layers. Constant rows give NaN (skipped by the means).
    """

    per_head: np.ndarray
    per_layer: np.ndarray
    average: np.ndarray

    def summary(self) -> dict:
        """Means over tokens: per head (layers x heads), per layer, and of the average."""
        m = lambda x: np.nanmean(x, axis=-1)
        return {"per_head": m(self.per_head).tolist(), "per_layer": m(self.per_layer).tolist(),
                "average": float(m(self.average)), "tokens": int(np.isfinite(self.average).sum())}


def correlations(attention: np.ndarray, saliency: np.ndarray) -> Correlations:
    """attention (layers, heads, K, T'), saliency (K, T') pooled -> ``Correlations``."""
    if attention.shape[2:] != saliency.shape:
        raise SpesError(f"cross-attention {attention.shape[2:]} and pooled saliency {saliency.shape} "
                        f"differ in (tokens, encoder frames)")
    a = attention.astype(np.float64)
    return Correlations(pearson(a, saliency), pearson(a.mean(1), saliency), pearson(a.mean((0, 1)), saliency))
