"""The real-speech evaluation set: recorded English from Debian packages, with forced-alignment timings.

    apt-get install pocketsphinx-testdata asterisk-core-sounds-en-wav asterisk-core-sounds-en
    pip install 'spes-jax[align]'
    python benchmarks/real_speech.py --out data/real_speech        # about 40 s on 2 CPU cores
    python benchmarks/real_speech.py --out data/real_speech --figures ps_goforward ... --figures-dir docs/figures

Writes, under --out: ``audio/<id>.wav`` (16 kHz mono 16-bit PCM; the 8 kHz prompts resampled),
``manifest.tsv`` (id, audio, reference: the spoken form of the package's transcript, see
``spes_jax.alignment.spoken_form``), ``words.ctm`` and ``phones.ctm`` (forced alignment, seconds),
``sources.json`` (per id: package, file, licence, sample rate, the transcript as shipped) and
``skipped.tsv`` (what was left out, and why). Utterances are kept when they last 2-15 s. Prompts
longer than 15 s are cut at pauses of the forced alignment (>= 0.3 s, cut in the middle) into pieces
of 2-15 s. Nothing of the packages is part of the repository; licences in docs/evaluation.md.
``--figures ID...`` draws the spectrogram of those utterances of a built set with their word and phone
boundaries (``alignment_<id>.png``), to check the alignment by eye. ``--wer RESULT`` prints the WER of
the hypotheses explained in RESULT (an explanation file or run directory) against the set's
references, both in spoken form (so "Press 1." matches "press one"). ``--analyses RESULT`` (Whisper
explanations) runs the time-alignment test twice: with each hypothesis word's own span, and with every
timed word given the span of the next timed word of its utterance (the last one the first's): the
second keeps speech vs pause but breaks the word's identity, so a map that only follows loudness
passes it as well; then frequency: how often the mel channels above 4 kHz and those below hold the
5 % most salient cells of the sentence-level maps, for the 16 kHz recordings and for the 8 kHz ones
(which hold nothing above 4 kHz, so a map that resolves frequency leaves that band out).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import warnings

import numpy as np
import soundfile as sf

from spes_jax.analysis.metrics import corpus_score
from spes_jax.analysis.plausibility import hypothesis_words, match_timings, time_alignment
from spes_jax.analysis.plotting import plot_alignment
from spes_jax.results import load_result
from spes_jax.alignment import Aligner, Alignment, Span, spoken_form, write_ctm
from spes_jax.audio import SAMPLE_RATE, fbank, read_audio
from spes_jax.errors import SpesError, SpesNote
from spes_jax.manifest import Entry, read_manifest, read_word_timings, write_manifest
from spes_jax.text import pieces_text
from spes_jax.whisper.features import mel_filters

POCKETSPHINX = "/usr/share/pocketsphinx/test/data"
ASTERISK = "/usr/share/asterisk/sounds/en_US_f_Allison"
ASTERISK_TEXT = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
LICENCES = {"pocketsphinx-testdata": "BSD-2-Clause (LibriVox recordings: public domain)",
            "asterisk-core-sounds-en": "CC-BY-SA-3.0, recorded by Allison Smith"}
MIN_S, MAX_S, PAUSE_S = 2.0, 15.0, 0.3
# Misspellings in the Asterisk transcript file (the recordings say the word)
CORRECTIONS = {"umute": "unmute", "witheld": "withheld", "represenatives": "representatives",
               "indentified": "identified"}
# Words of the transcripts missing from the CMU dictionary, with their pronunciation in the recordings
LEXICON = {"unmute": "AH N M Y UW T", "unmuted": "AH N M Y UW T IH D", "pbx": "P IY B IY EH K S",
           "forevermore": "F ER EH V ER M AO R", "digium": "D IH JH IY AH M", "undelete": "AH N D IH L IY T",
           "rerecord": "R IY R IH K AO R D", "www": "D AH B AH L Y UW D AH B AH L Y UW D AH B AH L Y UW",
           "waldo's": "W AO L D OW Z", "touchtone": "T AH CH T OW N", "prepend": "P R IY P EH N D",
           "prepending": "P R IY P EH N D IH NG", "ivr": "AY V IY AA R", "iax": "AY EY EH K S"}


def pocketsphinx_sources() -> list[tuple[str, str, str, str]]:
    """(id, package, audio file, transcript as shipped) of the transcribed pocketsphinx-testdata clips."""
    out = []
    for folder, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
        path = os.path.join(POCKETSPHINX, folder, listing)
        for line in open(path, encoding="utf-8"):
            m = re.match(r"\s*<s>(.*)</s>\s*\((.+)\)\s*$", line)
            if m:
                name = m.group(2).strip()
                audio = os.path.join(POCKETSPHINX, folder, name + ".wav")
                out.append((f"ps_{folder}_{name[-4:]}", "pocketsphinx-testdata", audio, m.group(1).strip()))
    # goforward.raw has no transcript file: its sentence is the one of the package's goforward.gram
    out.append(("ps_goforward", "pocketsphinx-testdata", os.path.join(POCKETSPHINX, "goforward.raw"),
                 "go forward ten meters"))
    return out


def asterisk_sources() -> list[tuple[str, str, str, str]]:
    """The Asterisk prompts whose transcript describes speech (not "[beep]" or "(silence)")."""
    out = []
    for line in gzip.open(ASTERISK_TEXT, "rt", encoding="utf-8"):
        name, sep, text = line.partition(":")
        audio = os.path.join(ASTERISK, name.strip() + ".wav")
        if line.startswith(";") or not sep or not os.path.isfile(audio) or re.search(r"[\[\]()]", text):
            continue
        out.append(("ast_" + name.strip().replace("/", "_"), "asterisk-core-sounds-en", audio, text.strip()))
    return out


def read(path: str) -> tuple[np.ndarray, int]:
    """(N,) float32 16 kHz waveform and the file's own sample rate (.raw: 16 kHz 16-bit little-endian)."""
    if path.endswith(".raw"):
        return np.fromfile(path, "<i2").astype(np.float32) / 32768, SAMPLE_RATE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpesNote)  # the resampling note, expected for every 8 kHz prompt
        return read_audio(path), sf.info(path).samplerate


def _shifted(spans: list[Span], a: float, b: float) -> list[Span]:
    return [Span(s.label, s.start - a, s.end - a) for s in spans if a <= s.start and s.end <= b]


def pieces(alignment: Alignment, n_samples: int) -> list[tuple[int, int, Alignment]]:
    """Cuts of a long utterance at pauses of >= PAUSE_S: (first sample, end sample, its alignment in
    the piece's time) per piece of MIN_S..MAX_S, made by merging consecutive pause-delimited phrases
    greedily while they fit MAX_S."""
    words = alignment.words
    cuts = [0.0] + [(a.end + b.start) / 2 for a, b in zip(words, words[1:]) if b.start - a.end >= PAUSE_S] \
        + [n_samples / SAMPLE_RATE]
    out, start = [], 0
    for k in range(1, len(cuts)):  # pieces are [cuts[start], cuts[k]]
        if k + 1 < len(cuts) and cuts[k + 1] - cuts[start] <= MAX_S:
            continue
        a, b = cuts[start], cuts[k]
        if MIN_S <= b - a <= MAX_S:
            out.append((round(a * SAMPLE_RATE), round(b * SAMPLE_RATE),
                        Alignment(_shifted(words, a, b), _shifted(alignment.phones, a, b))))
        start = k
    return out


def figures(out: str, ids: list[str], folder: str) -> None:
    """alignment_<id>.png in ``folder`` for each of ``ids`` of the set built in ``out``."""
    audio = {e.id: e.audio for e in read_manifest(os.path.join(out, "manifest.tsv"))}
    words = read_word_timings(os.path.join(out, "words.ctm"))
    phones = read_word_timings(os.path.join(out, "phones.ctm"))
    for uid in ids:
        path = os.path.join(folder, f"alignment_{uid}.png")
        plot_alignment(fbank(read_audio(audio[uid])), words[uid], phones[uid], path,
                       title=f"{uid}: forced alignment (words at the top, phones at the bottom), log-mel fbank")
        print(path)


def wer(out: str, result: str) -> None:
    """Prints the WER (spoken forms) of the hypotheses explained in ``result`` and each utterance's."""
    refs = {e.id: e.reference for e in read_manifest(os.path.join(out, "manifest.tsv"))}
    hyps = {uid: spoken_form(pieces_text(exp.tokens[:-1])) for uid, exp in load_result(result)[0].items()}
    for uid, hyp in hyps.items():
        print(f"{uid}\t{corpus_score('wer', [refs[uid]], [hyp]):.1f}\t{hyp}")
    print(f"WER {corpus_score('wer', [refs[u] for u in hyps], list(hyps.values())):.2f} % "
          f"over {len(hyps)} utterances ({sum(len(refs[u].split()) for u in hyps)} reference words)")


def _rotated(spans: list) -> list:
    """Every timed entry takes the next timed entry's span (the last the first's); None stays None."""
    k = [i for i, s in enumerate(spans) if s is not None]
    out = list(spans)
    for i, j in zip(k, k[1:] + k[:1]):
        out[i] = spans[j]
    return out


def analyses(out: str, result: str) -> None:
    """Time alignment with own vs rotated spans, and the frequency profile by sample rate (see above)."""
    exps = list(load_result(result)[0].values())
    pairs, skipped = match_timings(exps, read_word_timings(os.path.join(out, "words.ctm")))
    timed = sum(s is not None for _, spans in pairs for s in spans)
    print(f"{len(pairs)} utterances ({len(skipped)} skipped), {timed} of "
          f"{sum(len(hypothesis_words(e.tokens)) for e, _ in pairs)} hypothesis words matched to a timed word")
    for name, ps in (("own spans", pairs), ("spans rotated by one word", [(e, _rotated(s)) for e, s in pairs])):
        ta = time_alignment(ps)
        print(f"time alignment, {name}: {ta.n_words} words, inside {ta.inside.mean():.3f} vs outside "
              f"{ta.outside.mean():.3f}, paired t = {ta.t:.2f}, one-sided p = {ta.p:.2e}")
    with open(os.path.join(out, "sources.json"), encoding="utf-8") as f:
        rate = {uid: s["sample_rate"] for uid, s in json.load(f).items()}
    filters = mel_filters(exps[0].spectrogram_saliency.shape[2])
    high = filters.argmax(axis=0) * (SAMPLE_RATE / 2) / (filters.shape[0] - 1) > 4000  # channel centres
    for sr in sorted({rate[e.id] for e in exps}):
        maps = [e.sentence_level() for e in exps if rate[e.id] == sr]
        top = [m >= np.quantile(m, 0.95) for m in maps]  # each utterance's 5 % most salient cells
        print(f"frequency, {sr} Hz recordings ({len(maps)}): of the cells above 4 kHz (channels "
              f"{np.flatnonzero(high)[0]}-{len(high) - 1}) {100 * np.mean([t[:, high].mean() for t in top]):.1f} % "
              f"are among the 5 % most salient, of those below {100 * np.mean([t[:, ~high].mean() for t in top]):.1f} %; "
              f"mean saliency above {np.mean([m[:, high].mean() for m in maps]):.3f}, "
              f"below {np.mean([m[:, ~high].mean() for m in maps]):.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the set's folder")
    ap.add_argument("--figures", nargs="+", metavar="ID", help="draw these utterances of the built set instead")
    ap.add_argument("--figures-dir", default="docs/figures")
    ap.add_argument("--wer", metavar="RESULT", help="WER of an explanation file's or run's hypotheses instead")
    ap.add_argument("--analyses", metavar="RESULT",
                    help="time alignment (own vs rotated word spans) and frequency profile of Whisper explanations instead")
    args = ap.parse_args()
    if args.figures:
        return figures(args.out, args.figures, args.figures_dir)
    if args.wer:
        return wer(args.out, args.wer)
    if args.analyses:
        return analyses(args.out, args.analyses)
    missing = [p for p in (POCKETSPHINX, ASTERISK, ASTERISK_TEXT) if not os.path.exists(p)]
    if missing:
        raise SystemExit(f"not found: {' '.join(missing)}; install pocketsphinx-testdata, "
                         "asterisk-core-sounds-en-wav and asterisk-core-sounds-en")
    os.makedirs(os.path.join(args.out, "audio"), exist_ok=True)
    aligner = Aligner(LEXICON)
    entries, words, phones, sources, skipped = [], {}, {}, {}, []

    def keep(uid, package, path, rate, shipped, x, alignment: Alignment, offset: float | None = None):
        """Writes one utterance (``offset``: where a piece starts in the package's file, seconds)."""
        wav = os.path.join(args.out, "audio", uid + ".wav")
        sf.write(wav, x, SAMPLE_RATE, subtype="PCM_16")
        entries.append(Entry(uid, wav, " ".join(w.label for w in alignment.words)))
        words[uid] = alignment.words
        phones[uid] = alignment.phones
        sources[uid] = {"package": package, "file": path, "licence": LICENCES[package], "sample_rate": rate,
                        "transcript": shipped, "seconds": round(len(x) / SAMPLE_RATE, 3)}
        if offset is not None:
            sources[uid]["cut_at_s"] = round(offset, 3)

    for uid, package, path, shipped in pocketsphinx_sources() + asterisk_sources():
        x, rate = read(path)
        seconds = len(x) / SAMPLE_RATE
        if seconds < MIN_S:
            skipped.append((uid, f"{seconds:.2f} s, shorter than {MIN_S} s"))
            continue
        try:
            spoken = " ".join(CORRECTIONS.get(w, w) for w in spoken_form(shipped).split())
            alignment = aligner(x, spoken)
        except SpesError as e:
            skipped.append((uid, str(e)))
            continue
        if seconds <= MAX_S:
            keep(uid, package, path, rate, shipped, x, alignment)
            continue
        cut = pieces(alignment, len(x))
        if not cut:
            skipped.append((uid, f"{seconds:.2f} s and no pauses to cut it into pieces of {MIN_S}-{MAX_S} s"))
        for n, (a, b, piece) in enumerate(cut, 1):
            keep(f"{uid}_p{n}", package, path, rate, shipped, x[a:b], piece, offset=a / SAMPLE_RATE)
    write_manifest(os.path.join(args.out, "manifest.tsv"), entries)
    write_ctm(os.path.join(args.out, "words.ctm"), words)
    write_ctm(os.path.join(args.out, "phones.ctm"), phones)
    with open(os.path.join(args.out, "sources.json"), "w", encoding="utf-8") as f:
        json.dump(sources, f, indent=1)
    with open(os.path.join(args.out, "skipped.tsv"), "w", encoding="utf-8") as f:
        f.write("id\treason\n" + "".join(f"{u}\t{r}\n" for u, r in skipped))
    total = sum(s["seconds"] for s in sources.values())
    print(f"{len(entries)} utterances, {total / 60:.1f} min ({sum(s['package'].startswith('pocketsphinx') for s in sources.values())} "
          f"from pocketsphinx-testdata), {sum(len(w) for w in words.values())} aligned words; {len(skipped)} left out "
          f"(see skipped.tsv) -> {args.out}")


if __name__ == "__main__":
    main()
