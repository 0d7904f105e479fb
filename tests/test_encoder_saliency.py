"""Encoder-output saliency (core/encoder_sweep.py, spes_jax.explain_encoder): Eq. 3 against a direct
loop, compilation reuse, 1 vs 4 devices, precision and bad input."""

import dataclasses

import jax
import numpy as np
import pytest

from spes_jax import SpesError, explain_encoder
from spes_jax.core import encoder_sweep
from spes_jax.core.perturbation import utterance_key
from spes_jax.models import S2TModel
from support import on_four_devices, save_tiny_model, synthetic_features

TOKENS = [5, 9, 11, 2]


def _direct_map(model, feats, tokens, utt_id, seed, p, n_masks):
    """Eq. 3 by hand: the masks re-derived from their definition (frame j of mask i occluded when
    U(fold_in(fold_in(fold_in(utterance key, tag), i), j)) < p), the unpadded encoder output
    multiplied by them, the model's own cross_kv and decoder, KL in float64, a loop over masks."""
    apply = lambda *a, **k: model.module.apply({"params": model.params}, *a, **k)
    enc = jax.jit(lambda x: apply(x[None], np.array([x.shape[0]]), method=S2TModel.encode))(feats)
    # The valid frames (a prefix: all of them unless CTC compression shortened the sequence).
    n_frames, n_out = int(enc.valid.sum()), enc.out.shape[1]
    assert bool(enc.valid[0, :n_frames].all())
    prev = np.array([[2] + tokens[:-1]], np.int32)
    logits_of = jax.jit(lambda h: apply(prev, apply(enc.replace(out=h), method=S2TModel.cross_kv), enc.valid,
                                        method=S2TModel.decode)[0])

    def log_softmax(x):
        m = x.max(-1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))

    log_p = log_softmax(np.asarray(logits_of(enc.out), np.float64))
    tag = jax.random.fold_in(utterance_key(seed, utt_id), encoder_sweep.ENCODER_LEVEL)
    num, den = np.zeros((len(tokens), n_frames)), np.zeros(n_frames)
    uniform = jax.jit(jax.vmap(lambda k, j: jax.random.uniform(jax.random.fold_in(k, j)), (None, 0)))
    for i in range(n_masks):
        keep = (np.asarray(uniform(jax.random.fold_in(tag, i), np.arange(n_out))) >= p).astype(np.float32)
        log_q = log_softmax(np.asarray(logits_of(enc.out * keep[None, :, None]), np.float64))
        r = (np.exp(log_p) * (log_p - log_q)).sum(-1)  # KL per token, (K,)
        num += np.outer(r, 1.0 - keep[:n_frames])
        den += 1.0 - keep[:n_frames]
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def test_eq3_matches_a_direct_loop_over_masks(tiny_model):
    """12 masks in steps of 8 (the second step half padding), against the by-hand loop."""
    feats = synthetic_features(0.8, seed=4)
    got = explain_encoder(tiny_model, feats, n_masks=12, p=0.4, seed=3, batch_size=8, ids=["u7"], targets=[TOKENS])
    want = _direct_map(tiny_model, feats, TOKENS, "u7", seed=3, p=0.4, n_masks=12)
    assert got.saliency.shape == want.shape == (4, 20)
    assert got.tokens == ["w1", "w5", "w7", "</s>"] and got.token_ids == tuple(TOKENS)
    assert np.abs(want).max() > 0 and (want == 0).sum() < want.size  # a real map, not all zero
    np.testing.assert_allclose(got.saliency, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.slow
def test_ctc_compressed_encoder(tiny_model):
    """With CTC compression the frames are the compressed ones, as the cross-attention's."""
    from spes_jax.speech_model import FairseqModel

    cfg = dataclasses.replace(tiny_model.cfg, ctc_compress_strategy="avg")
    model = FairseqModel(cfg, tiny_model.params, tiny_model.tokenizer)
    feats = synthetic_features(0.8, seed=4)
    got = explain_encoder(model, feats, n_masks=12, p=0.4, seed=3, batch_size=8, ids=["u7"], targets=[TOKENS])
    want = _direct_map(model, feats, TOKENS, "u7", seed=3, p=0.4, n_masks=12)
    assert got.saliency.shape == want.shape == model.cross_attention(feats, TOKENS).shape[2:]
    assert want.shape[1] < 20  # compressed below the 20 subsampled frames
    np.testing.assert_allclose(got.saliency, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_second_utterance_of_a_bucket_compiles_nothing(tiny_model):
    """Same plan as the test above (batch 8): other lengths of the 128-frame bucket, other ids, other
    seeds and mask counts trace nothing new."""
    explain_encoder(tiny_model, synthetic_features(0.75, seed=1), n_masks=16, batch_size=8, targets=[TOKENS])
    before = encoder_sweep.trace_counts()
    out = explain_encoder(tiny_model, [synthetic_features(0.9, seed=2), synthetic_features(0.7, seed=3)],
                          n_masks=24, p=0.3, seed=5, batch_size=8, targets=[[5, 6, 2], [7, 2]])
    assert encoder_sweep.trace_counts() == before
    assert [o.saliency.shape for o in out] == [(3, 23), (2, 18)]
    assert out[0].id == "0" and out[1].id == "1"


@pytest.mark.slow
def test_bfloat16_close_to_float32(tiny_model):
    feats = synthetic_features(0.6, seed=6)
    maps = [explain_encoder(tiny_model, feats, n_masks=64, precision=prec, targets=[TOKENS]).saliency
            for prec in ("float32", "bfloat16")]
    r = np.corrcoef(maps[0].ravel(), maps[1].ravel())[0, 1]
    assert r > 0.95, r


@pytest.mark.slow  # the engine's 1-vs-4-device test of the SPES kind runs by default (tests/test_spes.py)
def test_same_map_on_one_and_four_devices(tiny_model, tmp_path):
    on_four_devices("encoder", save_tiny_model(tiny_model, tmp_path))


@pytest.mark.parametrize("kwargs, message", [
    ({"n_masks": 0}, "n_masks must be a positive integer"),
    ({"n_masks": 2.5}, "n_masks must be a positive integer"),
    ({"p": 0.0}, r"p \(the occlusion probability"),
    ({"p": 1.0}, r"p \(the occlusion probability"),
    ({"scorer": "l2"}, "scorer must be one of"),
    ({"precision": "float16"}, "precision must be"),
    ({"batch_size": 0}, "batch size must be >= 1"),
    ({"targets": [[5, 9]]}, r"0: target: token ids must end with </s> \(id 2\)"),
    ({"targets": [[5, 99, 2]]}, r"0: target: token id 99 is outside the model's vocabulary \(0..39\)"),
    ({"targets": [[5, 2], [6, 2]]}, "2 targets for 1 input"),
    ({"ids": ["a", "b"]}, "one unique utterance id per input"),
])
def test_bad_input(tiny_model, kwargs, message):
    with pytest.raises(SpesError, match=message):
        explain_encoder(tiny_model, synthetic_features(0.5), **{"targets": [TOKENS], **kwargs})


def test_bad_audio(tiny_model, tmp_path):
    with pytest.raises(SpesError, match="too short"):
        explain_encoder(tiny_model, synthetic_features(0.1), targets=[TOKENS])
    with pytest.raises(SpesError, match="nothing to explain"):
        explain_encoder(tiny_model, [])
    with pytest.raises(SpesError, match="missing.wav"):
        explain_encoder(tiny_model, str(tmp_path / "missing.wav"), targets=[TOKENS])


def test_cli_writes_a_file_that_loads_back_as_the_api_result(tiny_model, tmp_path):
    import soundfile as sf

    from spes_jax import load_encoder_saliency, load_explanations
    from spes_jax.cli import main
    from spes_jax.provenance import parameters_sha256

    wav = tmp_path / "u.wav"
    sf.write(wav, (0.1 * np.random.default_rng(3).standard_normal(8000)).astype(np.float32), 16000)
    out = tmp_path / "e.h5"
    args = ["--no-compile-cache", "explain-encoder", str(wav), "--model", save_tiny_model(tiny_model, tmp_path),
            "--masks", "40", "--batch-size", "8", "--targets", "w1 w5", "--quiet", "--out", str(out)]
    assert main(args) == 0
    items, attrs = load_encoder_saliency(out)
    api = explain_encoder(tiny_model, str(wav), n_masks=40, batch_size=8, targets=["w1 w5"])
    got = items["u"]
    np.testing.assert_array_equal(got.saliency, api.saliency)
    assert (got.tokens, got.token_ids, got.n_masks, got.p, got.scorer) == (api.tokens, api.token_ids, 40, 0.5, "kl")
    assert got.meta["audio"] == str(wav) and len(got.meta["audio_sha256"]) == 64
    assert attrs["kind"] == "encoder_saliency" and attrs["model_sha256"] == parameters_sha256(tiny_model.params)
    assert attrs["encoder_stride"] == 4 and attrs["task"] == "asr"
    with pytest.raises(SpesError, match="an encoder-output saliency file .spes-jax explain-encoder., not SPES explanations"):
        load_explanations(out)
    assert main(args) == 2  # an existing --out needs --overwrite
