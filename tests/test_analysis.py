"""Plausibility analyses, figures, manifests, ``spes-jax compare / evaluate / plot / plausibility``."""

import copy
import dataclasses
import json
import os
import warnings

import h5py
import numpy as np
import pytest

from spes_jax import SPESConfig, SpesError, explain, load_explanations, load_model
from spes_jax.assets import sample_timings, samples
from spes_jax.cli import main
from spes_jax.analysis.compare import METHODS, compare, method_config
from spes_jax.explanation import Explanation
from spes_jax.manifest import Entry, read_manifest, read_word_timings, write_manifest
from spes_jax.analysis.plausibility import kurtosis_ranking, match_timings, positional_saliency

IDS = ["test00000", "test00002"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A manifest of two bundled samples and their explanations by the embedded ASR model."""
    d = tmp_path_factory.mktemp("corpus")
    wavs, timings = samples(), sample_timings()
    write_manifest(d / "asr.tsv", [Entry(i, wavs[i], timings[i]["text"]) for i in IDS])
    model = load_model()
    exps = explain(model, [wavs[i] for i in IDS], SPESConfig.asr(n_masks=300, n_token_masks=60))
    path = d / "exp.h5"
    from spes_jax.explanation import save_explanations

    save_explanations(path, exps, {"task": "asr"})
    return d, model, exps


def test_manifest_and_timings(tmp_path, corpus):
    d, _, _ = corpus
    entries = read_manifest(d / "asr.tsv")
    assert [e.id for e in entries] == IDS and entries[0].reference == sample_timings()[IDS[0]]["text"]
    ctm = tmp_path / "w.ctm"
    ctm.write_text(";; comment\nu1 1 0.50 0.25 world 0.9\nu1 1 0.10 0.30 hello\n")
    assert read_word_timings(ctm) == {"u1": [("hello", 0.1, 0.4), ("world", 0.5, 0.75)]}
    bundled = os.path.join(os.path.dirname(samples()[IDS[0]]), "timings.json")
    assert read_word_timings(bundled)[IDS[0]][0][0] == "the"
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\tpath\nu\tx.wav\n")
    with pytest.raises(SpesError, match="'audio' column"):
        read_manifest(bad)
    bad.write_text("audio\treference\nmissing.wav\thi\n")
    with pytest.raises(SpesError, match="not found"):
        read_manifest(bad)
    # A result's readers check only its utterances' rows (a corpus run skips rows it cannot read).
    bad.write_text(f"id\taudio\treference\ngone\tmissing.wav\thi\nok\t{entries[0].audio}\tyes\n")
    assert read_manifest(bad, ids={"ok"}) == [Entry("ok", entries[0].audio, "yes")]
    bad.write_text(f"id\taudio\treference\nok\tmissing.wav\thi\nok\t{entries[0].audio}\tyes\n")
    with pytest.raises(SpesError, match="not unique"):
        read_manifest(bad, ids={"x"})
    (tmp_path / "x.ctm").write_text("u1 1 zero 0.3 w\n")
    with pytest.raises(SpesError, match="CTM"):
        read_word_timings(tmp_path / "x.ctm")


def _exp(prefix, K=4, T=6):
    return Explanation("u", [f"t{k}" for k in range(K)], np.random.default_rng(0).random((K, T, 3)).astype(np.float32),
                       np.asarray(prefix, np.float32), ["</s>"] + [f"t{k}" for k in range(K - 1)])


def test_positional_saliency_by_hand():
    # Already-normalised maps: start about 0.5, latest about 0.9, intermediate about 0.1.
    K, rng = 5, np.random.default_rng(0)
    exps = []
    for _ in range(3):
        p = np.tril(0.1 + 0.05 * rng.random((K, K)))
        p[:, 0] = 0.5 + 0.05 * rng.random(K)
        p[np.arange(K), np.arange(K)] = 0.9 + 0.05 * rng.random(K)
        exps.append(Explanation("u", list("abcd") + ["</s>"], np.zeros((K, 5, 2), np.float32), p.astype(np.float32),
                                is_normalized=True))
    pos = positional_saliency(exps)
    assert len(pos.start) == len(pos.latest) == 3 * (K - 1) and len(pos.intermediate) == 3 * (1 + 2 + 3)
    assert 0.5 <= pos.start.min() and pos.start.max() < 0.55 and pos.latest.min() >= 0.9
    assert pos.intermediate.max() < 0.15
    assert all(p < 1e-6 for _, p in pos.tests.values())


def test_kurtosis_ranks_peaked_maps_first():
    K, T, C = 2, 20, 10
    spec = np.zeros((K, T, C), np.float32)
    spec[0, 5, 5] = 1.0  # one salient cell: very peaked
    spec[1] = np.random.default_rng(0).random((T, C))  # diffuse
    exp = Explanation("u", ["_word", "."], spec, np.tril(np.ones((K, K), np.float32)), ["</s>", "_word"])
    ranking = kurtosis_ranking([exp])
    assert [r.token for r in ranking] == ["_word", "."] and ranking[0].kurtosis > 100 > ranking[1].kurtosis
    assert kurtosis_ranking([exp], min_count=2) == []


def test_match_timings_by_content(corpus):
    _, _, exps = corpus
    timings = read_word_timings(os.path.join(os.path.dirname(samples()[IDS[0]]), "timings.json"))
    timings[IDS[0]] = timings[IDS[0]][1:]  # the first word untimed: the others keep their own spans
    timings[IDS[1]] = timings["test00001"]  # another sentence's words: not paired
    pairs, skipped = match_timings(exps, timings)
    assert [e.id for e, _ in pairs] == [IDS[0]] and skipped == [IDS[1]]
    spans = pairs[0][1]
    assert spans[0] is None and spans[1:] == timings[IDS[0]]


def test_plot_explanation(tmp_path, corpus):
    _, model, exps = corpus
    exp = exps[0]
    from spes_jax.analysis.plotting import plot_explanation, plot_token_grid

    fig = plot_explanation(exp, model.features(samples()[exp.id]), token=1, path=tmp_path / "f.png")
    assert len(fig.axes) == 8  # spectrogram, map, overlay, prefix bars, prefix matrix + 3 colour bars
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(plot_explanation(exp).axes) == 5  # without features: the map, the bars, the matrix + 2 colour bars
    with pytest.raises(SpesError, match="out of range"):
        plot_explanation(exp, token=99)
    with pytest.raises(SpesError, match="do not match"):
        plot_explanation(exp, np.zeros((5, 80), np.float32))
    # A part explained with no masks: its panels say so, without maps or colour bars.
    no_spec = dataclasses.replace(exp, spectrogram_saliency=np.zeros_like(exp.spectrogram_saliency), n_masks=0)
    fig = plot_explanation(no_spec, model.features(samples()[exp.id]))
    assert len(fig.axes) == 6 and sum("--masks 0" in t.get_text() for a in fig.axes for t in a.texts) == 2
    no_prefix = dataclasses.replace(exp, prefix_saliency=np.zeros_like(exp.prefix_saliency), n_token_masks=0)
    fig = plot_explanation(no_prefix)
    assert len(fig.axes) == 4 and sum("--token-masks 0" in t.get_text() for a in fig.axes for t in a.texts) == 2
    with pytest.raises(SpesError, match="not explained"):
        plot_token_grid(no_spec)
    # The reference's files record no mask counts: their maps are drawn.
    assert len(plot_explanation(dataclasses.replace(exp, n_masks=0, n_token_masks=0)).axes) == 5


def test_cli_evaluate_plot_plausibility(tmp_path, corpus, capsys):
    d, _, _ = corpus
    out = tmp_path / "eval"
    # Insertion is the same batched decode with the complementary cells (tests/test_metrics.py).
    assert main(["evaluate", str(d / "exp.h5"), "--manifest", str(d / "asr.tsv"), "--metrics", "deletion",
                 "size", "--out-dir", str(out)]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["deletion"]["scorer"] == "wer_max" and len(res["deletion"]["scores"]) == 21
    _, model, exps = corpus
    for exp in exps:  # p = 0 decodes exactly the explained hypothesis (batched with the 20 other levels)
        assert res["deletion"]["hypotheses"][exp.id][0] == exp.text == model.transcribe(samples()[exp.id]).text
    assert res["deletion"]["scores"][0] == 0.0  # the model transcribes both samples correctly
    assert {p.name for p in out.iterdir()} == {"metrics.json", "deletion.png", "size.png"}
    captured = capsys.readouterr()
    # The decoding has a bar saying how it decodes (beam search of Whisper's deleted inputs took minutes).
    assert "deletion: decoding 21 levels of 2 utterances with beam search (--greedy is faster)" in captured.err
    lines = captured.out.splitlines()
    deletion = [line for line in lines if line.startswith("deletion AUC")]
    assert deletion == [f"deletion AUC\t{res['deletion']['auc']:.2f}\t(wer_max over the fraction of "
                        "features deleted, 0..1, the paper's scale; higher is more faithful)"]
    # Without --out-dir nothing is written (not even into the current directory).
    cwd = os.getcwd()
    os.chdir(tmp_path / "eval")
    try:
        assert main(["evaluate", str(d / "exp.h5"), "--metrics", "size"]) == 0
    finally:
        os.chdir(cwd)
    assert {p.name for p in out.iterdir()} == {"metrics.json", "deletion.png", "size.png"}
    timings = os.path.join(os.path.dirname(samples()[IDS[0]]), "timings.json")
    assert main(["plausibility", str(d / "exp.h5"), "--timings", timings, "--out", str(tmp_path / "p.json")]) == 0
    p = json.loads((tmp_path / "p.json").read_text())
    assert p["time_alignment"]["utterances"] == 2 and p["kurtosis"] and "latest>start" in p["positional"]["tests"]
    assert main(["plot", str(d / "exp.h5"), "--id", IDS[1], "--audio", samples()[IDS[1]], "--token", "0",
                 "--out", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").stat().st_size > 10000
    assert main(["plot", str(d / "exp.h5"), "--id", IDS[1], "--out", str(tmp_path / "fig.png")]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    capsys.readouterr()
    # Bad input: one line, exit 2, nothing written.
    assert main(["evaluate", str(d / "exp.h5"), "--out-dir", str(tmp_path / "e2")]) == 2
    assert "need --manifest" in capsys.readouterr().err
    assert main(["plot", str(d / "exp.h5"), "--id", "nope", "--out", str(tmp_path / "g.png")]) == 2
    assert not (tmp_path / "g.png").exists()
    capsys.readouterr()
    assert main(["plot", str(d / "exp.h5"), "--id", IDS[1], "--audio", samples()[IDS[0]],
                 "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert "frames but explanation" in err and "not the audio that was explained" in err and "anyway" not in err
    assert not (tmp_path / "g.png").exists()
    assert main(["compare", str(d / "asr.tsv"), "--out-dir", str(tmp_path / "c"), "--methods", "LIME"]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_method_budgets():
    spes, bubble = method_config("SPES", "asr"), method_config("Bubble Noise", "asr")
    assert (spes.n_masks, spes.n_token_masks, bubble.n_masks) == (20000, 2000, 1000)
    small = {n: method_config(n, "st", budget_scale=0.05) for n in METHODS}
    assert small["SPES"].n_masks == 1000 and small["Bubble Noise"].n_masks == 50
    assert small["SPES"].threshold_duration == 500 and small["- KL"].scorer == "prob_diff"
    assert small["feature-wise"].p_spec == 0.7 and small["- multi-scale"].n_levels == 1
    assert small["- clustering"].segmentation == "grid" and not small["- duration adaptation"].duration_adaptive
    with pytest.raises(SpesError, match="budget-scale"):
        method_config("SPES", "asr", budget_scale=0)


def test_compare_writes_table_and_reuses_explanations(tmp_path, corpus):
    d, model, _ = corpus
    entries = read_manifest(d / "asr.tsv")[:1]
    methods = ["SPES", "Bubble Noise"]
    payload = compare(model, entries, "asr", str(tmp_path), budget_scale=0.01, methods=methods, progress=False)
    assert [m["method"] for m in payload["methods"]] == methods
    assert [m["n_masks"] for m in payload["methods"]] == [200, 10]  # 1 % of 20,000 and of 1,000, exactly
    table = (tmp_path / "table.md").read_text()
    assert "| SPES |" in table and "ASR, 1 utterance, budget scale 0.01" in table and "decoded with beam search" in table
    assert {"spes.h5", "bubble_noise.h5", "results.json", "deletion.png", "size.png"} <= set(os.listdir(tmp_path))
    assert list(load_explanations(tmp_path / "spes.h5")) == IDS[:1]
    before = os.path.getmtime(tmp_path / "spes.h5")
    again = compare(model, entries, "asr", str(tmp_path), budget_scale=0.01, methods=["SPES"], progress=False)
    assert os.path.getmtime(tmp_path / "spes.h5") == before  # reused, not recomputed
    assert again["methods"][0]["deletion_auc"] == payload["methods"][0]["deletion_auc"]
    # The same weights loaded with other options (a Whisper occlusion, say): explained anew.
    floor = copy.copy(model)
    floor.__class__ = type("Floor", (type(model),), {"options": property(lambda m: {"occlusion": "floor"})})
    compare(floor, entries, "asr", str(tmp_path), budget_scale=0.01, methods=["SPES"], progress=False)
    with h5py.File(tmp_path / "spes.h5") as f:
        assert json.loads(f.attrs["model_options"]) == {"occlusion": "floor"}


def test_compare_batch_size_changes_no_result(tmp_path, corpus, capsys):
    """The maps agree up to float summation order (so the size AUC, a count of cells above thresholds,
    may move by a few cells), and a rerun at another batch size reuses the explanations."""
    d, model, _ = corpus
    entries = read_manifest(d / "asr.tsv")[:1]
    runs = [compare(model, entries, "asr", str(tmp_path / str(b)), budget_scale=0.01, methods=["SPES"],
                    progress=False, batch_size=b)["methods"][0] for b in (None, 8)]
    maps = [load_explanations(tmp_path / str(b) / "spes.h5")[entries[0].id] for b in (None, 8)]
    np.testing.assert_allclose(maps[1].spectrogram_saliency, maps[0].spectrogram_saliency, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(maps[1].prefix_saliency, maps[0].prefix_saliency, rtol=1e-4, atol=1e-7)
    assert runs[1]["size_auc"] == pytest.approx(runs[0]["size_auc"], abs=0.05)
    capsys.readouterr()
    compare(model, entries, "asr", str(tmp_path / "8"), budget_scale=0.01, methods=["SPES"], progress=False,
            batch_size=16)
    assert f"SPES: reusing {tmp_path / '8' / 'spes.h5'}" in capsys.readouterr().err


def test_compare_reruns_with_the_recorded_model_and_never_reuses_another_models(tmp_path, corpus, capsys):
    from spes_jax.provenance import parameters_sha256

    d, _, _ = corpus
    run = ["compare", str(d / "asr.tsv"), "--limit", "1", "--out-dir", str(tmp_path), "--budget-scale", "0.01",
           "--methods", "SPES", "--quiet", "--overwrite"]
    assert main(run) == 0
    before = os.path.getmtime(tmp_path / "spes.h5")
    capsys.readouterr()
    assert main(run) == 0  # a rerun: the model the explanations were made with, and they are reused
    assert f"model: embedded model asr (the one {tmp_path / 'spes.h5'} was made with)" in capsys.readouterr().err
    assert os.path.getmtime(tmp_path / "spes.h5") == before
    assert main(run + ["--model", "asr-spliced"]) == 0  # another model: explained anew
    with h5py.File(tmp_path / "spes.h5") as f:
        assert f.attrs["model_sha256"] == parameters_sha256(load_model("asr-spliced").params)


def test_paper_table_layout(tmp_path, corpus, capsys):
    from spes_jax.analysis.compare import paper_table

    def payload(task, scorer, higher):
        return {"task": task, "scorer": scorer, "deletion_higher_is_better": higher,
                "methods": [{"method": "SPES", "deletion_auc": 90.0, "size_auc": 30.0},
                            {"method": "feature-wise", "deletion_auc": 70.0, "size_auc": 48.0}]}

    text = paper_table([payload("asr", "wer_max", True), payload("st", "bleu", False)])
    assert text.splitlines()[0] == ("| method | ASR deletion (WER) ↑ | ASR size ↓ | ST deletion (BLEU) ↓ | "
                                    "ST size ↓ |")
    assert "| SPES | 90.00 | 30.00 | 90.00 | 30.00 |" in text
    d, _, _ = corpus
    assert main(["compare", str(d / "asr.tsv"), str(d / "asr.tsv"), "--task", "asr",
                 "--out-dir", str(tmp_path)]) == 2
    assert "one value per manifest" in capsys.readouterr().err
    assert main(["compare", str(d / "asr.tsv"), str(d / "asr.tsv"), "--task", "asr", "asr", "--model", "asr",
                 "--out-dir", str(tmp_path)]) == 2
    assert "--model needs one value per manifest (2), got 1" in capsys.readouterr().err


def test_plot_finds_the_recorded_audio_and_tokens_by_piece(tmp_path, corpus, capsys):
    import shutil
    import struct

    from spes_jax.commands import _token_index
    from spes_jax.provenance import provenance

    d, model, exps = corpus
    wav = tmp_path / "moved.wav"
    shutil.copy(samples()[IDS[0]], wav)
    attrs, recorded = provenance(model, SPESConfig.asr(n_masks=300, n_token_masks=60), "asr", exps[:1], [str(wav)])
    save = tmp_path / "p.h5"
    from spes_jax.explanation import save_explanations

    save_explanations(save, recorded, attrs)
    piece = exps[0].tokens[1]
    assert _token_index(exps[0], piece) == _token_index(exps[0], piece.lstrip("\u2581")) == 1
    assert _token_index(exps[0], "-1") == -1  # negative indices count from the end, as in Python
    capsys.readouterr()
    assert main(["plot", str(save), "--token", piece.lstrip("\u2581"), "--out", str(tmp_path / "a.png")]) == 0
    assert capsys.readouterr().err == f"wrote {tmp_path / 'a.png'}\n"  # the audio was found, no warning
    wav.unlink()
    assert main(["plot", str(save), "--out", str(tmp_path / "b.png")]) == 0
    assert "moved.wav is not there; drawing the maps only" in capsys.readouterr().err
    height = lambda p: struct.unpack(">I", p.read_bytes()[20:24])[0]  # PNG header
    assert height(tmp_path / "a.png") > height(tmp_path / "b.png")  # spectrogram and overlay panels drawn


def test_result_model_is_the_recorded_one(tmp_path, corpus):
    import shutil

    from spes_jax.assets import model_dir
    from spes_jax.provenance import file_provenance, result_model

    _, asr, _ = corpus
    spliced = load_model("asr-spliced")
    attrs = file_provenance(spliced, SPESConfig.asr(), "asr")
    model, line = result_model(attrs, "r.h5")
    assert model.path == spliced.path and line == "embedded model asr-spliced (the one r.h5 was made with)"
    assert result_model(attrs, "r.h5", "asr-spliced")[0].path == spliced.path
    with pytest.raises(SpesError, match="r.h5 was made with embedded model asr-spliced .parameters sha256 [0-9a-f]{12}., "
                                        "not with --model asr: .* or add --force-model"):
        result_model(attrs, "r.h5", "asr")
    model, line = result_model(attrs, "r.h5", "asr", force=True)
    assert model.path == asr.path and line.startswith("embedded model asr, by --force-model; r.h5 was made with")
    # an embedded model recorded by another installation: this installation's model of that name
    elsewhere = {**attrs, "model_path": "/elsewhere/spes_jax/assets/models/asr-spliced"}
    assert result_model(elsewhere, "r.h5")[0].path == spliced.path
    # made before the robust models became asr and st: recorded as "asr", found by its parameters
    assert result_model({**attrs, "model_path": "/old/spes_jax/assets/models/asr"}, "r.h5")[0].path == spliced.path
    assert result_model({**attrs, "model_path": asr.path}, "r.h5")[0].path == spliced.path
    # a model directory that is gone, or that now holds other parameters: one error naming it
    with pytest.raises(SpesError, match="made with /gone/model .*, which is not there any more; pass that model "
                                        "with --model DIR"):
        result_model({**attrs, "model_path": "/gone/model"}, "r.h5")
    copy = shutil.copytree(model_dir("asr"), tmp_path / "m")
    with pytest.raises(SpesError, match="whose parameters have changed since"):
        result_model({**attrs, "model_path": str(copy)}, "r.h5")
    # nothing recorded (e.g. the reference's files): the default, and the line says so
    model, line = result_model({"task": "st"}, "ref.h5", default="st")
    assert model.path.endswith("st") and "ref.h5 records no model" in line


def test_evaluate_decodes_with_the_recorded_model(tmp_path, corpus, capsys):
    from spes_jax.explanation import save_explanations
    from spes_jax.provenance import provenance

    d, _, exps = corpus
    spliced = load_model("asr-spliced")
    wav = samples()[IDS[0]]
    attrs, recorded = provenance(spliced, SPESConfig.asr(), "asr", exps[:1], [wav])
    save_explanations(tmp_path / "r.h5", recorded, attrs)
    run = ["evaluate", str(tmp_path / "r.h5"), "--manifest", str(d / "asr.tsv"), "--metrics", "deletion",
           "--step", "50"]
    capsys.readouterr()
    assert main(run + ["--out-dir", str(tmp_path / "e")]) == 0
    assert f"spes-jax: model: embedded model asr-spliced (the one {tmp_path / 'r.h5'} was made with)\n" \
        in capsys.readouterr().err
    res = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert res["model"] == spliced.path
    assert res["deletion"]["hypotheses"][IDS[0]][0] == spliced.transcribe(wav).text  # p = 0: the spliced model's
    assert main(run + ["--model", "asr"]) == 2
    err = capsys.readouterr().err
    assert "not with --model asr" in err and "--force-model" in err and err.count("\n") == 1
    assert main(run + ["--model", "asr", "--force-model"]) == 0
    assert "spes-jax: model: embedded model asr, by --force-model" in capsys.readouterr().err
    # greedy curves: the unperturbed level is the greedy output
    assert main(run + ["--greedy", "--out-dir", str(tmp_path / "g")]) == 0
    res = json.loads((tmp_path / "g" / "metrics.json").read_text())
    assert res["search"] == "greedy"
    assert res["deletion"]["hypotheses"][IDS[0]][0] == spliced.transcribe(wav, greedy=True).text
    # references the model does not say: the curve is scored, with a note that it says little
    wrong = tmp_path / "wrong.tsv"
    write_manifest(wrong, [Entry(IDS[0], wav, "eleven green umbrellas sing loudly")])
    assert main(["evaluate", str(tmp_path / "r.h5"), "--manifest", str(wrong), "--metrics", "deletion",
                 "--step", "50"]) == 0
    assert "it does not recognise this speech well" in capsys.readouterr().err


def test_other_audio_than_the_explained_is_warned_about(tmp_path):
    import soundfile as sf

    from spes_jax.errors import SpesWarning
    from spes_jax.provenance import file_sha256, given_audio

    x = (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, 16000)
    sf.write(tmp_path / "b.wav", x[::-1], 16000)  # same length, other audio
    exp = Explanation(id="a", tokens=["</s>"], spectrogram_saliency=np.zeros((1, 48, 80), np.float32),
                      prefix_saliency=np.zeros((1, 1), np.float32), prefix_tokens=["</s>"], text="",
                      meta={"audio": str(tmp_path / "a.wav"), "audio_sha256": file_sha256(tmp_path / "a.wav")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert given_audio(exp, str(tmp_path / "a.wav")) == str(tmp_path / "a.wav")
    with pytest.warns(SpesWarning, match="b.wav is not the audio that was explained"):
        given_audio(exp, str(tmp_path / "b.wav"))


def test_merge_says_what_it_reads(tmp_path, capsys):
    assert main(["merge", str(tmp_path / "nodir"), "--out", str(tmp_path / "all.h5")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert main(["merge", str(tmp_path), "--out", str(tmp_path / "all.h5")]) == 2
    assert "not an explain-corpus run directory" in capsys.readouterr().err


def test_a_poor_baseline_that_is_only_formatting_says_so():
    """Whisper writes "Go forward 10 meters." where references say "go forward ten meters": 75 % WER as
    the paper scores it, 0 % in spoken form. evaluate and compare print this note."""
    from spes_jax.analysis.metrics import PerturbationCurve

    def curve(hypothesis, scorer="wer_max", score=75.0):
        return PerturbationCurve("deletion", scorer, np.array([0.0, 100.0]), np.array([score, 100.0]),
                                 {"a": [hypothesis, ""]})

    refs = {"a": "go forward ten meters"}
    assert "scores wer_max 75.0 against the references, but 0.0 with both written in spoken form" in \
        curve("Go forward 10 meters.").baseline_note(refs)
    assert curve("does the farmer count").baseline_note(refs).endswith("says little about the explanations")
    assert curve("Go forward 10 meters.", "bleu", 10.0).baseline_note(refs).endswith("says little about the explanations")
    assert curve("go forward ten meters", score=0.0).baseline_note(refs) is None
