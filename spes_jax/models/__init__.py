"""Flax ports of FBK-fairseq speech-to-text models and of OpenAI Whisper."""

from .config import ModelConfig, paper_config
from .outputs import EncoderOutput
from .s2t import S2TModel, init_params
from .whisper import WhisperConfig, WhisperModule

__all__ = ["ModelConfig", "paper_config", "EncoderOutput", "S2TModel", "init_params", "WhisperConfig", "WhisperModule"]
