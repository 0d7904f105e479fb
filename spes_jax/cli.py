"""The ``spes-jax`` command line: argument parsing and dispatch only (``commands.py`` does the work)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings

from . import __version__, commands
from ._io import remove_partial_outputs, run_interrupt_hooks
from .analysis.plotting import CLIP_PERCENTILE, CONTRASTIVE_NORMALIZER
from .assets import EMBEDDED
from .config import SCORERS
from .core.contrastive import NORMALIZERS, SCORERS as CONTRASTIVE_SCORERS, WORD_PROBABILITIES
from .errors import SpesError, SpesNote, SpesWarning

EMBEDDED_NAMES = ", ".join(EMBEDDED)
AUDIO_HELP = "audio files: WAV (any PCM or float format), FLAC, OGG/Vorbis, MP3; resampled to 16 kHz mono"


def _sweep_options(p: argparse.ArgumentParser) -> None:
    """The options of a SPES sweep, shared by explain, explain-corpus and explain-contrastive."""
    p.add_argument("--masks", type=int, default=20000, help="spectrogram masks N_X (default 20000; the "
                   "maximum with --until-r)")
    p.add_argument("--token-masks", type=int, default=2000, help="prefix masks N_Y (default 2000; the maximum "
                   "with --until-r)")
    p.add_argument("--sampler", choices=["reference", "orthogonal"], default="reference",
                   help="reference: independent masks, the paper's exactly (default); orthogonal: the same "
                   "distribution from a randomised Hadamard design, same maps in the limit (docs/spes.md)")
    p.add_argument("--until-r", type=float, metavar="R", help="stop each sweep once its online estimate of "
                   "the maps' correlation with the converged maps reaches R (e.g. 0.9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--batch-size", type=int, help="spectrogram masks per compiled step (memory and speed, not the "
                   "results; default: the model's for the device, 64 for FBK models, 2 for Whisper on a CPU; prefix "
                   "masks per step are the model's)")


def _clip_percentile(text: str) -> float | None:
    """--clip-percentile: a percentile in (0, 100], or 'none'; 100 and 'none' mean min-max colours."""
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number in (0, 100] or 'none'") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: a number in (0, 100] or 'none'")
    return None if value == 100 else value


def _clip_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip-percentile", type=_clip_percentile, default=CLIP_PERCENTILE, metavar="P",
                   help=f"colour range of a map: from its median to the P-th percentile of the cells above it "
                   f"(default {CLIP_PERCENTILE:g}); 100 or 'none': min-max")


RESULT_HELP = ("a result: an HDF5 explanation file (one or many utterances; ours or the reference's), a folder of "
               "them, or an explain-corpus run directory")
MODEL_HELP = (f"an embedded model ({EMBEDDED_NAMES}), a converted FBK-fairseq model directory, or a Whisper "
              "checkpoint (Hugging Face or CTranslate2 directory, OpenAI .pt)")


def _task(value: str) -> str:
    """--task: asr or st; Whisper's names transcribe and translate are the same tasks."""
    return {"transcribe": "asr", "translate": "st"}.get(value, value)


def _whisper_options(p: argparse.ArgumentParser, occlusion: bool = True) -> None:
    """Options of Whisper models (an error with other models)."""
    p.add_argument("--language", help="Whisper: the spoken language's code (e.g. en, de; required by multilingual "
                   "models); --task st translates it into English")
    if occlusion:
        p.add_argument("--occlusion", choices=["floor", "zero", "mean"], help="Whisper: what an occluded "
                       "spectrogram cell becomes (mean: the utterance's per-channel mean, the default; floor: "
                       "silence); a command that reads a result uses the one it records")


class _Parser(argparse.ArgumentParser):
    """Usage errors in the one-line form of every other error (subcommands' parsers are of this class too)."""

    def error(self, message: str):
        self.exit(2, f"spes-jax: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="spes-jax", description="Explain speech-to-text models with SPES, in JAX.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not keep compiled steps on disk (default: reuse them across runs, in "
                        "$SPES_JAX_CACHE_DIR or ~/.cache/spes-jax/xla)")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert an FBK-fairseq checkpoint into a spes-jax model directory")
    c.add_argument("checkpoint", help="fairseq checkpoint (.pt)")
    c.add_argument("--config-yaml", help="the S2T data config (names the dictionary and SentencePiece model)")
    c.add_argument("--out", required=True, help="output model directory")
    c.add_argument("--dict", help="target dictionary (overrides the data config)")
    c.add_argument("--spm", help="SentencePiece model (overrides the data config)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    c.set_defaults(func=commands.convert_command)

    t = sub.add_parser("transcribe", help="decode audio with beam search")
    t.add_argument("audio", nargs="+", help=AUDIO_HELP)
    t.add_argument("--model", help=f"{MODEL_HELP} (default: asr)")
    t.add_argument("--task", type=_task, choices=["asr", "st"], help="the embedded model of this task without --model; with "
                   "a Whisper model, st translates into English")
    _whisper_options(t, occlusion=False)
    t.add_argument("--beam", type=int, default=None, help="beam size (default: the model's, 5 for the embedded models)")
    t.add_argument("--greedy", action="store_true", help="greedy search instead of beam search")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--json", action="store_true", help="one JSON object per line")
    t.set_defaults(func=commands.transcribe_command)

    e = sub.add_parser("explain", help="SPES explanations of the model's hypotheses, written to HDF5")
    e.add_argument("audio", nargs="+", help=AUDIO_HELP)
    e.add_argument("--out", required=True, help="output HDF5 file, .h5 (written only when everything succeeded)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    e.add_argument("--model", help=f"{MODEL_HELP} (default: the embedded model of --task)")
    _whisper_options(e)
    e.add_argument("--task", type=_task, choices=["asr", "st"], help="SPES settings, asr: tau 7.5 s; st: tau 5 s; with a "
                   "Whisper model st also translates into English "
                   "(default: the embedded --model's task, else asr)")
    e.add_argument("--targets", metavar="TEXT_OR_FILE", help="explain this transcript or translation instead "
                   "of the model's own hypothesis: a text (one audio file) or a file with one line per audio file")
    _sweep_options(e)
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=commands.explain_command)

    n = sub.add_parser("explain-encoder", help="encoder-output saliency: which encoder frames the decoder's tokens "
                       "depend on (masks on the encoder output, no encoder pass per mask), written to HDF5")
    n.add_argument("audio", nargs="+", help=AUDIO_HELP)
    n.add_argument("--out", required=True, help="output HDF5 file, .h5 (written only when everything succeeded)")
    n.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    n.add_argument("--model", help=f"{MODEL_HELP} (default: the embedded model of --task)")
    _whisper_options(n, occlusion=False)
    n.add_argument("--task", type=_task, choices=["asr", "st"], help="the embedded model of this task without "
                   "--model; with a Whisper model st also translates into English")
    n.add_argument("--targets", metavar="TEXT_OR_FILE", help="explain this transcript or translation instead "
                   "of the model's own hypothesis: a text (one audio file) or a file with one line per audio file")
    n.add_argument("--masks", type=int, default=2000, help="masks (default 2000; the maximum with --until-r)")
    n.add_argument("--p", type=float, default=0.5, help="probability that a mask occludes an encoder frame "
                   "(default 0.5)")
    n.add_argument("--scorer", choices=list(SCORERS), default="kl")
    n.add_argument("--until-r", type=float, metavar="R", help="stop once the map's online estimate of its "
                   "correlation with the converged map reaches R")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    n.add_argument("--batch-size", type=int, help="masks per compiled step (default: the model's for the device)")
    n.add_argument("--quiet", action="store_true", help="no progress bar")
    n.set_defaults(func=commands.explain_encoder_command)

    x = sub.add_parser("explain-contrastive", help="contrastive SPES: why the model produced a word rather than "
                       "a foil (one audio file, or a manifest), written to HDF5")
    x.add_argument("audio", nargs="?", help=AUDIO_HELP + " (or --manifest)")
    x.add_argument("--manifest", help="TSV with columns id, audio, target (or tgt_text), foil (or "
                   "swapped_tgt_text) and optionally span ('start-end' piece indices)")
    x.add_argument("--target", help="the generated text to explain (default: the model's hypothesis)")
    x.add_argument("--foil", help="the same text with the word replaced (e.g. 'die' -> 'der')")
    x.add_argument("--word-start", type=int, help="first piece of the word in the target (0-based; default: where "
                   "target and foil differ)")
    x.add_argument("--word-end", type=int, help="last piece of the word (inclusive)")
    x.add_argument("--loose-span", action="store_true", help="accept a span that does not match word boundaries")
    x.add_argument("--scorer", default="contrastive_parity_ratio", choices=list(CONTRASTIVE_SCORERS))
    x.add_argument("--word-probability", default="word_boundary", choices=list(WORD_PROBABILITIES))
    x.add_argument("--normalizer", choices=list(NORMALIZERS), help="recorded in the file, applied on read")
    x.add_argument("--out", required=True, help="output HDF5 file, .h5 (written only when everything succeeded)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    x.add_argument("--model", help=f"{MODEL_HELP} (default: the embedded model of --task)")
    _whisper_options(x)
    x.add_argument("--task", type=_task, choices=["asr", "st"],
                   help="SPES settings (default: the embedded --model's task, else asr)")
    _sweep_options(x)
    x.add_argument("--quiet", action="store_true", help="no progress bar")
    x.set_defaults(func=commands.explain_contrastive_command)

    v = sub.add_parser("evaluate", help="deletion, insertion and size of an explanation file")
    v.add_argument("explanations", help=RESULT_HELP)
    v.add_argument("--manifest", help="TSV with id, audio, reference (needed for deletion/insertion)")
    v.add_argument("--metrics", nargs="+", choices=["deletion", "insertion", "size"], default=["deletion", "size"])
    v.add_argument("--scorer", choices=["wer", "wer_max", "wer_sentence_max", "bleu"],
                   help="default: wer_max for ASR, bleu for ST")
    v.add_argument("--step", type=int, default=5, help="percentage / threshold step (default 5)")
    v.add_argument("--greedy", action="store_true", help="decode the deleted inputs greedily (faster; the "
                   "paper's curves use beam search)")
    v.add_argument("--model", help=f"model to decode with: {MODEL_HELP} (default: the model the explanations were "
                   "made with, as the file records it; the embedded model of --task for a file that records none)")
    v.add_argument("--force-model", action="store_true", help="decode with --model even though the explanations "
                   "were made with another model")
    _whisper_options(v)
    v.add_argument("--task", type=_task, choices=["asr", "st"], help="default: as recorded in the file, else asr")
    v.add_argument("--out-dir", help="write metrics.json and the curve plots here (default: print only)")
    v.add_argument("--overwrite", action="store_true", help="replace existing files in --out-dir")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=commands.evaluate_command)

    m = sub.add_parser("compare", help="SPES vs feature-wise, Bubble Noise and ablations (the paper's Table 1)")
    m.add_argument("manifest", nargs="+", help="TSV files with id, audio, reference (one per task)")
    m.add_argument("--out-dir", required=True, help="explanations, results.json, table.md and plots go here "
                   "(in one folder per task when there are several manifests)")
    m.add_argument("--task", nargs="+", type=_task, choices=["asr", "st"], help="the task of each manifest (default asr)")
    m.add_argument("--model", nargs="+", help=f"one per manifest: {MODEL_HELP} (default: on a rerun the model of the "
                   "explanations in --out-dir, else the embedded model of --task; explanations of another model are "
                   "made anew, not reused)")
    _whisper_options(m)
    m.add_argument("--overwrite", action="store_true", help="replace existing results in --out-dir")
    m.add_argument("--budget-scale", type=float, default=1.0,
                   help="multiply every method's mask budget (paper: N_X 20000, N_Y 2000, Bubble Noise 1000)")
    m.add_argument("--methods", nargs="+", help="subset of: SPES, feature-wise, 'Bubble Noise', '- multi-scale', "
                   "'- clustering', '- duration adaptation', '- KL'")
    m.add_argument("--limit", type=int, help="only the first N utterances of the manifest")
    m.add_argument("--greedy", action="store_true", help="deletion curves decode greedily (faster; the paper's "
                   "use beam search)")
    m.add_argument("--batch-size", type=int, help="spectrogram masks per compiled step (no effect on the results; "
                   "default: the model's for the device, 64 for FBK models, 2 for Whisper on a CPU)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=commands.compare_command)

    a = sub.add_parser("aggregate", help="word/phrase, time-span, frequency and sentence aggregation of explanations",
                       description="Steps run in this order: words, time, frequency, sentence. Spans are "
                       "inclusive; see docs/aggregation.md for the index conventions.")
    a.add_argument("explanations", help=RESULT_HELP)
    a.add_argument("--out", required=True, help="HDF5 file for the aggregated explanations")
    a.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    a.add_argument("--normalize", action="store_true",
                   help="per-token single_mean_std then paired_min_max before aggregating (the reference's scripts)")
    a.add_argument("--words", nargs="?", const="spoken", choices=["spoken", "fbk"],
                   help="average the rows per word: the words the figures and the report show ('ill-disposed' is "
                   "one; the default), or 'fbk' for the grouping of FBK's SPES code (punctuation is a word of its "
                   "own: four words there)")
    a.add_argument("--spans", help="JSON {id: [[start, end], ...]} phrase spans in token indices (instead of words)")
    a.add_argument("--word-columns", action="store_true", help="also average the prefix map's columns per word "
                   "(grouped as --words)")
    a.add_argument("--no-eos", action="store_true", help="drop the </s> row")
    a.add_argument("--time-spans", help="JSON {id: [[start, end], ...]} in frames; or, in seconds, a CTM, a timing JSON "
                   "or a folder of <id>.TextGrid files")
    a.add_argument("--time-mean", action="store_true", help="average the spectrogram maps over all frames")
    a.add_argument("--frequency", action="store_true", help="average the spectrogram maps over channels")
    a.add_argument("--sentence", action="store_true", help="average both maps over their rows")
    a.set_defaults(func=commands.aggregate_command)

    g = sub.add_parser("plot", help="spectrogram, saliency map, overlay and prefix matrix of one utterance")
    g.add_argument("explanations", help=RESULT_HELP)
    g.add_argument("--out", required=True, help="image file (.png, .pdf, .svg)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    g.add_argument("--id", help="utterance id (default: the first in the file)")
    g.add_argument("--audio", help="the utterance's audio file, to draw the spectrogram and the overlay "
                   "(default: the file recorded in the explanation file, if it is still there)")
    g.add_argument("--token", help="explained token: a 0-based index (negative from the end) or a piece, e.g. "
                   "'▁teacher' or 'teacher' (default: the sentence-level map)")
    g.add_argument("--grid", choices=["tokens", "words"], help="every token's (or word's) map in one figure, "
                   "each over its own colour range")
    g.add_argument("--timings", help="word timings (CTM or JSON), drawn as labelled word boundaries")
    g.add_argument("--columns", type=int, default=3, help="with --grid: panels per row (default 3)")
    _clip_option(g)
    g.add_argument("--normalizer", choices=list(NORMALIZERS), help="contrastive explanations: the normalised map's "
                   f"normaliser (default: the one recorded in the file, else {CONTRASTIVE_NORMALIZER})")
    g.set_defaults(func=commands.plot_command)

    r = sub.add_parser("report", help="one self-contained, offline HTML page to explore a run in a browser")
    r.add_argument("result", help=RESULT_HELP)
    r.add_argument("--out", required=True, help="output HTML file")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    r.add_argument("--audio", help="to embed audio and spectrograms: a WAV file, a folder of <id>.wav files, "
                   "or a manifest TSV (id, audio, optional reference) (default: the audio files the result records, "
                   "where they are still there and unchanged)")
    r.add_argument("--timings", help="word timings: CTM, or JSON like the bundled samples' timings.json")
    r.add_argument("--metrics", help="metrics.json of 'spes-jax evaluate', for per-utterance deletion AUCs "
                   "(needs --audio as a manifest with references)")
    r.add_argument("--task", type=_task, choices=["asr", "st"], help="WER (asr) or BLEU (st) in the index; default: as recorded")
    r.add_argument("--title", help="page title")
    _clip_option(r)
    r.add_argument("--normalizer", choices=list(NORMALIZERS), help="contrastive explanations: the normalised map's "
                   f"normaliser (default: the one recorded, else {CONTRASTIVE_NORMALIZER})")
    r.set_defaults(func=commands.report_command)

    a = sub.add_parser("align", help="word (and phone) timings of a manifest's references by forced alignment "
                       "(PocketSphinx: pip install 'spes-jax[align]'; English)")
    a.add_argument("manifest", help="TSV with id, audio, reference (the transcript; numerals and punctuation are "
                   "written in spoken form first)")
    a.add_argument("--out", required=True, help="word timings, CTM (what plot, report and plausibility read)")
    a.add_argument("--phones", help="also the phone timings, CTM (e.g. for aggregate --time-spans)")
    a.add_argument("--overwrite", action="store_true", help="replace existing output files")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=commands.align_command)

    q = sub.add_parser("plausibility", help="time alignment, kurtosis ranking and positional saliency")
    q.add_argument("explanations", help=RESULT_HELP)
    q.add_argument("--timings", help="word timings: CTM, or JSON like the bundled samples' timings.json")
    q.add_argument("--min-count", type=int, default=1, help="kurtosis: only tokens seen this often (paper: 100)")
    q.add_argument("--out", help="JSON file for the results")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    q.set_defaults(func=commands.plausibility_command)

    k = sub.add_parser("explain-corpus", help="explain a whole corpus into a resumable, sharded run directory")
    k.add_argument("manifest", help="TSV manifest (ours or fairseq S2T, incl. features.zip:offset:length) "
                   "or a folder of audio files")
    k.add_argument("--out", required=True, help="run directory (see docs/corpus.md)")
    k.add_argument("--model", help=f"{MODEL_HELP} (default: the embedded model of --task)")
    _whisper_options(k)
    k.add_argument("--task", type=_task, choices=["asr", "st"], default="asr", help="asr: tau 7.5 s; st: tau 5 s")
    _sweep_options(k)
    k.add_argument("--targets", choices=["hypothesis", "reference"], default="hypothesis",
                   help="explain the model's beam output (decoded first, stored) or the manifest's text")
    k.add_argument("--resume", action="store_true", help="continue the run in --out (same model, config, seed)")
    k.add_argument("--limit", type=int, help="only the first N utterances of the manifest")
    k.add_argument("--shard-size", type=int, default=16, help="utterances per committed shard (at most)")
    k.add_argument("--commit-every", type=float, default=60.0, metavar="SECONDS",
                   help="commit what is done at least this often (default 60), so a kill loses at most about "
                        "a minute of work: decoded targets, and explanations in a shard of fewer utterances")
    k.add_argument("--map-dtype", choices=["float32", "float16"], default="float32",
                   help="stored maps: float32 (the reference's layout) or float16 (half the size, ~3 digits)")
    k.add_argument("--coordinator", help="multi-host: address:port of process 0 (jax.distributed)")
    k.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    k.add_argument("--process-id", type=int, help="multi-host: this process's number")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.set_defaults(func=commands.explain_corpus_command)

    r = sub.add_parser("merge", help="one HDF5 file (reference layout) from a corpus run directory")
    r.add_argument("run_dir", help="run directory of 'spes-jax explain-corpus'")
    r.add_argument("--out", required=True, help="output HDF5 file")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    r.set_defaults(func=commands.merge_command)
    return p


def _warning_printer():
    """``warnings.showwarning`` for a command: each library warning once, as one ``spes-jax:
    note/warning: ...`` line (an input read twice, e.g. to check it first, still gets one); other
    warnings as Python prints them."""
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not issubclass(category, SpesWarning):
            print(warnings.formatwarning(message, category, filename, lineno, line), end="", file=sys.stderr)
            return
        text = f"spes-jax: {'note' if issubclass(category, SpesNote) else 'warning'}: {message}"
        if text not in shown:
            from tqdm import tqdm

            shown.add(text)
            tqdm.write(text, file=sys.stderr)  # on its own line above a progress bar, which is redrawn below

    return show


def _run(args) -> BaseException | None:
    """Runs the command; returns what it raised, if anything."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", SpesWarning)  # _warning_printer removes the repeats
            warnings.showwarning = _warning_printer()
            args.func(args)
    except BaseException as e:  # handed to the main thread
        return e
    return None


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the exit status (2 after a ``SpesError``).

    The command runs in a worker thread while the main thread waits, so Ctrl-C is seen at once
    whatever the command is doing (compiling, decoding, waiting for the device). The process then
    ends immediately with status 130: device work in flight is abandoned, and outputs being written
    are removed (every output is written under a temporary name and renamed when complete).
    """
    args = build_parser().parse_args(argv)
    if args.no_compile_cache:
        import jax

        jax.config.update("jax_enable_compilation_cache", False)
    else:
        from ._compile_cache import enable_default

        enable_default()
    commands.MODEL_LINES.clear()
    commands.WROTE_LINES.clear()
    outcome: list[BaseException | None] = []
    worker = threading.Thread(target=lambda: outcome.append(_run(args)), name="spes-jax command", daemon=True)
    worker.start()
    try:
        worker.join()
    except KeyboardInterrupt:
        bar = hasattr(args, "quiet") and not args.quiet  # a progress bar may hold the line: end it first
        print(("\n" if bar else "") + "spes-jax: interrupted", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut what the hooks keep
        run_interrupt_hooks()
        remove_partial_outputs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    error = outcome[0]
    if isinstance(error, SpesError):
        print(f"spes-jax: error: {error}", file=sys.stderr)
        return 2
    if error is not None:
        raise error
    for line in commands.MODEL_LINES + commands.WROTE_LINES:
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
