"""Samplers with the reference's limit, the split-half convergence estimate and --until-r."""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spes_jax import SPESConfig, SpesError, core, explain
from spes_jax.core import OrthogonalMasks, Segmentation
from spes_jax._shapes import SEGMENT_BUCKET
from spes_jax.core.perturbation import design_bits, orthogonal_keep, segment_keep
from spes_jax.core.sweep import ratio, segment_sums
from support import synthetic_features

S = 20  # segments of the toy segmentation (slots 1..S; slot 0 is padding)


def _toy_inputs(cfg: SPESConfig, n_levels: int = 1):
    """A (64, 80) input cut into S vertical stripes at every level, prepared for the core."""
    feats = synthetic_features(0.64, seed=1)[:64]
    stripe = (np.arange(64) * S // 64 + 1).astype(np.int32)
    labels = np.broadcast_to(stripe[None, :, None], (n_levels, 64, 80)).copy()
    seg = Segmentation(labels, np.full(n_levels, S), (S,) * n_levels)
    return feats, seg


def _occlusions(source, cfg: SPESConfig, n: int) -> np.ndarray:
    """(n, S) occlusion bits of masks 0..n-1 of a one-level sweep, straight from a mask source."""
    feats, seg = _toy_inputs(cfg)
    inputs = core.prepare(feats, [5, 2], seg, "toy", cfg, _plan(cfg))
    _, occluded = jax.vmap(source, (None, 0))(inputs, jnp.arange(n))
    return np.asarray(occluded)[:, 1:S + 1]


def _plan(cfg: SPESConfig):
    """A one-device plan; prepare() only needs its mesh."""
    from spes_jax.models import ModelConfig, S2TModel

    return core.SweepPlan(module=S2TModel(ModelConfig()), mesh=jax.sharding.Mesh(np.array(jax.devices()[:1]), ("masks",)))


def test_orthogonal_design_is_balanced_and_pairwise_orthogonal():
    cfg = SPESConfig(n_segments=(S,), n_masks=10 ** 6, sampler="orthogonal")
    n_slots = SEGMENT_BUCKET  # prepare() rounds the slot count up to the segment bucket
    n = 1 << design_bits(n_slots)
    o = _occlusions(OrthogonalMasks(), cfg, 2 * n)
    for block in (o[:n], o[n:]):
        np.testing.assert_array_equal(block.sum(0), n // 2)  # every segment occluded in half the block
        pairs = block.T @ block
        off = pairs[~np.eye(S, dtype=bool)]
        np.testing.assert_array_equal(off, n // 4)  # every pair occluded together in a quarter
    assert not np.array_equal(o[:n], o[n:])  # a fresh design per block
    keep = orthogonal_keep(jax.random.PRNGKey(0), jnp.int32(0), jnp.int32(3), n_slots)
    assert float(keep[0]) == 1.0  # padding slot never occluded


def test_orthogonal_masks_have_the_reference_distribution_per_mask():
    """Each mask's bits are independent fair coins: over many blocks, every segment's and every
    pair's occlusion frequency, for a fixed row of the block, matches p = 0.5 and p^2."""
    n = 1 << design_bits(SEGMENT_BUCKET)
    o = _bits("orthogonal", np.arange(400) * n + 5)  # row 5 of 400 blocks
    assert abs(o.mean() - 0.5) < 0.03
    pair = (o[:, :, None] * o[:, None, :]).mean(0)[~np.eye(S, dtype=bool)]
    assert abs(pair.mean() - 0.25) < 0.02


def _bits(sampler: str, index: np.ndarray) -> np.ndarray:
    """(len(index), S) occlusion bits of masks ``index`` of level 0, from the samplers' pure functions."""
    key = jax.random.PRNGKey(7)
    if sampler == "orthogonal":
        keep = jax.vmap(orthogonal_keep, (None, None, 0, None))(key, 0, jnp.asarray(index), SEGMENT_BUCKET)
    else:
        keep = jax.vmap(segment_keep, (None, None, 0, None, None))(key, 0, jnp.asarray(index), SEGMENT_BUCKET, 0.5)
    return 1.0 - np.asarray(keep)[:, 1:S + 1]


def _estimate(sampler: str, n: int, score) -> np.ndarray:
    o = _bits(sampler, np.arange(n))
    r = score(o)[:, None]
    num, den = segment_sums(jnp.asarray(o), jnp.zeros(n, jnp.int32), jnp.asarray(r), 1)
    return np.asarray(ratio(num[0, :, 0], den[0]))


def test_both_samplers_estimate_the_same_conditional_means():
    """Eq. 3 per segment is E[r | segment occluded] under independent fair bits. For an additive score
    the orthogonal design is exact after full blocks (the reference sampler is not); with an
    interaction both converge to the exact value."""
    w = np.random.default_rng(0).normal(size=S)
    additive = lambda o: o @ w
    exact_add = w + (w.sum() - w) / 2
    n = 1 << design_bits(SEGMENT_BUCKET)
    np.testing.assert_allclose(_estimate("orthogonal", 2 * n, additive), exact_add, atol=1e-4)
    assert np.abs(_estimate("reference", 2 * n, additive) - exact_add).max() > 1e-2

    interacting = lambda o: o @ w + 3.0 * o[:, 0] * o[:, 1]
    exact = exact_add + 3.0 / 4
    exact[:2] += 3.0 / 4
    for sampler in ("orthogonal", "reference"):
        err = np.abs(_estimate(sampler, 64 * n, interacting) - exact)
        assert err.max() < 0.15, (sampler, err.max())


def test_until_r_stops_early_and_reports_what_it_used(tiny_model, capsys):
    feats = synthetic_features(0.6, seed=3)
    cfg = SPESConfig.asr(n_segments=(40, 60), n_masks=1024, n_token_masks=256, batch_size=32, token_batch_size=64,
                         until_r=0.3)
    before = core.trace_counts()
    early = explain(tiny_model, feats, cfg, targets=[[5, 6, 7, 2]], ids=["a"])
    assert early.n_masks < 1024 and early.n_token_masks <= 256
    est = early.meta["estimated_r"]
    assert np.mean(est["spectrogram"]) >= 0.3 and len(est["spectrogram"]) == 4
    counts = core.trace_counts()
    explain(tiny_model, synthetic_features(0.62, seed=4), cfg, targets=[[5, 6, 7, 2]], ids=["b"])
    assert core.trace_counts() == counts  # same bucket: nothing retraced, split_half_r included
    assert counts.get("split_half_r", 0) - before.get("split_half_r", 0) <= 1

    full = explain(tiny_model, feats, cfg.replace(until_r=0.999), targets=[[5, 6, 7, 2]], ids=["a"])
    assert full.n_masks == 1024 and full.n_token_masks == 256
    assert np.mean(full.meta["estimated_r"]["spectrogram"]) > np.mean(est["spectrogram"])  # grows with masks

    # What explain prints: where each part stopped, and whether it reached the goal.
    from spes_jax.commands import _until_r_note

    _until_r_note(early, cfg)
    _until_r_note(full, cfg.replace(until_r=0.999))
    early_note, full_note = capsys.readouterr().err.splitlines()
    assert early_note.startswith(f"spes-jax: note: a: --until-r 0.3: spectrogram {early.n_masks} of 1024 masks, r ")
    assert "not reached" not in early_note and "raise --masks" not in early_note
    assert "spectrogram 1024 of 1024 masks" in full_note and full_note.endswith("for maps that close to their limit")
    assert "not reached" in full_note


def test_sampler_options_are_checked():
    with pytest.raises(SpesError, match="p_spec = 0.5"):
        SPESConfig(sampler="orthogonal", p_spec=0.4)
    with pytest.raises(SpesError, match="p_spec = 0.5"):
        SPESConfig().bubble_noise().replace(sampler="orthogonal")
    with pytest.raises(SpesError, match="sampler"):
        SPESConfig(sampler="sobol")
    with pytest.raises(SpesError, match="until_r"):
        SPESConfig(until_r=1.0)
    from spes_jax.commands import sweep_config

    args = argparse.Namespace(masks=600, token_masks=60, seed=1, precision="float32", batch_size=16,
                              sampler="orthogonal", until_r=0.9)
    cfg = sweep_config(args, "st")
    assert (cfg.sampler, cfg.until_r, cfg.threshold_duration) == ("orthogonal", 0.9, 500)
    assert SPESConfig.from_json(cfg.to_json()) == cfg
