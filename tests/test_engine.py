"""The sweep engine (core/engine.py) with a probe of its own, and --until-r for every sweep kind."""

import dataclasses
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import synthetic_features

from spes_jax import SPESConfig, explain_contrastive, explain_encoder
from spes_jax.cli import build_parser
from spes_jax.core import engine
from spes_jax.speech_model import FairseqModel
from spes_jax.text import Dictionary, Tokenizer


# ------------------------------------------------------------------------------------ a fourth kind

@flax.struct.dataclass
class LinearInputs:
    """x: (n,) the values to occlude; w: (R, n) read-out weights; key: PRNG key; n_masks: () int32."""

    x: jax.Array
    w: jax.Array
    key: jax.Array
    n_masks: jax.Array


def linear_keep(key: jax.Array, g: jax.Array, n: int, p: float) -> jax.Array:
    """Keep bits (n,) of mask g: position j occluded with probability p."""
    return (jax.random.uniform(jax.random.fold_in(key, g), (n,)) >= p).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    """Occludes positions of x; row k's score is how much the read-out w_k . x dropped."""

    p: float = 0.5

    kind: ClassVar[str] = "linear"
    parts: ClassVar[tuple[str, ...]] = ("positions",)

    def setup(self, module, params, inputs):
        return {"clean": inputs.w @ inputs.x}

    def n_masks(self, part, inputs):
        return inputs.n_masks

    def perturb(self, part, inputs, ctx, g):
        keep = linear_keep(inputs.key, g, inputs.x.shape[0], self.p)
        return inputs.x * keep, 1.0 - keep, g

    def score(self, part, module, params, inputs, ctx, x):
        return ctx["clean"] - inputs.w @ x

    def rows(self, part, inputs, ctx):
        R, n = inputs.w.shape
        return engine.Positions(R, n, None, jnp.ones((1, n)), jnp.ones(R, bool))

    def outputs(self, inputs, ctx):
        return {"clean": ctx["clean"]}


def _linear_inputs(plan, seed: int, n_masks: int) -> LinearInputs:
    rng = np.random.default_rng(seed)
    inputs = LinearInputs(rng.standard_normal(24).astype(np.float32), rng.standard_normal((3, 24)).astype(np.float32),
                          jax.random.PRNGKey(seed), np.int32(n_masks))
    return jax.device_put(inputs, plan.replicated)


def _direct_map(inputs: LinearInputs, p: float, n_masks: int) -> np.ndarray:
    """Eq. 3 by hand over the same masks, in float64."""
    x, w = np.asarray(inputs.x, np.float64), np.asarray(inputs.w, np.float64)
    num, den = np.zeros(w.shape), np.zeros(x.shape)
    for g in range(n_masks):
        occluded = 1.0 - np.asarray(linear_keep(inputs.key, g, x.shape[0], p), np.float64)
        num += np.outer(w @ (x * occluded), occluded)
        den += occluded
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def test_a_new_probe_runs_through_the_engine(tiny_model):
    """37 masks in steps of 16 (the last step mostly padding) against the by-hand loop; a second
    utterance with another mask count compiles nothing."""
    plan = engine.make_plan(tiny_model.module, LinearProbe(0.4), (16,))  # the module is unused by this probe
    inputs = _linear_inputs(plan, seed=0, n_masks=37)
    result = engine.run(engine.init({}, inputs, plan=plan), plan, (37,))
    assert result.n_masks == {"positions": 37} and result.r is None and int(result.nonfinite) == 0
    np.testing.assert_allclose(result.positions, _direct_map(inputs, 0.4, 37), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.clean, inputs.w @ inputs.x, rtol=1e-6)
    counts = engine.trace_counts("linear")
    assert counts == {"init": 1, "positions_step": 1, "finalize": 1}
    assert engine.local_batch_shapes("linear") == {"positions_step": (16, 24)}
    engine.run(engine.init({}, _linear_inputs(plan, seed=1, n_masks=50), plan=plan), plan, (50,))
    assert engine.trace_counts("linear") == counts


def test_until_r_stops_a_new_probe(tiny_model):
    plan = engine.make_plan(tiny_model.module, LinearProbe(0.5), (32,))
    inputs = _linear_inputs(plan, seed=2, n_masks=4096)
    early = engine.run(engine.init({}, inputs, plan=plan), plan, (4096,), until_r=0.9)
    assert early.n_masks["positions"] < 4096 and early.r["positions"].shape == (3,)
    assert float(np.mean(early.r["positions"])) >= 0.9
    np.testing.assert_allclose(early.positions, _direct_map(inputs, 0.5, early.n_masks["positions"]),
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------ --until-r per kind

WORDS = ["<s>", "<pad>", "</s>", "<unk>"] + [f"\u2581w{i}" for i in range(36)]


def test_until_r_stops_a_contrastive_sweep(tiny_model, tiny_config):
    model = FairseqModel(tiny_config, tiny_model.params, Tokenizer(Dictionary(WORDS), None))
    cfg = SPESConfig.asr(n_segments=(20, 30), n_masks=1024, n_token_masks=256, batch_size=32, token_batch_size=32,
                         until_r=0.3)
    exp = explain_contrastive(model, synthetic_features(0.6, seed=1), [5, 6, 7, 2], [5, 9, 7, 2], cfg)
    assert exp.n_masks < 1024 and exp.n_token_masks <= 256
    assert exp.meta["until_r"] == 0.3 and exp.meta["estimated_r"]["spectrogram"] >= 0.3
    assert exp.spectrogram_saliency.shape == (1, 60, 80) and np.abs(exp.spectrogram_saliency).max() > 0


def test_until_r_stops_an_encoder_sweep(tiny_model):
    feats = synthetic_features(0.8, seed=4)
    early = explain_encoder(tiny_model, feats, n_masks=2048, batch_size=32, targets=[[5, 9, 11, 2]], until_r=0.5)
    assert early.n_masks < 2048 and early.until_r == 0.5 and len(early.estimated_r) == 4
    assert np.mean(early.estimated_r) >= 0.5 and early.saliency.shape == (4, 20)
    full = explain_encoder(tiny_model, feats, n_masks=64, batch_size=32, targets=[[5, 9, 11, 2]])
    assert full.n_masks == 64 and full.estimated_r is None


def test_every_explain_command_takes_until_r():
    parser = build_parser()
    for command in (["explain", "a.wav"], ["explain-corpus", "m.tsv"], ["explain-contrastive", "a.wav"]):
        assert parser.parse_args(command + ["--out", "x", "--until-r", "0.9"]).until_r == 0.9


@pytest.mark.parametrize("until_r", [0.0, 1.0])
def test_encoder_until_r_is_checked(tiny_model, until_r):
    from spes_jax import SpesError

    with pytest.raises(SpesError, match="until_r"):
        explain_encoder(tiny_model, synthetic_features(0.5, seed=1), n_masks=8, until_r=until_r, targets=[[5, 2]])
