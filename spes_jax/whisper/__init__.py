"""Whisper's inputs without PyTorch: log-mel features, the tokenizer, and checkpoint readers.

- ``log_mel`` / ``FeatureSettings`` / ``mel_filters`` / ``utterance_frames`` / ``silence_floor``: the
  front end of Hugging Face's ``WhisperFeatureExtractor`` in numpy, time-major.
- ``WhisperTokenizer`` (``tokenizer.json``) and ``GenerationSettings`` (suppressed tokens, alignment heads).
- ``read_checkpoint``: a Hugging Face directory, OpenAI's ``.pt`` or a CTranslate2 / faster-whisper
  directory -> (Hugging Face config, Hugging Face-named numpy state dict, model directory or None).
"""

from .checkpoints import read_checkpoint, read_hf_dir
from .features import FeatureSettings, log_mel, mel_filters, silence_floor, utterance_frames
from .tokenizer import GenerationSettings, WhisperTokenizer

__all__ = ["FeatureSettings", "GenerationSettings", "WhisperTokenizer", "log_mel", "mel_filters",
           "read_checkpoint", "read_hf_dir", "silence_floor", "utterance_frames"]
