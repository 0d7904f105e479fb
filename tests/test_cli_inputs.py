"""Every input a user can give: bad input ends with one error line and leaves nothing behind;
long and silent audio, given targets, self-describing explanation files."""

import dataclasses
import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest
import soundfile as sf

from spes_jax import SPESConfig, SpesError, assets, load_explanations, save_explanations
from spes_jax.errors import SpesWarning
from spes_jax.explanation import Explanation
from spes_jax.inputs import check_length, check_silence, read_targets
from spes_jax.analysis.plausibility import align_words, hypothesis_words, match_timings, timed_words
from spes_jax.provenance import parameters_sha256, provenance
from support import ROOT, save_tiny_model

S = "\u2581"


def _exp(uid, words, T=120, space=S):
    """An explanation of a hypothesis of whole-word pieces with random maps."""
    pieces = [space + w for w in words] + ["</s>"]
    K = len(pieces)
    rng = np.random.default_rng(0)
    return Explanation(uid, pieces, rng.random((K, T, 80)).astype(np.float32),
                       np.tril(rng.random((K, K))).astype(np.float32), ["</s>"] + pieces[:-1], " ".join(words))


ENGLISH = [("the", 0.1, 0.3), ("chair", 0.3, 0.6), ("is", 0.6, 0.7), ("behind", 0.7, 0.9), ("the", 0.9, 1.0),
           ("flower", 1.0, 1.15)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs for the bad-input cases: an explanation file, a translation file, timings, audio, a manifest."""
    d = tmp_path_factory.mktemp("inputs")
    save_explanations(d / "asr.h5", [_exp("u1", ["the", "chair", "is", "behind", "the", "flower"])], {"task": "asr"})
    german = _exp("u1", ["Der", "Stuhl", "ist", "hinter", "der", "Blume"])
    save_explanations(d / "de.h5", [german], {"task": "asr"})  # a file that does not say it is a translation
    save_explanations(d / "st.h5", [german], {"task": "st"})
    (d / "timings.json").write_text('{"u1": {"words": [' + ", ".join(
        f'{{"word": "{w}", "start": {a}, "end": {b}}}' for w, a, b in ENGLISH) + "]}}")
    sf.write(d / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(16000), 16000, subtype="PCM_16")
    sf.write(d / "long.wav", 0.1 * np.random.default_rng(1).standard_normal(13 * 16000), 16000, subtype="PCM_16")
    sf.write(d / "stereo.wav", 0.1 * np.random.default_rng(2).standard_normal((16000, 2)), 16000, subtype="PCM_16")
    (d / "m.tsv").write_text("id\taudio\treference\nother\ta.wav\tthe chair\n")
    (d / "dir.h5").mkdir()
    (d / "audio_dir").mkdir()
    (d / "taken.h5").write_bytes(b"keep me")
    (d / "taken.png").write_bytes(b"keep me")
    (d / "cmp").mkdir()
    (d / "cmp" / "results.json").write_text("{}")
    (d / "ev").mkdir()
    (d / "ev" / "metrics.json").write_text("{}")
    return d


def _listing(d):
    return sorted((os.path.relpath(os.path.join(r, f), d), os.path.getsize(os.path.join(r, f)))
                  for r, _, fs in os.walk(d) for f in fs)


# (command line, words the one error line must contain)
BAD = [
    # bug 3: an existing directory as --out, refused before computing
    ("explain a.wav --out dir.h5", "dir.h5: is a directory"),
    ("explain a.wav --out fig.png", "written as HDF5"),
    ("explain a.wav --out taken.h5", "exists; pass --overwrite"),
    ("explain a.wav --out new.h5 --masks 0 --token-masks 0", "nothing to explain"),
    ("explain a.wav --out new.h5 --masks 2", "granularity levels"),
    # item 5: nothing before the error that it makes moot (no "explaining ..." line, no note on the masks,
    # no mix-down note on another input)
    ("explain stereo.wav missing.wav --out new.h5 --masks 30 --token-masks 3", "missing.wav"),
    # bug 2: evaluate fails without writing anything (and no --out-dir writes nothing at all)
    ("evaluate asr.h5 --out-dir ev2", "need --manifest"),
    ("evaluate asr.h5 --manifest m.tsv --out-dir ev2", "not in the manifest m.tsv, e.g. 'u1'"),
    ("evaluate asr.h5 --metrics size --out-dir ev", "metrics.json exists; pass --overwrite"),
    ("compare m.tsv --out-dir cmp", "results.json exists; pass --overwrite"),
    ("plot asr.h5 --out taken.png", "exists; pass --overwrite"),
    ("report asr.h5 --out r.pdf", "name it .html"),
    ("explain a.wav --out new.h5 --masks -5", "--masks must be >= 0, got -5"),
    ("plot asr.h5 --out f.png --clip-percentile 150", "argument --clip-percentile: '150': a number in (0, 100] or 'none' (see spes-jax plot --help)"),
    ("plot asr.h5 --out fig.h5", "not an image format"),
    ("plot asr.h5 --out fig.png --token chairs", "not a token of u1's hypothesis"),
    ("plausibility asr.h5 --out taken.h5", "exists; pass --overwrite"),
    # bug 1: German words with English timings of the same length are refused, not paired
    ("plausibility de.h5 --timings timings.json", "do not match the hypotheses"),
    ("plausibility st.h5 --timings timings.json", "explains translations (task st)"),
    # timings of other words are refused by every command that draws or tests them, not drawn
    ("plot de.h5 --out fig.png --timings timings.json", "do not match the hypotheses (e.g. u1: said "),
    ("report de.h5 --out r.html --timings timings.json", "do not match the hypotheses"),
    # item 5: a directory as audio (loads the embedded model first)
    ("transcribe audio_dir", "audio_dir: is a directory"),
    # every embedded model states and enforces its longest input (asr: 12 s, asr-spliced: 7 s)
    ("transcribe stereo.wav long.wav", "long.wav: audio is 13.0 s long; this model handles at most 12 s"),
    ("transcribe --model asr-spliced a.wav long.wav", "long.wav: audio is 13.0 s long; this model handles at most 7 s"),
]


def test_bad_input_one_error_line_no_traceback_nothing_written(files):
    """Each case runs ``python -m spes_jax.cli`` in a fresh process (all started at once)."""
    before = _listing(files)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [(cmd, words, subprocess.Popen([sys.executable, "-m", "spes_jax.cli", *cmd.split()], cwd=files,
                                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
             for cmd, words in BAD]
    for cmd, words, proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (cmd, err)
        assert err.count("\n") == 1 and err.startswith("spes-jax: error: ") and words in err, (cmd, err)
        assert "Traceback" not in err + out, cmd
    assert _listing(files) == before  # nothing written, nothing replaced


def test_version():
    from spes_jax import __version__

    r = subprocess.run([sys.executable, "-m", "spes_jax.cli", "--version"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"spes-jax {__version__}"
    pyproject = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "spes_jax.__version__"' in pyproject


def test_words_are_matched_by_content():
    words = hypothesis_words([S + "The", S + "do", "g", ",", S + "sat", "</s>"])
    assert words == ["The", "dog", "sat"]
    timed = [("uh", 0.0, 0.1), ("the", 0.1, 0.2), ("dog", 0.2, 0.5), ("sat.", 0.5, 0.8)]
    assert align_words(words, timed) == timed[1:]  # an extra timed word does not shift the others
    assert align_words(["the", "cat", "sat"], timed) == [timed[1], None, timed[3]]
    # Per token, the timed word that plot and report highlight: Whisper's "He", "ill-disposed", "10"
    # against a transcript's "he", "ill", "disposed", "ten".
    pieces = [S + "He", S + "was", S + "ill", "-", "dis", "posed", S + "10", ".", "</s>"]
    timed = [("he", 0.1, 0.2), ("was", 0.2, 0.4), ("ill", 0.4, 0.6), ("disposed", 0.6, 1.0), ("ten", 1.0, 1.3)]
    assert timed_words(pieces, timed) == [[0], [1], [2, 3], [2, 3], [2, 3], [2, 3], [4], [], []]
    assert timed_words(pieces, None) == [[]] * 9
    english = {"u1": ENGLISH}
    pairs, skipped = match_timings([_exp("u1", ["the", "chair", "is", "behind", "the", "flower"])], english)
    assert [s for s in pairs[0][1]] == ENGLISH and not skipped
    # Same number of words, other language: skipped, never paired by position.
    pairs, skipped = match_timings([_exp("u1", ["Der", "Stuhl", "ist", "hinter", "der", "Blume"])], english)
    assert pairs == [] and skipped == ["u1"]


def test_targets(tiny_model, tmp_path):
    assert read_targets(tiny_model, "w1 w2 w3", 1) == [[5, 6, 7, 2]]
    (tmp_path / "t.txt").write_text("w1 w2\nw3\n")
    assert read_targets(tiny_model, str(tmp_path / "t.txt"), 2) == [[5, 6, 2], [7, 2]]
    for arg, n, msg in [("w1 zebra", 1, "does not know: zebra"), ("w1", 2, "a text explains one audio file"),
                        (str(tmp_path / "t.txt"), 3, "2 lines for 3 audio"), ("  ", 1, "--targets: empty text")]:
        with pytest.raises(SpesError, match=msg):
            read_targets(tiny_model, arg, n)


def test_long_and_silent_input_warnings(tiny_model):
    cfg = SPESConfig.asr(n_masks=300, n_token_masks=30)
    with pytest.warns(SpesWarning, match=r"x.wav: 70 s \(7000 frames\) is longer than the model's max source "
                                         r"positions \(6000 frames\), so it never saw such an input; explaining it "
                                         r"runs 330 forward passes"):
        check_length(7000, tiny_model, cfg, "x.wav")
    with pytest.warns(SpesWarning, match=r"x.wav: 70 s .* such an input; expect words dropped or made up$"):
        check_length(7000, tiny_model, None, "x.wav")  # transcribed only
    rng = np.random.default_rng(0)
    with pytest.warns(SpesWarning, match="s.wav: the audio is silent .* any words the model writes for it are not in the audio"):
        check_silence(1e-5 * rng.standard_normal(16000), "s.wav")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_length(6000, tiny_model, cfg, "x.wav")
        speech = np.concatenate([np.zeros(16000), 0.1 * rng.standard_normal(4000)])  # silence, then a word
        check_silence(speech, "w.wav")


def test_every_embedded_model_states_its_longest_input():
    import json

    for name in assets.EMBEDDED:
        with open(os.path.join(assets.model_dir(name), "config.json")) as f:
            assert json.load(f)["data"].get("max_seconds", 0) > 0, name


def test_transcribe_warns_as_explain_does_each_note_once(tiny_model, tmp_path, capsys):
    """Silent and overly long input get explain's warnings (before any output), a stereo file its note."""
    from spes_jax.cli import main

    model = save_tiny_model(tiny_model, str(tmp_path))
    noise = 0.1 * np.random.default_rng(0).standard_normal(61 * 16000)
    paths = [str(tmp_path / n) for n in ("quiet.wav", "long.wav", "stereo.wav")]
    sf.write(paths[0], np.zeros(16000), 16000, subtype="PCM_16")
    sf.write(paths[1], noise, 16000, subtype="PCM_16")
    sf.write(paths[2], np.stack([noise[:16000]] * 2, axis=1), 16000, subtype="PCM_16")
    assert main(["transcribe", "--model", model, "--greedy", *paths]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3
    *lines, model_line = err.splitlines()
    assert model_line == f"spes-jax: model: {model}" and len(lines) == 3, err
    quiet, long = (re.escape(p) for p in paths[:2])
    assert re.fullmatch(rf"spes-jax: warning: {quiet}: the audio is silent .* are not in the audio", lines[0])
    assert re.fullmatch(rf"spes-jax: warning: {long}: 61 s \(6098 frames\) is longer than the model's max source "
                        r"positions .*; expect words dropped or made up", lines[1])
    assert lines[2] == f"spes-jax: note: {paths[2]}: 2 channels mixed down to mono"


def test_plausibility_says_what_it_skips(files, capsys):
    from spes_jax.cli import main

    assert main(["plausibility", str(files / "asr.h5")]) == 0
    assert "spes-jax: note: time alignment skipped: it needs word timings" in capsys.readouterr().err
    assert main(["plausibility", str(files / "st.h5")]) == 0  # a translation has no time alignment to skip
    assert "time alignment" not in capsys.readouterr().err
    small = dataclasses.replace(_exp("u1", ["go", "on"]), n_masks=300)  # and says what a small budget means
    save_explanations(files / "small.h5", [small], {"task": "asr"})
    assert main(["plausibility", str(files / "small.h5")]) == 0
    assert "made with 300 spectrogram masks (the paper's: 20000)" in capsys.readouterr().err
    silent = dataclasses.replace(_exp("quiet", []), n_masks=300)  # only </s>: nothing to test
    save_explanations(files / "silent.h5", [silent], {"task": "asr"})
    assert main(["plausibility", str(files / "silent.h5")]) == 2
    assert "nothing to analyse: every explained hypothesis is empty (e.g. 'quiet')" in capsys.readouterr().err
    save_explanations(files / "mixed.h5", [small, silent], {"task": "asr"})
    assert main(["plausibility", str(files / "mixed.h5")]) == 0
    assert "1 utterance with an empty hypothesis left out (e.g. 'quiet')" in capsys.readouterr().err


def test_provenance_makes_files_self_describing(tiny_model, tmp_path):
    wav = tmp_path / "u.wav"
    sf.write(wav, 0.1 * np.random.default_rng(0).standard_normal(9600), 16000, subtype="PCM_16")
    cfg = SPESConfig.asr(n_masks=48, n_token_masks=16)
    exp = _exp("u", ["w1", "w2", "w3"], T=60, space="")
    attrs, exps = provenance(tiny_model, cfg, "asr", [exp], [str(wav)], seconds=1.5)
    save_explanations(tmp_path / "x.h5", exps, attrs)
    with h5py.File(tmp_path / "x.h5") as f:
        assert f.attrs["sample_rate"] == 16000 and f.attrs["frame_shift_s"] == 0.01 and f.attrs["seconds"] == 1.5
        assert f.attrs["features"].startswith("80-bin log-mel") and f.attrs["features"].endswith("utterance CMVN")
        assert f.attrs["library"].startswith("spes-jax ") and f.attrs["task"] == "asr"
        assert f.attrs["model_sha256"] == parameters_sha256(tiny_model.params)
        g = f["u"]
        assert g["fbank_heatmap"].attrs["axes"] == "token, frame, mel_bin"
        assert g["fbank_heatmap"].shape == (4, 60, 80)
        assert g["tgt_embed_heatmap"].attrs["axes"] == "token, prefix_position, singleton"
        assert list(g.attrs["token_ids"]) == [5, 6, 7, 2]
        assert g.attrs["audio"] == str(wav) and len(g.attrs["audio_sha256"]) == 64
    exp = load_explanations(tmp_path / "x.h5")["u"]
    assert exp.meta["audio"] == str(wav)
    text = repr(exp)
    assert text.startswith("Explanation(id='u', text='w1 w2 w3', 4 tokens, spectrogram_saliency (4, 60, 80)")
    assert len(text) < 200
    # The hash is of the parameters' values: any change shows.
    changed = dict(tiny_model.params)
    assert parameters_sha256(tiny_model.params) == parameters_sha256(dict(tiny_model.params))
    key = next(iter(changed))
    import jax

    changed[key] = jax.tree_util.tree_map(lambda x: x + 1, changed[key])
    assert parameters_sha256(changed) != parameters_sha256(tiny_model.params)


def test_library_warnings_print_as_one_line_once(capsys):
    from spes_jax.cli import _warning_printer
    from spes_jax.errors import SpesNote

    show = _warning_printer()
    for _ in range(2):  # e.g. a file read once to check it and once to use it
        show("a.mp3: resampled from 44100 Hz to 16000 Hz", SpesNote, "audio.py", 1)
        show("s.wav: the audio is silent", SpesWarning, "inputs.py", 1)
    assert capsys.readouterr().err == ("spes-jax: note: a.mp3: resampled from 44100 Hz to 16000 Hz\n"
                                       "spes-jax: warning: s.wav: the audio is silent\n")


def test_timings_of_other_utterances(files, tmp_path, capsys):
    from spes_jax.cli import main

    (tmp_path / "t.json").write_text('{"u9": {"words": [{"word": "the", "start": 0.1, "end": 0.3}]}}')
    for command in (["plausibility"], ["plot", "--out", str(tmp_path / "f.png")], ["report", "--out", str(tmp_path / "r.html")]):
        assert main([command[0], str(files / "asr.h5"), *command[1:], "--timings", str(tmp_path / "t.json")]) == 2
        assert "t.json has no timings for u1 (it times u9)" in capsys.readouterr().err, command
    assert main(["plausibility", str(files / "asr.h5"), "--timings", str(files / "timings.json")]) == 0
    assert "time alignment: 1 utterance (0 skipped), 6 words" in capsys.readouterr().out


def test_aggregated_maps_are_refused_where_per_token_maps_are_needed(files, tmp_path, capsys):
    from spes_jax.cli import main

    agg = str(tmp_path / "agg.h5")
    assert main(["aggregate", str(files / "asr.h5"), "--words", "--normalize", "--out", agg]) == 0
    for command in (["report", "--out", str(tmp_path / "r.html")], ["plausibility"],
                    ["evaluate", "--metrics", "size"]):
        capsys.readouterr()
        assert main([command[0], agg, *command[1:]]) == 2, command
        assert "holds aggregated maps (words or phrases, written by 'spes-jax aggregate')" in capsys.readouterr().err
    assert main(["plot", agg, "--out", str(tmp_path / "a.png")]) == 0  # plot draws them
    assert not (tmp_path / "r.html").exists()
