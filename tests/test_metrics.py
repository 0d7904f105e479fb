"""Deletion, insertion and size: the reference's definitions and expected values, and hand-made cases."""

import csv
import glob
import json
import os

import numpy as np
import pytest
from support import fixture_path, synthetic_features

from spes_jax import SpesError, load_explanations, load_model
from spes_jax.explanation import Explanation
from spes_jax.analysis.metrics import (
    auc,
    corpus_score,
    percentages,
    perturbation_curve,
    size_curve,
    thresholds,
    zeroed_cells,
)


def _expected():
    with open(fixture_path("xai_metrics", "xai_metrics_results.json")) as f:
        return json.load(f)


def _refs(name):
    with open(fixture_path("xai_metrics", name), newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _d_lines(path):
    """fairseq generate output -> {step: {sentence: detokenised hypothesis}}."""
    out = {}
    with open(path) as f:
        for line in f:
            if line.startswith("D-"):
                head, _, text = line.rstrip("\n").split("\t")
                _, sent, step = head.split("-")
                out.setdefault(int(step), {})[int(sent)] = text.strip()
    return out


def _reference_auc(files, refs, scorer, n_steps, step, bounds=(-np.inf, np.inf)):
    """auc_score.py: per file and step a corpus score over the sentences present, mean over files."""
    per_file = []
    for path in files:
        steps = _d_lines(path)
        sents = [s for s in sorted(steps[0]) if bounds[0] <= int(refs[s]["n_frames"]) <= bounds[1]]
        per_file.append([corpus_score(scorer, [refs[s]["tgt_text"] for s in sents], [steps[k][s] for s in sents])
                         for k in range(n_steps)])
    scores = np.mean(per_file, axis=0)
    return scores, auc(scores, np.arange(n_steps) * step)


_SCORER = {"wer": "wer", "wer_max": "wer_max", "sacrebleu": "bleu"}


_AUC_RUNS = [f"{run}_{scorer}{bound}" for run in ("mock_out_folder", "mock_out_single", "deletion_tiny_conformer")
             for scorer in ("wer", "wer_max", "sacrebleu")
             for bound in (("", "_ub60") if run == "mock_out_folder" else ("",))]


@pytest.mark.parametrize("key", _AUC_RUNS)
def test_auc_matches_reference_scores(key):
    expected = _expected()[key]
    run, scorer = next((r, key[len(r) + 1:].removesuffix("_ub60")) for r in
                       ("mock_out_folder", "mock_out_single", "deletion_tiny_conformer") if key.startswith(r))
    args = expected["args"]
    refs = _refs(os.path.basename(args["tsv_path"]))
    where = {"mock_out_folder": ("fbk_uts_mock_data", "out_folder"), "mock_out_single": ("fbk_uts_mock_data", "out"),
             "deletion_tiny_conformer": ("deletion_generate_output.txt",)}[run]
    path = fixture_path("xai_metrics", *where)
    files = sorted(glob.glob(os.path.join(path, "*"))) if os.path.isdir(path) else [path]
    bounds = (float(args["lower_bound"]), float(args["upper_bound"]))
    scores, value = _reference_auc(files, refs, _SCORER[scorer], len(expected["percentages"]), args["perc_step"],
                                   bounds)
    np.testing.assert_allclose(scores, expected["scores"], rtol=1e-9, atol=1e-9)
    assert value == pytest.approx(expected["printed_auc"], rel=1e-12)


def test_wer_variants_by_hand():
    refs, hyps = ["a b c d", "a b"], ["a x c d", "p q r s t u"]  # edits 1 and 6
    assert corpus_score("wer", refs, hyps) == pytest.approx(100 * 7 / 6)
    assert corpus_score("wer_max", refs, hyps) == 100.0  # the reference clips the corpus score
    assert corpus_score("wer_sentence_max", refs, hyps) == pytest.approx(100 * 3 / 6)  # 1 + min(6, 2)
    assert corpus_score("bleu", ["the cat sat on the mat ."], ["the cat sat on the mat ."]) == pytest.approx(100)
    with pytest.raises(SpesError, match="references"):
        corpus_score("wer", refs, hyps[:1])
    with pytest.raises(SpesError, match="scorer"):
        corpus_score("cer", refs, hyps)


def _unpack(packed, C=80):
    return np.unpackbits(packed, axis=-1)[..., :C].astype(bool)


@pytest.mark.parametrize("u", ["utt0", "utt1"])
def test_deleted_cells_match_reference_dataset(u):
    rec = np.load(fixture_path("xai_metrics", "deletion_dataset_record.npz"))
    heat = rec[f"{u}_aggregated_fbank_heatmap"][0]
    levels = percentages(5)
    expected = _unpack(rec[f"{u}_deleted_mask_per_step_packed"])
    # With the reference's own (tie-unstable) ranking the cells are identical ...
    ours = zeroed_cells(heat, levels, "deletion", order=rec[f"{u}_ordered_indices"])
    assert np.array_equal(ours, expected)
    np.testing.assert_array_equal(ours.reshape(len(levels), -1).sum(1), rec[f"{u}_n_deleted_per_step"])
    # ... and with our stable ranking they differ only among cells of equal saliency.
    stable = zeroed_cells(heat, levels, "deletion")
    for a, b in zip(stable, expected):
        np.testing.assert_array_equal(np.sort(heat[a]), np.sort(heat[b]))
    insertion = zeroed_cells(heat, levels, "insertion", order=rec[f"{u}_ordered_indices"])
    assert insertion[0].all() and not insertion[-1].any()
    assert np.array_equal(insertion, ~ours)  # keeping the top p % = deleting all the rest


@pytest.mark.parametrize("u, i", [("utt0", "0"), ("utt1", "1")])
def test_sentence_level_map_matches_reference_aggregation(u, i):
    rec = np.load(fixture_path("xai_metrics", "deletion_dataset_record.npz"))
    exp = load_explanations(fixture_path("spes", "spes_fbank_run_explanations.h5"))[i]
    # Within the reference's float32 z-score error (docs/spes.md), not float round-off.
    np.testing.assert_allclose(exp.sentence_level(), rec[f"{u}_aggregated_fbank_heatmap"][0], atol=2e-3)


def test_deletion_decodes_like_the_reference(converted):
    """The reference's deletion run on the tiny conformer: the same perturbed inputs, decoded as one
    batch of 21 levels per utterance, give the reference's hypotheses.

    41 of the 42 are identical. The random checkpoint hallucinates up to 200 tokens at near-uniform
    probabilities, and in one 172-token hallucination (utt0, 35 %) beam pruning takes the other side
    of a float32 near-tie: the hypotheses agree for 136 tokens and their final scores differ by
    0.003 nats per token (docs/evaluation.md).
    """
    model = load_model(converted("conformer_tiny"))
    rec = np.load(fixture_path("xai_metrics", "deletion_dataset_record.npz"))
    expected = _d_lines(fixture_path("xai_metrics", "deletion_generate_output.txt"))
    levels = percentages(5)
    mismatches = []
    for sent, u in enumerate(["utt0", "utt1"]):
        feats = rec[f"{u}_fbank_step0"]
        zero = zeroed_cells(rec[f"{u}_aggregated_fbank_heatmap"][0], levels, order=rec[f"{u}_ordered_indices"])
        hyps = model.decode(list(np.where(zero, np.float32(0), feats[None])), batch_size=len(levels))
        mismatches += [(h[0].text, expected[k][sent]) for k, h in enumerate(hyps) if h[0].text != expected[k][sent]]
    assert len(mismatches) <= 1
    for ours, ref in mismatches:
        assert len(os.path.commonprefix([ours, ref])) > 100 and len(ref) > 150


def test_size_matches_reference():
    expected = _expected()
    mock = load_explanations(fixture_path("xai_metrics", "mock_explanations.h5")).values()
    for normalize, key, tol in [(True, "size_mock_norm_single_mean_std+paired_min_max", 1e-9),
                                (False, "size_mock_no_norm", 1e-9)]:
        s = size_curve(mock, normalize=normalize)
        np.testing.assert_allclose(s.spectrogram, expected[key]["fbank_scores"], atol=tol)
        np.testing.assert_allclose(s.prefix, expected[key]["tgt_scores"], atol=tol)
        assert s.auc == pytest.approx(expected[key]["printed_auc_fbanks"], abs=tol)
        assert s.auc_prefix == pytest.approx(expected[key]["printed_auc_tgt"], abs=tol)
    for run in ("fbank", "decoder"):
        key = f"size_spes_{run}_run_norm"
        s = size_curve(load_explanations(fixture_path("spes", f"spes_{run}_run_explanations.h5")).values())
        np.testing.assert_allclose(s.spectrogram, expected[key]["fbank_scores"], atol=1e-9)
        np.testing.assert_allclose(s.prefix, expected[key]["tgt_scores"], atol=1e-9)
        assert s.auc == pytest.approx(expected[key]["printed_auc_fbanks"], rel=1e-12)
        assert s.auc_prefix == pytest.approx(expected[key]["printed_auc_tgt"], rel=1e-12)
        np.testing.assert_allclose(s.thresholds, expected[key]["thresholds"])


def _explanation(spec, K=2):
    return Explanation("u", ["a", "</s>"][:K], np.asarray(spec, np.float32)[None].repeat(K, 0),
                       np.tril(np.ones((K, K), np.float32)), ["</s>", "a"][:K])


def test_size_by_hand():
    # Normalised maps: values {0, 1/3, 2/3, 1} in equal parts -> % >= t is 100, 75, 50, 25.
    spec = np.repeat(np.array([0.0, 1 / 3, 2 / 3, 1.0]), 5).reshape(4, 5)
    s = size_curve([_explanation(spec).normalized()], normalize=False)
    want = np.select([thresholds() <= 0, thresholds() <= 1 / 3, thresholds() <= 2 / 3], [100, 75, 50], 25)
    np.testing.assert_allclose(s.spectrogram, want)
    assert s.auc == pytest.approx(auc(want, thresholds()))
    # A compact map (one salient cell) is smaller than a diffuse one.
    compact, diffuse = np.zeros((20, 8)), np.random.default_rng(0).random((20, 8))
    compact[3, 4] = 1
    assert size_curve([_explanation(compact)]).auc < size_curve([_explanation(diffuse)]).auc


class _ToyModel:
    """Says word i exactly when key cell i of its (10, 4) input is non-zero: the perfect explanation
    is known by construction."""

    KEYS = ((1, 1), (3, 2), (6, 0), (8, 3))

    def features(self, x):
        return np.asarray(x, np.float32)

    def layout(self, features):
        from spes_jax.core.sweep import InputLayout

        return InputLayout()

    def decode(self, feats, search=None, batch_size=8, greedy=False, layout=None):
        from spes_jax.speech_model import Hypothesis

        words = lambda x: " ".join(f"w{i}" for i, c in enumerate(self.KEYS) if x[c] != 0)
        return [[Hypothesis((), (), words(x), 0.0, ())] for x in feats]


def test_perfect_explanation_beats_random_by_hand():
    toy, x = _ToyModel(), np.ones((10, 4), np.float32)
    perfect = np.zeros((10, 4), np.float32)
    for i, c in enumerate(_ToyModel.KEYS):
        perfect[c] = 1 + i / 10
    refs, audio = {"u": "w0 w1 w2 w3"}, {"u": x}
    good = perturbation_curve(toy, [_explanation(perfect)], audio, refs, "deletion", "wer")
    # 40 cells: 5 % deletes the 2 best key cells (WER 50), 10 % all 4 (WER 100).
    np.testing.assert_allclose(good.scores, [0, 50] + [100] * 19)
    assert good.auc == pytest.approx(125 + 375 + 9000) and good.auc_fraction == pytest.approx(95)
    random = np.random.default_rng(1).random((10, 4))
    bad = perturbation_curve(toy, [_explanation(random)], audio, refs, "deletion", "wer")
    assert bad.scores[0] == 0 and bad.scores[-1] == 100 and bad.auc < good.auc
    ins_good = perturbation_curve(toy, [_explanation(perfect)], audio, refs, "insertion", "wer")
    ins_bad = perturbation_curve(toy, [_explanation(random)], audio, refs, "insertion", "wer")
    np.testing.assert_allclose(ins_good.scores, [100, 50] + [0] * 19)
    assert ins_good.auc < ins_bad.auc


def test_bad_metric_input(tiny_model):
    exp = _explanation(np.zeros((20, 80)))
    with pytest.raises(SpesError, match="no audio or reference"):
        perturbation_curve(tiny_model, [exp], {}, {})
    with pytest.raises(SpesError, match="features"):
        perturbation_curve(tiny_model, [exp], {"u": synthetic_features(0.3)}, {"u": "w1"})
    with pytest.raises(SpesError, match="metric"):
        zeroed_cells(np.zeros((4, 4)), percentages(), "removal")
    with pytest.raises(SpesError, match="divide"):
        percentages(7)
    with pytest.raises(SpesError, match="no explanations"):
        size_curve([])
