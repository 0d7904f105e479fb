"""Helpers shared by the test modules (fixtures live in conftest.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The FBK-fairseq reference fixtures the tests read (tests/fixtures/fbk/README.md says where they come from).
FIXTURES = os.environ.get("SPES_FBK_FIXTURES", os.path.join(ROOT, "tests", "fixtures", "fbk"))
WHISPER_FIXTURES = os.environ.get("SPES_WHISPER_FIXTURES",
                                  os.path.join(ROOT, "..", "shared", "fixtures", "whisper"))
_NO_WHISPER = (f"Whisper fixtures not found at {WHISPER_FIXTURES}: the real Whisper tiny.en model and its reference "
               "outputs are in the project's shared fixtures (../shared/fixtures/whisper), not in the repository; "
               "set SPES_WHISPER_FIXTURES to their folder")
# CI has the shared fixtures: there a missing folder fails the Whisper tests instead of skipping them.
requires_whisper = pytest.mark.skipif(not os.path.isdir(WHISPER_FIXTURES) and os.environ.get("CI") != "true",
                                      reason=_NO_WHISPER)
VARIANTS = ("conformer_tiny", "conformer_tiny_ctccompress_avg", "s2t_transformer_fbk_tiny")


def fixture_path(*parts: str) -> str:
    """A file of the FBK reference fixtures. Missing fixtures fail the test: the parity tests are the
    ground truth and must not pass by skipping; set SPES_SKIP_FIXTURES=1 to skip them deliberately."""
    path = os.path.join(FIXTURES, *parts)
    if not os.path.exists(path):
        msg = f"FBK reference fixture {os.path.join(*parts)} not found in {FIXTURES} (SPES_FBK_FIXTURES overrides)"
        if os.environ.get("SPES_SKIP_FIXTURES") == "1":
            pytest.skip(msg)
        pytest.fail(msg + "; set SPES_SKIP_FIXTURES=1 to skip the parity tests", pytrace=False)
    return path


def whisper_fixture_path(*parts: str) -> str:
    """A file of the Whisper tiny.en fixtures; the test is skipped when the fixtures are absent (fails in CI)."""
    if not os.path.isdir(WHISPER_FIXTURES):
        if os.environ.get("CI") == "true":
            pytest.fail(_NO_WHISPER, pytrace=False)
        pytest.skip(_NO_WHISPER)
    return os.path.join(WHISPER_FIXTURES, *parts)


def reference_batch(ref, names=("input",)):
    """The reference's batch: inputs in ``batch_order`` zero-padded, and their lengths."""
    order = ref["batch_order"]
    inputs = [ref[f"input_{i}"] for i in order]
    T = max(x.shape[0] for x in inputs)
    feats = np.stack([np.pad(x, ((0, T - x.shape[0]), (0, 0))) for x in inputs])
    return order, feats, np.array([x.shape[0] for x in inputs])


def synthetic_features(seconds: float, seed: int = 0) -> np.ndarray:
    """CMVN-like features with some time-frequency structure (SLIC needs edges to find)."""
    rng = np.random.default_rng(seed)
    T = int(seconds * 100)
    t = np.arange(T)[:, None]
    c = np.arange(80)[None, :]
    x = np.sin(t / 7.0) * np.cos(c / 5.0) + 0.3 * rng.standard_normal((T, 80))
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32)


def fairseq_zip_manifest(directory, arrays: dict, texts: dict) -> str:
    """A fairseq S2T manifest (id, audio, n_frames, tgt_text, speaker) whose audio column points into
    an uncompressed features.zip of .npy arrays as ``features.zip:offset:length``."""
    import io
    import struct
    import zipfile

    zpath = os.path.join(directory, "features.zip")
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as z:
        for uid, arr in arrays.items():
            buf = io.BytesIO()
            np.save(buf, arr)
            z.writestr(f"{uid}.npy", buf.getvalue())
    rows = ["id\taudio\tn_frames\ttgt_text\tspeaker"]
    with zipfile.ZipFile(zpath) as z, open(zpath, "rb") as f:
        for info in z.infolist():
            f.seek(info.header_offset + 26)  # local header: name and extra-field lengths
            n_name, n_extra = struct.unpack("<HH", f.read(4))
            offset = info.header_offset + 30 + n_name + n_extra
            uid = info.filename[:-4]
            rows.append(f"{uid}\tfeatures.zip:{offset}:{info.file_size}\t{arrays[uid].shape[0]}\t{texts[uid]}\tspk")
    path = os.path.join(directory, "test.tsv")
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")
    return path


def save_tiny_model(model, directory) -> str:
    """Writes the tests' tiny random model as a model directory (for command-line tests)."""
    from spes_jax.models.io import save_model_dir

    dict_path = os.path.join(directory, "dict.txt")
    with open(dict_path, "w") as f:
        f.write("".join(f"{s} 1\n" for s in model.dictionary.symbols[4:]))
    return save_model_dir(os.path.join(directory, "model"), model.cfg, model.params, dict_path, None)


def on_four_devices(kind: str, model_dir: str) -> None:
    """Runs ``tests/four_devices.py KIND MODEL_DIR`` (one map on one and on four devices) in a fresh
    interpreter with four simulated CPU devices; fails with its error output unless it prints OK."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "four_devices.py"), kind, model_dir], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]
