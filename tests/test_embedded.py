"""The embedded default model and sample utterances, as a user gets them from the package."""

import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf

import spes_jax
from spes_jax import SPESConfig, SpesError, assets, explain, load_model
from spes_jax.analysis.plausibility import time_alignment
from spes_jax.training.data import wer
from support import ROOT


def test_default_model_transcribes_the_bundled_samples():
    model = load_model()
    timings = assets.sample_timings()
    paths = assets.samples()
    assert len(paths) >= 4 and set(paths) == set(timings)
    hyps = model.transcribe(list(paths.values()))
    for (name, _), hyp in zip(paths.items(), hyps):
        assert hyp.text == timings[name]["text"]


def test_spliced_models_and_former_names():
    """The spliced-only models keep the bundled samples' transcripts and translations; the defaults' former
    names still load them."""
    timings = assets.sample_timings()
    paths = list(assets.samples().values())
    assert [h.text for h in load_model("asr-spliced").transcribe(paths)] == [t["text"] for t in timings.values()]
    assert [h.text for h in load_model("st-spliced").transcribe(paths)] == [t["translation"] for t in timings.values()]
    assert load_model("asr-robust").path == load_model("asr").path == assets.model_dir("asr")
    with pytest.raises(SpesError, match=r"^embedded model asr: --language and --occlusion are options of Whisper"):
        load_model("asr", occlusion="floor")
    assert assets.task("st-robust") == "st" and assets.task("some/dir") == "asr"


def test_default_st_model_on_the_bundled_samples():
    """st hears every sample's sentence frame; two of the four content nouns are wrong (measured
    2026-12-03: Bild -> Schüssel, Boot -> Bürste, Hund -> Ente; docs/models.md), so only the frame is
    checked."""
    hyps = load_model("st").transcribe(list(assets.samples().values()))
    frames = ["Der Stuhl ist hinter der Blume.", "Ich weiß, dass der Lehrer ", "Sieht der Junge die rote Lampe?",
              "Die blaue "]
    assert all(h.text.startswith(f) for h, f in zip(hyps, frames))


# The first eight sentences of held-out set (b) (never in training) with their German references.
HELD_OUT_B = [("does the student see the new flower?", "Sieht der Student die neue Blume?"),
              ("the cook shows the pilot the huge pig.", "Der Koch zeigt dem Piloten das riesige Schwein."),
              ("i see a hundred light scarves.", "Ich sehe hundert leichte Schals."),
              ("the singer shows the farmer the light clock.", "Die Sängerin zeigt dem Bauern die leichte Uhr."),
              ("the child holds the golden radio because the child throws the cow.",
               "Das Kind hält das goldene Radio, weil das Kind die Kuh wirft."),
              ("where is the candle?", "Wo ist die Kerze?"),
              ("the child has a short goat.", "Das Kind hat eine kurze Ziege."),
              ("how many tiny guitars does the driver touch?", "Wie viele winzige Gitarren berührt der Fahrer?")]


def _espeak_and_silence(model, sentences: list[str], tmp_path) -> tuple[list[str], str]:
    """``model``'s outputs for espeak-ng's own WAVs of ``sentences`` (en-us, 22.05 kHz, speech from the first
    sample) and for 3 s of digital silence."""
    wavs = [tmp_path / f"speech{i}.wav" for i in range(len(sentences))]
    for wav, sentence in zip(wavs, sentences):
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), sentence], check=True, capture_output=True)
    quiet = tmp_path / "silence.wav"
    sf.write(quiet, np.zeros(3 * 16000, np.float32), 16000, subtype="PCM_16")
    *speech, silence = model.transcribe([*map(str, wavs), str(quiet)])
    return [h.text for h in speech], silence.text


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_robust_model_on_raw_espeak_speech_and_silence(tmp_path):
    """What issue 12 found, on inputs made outside the training pipeline: espeak-ng's own WAVs (22.05 kHz,
    speech from the first sample) and 3 s of digital silence, on which asr-spliced answers with
    fluent sentences. Four held-out sentences of set (b) (never in training) and the issue's sentence,
    which no template of the grammar makes."""
    model = load_model("asr")
    assert model.search.min_len == 0
    held_out = [HELD_OUT_B[i][0] for i in (1, 2, 5, 6)]
    issue = "my sister finds the green bottle under the table"
    (*speech, outside), silence = _espeak_and_silence(model, [*held_out, issue], tmp_path)
    assert silence == ""
    # one sentence each (a model trained before --edge gave five for the issue's sentence)
    assert all(h.count(".") + h.count("?") == 1 for h in [*speech, outside])
    assert wer(held_out, speech) <= 15  # measured: 0 % (raw espeak-ng, en-us, 8 sentences: 1.5 %)
    # outside the templates the model keeps the frame it heard (asr-spliced: "what colour is the table?")
    assert outside.startswith("my sister finds the green ")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_robust_st_model_on_raw_espeak_speech_and_silence(tmp_path):
    """The robust ST model on espeak-ng's own WAVs of the first eight held-out sentences of set (b) (never in
    training, in a voice and recording the training pipeline did not make) and on 3 s of digital silence."""
    import sacrebleu

    model = load_model("st")
    assert model.search.min_len == 0 and assets.EMBEDDED["st"] == "st"
    # spoken without the final punctuation, as measured
    speech, silence = _espeak_and_silence(model, [en.rstrip(".?") for en, _ in HELD_OUT_B], tmp_path)
    assert silence == ""
    assert all(h.count(".") + h.count("?") == 1 for h in speech)
    # measured: 88.0 (en-us; two content nouns wrong, docs/models.md)
    assert sacrebleu.corpus_bleu(speech, [[de for _, de in HELD_OUT_B]]).score >= 70


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
    # built from a copy without build/: setuptools keeps files there that the tree no longer has (a
    # replaced model's old parameter shards) and would ship them
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns("build", "dist", ".venv", ".git", ".bench", "*.egg-info",
                                                             "__pycache__", ".pytest_cache", ".ruff_cache"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (wheel,) = [f for f in os.listdir(tmp_path) if f.endswith(".whl")]
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    for name in assets.EMBEDDED:
        for f in ("config.json", "dict.txt", "spm.model"):
            assert f"spes_jax/assets/models/{name}/{f}" in names
        assert any(n.startswith(f"spes_jax/assets/models/{name}/params/") for n in names)
    with zipfile.ZipFile(tmp_path / wheel) as z:  # the assets' size budget
        assert sum(i.file_size for i in z.infolist() if i.filename.startswith("spes_jax/assets/")) <= 25e6
    assert "spes_jax/assets/samples/timings.json" in names
    assert any(n.startswith("spes_jax/assets/samples/") and n.endswith(".wav") for n in names)
    # Every package of the source tree, the converter as spes_jax.convert, and no top-level "convert" or
    # "tests" (whose fixtures are 44 MB).
    packages = {os.path.relpath(d, ROOT) for d, _, files in os.walk(os.path.join(ROOT, "spes_jax"))
                if "__init__.py" in files}
    for pkg in packages | {"spes_jax/convert"}:
        assert f"{pkg}/__init__.py" in names, pkg
    assert not any(n.startswith(("convert/", "tests/")) for n in names)


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


def test_load_model_keeps_compiled_code_on_disk(tmp_path):
    """The Python API uses the command line's persistent compilation cache, unless JAX's is configured."""
    cache, wav = tmp_path / "xla", next(iter(assets.samples().values()))
    env = {**os.environ, "SPES_JAX_CACHE_DIR": str(cache)}
    run = "import jax, spes_jax; spes_jax.load_model().transcribe({!r}); print(jax.config.jax_compilation_cache_dir)"
    r = subprocess.run([sys.executable, "-c", run.format(wav)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(cache)] and os.listdir(cache)  # the beam search's executable
    off = "import jax; jax.config.update('jax_enable_compilation_cache', False); " + run.format(wav)
    r = subprocess.run([sys.executable, "-c", off], env={**env, "SPES_JAX_CACHE_DIR": str(tmp_path / "unused")},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split() == ["None"] and not os.path.exists(tmp_path / "unused"), r.stderr
