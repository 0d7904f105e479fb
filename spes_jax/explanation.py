"""``Explanation``: raw SPES maps of one utterance, their normalisations, and HDF5 I/O.

Files use the reference's layout so FBK-fairseq's evaluation scripts read ours: one group per
utterance id with ``fbank_heatmap`` (K, T, C) float32, ``tgt_embed_heatmap`` (K, K, 1) float32,
``tgt_text`` (the K prefix symbols, starting with </s>), ``src_text`` and ``n_masks``; plus
``tokens`` (the explained pieces), ``n_token_masks``, an ``axes`` attribute on every array, and
the provenance attributes of ``spes_jax.provenance`` (docs/explanation-files.md has the table). Raw
maps are stored; normalisation happens on read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

import numpy as np

from ._io import atomic_output
from .errors import SpesError, count


# Axis names of each per-utterance dataset, stored as its ``axes`` attribute.
AXES = {"fbank_heatmap": "token, frame, mel_bin", "tgt_embed_heatmap": "token, prefix_position, singleton",
        "tgt_text": "prefix_position", "tokens": "token"}


def _attr(value):
    """An HDF5 attribute value: strings, numbers (numpy's too: attributes read back from a file) and
    arrays as they are, anything else as JSON."""
    return value if isinstance(value, (str, int, float, np.ndarray, np.generic)) else json.dumps(value)


def _finite(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, 0.0).astype(np.float32)


def single_mean_std(spec: np.ndarray, prefix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token z-score (sample std, n - 1): over all T x C cells of the spectrogram map and over
    the causal cells j <= k of the prefix map; non-causal cells become 0, NaN/inf become 0.

    spec: (K, T, C); prefix: (K, K). Returns arrays of the same shapes.
    """
    K = spec.shape[0]
    flat = spec.reshape(K, -1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_spec = (flat - flat.mean(1, keepdims=True)) / flat.std(1, ddof=1, keepdims=True)
        causal = np.tril(np.ones((K, K), bool))
        p = np.where(causal, prefix.astype(np.float64), np.nan)
        n = causal.sum(1, keepdims=True)
        mean = np.nansum(p, 1, keepdims=True) / n
        std = np.sqrt(np.nansum((p - mean) ** 2, 1, keepdims=True) / (n - 1))
        z_pre = np.where(causal, (p - mean) / std, 0.0)
    return _finite(z_spec).reshape(spec.shape), _finite(z_pre)


def paired_min_max(spec: np.ndarray, prefix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token min-max to [0, 1] with one min and max shared by the spectrogram map and the causal
    prefix cells; non-causal cells become 0."""
    K = spec.shape[0]
    causal = np.tril(np.ones((K, K), bool))
    flat = spec.reshape(K, -1).astype(np.float64)
    p = prefix.astype(np.float64)
    lo = np.minimum(flat.min(1), np.where(causal, p, np.inf).min(1))[:, None]
    hi = np.maximum(flat.max(1), np.where(causal, p, -np.inf).max(1))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (flat - lo) / (hi - lo)
        q = np.where(causal, (p - lo) / (hi - lo), 0.0)
    return _finite(s).reshape(spec.shape), _finite(q)


@dataclass(frozen=True, repr=False)
class Explanation:
    """SPES explanation of one utterance's hypothesis.

    tokens: the K explained pieces (ending with </s>). spectrogram_saliency: (K, T, C) Eq. 3 maps.
    prefix_saliency: (K, K), row k over prefix positions 0..k (0 = the start token), 0 above the
    diagonal. prefix_tokens: the K decoder inputs (</s>, y_1, ..., y_{K-1}).
    """

    id: str
    tokens: list[str]
    spectrogram_saliency: np.ndarray
    prefix_saliency: np.ndarray
    prefix_tokens: list[str] = field(default_factory=list)
    text: str = ""
    n_masks: int = 0
    n_token_masks: int = 0
    is_normalized: bool = False
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        K, T, C = self.spectrogram_saliency.shape
        return (f"Explanation(id={self.id!r}, text={self.text!r}, {count(K, 'token')}, spectrogram_saliency ({K}, {T}, {C}), "
                f"prefix_saliency {tuple(self.prefix_saliency.shape)}, n_masks={self.n_masks}, n_token_masks={self.n_token_masks}"
                f"{', normalized' if self.is_normalized else ''})")

    def normalized(self, normalizer: str | None = None) -> "Explanation":
        """Per-token z-score then paired min-max (the reference's ``single_mean_std paired_min_max``).
        A contrastive explanation gets a contrastive normaliser instead (``core.contrastive.NORMALIZERS``):
        ``normalizer``, else the one recorded when it was explained."""
        if self.aggregation:
            raise SpesError(f"{self.id}: normalise before aggregating (as the reference does)")
        if self.contrastive:
            return self._normalized_contrastive(normalizer or self.contrastive.get("normalizer"))
        if normalizer is not None:
            raise SpesError(f"{self.id}: a normaliser applies to contrastive explanations only")
        spec, prefix = paired_min_max(*single_mean_std(self.spectrogram_saliency, self.prefix_saliency))
        return dataclasses.replace(self, spectrogram_saliency=spec, prefix_saliency=prefix, is_normalized=True)

    def sentence_level(self) -> np.ndarray:
        """(T, C) mean over tokens of the normalised spectrogram maps."""
        exp = self if self.is_normalized else self.normalized()
        return exp.spectrogram_saliency.mean(axis=0)

    def sentence_level_prefix(self) -> np.ndarray:
        """(K,) mean over tokens of the normalised prefix maps."""
        exp = self if self.is_normalized else self.normalized()
        return exp.prefix_saliency.mean(axis=0)

    @property
    def contrastive(self) -> dict | None:
        """What a contrastive explanation explains (``spes_jax.explain_contrastive``), else None:
        target / foil pieces, the word's start, end, foil_end (0-based piece indices), word,
        foil_word, scorer, word_probability, normalizer, p_orig / q_orig (the unperturbed word
        probabilities) and nonfinite_scores."""
        return self.meta.get("contrastive")

    def _normalized_contrastive(self, normalizer: str | None) -> "Explanation":
        from .core.contrastive import NORMALIZERS, normalize

        if not normalizer:
            raise SpesError(f"{self.id}: this contrastive explanation records no normaliser; choose one of "
                            f"{', '.join(NORMALIZERS)} (--normalizer on the command line, normalized(name) in Python)")
        spec, prefix = normalize(normalizer, self.spectrogram_saliency[0], self.prefix_saliency[0],
                                 self.contrastive["start"])
        return dataclasses.replace(self, spectrogram_saliency=np.asarray(spec)[None],
                                   prefix_saliency=np.asarray(prefix)[None], is_normalized=True)

    @property
    def aggregation(self) -> list[dict]:
        """The aggregation steps applied so far, in order (see ``spes_jax.analysis.aggregation``)."""
        return list(self.meta.get("aggregation", []))

    def save(self, path: str | os.PathLike, attrs: dict | None = None) -> None:
        """Writes this explanation alone to ``path`` (see ``save_explanations``)."""
        save_explanations(path, [self], attrs)


MAP_DTYPES = ("float32", "float16")


def save_explanations(path: str | os.PathLike, explanations, attrs: dict | None = None,
                      map_dtype: str = "float32") -> None:
    """Writes explanations to an HDF5 file atomically (a temporary file renamed into place).

    map_dtype: "float32" (the reference's layout) or "float16", which halves the maps' size and keeps
    about 3 significant digits (relative rounding <= 2^-11 for values above 6.1e-5; smaller values,
    e.g. probability-drop scores, lose precision: keep float32 for them). Reading gives float32.
    """
    import h5py

    if map_dtype not in MAP_DTYPES:
        raise SpesError(f"map dtype must be one of {MAP_DTYPES}, got {map_dtype!r}")
    dtype = np.dtype(map_dtype)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in (attrs or {}).items():
            f.attrs[key] = _attr(value)
        for exp in explanations:
            if exp.is_normalized and not exp.aggregation:
                raise SpesError("store raw maps; normalisation is applied on read")
            g = f.create_group(exp.id)
            g.create_dataset("fbank_heatmap", data=exp.spectrogram_saliency.astype(dtype), compression="gzip")
            g.create_dataset("tgt_embed_heatmap", data=exp.prefix_saliency.astype(dtype)[..., None])
            g.create_dataset("tgt_text", data=np.array(exp.prefix_tokens, dtype=object), dtype=h5py.string_dtype())
            g.create_dataset("tokens", data=np.array(exp.tokens, dtype=object), dtype=h5py.string_dtype())
            g.create_dataset("src_text", data=exp.text + "</s>", dtype=h5py.string_dtype())
            g.create_dataset("n_masks", data=np.int64(exp.n_masks))
            g.create_dataset("n_token_masks", data=np.int64(exp.n_token_masks))
            aggregated = bool(exp.aggregation)
            for name, axes in AXES.items():  # aggregated maps: rows are phrases, columns may be spans
                g[name].attrs["axes"] = axes.replace("token", "phrase") if aggregated else axes
            if aggregated:  # the reference's key for the row labels of aggregated maps
                g.create_dataset("tgt_phrases", data=np.array(exp.tokens, dtype=object), dtype=h5py.string_dtype())
                g.attrs["normalized"] = int(exp.is_normalized)
            for key, value in exp.meta.items():
                g.attrs[key] = _attr(value)


def _text(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def load_explanations(path: str | os.PathLike) -> dict[str, Explanation]:
    """Reads an explanation file (ours or the reference's) -> {utterance id: Explanation}."""
    import h5py

    path = os.fspath(path)
    if os.path.isdir(path):
        raise SpesError(f"{path}: a directory; load_explanations reads one file (spes_jax.results.load_result reads a "
                        "folder of them or an explain-corpus run directory)")
    if not os.path.isfile(path):
        raise SpesError(f"explanation file not found: {path}")
    out: dict[str, Explanation] = {}
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("kind") is not None:  # an encoder-output saliency file (the only other kind)
                raise SpesError(f"{path}: an encoder-output saliency file (spes-jax explain-encoder), not SPES "
                                "explanations; read it in Python with spes_jax.load_encoder_saliency")
            for key in f:
                g = f[key]
                prefix_tokens = [_text(t) for t in g["tgt_text"][()]] if "tgt_text" in g else []
                spec = np.asarray(g["fbank_heatmap"][()], np.float32)
                prefix = np.asarray(g["tgt_embed_heatmap"][()], np.float32)[..., 0]
                tokens = [_text(t) for t in g["tokens"][()]] if "tokens" in g else prefix_tokens[1:] + ["</s>"]
                src = _text(g["src_text"][()]) if "src_text" in g else ""
                meta = {k: _text(v) if isinstance(v, (str, bytes)) else v for k, v in g.attrs.items()}
                normalized = bool(meta.pop("normalized", 0))
                for k in ("aggregation", "contrastive"):
                    if k in meta:
                        meta[k] = json.loads(meta[k])
                out[key] = Explanation(
                    id=key, tokens=tokens, spectrogram_saliency=spec, prefix_saliency=prefix,
                    prefix_tokens=prefix_tokens, text=src[:-4] if src.endswith("</s>") else src,
                    n_masks=int(g["n_masks"][()]) if "n_masks" in g else 0,
                    n_token_masks=int(g["n_token_masks"][()]) if "n_token_masks" in g else 0,
                    is_normalized=normalized, meta=meta)
    except OSError as e:
        raise SpesError(f"{path}: not a readable HDF5 explanation file ({e})") from None
    return out
