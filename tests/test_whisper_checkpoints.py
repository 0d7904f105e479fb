"""Whisper checkpoint readers: every on-disk layout, written here from the fixture's safetensors weights,
must read back as exactly the Hugging Face state dict; damaged or hostile files give one SpesError."""

import json
import os
import pickle
import re
import shutil

import numpy as np
import pytest

from format_writers import save_ct2, save_safetensors
from spes_jax.errors import SpesError
from spes_jax.models.safetensors import read_safetensors
from spes_jax.whisper import read_checkpoint
from support import whisper_fixture_path
from torch_writer import save_zip

# Hugging Face module -> OpenAI module inside a transformer block (OpenAI's whisper/model.py names).
OPENAI_BLOCK = [("self_attn.q_proj", "attn.query"), ("self_attn.k_proj", "attn.key"),
                ("self_attn.v_proj", "attn.value"), ("self_attn.out_proj", "attn.out"),
                ("self_attn_layer_norm", "attn_ln"), ("encoder_attn.q_proj", "cross_attn.query"),
                ("encoder_attn.k_proj", "cross_attn.key"), ("encoder_attn.v_proj", "cross_attn.value"),
                ("encoder_attn.out_proj", "cross_attn.out"), ("encoder_attn_layer_norm", "cross_attn_ln"),
                ("fc1", "mlp.0"), ("fc2", "mlp.2"), ("final_layer_norm", "mlp_ln")]
OPENAI_TOP = {"model.encoder.conv1": "encoder.conv1", "model.encoder.conv2": "encoder.conv2",
              "model.encoder.layer_norm": "encoder.ln_post", "model.decoder.layer_norm": "decoder.ln",
              "model.decoder.embed_tokens": "decoder.token_embedding",
              "model.encoder.embed_positions": "encoder.positional_embedding",
              "model.decoder.embed_positions": "decoder.positional_embedding"}
STRUCTURE = ("vocab_size", "num_mel_bins", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
             "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_source_positions",
             "max_target_positions", "eos_token_id", "decoder_start_token_id", "begin_suppress_tokens")


@pytest.fixture(scope="module")
def hf():
    """(model directory, config, state dict) of the fixture."""
    directory = whisper_fixture_path("model", "whisper-tiny.en")
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    return directory, config, read_safetensors(os.path.join(directory, "model.safetensors"))


def assert_same_state(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def to_openai(state: dict) -> dict:
    out = {}
    for name, value in state.items():
        module, param = name.rsplit(".", 1)
        m = re.fullmatch(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.+)", module)
        if m:
            out[f"{m[1]}.blocks.{m[2]}.{dict(OPENAI_BLOCK)[m[3]]}.{param}"] = value
        elif "positional" in OPENAI_TOP[module]:
            out[OPENAI_TOP[module]] = value
        else:
            out[f"{OPENAI_TOP[module]}.{param}"] = value
    return out


def openai_dims(config: dict) -> dict:
    return {"n_mels": 80, "n_vocab": config["vocab_size"], "n_audio_ctx": 1500, "n_audio_state": 384,
            "n_audio_head": 6, "n_audio_layer": 4, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6,
            "n_text_layer": 4}


def to_ct2(state: dict, config: dict) -> dict:
    """The CTranslate2 WhisperSpec variables (revision 3) of a Hugging Face state dict."""
    v = {}

    def linear(ct2, *modules):  # q/k/v projections are fused by rows; Whisper's k_proj has no bias (zeros)
        v[f"{ct2}/weight"] = np.concatenate([state[f"{m}.weight"] for m in modules])
        v[f"{ct2}/bias"] = np.concatenate([state.get(f"{m}.bias", np.zeros(384, np.float16)) for m in modules])

    def norm(ct2, module):
        v[f"{ct2}/gamma"], v[f"{ct2}/beta"] = state[f"{module}.weight"], state[f"{module}.bias"]

    for side in ("encoder", "decoder"):
        for i in range(config[f"{side}_layers"]):
            hf, ct2 = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            linear(f"{ct2}/self_attention/linear_0", *(f"{hf}.self_attn.{p}_proj" for p in "qkv"))
            linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
            if side == "decoder":
                norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
                linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
                linear(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj")
                linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
            norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
            linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
            linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        v[f"{side}/position_encodings/encodings"] = state[f"model.{side}.embed_positions.weight"]
        v[f"{side}/num_heads"] = np.int16(6)
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    v["decoder/embeddings/weight"] = state["model.decoder.embed_tokens.weight"]
    v.update({"decoder/activation": np.int8(3), "decoder/pre_norm": np.int8(1), "decoder/alibi": np.int8(0),
              "decoder/scale_embeddings": np.int8(0), "decoder/alignment_layer": np.int16(-1)})
    return v


def quantize_int8(variables: dict) -> dict:
    """CTranslate2's int8 scheme (linear and embedding weights): per row, scale = 127 / max|w|,
    stored rint(w * scale)."""
    out = dict(variables)
    for name, w in variables.items():
        if re.search(r"(linear_\d|embeddings)/weight$", name):
            w = w.astype(np.float32)
            scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
            out[name] = np.rint(w * scale[:, None]).astype(np.int8)
            out[name + "_scale"] = scale
    return out


def test_hf_directory(hf):
    directory, config, state = hf
    got_config, got_state, model_dir = read_checkpoint(directory)
    assert got_config == config and model_dir == directory
    assert_same_state(got_state, state)
    assert read_checkpoint(os.path.join(directory, "model.safetensors"))[2] == directory


def test_pytorch_model_bin(hf, tmp_path):
    directory, config, state = hf
    shutil.copy(os.path.join(directory, "config.json"), tmp_path)
    # transformers may store the tied output projection too; it is dropped again.
    save_zip({**state, "proj_out.weight": state["model.decoder.embed_tokens.weight"]}, tmp_path / "pytorch_model.bin")
    got_config, got_state, model_dir = read_checkpoint(tmp_path)
    assert got_config == config and model_dir == str(tmp_path)
    assert_same_state(got_state, state)


def test_sharded_safetensors(hf, tmp_path):
    directory, config, state = hf
    shutil.copy(os.path.join(directory, "config.json"), tmp_path)
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, members in shards.items():
        save_safetensors({k: state[k] for k in members}, tmp_path / shard)
    weight_map = {k: shard for shard, members in shards.items() for k in members}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert_same_state(read_checkpoint(tmp_path)[1], state)


def test_openai_pt(hf, tmp_path):
    _, config, state = hf
    save_zip({"dims": openai_dims(config), "model_state_dict": to_openai(state)}, tmp_path / "tiny.en.pt")
    got_config, got_state, model_dir = read_checkpoint(tmp_path / "tiny.en.pt")
    assert model_dir is None
    assert {k: got_config[k] for k in STRUCTURE} == {k: config[k] for k in STRUCTURE}
    assert_same_state(got_state, state)


def test_openai_pt_without_encoder_positions(hf, tmp_path):
    """The encoder's positions are a sinusoid buffer some files leave out: computed instead."""
    _, config, state = hf
    weights = to_openai(state)
    del weights["encoder.positional_embedding"]
    save_zip({"dims": openai_dims(config), "model_state_dict": weights}, tmp_path / "tiny.en.pt")
    positions = read_checkpoint(tmp_path / "tiny.en.pt")[1]["model.encoder.embed_positions.weight"]
    # The stored float16 positions are the same sinusoids, rounded (the README measures 2.44e-4).
    np.testing.assert_allclose(positions, state["model.encoder.embed_positions.weight"], rtol=0, atol=2.5e-4)


def test_ct2_directory(hf, tmp_path):
    directory, config, state = hf
    save_ct2(to_ct2(state, config), {"decoder/projection/weight": "decoder/embeddings/weight"}, tmp_path / "model.bin")
    shutil.copy(os.path.join(directory, "tokenizer.json"), tmp_path)
    got_config, got_state, model_dir = read_checkpoint(tmp_path)
    assert model_dir == str(tmp_path)
    assert {k: got_config[k] for k in STRUCTURE} == {k: config[k] for k in STRUCTURE}
    assert_same_state(got_state, state)


def test_ct2_int8_is_dequantized(hf, tmp_path):
    _, config, state = hf
    # The projection alias also stands for the embeddings' scale.
    save_ct2(quantize_int8(to_ct2(state, config)), {"decoder/projection/weight": "decoder/embeddings/weight"},
             tmp_path / "model.bin")
    got = read_checkpoint(tmp_path / "model.bin")[1]
    assert sorted(got) == sorted(state)
    for name in ("model.encoder.layers.0.self_attn.k_proj.weight", "model.decoder.layers.3.encoder_attn.v_proj.weight",
                 "model.decoder.layers.1.fc2.weight", "model.decoder.embed_tokens.weight"):
        want = state[name].astype(np.float32)
        assert got[name].dtype == np.float32
        # rint moves each weight by at most half a step, max|w| of its (fused) row / 254.
        assert np.abs(got[name] - want).max() <= np.abs(want).max() / 254 * 1.0001
        assert np.abs(got[name] - want).max() > 0
    np.testing.assert_array_equal(got["model.decoder.layers.0.fc1.bias"], state["model.decoder.layers.0.fc1.bias"])


class _Shell:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("case", ["truncated_ct2", "ct2_other_spec", "pickle_os_system", "pt_without_dims",
                                  "not_whisper_config", "empty_dir", "missing", "text_file"])
def test_bad_checkpoints(hf, tmp_path, case):
    directory, config, state = hf
    path = tmp_path
    if case in ("truncated_ct2", "ct2_other_spec"):
        small = {"encoder/num_heads": np.int16(6), "encoder/conv1/weight": state["model.encoder.conv1.weight"]}
        spec = "WhisperSpec" if case == "truncated_ct2" else "TransformerSpec"
        save_ct2(small, {}, tmp_path / "model.bin", spec=spec)
        if case == "truncated_ct2":
            data = (tmp_path / "model.bin").read_bytes()
            (tmp_path / "model.bin").write_bytes(data[:len(data) // 2])
    elif case == "pickle_os_system":
        path = tmp_path / "evil.pt"
        save_zip({"dims": openai_dims(config), "model_state_dict": _Shell()}, path)
    elif case == "pt_without_dims":
        path = tmp_path / "weights.pt"
        save_zip({"state_dict": {"x": np.zeros(3, np.float32)}}, path)
    elif case == "not_whisper_config":
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    elif case == "missing":
        path = tmp_path / "nowhere"
    elif case == "text_file":
        path = tmp_path / "notes.pt"
        path.write_bytes(pickle.dumps("just a string") + b"\n")
    with pytest.raises(SpesError) as err:
        read_checkpoint(path)
    assert "\n" not in str(err.value)
    if case == "pickle_os_system":
        assert "os.system" in str(err.value) or "posix.system" in str(err.value)
