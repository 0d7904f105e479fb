"""The same map on one and on four devices, for each sweep kind: run by ``support.on_four_devices`` in a
fresh interpreter with four simulated CPU devices (JAX fixes its device count at start-up).

    python tests/four_devices.py KIND MODEL_DIR     # KIND: spes, contrastive or encoder; prints OK

Each check also asserts that every device held only its own row of the sums (the sharded state) and
that each device evaluated a quarter of a step's masks.
"""

import sys

import jax
import numpy as np

from spes_jax import SPESConfig, core, explain, explain_contrastive, explain_encoder, load_model
from spes_jax.core import contrastive_sweep, encoder_sweep
from spes_jax.explainer import compute_params
from spes_jax.speech_model import FairseqModel
from spes_jax.text import Dictionary, Tokenizer
from support import synthetic_features

TOKENS = [5, 9, 11, 2]


def _close(one: np.ndarray, four: np.ndarray) -> None:
    np.testing.assert_allclose(one, four, rtol=1e-5, atol=1e-5 * np.abs(one).max())
    assert np.abs(one).max() > 0


def _one_row_per_device(*sums) -> None:
    for s in sums:
        assert len(s.addressable_shards) == 4 and {x.data.shape[0] for x in s.addressable_shards} == {1}


def spes(model, feats: np.ndarray) -> None:
    cfg = SPESConfig.asr(n_segments=(30, 60, 90), n_masks=192, n_token_masks=64, batch_size=32, token_batch_size=32)
    one = explain(model, feats, cfg, targets=[TOKENS], devices=jax.devices()[:1])
    assert core.local_batch_shapes() == {"spectrogram_step": (32, 128, 80), "prefix_step": (32, 16)}
    four = explain(model, feats, cfg, targets=[TOKENS])
    assert core.local_batch_shapes() == {"spectrogram_step": (8, 128, 80), "prefix_step": (8, 16)}
    plan = core.make_plan(model.module, cfg)
    state = core.init(compute_params(model, plan),
                      core.prepare(feats, TOKENS, core.segment(feats, cfg), "u", cfg, plan), plan=plan)
    state = core.spectrogram_step(state, np.int32(0), plan=plan)
    _one_row_per_device(state.spectrogram.num, state.prefix.num)
    _close(one.spectrogram_saliency, four.spectrogram_saliency)
    _close(one.prefix_saliency, four.prefix_saliency)


def contrastive(model, feats: np.ndarray) -> None:
    # Contrastive word spans need word-start pieces: the same weights with a "▁w<i>" dictionary.
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [f"\u2581w{i}" for i in range(len(model.dictionary) - 4)]
    model = FairseqModel(model.cfg, model.params, Tokenizer(Dictionary(symbols), None))
    cfg = SPESConfig.asr(n_segments=(20, 30), n_masks=64, n_token_masks=32, batch_size=16, token_batch_size=16)
    target, foil = [35, 25, 35, 2], [35, 35, 16, 35, 2]
    one = explain_contrastive(model, feats, target, foil, cfg, devices=jax.devices()[:1])
    four = explain_contrastive(model, feats, target, foil, cfg)
    plan = contrastive_sweep.make_plan(model.module, cfg)
    inputs = contrastive_sweep.prepare(feats, target, foil, (1, 1, 2), core.segment(feats, cfg), "u", cfg, plan,
                                       np.ones(len(model.dictionary), bool))
    state = contrastive_sweep.spectrogram_step(contrastive_sweep.init(compute_params(model, plan), inputs, plan=plan),
                                               np.int32(0), plan=plan)
    _one_row_per_device(state.spectrogram.num, state.prefix.num)
    _close(one.spectrogram_saliency, four.spectrogram_saliency)
    _close(one.prefix_saliency, four.prefix_saliency)
    assert abs(one.contrastive["p_orig"] - four.contrastive["p_orig"]) <= 1e-6 * one.contrastive["p_orig"]


def encoder(model, feats: np.ndarray) -> None:
    def run(devices):
        return explain_encoder(model, feats, n_masks=80, batch_size=32, targets=[TOKENS], devices=devices).saliency

    one = run(jax.devices()[:1])
    assert encoder_sweep.local_batch_shapes() == {"encoder_step": (32, 32)}
    four = run(None)
    assert encoder_sweep.local_batch_shapes() == {"encoder_step": (8, 32)}
    plan = encoder_sweep.make_plan(model.module, batch=32)
    inputs = encoder_sweep.prepare(feats, TOKENS, "u", seed=0, p=0.5, n_masks=80, plan=plan)
    state = encoder_sweep.step(encoder_sweep.init(compute_params(model, plan), inputs, plan=plan), np.int32(0),
                               plan=plan)
    _one_row_per_device(state.encoder.num)
    _close(one, four)


if __name__ == "__main__":
    assert jax.device_count() == 4, jax.devices()
    kind, model_dir = sys.argv[1:]
    {"spes": spes, "contrastive": contrastive, "encoder": encoder}[kind](load_model(model_dir),
                                                                        synthetic_features(0.8, seed=4))
    print("OK")
