"""The ``spes-jax`` command: argument parsing only; every command calls the public Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from . import __version__
from .errors import SpesError, SpesNote, SpesWarning


def _convert(args) -> None:
    from .convert import convert_checkpoint

    out = convert_checkpoint(args.checkpoint, args.out, config_yaml=args.config_yaml, dict_path=args.dict,
                             spm_path=args.spm, overwrite=args.overwrite,
                             report=lambda note: print(f"note: {note}"))
    print(f"wrote {out}")


def _transcribe(args) -> None:
    from .pipeline import load_model

    model = load_model(args.model)
    for path in args.audio:  # read everything first so a bad file fails before any output
        model.features(path)
    hyps = model.transcribe(list(args.audio), beam=args.beam, batch_size=args.batch_size, greedy=args.greedy)
    for path, hyp in zip(args.audio, hyps):
        if args.json:
            print(json.dumps({"audio": path, "text": hyp.text, "tokens": hyp.pieces, "score": hyp.score}))
        else:
            print(f"{path}\t{hyp.text}")


HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


def _explain(args) -> None:
    import jax

    from ._io import check_output
    from .explainer import explain
    from .config import SPESConfig
    from .explanation import save_explanations
    from .inputs import read_targets
    from .pipeline import load_model
    from .provenance import provenance

    if args.masks == 0 and args.token_masks == 0:
        raise SpesError("--masks 0 and --token-masks 0 leave nothing to explain")
    if os.path.splitext(args.out)[1].lower() not in HDF5_SUFFIXES:
        raise SpesError(f"--out {args.out}: explanations are written as HDF5; name the file with one of "
                        f"{', '.join(HDF5_SUFFIXES)}")
    check_output(args.out, args.overwrite)
    task = args.task or ("st" if args.model == "st" else "asr")
    base = SPESConfig.st() if task == "st" else SPESConfig.asr()
    cfg = base.replace(n_masks=args.masks, n_token_masks=args.token_masks, seed=args.seed,
                       precision=args.precision, batch_size=args.batch_size,
                       token_batch_size=max(args.batch_size, base.token_batch_size))
    model = load_model(args.model or task)
    targets = read_targets(model, args.targets, len(args.audio)) if args.targets else None
    if not args.quiet:
        print(f"spes-jax: explaining {len(args.audio)} utterance(s) with {cfg.masks_per_level * cfg.n_levels} "
              f"spectrogram and {cfg.n_token_masks} prefix masks on {jax.devices()[0].platform}", file=sys.stderr)
        if cfg.n_masks < 20000 or cfg.n_token_masks < 2000:
            print("spes-jax: note: fewer masks than the paper's 20000/2000 give noisier maps", file=sys.stderr)
    exps = explain(model, list(args.audio), cfg, targets=targets, progress=not args.quiet)
    attrs, exps = provenance(model, cfg, task, exps, args.audio)
    save_explanations(args.out, exps, attrs)
    for exp in exps:
        print(f"{exp.id}\t{exp.text}")
    print(f"wrote {args.out}", file=sys.stderr)


def _model_for(args, path_attrs: dict | None = None):
    from .pipeline import load_model

    task = args.task or (path_attrs or {}).get("task") or "asr"
    return load_model(args.model or task), task


def _file_attrs(path: str) -> dict:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError:
        return {}


def _evaluate(args) -> None:
    from ._io import write_json
    from .explanation import load_explanations
    from .manifest import read_manifest
    from .analysis.metrics import default_scorer, higher_is_better, perturbation_curve, size_curve
    from .analysis.plotting import plot_deletion_curves, plot_size_curves

    # Every input and output is checked before any work; files are written only at the end.
    exps = load_explanations(args.explanations)
    curves = [m for m in args.metrics if m != "size"]
    entries = {}
    if curves:
        if not args.manifest:
            raise SpesError("deletion and insertion need --manifest (the audio and references)")
        entries = {e.id: e for e in read_manifest(args.manifest)}
        missing = [i for i in exps if i not in entries]
        if missing:
            raise SpesError(f"{len(missing)} explained utterance(s) not in the manifest {args.manifest}, "
                            f"e.g. {missing[0]!r}")
    outputs = {}
    if args.out_dir:
        if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
            raise SpesError(f"--out-dir {args.out_dir}: is a file, not a directory")
        names = ["metrics.json"] + [f"{m}.png" for m in args.metrics]
        for name in names:
            path = os.path.join(args.out_dir, name)
            if os.path.exists(path) and not args.overwrite:
                raise SpesError(f"--out-dir {args.out_dir}: {name} exists; pass --overwrite to replace it")
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.out_dir))):
            raise SpesError(f"--out-dir {args.out_dir}: its parent directory does not exist")
    results = {"explanations": os.path.abspath(args.explanations)}
    if "size" in args.metrics:
        size = size_curve(exps.values(), args.step)
        results["size"] = size.to_dict()
        outputs["size.png"] = (plot_size_curves, {"explanations": size})
        print(f"size AUC\tspectrogram {size.auc:.2f}\tprefix {size.auc_prefix:.2f}\t(percentage of normalised "
              "features above each threshold, over thresholds 0..1, the paper's scale; lower is more compact)")
    if curves:
        model, task = _model_for(args, _file_attrs(args.explanations))
        scorer = args.scorer or default_scorer(task)
        for metric in curves:
            c = perturbation_curve(model, exps.values(), {i: e.audio for i, e in entries.items()},
                                   {i: e.reference for i, e in entries.items()}, metric, scorer, args.step)
            results[metric] = c.to_dict()
            outputs[f"{metric}.png"] = (plot_deletion_curves, {"explanations": c})
            better = "higher" if higher_is_better(metric, scorer) else "lower"
            print(f"{metric} AUC\t{c.auc_fraction:.2f}\t({scorer} over the fraction of features "
                  f"{'deleted' if metric == 'deletion' else 'kept'}, 0..1, the paper's scale; "
                  f"{better} is more faithful)")
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        for name, (plot, data) in outputs.items():
            plot(data, os.path.join(args.out_dir, name))
        write_json(os.path.join(args.out_dir, "metrics.json"), results)
        print(f"wrote {args.out_dir}/metrics.json and the curve plots", file=sys.stderr)


def _compare(args) -> None:
    from ._io import write_json, write_text
    from .analysis.compare import compare, paper_table, table
    from .manifest import read_manifest
    from .pipeline import load_model

    tasks = args.task or ["asr"] * len(args.manifest)
    if len(tasks) != len(args.manifest):
        raise SpesError(f"--task needs one value per manifest ({len(args.manifest)}), got {len(tasks)}")
    if args.model and len(args.manifest) > 1:
        raise SpesError("--model applies to a single manifest; without it each task uses its embedded model")
    work = [(read_manifest(m)[: args.limit], t) for m, t in zip(args.manifest, tasks)]  # check all inputs first
    dirs = [args.out_dir] if len(work) == 1 else [args.out_dir] + [os.path.join(args.out_dir, t) for t in tasks]
    done = [os.path.join(d, "results.json") for d in dirs if os.path.exists(os.path.join(d, "results.json"))]
    if done and not args.overwrite:
        raise SpesError(f"--out-dir {args.out_dir}: {done[0]} exists; pass --overwrite to replace the results "
                        "(explanations made with the same settings are reused)")
    payloads = []
    for entries, task in work:
        out = args.out_dir if len(work) == 1 else os.path.join(args.out_dir, task)
        payloads.append(compare(load_model(args.model or task), entries, task, out, args.budget_scale,
                                args.methods, args.seed, progress=not args.quiet))
        print(table(payloads[-1]) + "\n")
    if len(payloads) > 1:
        write_json(os.path.join(args.out_dir, "results.json"), payloads)
        write_text(os.path.join(args.out_dir, "table.md"), paper_table(payloads) + "\n")
        print(paper_table(payloads))


def _aggregate(args) -> None:
    from .analysis import aggregation as agg
    from ._io import check_output
    from .explanation import load_explanations, save_explanations

    if not (args.words or args.spans or args.time_spans or args.time_mean or args.frequency or args.sentence):
        raise SpesError("nothing to do: give --words/--spans, --time-spans/--time-mean, --frequency or --sentence")
    check_output(args.out, args.overwrite)
    exps = load_explanations(args.explanations)
    spans = agg.read_spans(args.spans, "phrase-span") if args.spans else None
    times = (agg.time_spans_for(args.time_spans, {u: e.spectrogram_saliency.shape[1] for u, e in exps.items()})
             if args.time_spans else None)
    out = []
    for uid, exp in exps.items():  # every utterance is checked before anything is written
        def need(table, name):
            if uid not in table:
                raise SpesError(f"{name}: no spans for utterance {uid!r}")
            return table[uid]
        try:
            exp = exp.normalized() if args.normalize else exp
            if args.words or spans is not None:
                entry = need(spans, args.spans) if spans is not None else None
                labels = entry.get("phrases") if isinstance(entry, dict) else None
                if isinstance(entry, dict) and not isinstance(entry.get("spans"), list):
                    raise SpesError(f"{args.spans}: utterance {uid!r} needs a 'spans' list")
                entry = entry["spans"] if isinstance(entry, dict) else entry
                exp = exp.aggregate_words(entry, include_eos=not args.no_eos, columns=args.word_columns,
                                          labels=labels)
            if times is not None or args.time_mean:
                exp = exp.aggregate_time(need(times, args.time_spans) if times is not None else None)
            if args.frequency:
                exp = exp.aggregate_frequency()
            if args.sentence:
                exp = exp.aggregate_sentence()
        except SpesError as e:
            raise SpesError(f"{args.explanations}: utterance {uid!r}: {e}") from None
        out.append(exp)
    attrs = {**_file_attrs(args.explanations), "source": os.path.abspath(args.explanations),
             "aggregation": [s["op"] for s in out[0].aggregation] if out else [], "normalized": int(args.normalize)}
    save_explanations(args.out, out, attrs)
    print(f"wrote {args.out} ({len(out)} utterances)", file=sys.stderr)


def _token_index(exp, token: str) -> int:
    """--token: a 0-based index (negative counts from the end) or a piece of the hypothesis."""
    try:
        return int(token)
    except ValueError:
        pass
    for k, piece in enumerate(exp.tokens):
        if token in (piece, piece.lstrip("\u2581")):
            return k
    raise SpesError(f"--token {token!r}: not a token of {exp.id}'s hypothesis; its tokens are {' '.join(exp.tokens)}")


def _recorded_audio(exp) -> str | None:
    """The audio file an explanation records, if it is still there and unchanged (else a warning)."""
    from .provenance import file_sha256

    path = exp.meta.get("audio")
    if not path:
        return None
    if not os.path.isfile(path):
        warnings.warn(f"{exp.id}: the recorded audio {path} is not there; drawing the maps only (pass --audio)",
                      SpesWarning)
        return None
    if exp.meta.get("audio_sha256") not in (None, file_sha256(path)):
        warnings.warn(f"{exp.id}: {path} changed since it was explained; drawing the maps only", SpesWarning)
        return None
    return path


def _plot(args) -> None:
    from matplotlib.figure import Figure

    from ._io import check_output
    from .audio import load_features
    from .explanation import load_explanations

    suffix = os.path.splitext(args.out)[1][1:].lower()
    formats = Figure().canvas.get_supported_filetypes()
    if suffix not in formats:
        raise SpesError(f"--out {args.out}: not an image format matplotlib writes; use one of "
                        f"{', '.join('.' + f for f in sorted(formats))}")
    check_output(args.out, args.overwrite)
    exps = load_explanations(args.explanations)
    uid = args.id or next(iter(exps), None)
    if uid not in exps:
        raise SpesError(f"no utterance {uid!r} in {args.explanations}; it has {list(exps)[:5]}")
    exp = exps[uid]
    token = _token_index(exp, args.token) if args.token is not None else None
    audio = args.audio or _recorded_audio(exp)
    feats = load_features(audio, exp.spectrogram_saliency.shape[2]) if audio else None
    if args.grid:
        from .manifest import read_word_timings
        from .analysis.plotting import plot_token_grid

        if token is not None:
            raise SpesError("--token and --grid exclude each other (the grid shows every token)")
        timings = read_word_timings(args.timings).get(uid) if args.timings else None
        plot_token_grid(exp, feats, args.grid == "words", timings, args.columns, args.out)
    else:
        exp.plot(feats, token, args.out)
    print(f"wrote {args.out}", file=sys.stderr)


def _first_mismatch(exps, timings) -> str:
    from .analysis.plausibility import hypothesis_words

    exp = next(e for e in exps if e.id in timings)
    timed = " ".join(w for w, _, _ in timings[exp.id])
    return f"{exp.id}: said {' '.join(hypothesis_words(exp.tokens))!r}, timed {timed!r}"


def _report(args) -> None:
    from .report import load_result, utterances, write_report

    exps, attrs = load_result(args.result)
    items = utterances(exps, args.audio, args.timings, args.metrics)
    task = args.task or attrs.get("task") or "asr"
    write_report(args.out, items, title=args.title or f"SPES: {os.path.basename(os.path.normpath(args.result))}",
                 task=task, source=f"{len(items)} utterance(s), {sum(u.audio is not None for u in items)} with audio")
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)", file=sys.stderr)


def _plausibility(args) -> None:
    from ._io import check_output, write_json
    from .explanation import load_explanations
    from .manifest import read_word_timings
    from .analysis.plausibility import (
        kurtosis_ranking,
        match_timings,
        positional_saliency,
        time_alignment,
    )

    if args.out:
        check_output(args.out, args.overwrite)
    exps = list(load_explanations(args.explanations).values())
    out: dict = {}
    if args.timings:
        if _file_attrs(args.explanations).get("task") == "st":
            raise SpesError(f"{args.explanations} explains translations (task st): time alignment pairs each "
                            "hypothesis word with the span where it is spoken, and a translation's words are "
                            "not spoken in the source audio")
        timings = read_word_timings(args.timings)
        if not any(e.id in timings for e in exps):
            raise SpesError(f"{args.timings} has no timings for the utterances of {args.explanations} "
                            f"(e.g. {exps[0].id if exps else None!r})")
        pairs, skipped = match_timings(exps, timings)
        if not pairs:
            raise SpesError(f"the words in {args.timings} do not match the hypotheses in {args.explanations} "
                            f"(e.g. {_first_mismatch(exps, timings)}); the timings must be of the words "
                            "the model said, in its language")
        ta = time_alignment(pairs)
        out["time_alignment"] = {"utterances": ta.n_utterances, "skipped": skipped, "words": ta.n_words,
                                 "inside": float(ta.inside.mean()), "outside": float(ta.outside.mean()),
                                 "t": ta.t, "p": ta.p}
        print(f"time alignment: {ta.n_utterances} utterances ({len(skipped)} skipped), {ta.n_words} words; "
              f"inside {ta.inside.mean():.3f} vs outside {ta.outside.mean():.3f}; t = {ta.t:.2f}, p = {ta.p:.2e}")
    ranking = kurtosis_ranking(exps, args.min_count)
    out["kurtosis"] = [r.__dict__ for r in ranking]
    if ranking:
        show = lambda rs: ", ".join(f"{r.token} {r.kurtosis:.1f} ({r.count})" for r in rs)
        print(f"kurtosis, top 5: {show(ranking[:5])}")
        print(f"kurtosis, bottom 5: {show(ranking[-5:])}")
    pos = positional_saliency(exps)
    out["positional"] = {"start": float(pos.start.mean()), "latest": float(pos.latest.mean()),
                         "intermediate": float(pos.intermediate.mean()) if pos.intermediate.size else None,
                         "tests": pos.tests}
    print(f"positional saliency (mean): start {pos.start.mean():.3f}, latest {pos.latest.mean():.3f}, "
          f"intermediate {pos.intermediate.mean() if pos.intermediate.size else float('nan'):.3f}; " +
          "; ".join(f"{k}: t = {t:.2f}, p = {p:.1e}" for k, (t, p) in pos.tests.items()))
    if args.out:
        write_json(args.out, out)
        print(f"wrote {args.out}", file=sys.stderr)


AUDIO_HELP = "audio files: WAV (any PCM or float format), FLAC, OGG/Vorbis, MP3; resampled to 16 kHz mono"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spes-jax", description="Explain speech-to-text models with SPES, in JAX.")
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
    c.set_defaults(func=_convert)

    t = sub.add_parser("transcribe", help="decode audio with beam search")
    t.add_argument("audio", nargs="+", help=AUDIO_HELP)
    t.add_argument("--model", help="converted model directory, or an embedded model: asr (default), st")
    t.add_argument("--beam", type=int, default=5)
    t.add_argument("--greedy", action="store_true", help="greedy search instead of beam search")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--json", action="store_true", help="one JSON object per line")
    t.set_defaults(func=_transcribe)

    e = sub.add_parser("explain", help="SPES explanations of the model's hypotheses, written to HDF5")
    e.add_argument("audio", nargs="+", help=AUDIO_HELP)
    e.add_argument("--out", required=True, help="output HDF5 file, .h5 (written only when everything succeeded)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    e.add_argument("--model", help="converted model directory, or an embedded model: asr, st "
                   "(default: the embedded model of --task)")
    e.add_argument("--task", choices=["asr", "st"], help="SPES settings, asr: tau 7.5 s; st: tau 5 s "
                   "(default: st for --model st, else asr)")
    e.add_argument("--targets", metavar="TEXT_OR_FILE", help="explain this transcript or translation instead "
                   "of the model's own hypothesis: a text (one audio file) or a file with one line per audio file")
    e.add_argument("--masks", type=int, default=20000, help="spectrogram masks N_X (default 20000)")
    e.add_argument("--token-masks", type=int, default=2000, help="prefix masks N_Y (default 2000)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    e.add_argument("--batch-size", type=int, default=64, help="masks per compiled step")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_explain)

    v = sub.add_parser("evaluate", help="deletion, insertion and size of an explanation file")
    v.add_argument("explanations", help="HDF5 file written by 'spes-jax explain' (or the reference)")
    v.add_argument("--manifest", help="TSV with id, audio, reference (needed for deletion/insertion)")
    v.add_argument("--metrics", nargs="+", choices=["deletion", "insertion", "size"], default=["deletion", "size"])
    v.add_argument("--scorer", choices=["wer", "wer_max", "wer_sentence_max", "bleu"],
                   help="default: wer_max for ASR, bleu for ST")
    v.add_argument("--step", type=int, default=5, help="percentage / threshold step (default 5)")
    v.add_argument("--model", help="model that made the explanations: a converted model directory or an "
                   "embedded model, asr or st (default: the embedded one of --task)")
    v.add_argument("--task", choices=["asr", "st"], help="default: as recorded in the file, else asr")
    v.add_argument("--out-dir", help="write metrics.json and the curve plots here (default: print only)")
    v.add_argument("--overwrite", action="store_true", help="replace existing files in --out-dir")
    v.set_defaults(func=_evaluate)

    m = sub.add_parser("compare", help="SPES vs feature-wise, Bubble Noise and ablations (the paper's Table 1)")
    m.add_argument("manifest", nargs="+", help="TSV files with id, audio, reference (one per task)")
    m.add_argument("--out-dir", required=True, help="explanations, results.json, table.md and plots go here "
                   "(in one folder per task when there are several manifests)")
    m.add_argument("--task", nargs="+", choices=["asr", "st"], help="the task of each manifest (default asr)")
    m.add_argument("--model", help="converted model directory, or an embedded model: asr, st "
                   "(default: the embedded model of --task)")
    m.add_argument("--overwrite", action="store_true", help="replace existing results in --out-dir")
    m.add_argument("--budget-scale", type=float, default=1.0,
                   help="multiply every method's mask budget (paper: N_X 20000, N_Y 2000, Bubble Noise 1000)")
    m.add_argument("--methods", nargs="+", help="subset of: SPES, feature-wise, 'Bubble Noise', '- multi-scale', "
                   "'- clustering', '- duration adaptation', '- KL'")
    m.add_argument("--limit", type=int, help="only the first N utterances of the manifest")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=_compare)

    a = sub.add_parser("aggregate", help="word/phrase, time-span, frequency and sentence aggregation of explanations",
                       description="Steps run in this order: words, time, frequency, sentence. Spans are "
                       "inclusive; see docs/aggregation.md for the index conventions.")
    a.add_argument("explanations", help="HDF5 explanation file")
    a.add_argument("--out", required=True, help="HDF5 file for the aggregated explanations")
    a.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    a.add_argument("--normalize", action="store_true",
                   help="per-token single_mean_std then paired_min_max before aggregating (the reference's scripts)")
    a.add_argument("--words", action="store_true", help="average the rows per word (SentencePiece grouping)")
    a.add_argument("--spans", help="JSON {id: [[start, end], ...]} phrase spans in token indices (instead of words)")
    a.add_argument("--word-columns", action="store_true", help="also average the prefix map's columns per word")
    a.add_argument("--no-eos", action="store_true", help="drop the </s> row")
    a.add_argument("--time-spans", help="JSON {id: [[start, end], ...]} in frames; or, in seconds, a CTM, a timing JSON "
                   "or a folder of <id>.TextGrid files")
    a.add_argument("--time-mean", action="store_true", help="average the spectrogram maps over all frames")
    a.add_argument("--frequency", action="store_true", help="average the spectrogram maps over channels")
    a.add_argument("--sentence", action="store_true", help="average both maps over their rows")
    a.set_defaults(func=_aggregate)

    g = sub.add_parser("plot", help="spectrogram, saliency map, overlay and prefix matrix of one utterance")
    g.add_argument("explanations", help="HDF5 explanation file")
    g.add_argument("--out", required=True, help="image file (.png, .pdf, .svg)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    g.add_argument("--id", help="utterance id (default: the first in the file)")
    g.add_argument("--audio", help="the utterance's audio file, to draw the spectrogram and the overlay "
                   "(default: the file recorded in the explanation file, if it is still there)")
    g.add_argument("--token", help="explained token: a 0-based index (negative from the end) or a piece, e.g. "
                   "'▁takes' or 'takes' (default: the sentence-level map)")
    g.add_argument("--grid", choices=["tokens", "words"], help="every token's (or word's) map in one figure, "
                   "one shared colour scale")
    g.add_argument("--timings", help="with --grid: word timings (CTM or JSON) drawn as word boundaries")
    g.add_argument("--columns", type=int, default=3, help="with --grid: panels per row (default 3)")
    g.set_defaults(func=_plot)

    r = sub.add_parser("report", help="one self-contained, offline HTML page to explore a run in a browser")
    r.add_argument("result", help="HDF5 explanation file (one or many utterances) or a folder of them")
    r.add_argument("--out", required=True, help="output HTML file")
    r.add_argument("--audio", help="to embed audio and spectrograms: a WAV file, a folder of <id>.wav files, "
                   "or a manifest TSV (id, audio, optional reference)")
    r.add_argument("--timings", help="word timings: CTM, or JSON like the bundled samples' timings.json")
    r.add_argument("--metrics", help="metrics.json of 'spes-jax evaluate', for per-utterance deletion AUCs "
                   "(needs --audio as a manifest with references)")
    r.add_argument("--task", choices=["asr", "st"], help="WER (asr) or BLEU (st) in the index; default: as recorded")
    r.add_argument("--title", help="page title")
    r.set_defaults(func=_report)

    q = sub.add_parser("plausibility", help="time alignment, kurtosis ranking and positional saliency")
    q.add_argument("explanations", help="HDF5 explanation file")
    q.add_argument("--timings", help="word timings: CTM, or JSON like the bundled samples' timings.json")
    q.add_argument("--min-count", type=int, default=1, help="kurtosis: only tokens seen this often (paper: 100)")
    q.add_argument("--out", help="JSON file for the results")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    q.set_defaults(func=_plausibility)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings as one ``spes-jax: note/warning: ...`` line; others as Python prints them."""
    if issubclass(category, SpesWarning):
        print(f"spes-jax: {'note' if issubclass(category, SpesNote) else 'warning'}: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), end="", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.no_compile_cache:
        from ._compile_cache import enable

        enable()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", SpesWarning)
            warnings.showwarning = _show_warning
            args.func(args)
    except SpesError as e:
        print(f"spes-jax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spes-jax: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
