"""Whisper's tokenizer against the texts and ids transformers produced for the fixture clips."""

import json
import random

import pytest

from spes_jax.errors import SpesError
from spes_jax.whisper import GenerationSettings, WhisperTokenizer
from spes_jax.whisper.tokenizer import _pretokenize
from support import whisper_fixture_path

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@pytest.fixture(scope="module")
def tok():
    return WhisperTokenizer.from_dir(whisper_fixture_path("model", "whisper-tiny.en"))


@pytest.fixture(scope="module")
def clips():
    with open(whisper_fixture_path("reference", "index.json")) as f:
        return json.load(f)["clips"]


def hypotheses(clips):
    return [(clip[f"{kind}_ids"], clip[f"{kind}_text"]) for clip in clips.values() for kind in ("greedy", "beam5")]


def test_decode_gives_the_reference_texts(tok, clips):
    for ids, text in hypotheses(clips):
        assert tok.decode(ids) == text


def test_encode_gives_the_generated_ids(tok, clips):
    for ids, text in hypotheses(clips):
        assert ids[:2] == [50257, 50362] and ids[-1] == 50256
        assert tok.encode(text) == ids[2:-1], text


def test_control_tokens(tok):
    assert (tok.eot, tok.sot, tok.sot_prev, tok.translate, tok.transcribe, tok.no_timestamps, tok.timestamp_begin) == (
        50256, 50257, 50360, 50357, 50358, 50362, 50363)
    assert len(tok.languages) == 99 and tok.languages["en"] == 50258 and tok.languages["su"] == 50356
    assert tok.vocab_size == 51864 and not tok.multilingual


def test_prompt(tok):
    assert tok.prompt() == tok.prompt("en") == (50257, 50362)
    for bad in (dict(task="translate"), dict(language="de"), dict(task="summarise")):
        with pytest.raises(SpesError):
            tok.prompt(**bad)
    # The same vocabulary read as a multilingual one: language and task tokens are forced.
    assert tok.prompt("de", "translate", multilingual=True) == (50257, 50260, 50357, 50362)
    assert tok.prompt("EN", multilingual=True) == (50257, 50258, 50358, 50362)
    for language in (None, "xx"):
        with pytest.raises(SpesError):
            tok.prompt(language, multilingual=True)


def test_pieces_and_word_starts(tok, clips):
    ids = clips["goforward"]["greedy_ids"]
    assert tok.pieces(ids) == ["<|startoftranscript|>", "<|notimestamps|>", " Go", " forward", " 10", " meters",
                               ".", "<|endoftext|>"]
    assert tok.word_starts(ids[2:-1]) == [True, True, True, True, False]
    assert tok.word_starts(tok.encode("ill-disposed men")) == [True, False, False, False, True]
    emoji = tok.encode(" 😀")  # one character, several byte-level tokens
    assert len(emoji) > 1 and "\ufffd" in "".join(tok.pieces(emoji)) and tok.decode(emoji) == " 😀"


def test_decode_skips_control_tokens_like_transformers(tok):
    hello = tok.encode(" Hello")
    previous = [tok.sot_prev, *tok.encode(" earlier text")]
    assert tok.decode([*previous, tok.sot, tok.no_timestamps, tok.timestamp_begin, *hello, tok.eot]) == " Hello"
    assert tok.decode([tok.sot, *hello, tok.eot], skip_special=False) == "<|startoftranscript|> Hello<|endoftext|>"
    with pytest.raises(SpesError):
        tok.decode([51864])


@pytest.mark.parametrize("text", ["  Hello\tworld!\n\nIt's 3.14 -- naïve café, 東京 😀   ",
                                  "don't  'cause they'RE", "<|endoftext|> is text here", "١٢٣ Ⅻ ½\u00a0\u3000x\r\n"])
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_pretokenizer_matches_the_gpt2_pattern():
    """The hand-written split against the pattern applied by the ``regex`` module (installed with sacrebleu)."""
    regex = pytest.importorskip("regex")
    pattern = regex.compile(GPT2_PATTERN)
    alphabet = [*"ab Z9 '\t\n\r.,!?-\"éß中١Ⅻ½\u00a0\u2003\u3000\x1c\x85😀\u0308_",
                "'s", "'re", "'ll", "'d", "'M", "   ", " \t"]
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        assert _pretokenize(text) == pattern.findall(text), repr(text)
    latin1 = "".join(map(chr, range(256))) + " " + "".join(map(chr, range(255, -1, -1)))
    assert _pretokenize(latin1) == pattern.findall(latin1)


def test_generation_settings(tmp_path):
    settings = GenerationSettings.from_dir(whisper_fixture_path("model", "whisper-tiny.en"))
    assert len(settings.suppress_tokens) == 90 and settings.suppress_tokens[:3] == (1, 2, 7)
    assert settings.begin_suppress_tokens == (220, 50256) and settings.is_multilingual is False
    assert settings.alignment_heads[:2] == ((1, 0), (2, 0))
    # A faster-whisper directory: CTranslate2's key names in config.json.
    (tmp_path / "config.json").write_text(json.dumps({"suppress_ids": [1, 2], "suppress_ids_begin": [220, 50257],
                                                       "alignment_heads": [[2, 1]], "lang_ids": [50259]}))
    assert GenerationSettings.from_dir(tmp_path) == GenerationSettings((1, 2), (220, 50257), ((2, 1),))
    (tmp_path / "config.json").write_text(json.dumps({"suppress_tokens": "all"}))
    with pytest.raises(SpesError):
        GenerationSettings.from_dir(tmp_path)
    with pytest.raises(SpesError):
        WhisperTokenizer.from_dir(tmp_path)  # no tokenizer.json
