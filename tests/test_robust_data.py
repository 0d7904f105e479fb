"""The robust training data: larger grammar, espeak-ng word timings, noise mixing, no-speech targets."""

import ctypes.util
import re

import numpy as np
import pytest

from spes_jax.errors import SpesError
from spes_jax.training import grammar, grammar_large as gl
from spes_jax.training import robust

needs_libespeak = pytest.mark.skipif(ctypes.util.find_library("espeak-ng") is None,
                                     reason="libespeak-ng is not installed")


def test_larger_grammar_contains_the_small_one():
    vocab = set(gl.vocabulary())
    assert len(vocab) >= 400 and set(grammar.vocabulary()) <= vocab
    sents = gl.sentences(3000, 4)
    assert len({s.en for s in sents}) == 3000 and sents == gl.sentences(3000, 4)
    kinds = {s.template for s in sents}
    assert {s.template for s in grammar.sentences(300, 5)} <= kinds and len(kinds) >= 20
    for s in sents:
        assert set(w.strip(".,?") for w in s.en.split()) <= vocab, s.en
    # the small grammar (the shipped models' data and held-out set (a)) is unchanged
    assert grammar.sentences(1, 1)[0].en == "the chair is behind the flower."


@pytest.mark.parametrize("article,case,expected", [
    ("definite", "nom", {"m": "der rote Ball", "f": "die rote Lampe", "n": "das rote Buch"}),
    ("definite", "acc", {"m": "den roten Ball", "f": "die rote Lampe", "n": "das rote Buch"}),
    ("definite", "dat", {"m": "dem roten Ball", "f": "der roten Lampe", "n": "dem roten Buch"}),
    ("indefinite", "nom", {"m": "ein roter Ball", "f": "eine rote Lampe", "n": "ein rotes Buch"}),
    ("indefinite", "acc", {"m": "einen roten Ball", "f": "eine rote Lampe", "n": "ein rotes Buch"}),
    ("indefinite", "dat", {"m": "einem roten Ball", "f": "einer roten Lampe", "n": "einem roten Buch"}),
])
def test_german_agreement_follows_the_nouns_gender(article, case, expected):
    nouns = {n[0]: n for n in gl.NOUNS_L}
    red = ("red", "rot")
    for gender, en in (("m", "ball"), ("f", "lamp"), ("n", "book")):
        assert nouns[en][4] == gender
        assert gl.noun_phrase_de(nouns[en], red, case, article) == expected[gender]
    assert gl.noun_phrase_de(nouns["car"], ("expensive", "teur", "teuer"), "nom", "indefinite") == "ein teures Auto"
    quiet = {a[0]: a for a in gl.ADJECTIVES_L}["quiet"]  # a stem ending in -e takes no second e
    assert gl.noun_phrase_de(nouns["lamp"], quiet, "nom", "indefinite") == "eine leise Lampe"
    assert gl.noun_phrase_de(nouns["ball"], quiet, "nom", "indefinite") == "ein leiser Ball"
    assert all("leisee" not in s.de and "leiseer" not in s.de for s in gl.sentences(3000, 4))
    assert gl.noun_phrase_en(nouns["apple"], None, "indefinite") == "an apple"
    assert gl.noun_phrase_en(nouns["apple"], red, "indefinite") == "a red apple"


def test_generated_sentences_agree_in_gender():
    """In the indefinite templates, article and adjective ending follow the English noun's gender."""
    nouns = {n[0]: n for n in gl.NOUNS_L}
    adjectives = {a[0]: a for a in gl.ADJECTIVES_L}
    checked = 0
    for s in gl.sentences(2000, 9):
        m = re.fullmatch(r"this is an? (?:(\w+) )?(\w+)\.", s.en)
        if s.template != "this_is" or not m:
            continue
        adj, noun = (adjectives[m.group(1)] if m.group(1) else None), nouns[m.group(2)]
        det = {"m": "ein", "f": "eine", "n": "ein"}[noun[4]]
        ending = {"m": "er", "f": "e", "n": "es"}[noun[4]]
        assert s.de == f"Das ist {det} {adj[1] + ending + ' ' if adj else ''}{noun[2]}.", s
        checked += 1
    assert checked > 50


def test_noise_has_unit_rms_and_exact_snr():
    rng = np.random.default_rng(0)
    clean = np.sin(np.arange(32000) * 0.05).astype(np.float32) * 0.3
    clean[:4000] = 0  # silence outside the span: SNR is measured on speech
    spans = [("w", 0.25, 2.0)]
    for kind in robust.NOISES:
        n = robust.noise(kind, 16001, rng)
        assert n.shape == (16001,) and abs(np.sqrt(np.mean(n.astype(np.float64) ** 2)) - 1) < 1e-4
        for snr in (0.0, 10.0, 30.0):
            noisy = robust.add_noise(clean, spans, snr, kind, rng)
            assert abs(robust.snr_db(noisy, clean, spans) - snr) < 0.01
    white, brown = robust.noise("white", 32000, rng), robust.noise("brown", 32000, rng)
    low = lambda x: np.abs(np.fft.rfft(x)[:400]).mean() / np.abs(np.fft.rfft(x)[4000:]).mean()
    assert low(brown) > 10 * low(white)  # brown noise is low-pass


def test_silence_insertion_shifts_spans_and_level_does_not_clip():
    x = np.arange(1, 16001, dtype=np.float32) / 16001
    spans = [("a", 0.0, 0.5), ("b", 0.5, 1.0)]
    y, s = robust.insert_silence(x, spans, 0.5, 0.25)
    assert s == [("a", 0.0, 0.5), ("b", 0.75, 1.25)] and len(y) == 20000
    assert np.all(y[8000:12000] == 0) and y[12000] == x[8000]
    rng = np.random.default_rng(1)
    for _ in range(20):
        z = robust.set_level(x, rng, ramp=True)
        assert np.abs(z).max() < 1.0 and np.abs(z).max() > 10 ** (-48 / 20)


def test_edge_probability_leaves_some_examples_without_silence_around():
    x = np.full(8000, 0.1, np.float32)
    spans = [("a", 0.0, 0.25), ("b", 0.25, 0.5)]
    rng = np.random.default_rng(0)

    def lead_and_trail(edge):
        y, s = robust.augment(x, spans, robust.Mix(noise=0, pause=0, edge=edge), rng)
        lead = s[0][1]
        return lead, len(y) / 16000 - lead - 0.5

    assert all(min(lead_and_trail(0.0)) >= 0.05 for _ in range(20))
    assert all(lead_and_trail(1.0) == (0.0, 0.0) for _ in range(5))
    halves = [lead_and_trail(0.5) for _ in range(40)]
    assert {a == 0 for a, _ in halves} == {b == 0 for _, b in halves} == {True, False}


def test_no_speech_targets_are_the_empty_hypothesis(tmp_path):
    from spes_jax.text import Dictionary, Tokenizer
    from spes_jax.training.train import batches, train_tokenizer

    rng = np.random.default_rng(3)
    clips = [robust.no_speech(rng) for _ in range(40)]
    assert all(0.5 * 16000 <= len(c) <= 12 * 16000 and -1 <= c.min() and c.max() < 1 for c in clips)
    assert any(not c.any() for c in clips) and any(np.abs(c).max() > 1e-2 for c in clips)  # silence and noise
    utts = robust.build_training(6, robust.Mix(continuous=0, spliced=0, nospeech=1), seed=2)
    assert [u.en for u in utts] == [""] * 6 and [u.words for u in utts] == [[]] * 6
    dict_path, spm_path = train_tokenizer([s.en for s in grammar.sentences(200, 2)], 150, str(tmp_path))
    tok = Tokenizer(Dictionary.load(dict_path), spm_path)
    targets = [tok.encode(u.en) for u in utts]
    assert targets == [[2]] * 6  # just </s>
    for feats, lengths, prev, tgt, ctc, real in batches(utts, targets, rng, 4000, augment=False):
        assert np.all(tgt[real, 0] == 2) and np.all(tgt[real, 1:] == 1) and np.all(prev[real, 0] == 2)


def test_mix_parsing():
    m = robust.Mix.parse("continuous=3,spliced=1")
    assert (m.continuous, m.spliced, m.nospeech) == (0.75, 0.25, 0.0)
    for bad in ("continuous", "speech=1", "continuous=-1", "spliced=0"):
        with pytest.raises(SpesError, match="--mix"):
            robust.Mix.parse(bad)


@needs_libespeak
def test_espeak_word_events_bracket_the_spliced_words():
    """With 400 ms breaks between words, each word is an isolated stretch of sound, as in spliced
    speech; espeak-ng's word spans must bracket exactly those stretches (onset and offset within
    60 ms), and outside them there is no sample above -26 dB of the peak and < 0.1 % of the energy
    (the f2 variant's faint decay). Continuous speech of the same sentence reports the same words."""
    from spes_jax.training.espeak import synthesize
    from spes_jax.training.synth import spoken_words

    for s in grammar.sentences(3, 3):
        words = spoken_words(s.en)
        x, spans = synthesize(' <break time="400ms"/> '.join(words), "en-gb-x-rp+f2", 160, 50, ssml=True)
        assert [w for w, _, _ in spans] == words
        loud = np.abs(x) > 0.01 * np.abs(x).max()
        inside = np.zeros(len(x), bool)
        for w, a, b in spans:
            seg = np.flatnonzero(loud[int(a * 16000):int(b * 16000)])
            assert seg.size, w
            assert seg[0] / 16000 < 0.06 and (b - a) - seg[-1] / 16000 < 0.06, w  # onset/offset within 60 ms
            inside[int(a * 16000):int(b * 16000)] = True
        energy = x.astype(np.float64) ** 2
        assert not (np.abs(x[~inside]) > 0.05 * np.abs(x).max()).any()
        assert energy[~inside].sum() < 1e-3 * energy.sum()
        y, cont = synthesize(s.en, "en-gb-x-rp+f2", 160, 50)
        assert [w for w, _, _ in cont] == words
        assert all(a < b <= c for (_, a, b), (_, c, _) in zip(cont, cont[1:])) and cont[-1][2] <= len(y) / 16000


@needs_libespeak
def test_merged_word_pairs_are_split_at_the_phoneme_event():
    """espeak-ng speaks "for the" as one unit with a single word event; the split is at /D/."""
    from spes_jax.training.espeak import synthesize

    x, spans = synthesize("the doctor looks for the blue key.", "en-us", 160, 50)
    assert [w for w, _, _ in spans] == "the doctor looks for the blue key".split()
    (_, a, b), (_, c, d) = spans[3], spans[4]
    assert a < b == c < d and 0.05 < b - a < 0.3
    x, spans = synthesize("this is a huge glove.", "en-us-nyc+robosoft2", 157, 75)  # "a 'uge": one event
    assert [w for w, _, _ in spans] == "this is a huge glove".split()
    # Three words under one event ("of the 'uge"), split from the last word backwards.
    x, spans = synthesize("the shirts are in front of the huge computer.", "en-us-nyc+whisper", 193, 58)
    assert [w for w, _, _ in spans] == "the shirts are in front of the huge computer".split()
    assert all(a < b == c < d for (_, a, b), (_, c, d) in zip(spans[4:8], spans[5:8]))
    assert min(b - a for _, a, b in spans[5:8]) > 0.03


@needs_libespeak
def test_eval_sets_are_disjoint_from_training_and_noisy_at_10_db():
    sets = robust.eval_sets(n=3, n_long=1, which="bcdle")
    b, c, d, long = sets["b"], sets["c"], sets["d"], sets["long"]
    for ub, ue in zip(b, sets["e"]):  # e: b cut at its first word's start and last word's end
        assert ue.en == ub.en and ue.words[0][1] == 0 and len(ue.audio) < len(ub.audio)
        assert abs(ue.words[-1][2] - len(ue.audio) / 16000) < 1e-3
    assert [u.en for u in b] == [u.en for u in c] and all(u.voice.startswith("en-gb-x-gbcwmd+f3") for u in b)
    for ub, uc in zip(b, c):
        assert abs(robust.snr_db(uc.audio, ub.audio, ub.words) - 10) < 0.2  # 10 dB (clipping aside)
    assert [u.en for u in d] == [""] * 3
    assert 3 <= long[0].en.count(".") + long[0].en.count("?") <= 5
    train = robust.build_training(4, robust.Mix(continuous=1, spliced=0, nospeech=0), seed=1)
    held = {s.en for s in robust.held_out_sentences(robust.HELD_OUT_POOL)}
    assert all(u.en and u.en not in held for u in train)
    assert all(not u.voice.startswith(robust.HELD_OUT_ACCENT) and "+f3|" not in u.voice for u in train)
    assert [u.en for u in train] == [u.en for u in robust.build_training(4, robust.Mix(1, 0, 0), seed=1)]


@needs_libespeak
def test_multi_sentence_examples():
    """multi examples hold 2-5 whole sentences in one voice, their words timed in order; a mix without
    them draws exactly the three-source recipe's examples."""
    from spes_jax.training import robust

    mix = robust.Mix(continuous=0, spliced=0, nospeech=0, multi=1, noise=0, pause=0)
    utts = robust.build_training(3, mix, seed=4, spliced_voices=0)
    for u in utts:
        n = u.en.count(".") + u.en.count("?")
        assert 2 <= n <= 5 and len(u.de.split()) > 0
        assert [w for w, _, _ in u.words] == [w.strip(".,?") for w in u.en.split() if w.strip(".,?")]
        assert all(a < b <= c for (_, a, b), (_, c, _) in zip(u.words, u.words[1:]))
    three = robust.Mix(0.5, 0, 0.5)
    assert [u.en for u in robust.build_training(4, three, seed=1, spliced_voices=0)] == \
        [u.en for u in robust.build_training(4, robust.Mix.parse("continuous=0.5,nospeech=0.5,multi=0"), seed=1,
                                             spliced_voices=0)]


def test_noun_accuracy_counts_each_reference_noun_once():
    from spes_jax.training.robust import noun_accuracy

    refs = ["Der Lehrer nimmt das braune Bild.", "Die blaue Kiste ist auf dem Hund.", "Wo ist die Kerze?"]
    hyps = ["Der Lehrer nimmt die braune Schüssel.", "Die blaue Kiste ist auf der Ente.", "Wo ist die Kerze?"]
    # Lehrer, Bild | Kiste, Hund | Kerze: 3 of 5 (a hypothesis noun counts once, wherever it stands)
    assert noun_accuracy(refs, hyps) == pytest.approx(60.0)
    assert noun_accuracy(["Die Hunde sehen die Hunde."], ["Die Hunde sehen die Katzen."]) == pytest.approx(50.0)
