import numpy as np

from spes_jax.explanation import Explanation
from spes_jax.analysis.plausibility import time_alignment
from spes_jax.text import token_words, word_groups


def test_token_words():
    assert token_words(["\u2581where", "\u2581is", "\u2581the", "\u2581do", "g", "?", "</s>"]) == [0, 1, 2, 3, 3, -1, -1]


def test_time_alignment_detects_aligned_and_misaligned_maps():
    rng = np.random.default_rng(0)
    pieces = ["\u2581one", "\u2581two", "\u2581three", ".", "</s>"]
    spans = [("one", 0.1, 0.4), ("two", 0.5, 0.8), ("three", 0.9, 1.2)]
    pairs_good, pairs_bad = [], []
    for i in range(6):
        good = rng.random((5, 130, 80)) * 0.1
        bad = good.copy()
        for k, (_, s, e) in enumerate(spans):
            good[k, int(s * 100):int(e * 100)] += 1
            bad[k, int(spans[(k + 1) % 3][1] * 100):int(spans[(k + 1) % 3][2] * 100)] += 1
        for maps, out in ((good, pairs_good), (bad, pairs_bad)):
            out.append((Explanation(str(i), pieces, maps.astype(np.float32), np.zeros((5, 5), np.float32)), spans))
    assert time_alignment(pairs_good).p < 1e-6
    assert time_alignment(pairs_bad).p > 0.5


def test_hypothesis_words_find_their_timed_words_in_spoken_form():
    """Whisper writes "10", "Mr." and punctuation; forced-alignment timings hold the spoken words."""
    from spes_jax.analysis.plausibility import align_words

    timed = [("go", 0.1, 0.3), ("forward", 0.3, 0.7), ("ten", 0.8, 1.0), ("meters", 1.0, 1.4),
             ("one", 1.6, 1.8), ("hundred", 1.8, 2.1), ("and", 2.1, 2.2), ("fifty", 2.2, 2.6)]
    spans = align_words(["Go", "forward", "10", "meters.", "150", "times"], timed)
    assert spans[:4] == timed[:4]
    assert spans[4][1:] == (1.6, 2.6) and spans[5] is None


def test_punctuation_inside_a_word_belongs_to_it():
    """The views' word grouping: "ill-disposed" and "don't" are one word each, a lone "▁" begins the
    word its next piece spells; punctuation outside words and </s> are no word."""
    from spes_jax.analysis.plausibility import hypothesis_words

    pieces = ["\u2581he", "\u2581was", "\u2581ill", "-", "dis", "posed", "\u2581", "red", "\u2581don", "'", "t", ".", "</s>"]
    assert token_words(pieces) == [0, 1, 2, 2, 2, 2, 3, 3, 4, 4, 4, -1, -1]
    assert hypothesis_words(pieces) == ["he", "was", "ill-disposed", "red", "don't"]


def test_read_timings_keeps_only_timings_of_the_hypotheses_words(tmp_path):
    """Timings of other words are dropped with one warning naming an example, never paired by position."""
    import pytest

    from spes_jax.analysis.plausibility import read_timings
    from spes_jax.errors import SpesWarning

    def exp(uid, words):
        pieces = ["\u2581" + w for w in words] + ["</s>"]
        K = len(pieces)
        return Explanation(uid, pieces, np.zeros((K, 50, 80), np.float32), np.zeros((K, K), np.float32))

    said = [exp("a", ["go", "forward"]), exp("b", ["does", "the", "farmer", "count"])]
    (tmp_path / "t.ctm").write_text("a 1 0.10 0.20 go\na 1 0.30 0.40 forward\n"
                                    "b 1 0.10 0.20 go\nb 1 0.30 0.40 forward\nb 1 0.50 0.60 ten\n")
    with pytest.warns(SpesWarning, match=r"t.ctm: the words of 1 utterance do not match .* b: said 'does the farmer"):
        kept = read_timings(tmp_path / "t.ctm", said)
    assert kept == {"a": [("go", 0.1, pytest.approx(0.3)), ("forward", 0.3, pytest.approx(0.7))]}  # start, duration
    # words of a hypothesis the timings lack are counted, not passed over in silence
    said = [exp("a", ["go", "forward", "now"])]
    with pytest.warns(SpesWarning, match=r"t.ctm: 1 of the 3 hypothesis words has no timing \(e.g. 'now' in a\)"):
        assert list(read_timings(tmp_path / "t.ctm", said)) == ["a"]


def test_no_word_resumes_after_punctuation_that_closed_it():
    """A continuation piece after punctuation outside any word starts a word: every word is one
    contiguous run of pieces (the word aggregation needs spans)."""
    pieces = ["\u2581a", "!", "?", "b", "</s>"]
    assert token_words(pieces) == [0, -1, -1, 1, -1]
    assert word_groups(pieces) == [[0], [1], [2], [3], [4]]
