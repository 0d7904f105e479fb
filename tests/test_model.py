"""Model properties that need no reference: batch invariance, CTC compression rules, no retracing."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spes_jax import SearchConfig, beam_search
from spes_jax.models import S2TModel, init_params
from spes_jax.models.ctc import compress


def _perturb(params, seed=1):
    """Random init leaves LayerNorm/BatchNorm at identity; shake them so tests see every parameter."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [l + 0.1 * jax.random.normal(k, l.shape) if l.ndim == 1 else l for l, k in zip(leaves, keys)])


@pytest.mark.parametrize("variant", [dict(), dict(ctc_compress_strategy="avg"),
                                     pytest.param(dict(ctc_compress_strategy="weighted"), marks=pytest.mark.slow),
                                     pytest.param(dict(ctc_compress_strategy="fixed"), marks=pytest.mark.slow),
                                     dict(arch="s2t_transformer_fbk")])
def test_batch_of_three_equals_each_alone(tiny_config, variant):
    cfg = tiny_config.replace(**variant)
    model = S2TModel(cfg)
    params = _perturb(init_params(cfg))
    rng = np.random.default_rng(0)
    lengths = [57, 140, 96]
    feats = [rng.standard_normal((n, 80)).astype(np.float32) for n in lengths]
    prev = [np.concatenate([[2], rng.integers(4, 40, k - 1)]) for k in (5, 9, 3)]
    T, L = 160, 9  # padded beyond every item, like a bucketed batch
    xb = np.stack([np.pad(f, ((0, T - len(f)), (0, 0))) for f in feats])
    pb = np.stack([np.pad(p, (0, L - len(p)), constant_values=1) for p in prev])
    fwd = jax.jit(model.apply)
    logits_b, enc_b = fwd({"params": params}, xb, np.array(lengths), pb)
    for i in range(3):
        logits_1, enc_1 = fwd({"params": params}, feats[i][None], np.array([lengths[i]]), prev[i][None])
        n = int(enc_1.valid.sum())
        assert int(enc_b.valid[i].sum()) == n
        np.testing.assert_allclose(enc_b.out[i, :n], enc_1.out[0, :n], atol=2e-5)
        np.testing.assert_allclose(logits_b[i, : len(prev[i])], logits_1[0], atol=2e-5)
    if variant.get("ctc_compress_strategy") not in (None, "avg"):
        return  # beam search is checked on the plain and the compressed conformer
    search = SearchConfig(beam=3, max_len_b=12)
    res_b = beam_search(model, params, xb, np.array(lengths), cfg=search, max_len=12)
    for i in range(3):  # alone in its batch (padding to the bucket is covered by the forward above)
        res_1 = beam_search(model, params, xb[i:i + 1], np.array([lengths[i]]), cfg=search, max_len=12)
        np.testing.assert_array_equal(res_b.tokens[i], res_1.tokens[0])
        np.testing.assert_allclose(res_b.scores[i], res_1.scores[0], atol=2e-5)


def _reference_compress(x, logits, n, strategy, ratio=4, max_out=-1):
    """FBK's CtcSupport.average_same_ctc_features for one utterance, written with groupby."""
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    pred = probs[:n].argmax(-1)
    if strategy == "fixed":
        groups = [(None, min(ratio, n - s)) for s in range(0, n, ratio)]
    else:
        groups = [(k, len(list(g))) for k, g in itertools.groupby(pred.tolist())]
        if 0 < max_out < len(groups):
            r = -(-len(groups) // max_out)
            groups = [(None, sum(c for _, c in groups[i:i + r])) for i in range(0, len(groups), r)]
    out, start = [], 0
    for label, count in groups:
        seg = slice(start, start + count)
        if strategy == "weighted":
            w = probs[seg, label]
        elif strategy == "softmax":
            w = np.exp(probs[seg, label])
        else:
            w = np.ones(count)
        out.append((w / w.sum()) @ x[seg])
        start += count
    return np.stack(out)


@pytest.mark.parametrize("strategy,max_out", [("avg", -1), ("avg", 5), ("weighted", -1), ("softmax", -1),
                                              ("fixed", -1)])
def test_ctc_compression_matches_reference_rules(strategy, max_out):
    rng = np.random.default_rng(3)
    B, T, D, V = 2, 30, 6, 4  # a small vocabulary makes runs of equal predictions
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    logits = rng.standard_normal((B, T, V)).astype(np.float32) * 2
    lengths = np.array([30, 21])
    out, n = compress(jnp.asarray(x), jnp.asarray(logits), jnp.asarray(lengths), strategy, 4, max_out)
    for b in range(B):
        ref = _reference_compress(x[b], logits[b], lengths[b], strategy, 4, max_out)
        assert int(n[b]) == len(ref)
        np.testing.assert_allclose(out[b, : len(ref)], ref, atol=1e-5)
        assert np.all(np.asarray(out[b, len(ref):]) == 0)


def test_beam_search_compiles_once_per_bucket(tiny_config):
    model = S2TModel(tiny_config)
    params = init_params(tiny_config)
    rng = np.random.default_rng(1)
    search = SearchConfig(beam=2, max_len_b=6)
    for n in (70, 99, 128):
        x = np.zeros((1, 128, 80), np.float32)
        x[0, :n] = rng.standard_normal((n, 80))
        beam_search(model, params, x, np.array([n]), cfg=search, max_len=6)
        if n == 70:
            compiled = beam_search._cache_size()
    assert beam_search._cache_size() == compiled


def test_model_directory_carries_its_search_defaults(tiny_model, tmp_path):
    """A model trained to answer silence with just </s> ships ``"search": {"min_len": 0}``; every
    decoding path (transcribe, generate, the explainer's hypotheses) must then use it."""
    from spes_jax import explain, SPESConfig
    from spes_jax.models.io import save_model_dir
    from spes_jax.speech_model import load_model
    from spes_jax.text import EOS
    from support import synthetic_features

    # Logits that do not depend on the input and prefer </s>: the decoder's final norm outputs its
    # bias, and the output projection scores </s> highest against it.
    params = jax.tree_util.tree_map(np.asarray, tiny_model.params)
    bias = np.ones(tiny_model.cfg.decoder_embed_dim, np.float32)
    params["decoder"]["layer_norm"] = {"scale": np.zeros_like(bias), "bias": bias}
    kernel = np.array(params["decoder"]["output_projection"]["kernel"])
    kernel[:, EOS] = 10.0
    params["decoder"]["output_projection"]["kernel"] = kernel
    dict_path = tmp_path / "dict.txt"
    dict_path.write_text("".join(f"{s} 1\n" for s in tiny_model.dictionary.symbols[4:]))
    feats = synthetic_features(1.0)

    default = load_model(save_model_dir(tmp_path / "default", tiny_model.cfg, params, str(dict_path), None))
    assert default.search == SearchConfig()
    assert len(default.transcribe(feats).tokens) > 1  # fairseq's min_len=1 forbids </s> first

    model = load_model(save_model_dir(tmp_path / "robust", tiny_model.cfg, params, str(dict_path), None,
                                      search={"min_len": 0, "beam": 3}))
    assert model.search == SearchConfig(beam=3, min_len=0)
    assert model.transcribe(feats).tokens == (EOS,) and model.transcribe(feats).text == ""
    assert model.transcribe(feats, beam=5).tokens == (EOS,)  # a beam given keeps the model's min_len
    assert len(model.decode([feats], SearchConfig())[0][0].tokens) > 1
    exp = explain(model, feats, SPESConfig(n_masks=24, n_token_masks=16, batch_size=8, token_batch_size=8))
    assert exp.tokens == ["</s>"] and exp.spectrogram_saliency.shape == (1, 100, 80)


def test_model_directory_with_a_bad_search_section(tiny_model, tmp_path):
    from spes_jax.errors import SpesError
    from spes_jax.speech_model import load_model
    from support import save_tiny_model

    path = save_tiny_model(tiny_model, tmp_path)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    for bad, message in (({"min_length": 0}, "unknown search option"), ({"beam": "wide"}, "bad search option")):
        (tmp_path / "model" / "config.json").write_text(json.dumps({**config, "search": bad}))
        with pytest.raises(SpesError, match=message):
            load_model(path)


def test_model_directory_input_length_limit(tiny_model, tmp_path):
    """``data.max_seconds`` (the longest input a model handles) is enforced with one clear error."""
    from spes_jax.errors import SpesError
    from spes_jax.models.io import save_model_dir
    from spes_jax.speech_model import load_model
    from support import synthetic_features

    dict_path = tmp_path / "dict.txt"
    dict_path.write_text("".join(f"{s} 1\n" for s in tiny_model.dictionary.symbols[4:]))
    model = load_model(save_model_dir(tmp_path / "m", tiny_model.cfg, tiny_model.params, str(dict_path), None,
                                      data={"max_seconds": 1.0}))
    assert len(model.transcribe(synthetic_features(1.0)).tokens) >= 1
    with pytest.raises(SpesError, match=r"audio is 1\.5 s long; this model handles at most 1 s"):
        model.transcribe(synthetic_features(1.5))
    with pytest.raises(SpesError, match=r"data.max_seconds must be a positive number of seconds, got 'ten'"):
        load_model(save_model_dir(tmp_path / "bad", tiny_model.cfg, tiny_model.params, str(dict_path), None,
                                  data={"max_seconds": "ten"}))


@pytest.mark.parametrize("mask", ["key padding", "causal"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_tiled_attention_is_the_dense_attention(monkeypatch, mask, dtype):
    from spes_jax.models import layers

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 7, 16)), jnp.float32)
    if mask == "causal":
        allowed = jnp.tril(jnp.ones((7, 7), bool))[None, None]
    else:
        allowed = (jnp.arange(7) < jnp.array([[7], [4]]))[:, None, None, :]
    attn = layers.MultiheadAttention(16, 4, dtype)
    params = attn.init(jax.random.PRNGKey(0), x, x, allowed)

    def run():
        return attn.apply(params, x, x, allowed)

    monkeypatch.setattr(layers, "_TILE_BYTES", 1 << 40)
    dense = run()
    monkeypatch.setattr(layers, "_TILE_BYTES", 3 * 7 * 4)  # blocks of 3 queries: 3, 3 and 1 + 2 padding
    assert layers._tiled(7, 7)
    tiled = run()
    np.testing.assert_allclose(tiled, dense, rtol=0, atol=1e-5 if dtype == jnp.float32 else 0.05)
    # Asked for the attention weights (cross-attention analysis), the dense form runs and records them.
    _, state = attn.apply(params, x, x, allowed, mutable=["intermediates"])
    assert state["intermediates"]["attention_weights"][0].shape == (2, 4, 7, 7)
