"""Figures: saliency maps as the paper shows them (Fig. 3, 8, 9) and metric curves.

Colours follow one rule everywhere, figures and the HTML report alike (``color_limits``): a map's
colour range runs from its median, the background level of a map that is salient in a few patches,
to a high percentile of the cells above it, so a handful of extreme cells cannot turn the rest of the
map dark. Uses matplotlib's object API (no pyplot state), so it works headless and in threads.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping

import numpy as np

from .._io import atomic_output
from ..audio import FRAME_SHIFT_S
from ..errors import SpesError, count
from ..explanation import Explanation
from ..text import pieces_text, word_groups, word_text
from .plausibility import timed_words

Timings = list[tuple[str, float, float]]

CLIP_PERCENTILE = 99.5
"""Default upper colour limit: this percentile of the cells above the map's median."""

# The overlay (figures and report): the saliency as one hue over the grey spectrogram, with opacity
# ALPHA * s ** GAMMA for a cell at s in the colour range (0..1), so the background level is invisible;
# under it the loudest cells are grey at PALE of black, so the hue reads on top of them.
OVERLAY_RGB = (0.91, 0.25, 0.05)
OVERLAY_ALPHA = 0.9
OVERLAY_GAMMA = 2.0
OVERLAY_PALE = 0.6


def color_limits(maps: np.ndarray, percentile: float | None = CLIP_PERCENTILE, *,
                 per_map: bool = False) -> tuple[float, float]:
    """Colour range (lo, hi) of a saliency map of any shape (non-finite cells ignored).

    lo is the median, hi the ``percentile``-th percentile of the cells above it: the range covers
    what stands out from the background and clips the few most extreme cells. ``percentile`` None
    or 100 turns this off: (min, max), plain min-max scaling. per_map: ``maps`` is a stack (N, ...)
    shown on one shared scale, which then spans every map's own range (lowest lo, highest hi), so
    that a map with a higher background is not judged by a median the others dominate. Without
    spread the range is (lo, lo + 1): the map shows in the lowest colour.
    """
    if percentile is not None and not 0 < percentile <= 100:
        raise SpesError(f"clip percentile {percentile}: must be in (0, 100], or None for min-max")
    maps = np.asarray(maps, np.float64)
    ranges = [r for r in (_range(m[np.isfinite(m)], percentile) for m in (maps if per_map else [maps])) if r]
    if ranges:
        return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)
    finite = maps[np.isfinite(maps)]
    lo = float(finite.min()) if finite.size else 0.0
    return lo, lo + 1.0


def _range(values: np.ndarray, percentile: float | None) -> tuple[float, float] | None:
    """``color_limits`` of the (n,) finite values of one map; None without spread."""
    if values.size == 0:
        return None
    if percentile is None or percentile >= 100:
        lo, hi = values.min(), values.max()
    else:
        lo = np.median(values)
        above = values[values > lo]
        hi = np.percentile(above, percentile) if above.size else lo
    return (float(lo), float(hi)) if hi > lo else None


def _save(fig, path: str | os.PathLike | None):
    if path is not None:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=150, format=os.path.splitext(os.fspath(path))[1][1:] or "png")
    return fig


def _overlay_cmap():
    """The overlay's colours as a colour map (for its colour bar): the hue at its opacity over light grey."""
    from matplotlib.colors import ListedColormap

    s = np.linspace(0, 1, 256)[:, None]
    alpha = OVERLAY_ALPHA * s ** OVERLAY_GAMMA
    return ListedColormap((1 - alpha) * 0.9 + alpha * np.asarray(OVERLAY_RGB))


def _extent(data: np.ndarray) -> tuple[float, float, float, float]:
    T, C = data.shape
    return 0, T * FRAME_SHIFT_S, 0, C


def _spectrogram(ax, features: np.ndarray, pale: bool = False):
    """The (T, C) features in grey (dark = loud), robust to outliers; ``pale`` keeps the loudest cells
    mid-grey so an overlay's colour reads on top of them."""
    lo, hi = np.percentile(features, [1, 99.5])
    hi = hi if hi > lo else lo + 1
    ax.imshow(features.T, origin="lower", aspect="auto", cmap="gray_r", vmin=lo,
              vmax=lo + (hi - lo) / (OVERLAY_PALE if pale else 1.0), extent=_extent(features), interpolation="nearest")


def _saliency(ax, saliency: np.ndarray, limits: tuple[float, float], cmap: str = "inferno"):
    return ax.imshow(saliency.T, origin="lower", aspect="auto", cmap=cmap, vmin=limits[0], vmax=limits[1],
                     extent=_extent(saliency), interpolation="nearest")


def _overlay(ax, features: np.ndarray, saliency: np.ndarray, limits: tuple[float, float]):
    """Pale spectrogram, then the saliency as one hue whose opacity grows with it (see OVERLAY_*)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    _spectrogram(ax, features, pale=True)
    lo, hi = limits
    s = np.clip((np.nan_to_num(saliency, nan=lo) - lo) / (hi - lo), 0, 1).T
    rgba = np.empty(s.shape + (4,))
    rgba[..., :3] = OVERLAY_RGB
    rgba[..., 3] = OVERLAY_ALPHA * s ** OVERLAY_GAMMA
    ax.imshow(rgba, origin="lower", aspect="auto", extent=_extent(saliency), interpolation="nearest")
    return ScalarMappable(Normalize(lo, hi), _overlay_cmap())


def _words(ax, timings: Timings | None, color: str, fontsize: float = 7, active: Collection[int] = ()) -> None:
    """Word boundaries as dashed lines, each word's label at the top between its boundaries; the
    labels of the timed words ``active`` (the explained token's) are highlighted."""
    for i, (word, start, end) in enumerate(timings or ()):
        for x in (start, end):
            ax.axvline(x, color=color, lw=0.7, ls=(0, (3, 2)), alpha=0.8)
        on = i in active
        ax.text((start + end) / 2, 0.97, word, transform=ax.get_xaxis_transform(), ha="center", va="top",
                fontsize=fontsize, color="#2f6fde" if on else "#1c2330", fontweight="bold" if on else "normal",
                clip_on=True, bbox={"boxstyle": "round,pad=0.15", "fc": "#dbe6fb" if on else "white", "ec": "none",
                                    "alpha": 0.9 if on else 0.75})


def _clip_ends(percentile: float | None) -> tuple[str, str]:
    """What the ends of the colour range are, in words (``color_limits``)."""
    return ("min", "max") if percentile is None or percentile >= 100 else ("median", f"{percentile:g}th pct")


def check_drawable(exp: Explanation) -> None:
    """The figures draw normalised maps over time x frequency, with rows of tokens, words or phrases:
    refuses other outputs of ``aggregation`` (``spes-jax aggregate``) with what to do instead."""
    ops = [step["op"] for step in exp.aggregation or []]
    averaged = [what for op, what in (("time", "time (aggregate --time-spans or --time-mean)"),
                                      ("frequency", "frequency (aggregate --frequency)")) if op in ops]
    if averaged:
        raise SpesError(f"{exp.id}: its maps are averaged over {' and '.join(averaged)}, and plot draws maps over the "
                        "spectrogram's time and frequency; plot a file aggregated by --words, --spans or --sentence "
                        "only, or read these maps in Python (spes_jax.load_explanations)")
    if ops and not exp.is_normalized:
        raise SpesError(f"{exp.id}: aggregated without --normalize; plot draws normalised maps, and each token's map "
                        "is normalised before averaging (as the reference does): aggregate again with --normalize")


def plot_explanation(exp: Explanation, features: np.ndarray | None = None, token: int | None = None,
                     path: str | os.PathLike | None = None, *, timings: Timings | None = None,
                     clip_percentile: float | None = CLIP_PERCENTILE):
    """Spectrogram, saliency map and overlay for one token (``token=None``: the sentence-level map),
    the same token's prefix saliency as bars, then the prefix saliency matrix with token labels.

    features: the (T, C) model input (``model.features(audio)``); without it only the maps are drawn.
    timings: (word, start s, end s) spans, drawn as labelled word boundaries on the maps.
    clip_percentile: the colour range (``color_limits``); None: min-max.
    Returns the matplotlib Figure; writes it to ``path`` (PNG, PDF, SVG) when given.
    """
    from matplotlib.figure import Figure

    check_drawable(exp)
    norm = exp if exp.is_normalized else exp.normalized()
    K, T, C = norm.spectrogram_saliency.shape
    if token is not None and not -K <= token < K:
        raise SpesError(f"{exp.id}: token {token} out of range (the hypothesis has {count(K, 'token')})")
    if features is not None and features.shape != (T, C):
        raise SpesError(f"{exp.id}: features of shape {features.shape} do not match the explanation's {(T, C)}")
    if token is None:
        saliency, bars, what = norm.sentence_level(), norm.sentence_level_prefix(), "sentence level (mean over tokens)"
    else:
        token %= K
        saliency, what = norm.spectrogram_saliency[token], f"token {token}: {exp.tokens[token]!r}"
        bars = _causal(norm.prefix_saliency)[token]  # previous tokens only
    limits = color_limits(saliency, clip_percentile)
    maps = 3 if features is not None else 1
    fig = Figure(figsize=(9, 2.1 * maps + 1.6 + 2.6 + (0.1 * K if K > 12 else 0)), layout="constrained")
    axes = fig.subplots(maps + 2, 1, gridspec_kw={"height_ratios": [1] * maps + [0.75, 1.6]})
    if features is not None:
        _spectrogram(axes[0], features)
        axes[0].set_title(f"{exp.id}: spectrogram (the model's input features)", fontsize=9)
    clip = "colours {} to {}".format(*_clip_ends(clip_percentile))
    ax = axes[1 if features is not None else 0]
    ax.set_title(f"spectrogram saliency, {what} ({clip})", fontsize=9)
    explained = _explained(exp, "spectrogram")
    if not explained:  # zero maps, normalised, would be one flat colour with a colour bar
        for a in axes[maps - (2 if features is not None else 1): maps]:
            _not_explained(a, "no spectrogram masks (--masks 0): the spectrogram was not explained", (T, C))
    else:
        fig.colorbar(_saliency(ax, saliency, limits), ax=ax, fraction=0.03, label="saliency", pad=0.01)
    if features is not None:
        if explained:
            fig.colorbar(_overlay(axes[2], features, saliency, limits), ax=axes[2], fraction=0.03, pad=0.01,
                         label="saliency")
        axes[2].set_title("overlay: saliency over the spectrogram", fontsize=9)
    active = [] if token is None else timed_words(exp.tokens, timings)[token]
    for i in range(maps):
        axes[i].set_ylabel("mel channel")
        _words(axes[i], timings, "white" if axes[i] is ax else "#2f6fde", active=active)
        if i < maps - 1:
            axes[i].tick_params(labelbottom=False)
    axes[maps - 1].set_xlabel("time (s)")
    # The reference's sentence level averages all K rows, and prefix token j is seen only by the rows
    # after it: later columns average more zeros. Say so where the bars are read.
    if _explained(exp, "prefix"):
        _prefix_bars(axes[maps], norm, bars, "sentence level (mean over all tokens; later positions are seen "
                     "by fewer)" if token is None else f"token {token}")
        _prefix_panel(axes[-1], norm, fig)
    else:
        for a in axes[maps:]:
            _not_explained(a, "no prefix masks (--token-masks 0): the previous tokens were not explained")
    return _save(fig, path)


def _explained(exp: Explanation, part: str) -> bool:
    """Whether the "spectrogram" or "prefix" part of ``exp`` was explained: not when it had no masks and
    its maps are zero (the reference's files record no mask counts; their maps are not zero)."""
    n, maps = ((exp.n_masks, exp.spectrogram_saliency) if part == "spectrogram"
               else (exp.n_token_masks, exp.prefix_saliency))
    return n > 0 or bool(np.any(maps))


def _not_explained(ax, why: str, extent: tuple[int, int] | None = None) -> None:
    """An empty panel with its reason; ``extent`` (T, C): the frame and channel axes it would have had."""
    if extent is not None:
        ax.set_xlim(0, extent[0] * FRAME_SHIFT_S)
        ax.set_ylim(0, extent[1])
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="#333")


def plot_alignment(features: np.ndarray, words: Timings, phones: Timings | None = None,
                   path: str | os.PathLike | None = None, title: str = ""):
    """A (T, C) spectrogram with word boundaries (dashed, labelled at the top) and phone boundaries
    (ticks and labels at the bottom), to check a forced alignment by eye.

    words, phones: (label, start s, end s) spans. Returns the Figure; writes it to ``path`` when given.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.6 * features.shape[0] * FRAME_SHIFT_S), 2.8), layout="constrained")
    ax = fig.subplots()
    _spectrogram(ax, features)
    _words(ax, words, "#2f6fde")
    for label, start, end in phones or ():
        ax.axvline(start, ymax=0.08, color="#c0392b", lw=0.6)
        ax.text((start + end) / 2, 0.02, label, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=5, color="#c0392b", clip_on=True)
    ax.set(xlabel="time (s)", ylabel="mel channel")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def _prefix_labels(norm: Explanation) -> list[str]:
    K = norm.prefix_saliency.shape[1]
    return [t.replace("</s>", "<s>") for t in norm.prefix_tokens] if norm.prefix_tokens else [str(j) for j in range(K)]


def _prefix_bars(ax, norm: Explanation, bars: np.ndarray, what: str) -> None:
    """(K,) prefix saliency, one bar per prefix position, on a labelled 0..1 value axis."""
    K = bars.shape[0]
    ax.bar(np.arange(K), bars, color="#f0a33c", width=0.7)
    ax.set_xlim(-0.5, K - 0.5)
    ax.set_ylim(0, 1)
    ax.set_yticks([0, 0.5, 1])
    ax.grid(axis="y", lw=0.5, alpha=0.5)
    ax.set_xticks(range(K), _prefix_labels(norm), rotation=90, fontsize=7)
    ax.set_ylabel("saliency\n(normalised)", fontsize=8)
    ax.set_title(f"prefix saliency, {what}: previous output tokens", fontsize=9)


def _causal(prefix: np.ndarray) -> np.ndarray:
    """The (K, K) token-by-token prefix map with the cells of later tokens zeroed; a map whose rows are
    words or phrases over token columns (``aggregation.by_words``) already keeps only the columns
    before each row's phrase."""
    return np.tril(prefix) if prefix.shape[0] == prefix.shape[1] else prefix


def _prefix_panel(ax, norm: Explanation, fig) -> None:
    K, L = norm.prefix_saliency.shape
    data = norm.prefix_saliency
    if K == L:
        data = np.ma.masked_where(~np.tril(np.ones((K, K), bool)), data)
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(L), _prefix_labels(norm), rotation=90, fontsize=7)
    ax.set_yticks(range(K), norm.tokens, fontsize=7)
    ax.set_xlabel("previous output token (position 0 = start token)")
    ax.set_ylabel("explained token")
    ax.set_title("prefix saliency matrix", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)


def word_maps(exp: Explanation) -> tuple[list[str], np.ndarray]:
    """Word-level maps: the mean of each word's normalised token maps (``word_groups``), as the
    report's word mode does. Returns (labels, (W, T, C) maps)."""
    norm = exp if exp.is_normalized else exp.normalized()
    groups = word_groups(exp.tokens)
    labels = [word_text(exp.tokens, g) for g in groups]
    return labels, np.stack([norm.spectrogram_saliency[g].mean(axis=0) for g in groups])


def plot_token_grid(exp: Explanation, features: np.ndarray | None = None, words: bool = False,
                    timings: Timings | None = None, columns: int = 3, path: str | os.PathLike | None = None,
                    *, clip_percentile: float | None = CLIP_PERCENTILE):
    """Every token's (or, with ``words``, every word's) normalised map of one utterance in one figure.

    Each panel's colours span its own ``color_limits`` (the normalisation already scales every token
    to its own range; one shared range would let the noisiest map set it for all), so the colour bar
    is in units of that range. features: the (T, C) model input, drawn in grey under the maps, which
    become a single-hue overlay; timings: (word, start s, end s) spans, drawn as labelled word
    boundaries in every panel. Returns the matplotlib Figure; writes it to ``path`` when given.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    check_drawable(exp)
    if not _explained(exp, "spectrogram"):
        raise SpesError(f"{exp.id}: the spectrogram was not explained (0 spectrogram masks): no maps for a grid")
    norm = exp if exp.is_normalized else exp.normalized()
    K, T, C = norm.spectrogram_saliency.shape
    if features is not None and features.shape != (T, C):
        raise SpesError(f"{exp.id}: features of shape {features.shape} do not match the explanation's {(T, C)}")
    labels, maps = word_maps(exp) if words else (list(exp.tokens), norm.spectrogram_saliency)
    timed = timed_words(exp.tokens, timings)
    active = [timed[g[0]] for g in word_groups(exp.tokens)] if words else timed
    n = len(labels)
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    fig = Figure(figsize=(3.6 * columns + 0.8, 1.9 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_axis_off()
            continue
        limits = color_limits(maps[i], clip_percentile)
        if features is not None:
            _overlay(ax, features, maps[i], limits)
        else:
            _saliency(ax, maps[i], limits)
        _words(ax, timings, "#2f6fde" if features is not None else "white", fontsize=6, active=active[i])
        # Tokens carry the index ``plot --token`` takes (0-based); words are counted for reading.
        ax.set_title(f"{i + 1 if words else i}: {labels[i].replace(chr(0x2581), '')}", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        if i % columns == 0:
            ax.set_ylabel("mel", fontsize=7)
        if i >= n - columns:
            ax.set_xlabel("time (s)", fontsize=7)
            ax.tick_params(labelbottom=True)  # also under a panel whose neighbour below is empty
    what = "word" if words else "token"
    ends = _clip_ends(clip_percentile)
    fig.suptitle(f"{exp.id}: normalised {what} maps, each coloured from its {ends[0]} to its {ends[1]}", fontsize=9)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), _overlay_cmap() if features is not None else "inferno"),
                       ax=axes.tolist(), fraction=0.02, label="saliency within each panel's range")
    bar.set_ticks([0, 1], labels=list(ends))
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
        _spectrogram(axes[0], features)
        axes[0].set_title("spectrogram (the model's input features)", fontsize=9)
    for ax, (data, title) in zip(axes[rows - 1 - len(maps):], maps):
        limit = symmetric_limit(data)
        fig.colorbar(_saliency(ax, data, (-limit, limit), DIVERGING), ax=ax, fraction=0.03, label="saliency")
        ax.set_title(f"{title}: red favours the target word, blue the foil{_one_sign(data)}", fontsize=9)
    for ax in axes[:-1]:
        ax.set_ylabel("mel channel")
    axes[-2].set_xlabel("time (s)")
    _contrastive_prefix_panel(axes[-1], norm, name)
    fig.suptitle(f"{exp.id}: why {info['word']!r} rather than {info['foil_word']!r}?  P_o {info['p_orig']:.3g} "
                 f"(target word), Q_o {info['q_orig']:.3g} (foil word)\ntarget: {exp.text}\n"
                 f"foil: {pieces_text(info['foil'][:-1])}", fontsize=9)
    return _save(fig, path)


def _one_sign(data: np.ndarray) -> str:
    """A note for a raw map whose cells all share one sign: Eq. 3 averages over masks that each occlude
    about half of all cells, so an effect of occluding anything at all shifts every cell alike."""
    finite = data[np.isfinite(data)]
    if finite.size and (finite.min() > 0 or finite.max() < 0):
        side = "lowers" if finite.min() > 0 else "raises"
        return (f"\n(every cell {'positive' if finite.min() > 0 else 'negative'}: occluding anything {side} the "
                "target's score against the foil;\ncompare cells with each other, as the normalised map does)")
    return ""


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
    if start == 0:  # an empty-looking panel needs its reason
        ax.text(0.5, 0.8, "the word is the hypothesis' first: no previous output tokens but the start token",
                transform=ax.transAxes, ha="center", va="center", fontsize=8, color="#333",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
