"""explain_contrastive and the compiled contrastive sweep: the reference's two end-to-end runs
replayed through the engine, compilation reuse, 1 vs 4 devices, HDF5 round trip and bad input."""

import json
import os

import jax
import numpy as np
import pytest
from support import fixture_path, on_four_devices, save_tiny_model, synthetic_features
from test_spes import _reference_keep

from spes_jax import SPESConfig, SpesError, explain_contrastive, load_explanations, load_model
from spes_jax.contrastive import sweep_utterance, word_pair
from spes_jax.core import ReplayedSegmentMasks, ReplayedTokenMasks, Segmentation, contrastive_sweep
from spes_jax.speech_model import FairseqModel
from spes_jax.text import Dictionary, Tokenizer

WORDS = ["<s>", "<pad>", "</s>", "<unk>"] + [f"\u2581w{i}" for i in range(36)]


@pytest.fixture(scope="module")
def word_model(tiny_model, tiny_config):
    """The tiny random model with word-initial pieces (so span checks and word_boundary apply)."""
    return FairseqModel(tiny_config, tiny_model.params, Tokenizer(Dictionary(WORDS), None))


def _small(**kw):
    return SPESConfig.asr(n_segments=(20, 30), n_masks=48, n_token_masks=32, batch_size=16, token_batch_size=16,
                          **kw)


def test_reference_runs_replayed_through_the_engine(converted):
    """The reference's two contrastive runs (parity ratio, word boundary) on its tiny model: its
    recorded SLIC masks (fbank run) and decoder masks (decoder run) replayed through our compiled
    sweep, scored by our port of its model, give its maps within 1e-5."""
    model = load_model(converted("conformer_tiny"))
    fbank = np.load(fixture_path("extensions", "gender_fbank_run_record.npz"))
    decoder = np.load(fixture_path("extensions", "gender_decoder_run_record.npz"))
    meta = json.load(open(fixture_path("extensions", "gender_e2e_meta.json")))["runs"]["gender_fbank_run"]
    cfg = SPESConfig.asr(n_masks=60, n_token_masks=60, batch_size=32, token_batch_size=32)  # 20 masks per level
    plan = contrastive_sweep.make_plan(model.module, cfg, spectrogram_masks=ReplayedSegmentMasks(),
                                       token_masks=ReplayedTokenMasks())
    params = jax.device_put(model.params, plan.replicated)
    for u, m in meta["utterances"].items():
        labels, keep, _ = _reference_keep(fbank, u)
        seg = Segmentation(labels, labels.reshape(3, -1).max(1), tuple(fbank[f"{u}_slic_n_segments_requested"]))
        target, foil, spans = word_pair(model, fbank[f"{u}_target"], fbank[f"{u}_swapped_target"],
                                        m["gender_term_start"], m["gender_term_end"], strict=(u == "utt0"))
        assert spans[2] == m["swapped_term_end"]
        prefix = decoder[f"{u}_decoder_masks"].astype(np.float32)
        S = contrastive_sweep.round_up(keep.shape[1], 256)
        replay = {"spectrogram": np.pad(keep, ((0, 0), (0, S - keep.shape[1])), constant_values=1.0),
                  "prefix": np.pad(prefix, ((0, 0), (0, 16 - prefix.shape[1])), constant_values=1.0)}
        exp = sweep_utterance(model, fbank[f"{u}_slic_input_fbank"], target, foil, spans, seg, u, cfg, plan, params,
                              replay=replay)
        info = exp.contrastive
        np.testing.assert_allclose([info["p_orig"], info["q_orig"]],
                                   [fbank[f"{u}_word_prob_gt_orig"][0], fbank[f"{u}_word_prob_swapped_gt_orig"][0]],
                                   rtol=2e-6)
        for ours, ref in ((exp.spectrogram_saliency, fbank[f"{u}_fbank_heatmap"]),
                          (exp.prefix_saliency, decoder[f"{u}_tgt_embed_heatmap"][..., 0])):
            # measured <= 8.2e-8: the float32 resolution of scores p / (p + q) of order 1 (utt1's map
            # is only ~1e-5 large, its scores are differences at that resolution)
            np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-7, err_msg=u)
        assert np.abs(exp.spectrogram_saliency).max() > 1e-5 and np.abs(exp.prefix_saliency).max() > 1e-5


def test_second_utterance_of_a_bucket_compiles_nothing(word_model):
    cfg = _small()
    first = explain_contrastive(word_model, synthetic_features(0.6, seed=1), [5, 6, 7, 2], [5, 9, 7, 2], cfg)
    counts = contrastive_sweep.trace_counts()
    # a new utterance, another word and foil of other lengths, another scorer argument value: same plan
    second = explain_contrastive(word_model, synthetic_features(0.55, seed=2), [5, 6, 7, 8, 2], [5, 6, 11, 12, 8, 2],
                                 cfg, start=2, end=2)
    assert contrastive_sweep.trace_counts() == counts
    assert first.spectrogram_saliency.shape == (1, 60, 80) and second.spectrogram_saliency.shape == (1, 55, 80)
    assert second.contrastive["start"] == 2 and second.contrastive["foil_end"] == 3
    assert second.prefix_saliency.shape == (1, 5) and np.all(second.prefix_saliency[0, 3:] == 0)
    assert np.abs(second.prefix_saliency[0, :3]).max() > 0


def test_file_roundtrip_and_normalisers(word_model, tmp_path):
    from spes_jax.core.contrastive import normalize

    exp = explain_contrastive(word_model, synthetic_features(0.6, seed=1), [5, 6, 7, 2], [5, 9, 7, 2], _small(),
                              normalizer="single_min_max", utt_id="u1")  # the plan of the test above
    exp.save(tmp_path / "c.h5")
    back = load_explanations(tmp_path / "c.h5")["u1"]
    assert back.contrastive == exp.contrastive and back.tokens == ["w2"]
    assert back.prefix_tokens == ["</s>", "\u2581w1", "\u2581w2", "\u2581w3"]
    np.testing.assert_array_equal(back.spectrogram_saliency, exp.spectrogram_saliency)
    np.testing.assert_array_equal(back.prefix_saliency, exp.prefix_saliency)
    norm = back.normalized()
    spec, prefix = normalize("single_min_max", exp.spectrogram_saliency[0], exp.prefix_saliency[0], 1)
    np.testing.assert_allclose(norm.spectrogram_saliency[0], spec)
    np.testing.assert_allclose(norm.prefix_saliency[0], prefix)
    assert norm.spectrogram_saliency.min() == 0 and norm.spectrogram_saliency.max() == 1
    # what the sweep writes is what plot and report show (tests/test_report.py checks their content)
    from spes_jax.cli import main

    assert main(["plot", str(tmp_path / "c.h5"), "--out", str(tmp_path / "c.png")]) == 0
    assert main(["report", str(tmp_path / "c.h5"), "--out", str(tmp_path / "c.html")]) == 0


def test_bad_input(word_model):
    feats, cfg = synthetic_features(0.6, seed=1), _small()
    run = lambda target, foil, **kw: explain_contrastive(word_model, feats, target, foil, cfg, **kw)
    with pytest.raises(SpesError, match="different prefix than the target: piece 0"):
        run([5, 6, 7, 2], [9, 6, 8, 2], start=2, end=2)
    with pytest.raises(SpesError, match="does not match piece boundaries"):
        explain_contrastive(FairseqModel(word_model.cfg, word_model.params, Tokenizer(Dictionary(
            WORDS[:6] + ["x"] + WORDS[7:]), None)), feats, [5, 6, 7, 2], [5, 9, 7, 2], cfg, start=1, end=1)
    with pytest.raises(SpesError, match="outside the target's pieces"):
        run([5, 6, 7, 2], [5, 9, 7, 2], start=1, end=3)
    with pytest.raises(SpesError, match="outside the target's pieces"):
        run([5, 6, 7, 2], [5, 9, 7, 2], start=-1, end=1)
    with pytest.raises(SpesError, match="both the word's start and end"):
        run([5, 6, 7, 2], [5, 9, 7, 2], start=1)
    with pytest.raises(SpesError, match="identical"):
        run([5, 6, 7, 2], [5, 6, 7, 2])
    with pytest.raises(SpesError, match="foil: .* does not know: q"):
        run("\u2581w1 \u2581w2", "\u2581w1 q")
    with pytest.raises(SpesError, match="must end with </s>"):
        run([5, 6, 7], [5, 9, 7, 2])
    with pytest.raises(SpesError, match="unknown contrastive scorer"):
        run([5, 6, 7, 2], [5, 9, 7, 2], scorer="kl")
    with pytest.raises(SpesError, match="unknown word probability"):
        run([5, 6, 7, 2], [5, 9, 7, 2], word_probability="mean")
    with pytest.raises(SpesError, match="unknown contrastive normaliser"):
        run([5, 6, 7, 2], [5, 9, 7, 2], normalizer="z")
    plain = explain_contrastive(word_model, feats, [5, 6, 7, 2], [5, 9, 7, 2], cfg)
    with pytest.raises(SpesError, match="records no normaliser"):
        plain.normalized()


@pytest.mark.slow
def test_non_finite_scores_are_counted_and_left_out(tiny_config):
    """A word probability that underflows to 0 (chain rule over 8 unlikely pieces) makes every
    predicted_ratio score 0/0: counted, warned about, and kept out of the maps (no NaN)."""
    from spes_jax.errors import SpesWarning
    from spes_jax.models import init_params

    model = FairseqModel(tiny_config, jax.tree_util.tree_map(lambda x: 3 * x, init_params(tiny_config, seed=3)),
                              Tokenizer(Dictionary(WORDS), None))
    target = [35, 5, 6, 7, 8, 9, 10, 11, 12, 2]
    with pytest.warns(SpesWarning, match="80 mask\\(s\\) gave a non-finite predicted_ratio score"):
        exp = explain_contrastive(model, synthetic_features(0.6, seed=4), target, [35, 13, 2], _small(), start=1, end=8,
                                  scorer="predicted_ratio", word_probability="chain_rule")
    assert exp.contrastive["p_orig"] == 0 and exp.contrastive["nonfinite_scores"] == 80
    assert np.all(exp.spectrogram_saliency == 0) and np.all(exp.prefix_saliency == 0)


@pytest.mark.slow  # the engine's 1-vs-4-device test of the SPES kind runs by default (tests/test_spes.py)
def test_same_maps_on_one_and_four_devices(tiny_model, tmp_path):
    on_four_devices("contrastive", save_tiny_model(tiny_model, tmp_path))


def test_cli_on_the_reference_manifest(converted, tmp_path, capsys):
    """``spes-jax explain-contrastive --manifest`` reads the reference's own gender TSV (piece
    texts, .npy filterbanks, 'start-end' spans) and writes an HDF5 file in its layout that
    ``load_explanations`` reads back; the unperturbed word probabilities are the reference's."""
    import h5py

    from spes_jax.cli import main

    src = fixture_path("extensions", "gender_explain.tsv")
    lines = open(src, encoding="utf-8").read().splitlines()
    manifest = tmp_path / "m.tsv"  # utt0 only, its audio path made absolute
    cols = lines[1].split("\t")
    cols[1] = os.path.join(os.path.dirname(src), cols[1])
    manifest.write_text(lines[0] + "\n" + "\t".join(cols) + "\n", encoding="utf-8")
    out = tmp_path / "c.h5"
    args = ["explain-contrastive", "--manifest", str(manifest), "--model", converted("conformer_tiny"), "--masks", "6",
            "--token-masks", "4", "--batch-size", "8", "--normalizer", "paired_min_max", "--quiet", "--out", str(out)]
    assert main(args) == 0
    record = np.load(fixture_path("extensions", "gender_fbank_run_record.npz"))
    exp = load_explanations(out)["utt0"]
    info = exp.contrastive
    np.testing.assert_allclose([info["p_orig"], info["q_orig"]],
                               [record["utt0_word_prob_gt_orig"][0], record["utt0_word_prob_swapped_gt_orig"][0]],
                               rtol=2e-6)
    assert (info["start"], info["end"], info["foil_end"], info["word"], info["foil_word"]) == (2, 4, 2, "byear", "she")
    assert exp.spectrogram_saliency.shape == (1, 102, 80) and exp.prefix_saliency.shape == (1, 9)
    assert exp.normalized().is_normalized
    with h5py.File(out) as f:
        ref = json.load(open(fixture_path("extensions", "gender_e2e_meta.json")))["runs"]["gender_fbank_run"]
        assert [t.decode() for t in f["utt0/tgt_text"][()]] == ref["utterances"]["utt0"]["tgt_text"]
        assert f["utt0/tgt_embed_heatmap"].shape == (1, 9, 1)
        assert f.attrs["explanation_task"] == "contrastive" and f.attrs["normalizer"] == "paired_min_max"
        np.testing.assert_array_equal(f["utt0"].attrs["token_ids"], record["utt0_target"])
    capsys.readouterr()
    assert main(args) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    bad = tmp_path / "bad.tsv"
    bad.write_text(lines[0] + "\n" + "\t".join(cols[:-2] + ["3-4", cols[-1]]) + "\n", encoding="utf-8")
    assert main(args[:2] + [str(bad)] + args[3:-1] + [str(tmp_path / "bad.h5")]) == 2
    assert "utt0: the foil tokenises to a different prefix than the target: piece 2" in capsys.readouterr().err
    assert not (tmp_path / "bad.h5").exists()
    assert main(["explain-contrastive", str(manifest), "--manifest", str(manifest), "--out", str(tmp_path / "x.h5")]) == 2
    assert "not both" in capsys.readouterr().err
