"""Parity with FBK-fairseq's own outputs (tests/fixtures/fbk/reference), float32 on CPU."""

import json
import math

import jax
import numpy as np
import pytest

from spes_jax import SearchConfig, beam_search, load_model
from support import VARIANTS, fixture_path, reference_batch

TOL = 1e-4


def _ref(variant):
    return np.load(fixture_path("reference", f"{variant}_reference.npz"))


def _run(model, feats, lengths, prev):
    logits, enc = jax.jit(model.module.apply)({"params": model.params}, feats, lengths, prev)
    return np.asarray(jax.nn.log_softmax(logits, axis=-1)), jax.device_get(enc)


def _prev_batch(ref, order):
    prev = [ref[f"prev_output_tokens_{i}"] for i in order]
    L = max(len(p) for p in prev)
    return prev, np.stack([np.pad(p, (0, L - len(p)), constant_values=1) for p in prev])


def _check_outputs(ref, prefix, enc, logp, prev, ctc_layer):
    """Compares one reference run (``batch`` or ``single{i}``) with ours on valid positions."""
    valid = ~ref[f"{prefix}_encoder_padding_mask"]
    np.testing.assert_array_equal(np.asarray(enc.valid)[:, : valid.shape[1]].sum(1), valid.sum(1))
    sub_len = ref[f"{prefix}_subsample_lengths"]
    np.testing.assert_array_equal(enc.ctc_lengths, sub_len)
    for b in range(valid.shape[0]):
        n = valid[b].sum()
        ours, theirs = np.asarray(enc.out)[b, :n], ref[f"{prefix}_encoder_out"][:n, b]
        assert np.abs(ours - theirs).max() <= TOL
        for layer in range(len(enc.states)):
            state = ref[f"{prefix}_encoder_state_layer{layer + 1}"]
            m = sub_len[b] if layer + 1 < ctc_layer else n
            assert np.abs(np.asarray(enc.states[layer])[b, :m] - state[:m, b]).max() <= TOL, layer
        k = sub_len[b]
        assert np.abs(np.asarray(enc.ctc_logits)[b, :k] - ref[f"{prefix}_ctc_logits"][:k, b]).max() <= TOL
        L = len(prev[b])
        assert np.abs(logp[b, :L] - ref[f"{prefix}_dec_log_probs"][b, :L]).max() <= TOL


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_parity_batched_and_single(variant, converted):
    model = load_model(converted(variant))
    ref = _ref(variant)
    order, feats, lengths = reference_batch(ref)
    prev, prev_b = _prev_batch(ref, order)
    logp, enc = _run(model, feats, lengths, prev_b)
    _check_outputs(ref, "batch", enc, logp, prev, model.cfg.ctc_encoder_layer)
    for i in range(3):
        x = ref[f"input_{i}"][None]
        p = ref[f"prev_output_tokens_{i}"]
        logp, enc = _run(model, x, np.array([x.shape[1]]), p[None])
        _check_outputs(ref, f"single{i}", enc, logp, [p], model.cfg.ctc_encoder_layer)


@pytest.mark.parametrize("variant", VARIANTS)
def test_beam_search_parity(variant, converted):
    model = load_model(converted(variant))
    ref = _ref(variant)
    expected = json.load(open(fixture_path("reference", f"{variant}_beam_search.json")))
    gen = expected["generator"]
    cfg = SearchConfig(beam=gen["beam"], no_repeat_ngram_size=gen["no_repeat_ngram_size"],
                       max_len_a=gen["max_len_a"], max_len_b=gen["max_len_b"], min_len=gen["min_len"],
                       lenpen=gen["lenpen"], unk_penalty=gen["unkpen"])
    order, feats, lengths = reference_batch(ref)
    runs = [("batch", feats, lengths, expected["hypotheses"]["batch"])]
    for i in range(3):
        runs.append((f"single{i}", ref[f"input_{i}"][None], np.array([ref[f"input_{i}"].shape[0]]),
                     [expected["hypotheses"]["single"][i]]))
    for name, x, n, hyps in runs:
        max_len = cfg.max_len(x.shape[1], model.cfg.max_target_positions)
        res = jax.device_get(beam_search(model.module, model.params, x, n, cfg=cfg, max_len=max_len))
        for b, nbest in enumerate(hyps):
            assert len(nbest) == cfg.beam
            for k, hyp in enumerate(nbest):
                length = int(res.lengths[b, k])
                assert res.tokens[b, k, :length].tolist() == hyp["tokens"], (name, b, k)
                assert abs(float(res.scores[b, k]) - hyp["score"]) <= TOL
                np.testing.assert_allclose(res.positional_scores[b, k, :length], hyp["positional_scores"],
                                           atol=TOL)


def test_cli_generate_parity_on_espeak_audio(converted):
    """End to end from WAV files: fairseq-generate's H/P lines (scores printed in base 2)."""
    model = load_model(converted("conformer_tiny"))
    lines = open(fixture_path("reference", "cli_generate_espeak_batchsize2.txt")).read().splitlines()
    hyps = model.generate([fixture_path("fbank", f"utt{i}_16k.wav") for i in range(2)], batch_size=2)
    for i in range(2):
        h = next(l for l in lines if l.startswith(f"H-{i}\t")).split("\t")
        p = next(l for l in lines if l.startswith(f"P-{i}\t")).split("\t")[1].split()
        best = hyps[i][0]
        assert " ".join(best.pieces[:-1]) == h[2]
        assert abs(best.score / math.log(2) - float(h[1])) <= 1e-3
        np.testing.assert_allclose(np.array(best.positional_scores) / math.log(2), np.array(p, float), atol=1e-3)


def test_forced_log_probs_match_incremental_decoding(converted):
    """The one-pass teacher-forced scorer and the cached incremental decoder agree."""
    model = load_model(converted("conformer_tiny"))
    wav = fixture_path("fbank", "utt1_16k.wav")
    hyp = model.transcribe(wav, greedy=True)
    logp = model.forced_log_probs(wav, list(hyp.tokens))
    picked = logp[np.arange(len(hyp.tokens)), hyp.tokens]
    np.testing.assert_allclose(picked, hyp.positional_scores, atol=1e-5)
