import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile

import jax
import numpy as np
import pytest

from spes_jax.convert import UnsafeCheckpointError, convert_checkpoint, load_checkpoint
from spes_jax import SpesError, load_model
from spes_jax.models.io import read_model_dir
from support import fixture_path
import torch_writer


def _cli(*args):
    # Run outside the source tree: the installed package has spes_jax.convert, a checkout has convert/.
    return subprocess.run([sys.executable, "-m", "spes_jax.cli", *args], capture_output=True, text=True,
                          cwd=tempfile.gettempdir(), timeout=300)


def _fixture_checkpoint():
    return load_checkpoint(fixture_path("model", "conformer_tiny.pt"))


def test_fixture_checkpoint_reads_as_plain_data():
    ckpt = _fixture_checkpoint()
    assert ckpt["cfg"]["model"]["arch"] == "conformer"
    assert ckpt["cfg"]["model"]["conv_kernel_sizes"] == "5,5"
    sd = ckpt["model"]
    assert sd["encoder.subsample.conv_layers.0.weight"].shape == (128, 80, 5)
    assert sd["encoder.conformer_layers.0.conv_module.batchnorm.num_batches_tracked"].dtype == np.int64


def test_converted_directory_roundtrip(converted):
    cfg, params, config, dict_path, spm = read_model_dir(converted("conformer_tiny"))
    assert cfg.encoder_layers == 3 and cfg.ctc_encoder_layer == 2 and cfg.vocab_size == 100
    assert config["source"]["sha256"] and config["data"]["cmvn"] == "utterance"
    assert spm is not None and os.path.isfile(dict_path)
    w = _fixture_checkpoint()["model"]["decoder.layers.0.fc1.weight"]
    np.testing.assert_array_equal(params["decoder"]["layers_0"]["fc1"]["kernel"], w.T)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_both_torch_formats_convert_identically(tmp_path, fmt, converted):
    ckpt = _fixture_checkpoint()
    obj = {"args": argparse.Namespace(**ckpt["cfg"]["model"]), "model": ckpt["model"]}
    path = tmp_path / f"ckpt_{fmt}.pt"
    (torch_writer.save_zip if fmt == "zip" else torch_writer.save_legacy)(obj, path)
    out = convert_checkpoint(str(path), str(tmp_path / "out"), config_yaml=fixture_path("model", "config.yaml"))
    _, ours, *_ = read_model_dir(out)
    _, ref, *_ = read_model_dir(converted("conformer_tiny"))
    jax.tree_util.tree_map(np.testing.assert_array_equal, ours, ref)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("container", ["raw", "zip"])
def test_malicious_pickle_is_refused_without_side_effects(tmp_path, container):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"model": {}, "cfg": _Evil(marker)}, protocol=2)
    path = tmp_path / "evil.pt"
    if container == "raw":
        path.write_bytes(payload)
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", payload)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_checkpoint(path)
    r = _cli("convert", str(path), "--out", str(tmp_path / "out"))
    assert r.returncode != 0 and not marker.exists() and not (tmp_path / "out").exists()
    assert r.stderr.count("\n") == 1 and "refusing to load" in r.stderr and "system" in r.stderr


def _one_line_error(tmp_path, path, *extra):
    out = tmp_path / "out"
    r = _cli("convert", str(path), "--out", str(out), *extra)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("spes-jax: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".spes-jax-")]
    return r.stderr


def test_truncated_checkpoint(tmp_path):
    data = open(fixture_path("model", "conformer_tiny.pt"), "rb").read()
    path = tmp_path / "trunc.pt"
    path.write_bytes(data[: len(data) // 2])
    assert "cannot read checkpoint" in _one_line_error(tmp_path, path)


def test_non_fairseq_pickle(tmp_path):
    path = tmp_path / "plain.pt"
    torch_writer.save_zip({"weights": np.zeros(3, np.float32)}, path)
    assert "not a fairseq checkpoint" in _one_line_error(tmp_path, path)
    path2 = tmp_path / "plain.pkl"
    path2.write_bytes(pickle.dumps({"a": 1}))
    assert "magic number" in _one_line_error(tmp_path, path2)


def test_other_architecture(tmp_path):
    ckpt = _fixture_checkpoint()
    args = dict(ckpt["cfg"]["model"], arch="wav2vec2", _name="wav2vec2")
    path = tmp_path / "w2v.pt"
    torch_writer.save_zip({"args": argparse.Namespace(**args), "model": ckpt["model"]}, path)
    assert "architecture 'wav2vec2' is not supported" in _one_line_error(tmp_path, path)


def test_missing_and_unused_keys_and_vocab_mismatch(tmp_path):
    ckpt = _fixture_checkpoint()
    args = argparse.Namespace(**ckpt["cfg"]["model"])
    sd = dict(ckpt["model"])
    sd.pop("decoder.layers.1.fc2.bias")
    torch_writer.save_zip({"args": args, "model": sd}, tmp_path / "missing.pt")
    assert "missing" in _one_line_error(tmp_path, tmp_path / "missing.pt", "--dict",
                                        fixture_path("model", "dict.txt"))
    sd = dict(ckpt["model"], **{"encoder.extra.weight": np.zeros((2, 2), np.float32)})
    torch_writer.save_zip({"args": args, "model": sd}, tmp_path / "extra.pt")
    assert "encoder.extra.weight" in _one_line_error(tmp_path, tmp_path / "extra.pt", "--dict",
                                                     fixture_path("model", "dict.txt"))
    small = tmp_path / "dict_small.txt"
    small.write_text("".join(open(fixture_path("model", "dict.txt")).readlines()[:50]))
    err = _one_line_error(tmp_path, fixture_path("model", "conformer_tiny.pt"), "--dict", str(small))
    assert "vocabulary mismatch" in err


def test_cli_convert_then_transcribe(tmp_path):
    out = tmp_path / "model"
    r = _cli("convert", fixture_path("model", "conformer_tiny.pt"), "--config-yaml",
             fixture_path("model", "config.yaml"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    r = _cli("transcribe", "--model", str(out), fixture_path("fbank", "utt0_16k.wav"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("atw byear bdersent")
    assert load_model(str(out)).cfg.arch == "conformer"


def test_bad_model_directory(tmp_path):
    with pytest.raises(SpesError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(SpesError,
                       match=r"neither a model directory nor an embedded model \(asr, st, asr-spliced, st-spliced\)"):
        load_model("asr-splicedd")  # a misspelt name
