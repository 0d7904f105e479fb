"""A loaded model: parameters, tokenizer and feature settings behind ``transcribe`` and ``score``."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from typing import Any, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import assets
from ._shapes import bucket
from .audio import FRAME_SHIFT_S, load_features
from .config import SPESConfig
from .core.sweep import InputLayout
from .decoding import SearchConfig, SearchResult, beam_search, greedy_search
from .errors import SpesError, count
from .models import ModelConfig, S2TModel
from .models.io import FORMAT, read_model_dir
from .text import WORD_START, Dictionary, Tokenizer

Audio = Union[str, os.PathLike, np.ndarray]

# Masks per compiled step (spectrogram, prefix) of a model that does not choose its own.
DEFAULT_BATCHES = (64, 256)
MIN_FRAMES = 16  # 0.16 s: fewer leave the encoder under 4 frames (8 for Whisper), nothing to decode or map over time


@dataclass(frozen=True)
class Hypothesis:
    """One decoded output: ``tokens`` end with </s>; ``score`` is the length-normalised log-probability."""

    tokens: tuple[int, ...]
    pieces: tuple[str, ...]
    text: str
    score: float
    positional_scores: tuple[float, ...]

    def __str__(self) -> str:
        return self.text


def pad_batch(features: Sequence[np.ndarray], frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pads (T_i, C) arrays to (B, frames, C); returns it and the (B,) lengths."""
    lengths = np.array([f.shape[0] for f in features], np.int32)
    frames = frames or bucket(int(lengths.max()))
    out = np.zeros((len(features), frames, features[0].shape[1]), np.float32)
    for i, f in enumerate(features):
        out[i, : f.shape[0]] = f
    return out, lengths


@functools.partial(jax.jit, static_argnames=("module",))
def _forced_logits(module, params, features, lengths, prev_tokens):
    return module.apply({"params": params}, features, lengths, prev_tokens)[0]


class SpeechToTextModel:
    """A speech-to-text model of any family, ready to use: the contract the engine, the explainer,
    the corpus runs and the commands rely on (docs/architecture.md, "The model contract").

    ``module.apply({"params": params}, ...)`` is the pure forward pass (``encode``, ``cross_kv``,
    ``decode``, ``decode_step``, ``init_cache``); a family adds its front end (``features``), its
    input layout for the sweep (``layout``), its forced decoder ``prompt``, its tokenizer and its
    decoding defaults (``search``). ``max_seconds`` is the longest input it handles (None: no limit).
    """

    family: str = ""
    module: Any
    params: Any
    tokenizer: Any
    search: SearchConfig
    path: str | None = None
    info: dict
    max_seconds: float | None = None

    @property
    def dictionary(self):
        """Id -> piece (``pieces(ids)``, ``index(piece)``, ``len``) of the output vocabulary."""
        return self.tokenizer.dictionary

    @property
    def prompt(self) -> tuple[int, ...]:
        """The forced decoder prompt; its last token is the start column of every prefix map."""
        raise NotImplementedError

    def features(self, audio: Audio) -> np.ndarray:
        """An audio file or a (N,) 16 kHz waveform -> the (T, C) frames of the utterance."""
        raise NotImplementedError

    def layout(self, features: np.ndarray) -> InputLayout:
        """How ``features`` (T, C) enter the model: padded length and value, occlusion fill, prompt."""
        raise NotImplementedError

    @property
    def feature_kind(self) -> str:
        """What ``features`` computes, in words (recorded in explanation files)."""
        raise NotImplementedError

    @property
    def options(self) -> dict:
        """The loading options its results depend on beyond the parameters (Whisper: language, task,
        occlusion); every result file records them, and the commands that read a result reuse them."""
        return {}

    @property
    def max_input_frames(self) -> int:
        """The longest input (frames) the model was built for; longer ones are warned about."""
        raise NotImplementedError

    @property
    def encoder_stride(self) -> int:
        """Input frames per encoder output frame."""
        raise NotImplementedError

    def _check_frames(self, feats: np.ndarray, audio: Audio) -> np.ndarray:
        """The length check of every input (``features`` ends with it, so transcription, every
        explanation and corpus runs share it): refuses fewer than ``MIN_FRAMES`` frames and inputs longer
        than ``max_seconds``."""
        name = f"{os.fspath(audio)}: " if isinstance(audio, (str, os.PathLike)) else ""
        if feats.shape[0] < MIN_FRAMES:
            # Frames, not seconds: a 25 ms window makes 0.03 s of audio one frame.
            raise SpesError(f"{name}audio too short: it gives {count(feats.shape[0], 'frame')} of 10 ms; the model "
                            f"needs at least {MIN_FRAMES} (about {MIN_FRAMES * FRAME_SHIFT_S + 0.01:.2f} s of audio)")
        limit = self.max_seconds
        if limit and feats.shape[0] * FRAME_SHIFT_S > limit:
            raise SpesError(f"{name}audio is {feats.shape[0] * FRAME_SHIFT_S:.1f} s long; this model handles at "
                            f"most {limit:g} s (it drops speech beyond that): cut the audio into pieces of at "
                            f"most {limit:g} s, e.g. at pauses")
        return feats

    def batch(self, features: Sequence[np.ndarray], layout: InputLayout | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """(T_i, C) utterances -> the (B, T_in, C) model input laid out as ``layout`` says (default: each
        utterance's own ``self.layout``), and (B,) T_i."""
        layouts = [layout or self.layout(f) for f in features]
        frames = max(l.frames or bucket(f.shape[0]) for l, f in zip(layouts, features))
        out = np.stack([np.full((frames, f.shape[1]), l.pad_value, np.float32) for l, f in zip(layouts, features)])
        for row, f in zip(out, features):
            row[: f.shape[0]] = f
        return out, np.array([f.shape[0] for f in features], np.int32)

    def target_ids(self, target: str | Sequence[int], name: str = "target") -> list[int]:
        """The check of every given hypothesis (explain, corpus references, contrastive target and
        foil, forced decoding): a text, encoded with the tokenizer (pieces separated by spaces when it
        contains "▁", as the reference's TSV files write them), or ids -> ids ending with the end
        token, each in the vocabulary. ``name`` says which input an error is about."""
        eos, vocab = self.module.cfg.eos, len(self.dictionary)
        if isinstance(target, str):
            text = target.strip()
            if not text:
                raise SpesError(f"{name}: empty text")
            if WORD_START in text:
                pieces = text.split()
                ids = [self.dictionary.index(p) for p in pieces] + [eos]
            else:
                pieces, ids = self.tokenizer.split(text), self.tokenizer.encode(text)
            unknown = [p for p, i in zip(pieces, ids) if i == self.dictionary.unk]
            if unknown:
                raise SpesError(f"{name}: {text!r} has pieces the model's vocabulary does not know: {' '.join(unknown)}")
            return ids
        ids = [int(t) for t in target]
        if not ids or ids[-1] != eos:
            raise SpesError(f"{name}: token ids must end with {self.dictionary.pieces([eos])[0]} (id {eos})")
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise SpesError(f"{name}: token id {bad[0]} is outside the model's vocabulary (0..{vocab - 1})")
        return ids

    def sweep_batches(self, platform: str) -> tuple[int, int]:
        """Masks per compiled step (spectrogram, prefix) this model runs at on ``platform`` ("cpu",
        "gpu", "tpu") when the configuration leaves them open."""
        return DEFAULT_BATCHES

    def sweep_config(self, config: SPESConfig) -> SPESConfig:
        """``config`` with the batch sizes it leaves open (None) filled in with ``sweep_batches`` for the
        default backend."""
        spec, prefix = self.sweep_batches(jax.default_backend())
        return config.replace(batch_size=config.batch_size or spec, token_batch_size=config.token_batch_size or prefix)

    def max_new_tokens(self, frames: int, search: SearchConfig) -> int:
        """The most tokens (end token included) decoding may produce for an input of ``frames``."""
        return search.max_len(frames, self.module.cfg.max_target_positions, len(self.prompt))

    def generate(self, audios: Sequence[Audio], search: SearchConfig | None = None,
                 batch_size: int = 8, greedy: bool = False) -> list[list[Hypothesis]]:
        """N-best hypotheses (best first) for every input, batched by length like fairseq."""
        return self.decode([self.features(a) for a in audios], search, batch_size, greedy)

    def decode(self, feats: Sequence[np.ndarray], search: SearchConfig | None = None,
               batch_size: int = 8, greedy: bool = False, layout: InputLayout | None = None
               ) -> list[list[Hypothesis]]:
        """``generate`` on the (T_i, C) frames ``features`` returns. Perturbed copies of one utterance
        pass its ``layout``, so that they are padded as the sweep pads them (with the original's value,
        not one computed from the copy)."""
        search = search or self.search
        order = sorted(range(len(feats)), key=lambda i: -feats[i].shape[0])
        results: list[list[Hypothesis]] = [[] for _ in feats]
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch, lengths = self.batch([feats[i] for i in idx], layout)
            fn = greedy_search if greedy else beam_search
            res = jax.device_get(fn(self.module, self.params, batch, lengths, cfg=search, prompt=self.prompt,
                                    max_len=self.max_new_tokens(int(lengths.max()), search)))
            for row, i in enumerate(idx):
                results[i] = self._hypotheses(res, row)
        return results

    def _hypotheses(self, res: SearchResult, row: int) -> list[Hypothesis]:
        out = []
        for k in range(res.tokens.shape[1]):
            n = int(res.lengths[row, k])
            if n == 0:
                continue
            toks = tuple(int(t) for t in res.tokens[row, k, :n])
            out.append(Hypothesis(toks, tuple(self.dictionary.pieces(toks)), self.tokenizer.decode(toks),
                                  float(res.scores[row, k]),
                                  tuple(float(s) for s in res.positional_scores[row, k, :n])))
        return out

    def transcribe(self, audio: Audio | Sequence[Audio], beam: int | None = None, batch_size: int = 8,
                   greedy: bool = False) -> Hypothesis | list[Hypothesis]:
        """Best hypothesis for one input, or a list for a list of inputs (``beam``: the model's by default)."""
        single = isinstance(audio, (str, os.PathLike)) or (isinstance(audio, np.ndarray) and audio.ndim <= 2)
        audios = [audio] if single else list(audio)
        if not audios:
            raise SpesError("nothing to transcribe")
        search = self.search if beam is None else dataclasses.replace(self.search, beam=beam)
        best = [h[0] for h in self.generate(audios, search, batch_size, greedy)]
        return best[0] if single else best

    def forced_log_probs(self, audio: Audio, target: Sequence[int] | str) -> np.ndarray:
        """Teacher-forced ``log P(y_k | X, y_<k)`` for every position in one pass.

        target: ids ending with the end token (or a text to encode). Returns (L, V) float32.
        """
        ids = self.target_ids(target)
        feats, lengths = self.batch([self.features(audio)])
        prev = np.array([list(self.prompt) + ids[:-1]], np.int32)
        logits = _forced_logits(self.module, self.params, feats, lengths, prev)[:, len(self.prompt) - 1:]
        return np.asarray(jax.nn.log_softmax(logits, axis=-1))[0]

    def cross_attention(self, audio: Audio, tokens: Sequence[int] | str) -> np.ndarray:
        """(layers, heads, K, T') cross-attention weights of a teacher-forced hypothesis; see
        ``spes_jax.cross_attention.cross_attention``."""
        from .analysis.cross_attention import cross_attention

        return cross_attention(self, audio, tokens)


class FairseqModel(SpeechToTextModel):
    """An FBK-fairseq speech-to-text model (Conformer / Transformer, fbank input, SentencePiece).

    ``search`` is the decoding every method uses unless given another (from the model directory's
    ``"search"`` section; the reference's defaults otherwise). ``data["max_seconds"]``, where set, is
    the longest input the model handles; longer ones are refused.
    """

    family = "fbk"

    def __init__(self, cfg: ModelConfig, params, tokenizer: Tokenizer, data: dict | None = None,
                 path: str | None = None, info: dict | None = None, search: SearchConfig | None = None):
        self.cfg = cfg
        self.module = S2TModel(cfg)
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        self.tokenizer = tokenizer
        self.data = data or {"cmvn": "utterance", "num_mel_bins": cfg.input_feat_per_channel}
        self.path = path
        self.info = info or {}
        self.search = search or SearchConfig()
        self.max_seconds = self.data.get("max_seconds")

    @property
    def prompt(self) -> tuple[int, ...]:
        return (self.cfg.eos,)

    def features(self, audio: Audio) -> np.ndarray:
        """An audio file, a (N,) 16 kHz waveform or a raw (T, C) fbank -> (T, C) model input."""
        feats = load_features(audio, self.cfg.input_feat_per_channel, self.data.get("cmvn") == "utterance")
        return self._check_frames(feats, audio)

    @property
    def feature_kind(self) -> str:
        cmvn = "utterance CMVN" if self.data.get("cmvn") == "utterance" else "no CMVN"
        return (f"{self.cfg.input_feat_per_channel}-bin log-mel filterbank (Kaldi, 25 ms Povey window, 10 ms "
                f"shift), {cmvn}")

    @property
    def max_input_frames(self) -> int:
        return self.cfg.max_source_positions

    @property
    def encoder_stride(self) -> int:
        if self.cfg.ctc_compress_strategy != "none":
            raise SpesError("pooling to a CTC-compressed encoder (variable frames per output) is not supported")
        return 2 ** len(self.cfg.conv_kernel_sizes)

    def layout(self, features: np.ndarray) -> InputLayout:
        # Features are normalised per utterance: 0 is the channel mean, the reference's occlusion.
        return InputLayout(prompt=self.prompt)


def _is_spes_dir(path: str) -> bool:
    """Whether ``path`` is a model directory written by ``spes-jax convert`` / training."""
    try:
        with open(os.path.join(path, "config.json")) as f:
            return json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_model(name_or_path: str | os.PathLike | None = None, *, language: str | None = None,
               task: str | None = None, occlusion: str | None = None) -> SpeechToTextModel:
    """Loads a model: an embedded one by name (``assets.EMBEDDED``; default "asr"), a converted
    FBK-fairseq model directory, or a Whisper checkpoint (a Hugging Face or CTranslate2 /
    faster-whisper directory, or OpenAI's ``.pt``; see ``spes_jax.whisper.load_whisper``).

    language, task ("transcribe" / "translate"), occlusion: Whisper's options (``WhisperModel``); an
    FBK model's task is the one it was trained for.

    Also turns on JAX's persistent compilation cache (``_compile_cache.enable_default``: the command
    line's directory, unless JAX's cache is configured already), so a new session reuses executables.
    """
    from ._compile_cache import enable_default

    enable_default()
    path = os.fspath(name_or_path) if name_or_path is not None else "asr"
    if assets.embedded_name(path) and not os.path.exists(path):
        embedded = assets.model_dir(path)
        if not os.path.isdir(embedded):
            raise SpesError(f"this installation has no embedded '{path}' model; pass a converted model "
                            f"directory (see 'spes-jax convert')")
        path = embedded
    elif not os.path.exists(path):
        raise SpesError(f"model not found: {path} is neither a model directory nor an embedded model "
                        f"({', '.join(assets.EMBEDDED)}); a model directory is a converted FBK-fairseq model or a "
                        "Whisper checkpoint")
    if not _is_spes_dir(path):
        from .whisper.model import DEFAULT_OCCLUSION, load_whisper

        return load_whisper(path, language=language, task=task or "transcribe",
                            occlusion=occlusion or DEFAULT_OCCLUSION)
    if language is not None or occlusion is not None:
        from .provenance import model_name

        raise SpesError(f"{model_name(path)}: --language and --occlusion are options of Whisper models (an FBK "
                        "model's language and task are those it was trained for)")
    cfg, params, config, dict_path, spm_path = read_model_dir(path)
    tokenizer = Tokenizer(Dictionary.load(dict_path), spm_path)
    if len(tokenizer.dictionary) != cfg.vocab_size:
        raise SpesError(f"vocabulary mismatch in {path}: dictionary has {len(tokenizer.dictionary)} "
                        f"symbols, the model {cfg.vocab_size}")
    where = os.path.join(path, "config.json")
    search = SearchConfig.from_dict(config.get("search", {}), where=where)
    limit = (config.get("data") or {}).get("max_seconds")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0):
        raise SpesError(f"{where}: data.max_seconds must be a positive number of seconds, got {limit!r}")
    return FairseqModel(cfg, params, tokenizer, config.get("data"), path, config.get("source"), search)
