"""SPES on Whisper tiny.en (docs/spes.md, "Whisper"): only the utterance's frames are segmented,
perturbed and shown; occluded cells become the utterance's channel mean by default; the forced prompt's last token
is the start column of the prefix map."""

import argparse
import json

import jax
import numpy as np
import pytest
from support import requires_whisper, whisper_fixture_path

from spes_jax import SPESConfig, load_explanations, load_model
from spes_jax.cli import main
from spes_jax.commands import _loader
from spes_jax.provenance import model_provenance, options_note
from spes_jax.core import SegmentMasks, requested_segments, segment, sweep
from spes_jax.explainer import compute_params, explanation
from spes_jax.whisper.features import silence_floor

pytestmark = requires_whisper
CLIP = "goforward"
CONFIG = SPESConfig.asr(n_masks=6, n_token_masks=4, batch_size=6, token_batch_size=4)


@pytest.fixture(scope="module")
def whisper():
    return load_model(whisper_fixture_path("model", "whisper-tiny.en"))


@pytest.fixture(scope="module")
def clip(whisper):
    """(features (T, 80), the fixture's beam-5 ids without the prompt) of the clip."""
    with open(whisper_fixture_path("reference", "index.json")) as f:
        ids = json.load(f)["clips"][CLIP]["beam5_ids"]
    return whisper.features(whisper_fixture_path("audio", f"{CLIP}.wav")), ids[len(whisper.prompt):]


def _prepared(model, feats, tokens):
    seg = segment(feats, CONFIG)
    plan = sweep.make_plan(model.module, CONFIG)
    return seg, plan, sweep.prepare(feats, tokens, seg, CLIP, CONFIG, plan, layout=model.layout(feats))


def test_only_the_utterance_is_segmented_and_the_padding_is_silence(whisper, clip):
    feats, tokens = clip
    T = feats.shape[0]
    seg, _, inputs = _prepared(whisper, feats, tokens)
    assert T == 280 and inputs.features.shape == (3000, 80)
    # k adapts to the utterance's 2.8 s, not to the 30 s the encoder reads.
    assert seg.requested == requested_segments(T, CONFIG) == (1120, 1400, 1680)
    labels = np.asarray(inputs.labels)
    assert (labels[:, :T] > 0).all() and (labels[:, T:] == 0).all()
    padded = np.asarray(inputs.features)
    np.testing.assert_array_equal(padded[:T], feats)
    np.testing.assert_array_equal(padded[T:], silence_floor(feats))
    # ... which is what Hugging Face's extractor gives the zero samples after the utterance.
    hf = np.load(whisper_fixture_path("reference", f"{CLIP}.npz"))["input_features"].T
    np.testing.assert_allclose(padded[T:], hf[T:], atol=1e-5)


def test_deleted_copies_are_padded_like_the_original(whisper, clip):
    """Deletion curves decode copies with the loudest cells deleted: padded with the original's floor,
    as the sweep pads, not with the copy's lower one."""
    feats, _ = clip
    deleted = np.where(feats > np.quantile(feats, 0.8), feats.mean(0), feats).astype(np.float32)
    assert silence_floor(deleted) < silence_floor(feats)
    T = feats.shape[0]
    batch, lengths = whisper.batch([deleted], whisper.layout(feats))
    assert batch.shape == (1, 3000, 80) and lengths.tolist() == [T]
    np.testing.assert_array_equal(batch[0, T:], silence_floor(feats))
    np.testing.assert_array_equal(whisper.batch([deleted])[0][0, T:], silence_floor(deleted))


@pytest.mark.parametrize("occlusion", ["floor", "zero", "mean"])
def test_occluded_cells_take_the_chosen_value(whisper, clip, occlusion):
    feats, tokens = clip
    model = whisper if occlusion == "mean" else whisper.configured(occlusion=occlusion)  # mean: the default
    seg, _, inputs = _prepared(model, feats, tokens)
    want = {"floor": np.full(80, silence_floor(feats)), "zero": np.zeros(80), "mean": feats.mean(0)}[occlusion]
    T = feats.shape[0]
    for g in range(3):  # one mask of each level
        perturbed, occluded = map(np.asarray, SegmentMasks()(inputs, jax.numpy.int32(g)))
        cells = occluded[seg.labels[g % 3]] > 0  # (T, 80): the cells of this mask's occluded segments
        assert 0.3 < cells.mean() < 0.7
        np.testing.assert_allclose(perturbed[:T][cells], np.broadcast_to(want, (T, 80))[cells], rtol=1e-6)
        np.testing.assert_array_equal(perturbed[:T][~cells], feats[~cells])
        np.testing.assert_array_equal(perturbed[T:], np.asarray(inputs.features)[T:])  # padding untouched


def test_sweep_maps_cover_the_utterance_and_start_at_notimestamps(whisper, clip):
    feats, tokens = clip
    T, K = feats.shape[0], len(tokens)
    seg, plan, inputs = _prepared(whisper, feats, tokens)
    assert inputs.prompt == whisper.prompt == (50257, 50362) and int(inputs.prev[0]) == 50362
    result = sweep.run(sweep.init(compute_params(whisper, plan), inputs, plan=plan), plan, CONFIG)
    spec, prefix = map(np.asarray, (result.spectrogram, result.prefix))
    assert spec.shape == (16, 3000, 80) and np.abs(spec[:K, :T]).max() > 0
    assert not spec[:, T:].any()  # padding frames are never perturbed, so never credited
    assert np.abs(prefix[:K, 0]).max() > 0  # <|notimestamps|> is occluded like any previous token
    exp = explanation(whisper, CLIP, tokens, T, seg, CONFIG, result)
    assert exp.spectrogram_saliency.shape == (K, T, 80)
    assert exp.prefix_tokens == ["<|notimestamps|>", "▁go", "▁forward", "▁10", "▁meters", "."]
    assert exp.tokens[-1] == "</s>" and exp.text == "go forward 10 meters."


def test_results_record_the_loading_options_and_readers_reuse_them(whisper):
    """A result records the occlusion (language, task) it was made with; evaluate and compare load the
    model with it unless the command line gives another, which is noted."""
    attrs = model_provenance(whisper.configured(occlusion="floor"), "asr")
    assert json.loads(attrs["model_options"]) == {"language": None, "occlusion": "floor", "task": "transcribe"}
    model = _loader(argparse.Namespace(language=None, occlusion=None), "asr", attrs)(whisper.path)
    assert model.options["occlusion"] == "floor" and options_note(attrs, model, "x.h5") is None
    model = _loader(argparse.Namespace(language=None, occlusion="zero"), "asr", attrs)(whisper.path)
    assert options_note(attrs, model, "x.h5") == "x.h5: running the model with occlusion zero (explained with floor)"


@pytest.mark.slow
def test_cli_explains_a_real_clip(tmp_path):
    out = tmp_path / "x.h5"
    wav = whisper_fixture_path("audio", f"{CLIP}.wav")
    assert main(["--no-compile-cache", "explain", "--model", whisper_fixture_path("model", "whisper-tiny.en"),
                 wav, "--masks", "60", "--token-masks", "20", "--quiet", "--out", str(out)]) == 0
    (exp,) = load_explanations(out).values()
    assert exp.id == CLIP and exp.n_masks == 60 and exp.n_token_masks == 20
    assert exp.spectrogram_saliency.shape == (len(exp.tokens), 280, 80)
    assert exp.prefix_tokens[0] == "<|notimestamps|>" and exp.text == "go forward 10 meters."
    assert np.isfinite(exp.spectrogram_saliency).all() and np.abs(exp.spectrogram_saliency).max() > 0


def test_whisper_sweeps_two_masks_per_step_on_a_cpu(whisper, tiny_model):
    """A configuration that leaves the batch open gets the model's: on a CPU 2 encoder passes over 30 s
    per step already run at the matmul rate."""
    cpu = jax.default_backend() == "cpu"
    assert whisper.sweep_config(SPESConfig.asr()).batches() == ((2, 32) if cpu else (64, 256))
    assert tiny_model.sweep_config(SPESConfig.asr()).batches() == (64, 256)
    assert whisper.sweep_config(SPESConfig.asr(batch_size=8)).batches() == (8, 32 if cpu else 256)


def test_given_targets_end_with_whispers_end_token(whisper, clip):
    """The one target check of every entry point uses the model's own end token and vocabulary (not
    fairseq's </s> = 2): a text is encoded as Whisper writes it, ids must end with <|endoftext|>."""
    from spes_jax.contrastive import word_pair
    from spes_jax.errors import SpesError

    _, tokens = clip
    assert whisper.target_ids("go forward 10 meters.") == tokens and tokens[-1] == 50256
    assert whisper.target_ids(" ".join(whisper.dictionary.pieces(tokens[:-1]))) == tokens  # the TSV piece layout
    with pytest.raises(SpesError, match=r"target: token ids must end with </s> \(id 50256\)"):
        whisper.target_ids(tokens[:-1] + [2])
    with pytest.raises(SpesError, match=r"token id 60000 is outside the model's vocabulary \(0..51863\)"):
        whisper.target_ids([60000, 50256])
    target, foil, spans = word_pair(whisper, "go forward 10 meters.", "go forward 20 meters.")
    assert target == tokens and foil[-1] == 50256 and spans == (2, 2, 2)


@pytest.mark.slow
def test_cli_explains_a_word_contrastively(tmp_path):
    out = tmp_path / "c.h5"
    assert main(["--no-compile-cache", "explain-contrastive", "--model", whisper_fixture_path("model", "whisper-tiny.en"),
                 whisper_fixture_path("audio", f"{CLIP}.wav"), "--target", "go forward 10 meters.",
                 "--foil", "go forward 20 meters.", "--masks", "12", "--token-masks", "4", "--quiet",
                 "--out", str(out)]) == 0
    (exp,) = load_explanations(out).values()
    info = exp.contrastive
    assert (info["word"], info["foil_word"]) == ("10", "20") and info["p_orig"] > info["q_orig"] > 0
    assert exp.spectrogram_saliency.shape == (1, 280, 80) and np.isfinite(exp.spectrogram_saliency).all()


def test_encoder_saliency_covers_the_utterance_only(whisper, clip):
    """Whisper's decoder attends to all 1,500 encoder frames, but only the utterance's 140 (2.8 s at 20 ms)
    are occluded and shown, as the spectrogram sweep never touches the 30 s padding."""
    from spes_jax import explain_encoder

    feats, tokens = clip
    enc = explain_encoder(whisper, feats, n_masks=4, batch_size=4, targets=[tokens])
    assert enc.saliency.shape == (len(tokens), 140) and np.abs(enc.saliency).max() > 0
