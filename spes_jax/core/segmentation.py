"""Host-side segmentation of the spectrogram into patches, one label map per granularity level.

Labels start at 1 (0 is reserved for padding, never perturbed). SLIC runs in a background thread
(``Prefetcher``) so the next utterance is segmented while the device sweeps the current one.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

from ..config import SPESConfig


@dataclass(frozen=True)
class Segmentation:
    """labels: (n_levels, T, C) int32, 1-based; n_segments: (n_levels,) labels actually returned."""

    labels: np.ndarray
    n_segments: np.ndarray
    requested: tuple[int, ...]


def requested_segments(n_frames: int, cfg: SPESConfig) -> tuple[int, ...]:
    """Eq. 2: k = round(n_base * min(T, T_thr) / T_ref), at least 1 (or n_base with fixed k)."""
    if not cfg.duration_adaptive:
        return tuple(int(k) for k in cfg.n_segments)
    duration = min(n_frames, cfg.threshold_duration)
    return tuple(max(1, int(round(k * duration / cfg.reference_duration))) for k in cfg.n_segments)


def _slic(image: np.ndarray, k: int, cfg: SPESConfig) -> np.ndarray:
    from skimage.segmentation import slic

    return slic(image, n_segments=k, compactness=cfg.compactness, sigma=cfg.slic_sigma, channel_axis=None)


def _grid(shape: tuple[int, int], k: int) -> np.ndarray:
    """About k rectangular patches with roughly square cells in (frame, channel) units."""
    T, C = shape
    n_c = int(np.clip(round(np.sqrt(k * C / T)), 1, C))
    n_t = int(np.clip(round(k / n_c), 1, T))
    rows = np.arange(T) * n_t // T
    cols = np.arange(C) * n_c // C
    return rows[:, None] * n_c + cols[None, :] + 1


def segment(features: np.ndarray, cfg: SPESConfig) -> Segmentation:
    """Segments CMVN features (T, C) at every level of ``cfg``."""
    T, C = features.shape
    if cfg.segmentation == "feature":
        labels = (np.arange(T * C).reshape(1, T, C) + 1).astype(np.int32)
        return Segmentation(labels, np.array([T * C]), (T * C,))
    requested = requested_segments(T, cfg)
    if cfg.segmentation == "slic":
        lo, hi = float(features.min()), float(features.max())
        image = (features - lo) / (hi - lo) if hi > lo else np.zeros_like(features)
        maps = [_slic(image, k, cfg) for k in requested]
    else:
        maps = [_grid((T, C), k) for k in requested]
    labels = np.stack(maps).astype(np.int32)
    return Segmentation(labels, labels.reshape(len(maps), -1).max(axis=1), requested)


T_in = TypeVar("T_in")
T_out = TypeVar("T_out")


def prefetch(fn: Callable[[T_in], T_out], items: Iterable[T_in], depth: int = 1) -> Iterator[T_out]:
    """``map(fn, items)`` computed ``depth`` items ahead in a background thread."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending: list[concurrent.futures.Future] = []
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > depth:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()
