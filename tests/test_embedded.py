"""The embedded default model and sample utterances, as a user gets them from the package."""

import os
import subprocess
import sys
import zipfile

import pytest

import spes_jax
from spes_jax import SPESConfig, assets, explain, load_model
from spes_jax.analysis.plausibility import time_alignment
from support import ROOT


def test_default_model_transcribes_the_bundled_samples():
    model = load_model()
    timings = assets.sample_timings()
    paths = assets.samples()
    assert len(paths) >= 4 and set(paths) == set(timings)
    hyps = model.transcribe(list(paths.values()))
    for (name, _), hyp in zip(paths.items(), hyps):
        assert hyp.text == timings[name]["text"]


def test_embedded_st_model_translates_the_bundled_samples():
    model = load_model("st")
    timings = assets.sample_timings()
    for name, path in assets.samples().items():
        assert model.transcribe(path).text == timings[name]["translation"]


def test_cli_explain_defaults_to_the_embedded_model(tmp_path):
    wav = next(iter(assets.samples().values()))
    out = tmp_path / "exp.h5"
    r = subprocess.run([sys.executable, "-m", "spes_jax.cli", "explain", wav, "--masks", "96", "--token-masks", "16",
                        "--batch-size", "32", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "noisier maps" in r.stderr
    (exp,) = spes_jax.load_explanations(out).values()
    assert exp.tokens[-1] == "</s>" and exp.spectrogram_saliency.shape[2] == 80


def test_wheel_ships_models_and_samples(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), ROOT],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (wheel,) = [f for f in os.listdir(tmp_path) if f.endswith(".whl")]
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    for task in ("asr", "st"):
        for f in ("config.json", "dict.txt", "spm.model"):
            assert f"spes_jax/assets/models/{task}/{f}" in names
        assert any(n.startswith(f"spes_jax/assets/models/{task}/params/") for n in names)
    assert "spes_jax/assets/samples/timings.json" in names
    assert any(n.startswith("spes_jax/assets/samples/") and n.endswith(".wav") for n in names)
    # Every package of the source tree, the converter as spes_jax.convert, and no top-level "convert".
    packages = {os.path.relpath(d, ROOT) for d, _, files in os.walk(os.path.join(ROOT, "spes_jax"))
                if "__init__.py" in files}
    for pkg in packages | {"spes_jax/convert"}:
        assert f"{pkg}/__init__.py" in names, pkg
    assert not any(n.startswith("convert/") for n in names)


@pytest.mark.slow
def test_time_plausibility_on_bundled_samples():
    """Word saliency is higher inside the word's span than outside (paired t-test, p < 0.01)."""
    model = load_model()
    timings = assets.sample_timings()
    cfg = SPESConfig.asr(n_masks=3000, n_token_masks=0)
    pairs = []
    for name, path in assets.samples().items():
        exp = explain(model, path, cfg)
        spans = [(w["word"], w["start"], w["end"]) for w in timings[name]["words"]]
        pairs.append((exp, spans))
    res = time_alignment(pairs)
    assert res.n_words >= 20 and res.p < 0.01 and res.inside.mean() > res.outside.mean()
