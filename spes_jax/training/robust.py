"""Robust training data and the four held-out evaluation sets (continuous speech, new voices, silence).

Training examples come from three sources, mixed in fixed proportions (``Mix``):

- ``continuous``: a sentence of the larger grammar spoken in one go by espeak-ng (``espeak.py``), with
  the word spans from espeak-ng's own word events;
- ``spliced``: the same kind of sentence built from per-word recordings (``synth.WordBank``, as the
  shipped models were trained);
- ``nospeech``: digital silence, dither or noise alone, whose target is the empty hypothesis (``</s>``).

Speech examples are then augmented: leading/trailing silence of 0.05-2 s (none at all, at each end
separately, with probability ``Mix.edge``), with some probability an
internal pause of 0.2-1.5 s at a word boundary, a random level (peak -35 to -1 dBFS) with a possible
level ramp of up to +-12 dB across the utterance, and with some probability additive noise (white,
pink, brown or mains hum) at one of several SNRs (speech power measured inside the word spans).
Word spans are shifted with every inserted silence, so they stay exact.

Voices: every English espeak-ng voice ("en" is British English) and every variant of Debian's espeak-ng 1.51, with speed
120-220 words per minute and pitch 20-80, except the held-out accent (West Midlands) and variant
(f3), which only the evaluation sets use.

Evaluation sets (``eval_sets``): (a) today's set (small grammar, spliced, held-out voice), (b) continuous
held-out sentences of the larger grammar in the held-out voice, (c) (b)'s waveforms with noise at 10 dB
SNR, (d) silence and noise only; plus ``long``: concatenations of 3-5 (b) sentences, and ``e``: (b) cut
at its first word's start and last word's end.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import numpy as np

from .. import assets
from ..assets import EMBEDDED
from ..audio import SAMPLE_RATE, fbank, utterance_cmvn
from ..errors import SpesError
from . import grammar, grammar_large
from .data import Utterance, build as build_spliced_v1
from .espeak import synthesize
from .synth import Voice, WordBank, _trim, spoken_words

ENGLISH_VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-us-nyc")
HELD_OUT_ACCENT, HELD_OUT_VARIANT = "en-gb-x-gbcwmd", "f3"
# The variants of Debian's espeak-ng 1.51 (espeak-ng-data/voices/!v), fixed here for reproducibility.
VARIANTS = tuple("""Alex Alicia Andrea Andy Annie AnxiousAndy Demonic Denis Diogo Gene Gene2 Henrique Hugo Jacky Lee
Marco Mario Michael Mike Nguyen RicishayMax RicishayMax2 RicishayMax3 Storm Tweaky UniRobot adam anika
anikaRobot announcer antonio aunty belinda benjamin boris caleb croak david ed edward edward2 f1 f2 f4 f5 fast
grandma grandpa gustave iven iven2 iven3 iven4 john kaukovalta klatt klatt2 klatt3 klatt4 klatt5 klatt6 linda m1
m2 m3 m4 m5 m6 m7 m8 marcelo max michel miguel norbert pablo paul pedro quincy rob robert robosoft robosoft2
robosoft3 robosoft4 robosoft5 robosoft6 robosoft7 robosoft8 sandro shelby steph steph2 steph3 travis victor
whisper whisperf zac""".split())
HELD_OUT_SETTINGS = ((145, 45), (165, 60))
EVAL_SEED = 1  # the held-out sets' seed; training excludes their first HELD_OUT_POOL sentences
HELD_OUT_POOL = 1000  # (speed, pitch) of the held-out voice, as in today's set
NOISES = ("white", "pink", "brown", "hum")


@dataclass(frozen=True)
class Mix:
    """Proportions of the sources and the augmentation probabilities."""

    continuous: float = 0.6
    spliced: float = 0.3
    nospeech: float = 0.1
    multi: float = 0.0  # 2-5 sentences in one example, spoken continuously with pauses between them
    noise: float = 0.5  # probability of additive noise on a speech example
    snrs: tuple = (0, 5, 10, 15, 20, 30)  # dB
    pause: float = 0.3  # probability of an internal pause
    # probability that the start, and separately the end, gets no silence: recordings cut right at the
    # speech (espeak-ng's own output is one) were never seen with 0, and the first models then
    # hallucinated sentence after sentence on them
    edge: float = 0.0

    @classmethod
    def parse(cls, text: str, **kw) -> "Mix":
        """``"continuous=0.6,spliced=0.3,nospeech=0.1"`` -> Mix (weights normalised to sum 1, missing = 0)."""
        names = ("continuous", "spliced", "nospeech", "multi")
        try:
            parts = {k.strip(): float(v) for k, v in (p.split("=") for p in text.split(","))}
        except ValueError:
            raise SpesError(f"--mix: expected name=weight,... got {text!r}") from None
        if set(parts) - set(names) or any(v < 0 for v in parts.values()) or sum(parts.values()) <= 0:
            raise SpesError(f"--mix: weights of {', '.join(names)} must be >= 0 and not all 0, got {text!r}")
        total = sum(parts.values())
        return cls(**{k: parts.get(k, 0.0) / total for k in names}, **kw)


def random_voice(rng: np.random.Generator) -> Voice:
    """A training voice setting: any English voice but the held-out accent, any variant but f3."""
    name = ENGLISH_VOICES[rng.integers(len(ENGLISH_VOICES))]
    variant = f"+{VARIANTS[rng.integers(len(VARIANTS))]}" if rng.random() < 0.8 else ""  # else the plain voice
    return Voice(name + variant, int(rng.integers(120, 221)), int(rng.integers(20, 81)))


def held_out_voices() -> list[Voice]:
    return [Voice(f"{HELD_OUT_ACCENT}+{HELD_OUT_VARIANT}", s, p) for s, p in HELD_OUT_SETTINGS]


# ---------------------------------------------------------------- signal operations (pure, numpy)

def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32 noise with unit RMS: white, pink (1/f power), brown (1/f^2) or mains hum (50/60 Hz
    and harmonics over faint white noise)."""
    if kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        f0 = (50.0, 60.0)[rng.integers(2)]
        x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
                for k in range(1, 8)) + 0.05 * rng.standard_normal(n)
    else:
        if kind == "white":
            x = rng.standard_normal(n)
        else:
            from scipy.fft import irfft, next_fast_len, rfft

            m = next_fast_len(n, real=True)  # shaped on a fast FFT length, then cut
            power = {"pink": 1.0, "brown": 2.0}[kind]
            f = np.fft.rfftfreq(m, 1 / SAMPLE_RATE)
            spec = rfft(rng.standard_normal(m)) * np.maximum(f, 20.0) ** (-power / 2)  # flat below 20 Hz
            x = irfft(spec, m)[:n]
    x = np.asarray(x, np.float64)
    return (x / max(np.sqrt(np.mean(x ** 2)), 1e-12)).astype(np.float32)


def add_noise(x: np.ndarray, spans: list, snr_db: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """x plus noise at ``snr_db``: speech power is the mean power inside the word spans."""
    inside = np.zeros(len(x), bool)
    for _, a, b in spans:
        inside[int(a * SAMPLE_RATE):int(b * SAMPLE_RATE)] = True
    p_speech = float(np.mean(x[inside].astype(np.float64) ** 2)) if inside.any() else float(np.mean(x ** 2))
    scale = np.sqrt(p_speech / 10 ** (snr_db / 10))
    return (x + scale * noise(kind, len(x), rng)).astype(np.float32)


def snr_db(x: np.ndarray, clean: np.ndarray, spans: list) -> float:
    """Measured SNR of ``x = clean + noise`` with speech power inside the spans (for tests and reports)."""
    inside = np.zeros(len(x), bool)
    for _, a, b in spans:
        inside[int(a * SAMPLE_RATE):int(b * SAMPLE_RATE)] = True
    n = (x - clean).astype(np.float64)
    return float(10 * np.log10(np.mean(clean[inside].astype(np.float64) ** 2) / np.mean(n ** 2)))


def insert_silence(x: np.ndarray, spans: list, at: float, seconds: float) -> tuple[np.ndarray, list]:
    """Inserts ``seconds`` of zeros at time ``at`` (s) and shifts the spans that start at or after it."""
    i, n = int(round(at * SAMPLE_RATE)), int(round(seconds * SAMPLE_RATE))
    shift = n / SAMPLE_RATE
    y = np.concatenate([x[:i], np.zeros(n, np.float32), x[i:]])
    return y, [(w, a + shift, b + shift) if a >= at else (w, a, b) for w, a, b in spans]


def set_level(x: np.ndarray, rng: np.random.Generator, ramp: bool) -> np.ndarray:
    """Peak level -35..-1 dBFS, optionally a linear level ramp of up to +-12 dB across the utterance."""
    peak = np.abs(x).max()
    if peak == 0:
        return x
    gain_db = rng.uniform(-35, -1) - 20 * np.log10(peak)
    if ramp:
        gain_db = gain_db + np.linspace(0, rng.uniform(-12, 12), len(x))
    y = x * 10 ** (gain_db / 20)
    return (y / max(1.0, np.abs(y).max() / 0.999)).astype(np.float32)  # a ramp may not clip


# ---------------------------------------------------------------- examples

def _edge_silence(mix: Mix, rng: np.random.Generator) -> float:
    """Seconds of silence before or after the speech: none with probability mix.edge, else 0.05-2 s
    (with edge 0 the draws are those of the recipe before edge existed)."""
    return 0.0 if mix.edge and rng.random() < mix.edge else rng.uniform(0.05, 2.0)


def augment(x: np.ndarray, spans: list, mix: Mix, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Silences, level and noise on one speech example (see the module docstring)."""
    x = x.astype(np.float32)
    if len(spans) > 1 and rng.random() < mix.pause:
        k = int(rng.integers(1, len(spans)))
        x, spans = insert_silence(x, spans, spans[k][1], rng.uniform(0.2, 1.5))
    x, spans = insert_silence(x, spans, 0.0, _edge_silence(mix, rng))
    x = np.concatenate([x, np.zeros(int(_edge_silence(mix, rng) * SAMPLE_RATE), np.float32)])
    x = set_level(x, rng, ramp=rng.random() < 0.3)
    if rng.random() < mix.noise:
        x = add_noise(x, spans, float(rng.choice(mix.snrs)), NOISES[rng.integers(len(NOISES))], rng)
    elif rng.random() < 0.7:  # dither; otherwise the pauses stay digital silence
        x = x + rng.standard_normal(len(x)).astype(np.float32) * 10 ** rng.uniform(-4.5, -3)
    return np.clip(x, -1, 1 - 2 ** -15).astype(np.float32), spans


def no_speech(rng: np.random.Generator) -> np.ndarray:
    """0.5-12 s of digital silence, dither, or noise at -60..-10 dBFS RMS (possibly with a level ramp)."""
    n = int(rng.uniform(0.5, 12.0) * SAMPLE_RATE)
    u = rng.random()
    if u < 0.25:
        return np.zeros(n, np.float32)
    if u < 0.45:
        return (rng.standard_normal(n) * 10 ** rng.uniform(-4.5, -3)).astype(np.float32)
    x = noise(NOISES[rng.integers(len(NOISES))], n, rng) * 10 ** (rng.uniform(-60, -10) / 20)
    if rng.random() < 0.3:
        x = x * 10 ** (np.linspace(0, rng.uniform(-12, 12), n) / 20)
    return np.clip(x, -1, 1 - 2 ** -15).astype(np.float32)


def features(x: np.ndarray) -> np.ndarray:
    """(T, 80) float16 utterance-CMVN filterbanks, as the models consume them."""
    return utterance_cmvn(fbank(x)).astype(np.float16)


def continuous(s, voice: Voice) -> tuple[np.ndarray, list]:
    """A sentence spoken in one go; spans from espeak-ng's word events."""
    x, spans = synthesize(s.en, voice.name, voice.speed, voice.pitch)
    if [w for w, _, _ in spans] != spoken_words(s.en):
        raise SpesError(f"espeak-ng's words {[w for w, _, _ in spans]} differ from {s.en!r}")
    return x, spans


def _word_synth(word: str, voice: Voice) -> np.ndarray:
    return _trim(synthesize(word, voice.name, voice.speed, voice.pitch)[0])


# ---------------------------------------------------------------- the held-out sets

def held_out_sentences(n: int, seed: int = 1) -> list:
    """The larger grammar's held-out sentences (sets (b), (c), long); training excludes them."""
    return grammar_large.sentences(n, seed + 101)


def eval_sets(n: int = 200, n_long: int = 20, seed: int = 1, which: str = "abcdl") -> dict[str, list[Utterance]]:
    """The held-out evaluation sets, deterministic in seed and independent of the training data.

    (a) spliced small-grammar sentences in the held-out voice (exactly today's set, ``data.build``);
    (b) continuous larger-grammar sentences in the held-out voice, 0.1-0.3 s silence around, faint noise;
    (c) (b) plus noise at 10 dB SNR (type drawn per utterance); (d) silence/noise only (empty references);
    l: ``n_long`` concatenations of 3-5 (b)-style sentences with 0.3-1 s pauses; s (diagnostic, not in
    the default): (a)'s sentences spoken continuously like (b), which separates new words from new speech;
    e (not in the default): (b) cut at its first word's start and last word's end, no silence around.
    """
    if n + 5 * n_long > HELD_OUT_POOL:
        raise SpesError(f"at most {HELD_OUT_POOL} held-out sentences: n + 5 x long = {n + 5 * n_long}")
    out: dict[str, list[Utterance]] = {}
    if "a" in which:
        out["a"] = build_spliced_v1(0, n, seed=seed)[1]
    rng = np.random.default_rng(seed + 2000)
    sents, voices = held_out_sentences(n + 5 * n_long, seed), held_out_voices()

    def clean_continuous(sentences, rng):
        out = []
        for i, s in enumerate(sentences):
            x, spans = continuous(s, voices[i % len(voices)])
            x, spans = insert_silence(x, spans, 0.0, rng.uniform(0.1, 0.3))
            x = np.concatenate([x, np.zeros(int(rng.uniform(0.1, 0.3) * SAMPLE_RATE), np.float32)])
            x = x * rng.uniform(0.5, 1) + rng.standard_normal(len(x)).astype(np.float32) * 10 ** rng.uniform(-4, -3)
            out.append((s, voices[i % len(voices)], np.clip(x, -1, 1 - 2 ** -15).astype(np.float32), spans))
        return out

    clean = clean_continuous(sents[:n], rng) if set(which) & set("bce") else []
    if "s" in which:  # diagnostic: set (a)'s sentences spoken continuously (no new words)
        out["s"] = [Utterance(f"s{i:04d}", s.en, s.de, v.key(), sp, features(x), x) for i, (s, v, x, sp)
                    in enumerate(clean_continuous(grammar.sentences(n, seed + 1), np.random.default_rng(seed + 4000)))]
    if "b" in which:
        out["b"] = [Utterance(f"b{i:04d}", s.en, s.de, v.key(), sp, features(x), x)
                    for i, (s, v, x, sp) in enumerate(clean)]
    if "c" in which:
        noisy = []
        for i, (s, v, x, sp) in enumerate(clean):
            y = np.clip(add_noise(x, sp, 10.0, NOISES[rng.integers(len(NOISES))], rng), -1, 1 - 2 ** -15)
            noisy.append(Utterance(f"c{i:04d}", s.en, s.de, v.key(), sp, features(y), y))
        out["c"] = noisy
    if "e" in which:
        cut = []
        for i, (s, v, x, sp) in enumerate(clean):
            a, b = int(sp[0][1] * SAMPLE_RATE), int(np.ceil(sp[-1][2] * SAMPLE_RATE))
            y = x[a:b]
            cut.append(Utterance(f"e{i:04d}", s.en, s.de, v.key(), [(w, p - a / SAMPLE_RATE, q - a / SAMPLE_RATE)
                                                                   for w, p, q in sp], features(y), y))
        out["e"] = cut
    if "d" in which:
        d_rng = np.random.default_rng(seed + 3000)
        out["d"] = [Utterance(f"d{i:04d}", "", "", "", [], features(x), x)
                    for i, x in enumerate(no_speech(d_rng) for _ in range(n))]
    if "l" in which:
        pool, longs = sents[n:], []
        for i in range(n_long):
            k = int(rng.integers(3, 6))
            group, pool = pool[:k], pool[k:]
            longs.append(concatenated(f"long{i:02d}", group, voices[i % len(voices)], rng))
        out["long"] = longs
    return out


def _joined(sentences: list, voice: Voice, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Several sentences, each spoken continuously, 0.2 s of silence first and a 0.3-1 s pause after each."""
    x, spans = np.zeros(int(0.2 * SAMPLE_RATE), np.float32), []
    for s in sentences:
        y, sp = continuous(s, voice)
        t0 = len(x) / SAMPLE_RATE
        spans += [(w, a + t0, b + t0) for w, a, b in sp]
        x = np.concatenate([x, y, np.zeros(int(rng.uniform(0.3, 1.0) * SAMPLE_RATE), np.float32)])
    return x, spans


def _speak(sentences: list, rng: np.random.Generator, log) -> tuple[np.ndarray, list, Voice]:
    """Training speech of one sentence (``continuous``) or several (``_joined``) in a random training
    voice; another voice where espeak-ng merges a word group it cannot split."""
    tries = 8
    for attempt in range(tries):
        voice = random_voice(rng)
        try:
            x, spans = continuous(sentences[0], voice) if len(sentences) == 1 else _joined(sentences, voice, rng)
            return x, spans, voice
        except SpesError as e:
            if attempt == tries - 1:
                raise
            log(f"{e}; another voice")


def concatenated(uid: str, sentences: list, voice: Voice, rng: np.random.Generator) -> Utterance:
    """One input of several sentences, each spoken continuously, with 0.3-1 s pauses between them."""
    x, spans = _joined(sentences, voice, rng)
    x = np.clip(x + rng.standard_normal(len(x)).astype(np.float32) * 1e-4, -1, 1 - 2 ** -15)
    return Utterance(uid, " ".join(s.en for s in sentences), " ".join(s.de for s in sentences), voice.key(),
                     spans, features(x), x)


# ---------------------------------------------------------------- training data

def build_training(n: int, mix: Mix, seed: int = 1, spliced_voices: int = 32, log=print) -> list[Utterance]:
    """``n`` training examples drawn from the sources in the proportions of ``mix``, deterministic in seed.

    Sentences come from the larger grammar and never occur in the held-out sets (a), (b), (c), long
    (of seed ``EVAL_SEED``, up to ``HELD_OUT_POOL`` utterances each).
    """
    rng = np.random.default_rng(seed)
    exclude = ({s.en for s in grammar.sentences(HELD_OUT_POOL, EVAL_SEED + 1)}  # set (a): data.build's test sentences
               | {s.en for s in held_out_sentences(HELD_OUT_POOL, EVAL_SEED)})
    # Without multi-sentence examples the draws are those of the three-source recipe (reproducible runs).
    n_sources = rng.multinomial(n, [mix.continuous, mix.spliced, mix.nospeech] + ([mix.multi] if mix.multi else []))
    sizes = rng.integers(2, 6, n_sources[3]) if mix.multi else np.zeros(0, int)  # sentences per multi example
    sents = grammar_large.sentences(int(n_sources[0] + n_sources[1] + sizes.sum()), seed + 7, exclude=exclude)
    next_size = iter(sizes)
    kinds = np.repeat(np.arange(len(n_sources)), n_sources)
    rng.shuffle(kinds)
    bank_voices = [random_voice(rng) for _ in range(spliced_voices)] if n_sources[1] else []
    t0 = time.time()
    bank = (WordBank(grammar_large.vocabulary(), bank_voices, workers=1, synth=_word_synth)
            if n_sources[1] else None)
    if bank is not None:
        log(f"word bank: {len(bank_voices)} voices x {len(grammar_large.vocabulary())} words "
            f"in {time.time() - t0:.0f} s")
    out, next_sentence = [], iter(sents)
    for i, kind in enumerate(kinds):
        if kind == 2:
            x = no_speech(rng)
            out.append(Utterance(f"train{i:06d}", "", "", "nospeech", [], features(x)))
            continue
        group = [next(next_sentence) for _ in range(next(next_size) if kind == 3 else 1)]
        if kind == 1:
            voice = bank_voices[rng.integers(len(bank_voices))]
            x, spans = bank.utterance(spoken_words(group[0].en), voice, rng)
        else:
            x, spans, voice = _speak(group, rng, log)
        x, spans = augment(x, spans, mix, rng)
        out.append(Utterance(f"train{i:06d}", " ".join(s.en for s in group), " ".join(s.de for s in group),
                             voice.key(), spans, features(x)))
        if (i + 1) % 1000 == 0:
            log(f"{i + 1}/{n} training examples in {time.time() - t0:.0f} s")
    return out


# ---------------------------------------------------------------- evaluation

def _german_nouns() -> frozenset[str]:
    """Every German noun form of the larger grammar: objects (singular, plural) and people."""
    people = {w for p in grammar_large.PEOPLE_L for phrase in p[1:3] for w in phrase.split() if w[0].isupper()}
    return frozenset({n[2] for n in grammar_large.NOUNS_L} | {n[3] for n in grammar_large.NOUNS_L} | people)


def noun_accuracy(refs: list[str], hyps: list[str]) -> float:
    """Percentage of the references' nouns (object and person nouns of the larger grammar, counted with
    multiplicity) that the hypotheses contain: BLEU barely moves when one noun is wrong, but a wrong noun
    is a wrong translation, and its gender changes the article."""
    nouns, found, total = _german_nouns(), 0, 0
    for ref, hyp in zip(refs, hyps):
        words = lambda text: [w.strip(".,?!") for w in text.split()]
        have = words(hyp)
        for noun in (w for w in words(ref) if w in nouns):
            total += 1
            if noun in have:
                have.remove(noun)
                found += 1
    return 100.0 * found / max(total, 1)


def score(model, utts: list[Utterance], task: str, batch_size: int = 8) -> dict:
    """WER (ASR) or BLEU and noun accuracy (ST), and the empty-hypothesis rate of ``model`` on one set.

    Decoding is beam 5 with ``min_len=0``: fairseq's default ``min_len=1`` forbids ``</s>`` as the first
    token, so the empty hypothesis could never be produced.
    """
    from ..decoding import SearchConfig
    from .data import wer

    hyps = [h[0].text for h in model.decode([u.features.astype(np.float32) for u in utts],
                                             search=SearchConfig(min_len=0), batch_size=batch_size)]
    refs = [u.en if task == "asr" else u.de for u in utts]
    res = {"n": len(utts), "empty_rate": 100.0 * sum(not h.strip() for h in hyps) / max(len(hyps), 1)}
    speech = [(r, h) for r, h in zip(refs, hyps) if r]
    if speech:
        r, h = zip(*speech)
        if task == "asr":
            res["wer"] = wer(list(r), list(h))
        else:
            import sacrebleu

            res["bleu"] = sacrebleu.corpus_bleu(list(h), [list(r)]).score
            res["noun_accuracy"] = noun_accuracy(list(r), list(h))
    res["failures"] = [{"id": u.id, "ref": r, "hyp": h} for u, r, h in zip(utts, refs, hyps)
                       if (r != h)][:15]
    return res


def evaluate_main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m spes_jax.training evaluate-sets",
                                 description="Score a model on the held-out sets (a)-(d) and the long inputs")
    ap.add_argument("--model", default="asr", help=f"model directory, or an embedded model: {', '.join(EMBEDDED)}")
    ap.add_argument("--task", choices=["asr", "st"], default=None, help="default: the embedded model's task, else asr")
    ap.add_argument("--sets", default="abcdl",
                    help="letters of the sets: a b c d, l = long inputs, s = (a)'s sentences spoken continuously, "
                    "e = (b) without silence around")
    ap.add_argument("--n", type=int, default=200, help="utterances per set (a)-(d)")
    ap.add_argument("--long", type=int, default=20, help="long inputs (3-5 sentences each)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    from .._io import write_text
    from ..speech_model import load_model

    task = args.task or assets.task(args.model)
    t0 = time.time()
    sets = eval_sets(args.n, args.long, args.seed, args.sets)
    print(f"sets {', '.join(f'{k}: {len(v)}' for k, v in sets.items())} built in {time.time() - t0:.0f} s",
          flush=True)
    model = load_model(args.model)
    results = {}
    for name, utts in sets.items():
        t1 = time.time()
        results[name] = score(model, utts, task, batch_size=2 if name == "long" else 8)
        results[name]["seconds"] = round(time.time() - t1)
        print(json.dumps({name: {k: v for k, v in results[name].items() if k != "failures"}}), flush=True)
    if args.out:
        write_text(args.out, json.dumps({"model": args.model, "task": task, "seed": args.seed, "results": results},
                                        indent=1, ensure_ascii=False))


def export_main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m spes_jax.training export",
                                 description="Write one held-out set as a corpus (WAV files, timings.json, asr.tsv, "
                                 "st.tsv) for spes-jax compare / evaluate / explain-corpus")
    ap.add_argument("--set", choices=list("abcds"), default="b")
    ap.add_argument("--n", type=int, default=200, help="utterances (the set's first n)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from .data import export_corpus

    utts = eval_sets(args.n, 0, args.seed, args.set)[args.set]
    export_corpus(utts, args.out)
    print(f"wrote {len(utts)} utterances of set ({args.set}) to {args.out}")


def throughput_main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m spes_jax.training throughput",
                                 description="Measure training-data generation speed")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--spliced-voices", type=int, default=4)
    args = ap.parse_args(argv)
    t0 = time.time()
    utts = build_training(args.n, Mix(), spliced_voices=args.spliced_voices)
    dt = time.time() - t0
    audio_s = sum(len(u.features) for u in utts) / 100
    print(json.dumps({"examples": len(utts), "seconds": round(dt, 1), "examples_per_s": round(len(utts) / dt, 2),
                      "audio_hours": round(audio_s / 3600, 3), "realtime_factor": round(audio_s / dt, 1)}))
