"""Session fixtures: converted reference checkpoints and a tiny random model (helpers: support.py)."""

import pytest

from support import fixture_path


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """Converts each fixture checkpoint once per session; returns variant -> model directory."""
    from spes_jax.convert import convert_checkpoint

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


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    """A tiny random Conformer with every parameter perturbed (so maps are not trivially flat)."""
    import jax

    from spes_jax.models import init_params
    from spes_jax.speech_model import FairseqModel
    from spes_jax.text import Dictionary, Tokenizer

    params = init_params(tiny_config, seed=3)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [l + 0.2 * jax.random.normal(k, l.shape) if l.ndim == 1 else 3 * l for l, k in zip(leaves, keys)])
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(tiny_config.vocab_size - 4)]
    return FairseqModel(tiny_config, params, Tokenizer(Dictionary(symbols), None))
