"""Whisper checkpoints as users have them on disk -> (Hugging Face config, Hugging Face-named state dict).

Three layouts are read, none by executing anything from the files:

- a Hugging Face directory: ``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``, or their
  sharded form (``*.index.json`` + shards); torch pickles go through the restricted unpickler of
  ``spes_jax.convert.torch_pickle``;
- OpenAI's own ``.pt`` (``torch.save({"dims": ..., "model_state_dict": ...})``);
- a CTranslate2 / faster-whisper directory (``model.bin``, CTranslate2's binary format versions 4-6;
  int8 / int16 weights are dequantised to float32).

Whatever the layout, the state dict has the names of ``transformers.WhisperForConditionalGeneration``
(``model.encoder.conv1.weight``, ``model.decoder.layers.0.encoder_attn.k_proj.weight``, ...) with the
stored dtype; the tied output projection is not repeated.
"""

from __future__ import annotations

import os
import re
import struct

import ml_dtypes
import numpy as np

from .._io import read_json
from ..convert.torch_pickle import load_checkpoint
from ..errors import SpesError
from ..models.safetensors import read_safetensors

StateDict = dict[str, np.ndarray]

_HF_WEIGHTS = (("model.safetensors.index.json", "model.safetensors"),
               ("pytorch_model.bin.index.json", "pytorch_model.bin"))  # (sharded index, single file)
_CT2_WEIGHTS = "model.bin"

# OpenAI name -> Hugging Face name, per transformer block and for the rest.
_OPENAI_BLOCK = {
    "attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj", "attn.value": "self_attn.v_proj",
    "attn.out": "self_attn.out_proj", "attn_ln": "self_attn_layer_norm",
    "cross_attn.query": "encoder_attn.q_proj", "cross_attn.key": "encoder_attn.k_proj",
    "cross_attn.value": "encoder_attn.v_proj", "cross_attn.out": "encoder_attn.out_proj",
    "cross_attn_ln": "encoder_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2", "mlp_ln": "final_layer_norm",
}
_OPENAI_TOP = {
    "encoder.conv1": "model.encoder.conv1", "encoder.conv2": "model.encoder.conv2",
    "encoder.ln_post": "model.encoder.layer_norm", "decoder.ln": "model.decoder.layer_norm",
    "decoder.token_embedding": "model.decoder.embed_tokens",
}
_OPENAI_POSITIONS = {"encoder.positional_embedding": "model.encoder.embed_positions.weight",
                     "decoder.positional_embedding": "model.decoder.embed_positions.weight"}

# CTranslate2 module -> Hugging Face module(s); several targets = rows fused in that order.
_CT2_BLOCK = {
    "self_attention/layer_norm": ("self_attn_layer_norm",),
    "self_attention/linear_0": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "self_attention/linear_1": ("self_attn.out_proj",),
    "attention/layer_norm": ("encoder_attn_layer_norm",),
    "attention/linear_0": ("encoder_attn.q_proj",),
    "attention/linear_1": ("encoder_attn.k_proj", "encoder_attn.v_proj"),
    "attention/linear_2": ("encoder_attn.out_proj",),
    "ffn/layer_norm": ("final_layer_norm",),
    "ffn/linear_0": ("fc1",),
    "ffn/linear_1": ("fc2",),
}
_CT2_TOP = {
    "encoder/conv1": "model.encoder.conv1", "encoder/conv2": "model.encoder.conv2",
    "encoder/position_encodings": "model.encoder.embed_positions",
    "encoder/layer_norm": "model.encoder.layer_norm", "decoder/layer_norm": "model.decoder.layer_norm",
    "decoder/embeddings": "model.decoder.embed_tokens",
    "decoder/position_encodings": "model.decoder.embed_positions",
}
_CT2_PARAM = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias", "encodings": "weight"}
# Attributes a Whisper spec must have (when present): GELU (erf), pre-norm, no embedding scale or ALiBi.
_CT2_EXPECTED = {"decoder/activation": 3, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
                 "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0}
# Type ids of CTranslate2's DataType enum.
_CT2_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, ml_dtypes.bfloat16)
_OPENAI_LAYER = re.compile(r"(encoder|decoder)\.blocks\.(\d+)\.(.+)")
_CT2_LAYER = re.compile(r"(encoder|decoder)/layer_(\d+)/(.+)")
_HF_LAYER = re.compile(r"model\.(encoder|decoder)\.layers\.(\d+)\.")


def _torch_state(path: str) -> StateDict:
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise SpesError(f"{path}: not a state dict of tensors")
    return state


def _read_weights(path: str) -> StateDict:
    return read_safetensors(path) if path.endswith(".safetensors") else _torch_state(path)


def _read_sharded(path: str, index: str) -> StateDict:
    """The tensors an ``*.index.json`` maps to shard files of the same directory."""
    index_path = os.path.join(path, index)
    weight_map = read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise SpesError(f"{index_path}: no weight_map")
    state: StateDict = {}
    for shard in sorted(set(map(str, weight_map.values()))):
        if os.path.basename(shard) != shard:
            raise SpesError(f"{index_path}: shard {shard!r} is not a file of the directory")
        tensors = _read_weights(os.path.join(path, shard))
        state.update({k: v for k, v in tensors.items() if weight_map.get(k) == shard})
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise SpesError(f"{index_path}: tensors missing from their shards: {', '.join(missing[:3])}")
    return state


def read_hf_dir(path: str | os.PathLike) -> tuple[dict, StateDict]:
    """A Hugging Face Whisper directory: ``config.json`` and the weights, single-file or sharded.

    Safetensors is preferred when both formats are present. A stored ``proj_out.weight`` equal to the
    token embeddings (tied) is dropped. Returns (config dict, state dict).
    """
    path = os.fspath(path)
    config = read_json(os.path.join(path, "config.json"))
    if config.get("model_type") != "whisper":
        raise SpesError(f"{path}: config.json describes a {config.get('model_type')!r} model, not Whisper")
    for index, single in _HF_WEIGHTS:
        if os.path.isfile(os.path.join(path, single)):
            state = _read_weights(os.path.join(path, single))
            break
        if os.path.isfile(os.path.join(path, index)):
            state = _read_sharded(path, index)
            break
    else:
        raise SpesError(f"{path}: no weights (expected model.safetensors or pytorch_model.bin, or a sharded index)")
    projection = state.get("proj_out.weight")
    if projection is not None and np.array_equal(projection, state.get("model.decoder.embed_tokens.weight")):
        del state["proj_out.weight"]
    return config, state


def _sinusoids(length: int, channels: int) -> np.ndarray:
    """Whisper's encoder positions: sin then cos of position / 10000^(i / (channels/2 - 1)), (length, channels)."""
    rates = np.exp(-np.log(10000.0) / (channels // 2 - 1) * np.arange(channels // 2))
    angles = np.arange(length)[:, None] * rates[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def _n_layers(state: StateDict, side: str) -> int:
    found = {int(m.group(2)) for k in state if (m := _HF_LAYER.match(k)) and m.group(1) == side}
    return max(found) + 1 if found else 0


def _config(state: StateDict, encoder_heads: int, decoder_heads: int) -> dict:
    """The Hugging Face config of a Hugging Face-named Whisper state dict (shapes + head counts).

    OpenAI's rule: a vocabulary of 51865 or more is multilingual (<|endoftext|> 50257,
    <|startoftranscript|> 50258, also for large-v3's 128-mel, 51866-token models); below that it is
    GPT-2's, English-only (50256, 50257).
    """
    try:
        vocab, d_model = state["model.decoder.embed_tokens.weight"].shape
        eot = 50257 if vocab >= 51865 else 50256
        return {
            "model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"],
            "vocab_size": int(vocab), "d_model": int(d_model),
            "num_mel_bins": int(state["model.encoder.conv1.weight"].shape[1]),
            "encoder_layers": _n_layers(state, "encoder"), "decoder_layers": _n_layers(state, "decoder"),
            "encoder_attention_heads": int(encoder_heads), "decoder_attention_heads": int(decoder_heads),
            "encoder_ffn_dim": int(state["model.encoder.layers.0.fc1.weight"].shape[0]),
            "decoder_ffn_dim": int(state["model.decoder.layers.0.fc1.weight"].shape[0]),
            "max_source_positions": int(state["model.encoder.embed_positions.weight"].shape[0]),
            "max_target_positions": int(state["model.decoder.embed_positions.weight"].shape[0]),
            "activation_function": "gelu", "scale_embedding": False, "tie_word_embeddings": True,
            "eos_token_id": eot, "pad_token_id": eot, "bos_token_id": eot + 1, "decoder_start_token_id": eot + 1,
            "begin_suppress_tokens": [220, eot],
        }
    except (KeyError, IndexError, ValueError) as e:
        raise SpesError(f"incomplete Whisper weights: {e}") from None


def _openai_name(name: str) -> str | None:
    if name in _OPENAI_POSITIONS:
        return _OPENAI_POSITIONS[name]
    module, _, param = name.rpartition(".")
    if param not in ("weight", "bias"):
        return None
    if module in _OPENAI_TOP:
        return f"{_OPENAI_TOP[module]}.{param}"
    m = _OPENAI_LAYER.fullmatch(module)
    if m and m.group(3) in _OPENAI_BLOCK:
        return f"model.{m.group(1)}.layers.{m.group(2)}.{_OPENAI_BLOCK[m.group(3)]}.{param}"
    return None


def _read_openai(path: str, ckpt: dict) -> tuple[dict, StateDict]:
    dims, weights = ckpt.get("dims"), ckpt.get("model_state_dict")
    if not isinstance(dims, dict) or not isinstance(weights, dict):
        raise SpesError(f"{path}: a torch.save file but not an OpenAI Whisper checkpoint (no 'dims' and "
                        "'model_state_dict')")
    state, unknown = {}, []
    for name, value in weights.items():
        target = _openai_name(name)
        if target is None or not isinstance(value, np.ndarray):
            unknown.append(name)
        else:
            state[target] = value
    if unknown:
        raise SpesError(f"{path}: unexpected entries in model_state_dict: {', '.join(unknown[:5])}")
    try:
        heads = int(dims["n_audio_head"]), int(dims["n_text_head"])
        if "model.encoder.embed_positions.weight" not in state:  # a buffer, left out of some files
            state["model.encoder.embed_positions.weight"] = _sinusoids(int(dims["n_audio_ctx"]),
                                                                       int(dims["n_audio_state"]))
        config = _config(state, *heads)
        stated = {"n_mels": "num_mel_bins", "n_vocab": "vocab_size", "n_audio_ctx": "max_source_positions",
                  "n_audio_state": "d_model", "n_audio_layer": "encoder_layers", "n_text_ctx": "max_target_positions",
                  "n_text_state": "d_model", "n_text_layer": "decoder_layers"}
        wrong = [k for k, ours in stated.items() if int(dims[k]) != config[ours]]
    except (KeyError, TypeError, ValueError) as e:
        raise SpesError(f"{path}: malformed 'dims' ({e})") from None
    if wrong:
        raise SpesError(f"{path}: 'dims' disagree with the weights' shapes: {', '.join(wrong)}")
    return config, state


class _Reader:
    """Little-endian fields of a byte buffer (views, not copies); running off its end is a SpesError."""

    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = memoryview(data), 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise SpesError(f"{self.path}: truncated CTranslate2 model (needs {self.pos + n} bytes, "
                            f"has {len(self.data)})")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (n,) = self.unpack("H")  # length including a terminating NUL
        raw = self.take(n)
        try:
            return bytes(raw[:-1]).decode("utf-8")
        except UnicodeDecodeError:
            raise SpesError(f"{self.path}: damaged CTranslate2 model (bad name at byte {self.pos - n})") from None


def _ct2_variables(path: str) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, variables with aliases resolved) of a CTranslate2 ``model.bin``."""
    try:
        with open(path, "rb") as f:
            r = _Reader(f.read(), path)
    except OSError as e:
        raise SpesError(f"cannot read {path}: {e.strerror or e}") from None
    (version,) = r.unpack("I")
    if not 4 <= version <= 6:
        raise SpesError(f"{path}: not a CTranslate2 model of a supported version (binary version {version}, "
                        "expected 4 to 6)")
    spec = r.string()
    r.unpack("I")  # spec revision
    variables = {}
    for _ in range(r.unpack("I")[0]):
        name = r.string()
        (rank,) = r.unpack("B")
        shape = r.unpack(f"{rank}I")
        type_id, n_bytes = r.unpack("BI")
        if type_id >= len(_CT2_DTYPES):
            raise SpesError(f"{path}: variable {name!r} has an unknown type id {type_id}")
        dtype = np.dtype(_CT2_DTYPES[type_id])
        if n_bytes != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise SpesError(f"{path}: damaged CTranslate2 model (variable {name!r}: {n_bytes} bytes for shape {shape})")
        variables[name] = np.frombuffer(r.take(n_bytes), dtype).reshape(shape)
    for _ in range(r.unpack("I")[0]):
        alias, target = r.string(), r.string()
        if target not in variables:
            raise SpesError(f"{path}: alias {alias!r} names a missing variable {target!r}")
        variables[alias] = variables[target]
    return spec, variables


def _dequantize(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """int8 / int16 weights with a ``<name>_scale`` (w * scale was rounded) -> float32 weights."""
    out = {}
    for name, value in variables.items():
        if name.endswith("_scale"):
            continue
        scale = variables.get(name + "_scale")
        if scale is not None:
            # One scale per output row (int8) or for the whole tensor (int16).
            scale = scale.astype(np.float32).reshape(scale.shape + (1,) * (value.ndim - scale.ndim))
            value = value.astype(np.float32) / scale
        out[name] = value
    return out


def _read_ct2(directory: str) -> tuple[dict, StateDict]:
    path = os.path.join(directory, _CT2_WEIGHTS)
    spec, variables = _ct2_variables(path)
    if spec != "WhisperSpec":
        raise SpesError(f"{path}: a CTranslate2 {spec or 'Transformer'} model, not Whisper")
    for suffix in ("", "_scale"):  # the output projection: an alias of the embeddings (and of their scale)
        projection = variables.pop("decoder/projection/weight" + suffix, None)
        embeddings = variables.get("decoder/embeddings/weight" + suffix)
        if projection is not None and not np.array_equal(projection, embeddings):
            raise SpesError(f"{path}: the output projection is not tied to the token embeddings (not supported)")
    variables = _dequantize(variables)
    scalars = {k: v.item() for k, v in variables.items() if v.ndim == 0}
    wrong = [f"{k}={scalars[k]}" for k, want in _CT2_EXPECTED.items() if k in scalars and scalars[k] != want]
    if wrong:
        raise SpesError(f"{path}: not a standard Whisper model ({', '.join(wrong)})")
    state, unknown = {}, []
    for name, value in variables.items():
        if value.ndim == 0:
            continue
        module, _, param = name.rpartition("/")
        m = _CT2_LAYER.fullmatch(module)
        if m and m.group(3) in _CT2_BLOCK and param in _CT2_PARAM:
            targets = [f"model.{m.group(1)}.layers.{m.group(2)}.{t}" for t in _CT2_BLOCK[m.group(3)]]
        elif module in _CT2_TOP and param in _CT2_PARAM:
            targets = [_CT2_TOP[module]]
        else:
            unknown.append(name)
            continue
        if value.shape[0] % len(targets):
            raise SpesError(f"{path}: {name} has {value.shape[0]} rows, not {len(targets)} equal fused parts")
        for target, part in zip(targets, np.split(value, len(targets), axis=0)):
            # Whisper's key projections have no bias (CTranslate2 stores zeros; a constant added to every
            # key of a query would cancel in the softmax anyway).
            if not (target.endswith("k_proj") and param == "bias"):
                state[f"{target}.{_CT2_PARAM[param]}"] = part
    if unknown:
        raise SpesError(f"{path}: unsupported CTranslate2 Whisper variables: {', '.join(unknown[:5])}")
    try:
        heads = int(scalars["encoder/num_heads"]), int(scalars["decoder/num_heads"])
    except KeyError as e:
        raise SpesError(f"{path}: no {e.args[0]} attribute") from None
    return _config(state, *heads), state


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, StateDict, str | None]:
    """Reads a Whisper checkpoint in any supported layout.

    ``path`` is a Hugging Face directory, a CTranslate2 / faster-whisper directory (``model.bin``), one
    of their weight files, or OpenAI's ``.pt``.

    Returns:
      (Hugging Face config dict, Hugging Face-named state dict of numpy arrays, the directory holding
      the tokenizer and generation settings, or None for a lone ``.pt``).
    """
    path = os.fspath(path)
    if os.path.isfile(path) and os.path.basename(path) in (_CT2_WEIGHTS, *(n for pair in _HF_WEIGHTS for n in pair)):
        path = os.path.dirname(path) or "."
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, _CT2_WEIGHTS)):
            return (*_read_ct2(path), path)
        if os.path.isfile(os.path.join(path, "config.json")):
            return (*read_hf_dir(path), path)
        raise SpesError(f"{path}: not a model directory: no config.json (a spes-jax model directory from "
                        "'spes-jax convert' has one, and so does a Whisper checkpoint, with model.safetensors or "
                        "pytorch_model.bin; a CTranslate2 one has model.bin)")
    if not os.path.isfile(path):
        raise SpesError(f"Whisper checkpoint not found: {path}")
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise SpesError(f"{path}: not an OpenAI Whisper checkpoint")
    return (*_read_openai(path, ckpt), None)
