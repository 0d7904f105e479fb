"""Beam and greedy search with forced prompts, per-model token rules and both stopping rules: a tiny random
FBK model against teacher-forced decoding and a plain-Python beam search; Whisper tiny.en against the
Hugging Face reference outputs."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spes_jax import SearchConfig, SpesError, beam_search, greedy_search
from spes_jax.models import S2TModel, init_params
from spes_jax.text import EOS, PAD
from support import requires_whisper, whisper_fixture_path

MAX_LEN = 12
PROMPTS = [(EOS,), (EOS, 5, 6)]


@pytest.fixture(scope="module")
def eos_model(tiny_config):
    """The tiny random model with its final norm's bias moved toward the </s> output direction, so that
    hypotheses end at different lengths (unchanged, it never ends one)."""
    params = init_params(tiny_config, seed=3)
    w = params["decoder"]["output_projection"]["kernel"][:, EOS]
    params["decoder"]["layer_norm"]["bias"] += 1.4 * w / jnp.linalg.norm(w)
    return S2TModel(tiny_config), params


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.standard_normal((3, 64, 80)).astype(np.float32), np.array([64, 50, 37])


@functools.partial(jax.jit, static_argnums=0)
def _teacher_forced(model, params, x, n, prev):
    """(R, L, V) log-probs of ``decode`` for R right-padded sequences prev (R, L) on one utterance x (1, T, C)."""
    apply = functools.partial(model.apply, {"params": params})
    enc = apply(x, n, method="encode")
    rep = lambda a: jnp.repeat(a, prev.shape[0], axis=0)
    cross = jax.tree_util.tree_map(rep, apply(enc, method="cross_kv"))
    return jax.nn.log_softmax(apply(prev, cross, rep(enc.valid), method="decode"), axis=-1)


def _stepper(eos_model, batch, b, prompt, cfg):
    """Per-step log-probs of utterance b by teacher forcing: f(prefixes of generated ids, g) ->
    (rules applied (R, V), raw (R, V)), under the search's rules but the n-gram block."""
    model, params = eos_model
    x, n = batch

    def step(prefixes, g):
        prev = np.full((3, len(prompt) + MAX_LEN), PAD, np.int32)
        for r, toks in enumerate(prefixes):
            prev[r, :len(prompt) + g] = prompt + toks
        raw = np.asarray(_teacher_forced(model, params, x[b:b + 1], n[b:b + 1], prev))[:len(prefixes),
                                                                                    len(prompt) + g - 1]
        lp = raw.copy()
        lp[:, list(cfg.suppress)] = -np.inf
        if g == 0:
            lp[:, list(cfg.begin_suppress)] = -np.inf
        if g >= MAX_LEN:
            lp[:, np.arange(lp.shape[1]) != EOS] = -np.inf
        if g < cfg.min_len:
            lp[:, EOS] = -np.inf
        return lp, raw

    return step


def _reference_beam(step, cfg):
    """Plain-Python beam search of one utterance: fairseq's candidates, then either stopping rule."""
    K, running, finished = cfg.beam, [(0.0, ())], []
    for g in range(MAX_LEN + 1):
        lp = step([toks for _, toks in running], g)[0]
        cands = sorted(((s + lp[r, v], toks + (v,)) for r, (s, toks) in enumerate(running)
                        for v in range(lp.shape[1]) if lp[r, v] > -np.inf), key=lambda c: -c[0])[:2 * K]
        new = [(s / (g + 1) ** cfg.lenpen, toks) for s, toks in cands[:K] if toks[-1] == EOS]
        if cfg.early_stopping:  # fairseq: the first K finished
            finished += new[:K - len(finished)]
        else:  # Hugging Face: the best K so far
            finished = sorted(finished + new, key=lambda f: -f[0])[:K]
        running = [c for c in cands if c[1][-1] != EOS][:K]
        if len(finished) == K and (cfg.early_stopping or not running
                                   or running[0][0] / (g + 1) ** cfg.lenpen <= finished[-1][0]):
            break
    return sorted(finished, key=lambda f: -f[0])


def _hypotheses(res, b):
    return [(float(res.scores[b, k]), tuple(res.tokens[b, k, :res.lengths[b, k]].tolist()))
            for k in range(res.tokens.shape[1])]


def _check_positional_scores(step, res, b):
    """Every hypothesis's positional scores are its teacher-forced log-probs, its score their normalised sum."""
    for k in range(res.tokens.shape[1]):
        toks = res.tokens[b, k, :res.lengths[b, k]].tolist()
        picked = [step([tuple(toks[:g])], g)[0][0, t] for g, t in enumerate(toks)]
        np.testing.assert_allclose(res.positional_scores[b, k, :len(toks)], picked, atol=1e-5)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_follows_teacher_forcing_and_token_rules(eos_model, batch, prompt):
    """Greedy = argmax of teacher-forced log-probs of prompt + the tokens so far, after the rules:
    ``suppress`` ids never come, ``begin_suppress`` ids never first but later."""
    cfg = SearchConfig(no_repeat_ngram_size=0, suppress=(PAD, 23), begin_suppress=(6, 25))
    res = jax.device_get(greedy_search(*eos_model, *batch, cfg=cfg, max_len=MAX_LEN, prompt=prompt))
    overruled = set()
    for b in range(3):
        step = _stepper(eos_model, batch, b, prompt, cfg)
        toks = []
        while not toks or toks[-1] != EOS:
            lp, raw = step([tuple(toks)], len(toks))
            if raw[0].argmax() != lp[0].argmax():
                overruled.add((int(raw[0].argmax()), len(toks) == 0))
            toks.append(int(lp[0].argmax()))
        assert res.tokens[b, 0, :res.lengths[b, 0]].tolist() == toks
        assert 23 not in toks and toks[0] not in cfg.begin_suppress
        _check_positional_scores(step, res, b)
    # The rules did change the outcome: 23 was the best token after the first step, 6 or 25 at it,
    # and 6 or 25 come later.
    assert (23, False) in overruled and {(6, True), (25, True)} & overruled
    assert any(set(res.tokens[b, 0, 1:res.lengths[b, 0]].tolist()) & {6, 25} for b in range(3))


@pytest.mark.parametrize("early_stopping", [True, False])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_beam_search_matches_reference(eos_model, batch, prompt, early_stopping):
    cfg = SearchConfig(beam=3, no_repeat_ngram_size=0, early_stopping=early_stopping)
    res = jax.device_get(beam_search(*eos_model, *batch, cfg=cfg, max_len=MAX_LEN, prompt=prompt))
    for b in range(3):
        step = _stepper(eos_model, batch, b, prompt, cfg)
        expected = _reference_beam(step, cfg)
        got = _hypotheses(res, b)
        assert [t for _, t in got] == [t for _, t in expected]
        np.testing.assert_allclose([s for s, _ in got], [s for s, _ in expected], atol=1e-5)
        _check_positional_scores(step, res, b)


def test_hugging_face_stopping_keeps_better_hypotheses(eos_model, batch):
    """Without early stopping the search goes on after ``beam`` hypotheses are finished and keeps the best:
    score for score never worse than fairseq's first ``beam``, better on this batch."""
    runs = [jax.device_get(beam_search(*eos_model, *batch, cfg=SearchConfig(beam=3, no_repeat_ngram_size=0,
                                                                             early_stopping=e), max_len=MAX_LEN))
            for e in (True, False)]
    fairseq, hf = (r.scores for r in runs)
    assert np.all(hf >= fairseq - 1e-6)
    assert np.any(hf > fairseq + 1e-4)


def test_default_prompt_is_eos(eos_model, batch):
    cfg = SearchConfig(beam=3, no_repeat_ngram_size=0)
    default = beam_search(*eos_model, *batch, cfg=cfg, max_len=MAX_LEN)
    explicit = beam_search(*eos_model, *batch, cfg=cfg, max_len=MAX_LEN, prompt=(EOS,))
    jax.tree_util.tree_map(np.testing.assert_array_equal, default, explicit)


def test_prompt_and_max_len_must_fit_the_decoder(eos_model, batch):
    model, params = eos_model
    limit = model.cfg.max_target_positions
    with pytest.raises(SpesError, match="does not fit"):
        greedy_search(model, params, *batch, cfg=SearchConfig(), max_len=limit - 2, prompt=(EOS, 5, 6))
    with pytest.raises(SpesError, match="empty"):
        greedy_search(model, params, *batch, cfg=SearchConfig(), max_len=4, prompt=())
    assert SearchConfig(max_len_b=5000).max_len(100, limit, prompt_len=3) == limit - 3


@pytest.mark.parametrize("search", [greedy_search, beam_search])
def test_no_speech_token_above_threshold_gives_the_empty_hypothesis(eos_model, batch, search):
    """Rows whose no-speech probability (after the prompt's first token) passes the threshold get the
    empty hypothesis scored with that log-probability; the other rows decode as without detection."""
    model, params = eos_model
    prompt, token = (EOS, 5, 6), 7
    x, n = batch
    prev = np.array([[EOS]], np.int32)
    p = np.array([np.exp(_teacher_forced(model, params, x[b:b + 1], n[b:b + 1], prev)[0, 0, token])
                  for b in range(3)])
    threshold = float(np.sort(p)[1])  # strictly above: only the row with the largest probability
    plain = SearchConfig(beam=3, no_repeat_ngram_size=0)
    detect = SearchConfig(beam=3, no_repeat_ngram_size=0, no_speech=token, no_speech_threshold=threshold)
    ref = jax.device_get(search(model, params, x, n, cfg=plain, max_len=MAX_LEN, prompt=prompt))
    res = jax.device_get(search(model, params, x, n, cfg=detect, max_len=MAX_LEN, prompt=prompt))
    silent = int(np.argmax(p))
    assert res.lengths[silent, 0] == 1 and res.tokens[silent, 0, 0] == EOS
    np.testing.assert_allclose(res.scores[silent, 0], np.log(p[silent]), rtol=1e-5)
    assert ref.lengths[silent, 0] > 1
    for b in set(range(3)) - {silent}:
        np.testing.assert_array_equal(res.tokens[b], ref.tokens[b])
        np.testing.assert_array_equal(res.lengths[b], ref.lengths[b])
        # Two compiled programs: XLA may fuse the same sums differently (1 ulp on an Intel Xeon).
        np.testing.assert_allclose(res.scores[b], ref.scores[b], rtol=1e-6)
        np.testing.assert_allclose(res.positional_scores[b], ref.positional_scores[b], rtol=1e-6, atol=1e-6)
    with pytest.raises(SpesError, match="no-speech"):
        search(model, params, x, n, cfg=detect, max_len=MAX_LEN, prompt=(EOS,))


def test_search_options_from_a_model_directory():
    cfg = SearchConfig.from_dict({"suppress": [1, 7], "begin_suppress": [220], "early_stopping": False,
                                  "min_len": 0})
    assert cfg == SearchConfig(suppress=(1, 7), begin_suppress=(220,), early_stopping=False, min_len=0)
    hash(cfg)  # a static argument of the jitted searches
    with pytest.raises(SpesError, match="suppress"):
        SearchConfig.from_dict({"suppress": 1})
    with pytest.raises(SpesError, match="early_stopping|true or false"):
        SearchConfig.from_dict({"early_stopping": "no"})
    assert SearchConfig.from_dict({"no_speech": 7, "no_speech_threshold": 0.5}).no_speech_threshold == 0.5


CLIPS = ("goforward", "librivox_0880", "librivox_0920", "cards_005")


@pytest.fixture(scope="module")
def whisper_search():
    """Whisper tiny.en as ``load_model`` gives it (its decoding rules: generation_config.json), and its 4
    clips' (3000, 80) reference features."""
    from spes_jax.speech_model import load_model

    model = load_model(whisper_fixture_path("model", "whisper-tiny.en"))
    refs = [np.load(whisper_fixture_path("reference", f"{clip}.npz")) for clip in CLIPS]
    feats = np.stack([r["input_features"].T for r in refs])
    return model, feats, refs


@requires_whisper
def test_whisper_greedy_and_beam_match_transformers(whisper_search):
    model, feats, refs = whisper_search
    module, params, prompt, search = model.module, model.params, model.prompt, model.search
    assert prompt == (50257, 50362)
    # Hugging Face's max_length (448) counts the prompt and the final token.
    max_len = model.max_new_tokens(feats.shape[1], search)
    assert len(prompt) + max_len + 1 == 448
    lengths = np.full(len(CLIPS), feats.shape[1], np.int32)
    greedy = jax.device_get(greedy_search(module, params, feats, lengths, cfg=search, max_len=max_len,
                                          prompt=prompt))
    beam = jax.device_get(beam_search(module, params, feats, lengths, cfg=search, max_len=max_len, prompt=prompt))
    for b, (clip, ref) in enumerate(zip(CLIPS, refs)):
        assert [*prompt, *greedy.tokens[b, 0, :greedy.lengths[b, 0]].tolist()] == ref["greedy_ids"].tolist(), clip
        assert [*prompt, *beam.tokens[b, 0, :beam.lengths[b, 0]].tolist()] == ref["beam5_ids"].tolist(), clip
        assert abs(float(beam.scores[b, 0]) - float(ref["beam5_score"])) <= 1e-4, clip


@requires_whisper
def test_whisper_gives_silence_the_empty_hypothesis_at_once(whisper_search):
    """Digital silence and white noise: Whisper's no-speech probability is 0.95 / 0.85 (speech: about
    0.01), so the search ends with the empty hypothesis instead of 445 tokens of ". . .". Without
    detection the same search goes on."""
    model = whisper_search[0]
    rng = np.random.default_rng(0)
    audio = [np.zeros(48000, np.float32), (0.05 * rng.standard_normal(48000)).astype(np.float32)]
    for greedy in (False, True):
        assert [h[0].text for h in model.generate(audio, greedy=greedy)] == ["", ""]
    without = dataclasses.replace(model.search, no_speech=-1, max_len_b=8)
    assert all(h[0].text for h in model.generate(audio, without, greedy=True))
