"""Forced alignment (spes_jax.alignment): spoken forms, frame-to-second conversion, CTM output, and the
aligner against espeak-ng's own word timings."""

import ctypes.util
import importlib.util

import numpy as np
import pytest

from spes_jax.alignment import Aligner, Span, frame_spans, number_words, spoken_form, write_ctm
from spes_jax.errors import SpesError
from spes_jax.manifest import read_word_timings


@pytest.mark.parametrize("text, spoken", [
    ("Press 1 to record, or # to exit.", "press one to record or pound to exit"),
    ("Use the 7 key for Q.", "use the seven key for q"),
    ("3D audio enabled", "three d audio enabled"),
    ("your party's ext. 1,250", "your party's ext one thousand two hundred fifty"),
    ("Call-Forward on Busy...", "call forward on busy"),
    ("dial 007", "dial zero zero seven"),
    ("'quoted' words", "quoted words"),
])
def test_spoken_form(text, spoken):
    assert spoken_form(text) == spoken


def test_number_words():
    assert [number_words(n) for n in (0, 13, 40, 99, 100, 2026, 1_000_001)] == [
        "zero", "thirteen", "forty", "ninety nine", "one hundred", "two thousand twenty six",
        "one million one"]
    with pytest.raises(SpesError):
        number_words(10**9)


def test_frame_spans_drop_silence_and_use_half_open_10ms_frames():
    spans = frame_spans([("<sil>", 0, 45), ("go", 46, 63), ("the(2)", 64, 70), ("[NOISE]", 71, 72),
                         ("SIL", 73, 80), ("N", 81, 81)])
    assert spans == [Span("go", 0.46, 0.64), Span("the", 0.64, 0.71), Span("N", 0.81, 0.82)]


def test_ctm_reads_back_as_word_timings(tmp_path):
    spans = {"u1": [Span("go", 0.46, 0.64), Span("forward", 0.64, 1.17)], "u2": [Span("ten", 1.0, 1.36)]}
    write_ctm(tmp_path / "w.ctm", spans)
    back = read_word_timings(tmp_path / "w.ctm")
    assert back.keys() == spans.keys()
    for uid, ss in spans.items():
        assert [(w, round(a, 2), round(b, 2)) for w, a, b in back[uid]] == [(s.label, s.start, s.end) for s in ss]


needs_aligner = pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is None,
                                   reason="PocketSphinx is not installed (pip install 'spes-jax[align]')")


@needs_aligner
@pytest.mark.skipif(ctypes.util.find_library("espeak-ng") is None,
                    reason="espeak-ng's library is not installed (Debian: libespeak-ng1)")
def test_aligned_words_match_espeak_timings():
    """Synthesised speech whose word spans the synthesiser reports: the aligner, which never sees those
    spans, finds the same boundaries to a few frames."""
    from spes_jax.training.espeak import synthesize

    text = "Please press seven to hear the previous message again."
    x, truth = synthesize(text, "en-us", 150, 50)
    got = Aligner()(x, spoken_form(text))
    assert [s.label for s in got.words] == spoken_form(text).split()
    boundaries = np.array([[s.start - a, s.end - b] for s, (_, a, b) in zip(got.words, truth)])
    assert np.median(np.abs(boundaries)) <= 0.03
    mids = [(s.start + s.end) / 2 for s in got.words]
    assert np.mean([a <= m < b for m, (_, a, b) in zip(mids, truth)]) >= 0.8
    # phones tile each word: the first starts where the word starts, the last ends where it ends
    starts = {round(p.start, 2) for p in got.phones}
    ends = {round(p.end, 2) for p in got.phones}
    assert all(round(s.start, 2) in starts and round(s.end, 2) in ends for s in got.words)


@needs_aligner
def test_unknown_word_is_one_clear_error():
    with pytest.raises(SpesError, match="not in the dictionary: qzxvbn"):
        Aligner()(np.zeros(16000, np.float32), "hello qzxvbn")
    assert Aligner({"qzxvbn": "K Y UW"}).unknown_words(["hello", "qzxvbn"]) == []


def test_plot_alignment_draws_word_and_phone_labels(tmp_path):
    from spes_jax.analysis.plotting import plot_alignment

    fig = plot_alignment(np.random.default_rng(0).normal(size=(120, 80)), [("go", 0.2, 0.5), ("on", 0.6, 1.0)],
                         [("G", 0.2, 0.3), ("OW", 0.3, 0.5)], tmp_path / "a.png", title="t")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["go", "on", "G", "OW"] and (tmp_path / "a.png").stat().st_size > 0


@needs_aligner
def test_align_command_times_a_manifest_and_leaves_out_what_it_cannot_align(tmp_path, capsys):
    """`spes-jax align`: the bundled samples' transcripts against their audio (the aligned words' centres
    inside espeak-ng's own word spans), an utterance with unknown words left out with one warning, and CTM
    files that plot, report and plausibility read."""
    from spes_jax import assets
    from spes_jax.cli import main

    samples, timings = assets.samples(), assets.sample_timings()
    ids = list(samples)[:2]
    manifest = tmp_path / "m.tsv"
    manifest.write_text("id\taudio\treference\n" + "".join(f"{i}\t{samples[i]}\t{timings[i]['text']}\n" for i in ids)
                        + f"odd\t{samples[ids[0]]}\tzzxq blorf\n")
    words, phones = tmp_path / "w.ctm", tmp_path / "p.ctm"
    assert main(["align", str(manifest), "--out", str(words), "--phones", str(phones), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "odd: cannot align 'zzxq blorf': not in the dictionary" in err and "2 utterances aligned, 1 left out" in err
    got = read_word_timings(words)
    assert list(got) == ids and set(read_word_timings(phones)) == set(ids)
    for i in ids:
        truth = [(w["word"], w["start"], w["end"]) for w in timings[i]["words"]]
        assert [w for w, _, _ in got[i]] == [w for w, _, _ in truth]
        assert np.mean([a <= (s + e) / 2 < b for (_, s, e), (_, a, b) in zip(got[i], truth)]) >= 0.8
    assert main(["align", str(manifest), "--out", str(words)]) == 2  # exists: one line, nothing replaced
    assert "exists; pass --overwrite" in capsys.readouterr().err
    manifest.write_text(f"id\taudio\treference\nodd\t{samples[ids[0]]}\tzzxq\n")
    assert main(["align", str(manifest), "--out", str(tmp_path / "none.ctm")]) == 2
    assert "no utterance of" in capsys.readouterr().err and not (tmp_path / "none.ctm").exists()
