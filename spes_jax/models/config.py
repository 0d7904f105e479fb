"""Model hyper-parameters, read from a fairseq checkpoint's ``cfg.model`` and stored in config.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import SpesError
from ..text import EOS, PAD

# The reference's models (``register_model`` names): two encoders, one decoder.
ARCHS = ("conformer", "conformer_joint_ctc", "s2t_transformer_fbk", "s2t_transformer")
CONFORMER_ARCHS = ("conformer", "conformer_joint_ctc")
CTC_COMPRESS = ("none", "avg", "weighted", "softmax", "fixed")
ACTIVATIONS = ("relu", "gelu", "swish", "silu", "tanh", "linear")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that shapes the network. Defaults are the FBK ``conformer`` arch defaults."""

    arch: str = "conformer"  # the reference model (register_model name); --arch itself: source.arch
    input_feat_per_channel: int = 80
    input_channels: int = 1
    conv_channels: int = 1024
    conv_kernel_sizes: tuple[int, ...] = (5, 5)
    encoder_embed_dim: int = 512
    encoder_layers: int = 12
    encoder_attention_heads: int = 8
    encoder_ffn_embed_dim: int = 2048  # s2t_transformer_fbk FFN; unused by the conformer
    encoder_normalize_before: bool = True
    feed_forward_expansion_factor: int = 4  # conformer FFN inner dim = factor * d
    conv_expansion_factor: int = 2
    conformer_conv_kernel_size: int = 31
    conformer_half_step_residual: bool = True
    no_scale_embedding: bool = False
    ctc_encoder_layer: int = 0  # 1-based; 0 = no CTC head
    ctc_vocab_size: int = 0
    ctc_compress_strategy: str = "none"
    ctc_compress_fixed_ratio: int = 4
    ctc_compress_max_out_size: int = -1
    auxiliary_ctc_vocab_size: int = 0  # conformer_joint_ctc's CTC decoder on the encoder output; 0 = none
    decoder_embed_dim: int = 512
    decoder_layers: int = 6
    decoder_attention_heads: int = 8
    decoder_ffn_embed_dim: int = 2048
    decoder_normalize_before: bool = True
    decoder_learned_pos: bool = False
    decoder_activation_fn: str = "relu"
    share_decoder_input_output_embed: bool = False
    vocab_size: int = 10000
    pad: int = PAD
    eos: int = EOS
    max_source_positions: int = 6000
    max_target_positions: int = 1024

    def __post_init__(self):
        def check(cond, msg):
            if not cond:
                raise SpesError(f"invalid model config: {msg}")

        check(self.arch in ARCHS, f"arch {self.arch!r} is not one of {ARCHS}")
        check(self.input_channels == 1, "only input_channels == 1 is supported")
        check(self.encoder_embed_dim % self.encoder_attention_heads == 0,
              "encoder_embed_dim must be divisible by encoder_attention_heads")
        check(self.decoder_embed_dim % self.decoder_attention_heads == 0,
              "decoder_embed_dim must be divisible by decoder_attention_heads")
        check(0 <= self.ctc_encoder_layer <= self.encoder_layers, "ctc_encoder_layer out of range")
        check(self.ctc_encoder_layer == 0 or self.ctc_vocab_size > 0, "CTC head needs ctc_vocab_size")
        check(self.ctc_compress_strategy in CTC_COMPRESS,
              f"ctc_compress_strategy {self.ctc_compress_strategy!r} is not one of {CTC_COMPRESS}")
        check(self.ctc_compress_strategy == "none" or self.ctc_encoder_layer > 0,
              "CTC compression needs a CTC layer")
        check(self.ctc_compress_max_out_size <= 0 or self.ctc_compress_strategy == "avg",
              "ctc_compress_max_out_size is supported with the 'avg' strategy only")
        check(self.is_conformer or self.ctc_compress_strategy == "none",
              "CTC compression is only supported for the conformer archs")
        check(self.arch != "s2t_transformer" or self.ctc_encoder_layer == 0,
              "fairseq's s2t_transformer has no CTC head")
        check(self.arch == "conformer_joint_ctc" or self.auxiliary_ctc_vocab_size == 0,
              "an auxiliary CTC decoder belongs to conformer_joint_ctc only")
        check(self.decoder_activation_fn in ACTIVATIONS,
              f"activation {self.decoder_activation_fn!r} is not one of {ACTIVATIONS}")
        check(not self.decoder_learned_pos, "learned decoder positions are not supported")
        check(self.conv_expansion_factor % 2 == 0, "conv_expansion_factor must be even (GLU halves it)")

    @property
    def is_conformer(self) -> bool:
        return self.arch in CONFORMER_ARCHS

    @property
    def embed_scale(self) -> float:
        return 1.0 if self.no_scale_embedding else float(self.encoder_embed_dim) ** 0.5

    @property
    def decoder_embed_scale(self) -> float:
        return 1.0 if self.no_scale_embedding else float(self.decoder_embed_dim) ** 0.5

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["conv_kernel_sizes"] = list(self.conv_kernel_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise SpesError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        if "conv_kernel_sizes" in d:
            d["conv_kernel_sizes"] = tuple(int(k) for k in d["conv_kernel_sizes"])
        return cls(**d)

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)


def paper_config(vocab_size: int = 8000) -> ModelConfig:
    """The paper's 113M Conformer: 12 layers, d 512, 8 heads, FFN 2048, kernel 31, 6 decoder layers."""
    return ModelConfig(
        conv_channels=1024, encoder_embed_dim=512, encoder_layers=12, encoder_attention_heads=8,
        conformer_conv_kernel_size=31, decoder_embed_dim=512, decoder_layers=6, decoder_attention_heads=8,
        decoder_ffn_embed_dim=2048, vocab_size=vocab_size, ctc_encoder_layer=8, ctc_vocab_size=vocab_size + 1)
