"""Figures: saliency maps as the paper shows them (Fig. 3, 8, 9) and metric curves.

Uses matplotlib's object API (no pyplot state), so it works headless and in threads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from .._io import atomic_output
from ..audio import FRAME_SHIFT_S
from ..errors import SpesError
from ..text import pieces_text

if TYPE_CHECKING:  # annotations only (explanation.py imports the analysis modules lazily)
    from ..explanation import Explanation


def _save(fig, path: str | os.PathLike | None):
    if path is not None:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=150, format=os.path.splitext(os.fspath(path))[1][1:] or "png")
    return fig


def _image(ax, data: np.ndarray, title: str, cmap: str, vmin=None, vmax=None):
    """Draws a (T, C) array with time on x (seconds) and mel channel on y."""
    T, C = data.shape
    im = ax.imshow(data.T, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                   extent=(0, T * FRAME_SHIFT_S, 0, C), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("mel channel")
    return im


def plot_explanation(exp: Explanation, features: np.ndarray | None = None, token: int | None = None,
                     path: str | os.PathLike | None = None):
    """Spectrogram, saliency map and overlay for one token (``token=None``: the sentence-level map),
    then the prefix saliency matrix with token labels.

    features: the (T, C) model input (``model.features(audio)``); without it only the maps are drawn.
    Returns the matplotlib Figure; writes it to ``path`` (PNG, PDF, SVG) when given.
    """
    from matplotlib.figure import Figure

    norm = exp if exp.is_normalized else exp.normalized()
    K, T, C = norm.spectrogram_saliency.shape
    if token is not None and not -K <= token < K:
        raise SpesError(f"{exp.id}: token {token} out of range (the hypothesis has {K} tokens)")
    if features is not None and features.shape != (T, C):
        raise SpesError(f"{exp.id}: features of shape {features.shape} do not match the explanation's {(T, C)}")
    if token is None:
        saliency, what = norm.sentence_level(), "sentence level (mean over tokens)"
    else:
        saliency, what = norm.spectrogram_saliency[token], f"token {token % K}: {exp.tokens[token]!r}"
    rows = (3 if features is not None else 1) + 1
    fig = Figure(figsize=(9, 2.3 * rows + (0.1 * K if K > 12 else 0)), layout="constrained")
    axes = fig.subplots(rows, 1, gridspec_kw={"height_ratios": [1] * (rows - 1) + [1.6]})
    i = 0
    if features is not None:
        _image(axes[0], features, f"{exp.id}: spectrogram (CMVN log-mel)", "gray_r")
        i = 1
    im = _image(axes[i], saliency, f"spectrogram saliency, {what}", "inferno", 0, 1)
    fig.colorbar(im, ax=axes[i], fraction=0.03)
    if features is not None:
        _image(axes[2], features, "overlay", "gray_r")
        # Opacity grows with saliency, so the spectrogram shows through where the map is low.
        axes[2].imshow(saliency.T, origin="lower", aspect="auto", cmap="inferno", vmin=0, vmax=1,
                       alpha=np.clip(saliency.T, 0, 1) ** 2 * 0.9, extent=(0, T * FRAME_SHIFT_S, 0, C),
                       interpolation="nearest")
        i = 2
    axes[i].set_xlabel("time (s)")
    _prefix_panel(axes[-1], norm, fig)
    return _save(fig, path)


def _prefix_panel(ax, norm: Explanation, fig) -> None:
    K = norm.prefix_saliency.shape[0]
    causal = np.tril(np.ones((K, K), bool))
    data = np.ma.masked_where(~causal, norm.prefix_saliency)
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    labels = norm.prefix_tokens or [str(j) for j in range(K)]
    ax.set_xticks(range(K), [t.replace("</s>", "<s>") for t in labels], rotation=90, fontsize=7)
    ax.set_yticks(range(K), norm.tokens, fontsize=7)
    ax.set_xlabel("previous output token (position 0 = start token)")
    ax.set_ylabel("explained token")
    ax.set_title("prefix saliency", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)


def word_maps(exp: Explanation) -> tuple[list[str], np.ndarray]:
    """Word-level maps: the mean of each word's normalised token maps, words grouped from
    SentencePiece pieces by ``plausibility.token_words`` (a piece starting with U+2581 begins a word;
    </s> and punctuation-only pieces stay tokens of their own), as the report's word mode does.
    Returns (labels, (W, T, C) maps)."""
    from .plausibility import token_words

    norm = exp if exp.is_normalized else exp.normalized()
    index = token_words(exp.tokens)
    groups: list[list[int]] = []  # in order of first piece; a word's pieces may enclose punctuation
    words: dict[int, list[int]] = {}
    for k, w in enumerate(index):
        if w < 0:
            groups.append([k])
        elif w in words:
            words[w].append(k)
        else:
            words[w] = [k]
            groups.append(words[w])
    labels = ["".join(exp.tokens[k] for k in g).replace("\u2581", "") for g in groups]
    return labels, np.stack([norm.spectrogram_saliency[g].mean(axis=0) for g in groups])


def plot_token_grid(exp: Explanation, features: np.ndarray | None = None, words: bool = False,
                    timings: list[tuple[str, float, float]] | None = None, columns: int = 3,
                    path: str | os.PathLike | None = None):
    """Every token's (or, with ``words``, every word's) normalised map of one utterance in one
    figure, on one shared colour scale (0..1, one colour bar).

    features: the (T, C) model input, drawn in grey under the maps (opacity grows with saliency);
    timings: (word, start s, end s) spans, drawn as word boundaries in every panel.
    Returns the matplotlib Figure; writes it to ``path`` (PNG, PDF, SVG) when given.
    """
    from matplotlib.figure import Figure

    norm = exp if exp.is_normalized else exp.normalized()
    K, T, C = norm.spectrogram_saliency.shape
    if features is not None and features.shape != (T, C):
        raise SpesError(f"{exp.id}: features of shape {features.shape} do not match the explanation's {(T, C)}")
    labels, maps = word_maps(exp) if words else ([t for t in exp.tokens], norm.spectrogram_saliency)
    n = len(labels)
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    fig = Figure(figsize=(3.6 * columns + 0.8, 1.9 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)).ravel()
    extent = (0, T * FRAME_SHIFT_S, 0, C)
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_axis_off()
            continue
        if features is not None:
            ax.imshow(features.T, origin="lower", aspect="auto", cmap="gray_r", extent=extent, interpolation="nearest")
            im = ax.imshow(maps[i].T, origin="lower", aspect="auto", cmap="inferno", vmin=0, vmax=1, extent=extent,
                           alpha=np.clip(maps[i].T, 0, 1) ** 2 * 0.9, interpolation="nearest")
        else:
            im = ax.imshow(maps[i].T, origin="lower", aspect="auto", cmap="inferno", vmin=0, vmax=1, extent=extent,
                           interpolation="nearest")
        for _, start, end in timings or ():
            for x in (start, end):
                ax.axvline(x, color="white", lw=0.6, ls=(0, (3, 2)), alpha=0.9)
        ax.set_title(f"{i + 1}: {labels[i].replace(chr(0x2581), '')}", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        if i % columns == 0:
            ax.set_ylabel("mel", fontsize=7)
        if i >= n - columns:
            ax.set_xlabel("time (s)", fontsize=7)
            ax.tick_params(labelbottom=True)  # also under a panel whose neighbour below is empty
    what = "word" if words else "token"
    fig.suptitle(f"{exp.id}: normalised {what} maps", fontsize=9)
    fig.colorbar(im, ax=axes.tolist(), fraction=0.02, label="saliency")
    return _save(fig, path)


def plot_deletion_curves(curves: Mapping[str, object], path: str | os.PathLike | None = None):
    """Deletion/insertion curves (``PerturbationCurve``) of several methods on one axis."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for name, c in curves.items():
        ax.plot(c.percentages, c.scores, marker=".", label=f"{name} (AUC {c.auc_fraction:.2f})")
    first = next(iter(curves.values()))
    ax.set_xlabel(f"features {'deleted' if first.metric == 'deletion' else 'kept'} (%)")
    ax.set_ylabel("BLEU" if first.scorer == "bleu" else "WER (%)")
    ax.set_title(first.metric)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_size_curves(curves: Mapping[str, object], path: str | os.PathLike | None = None):
    """Size curves (``SizeCurve``): spectrogram (left) and prefix (right)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for name, c in curves.items():
        left.plot(c.thresholds, c.spectrogram, marker=".", label=f"{name} (AUC {c.auc:.2f})")
        right.plot(c.thresholds, c.prefix, marker=".", label=f"{name} (AUC {c.auc_prefix:.2f})")
    for ax, what in ((left, "spectrogram"), (right, "prefix")):
        ax.set_xlabel("threshold")
        ax.set_ylabel(f"{what} features >= threshold (%)")
        ax.set_title(f"size ({what})")
        ax.legend(fontsize=7)
    return _save(fig, path)


# Contrastive explanations (one word against a foil): their maps are signed, so they are drawn on a
# diverging colour scale centred on 0 (red positive, blue negative), not on the 0..1 scale above.
DIVERGING = "RdBu_r"
# What plot and report show when a file records no normaliser: the reference's gender normaliser.
CONTRASTIVE_NORMALIZER = "single_mean_std"


def contrastive_normalizer(exp: Explanation, normalizer: str | None = None) -> str:
    """The normaliser a contrastive figure shows: ``normalizer``, else the recorded one, else
    ``CONTRASTIVE_NORMALIZER``."""
    return normalizer or exp.contrastive.get("normalizer") or CONTRASTIVE_NORMALIZER


def symmetric_limit(x: np.ndarray) -> float:
    """Half-width of a colour scale centred on 0 that holds every finite value of ``x`` (1 if all are 0)."""
    finite = np.abs(np.asarray(x, np.float64)[np.isfinite(x)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def plot_contrastive(exp: Explanation, features: np.ndarray | None = None, normalizer: str | None = None,
                     path: str | os.PathLike | None = None):
    """Why the model produced the target word rather than the foil: the raw (Eq. 3) and the
    normalised spectrogram map, each on a diverging colour scale centred on 0 (red: occluding these
    cells lowers the target word's score against the foil; blue: the opposite), and the normalised
    prefix saliency over the decoder inputs before the word. The title gives target and foil, and
    P_o / Q_o, the word probabilities on the unperturbed input.

    features: the (T, C) model input, drawn above the maps; normalizer: see ``contrastive_normalizer``.
    Returns the matplotlib Figure; writes it to ``path`` (PNG, PDF, SVG) when given.
    """
    from matplotlib.figure import Figure

    info = exp.contrastive
    name = contrastive_normalizer(exp, normalizer)
    norm = exp.normalized(name)
    T, C = exp.spectrogram_saliency.shape[1:]
    if features is not None and features.shape != (T, C):
        raise SpesError(f"{exp.id}: features of shape {features.shape} do not match the explanation's {(T, C)}")
    maps = [(exp.spectrogram_saliency[0], f"raw map (Eq. 3, {info['scorer']} score)"),
            (norm.spectrogram_saliency[0], f"normalised map ({name})")]
    rows = len(maps) + 1 + (features is not None)
    fig = Figure(figsize=(9, 2.3 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, 1, gridspec_kw={"height_ratios": [1] * (rows - 1) + [1.2]})
    if features is not None:
        _image(axes[0], features, "spectrogram (CMVN log-mel)", "gray_r")
    for ax, (data, title) in zip(axes[rows - 1 - len(maps):], maps):
        limit = symmetric_limit(data)
        im = _image(ax, data, f"{title}: red favours the target word, blue the foil", DIVERGING, -limit, limit)
        fig.colorbar(im, ax=ax, fraction=0.03, label="saliency")
    axes[-2].set_xlabel("time (s)")
    _contrastive_prefix_panel(axes[-1], norm, name)
    fig.suptitle(f"{exp.id}: why {info['word']!r} rather than {info['foil_word']!r}?  P_o {info['p_orig']:.3g} "
                 f"(target word), Q_o {info['q_orig']:.3g} (foil word)\ntarget: {exp.text}\n"
                 f"foil: {pieces_text(info['foil'][:-1])}", fontsize=9)
    return _save(fig, path)


def _contrastive_prefix_panel(ax, norm: Explanation, normalizer: str) -> None:
    """Bars of the normalised prefix saliency over the decoder inputs the word may use (0..start)."""
    from matplotlib import colormaps

    start = norm.contrastive["start"]
    values = norm.prefix_saliency[0, : start + 1]
    limit = symmetric_limit(values)
    ax.bar(range(start + 1), values, color=colormaps[DIVERGING](0.5 + 0.5 * values / limit), edgecolor="#555",
           linewidth=0.5)
    ax.axhline(0, color="#555", lw=0.6)
    labels = norm.prefix_tokens[: start + 1] or [str(j) for j in range(start + 1)]
    ax.set_xticks(range(start + 1), [t.replace("</s>", "<s>") for t in labels], rotation=90, fontsize=7)
    ax.set_xlim(-0.6, max(start, 4) + 0.6)
    ax.set_xlabel("decoder input before the word (position 0 = start token)")
    ax.set_ylabel("saliency")
    ax.set_title(f"prefix saliency, normalised ({normalizer})", fontsize=9)
