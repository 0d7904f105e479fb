"""``WhisperModel``: OpenAI Whisper behind the model contract of ``spes_jax.speech_model``.

What SPES needs to know about Whisper, decided here once (docs/spes.md, "Whisper"):

- The encoder always reads 30 s (3000 frames). Only the utterance's own frames - those whose
  analysis window touches the audio - are returned by ``features``, segmented, perturbed and shown;
  the rest of the 30 s is digital silence, whose log-mel value is exactly the utterance's floor
  ``max(max - 2, -1.5)``, and is passed to the encoder unperturbed.
- An occluded cell becomes the utterance's per-channel mean by default (``occlusion="mean"``), the
  value an occluded cell takes in FBK's per-utterance normalised features. "floor" (silence: the
  cell's energy removed) and "zero" (0 of the scaled log-mel, a mid-level energy, not silence) are
  options. Measured on real speech: a SPES mask silencing half of the segments turns Whisper's
  output into unrelated text for almost every mask, so floor-occluded sweeps saturate; mean-occluded ones
  keep part of the words, and their maps score higher by deletion AUC (docs/spes.md, "Whisper").
- The forced prompt (<|startoftranscript|> [language task] <|notimestamps|>) is fixed; its last
  token is the start column of the prefix map, occluded like any previous token.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from ..audio import SAMPLE_RATE, read_audio
from ..core.sweep import InputLayout
from ..decoding import SearchConfig
from ..errors import SpesError
from ..models.whisper import WhisperConfig, WhisperModule, params_from_state_dict
from ..speech_model import Audio, SpeechToTextModel
from ..text import WORD_START
from .checkpoints import read_checkpoint
from .features import FeatureSettings, silence_floor
from .tokenizer import GenerationSettings, WhisperTokenizer

OCCLUSIONS = ("floor", "zero", "mean")
DEFAULT_OCCLUSION = "mean"
TASKS = {"asr": "transcribe", "transcribe": "transcribe", "st": "translate", "translate": "translate"}
END = "</s>"  # how every model family's end token appears in explanations (analysis reads it)


def _check_occlusion(name: str) -> str:
    if name not in OCCLUSIONS:
        raise SpesError(f"unknown occlusion {name!r}; choose from {', '.join(OCCLUSIONS)}")
    return name


class Vocabulary:
    """Whisper's tokens in the piece convention of explanations: a leading space becomes "▁" (a word
    start, as SentencePiece writes it) and <|endoftext|> is "</s>"; control tokens keep their names.
    Offers what the explainer and the commands use of a tokenizer: ``encode`` (ids ending with the end
    token), ``decode``, ``split``, and ``dictionary`` (``pieces``, ``index``, ``symbols``, ``len``,
    ``unk``: None, as byte-level BPE spells every text and ``index`` refuses an unknown piece)."""

    unk = None

    def __init__(self, tokenizer: WhisperTokenizer):
        self.whisper = tokenizer
        self.symbols = tuple(self._piece(i, t) for i, t in enumerate(tokenizer.pieces(range(tokenizer.vocab_size))))
        self._ids: dict[str, int] = {}
        for i, s in enumerate(self.symbols):
            self._ids.setdefault(s, i)

    def _piece(self, i: int, text: str) -> str:
        return END if i == self.whisper.eot else (WORD_START + text[1:] if text.startswith(" ") else text)

    @property
    def dictionary(self) -> "Vocabulary":
        return self

    def __len__(self) -> int:
        return len(self.symbols)

    def pieces(self, ids) -> list[str]:
        return [self.symbols[int(i)] for i in ids]

    def index(self, piece: str) -> int:
        if piece not in self._ids:
            raise SpesError(f"{piece!r} is not a token of this Whisper vocabulary")
        return self._ids[piece]

    def split(self, text: str) -> list[str]:
        return self.pieces(self.whisper.encode(text))

    def encode(self, text: str) -> list[int]:
        """Text -> ids ending with <|endoftext|> (Whisper writes a leading space before the first word)."""
        text = text.strip()
        return self.whisper.encode(" " + text if text else text) + [self.whisper.eot]

    def decode(self, ids) -> str:
        return self.whisper.decode(ids).strip()


class WhisperModel(SpeechToTextModel):
    """A Whisper checkpoint (any size, English-only or multilingual) ready to transcribe, translate
    into English and be explained.

    language: the spoken language's code for multilingual models (required there), None for
    English-only ones; task: "transcribe" or "translate"; occlusion: what an occluded feature becomes
    ("mean", the default, "floor" or "zero"; see the module docstring).
    """

    family = "whisper"

    def __init__(self, cfg: WhisperConfig, params, tokenizer: WhisperTokenizer, generation: GenerationSettings,
                 feature_settings: FeatureSettings, *, path: str | None = None, info: dict | None = None,
                 language: str | None = None, task: str = "transcribe", occlusion: str = DEFAULT_OCCLUSION,
                 search: SearchConfig | None = None):
        _check_occlusion(occlusion)
        self.cfg = cfg
        self.module = WhisperModule(cfg)
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        self.tokenizer = Vocabulary(tokenizer)
        self.generation = generation
        self.feature_settings = feature_settings
        self.path = path
        self.info = info or {}
        self.occlusion = occlusion
        self.language, self.task = language, TASKS.get(task, task)
        self._prompt = tokenizer.prompt(language, self.task)
        self.search = search or self._generate_settings()
        self.max_seconds = feature_settings.n_samples / SAMPLE_RATE

    def _generate_settings(self) -> SearchConfig:
        """Hugging Face's generate() for Whisper: beam 5, no n-gram block, Hugging Face's stopping rule,
        and at most max_target_positions tokens with the prompt and the final <|endoftext|>; with
        OpenAI's no-speech threshold (0.6) on the no-speech token's probability, so that silence or
        noise gives the empty hypothesis instead of up to 448 tokens of hallucinated text."""
        no_speech = self.tokenizer.whisper.no_speech
        return SearchConfig(beam=5, no_repeat_ngram_size=0, max_len_a=0.0, min_len=0,
                            max_len_b=self.cfg.max_target_positions - len(self._prompt) - 1,
                            suppress=self.generation.suppress_tokens,
                            begin_suppress=self.generation.begin_suppress_tokens, early_stopping=False,
                            no_speech=-1 if no_speech is None else no_speech)

    def configured(self, language: str | None = None, task: str | None = None,
                   occlusion: str | None = None) -> "WhisperModel":
        """The same weights with another language, task or occlusion (shares the parameters)."""
        other = copy.copy(self)
        if occlusion is not None:
            other.occlusion = _check_occlusion(occlusion)
        if language is not None or task is not None:
            other.language = language if language is not None else self.language
            other.task = TASKS.get(task, task) if task is not None else self.task
            other._prompt = self.tokenizer.whisper.prompt(other.language, other.task)
            # Keep the caller's search options; only the length limit depends on the prompt.
            other.search = dataclasses.replace(self.search, max_len_b=other._generate_settings().max_len_b)
        return other

    @property
    def prompt(self) -> tuple[int, ...]:
        return self._prompt

    @property
    def options(self) -> dict:
        return {"language": self.language, "task": self.task, "occlusion": self.occlusion}

    def sweep_batches(self, platform: str) -> tuple[int, int]:
        # Every spectrogram mask is a 30 s encoder pass, at the CPU's matmul rate already with 2 masks
        # per step: 4 or 8 ran no faster per mask (tiny.en, 2026-12-03) and hold more memory.
        return (2, 32) if platform == "cpu" else super().sweep_batches(platform)

    @property
    def feature_kind(self) -> str:
        s = self.feature_settings
        return (f"{s.n_mels}-bin Whisper log-mel (Hann {s.n_fft} samples, {s.hop_length}-sample shift, log10 with an "
                f"8-decade floor, (x + 4) / 4); the utterance's frames of a {s.chunk_length} s input")

    @property
    def max_input_frames(self) -> int:
        return self.feature_settings.n_frames

    @property
    def encoder_stride(self) -> int:
        return 2

    def features(self, audio: Audio) -> np.ndarray:
        """An audio file or a (N,) 16 kHz waveform -> the (T, n_mels) log-mel frames of the utterance
        (T <= 3000); a (T, n_mels) array is taken as such frames."""
        name = f"{os.fspath(audio)}: " if isinstance(audio, (str, os.PathLike)) else ""
        arr = read_audio(audio) if isinstance(audio, (str, os.PathLike)) else np.asarray(audio)
        s = self.feature_settings
        if arr.ndim == 1:
            if arr.size > s.n_samples:
                raise SpesError(f"{name}audio is {arr.size / SAMPLE_RATE:.1f} s long; Whisper reads at most "
                                f"{s.chunk_length} s at a time: cut the audio into pieces of at most "
                                f"{s.chunk_length} s, e.g. at pauses")
            if not np.all(np.isfinite(arr)):
                raise SpesError(f"{name}the waveform contains NaN or infinite values")
            feats = s.log_mel(np.asarray(arr, np.float32))[: s.utterance_frames(arr.size)]
        elif arr.ndim == 2 and arr.shape[1] == s.n_mels and 0 < arr.shape[0] <= s.n_frames:
            if not np.all(np.isfinite(arr)):
                raise SpesError(f"{name}features contain NaN or infinite values")
            feats = arr.astype(np.float32)
        else:
            raise SpesError(f"{name}expected a waveform or ({s.n_frames} or fewer, {s.n_mels}) log-mel frames, "
                            f"got shape {arr.shape}")
        return self._check_frames(feats, audio)

    def layout(self, features: np.ndarray) -> InputLayout:
        floor = silence_floor(features)
        fill = {"floor": np.full(features.shape[1], floor, np.float32),
                "zero": np.zeros(features.shape[1], np.float32),
                "mean": features.mean(0).astype(np.float32)}[self.occlusion]
        return InputLayout(frames=self.feature_settings.n_frames, pad_value=float(floor), fill=fill,
                           prompt=self.prompt)


def load_whisper(path: str | os.PathLike, *, language: str | None = None, task: str = "transcribe",
                 occlusion: str = DEFAULT_OCCLUSION) -> WhisperModel:
    """A Whisper checkpoint from disk: a Hugging Face directory (safetensors, sharded or
    ``pytorch_model.bin``), a CTranslate2 / faster-whisper directory, or OpenAI's ``.pt`` beside a
    ``tokenizer.json``. Nothing in the files is executed."""
    hf_config, state, directory = read_checkpoint(path)
    if directory is None:  # a lone OpenAI .pt: the tokenizer must lie beside it
        directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    cfg = WhisperConfig.from_hf(hf_config)
    params = params_from_state_dict(state, cfg)
    tokenizer = WhisperTokenizer.from_dir(directory)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise SpesError(f"{directory}: tokenizer.json has {tokenizer.vocab_size} tokens, the model {cfg.vocab_size}")
    features = FeatureSettings.from_dir(directory, n_mels=cfg.num_mel_bins)
    info = {"family": "whisper", "source": os.path.abspath(os.fspath(path)), "config": hf_config}
    return WhisperModel(cfg, params, tokenizer, GenerationSettings.from_dir(directory), features,
                        path=os.path.abspath(os.fspath(path)), info=info, language=language, task=task,
                        occlusion=occlusion)
