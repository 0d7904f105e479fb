"""Cross-attention weights, saliency pooling to encoder frames, and per-token correlations."""

import dataclasses

import jax
import numpy as np
import pytest

from support import synthetic_features
from spes_jax.analysis.cross_attention import correlations, encoder_stride, pearson, pool_saliency
from spes_jax.errors import SpesError
from spes_jax.speech_model import FairseqModel, pad_batch


def test_cross_attention_weights(tiny_model):
    feats = synthetic_features(0.5)
    tokens = [5, 9, 7, 2]
    ca = tiny_model.cross_attention(feats, tokens)
    c = tiny_model.cfg
    assert ca.shape == (c.decoder_layers, c.decoder_attention_heads, 4, -(-feats.shape[0] // 4))
    np.testing.assert_allclose(ca.sum(-1), 1.0, atol=1e-5)
    # recording the weights changes neither the default outputs nor their numerics
    batch, lengths = pad_batch([feats])
    prev = np.array([[2, 5, 9, 7]], np.int32)

    @jax.jit
    def both(params):
        plain, _ = tiny_model.module.apply({"params": params}, batch, lengths, prev)
        (sown, _), state = tiny_model.module.apply({"params": params}, batch, lengths, prev,
                                                   mutable=["intermediates"])
        return plain, sown, state["intermediates"]["decoder"]["layers_1"]["encoder_attn"]["attention_weights"][0][0]

    plain, sown, padded = both(tiny_model.params)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(sown))
    # padding the input (a batch bucket) leaves the weights on the valid frames unchanged
    np.testing.assert_allclose(np.asarray(padded)[..., : ca.shape[-1]], ca[1], atol=5e-5)
    assert np.asarray(padded)[..., ca.shape[-1]:].max() < 1e-6
    with pytest.raises(SpesError, match="end with </s>"):
        tiny_model.cross_attention(feats, [5, 9])


def test_pool_saliency():
    spec = np.arange(2 * 10 * 3, dtype=np.float32).reshape(2, 10, 3)
    out = pool_saliency(spec, 4, "max", "max")
    assert out.shape == (2, 3)
    np.testing.assert_array_equal(out[0], [spec[0, :4].max(), spec[0, 4:8].max(), spec[0, 8:].max()])
    out = pool_saliency(spec, 4, "mean", "mean")
    np.testing.assert_allclose(out[1], [spec[1, :4].mean(), spec[1, 4:8].mean(), spec[1, 8:].mean()])
    out = pool_saliency(spec, 4, "max", "mean")
    np.testing.assert_allclose(out[0, 2], spec[0, 8:].mean(1).max())
    with pytest.raises(SpesError, match="'max' or 'mean'"):
        pool_saliency(spec, 4, "median")


def test_correlations(tiny_model):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 20)), rng.standard_normal((3, 20))
    np.testing.assert_allclose(pearson(a, b), [np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)], atol=1e-12)
    ca = rng.random((2, 4, 5, 12))
    c = correlations(ca, ca.mean((0, 1)))
    np.testing.assert_allclose(c.average, 1.0, atol=1e-12)
    assert c.per_head.shape == (2, 4, 5) and c.per_layer.shape == (2, 5)
    assert np.isnan(correlations(ca, np.ones((5, 12))).average).all()  # constant saliency: undefined
    assert c.summary()["tokens"] == 5
    with pytest.raises(SpesError, match="differ"):
        correlations(ca, np.ones((5, 11)))
    assert encoder_stride(tiny_model) == 4
    compressed = dataclasses.replace(tiny_model.cfg, ctc_compress_strategy="avg")
    with pytest.raises(SpesError, match="CTC-compressed"):
        encoder_stride(FairseqModel(compressed, tiny_model.params, tiny_model.tokenizer))
