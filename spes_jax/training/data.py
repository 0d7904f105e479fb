"""Synthetic ASR/ST corpora: sentences, voices, waveforms, word timings and model features."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from ..analysis.metrics import corpus_score
from ..audio import fbank, utterance_cmvn
from .grammar import sentences, vocabulary
from .synth import WordBank, held_out_voices, spoken_words, train_voices, write_wav


@dataclass
class Utterance:
    id: str
    en: str
    de: str
    voice: str
    words: list  # [(word, start s, end s)]
    features: np.ndarray  # (T, 80) float16 CMVN fbank
    audio: np.ndarray | None = None  # (N,) waveform, kept for held-out utterances only


def build(n_train: int, n_test: int, n_voices: int = 24, seed: int = 0
          ) -> tuple[list[Utterance], list[Utterance]]:
    """Training utterances (training voices) and held-out test utterances (new sentences, new voice).

    Returns (train, test); the test sentences never occur in training.
    """
    rng = np.random.default_rng(seed)
    test_rng = np.random.default_rng(seed + 1000)  # the held-out set does not depend on n_train
    test_sents = sentences(n_test, seed + 1)
    train_sents = sentences(n_train, seed + 2, exclude={s.en for s in test_sents})
    voices, held_out = train_voices(rng, n_voices), held_out_voices()
    bank = WordBank(vocabulary(), voices + held_out)

    def make(prefix, sents, pool, keep_audio, rng):
        out = []
        for i, s in enumerate(sents):
            voice = pool[rng.integers(len(pool))]
            x, spans = bank.utterance(spoken_words(s.en), voice, rng)
            feats = utterance_cmvn(fbank(x)).astype(np.float16)
            out.append(Utterance(f"{prefix}{i:05d}", s.en, s.de, voice.key(), spans, feats,
                                 x if keep_audio else None))
        return out

    return (make("train", train_sents, voices, False, rng),
            make("test", test_sents, held_out, True, test_rng))


def export(utterances: list[Utterance], out_dir: str) -> None:
    """Writes held-out utterances as 16 kHz WAV files plus ``timings.json`` (text, translation, word spans)."""
    os.makedirs(out_dir, exist_ok=True)
    meta = {}
    for u in utterances:
        write_wav(os.path.join(out_dir, f"{u.id}.wav"), u.audio)
        meta[u.id] = {"text": u.en, "translation": u.de, "voice": u.voice,
                      "words": [{"word": w, "start": round(a, 4), "end": round(b, 4)} for w, a, b in u.words]}
    with open(os.path.join(out_dir, "timings.json"), "w") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)


def export_corpus(utterances: list[Utterance], out_dir: str) -> None:
    """``export`` plus two manifests for ``spes-jax compare`` / ``evaluate``: ``asr.tsv`` (English
    references) and ``st.tsv`` (German references), both pointing at the same WAV files."""
    from ..manifest import Entry, write_manifest

    export(utterances, out_dir)
    for name, ref in (("asr", lambda u: u.en), ("st", lambda u: u.de)):
        write_manifest(os.path.join(out_dir, f"{name}.tsv"),
                       [Entry(u.id, os.path.join(out_dir, f"{u.id}.wav"), ref(u)) for u in utterances])


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus word error rate in % (``metrics.corpus_score("wer")``) with punctuation split off into
    tokens of its own, so that a missing full stop is one error, not a wrong word."""
    split = lambda s: s.replace("?", " ?").replace(".", " .").replace(",", " ,")
    return corpus_score("wer", [split(r) for r in refs], [split(h) for h in hyps])


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m spes_jax.training data", description="Write the held-out test corpus of the embedded models "
                                 "(WAV files, timings.json, asr.tsv, st.tsv); needs espeak-ng.")
    ap.add_argument("--utterances", type=int, default=100)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    _, test = build(0, args.utterances, seed=args.seed)
    export_corpus(test, args.out)
    print(f"wrote {len(test)} held-out utterances to {args.out}")
