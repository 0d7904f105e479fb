"""Aggregation against the reference's own aggregator outputs (fixtures/fbk/extensions/aggregators.*).

The reference indexes phrase spans in prefix positions (tgt_text, whose position 0 is the start
token) and marks the </s> row with the span (0, 0); ours are token indices and ``include_eos``.
"""

import json

import numpy as np
import pytest

from support import fixture_path
from spes_jax.analysis import aggregation as agg
from spes_jax.errors import SpesError
from spes_jax.explanation import Explanation, load_explanations, save_explanations

TOL = dict(rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def ref():
    data = json.load(open(fixture_path("extensions", "aggregators.json")))
    return data, np.load(fixture_path("extensions", "aggregators.npz"))


def _ours(ref_spans):
    """Reference spans -> (our token spans, include_eos, (0, 0) was first)."""
    spans = [tuple(s) for s in ref_spans]
    eos = (0, 0) in spans
    return [(s - 1, e - 1) for s, e in spans if (s, e) != (0, 0)], eos, eos and spans[0] == (0, 0)


def _explanation(arrays, inp, uid="u"):
    tgt_text = inp["tgt_text"]
    if isinstance(tgt_text, str):  # the sentence tests' inputs carry a plain string
        tgt_text = ["</s>"] * arrays[inp["tgt_embed_heatmap"]].shape[1]
    return Explanation(id=uid, tokens=tgt_text[1:] + ["</s>"], spectrogram_saliency=arrays[inp["fbank_heatmap"]],
                       prefix_saliency=arrays[inp["tgt_embed_heatmap"]][..., 0], prefix_tokens=list(tgt_text))


def _run(exp, chain, sid):
    """Applies a reference chain through the Explanation API; returns it and the phrase order."""
    for step in chain:
        name, idx = step["aggregator"], step["indices"]
        if name in ("phrase_and_token", "phrase_and_word"):
            columns = name == "phrase_and_word"
            if idx is None:
                exp = agg.by_words(exp, grouping="fbk", include_eos=True, columns=columns)
            else:
                spans, eos, _ = _ours(idx[sid]["spans"])
                exp = agg.by_words(exp, spans, grouping="fbk", include_eos=eos, columns=columns)
        elif name == "time_aggregator":
            exp = agg.by_time(exp, None if idx is None else idx[sid])
        elif name == "frequency_embed":
            exp = agg.by_frequency(exp)
        else:
            exp = agg.by_sentence(exp)
    return exp


def _cases(data):
    return [(c, sid) for c in data["cases"] for sid in c["inputs"]]


def test_all_well_defined_cases(ref):
    data, z = ref
    checked = 0
    for case, sid in _cases(data):
        out = case["outputs"].get(sid)
        if case["raises"] or out is None or out["has_nan"]:
            continue
        inp = case["inputs"][sid]
        if z[inp["tgt_embed_heatmap"]].shape[-1] != 1:
            continue  # multi-channel prefix maps: covered by the array-level tests below
        exp = _explanation(z, inp)
        T = exp.spectrogram_saliency.shape[1]
        chain = case["chain"]
        time_idx = next((s["indices"] for s in chain if s["aggregator"] == "time_aggregator"), None)
        keep = None
        if time_idx:  # spans past T are an error in ours: compare the in-range spans
            spans = time_idx[sid]
            keep = [i for i, (s, e) in enumerate(spans) if e < T]
            chain = [{**s, "indices": {sid: [spans[i] for i in keep]}} if s["aggregator"] == "time_aggregator"
                     else s for s in chain]
        first_eos = all(_ours(s["indices"][sid]["spans"])[2] or not _ours(s["indices"][sid]["spans"])[1]
                        for s in chain if s["aggregator"].startswith("phrase") and s["indices"])
        assert first_eos, case["name"]
        got = _run(exp, chain, sid)
        want_spec = z[out["fbank_heatmap"]]
        if keep is not None:
            want_spec = want_spec[:, keep]
        np.testing.assert_allclose(got.spectrogram_saliency, want_spec, err_msg=case["name"], **TOL)
        np.testing.assert_allclose(got.prefix_saliency, z[out["tgt_embed_heatmap"]][..., 0],
                                   err_msg=case["name"], **TOL)
        if "tgt_phrases" in out and not any(s["aggregator"] == "sentence" for s in chain):
            phrases = out["tgt_phrases"]
            # the reference lists '</s>' first although its row comes last; ours follow the rows
            expected = phrases[1:] + ["</s>"] if phrases and phrases[0] == "</s>" else phrases
            if chain[0]["indices"] is None:
                assert got.tokens == expected, case["name"]
            assert got.prefix_tokens == out["tgt_text"], case["name"]
        checked += 1
    assert checked >= 50


def test_multichannel_prefix_maps_and_method_calls(ref):
    data, z = ref
    for m in data["method_calls"]:
        x, want = z[m["input"]], z[m["output"]]
        if m["method"].endswith("aggregate_tgt_explanations_cols"):
            got = agg.aggregate_columns(x, [tuple(s) for s in m["args"]["aggregation_indices"]])
            np.testing.assert_allclose(got, want, **TOL)
            continue
        spans, eos, first = _ours(m["args"]["aggregation_indices"])
        assert eos == m["args"]["include_eos"] and (first or not eos)
        spans = agg.check_token_spans(spans, x.shape[0]) if spans else []
        dummy = np.zeros((x.shape[0], 1, 1), np.float32)
        if "fbank" in m["method"]:
            got = agg.aggregate_rows(x, dummy, spans, eos)[0]
        else:
            got = agg.aggregate_rows(dummy, x, spans, eos)[1]
        np.testing.assert_allclose(got, want, **TOL)
    for name in ("uts_sentence", "uts_frequency_embed", "uts_time_spans", "uts_time_all"):
        case = next(c for c in data["cases"] if c["name"] == name)
        for sid, inp in case["inputs"].items():
            spec, out = z[inp["fbank_heatmap"]], case["outputs"][sid]
            if name == "uts_sentence":
                np.testing.assert_allclose(spec.mean(0, keepdims=True), z[out["fbank_heatmap"]], **TOL)
            elif name == "uts_frequency_embed":
                np.testing.assert_allclose(spec.mean(2, keepdims=True), z[out["fbank_heatmap"]], **TOL)
            else:
                idx = case["chain"][0]["indices"]
                spans = None if idx is None else agg.check_frame_spans(idx[sid], spec.shape[1])
                np.testing.assert_allclose(agg.aggregate_time(spec, spans), z[out["fbank_heatmap"]], **TOL)


def test_get_words(ref):
    data, _ = ref
    for case in data["get_words"]:
        words, spans = agg.word_spans(case["tokens"])
        assert words == case["words"] and [list(s) for s in spans] == case["indices"]


def _edge(data, z, name):
    case = next(c for c in data["cases"] if c["name"] == name)
    return case, _explanation(z, case["inputs"]["0"])


def test_edge_eos_span_anywhere_is_the_eos_row(ref):
    """Reference: (0, 0) not first loses the first real span and gives a NaN row. Ours: the </s>
    row is appended last wherever (0, 0) stands, and every real span is kept."""
    data, z = ref
    case, exp = _edge(data, z, "edge_phrase_and_token_eos_not_first")
    spans, eos, first = _ours(case["chain"][0]["indices"]["0"]["spans"])
    assert eos and not first
    got = agg.by_words(exp, spans, include_eos=eos)
    assert np.isfinite(got.spectrogram_saliency).all() and got.tokens == ["I", "a", "</s>"]
    np.testing.assert_allclose(got.spectrogram_saliency[0], exp.spectrogram_saliency[0], **TOL)
    np.testing.assert_allclose(got.spectrogram_saliency[-1], exp.spectrogram_saliency[-1], **TOL)
    # the reference's rows that are defined (its 2nd phrase, the </s> row) agree with ours
    want = z[case["outputs"]["0"]["fbank_heatmap"]]
    np.testing.assert_allclose(got.spectrogram_saliency[1:], want[[0, 2]], **TOL)


def test_edge_cases_raise(ref):
    data, z = ref
    _, exp = _edge(data, z, "edge_phrase_and_token_span_from_0")
    with pytest.raises(SpesError, match=r"\(-1, 0\) is outside"):  # reference (0, 1): NaN row
        agg.by_words(exp, [(-1, 0), (3, 3)])
    with pytest.raises(SpesError, match="empty list"):  # reference: the utterance is deleted
        agg.by_words(exp, [])
    case, timed = _edge(data, z, "edge_time_span_outside")  # reference: (4, 9) clipped, (6, 8) NaN
    with pytest.raises(SpesError, match=r"time span \(4, 9\) is outside the 5 frames"):
        agg.by_time(timed, case["chain"][0]["indices"]["0"])
    with pytest.raises(SpesError, match=r"time span \(6, 8\) is outside the 5 frames"):
        agg.by_time(timed, [(6, 8)])
    with pytest.raises(SpesError, match="time"):
        agg.by_time(agg.by_time(timed, [(0, 1)]), [(0, 0)])
    with pytest.raises(SpesError, match="outside the generated pieces"):  # the final </s> is not a piece
        agg.by_words(exp, [(0, len(exp.tokens) - 1)])
    with pytest.raises(SpesError, match="after"):
        agg.by_frequency(agg.by_sentence(exp))
    with pytest.raises(SpesError, match="normalise before aggregating"):
        agg.by_frequency(exp).normalized()


def test_hdf5_round_trip(ref, tmp_path):
    data, z = ref
    case = next(c for c in data["cases"] if c["name"] == "real_phrase_and_word_auto")
    exps = [_explanation(z, case["inputs"][sid], sid).normalized() for sid in ("0", "1")]
    exps = [agg.by_frequency(agg.by_time(agg.by_words(e, columns=True), [(0, 3), (4, 7)])) for e in exps]
    path = tmp_path / "agg.h5"
    save_explanations(path, exps)
    back = load_explanations(path)["1"]
    e = exps[-1]
    np.testing.assert_array_equal(back.spectrogram_saliency, e.spectrogram_saliency)
    np.testing.assert_array_equal(back.prefix_saliency, e.prefix_saliency)
    assert back.tokens == e.tokens and back.prefix_tokens == e.prefix_tokens and back.is_normalized
    assert [s["op"] for s in back.aggregation] == ["words", "time", "frequency"]
    assert back.aggregation[1]["spans"] == [[0, 3], [4, 7]]
    import h5py

    with h5py.File(path) as f:
        assert [t.decode() for t in f["1"]["tgt_phrases"][()]] == e.tokens
        assert f["1"]["fbank_heatmap"].shape == (len(e.tokens), 2, 1)


def test_cli(ref, tmp_path, capsys):
    from spes_jax.cli import main

    data, z = ref
    case = next(c for c in data["cases"] if c["name"] == "real_phrase_and_token_idx")
    exps = [_explanation(z, case["inputs"][sid], sid) for sid in ("0", "1")]
    src = tmp_path / "in.h5"
    save_explanations(src, exps, {"task": "asr"})
    spans = tmp_path / "spans.json"
    spans.write_text(json.dumps({sid: _ours(case["chain"][0]["indices"][sid]["spans"])[0] for sid in ("0", "1")}))
    times = tmp_path / "times.json"
    times.write_text(json.dumps({"0": [[0, 9], [10, 49]], "1": [[5, 20]]}))
    out = tmp_path / "out.h5"
    assert main(["aggregate", str(src), "--out", str(out), "--spans", str(spans), "--no-eos",
                 "--time-spans", str(times)]) == 0
    back = load_explanations(out)
    want = z[case["outputs"]["1"]["fbank_heatmap"]][:, 5:21].mean(1, keepdims=True)
    np.testing.assert_allclose(back["1"].spectrogram_saliency, want, **TOL)
    assert back["0"].spectrogram_saliency.shape == (2, 2, 80)
    # bad input: one error line, exit 2, no output file
    times.write_text(json.dumps({"0": [[0, 9]]}))
    bad = tmp_path / "bad.h5"
    assert main(["aggregate", str(src), "--out", str(bad), "--time-spans", str(times)]) == 2
    assert "no spans for utterance '1'" in capsys.readouterr().err and not bad.exists()
    times.write_text(json.dumps({"0": [[0, 9]], "1": [[240, 260]]}))
    assert main(["aggregate", str(src), "--out", str(bad), "--time-spans", str(times)]) == 2
    assert "time span (240, 260) is outside the 248 frames" in capsys.readouterr().err and not bad.exists()


TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 0.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 0.5
        intervals: size = 1
        intervals [1]:
            xmin = 0
            xmax = 0.5
            text = "hello"
    item [2]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 0.5
        intervals: size = 3
        intervals [1]:
            xmin = 0
            xmax = 0.1
            text = ""
        intervals [2]:
            xmin = 0.1
            xmax = 0.235
            text = "HH"
        intervals [3]:
            xmin = 0.235
            xmax = 0.5
            text = "AH0"
'''


def test_time_spans_from_alignments(tmp_path):
    grid = tmp_path / "u1.TextGrid"
    grid.write_text(TEXTGRID)
    assert agg.read_textgrid(str(grid), "phones") == [("HH", 0.1, 0.235), ("AH0", 0.235, 0.5)]
    assert agg.read_textgrid(str(grid)) == [("hello", 0.0, 0.5)]
    with pytest.raises(SpesError, match="no interval tier named 'x'"):
        agg.read_textgrid(str(grid), "x")
    # 10 ms frames: [floor(s / 10 ms), ceil(e / 10 ms) - 1]; the end past the last frame is clipped
    assert agg.time_spans_for(str(tmp_path), {"u1": 48}) == {"u1": [(0, 47)]}
    assert agg.frames_from_seconds([(0.1, 0.235), (0.235, 0.5)], 48, 0.01) == [(10, 23), (23, 47)]
    with pytest.raises(SpesError, match="outside the audio"):
        agg.frames_from_seconds([(0.49, 0.5)], 48, 0.01)
    ctm = tmp_path / "phones.ctm"
    ctm.write_text("u1 1 0.10 0.135 HH\nu1 1 0.235 0.1 AH0\n")
    assert agg.time_spans_for(str(ctm), {"u1": 48}) == {"u1": [(10, 23), (23, 33)]}


def test_malformed_span_files(ref, tmp_path, capsys):
    from spes_jax.cli import main

    data, z = ref
    case = next(c for c in data["cases"] if c["name"] == "real_phrase_and_token_idx")
    src = tmp_path / "in.h5"
    save_explanations(src, [_explanation(z, case["inputs"]["0"], "0")])
    bad = tmp_path / "bad.h5"
    for content, message in (({"0": 5}, "must be a list"), ({"0": {"phrases": ["x"]}}, "needs a 'spans' list"),
                             ({"0": [[0, "a"]]}, "not a pair of integers"), ([1, 2], "expected")):
        spans = tmp_path / "spans.json"
        spans.write_text(json.dumps(content))
        assert main(["aggregate", str(src), "--out", str(bad), "--spans", str(spans)]) == 2
        assert message in capsys.readouterr().err and not bad.exists()


def test_words_are_the_spoken_words_unless_fbks_grouping_is_asked(tmp_path, capsys):
    """A Whisper hypothesis splits "ill-disposed" into four pieces: one word by default (as the
    figures and the report show it), four with the rule of FBK's code; the CLI takes either."""
    from spes_jax.cli import main

    pieces = ["\u2581an", "\u2581ill", "-", "dis", "posed", "\u2581man", ".", "</s>"]
    rng = np.random.default_rng(0)
    exp = Explanation(id="u", tokens=pieces, spectrogram_saliency=rng.random((8, 12, 4), np.float32),
                      prefix_saliency=np.tril(rng.random((8, 8), np.float32)))
    spoken = agg.by_words(exp, columns=True)
    assert spoken.tokens == ["an", "ill-disposed", "man", ".", "</s>"]
    np.testing.assert_allclose(spoken.spectrogram_saliency[1], exp.spectrogram_saliency[1:5].mean(0), rtol=1e-6)
    assert spoken.prefix_tokens == ["</s>", "an", "ill-disposed", "man", "."]
    assert spoken.aggregation[0]["grouping"] == "spoken"
    assert agg.by_words(exp, grouping="fbk").tokens == ["an", "ill", "-", "dis", "posed", "man", ".", "</s>"]
    with pytest.raises(SpesError, match="word grouping must be one of spoken, fbk"):
        agg.by_words(exp, grouping="words")

    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    save_explanations(src, [exp], {"task": "asr"})
    assert main(["aggregate", str(src), "--words", "--out", str(out)]) == 0
    assert load_explanations(out)["u"].tokens == spoken.tokens
    assert main(["aggregate", str(src), "--words", "fbk", "--out", str(out), "--overwrite"]) == 0
    assert len(load_explanations(out)["u"].tokens) == 8


def test_plot_draws_word_aggregates_and_refuses_the_others_with_one_line(tmp_path, capsys):
    """plot draws normalised maps over time x frequency whose rows are words, phrases or the sentence
    (the prefix rows then keep token columns unless --word-columns); maps averaged over time or
    frequency, or averaged before normalising, get one error saying what to do."""
    from spes_jax.cli import main

    pieces = ["\u2581an", "\u2581ill", "-", "dis", "posed", "\u2581man", ".", "</s>"]
    rng = np.random.default_rng(1)
    exp = Explanation(id="u", tokens=pieces, spectrogram_saliency=rng.random((8, 30, 80), np.float32),
                      prefix_saliency=np.tril(rng.random((8, 8), np.float32)), n_masks=10, n_token_masks=10)
    src = tmp_path / "in.h5"
    save_explanations(src, [exp], {"task": "asr"})
    for n, options in enumerate([["--words"], ["--words", "--word-columns"], ["--sentence"]]):
        out = tmp_path / f"a{n}.h5"
        assert main(["aggregate", str(src), "--out", str(out), "--normalize", *options]) == 0
        for token in ([], ["--token", "1"]) if n < 2 else ([],):
            assert main(["plot", str(out), "--out", str(tmp_path / f"a{n}{len(token)}.png"), *token]) == 0
    capsys.readouterr()
    for options, message in ((["--time-mean", "--normalize"], "averaged over time (aggregate --time-spans"),
                             (["--words", "--frequency", "--normalize"], "averaged over frequency"),
                             (["--words"], "aggregated without --normalize")):
        out = tmp_path / "b.h5"
        assert main(["aggregate", str(src), "--out", str(out), "--overwrite", *options]) == 0
        assert main(["plot", str(out), "--out", str(tmp_path / "b.png")]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "b.png").exists()
    # The same check guards the figures' Python API.
    from spes_jax.analysis.plotting import plot_explanation

    with pytest.raises(SpesError, match="averaged over time"):
        plot_explanation(agg.by_time(exp.normalized()))
