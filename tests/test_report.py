"""The HTML report's data (quantised, deflated arrays, colour ranges), run loading, audio matching, the
command line, the colour scaling shared with the figures, and the static figures' colours, word labels and
prefix bars. The page itself is exercised in a browser by test_report_browser.py."""

import base64
import html
import json
import re
import wave
import zlib

import numpy as np
import pytest

from spes_jax.analysis.plotting import color_limits, plot_explanation, plot_token_grid, word_maps
from spes_jax.text import word_groups
from spes_jax.cli import build_parser, main
from spes_jax.errors import SpesError
from spes_jax.explanation import Explanation, save_explanations
from spes_jax import report
from spes_jax.report import Utterance, build_report, load_result, resolve_audio, utterances

SPACE = "\u2581"


def synthetic(uid: str, K: int, T: int, seed: int = 0) -> tuple[Explanation, np.ndarray]:
    """An explanation with blocky maps (token k most salient around k/K of the utterance) and a
    matching 16 kHz waveform with T frames."""
    rng = np.random.default_rng(seed)
    blocks = rng.random((K, -(-T // 20), 10)).astype(np.float32)
    spec = np.repeat(np.repeat(blocks, 20, 1), 8, 2)[:, :T, :80]
    for k in range(K):
        centre = int((k + 0.5) / K * T)
        spec[k, max(0, centre - 15): centre + 15, 20:50] += 3.0
    prefix = np.tril(rng.random((K, K))).astype(np.float32)
    words = [f"{SPACE}w{i // 2}" if i % 2 == 0 else f"x{i}" for i in range(K - 2)] + [".", "</s>"]
    exp = Explanation(uid, words, spec * 0.01, prefix, ["</s>"] + words[:-1],
                      text=" ".join(w.strip(SPACE) for w in words[:-1]), n_masks=600, n_token_masks=100)
    n = 400 + (T - 1) * 160
    t = np.arange(n) / 16000
    wave_ = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t)) + 0.01 * rng.standard_normal(n)
    return exp, wave_.astype(np.float32)


def write_wav(path, x: np.ndarray) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(np.clip(np.rint(x * 32768), -32768, 32767).astype("<i2").tobytes())


def script_json(page: str, element_id: str) -> dict:
    m = re.search(f'<script type="application/json" id="{element_id}">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))


def unpack(b64: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(b64)), np.uint8)


def test_maps_and_audio_survive_quantisation():
    exp, x = synthetic("u", K=6, T=230)
    page = build_report([Utterance(exp, x)])
    view = script_json(page, "spes-u0")
    K, T, C = exp.spectrogram_saliency.shape
    q = unpack(view["maps"]).reshape(K, T * C).astype(np.float64)
    norm = exp.normalized()
    for kind, target in (("raw", exp.spectrogram_saliency), ("norm", norm.spectrogram_saliency)):
        lo, hi = (np.array(v)[:, None] for v in view[kind])
        got = lo + q / 255 * (hi - lo)
        # one quantisation step is (hi - lo) / 255; the normalised map is affine in the raw one per token
        assert np.all(np.abs(got - target.reshape(K, -1)) <= (hi - lo) / 255 * 0.5 + 1e-5), kind
    np.testing.assert_allclose(view["prefixNorm"], norm.prefix_saliency, atol=1e-4)
    y = unpack(view["audio"]["data"]) / 127.5 - 1
    decoded = np.sign(y) * (256.0 ** np.abs(y) - 1) / 255
    # half a mu-law step, taken at the louder end of the step (the step grows with the amplitude)
    half_step = 0.5 * (2 / 255) * np.log(256) * (1 + 255 * np.maximum(np.abs(x), np.abs(decoded))) / 255
    assert view["audio"]["n"] == x.size
    np.testing.assert_array_less(np.abs(decoded - x), half_step + 1e-6)
    assert unpack(view["features"]).size == T * C


def test_page_is_self_contained():
    exp, _ = synthetic("a<!--<script></script>b", K=4, T=120)
    page = build_report([Utterance(exp)])
    assert not re.search(r"https?://", page), "the page must not reference the network"
    assert "default-src 'none'" in page and "{{" not in page
    assert script_json(page, "spes-meta")["rows"][0]["id"] == "a<!--<script></script>b"
    one = report.page(exp)  # one explanation's page, as a notebook shows it
    frame = one._repr_html_()
    assert frame.startswith("<iframe srcdoc=") and html.unescape(frame.split('"')[1]) == one.html
    assert one.html == build_report([Utterance(exp)], title="SPES: a<!--<script></script>b")


def test_load_result_file_and_folder(tmp_path):
    a, _ = synthetic("a", 3, 60)
    b, _ = synthetic("b", 4, 70)
    save_explanations(tmp_path / "one.h5", [a, b], {"task": "st"})
    exps, attrs = load_result(tmp_path / "one.h5")
    assert list(exps) == ["a", "b"] and attrs["task"] == "st"
    run = tmp_path / "run"
    run.mkdir()
    a.save(run / "1.h5")
    b.save(run / "2.h5")
    assert list(load_result(run)[0]) == ["a", "b"]
    b.save(run / "3.h5")
    with pytest.raises(SpesError, match="more than one file"):
        load_result(run)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpesError, match="no .h5"):
        load_result(tmp_path / "empty")
    with pytest.raises(SpesError, match="not found"):
        load_result(tmp_path / "missing.h5")
    # Files of two models in one folder: their maps need different features, so no pooling.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    save_explanations(mixed / "x.h5", [a], {"model_sha256": "1" * 64, "model_path": "/m/asr"})
    save_explanations(mixed / "y.h5", [b], {"model_sha256": "2" * 64, "model_path": "/m/whisper"})
    with pytest.raises(SpesError, match=r"explain different models \(x.h5: /m/asr; y.h5: /m/whisper\)"):
        load_result(mixed)


def test_spoken_wer_column_only_where_formatting_counts():
    """Whisper writes case, punctuation and digits; the index then has a second WER with both sides in
    spoken form, which is left out when it equals the WER for every row."""
    e0, _ = synthetic("u0", 4, 80)  # text "w0 x1 ."
    e1, _ = synthetic("u1", 4, 80, 1)
    formatted = [Utterance(e0, reference="W0 X1!"), Utterance(e1, reference="w0 x1 . extra")]
    rows = script_json(build_report(formatted), "spes-meta")["rows"]
    assert [r["WER"] for r in rows] == [150.0, 25.0] and [r["spoken WER"] for r in rows] == [0.0, 20.0]  # "w zero x one"
    plain = script_json(build_report([Utterance(e1, reference=e1.text)]), "spes-meta")["rows"]
    assert "spoken WER" not in plain[0] and plain[0]["WER"] == 0.0


def test_resolve_audio(tmp_path):
    exp, x = synthetic("utt1", 3, 50)
    write_wav(tmp_path / "utt1.wav", x)
    assert resolve_audio(tmp_path, ["utt1", "utt2"]) == ({"utt1": str(tmp_path / "utt1.wav")}, {})
    assert resolve_audio(tmp_path / "utt1.wav", ["other"])[0] == {"other": str(tmp_path / "utt1.wav")}
    with pytest.raises(SpesError, match="none is called"):
        resolve_audio(tmp_path / "utt1.wav", ["x", "y"])
    (tmp_path / "m.tsv").write_text("id\taudio\nutt1\tutt1.wav\n")
    assert resolve_audio(tmp_path / "m.tsv", ["utt1"]) == ({"utt1": str(tmp_path / "utt1.wav")}, {})


def test_report_command(tmp_path, capsys):
    exps = [synthetic(f"u{i}", 4 + i, 80 + 10 * i, i) for i in range(2)]
    save_explanations(tmp_path / "run.h5", [e for e, _ in exps], {"task": "asr"})
    for e, x in exps:
        write_wav(tmp_path / f"{e.id}.wav", x)
    (tmp_path / "m.tsv").write_text("id\taudio\treference\n" + "".join(f"{e.id}\t{e.id}.wav\t{e.text} extra\n"
                                                                       for e, _ in exps))
    (tmp_path / "t.json").write_text(json.dumps({"u0": {"words": [{"word": "w0", "start": 0.1, "end": 0.3}]}}))
    levels = list(range(0, 101, 50))
    (tmp_path / "metrics.json").write_text(json.dumps({"deletion": {
        "scorer": "wer", "percentages": levels, "hypotheses": {e.id: [e.text, "w0", ""] for e, _ in exps}}}))
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "run.h5"), "--out", str(out), "--audio", str(tmp_path / "m.tsv"),
                 "--timings", str(tmp_path / "t.json"), "--metrics", str(tmp_path / "metrics.json")]) == 0
    page = out.read_text()
    rows = script_json(page, "spes-meta")["rows"]
    e0 = exps[0][0]
    wer = [100 * 1 / 4, 100 * 3 / 4, 100.0]  # hypothesis "w0 x1 w1 ." vs reference + "extra"
    assert rows[0]["WER"] == pytest.approx(wer[0], abs=0.01)
    assert rows[0]["deletion AUC"] == pytest.approx(np.trapezoid(wer, [0, 0.5, 1]), abs=0.01)
    assert script_json(page, "spes-u0")["timings"] == [["w0", 0.1, 0.3]] and e0.id == rows[0]["id"]
    # a WAV named after one utterance goes to that one only
    assert main(["report", str(tmp_path / "run.h5"), "--out", str(out), "--audio", str(tmp_path / "u1.wav"),
                 "--overwrite"]) == 0
    assert [script_json(out.read_text(), f"spes-u{i}")["audio"] is None for i in (0, 1)] == [True, False]
    # the audio of another utterance: one clear error, no output file
    (tmp_path / "swap.tsv").write_text("id\taudio\nu0\tu1.wav\n")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "run.h5"), "--out", str(tmp_path / "no.html"),
                 "--audio", str(tmp_path / "swap.tsv")]) == 2
    err = capsys.readouterr().err
    assert "u1.wav: gives 90 frames but explanation 'u0' has 80" in err and err.count("\n") == 1
    assert not (tmp_path / "no.html").exists()


def test_token_and_word_grid(tmp_path):
    exp, _ = synthetic("g", 7, 60)
    exp = Explanation("g", [f"{SPACE}the", f"{SPACE}bro", "wn", f"{SPACE}don", "'", "t", "</s>"],
                      exp.spectrogram_saliency, exp.prefix_saliency)
    labels, maps = word_maps(exp)
    assert labels == ["the", "brown", "don't", "</s>"]  # the apostrophe inside the word belongs to it
    norm = exp.normalized().spectrogram_saliency
    np.testing.assert_allclose(maps[1], norm[1:3].mean(0), atol=1e-6)
    np.testing.assert_allclose(maps[2], norm[3:6].mean(0), atol=1e-6)
    fig = plot_token_grid(exp, columns=3)
    assert [ax.get_title(loc="left") for ax in fig.axes if ax.get_visible() and ax.get_title(loc="left")] == \
        ["0: the", "1: bro", "2: wn", "3: don", "4: '", "5: t", "6: </s>"]  # the indices --token takes
    exp.save(tmp_path / "g.h5")
    assert main(["plot", str(tmp_path / "g.h5"), "--grid", "words", "--columns", "5", "--out", str(tmp_path / "w.png")]) == 0
    assert (tmp_path / "w.png").stat().st_size > 5000


def test_reference_explanation_file():
    """The reference implementation's own output (no ``tokens`` dataset) makes a report."""
    from support import fixture_path

    exps, _ = load_result(fixture_path("spes", "spes_fbank_run_explanations.h5"))
    page = build_report(utterances(exps))
    rows = script_json(page, "spes-meta")["rows"]
    assert [r["id"] for r in rows] == list(exps) and all(r["tokens"] > 1 for r in rows)
    view = script_json(page, "spes-u0")
    assert view["tokens"][-1] == "</s>" and view["features"] is None and view["audio"] is None


def test_color_limits():
    x = np.arange(1001, dtype=np.float32)  # median 500; the 1000 cells above it are 501..1000
    assert color_limits(x, 90) == pytest.approx((500, np.percentile(np.arange(501, 1001), 90)))
    assert color_limits(x) == pytest.approx((500, 997.505))  # default 99.5
    assert color_limits(x, None) == color_limits(x, 100) == (0, 1000)  # off: min-max
    with_nan = np.append(x, [np.nan, np.inf, -np.inf])
    assert color_limits(with_nan, 90) == color_limits(x, 90)
    # a map that is zero but for a few cells: the range comes from the salient cells, not the zeros
    sparse = np.zeros((100, 80))
    sparse[10:12, 5:10] = np.linspace(1, 2, 10).reshape(2, 5)
    assert color_limits(sparse, 50) == pytest.approx((0, 1.5))
    assert color_limits(np.full((5, 4), 0.3)) == color_limits(np.full(3, 0.3), None) == pytest.approx((0.3, 1.3))
    assert color_limits(np.full(3, np.nan)) == (0, 1)
    # a stack on one scale spans every map's own range; a map without spread does not widen it
    stack = np.stack([x, x + 2000, np.full_like(x, 5)])
    assert color_limits(stack, 90, per_map=True) == pytest.approx((500, color_limits(x, 90)[1] + 2000))
    assert color_limits(stack, None, per_map=True) == (0, 3000)
    with pytest.raises(SpesError, match="clip percentile"):
        color_limits(x, 0)


def test_figures_colours_words_and_bars(tmp_path, capsys):
    exp, x = synthetic("f", K=6, T=150)
    norm = exp.normalized()
    timings = [("w0", 0.2, 0.6), ("w1", 0.7, 1.3)]
    fig = plot_explanation(exp, token=2, timings=timings, clip_percentile=90)
    saliency, bars = fig.axes[:2]  # the map, the prefix bars, the matrix, then the colour bars
    assert saliency.images[0].get_clim() == pytest.approx(color_limits(norm.spectrogram_saliency[2], 90))
    assert [t.get_text() for t in saliency.texts] == ["w0", "w1"]
    assert bars.get_ylim() == (0, 1) and "saliency" in bars.get_ylabel()
    heights = [p.get_height() for p in bars.patches]
    np.testing.assert_allclose(heights, np.where(np.arange(6) <= 2, norm.prefix_saliency[2], 0), atol=1e-6)
    clim = plot_explanation(exp, token=2, clip_percentile=None).axes[0].images[0].get_clim()
    assert clim == pytest.approx((norm.spectrogram_saliency[2].min(), norm.spectrogram_saliency[2].max()))
    # the grid: every panel coloured over its own range; with features, a single-hue overlay
    features = np.random.default_rng(0).standard_normal((150, 80)).astype(np.float32)
    labels, maps = word_maps(exp)
    grid = plot_token_grid(exp, features, words=True, timings=timings, clip_percentile=95)
    for ax, m in zip(grid.axes, maps):
        spectrogram, overlay = ax.images
        rgba = overlay.get_array()
        lo, hi = color_limits(m, 95)
        expected = 0.9 * np.clip((m.T - lo) / (hi - lo), 0, 1) ** 2
        np.testing.assert_allclose(rgba[..., 3], expected, atol=1e-6)
        assert np.ptp(rgba[..., :3].reshape(-1, 3), axis=0).max() == 0  # one hue
        assert [t.get_text() for t in ax.texts] == ["w0", "w1"]
    # the command line: --clip-percentile, 'none' and 100 switch it off, out of range is an argparse error
    parse = build_parser().parse_args
    for text, value in (("97", 97.0), ("none", None), ("100", None)):
        assert parse(["plot", "e.h5", "--out", "f.png", "--clip-percentile", text]).clip_percentile == value
    assert parse(["report", "e.h5", "--out", "r.html"]).clip_percentile == 99.5
    with pytest.raises(SystemExit):
        parse(["plot", "e.h5", "--out", "f.png", "--clip-percentile", "0"])
    assert "a number in (0, 100] or 'none'" in capsys.readouterr().err
    exp.save(tmp_path / "f.h5")
    (tmp_path / "t.json").write_text(json.dumps({"f": {"words": [{"word": "w0", "start": 0.2, "end": 0.6}]}}))
    for args in (["--token", "2", "--timings", str(tmp_path / "t.json"), "--clip-percentile", "none"],
                 ["--grid", "tokens", "--clip-percentile", "90"]):
        out = tmp_path / f"{args[0][2:]}.png"
        assert main(["plot", str(tmp_path / "f.h5"), "--out", str(out)] + args) == 0
        assert out.stat().st_size > 5000


def test_report_colour_ranges(tmp_path):
    exp, x = synthetic("c", K=7, T=120)
    exp = Explanation("c", [f"{SPACE}the", f"{SPACE}bro", "wn", f"{SPACE}don", "'", "t", "</s>"],
                      exp.spectrogram_saliency, exp.prefix_saliency)
    norm = exp.normalized().spectrogram_saliency
    page = build_report([Utterance(exp, x)], clip_percentile=90)
    assert script_json(page, "spes-meta")["clip"] == 90
    limits = script_json(page, "spes-u0")["limits"]
    assert limits["raw"] == pytest.approx((min(color_limits(m, 90)[0] for m in exp.spectrogram_saliency),
                                           max(color_limits(m, 90)[1] for m in exp.spectrogram_saliency)))
    np.testing.assert_allclose(limits["norm"], [color_limits(m, 90) for m in norm], rtol=1e-6)
    assert limits["sentence"] == pytest.approx(color_limits(norm.mean(0), 90))
    assert word_groups(exp.tokens) == [[0], [1, 2], [3, 4, 5], [6]]
    for k, g in enumerate([[0], [1, 2], [1, 2], [3, 4, 5], [3, 4, 5], [3, 4, 5], [6]]):  # each token: its word's range
        assert limits["word"][k] == pytest.approx(color_limits(norm[g].mean(0), 90)), k
    # off: min-max, from the library and from the command line
    off = build_report([Utterance(exp)], clip_percentile=100)
    assert script_json(off, "spes-meta")["clip"] is None
    assert script_json(off, "spes-u0")["limits"]["norm"][1] == pytest.approx([norm[1].min(), norm[1].max()])
    exp.save(tmp_path / "c.h5")
    assert main(["report", str(tmp_path / "c.h5"), "--out", str(tmp_path / "r.html"), "--clip-percentile", "none"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert script_json(page, "spes-meta")["clip"] is None
    assert script_json(page, "spes-u0")["limits"]["raw"] == pytest.approx(
        [exp.spectrogram_saliency.min(), exp.spectrogram_saliency.max()])


def contrastive(uid: str = "c", T: int = 90, seed: int = 0) -> Explanation:
    """A contrastive explanation as ``explain_contrastive`` makes it ('she' rather than 'he', P_o / Q_o
    recorded, no normaliser), with signed maps of the size of real contrastive scores (~1e-4)."""
    rng = np.random.default_rng(seed)
    target = [f"{SPACE}the", f"{SPACE}nurse", f"{SPACE}said", f"{SPACE}she", f"{SPACE}left", "</s>"]
    foil = target[:3] + [f"{SPACE}he"] + target[4:]
    prefix = np.where(np.arange(6) <= 3, rng.normal(0, 1e-4, 6), 0.0)[None].astype(np.float32)
    info = {"target": target, "foil": foil, "start": 3, "end": 3, "foil_end": 3, "word": "she", "foil_word": "he",
            "scorer": "contrastive_parity_ratio", "word_probability": "word_boundary", "normalizer": None,
            "p_orig": 0.8312, "q_orig": 2.4e-4, "nonfinite_scores": 0}
    spec = (rng.normal(0, 1e-4, (1, T, 80)) + 5e-5).astype(np.float32)
    return Explanation(uid, ["she"], spec, prefix, ["</s>"] + target[:-1], "the nurse said she left",
                       n_masks=60, n_token_masks=12, meta={"contrastive": info})


def test_contrastive_report_shows_target_foil_and_both_maps_centred_on_zero():
    from spes_jax.core.contrastive import normalize

    exp = contrastive()
    _, x = synthetic("c", 3, 90)
    for normalizer in (None, "single_min_max"):
        page = build_report([Utterance(exp, x)], normalizer=normalizer)
        meta, view = script_json(page, "spes-meta"), script_json(page, "spes-u0")
        assert meta["rows"] == [{"id": "c", "duration": 0.9, "hypothesis": "the nurse said she left", "reference": "",
                                 "word": "she", "foil": "he", "P_o": 0.8312, "Q_o": 0.00024}]  # no size AUC
        assert len(meta["diverging"]) == 3 * 256 and view["features"] is not None
        name = normalizer or "single_mean_std"  # nothing recorded: the reference's gender normaliser
        assert view["contrastive"] == {"word": "she", "foil_word": "he", "start": 3, "end": 3,
                                       "scorer": "contrastive_parity_ratio", "word_probability": "word_boundary",
                                       "foil": "the nurse said he left", "normalizer": name, "p": 0.8312,
                                       "q": 0.00024}
        assert view["tokens"] == exp.contrastive["target"] and view["K"] == 1
        spec, prefix = normalize(name, exp.spectrogram_saliency[0], exp.prefix_saliency[0], 3)
        q = unpack(view["maps"]).astype(np.float64)
        for kind, target in (("raw", exp.spectrogram_saliency[0]), ("norm", np.asarray(spec))):
            lo, hi = view[kind][0][0], view[kind][1][0]
            assert np.all(np.abs(lo + q / 255 * (hi - lo) - target.ravel()) <= (hi - lo) / 255 * 0.5 + 1e-6 * abs(hi))
        np.testing.assert_allclose(view["prefixRaw"][0], exp.prefix_saliency[0], rtol=1e-5)  # ~1e-4 values kept
        np.testing.assert_allclose(view["prefixNorm"][0], prefix, atol=1e-4)


def test_contrastive_plot_and_cli(tmp_path, capsys):
    from spes_jax.analysis.plotting import plot_contrastive
    from spes_jax.provenance import file_sha256

    exp = contrastive()
    _, x = synthetic("c", 3, 90)
    write_wav(tmp_path / "c.wav", x)
    exp = Explanation(**{**exp.__dict__, "meta": {**exp.meta, "audio": str(tmp_path / "c.wav"),
                                                 "audio_sha256": file_sha256(tmp_path / "c.wav")}})
    fig = plot_contrastive(exp)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2  # raw and normalised, each on a scale centred on 0
    for im in images:
        lo, hi = im.get_clim()
        assert lo == -hi and hi >= np.abs(im.get_array()).max() and im.get_cmap().name == "RdBu_r"
    assert "why 'she' rather than 'he'?" in fig._suptitle.get_text() and "Q_o 0.00024" in fig._suptitle.get_text()
    prefix_panel = lambda fig: next(ax for ax in fig.axes if ax.get_title().startswith("prefix saliency"))
    assert not prefix_panel(fig).texts
    shifted = Explanation(**{**exp.__dict__, "spectrogram_saliency": -np.abs(exp.spectrogram_saliency) - 1e-3})
    raw_title = next(ax.get_title() for ax in plot_contrastive(shifted).axes if ax.get_title().startswith("raw map"))
    assert "every cell negative: occluding anything raises" in raw_title
    assert "every cell" not in next(ax.get_title() for ax in fig.axes if ax.get_title().startswith("raw map"))
    first = Explanation(**{**exp.__dict__, "meta": {**exp.meta, "contrastive": {**exp.contrastive, "start": 0,
                                                                                 "end": 0}}})
    assert "first" in prefix_panel(plot_contrastive(first)).texts[0].get_text()  # why the panel is empty
    exp.save(tmp_path / "c.h5")
    plain, _ = synthetic("p", 4, 90)
    plain.save(tmp_path / "p.h5")
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "c.h5"), "--out", str(tmp_path / "c.png")]) == 0
    assert main(["plot", str(tmp_path / "c.h5"), "--normalizer", "paired_min_max", "--overwrite",
                 "--out", str(tmp_path / "c.png")]) == 0
    assert capsys.readouterr().err.count("wrote") == 2
    assert main(["report", str(tmp_path / "c.h5"), "--out", str(tmp_path / "c.html")]) == 0
    assert '"source":"1 utterance, 1 with audio"' in (tmp_path / "c.html").read_text()  # the recorded audio
    # bad use: one error line each, naming the command-line option
    for args, message in ((["plot", str(tmp_path / "c.h5"), "--token", "0", "--out", str(tmp_path / "t.png")],
                           "--token and --grid apply to per-token explanations; c is contrastive"),
                          (["plot", str(tmp_path / "p.h5"), "--normalizer", "single_min_max", "--out",
                            str(tmp_path / "n.png")], "--normalizer applies to contrastive explanations"),
                          (["report", str(tmp_path / "c.h5"), "--out", str(tmp_path / "c.html")],
                           "exists; pass --overwrite to replace it"),
                          (["evaluate", str(tmp_path / "c.h5"), "--metrics", "size"], "holds contrastive explanations"),
                          (["plausibility", str(tmp_path / "c.h5")], "kurtosis and positional saliency analyse"),
                          (["aggregate", str(tmp_path / "c.h5"), "--words", "--out", str(tmp_path / "a.h5")],
                           "the aggregations average the per-token explanations")):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "t.png").exists() and not (tmp_path / "n.png").exists()
    with pytest.raises(SpesError, match=r"records no normaliser; choose one of .* \(--normalizer on the command line"):
        exp.normalized()
    with pytest.raises(SpesError, match="contrastive explanations only"):
        plain.normalized("single_mean_std")
