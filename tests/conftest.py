import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.environ.get("SPES_FBK_FIXTURES", os.path.join(ROOT, "..", "shared", "fixtures", "fbk"))
VARIANTS = ("conformer_tiny", "conformer_tiny_ctccompress_avg", "s2t_transformer_fbk_tiny")


def fixture_path(*parts: str) -> str:
    path = os.path.join(FIXTURES, *parts)
    if not os.path.exists(path):
        pytest.skip(f"FBK reference fixtures not found at {FIXTURES} (set SPES_FBK_FIXTURES)")
    return path


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """Converts each fixture checkpoint once per session; returns variant -> model directory."""
    from convert import convert_checkpoint

    cache = {}

    def get(variant: str) -> str:
        if variant not in cache:
            out = tmp_path_factory.mktemp("models") / variant
            cache[variant] = convert_checkpoint(fixture_path("model", f"{variant}.pt"), str(out),
                                                config_yaml=fixture_path("model", "config.yaml"))
        return cache[variant]

    return get


@pytest.fixture(scope="session")
def tiny_config():
    from spes_jax.models import ModelConfig

    return ModelConfig(conv_channels=32, encoder_embed_dim=32, encoder_layers=2, encoder_attention_heads=4,
                       conformer_conv_kernel_size=5, decoder_embed_dim=32, decoder_layers=2,
                       decoder_attention_heads=4, decoder_ffn_embed_dim=64, vocab_size=40,
                       ctc_encoder_layer=1, ctc_vocab_size=41)


def reference_batch(ref, names=("input",)):
    """The reference's batch: inputs in ``batch_order`` zero-padded, and their lengths."""
    order = ref["batch_order"]
    inputs = [ref[f"input_{i}"] for i in order]
    T = max(x.shape[0] for x in inputs)
    feats = np.stack([np.pad(x, ((0, T - x.shape[0]), (0, 0))) for x in inputs])
    return order, feats, np.array([x.shape[0] for x in inputs])


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    """A tiny random Conformer with every parameter perturbed (so maps are not trivially flat)."""
    import jax

    from spes_jax.models import init_params
    from spes_jax.pipeline import SpeechToTextModel
    from spes_jax.text import Dictionary, Tokenizer

    params = init_params(tiny_config, seed=3)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [l + 0.2 * jax.random.normal(k, l.shape) if l.ndim == 1 else 3 * l for l, k in zip(leaves, keys)])
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(tiny_config.vocab_size - 4)]
    return SpeechToTextModel(tiny_config, params, Tokenizer(Dictionary(symbols), None))


def synthetic_features(seconds: float, seed: int = 0) -> np.ndarray:
    """CMVN-like features with some time-frequency structure (SLIC needs edges to find)."""
    rng = np.random.default_rng(seed)
    T = int(seconds * 100)
    t = np.arange(T)[:, None]
    c = np.arange(80)[None, :]
    x = np.sin(t / 7.0) * np.cos(c / 5.0) + 0.3 * rng.standard_normal((T, 80))
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32)
