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
