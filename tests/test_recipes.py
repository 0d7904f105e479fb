"""Checkpoints of FBK's documented recipes (tests/fixtures/fbk/recipes): conversion, parity with the
reference's own outputs, the notes on ignored options, and a short SPES run on each converted model."""

import argparse
import json
import subprocess
import sys
import tempfile

import jax
import numpy as np
import pytest

from spes_jax.convert import ARCHITECTURES, convert_checkpoint, load_checkpoint
from spes_jax.convert.archs import model_name
from spes_jax import SearchConfig, SPESConfig, SpesError, beam_search, explain, load_model
from spes_jax.models import S2TModel
from spes_jax.models.io import read_model_dir
from support import fixture_path
import torch_writer

TOL = 1e-4
RECIPES = ("conformer_share_unsafe_avg", "conformer_joint_ctc", "s2t_transformer_s",
           "s2t_transformer_m_fbk_distance_penalty_log")


def _recipe(name, *parts):
    return fixture_path("recipes", name, *parts)


@pytest.fixture(scope="module")
def recipe_model(tmp_path_factory):
    """Converts each recipe checkpoint once; returns name -> (model directory, notes reported)."""
    cache = {}

    def get(name):
        if name not in cache:
            notes = []
            out = convert_checkpoint(_recipe(name, "model", f"{name}.pt"),
                                     str(tmp_path_factory.mktemp("recipes") / name),
                                     config_yaml=_recipe(name, "model", "config.yaml"), report=notes.append)
            cache[name] = out, notes
        return cache[name]

    return get


def _ref(name):
    return np.load(_recipe(name, "reference", f"{name}_reference.npz"))


def _batch_independent(ref, b, i):
    """Whether the reference's batched encoder output of input i (row b) equals its single-input one."""
    single, batch = ref[f"single{i}_encoder_out"], ref["batch_encoder_out"]
    return np.abs(single[:, 0] - batch[: single.shape[0], b]).max() <= TOL


def _compare(ref, run, b, enc, logp, row, prev_len):
    """Our row ``row`` against the reference run ``run`` (``single{i}`` or ``batch``), column ``b``."""
    n = int((~ref[f"{run}_encoder_padding_mask"][b]).sum())
    assert int(np.asarray(enc.valid)[row].sum()) == n
    assert np.abs(np.asarray(enc.out)[row, :n] - ref[f"{run}_encoder_out"][:n, b]).max() <= TOL
    if f"{run}_ctc_logits" in ref:
        k = int(ref[f"{run}_ctc_lengths"][b])
        assert int(enc.ctc_lengths[row]) == k
        assert np.abs(np.asarray(enc.ctc_logits)[row, :k] - ref[f"{run}_ctc_logits"][:k, b]).max() <= TOL
    else:
        assert enc.ctc_logits is None
    assert np.abs(logp[row, :prev_len] - ref[f"{run}_dec_log_probs"][b, :prev_len]).max() <= TOL


def _search_config(expected):
    gen = expected["generator"]
    return SearchConfig(beam=gen["beam"], no_repeat_ngram_size=gen["no_repeat_ngram_size"],
                        max_len_a=gen["max_len_a"], max_len_b=gen["max_len_b"], min_len=gen["min_len"],
                        lenpen=gen["lenpen"], unk_penalty=gen["unkpen"])


MAY_DIFFER, NEAR_TIE = 2, 2e-3


def _check_nbest(res, row, nbest):
    """Our hypotheses equal the reference's, tokens and scores, in the reference's order; but for
    ``MAY_DIFFER`` of them, whose scores must then lie among the reference's: these untrained models decode
    200 tokens with n-best scores 5e-4 apart, and on another CPU (an AVX-512 one against the reference's)
    rounding can prune a near-tied beam the other way (seen: conformer_joint_ctc, 2 of 5)."""
    assert len(nbest) == res.tokens.shape[1]
    ref = {tuple(h["tokens"]): (r, h) for r, h in enumerate(nbest)}
    ranks, scores = [], [h["score"] for h in nbest]
    for k in range(len(nbest)):
        n = int(res.lengths[row, k])
        tokens = tuple(res.tokens[row, k, :n].tolist())
        if tokens not in ref:
            assert min(scores) - NEAR_TIE <= float(res.scores[row, k]) <= max(scores) + NEAR_TIE, (row, k)
            continue
        r, hyp = ref[tokens]
        ranks.append(r)
        assert abs(float(res.scores[row, k]) - hyp["score"]) <= TOL
        np.testing.assert_allclose(res.positional_scores[row, k, :n], hyp["positional_scores"], atol=TOL)
    assert len(ranks) >= len(nbest) - MAY_DIFFER and ranks == sorted(ranks), (row, ranks)


@pytest.mark.parametrize("name", RECIPES)
def test_parity(name, recipe_model):
    """encoder_out, CTC logits and forced log-probs of each input alone, and of the reference's batch
    wherever its batched output is batch-independent (elsewhere, --batch-unsafe-relative-shift, our
    batched rows equal the reference's single runs); the beam hypotheses of every input identical, but for
    near-tied beams that another CPU's rounding prunes otherwise (`_check_nbest`).

    Inputs live in one static (T_max, L_max) buffer, as the pipeline pads them: one compilation.
    """
    model = load_model(recipe_model(name)[0])
    ref = _ref(name)
    order = list(ref["batch_order"])
    inputs = [ref[f"input_{i}"] for i in order]
    prevs = [ref[f"prev_output_tokens_{i}"] for i in order]
    T, L = max(map(len, inputs)), max(map(len, prevs))
    feats = np.stack([np.pad(x, ((0, T - len(x)), (0, 0))) for x in inputs])
    prev = np.stack([np.pad(p, (0, L - len(p)), constant_values=1) for p in prevs])
    lengths = np.array([len(x) for x in inputs])
    forward = jax.jit(model.module.apply)

    def run(rows):
        logits, enc = forward({"params": model.params}, feats[rows], lengths[rows], prev[rows])
        return np.asarray(jax.nn.log_softmax(logits, axis=-1)), jax.device_get(enc)

    for b, i in enumerate(order):
        logp, enc = run([b])
        _compare(ref, f"single{i}", 0, enc, logp, 0, len(prevs[b]))
    logp, enc = run(list(range(len(order))))
    dependent = 0
    for b, i in enumerate(order):
        if _batch_independent(ref, b, i):
            _compare(ref, "batch", b, enc, logp, b, len(prevs[b]))
        else:
            dependent += 1
            _compare(ref, f"single{i}", 0, enc, logp, b, len(prevs[b]))
    # Only the padding-unsafe shift makes fairseq's batched output depend on the batch.
    assert dependent == (1 if "unsafe" in name else 0)

    expected = json.load(open(_recipe(name, "reference", f"{name}_beam_search.json")))
    assert expected["target_dictionary_size"] == model.cfg.vocab_size == len(model.dictionary)
    cfg = _search_config(expected)
    res = jax.device_get(beam_search(model.module, model.params, feats, lengths, cfg=cfg,
                                     max_len=cfg.max_len(T, model.cfg.max_target_positions)))
    for b, i in enumerate(order):
        _check_nbest(res, b, expected["hypotheses"]["single"][i])
        if _batch_independent(ref, b, i):
            _check_nbest(res, b, expected["hypotheses"]["batch"][b])


def test_joint_ctc_dictionary_and_auxiliary_decoder(recipe_model):
    out, notes = recipe_model("conformer_joint_ctc")
    model = load_model(out)
    blank = len(model.dictionary) - 1
    assert model.dictionary.symbols[blank] == "<ctc_blank>" and model.cfg.vocab_size == 101
    expected = json.load(open(_recipe("conformer_joint_ctc", "reference", "conformer_joint_ctc_beam_search.json")))
    # The reference's beam search may emit <ctc_blank>: the decoder's vocabulary includes it.
    assert any(blank in h["tokens"] for nbest in expected["hypotheses"]["single"] for h in nbest)
    assert any("<ctc_blank>" in n for n in notes) and any("auxiliary CTC decoder converted" in n for n in notes)
    # The auxiliary CTC decoder is the reference's CtcDecoder: fc on encoder_out, pads filled with 0.
    ref = _ref("conformer_joint_ctc")
    sd = load_checkpoint(_recipe("conformer_joint_ctc", "model", "conformer_joint_ctc.pt"))["model"]
    x = ref["input_1"][None]

    @jax.jit
    def aux_logits(params, x, n):
        enc = model.module.apply(params, x, n, method=S2TModel.encode)
        return model.module.apply(params, enc, method=S2TModel.auxiliary_ctc)

    aux = np.asarray(aux_logits({"params": model.params}, x, np.array([x.shape[1]])))
    theirs = ref["single1_encoder_out"][:, 0] @ sd["auxiliary_decoder.fc.weight"].T + sd["auxiliary_decoder.fc.bias"]
    assert aux.shape == (1, 78, 101) and np.abs(aux[0] - theirs).max() <= TOL


def test_joint_ctc_with_language_tags_drops_the_auxiliary_decoder(tmp_path):
    """With --ignore-prefix-size the CtcDecoder also needs the target's language tag: dropped, with a note."""
    name = "conformer_joint_ctc"

    def lang_norm(sd):
        sd["auxiliary_decoder.lang_embed_layernorm.weight"] = np.ones(64, np.float32)
        sd["auxiliary_decoder.lang_embed_layernorm.bias"] = np.zeros(64, np.float32)

    notes = []
    out = convert_checkpoint(str(_rewritten(tmp_path, name, lambda a: a.update(ignore_prefix_size=1), lang_norm)),
                             str(tmp_path / "m"), config_yaml=_recipe(name, "model", "config.yaml"),
                             report=notes.append)
    cfg, params, *_ = read_model_dir(out)
    assert cfg.auxiliary_ctc_vocab_size == 0 and "auxiliary_decoder" not in params
    assert any(n.startswith("auxiliary CTC decoder dropped") for n in notes)


def test_shared_embeddings_keep_one_table(recipe_model):
    _, params, *_ = read_model_dir(recipe_model("s2t_transformer_s")[0])
    sd = load_checkpoint(_recipe("s2t_transformer_s", "model", "s2t_transformer_s.pt"))["model"]
    assert "output_projection" not in params["decoder"]
    np.testing.assert_array_equal(params["decoder"]["embed_tokens"]["embedding"], sd["decoder.embed_tokens.weight"])


def _rewritten(tmp_path, name, edit_args=None, edit_sd=None):
    ckpt = load_checkpoint(_recipe(name, "model", f"{name}.pt"))
    args, sd = dict(ckpt["cfg"]["model"]), dict(ckpt["model"])
    (edit_args or (lambda a: None))(args)
    (edit_sd or (lambda s: None))(sd)
    path = tmp_path / f"{name}_edited.pt"
    torch_writer.save_zip({"args": argparse.Namespace(**args), "model": sd}, path)
    return path


def _cli(*args):
    # Run outside the source tree: the installed package has spes_jax.convert, a checkout has convert/.
    return subprocess.run([sys.executable, "-m", "spes_jax.cli", *args], capture_output=True, text=True,
                          cwd=tempfile.gettempdir(), timeout=300)


def _convert_error(tmp_path, path, name):
    out = tmp_path / "out"
    r = _cli("convert", str(path), "--config-yaml", _recipe(name, "model", "config.yaml"), "--out", str(out))
    assert r.returncode == 2 and r.stderr.startswith("spes-jax: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert not out.exists()
    return r.stderr


def test_untied_output_projection_is_refused(tmp_path):
    def perturb(sd):
        sd["decoder.output_projection.weight"] = sd["decoder.output_projection.weight"] + np.float32(1e-3)

    err = _convert_error(tmp_path, _rewritten(tmp_path, "s2t_transformer_s", edit_sd=perturb), "s2t_transformer_s")
    assert "share_decoder_input_output_embed" in err and "decoder.output_projection.weight differs" in err


def test_cli_reports_ignored_options(tmp_path):
    name = "conformer_share_unsafe_avg"
    r = _cli("convert", _recipe(name, "model", f"{name}.pt"), "--config-yaml", _recipe(name, "model", "config.yaml"),
             "--out", str(tmp_path / "m"))
    assert r.returncode == 0, r.stderr
    assert "note: --batch-unsafe-relative-shift" in r.stdout and "as if alone" in r.stdout
    config = json.load(open(tmp_path / "m" / "config.json"))
    assert config["source"]["arch"] == "conformer" and len(config["source"]["notes"]) == 1


def test_distance_penalty_notes(tmp_path, recipe_model):
    notes = recipe_model("s2t_transformer_m_fbk_distance_penalty_log")[1]
    assert len(notes) == 1 and "--distance-penalty log ignored" in notes[0] and "4cd7c6dc" in notes[0]
    # GaussPenalty has learned variances (one per head): dropped, and said so.
    name = "s2t_transformer_m_fbk_distance_penalty_log"

    def gauss(args):
        args["distance_penalty"] = "gauss"

    def variances(sd):
        for layer in range(2):
            sd[f"encoder.transformer_layers.{layer}.self_attn.penalty.variance"] = np.ones(4, np.float32)

    notes = []
    out = convert_checkpoint(str(_rewritten(tmp_path, name, gauss, variances)), str(tmp_path / "m"),
                             config_yaml=_recipe(name, "model", "config.yaml"), report=notes.append)
    assert "2 unused penalty.variance entries are dropped" in notes[0]
    _, ours, *_ = read_model_dir(out)
    _, theirs, *_ = read_model_dir(recipe_model(name)[0])
    jax.tree_util.tree_map(np.testing.assert_array_equal, ours, theirs)


def test_architecture_registry_is_exact():
    expected = {"conformer": ["conformer", "conformer_s"],
                "conformer_joint_ctc": ["conformer_joint_ctc", "conformer_joint_ctc_s"],
                "s2t_transformer_fbk": ["s2t_transformer_fbk"] + [f"s2t_transformer_{s}_fbk" for s in
                                                                 ("s", "sp", "m", "mp", "l", "lp")],
                "s2t_transformer": ["s2t_transformer"] + [f"s2t_transformer_{s}" for s in
                                                          ("s", "sp", "m", "mp", "l", "lp")]}
    assert {a: m for m, archs in expected.items() for a in archs} == ARCHITECTURES
    for arch in ARCHITECTURES:
        assert model_name({"arch": arch})[0] == arch
    for other in ("conformer_with_tags", "speechformer", "confhyena", "multitask_conformer",
                  "s2t_transformer_triangle", "conformer_triangle_s", "s2t_transformer_fbk_m", "conformer_m"):
        with pytest.raises(SpesError, match=f"architecture '{other}' is not supported .*conformer_joint_ctc_s"):
            model_name({"arch": other, "_name": other})


def test_other_architecture_is_refused_by_name(tmp_path):
    name = "conformer_share_unsafe_avg"
    path = _rewritten(tmp_path, name, lambda a: a.update(arch="conformer_with_tags", _name="conformer_with_tags"))
    err = _convert_error(tmp_path, path, name)
    assert "architecture 'conformer_with_tags' is not supported (supported: conformer, conformer_s," in err


@pytest.mark.parametrize("name", [
    "conformer_joint_ctc", "s2t_transformer_s",
    pytest.param("conformer_share_unsafe_avg", marks=pytest.mark.slow),
    pytest.param("s2t_transformer_m_fbk_distance_penalty_log", marks=pytest.mark.slow)])
def test_spes_runs_on_converted_model(name, recipe_model):
    """The engine on each new kind of model (the other two differ only in options the engine never sees)."""
    model = load_model(recipe_model(name)[0])
    x = _ref(name)["input_0"][:100]
    cfg = SPESConfig.asr(n_segments=(10, 20), n_masks=16, n_token_masks=8, batch_size=8, token_batch_size=8)
    exp = explain(model, x, cfg, targets=[[5, 9, 11, 2]])
    assert exp.spectrogram_saliency.shape == (4, 100, 80) and exp.prefix_saliency.shape == (4, 4)
    assert np.isfinite(exp.spectrogram_saliency).all() and exp.spectrogram_saliency.max() > 0
