"""What each ``spes-jax`` command does with its parsed arguments: checks the outputs before any work,
calls the public Python API and reports. ``cli.py`` builds the parser and dispatches here."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from . import assets
from .errors import SpesError, count


def convert_command(args) -> None:
    from .convert import convert_checkpoint

    out = convert_checkpoint(args.checkpoint, args.out, config_yaml=args.config_yaml, dict_path=args.dict,
                             spm_path=args.spm, overwrite=args.overwrite,
                             report=lambda note: print(f"note: {note}"))
    print(f"wrote {out}")


MODEL_LINES: list[str] = []
WROTE_LINES: list[str] = []


def _say_model(line: str) -> None:
    """The one line every command that runs a model prints, which model it used: printed when the
    command succeeds (``cli.main``), so that an error stays the only line."""
    MODEL_LINES.append(f"spes-jax: model: {line}")


def _say_wrote(line: str) -> None:
    """What a command wrote, printed on stderr after the model line when it succeeds (``cli.main``)."""
    WROTE_LINES.append(line)


def _loader(args, task: str | None, attrs: dict | None = None):
    """name or directory -> model, with a Whisper model's --language and --occlusion, and ``task`` "st"
    as Whisper's translation into English. attrs: a result's file attributes, whose recorded language and
    occlusion (``provenance.recorded_options``) apply where the command line gives none and the model
    has them (a model of another family, by --force-model, keeps its own)."""
    from .provenance import recorded_options
    from .speech_model import load_model

    recorded = recorded_options(attrs or {})

    def load(name):
        model = load_model(name, language=getattr(args, "language", None),
                           task="translate" if task == "st" else "transcribe",
                           occlusion=getattr(args, "occlusion", None))
        keep = {k: recorded[k] for k in ("language", "occlusion")
                if k in recorded and k in model.options and getattr(args, k, None) is None}
        return model.configured(**keep) if keep else model

    return load


def load_cli_model(args, task: str | None = None):
    """--model (default: the embedded model of ``task``) for the commands that make results, named on stderr."""
    from .provenance import model_name

    model = _loader(args, task)(args.model or task or "asr")
    _say_model(model_name(model.path))
    return model


def transcribe_command(args) -> None:
    from .inputs import input_features, warnings_if_all_succeed

    model = load_cli_model(args, args.task)
    with warnings_if_all_succeed():  # every file is read and checked (silence, length) before any output
        features = [input_features(model, path, None, path) for path in args.audio]
    search = model.search if args.beam is None else dataclasses.replace(model.search, beam=args.beam)
    hyps = [h[0] for h in model.decode(features, search, args.batch_size, args.greedy)]
    for path, hyp in zip(args.audio, hyps):
        if args.json:
            print(json.dumps({"audio": path, "text": hyp.text, "tokens": hyp.pieces, "score": hyp.score}))
        else:
            print(f"{path}\t{hyp.text}")


HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


def _hdf5_output(args, what: str) -> None:
    """Checks ``--out`` before any work: an HDF5 file name, and not an existing file without --overwrite."""
    from ._io import check_output

    if os.path.splitext(args.out)[1].lower() not in HDF5_SUFFIXES:
        raise SpesError(f"--out {args.out}: {what} written as HDF5; name the file with one of "
                        f"{', '.join(HDF5_SUFFIXES)}")
    check_output(args.out, args.overwrite)


def sweep_config(args, task: str):
    """The ``SPESConfig`` of explain / explain-corpus options for ``task``."""
    from .config import SPESConfig

    for flag, n in (("--masks", args.masks), ("--token-masks", args.token_masks)):
        if n < 0:
            raise SpesError(f"{flag} must be >= 0, got {n}")
    base = SPESConfig.st() if task == "st" else SPESConfig.asr()
    return base.replace(n_masks=args.masks, n_token_masks=args.token_masks, seed=args.seed,
                        precision=args.precision, batch_size=args.batch_size, sampler=args.sampler,
                        until_r=args.until_r)


def explain_command(args) -> None:
    from .explainer import explain
    from .explanation import save_explanations
    from .inputs import read_targets
    from .provenance import provenance

    if args.masks == 0 and args.token_masks == 0:
        raise SpesError("--masks 0 and --token-masks 0 leave nothing to explain")
    _hdf5_output(args, "explanations are")
    task = args.task or assets.task(args.model)
    cfg = sweep_config(args, task)  # checked before the model loads
    model = load_cli_model(args, task)
    cfg = model.sweep_config(cfg)
    targets = read_targets(model, args.targets, len(args.audio)) if args.targets else None
    exps = explain(model, list(args.audio), cfg, targets=targets, progress=not args.quiet)
    attrs, exps = provenance(model, cfg, task, exps, args.audio)
    save_explanations(args.out, exps, attrs)
    for exp in exps:
        print(f"{exp.id}\t{exp.text}")
        if len(exp.tokens) == 1 and not args.quiet:
            print(f"spes-jax: note: {exp.id}: the hypothesis is empty (the model hears no speech); its explanation "
                  f"has only the </s> row", file=sys.stderr)
        _until_r_note(exp, cfg)
    if not args.quiet and (cfg.n_masks < 20000 or cfg.n_token_masks < 2000):
        print("spes-jax: note: fewer masks than the paper's 20000/2000 give noisier maps", file=sys.stderr)
    _say_wrote(f"wrote {args.out}")


def _until_r_note(exp, cfg) -> None:
    """With ``--until-r``: where each part stopped (masks used of the maximum) and the estimate it reached
    (for the spectrogram the mean over tokens, which the stop compares, and the tokens' range)."""
    estimated = exp.meta.get("estimated_r")
    if cfg.until_r is None or not isinstance(estimated, dict):
        return
    used = {"spectrogram": (exp.n_masks, cfg.n_masks), "prefix": (exp.n_token_masks, cfg.n_token_masks)}
    parts, missed = [], False
    for part, r in estimated.items():
        rs = list(r) if isinstance(r, (list, tuple)) else [float(r)]
        mean = sum(rs) / len(rs)
        missed |= mean < cfg.until_r
        spread = f" (tokens {min(rs):.2f}-{max(rs):.2f})" if len(rs) > 1 else ""
        n, of = used[part]
        parts.append(f"{part} {n} of {of} masks, r {mean:.2f}{spread}{' not reached' if mean < cfg.until_r else ''}")
    print(f"spes-jax: note: {exp.id}: --until-r {cfg.until_r:g}: " + "; ".join(parts)
          + ("; raise --masks / --token-masks for maps that close to their limit" if missed else ""), file=sys.stderr)


def explain_encoder_command(args) -> None:
    import dataclasses

    from .encoder_saliency import explain_encoder, save_encoder_saliency
    from .inputs import read_targets
    from .provenance import audio_record, model_provenance

    _hdf5_output(args, "encoder-output saliency is")
    task = args.task or assets.task(args.model)
    model = load_cli_model(args, task)
    targets = read_targets(model, args.targets, len(args.audio)) if args.targets else None
    items = explain_encoder(model, list(args.audio), args.masks, args.p, scorer=args.scorer, seed=args.seed,
                            batch_size=args.batch_size, precision=args.precision, until_r=args.until_r,
                            targets=targets, progress=not args.quiet)
    items = [dataclasses.replace(e, meta=audio_record(a)) for e, a in zip(items, args.audio)]
    save_encoder_saliency(args.out, items, {**model_provenance(model, task), "encoder_stride": model.encoder_stride,
                                            "precision": args.precision})
    for e in items:
        print(f"{e.id}\t{e.text}")
    _say_wrote(f"wrote {args.out}")


def _per_token_only(exps, source: str, what: str) -> None:
    """Refuses contrastive explanations where ``what`` (a phrase ending in a verb) needs per-token ones."""
    if any(e.contrastive for e in exps):
        raise SpesError(f"{source} holds contrastive explanations (one word against a foil): {what} the per-token "
                        "explanations of a hypothesis; look at contrastive ones with 'spes-jax plot' or "
                        "'spes-jax report'")


def _unaggregated(exps, source: str, what: str) -> None:
    """Refuses the output of ``spes-jax aggregate`` where ``what`` (a phrase ending in a verb) needs the
    per-token maps it was made from."""
    if any(e.aggregation for e in exps):
        raise SpesError(f"{source} holds aggregated maps (words or phrases, written by 'spes-jax aggregate'): {what} "
                        "the per-token explanations it was made from; draw aggregated maps with 'spes-jax plot'")


def evaluate_command(args) -> None:
    from ._io import write_json
    from .manifest import read_manifest
    from .analysis.metrics import default_scorer, higher_is_better, perturbation_curve, size_curve
    from .analysis.plotting import plot_deletion_curves, plot_size_curves
    from .provenance import options_note, result_model
    from .results import load_result

    # Every input and output is checked before any work; files are written only at the end.
    exps, attrs = load_result(args.explanations)
    _per_token_only(exps.values(), args.explanations, "deletion, insertion and size measure")
    _unaggregated(exps.values(), args.explanations, "deletion, insertion and size measure")
    curves = [m for m in args.metrics if m != "size"]
    entries = {}
    if curves:
        if not args.manifest:
            raise SpesError("deletion and insertion need --manifest (the audio and references)")
        entries = {e.id: e for e in read_manifest(args.manifest, ids=set(exps))}
        missing = [i for i in exps if i not in entries]
        if missing:
            raise SpesError(f"{count(len(missing), 'explained utterance')} not in the manifest {args.manifest}, "
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
    if curves:
        task = args.task or attrs.get("task") or "asr"
        model, line = result_model(attrs, args.explanations, args.model, args.force_model, default=task,
                                   load=_loader(args, task, attrs))
        _say_model(line)
        note = options_note(attrs, model, args.explanations)
        if note:
            print(f"spes-jax: note: {note}", file=sys.stderr)
    results = {"explanations": os.path.abspath(args.explanations)}
    if "size" in args.metrics:
        size = size_curve(exps.values(), args.step)
        results["size"] = size.to_dict()
        outputs["size.png"] = (plot_size_curves, {"explanations": size})
        print(f"size AUC\tspectrogram {size.auc:.2f}\tprefix {size.auc_prefix:.2f}\t(percentage of normalised "
              "features above each threshold, over thresholds 0..1, the paper's scale; lower is more compact)")
    if curves:
        results["model"], results["search"] = model.path, "greedy" if args.greedy else "beam"
        scorer = args.scorer or default_scorer(task)
        for metric in curves:
            c = perturbation_curve(model, exps.values(), {i: e.audio for i, e in entries.items()},
                                   {i: e.reference for i, e in entries.items()}, metric, scorer, args.step,
                                   greedy=args.greedy, progress=not args.quiet)
            results[metric] = c.to_dict()
            outputs[f"{metric}.png"] = (plot_deletion_curves, {"explanations": c})
            note = c.baseline_note({i: e.reference for i, e in entries.items()})
            if note:
                print(f"spes-jax: note: {note}", file=sys.stderr)
            better = "higher" if higher_is_better(metric, scorer) else "lower"
            print(f"{metric} AUC\t{c.auc_fraction:.2f}\t({scorer} over the fraction of features "
                  f"{'deleted' if metric == 'deletion' else 'kept'}, 0..1, the paper's scale; "
                  f"{better} is more faithful)")
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        for name, (plot, data) in outputs.items():
            plot(data, os.path.join(args.out_dir, name))
        write_json(os.path.join(args.out_dir, "metrics.json"), results)
        _say_wrote(f"wrote {args.out_dir}/metrics.json and the curve plots")


def _compare_model(args, requested: str | None, out_dir: str, task: str):
    """compare's model for one manifest: ``requested`` (its --model); else, on a rerun, the model of the
    explanations already in ``out_dir``; else the embedded model of ``task``. (Explanations of another
    model are not reused.)"""
    from .analysis.compare import METHODS
    from .provenance import model_name, result_model
    from .results import result_attrs

    made = [p for p in (os.path.join(out_dir, f"{stem}.h5") for stem, _ in METHODS.values()) if os.path.isfile(p)]
    if requested or not made:
        model = _loader(args, task)(requested or task)
        _say_model(model_name(model.path))
        return model
    attrs = result_attrs(made[0])
    model, line = result_model(attrs, made[0], default=task, load=_loader(args, task, attrs))
    _say_model(line)
    return model


def compare_command(args) -> None:
    from ._io import write_json, write_text
    from .analysis.compare import compare, paper_table, table
    from .manifest import read_manifest

    tasks = args.task or ["asr"] * len(args.manifest)
    if len(tasks) != len(args.manifest):
        raise SpesError(f"--task needs one value per manifest ({len(args.manifest)}), got {len(tasks)}")
    models = args.model or [None] * len(args.manifest)
    if len(models) != len(args.manifest):
        raise SpesError(f"--model needs one value per manifest ({len(args.manifest)}), got {len(models)}")
    work = [(read_manifest(m)[: args.limit], t) for m, t in zip(args.manifest, tasks)]  # check all inputs first
    dirs = [args.out_dir] if len(work) == 1 else [args.out_dir] + [os.path.join(args.out_dir, t) for t in tasks]
    done = [os.path.join(d, "results.json") for d in dirs if os.path.exists(os.path.join(d, "results.json"))]
    if done and not args.overwrite:
        raise SpesError(f"--out-dir {args.out_dir}: {done[0]} exists; pass --overwrite to replace the results "
                        "(explanations made with the same settings are reused)")
    payloads = []
    for (entries, task), requested in zip(work, models):
        out = args.out_dir if len(work) == 1 else os.path.join(args.out_dir, task)
        payloads.append(compare(_compare_model(args, requested, out, task), entries, task, out, args.budget_scale,
                                args.methods, args.seed, progress=not args.quiet, batch_size=args.batch_size,
                                greedy=args.greedy))
        print(table(payloads[-1]) + "\n")
    if len(payloads) > 1:
        write_json(os.path.join(args.out_dir, "results.json"), payloads)
        write_text(os.path.join(args.out_dir, "table.md"), paper_table(payloads) + "\n")
        print(paper_table(payloads))


def aggregate_command(args) -> None:
    from .analysis import aggregation as agg
    from ._io import check_output
    from .explanation import save_explanations
    from .results import load_result

    if not (args.words or args.spans or args.time_spans or args.time_mean or args.frequency or args.sentence):
        raise SpesError("nothing to do: give --words/--spans, --time-spans/--time-mean, --frequency or --sentence")
    check_output(args.out, args.overwrite)
    exps, attrs = load_result(args.explanations)
    _per_token_only(exps.values(), args.explanations, "the aggregations average")
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
                exp = agg.by_words(exp, entry, grouping=args.words or "spoken", include_eos=not args.no_eos,
                                   columns=args.word_columns, labels=labels)
            if times is not None or args.time_mean:
                exp = agg.by_time(exp, need(times, args.time_spans) if times is not None else None)
            if args.frequency:
                exp = agg.by_frequency(exp)
            if args.sentence:
                exp = agg.by_sentence(exp)
        except SpesError as e:
            raise SpesError(f"{args.explanations}: utterance {uid!r}: {e}") from None
        out.append(exp)
    attrs = {**attrs, "source": os.path.abspath(args.explanations),
             "aggregation": [s["op"] for s in out[0].aggregation] if out else [], "normalized": int(args.normalize)}
    save_explanations(args.out, out, attrs)
    if not args.normalize:
        print("spes-jax: note: the maps were averaged as they are, not normalised (--normalize normalises each token "
              "first, as the reference does; plot draws only normalised aggregates)", file=sys.stderr)
    _say_wrote(f"wrote {args.out} ({count(len(out), 'utterance')})")


def _token_index(exp, token: str) -> int:
    """--token: a 0-based index (negative counts from the end) or a piece of the hypothesis."""
    try:
        return int(token)
    except ValueError:
        pass
    matches = [k for k, piece in enumerate(exp.tokens) if token in (piece, piece.lstrip("\u2581"))]
    if len(matches) > 1:
        print(f"spes-jax: note: --token {token!r} occurs {len(matches)} times in {exp.id}'s hypothesis (indices "
              f"{', '.join(map(str, matches))}); plotting the first (an index chooses another)", file=sys.stderr)
    if matches:
        return matches[0]
    raise SpesError(f"--token {token!r}: not a token of {exp.id}'s hypothesis; its tokens are {' '.join(exp.tokens)}")


def _check_normalizer_option(exps, normalizer: str | None, source: str) -> None:
    """--normalizer chooses how contrastive maps are normalised; other explanations have one way."""
    if normalizer and not any(e.contrastive for e in exps):
        raise SpesError(f"--normalizer applies to contrastive explanations (explain-contrastive); {source} explains "
                        "every token of a hypothesis, normalised as the paper does (per-token z-score, then min-max)")


def plot_command(args) -> None:
    from matplotlib.figure import Figure

    from ._io import check_output
    from .analysis.plausibility import read_timings
    from .analysis.plotting import check_drawable, plot_contrastive, plot_explanation, plot_token_grid
    from .provenance import explained_features, given_audio, recorded_audio
    from .results import load_result

    suffix = os.path.splitext(args.out)[1][1:].lower()
    formats = Figure().canvas.get_supported_filetypes()
    if suffix not in formats:
        raise SpesError(f"--out {args.out}: not an image format matplotlib writes; use one of "
                        f"{', '.join('.' + f for f in sorted(formats))}")
    check_output(args.out, args.overwrite)
    exps, attrs = load_result(args.explanations)
    uid = args.id or next(iter(exps), None)
    if uid not in exps:
        raise SpesError(f"no utterance {uid!r} in {args.explanations}; it has {list(exps)[:5]}")
    if args.id is None and len(exps) > 1:
        print(f"spes-jax: note: {args.explanations} holds {count(len(exps), 'utterance')}; plotting the first, {uid} "
              f"(--id chooses another: {', '.join(list(exps)[1:4])}{', ...' if len(exps) > 4 else ''})",
              file=sys.stderr)
    exp = exps[uid]
    check_drawable(exp)  # before the audio is read: an aggregate over time has no frames to match it
    _check_normalizer_option([exp], args.normalizer, args.explanations)
    if exp.contrastive and (args.grid or args.token is not None):
        raise SpesError(f"--token and --grid apply to per-token explanations; {uid} is contrastive "
                        f"({exp.contrastive['word']!r} rather than {exp.contrastive['foil_word']!r}): one map")
    token = _token_index(exp, args.token) if args.token is not None else None
    audio = args.audio or recorded_audio(exp)
    feats = explained_features(exp, audio, attrs, f"--audio {audio}" if args.audio else audio) if audio else None
    if args.audio:
        given_audio(exp, args.audio)  # same length, other content: warns
    timings = read_timings(args.timings, [exp])[uid] if args.timings else None
    if exp.contrastive:
        plot_contrastive(exp, feats, args.normalizer, args.out)
    elif args.grid:
        if token is not None:
            raise SpesError("--token and --grid exclude each other (the grid shows every token)")
        plot_token_grid(exp, feats, args.grid == "words", timings, args.columns, args.out,
                        clip_percentile=args.clip_percentile)
    else:
        plot_explanation(exp, feats, token, args.out, timings=timings, clip_percentile=args.clip_percentile)
    _say_wrote(f"wrote {args.out}")


def report_command(args) -> None:
    from ._io import check_output
    from .report import utterances, write_report
    from .results import load_result

    if not args.out.lower().endswith((".html", ".htm")):
        raise SpesError(f"--out {args.out}: the report is one HTML page; name it .html")
    check_output(args.out, args.overwrite)
    exps, attrs = load_result(args.result)
    _unaggregated(exps.values(), args.result, "the report shows")
    _check_normalizer_option(exps.values(), args.normalizer, args.result)
    items = utterances(exps, args.audio, args.timings, args.metrics)
    task = args.task or attrs.get("task") or "asr"
    write_report(args.out, items, title=args.title or f"SPES: {os.path.basename(os.path.normpath(args.result))}",
                 task=task, source=f"{count(len(items), 'utterance')}, {sum(u.audio is not None for u in items)} with audio",
                 clip_percentile=args.clip_percentile, normalizer=args.normalizer, attrs=attrs)
    _say_wrote(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")


def align_command(args) -> None:
    from ._io import check_output
    from .alignment import Aligner, spoken_form, write_ctm
    from .audio import read_audio
    from .driver import progress_bar
    from .manifest import read_manifest

    outputs = [args.out] + ([args.phones] if args.phones else [])
    for path in outputs:
        check_output(path, args.overwrite)
    if len(set(map(os.path.abspath, outputs))) < len(outputs):
        raise SpesError("--out and --phones name the same file")
    entries = read_manifest(args.manifest)
    aligner = Aligner()  # before any audio is read: says how to install PocketSphinx when it is missing
    words, phones, failed = {}, {}, []
    bar = None if args.quiet else progress_bar("align", len(entries), "utterance",
                                               f"{count(len(entries), 'utterance')} of {args.manifest}")
    try:
        for e in entries:
            try:
                alignment = aligner(read_audio(e.audio), spoken_form(e.reference))
                words[e.id], phones[e.id] = alignment.words, alignment.phones
            except SpesError as err:
                failed.append(f"{e.id}: {err}")
            if bar:
                bar.update()
    finally:
        if bar:
            bar.close()
    if not words:
        raise SpesError(f"no utterance of {args.manifest} could be aligned, e.g. {failed[0]}")
    for line in failed:
        print(f"spes-jax: warning: {line}; left out", file=sys.stderr)
    write_ctm(args.out, words)
    if args.phones:
        write_ctm(args.phones, phones)
    _say_wrote(f"wrote {' and '.join(outputs)} ({count(len(words), 'utterance')} aligned"
               f"{f', {len(failed)} left out' if failed else ''})")


def plausibility_command(args) -> None:
    from ._io import check_output, write_json
    from .results import load_result
    from .analysis.plausibility import (kurtosis_ranking, match_timings, positional_saliency, read_timings,
                                        time_alignment)

    if args.out:
        check_output(args.out, args.overwrite)
    loaded, attrs = load_result(args.explanations)
    exps = list(loaded.values())
    _per_token_only(exps, args.explanations, "time alignment, kurtosis and positional saliency analyse")
    _unaggregated(exps, args.explanations, "time alignment, kurtosis and positional saliency analyse")
    empty = [e.id for e in exps if len(e.tokens) == 1]  # only </s>: the model heard no speech
    if len(empty) == len(exps):
        raise SpesError(f"{args.explanations}: nothing to analyse: every explained hypothesis is empty (e.g. "
                        f"{empty[0]!r})")
    if empty:
        print(f"spes-jax: note: {count(len(empty), 'utterance')} with an empty hypothesis left out (e.g. "
              f"{empty[0]!r})", file=sys.stderr)
        exps = [e for e in exps if len(e.tokens) > 1]
    out: dict = {}
    if args.timings:
        if attrs.get("task") == "st":
            raise SpesError(f"{args.explanations} explains translations (task st): time alignment pairs each "
                            "hypothesis word with the span where it is spoken, and a translation's words are "
                            "not spoken in the source audio")
        pairs, skipped = match_timings(exps, read_timings(args.timings, exps))
        ta = time_alignment(pairs)
        out["time_alignment"] = {"utterances": ta.n_utterances, "skipped": skipped, "words": ta.n_words,
                                 "inside": float(ta.inside.mean()), "outside": float(ta.outside.mean()),
                                 "t": ta.t, "p": ta.p}
        print(f"time alignment: {count(ta.n_utterances, 'utterance')} ({len(skipped)} skipped), {ta.n_words} words; "
              f"inside {ta.inside.mean():.3f} vs outside {ta.outside.mean():.3f}; t = {ta.t:.2f}, p = {ta.p:.2e}")
    ranking = kurtosis_ranking(exps, args.min_count)
    out["kurtosis"] = [r.__dict__ for r in ranking]
    if ranking:
        show = lambda rs: ", ".join(f"{r.token} {r.kurtosis:.1f} ({r.count})" for r in rs)
        k = min(5, max(1, len(ranking) // 2))  # the two lists never share a token
        print(f"kurtosis, top {k}: {show(ranking[:k])}")
        if len(ranking) > k:
            print(f"kurtosis, bottom {k}: {show(ranking[-k:])}")
    pos = positional_saliency(exps)
    out["positional"] = {"start": float(pos.start.mean()), "latest": float(pos.latest.mean()),
                         "intermediate": float(pos.intermediate.mean()) if pos.intermediate.size else None,
                         "tests": pos.tests}
    print(f"positional saliency (mean): start {pos.start.mean():.3f}, latest {pos.latest.mean():.3f}, "
          f"intermediate {pos.intermediate.mean() if pos.intermediate.size else float('nan'):.3f}; " +
          "; ".join(f"{k}: t = {t:.2f}, p = {p:.1e}" for k, (t, p) in pos.tests.items()))
    budget = min((e.n_masks for e in exps if e.n_masks), default=0)
    if budget and budget < 20000:
        print(f"spes-jax: note: the maps were made with {budget} spectrogram masks (the paper's: 20000); noisier maps "
              "blur the contrasts these tests measure, so at this budget a large p-value says little",
              file=sys.stderr)
    if not args.timings and attrs.get("task") != "st":
        print("spes-jax: note: time alignment skipped: it needs word timings (--timings: a CTM, or JSON like the "
              "bundled samples' timings.json)", file=sys.stderr)
    if args.out:
        write_json(args.out, out)
        _say_wrote(f"wrote {args.out}")


def _distributed(args) -> None:
    """Joins JAX's multi-host runtime when asked: explicit flags, or SPES_JAX_DISTRIBUTED=1 to let JAX
    read the cluster environment (Slurm, TPU pods)."""
    import jax

    if args.coordinator or args.num_processes:
        if not (args.coordinator and args.num_processes and args.process_id is not None):
            raise SpesError("--coordinator, --num-processes and --process-id go together")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    elif os.environ.get("SPES_JAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()


def explain_corpus_command(args) -> None:
    from .corpus import explain_corpus

    _distributed(args)
    cfg = sweep_config(args, args.task)
    model = load_cli_model(args, args.task)
    summary = explain_corpus(model, args.manifest, args.out, cfg, targets=args.targets, task=args.task,
                             resume=args.resume, limit=args.limit, shard_size=args.shard_size,
                             commit_every=args.commit_every, map_dtype=args.map_dtype, progress=not args.quiet)
    print(f"spes-jax: {summary.line()}", file=sys.stderr)
    if summary.skipped:
        with open(summary.errors_file, encoding="utf-8") as f:
            skipped = [json.loads(line) for line in f][-summary.skipped:]
        for e in skipped[:5]:
            print(f"spes-jax: skipped {e['id']} ({e['source']}): {e['error']}", file=sys.stderr)
        print(f"spes-jax: note: {count(summary.skipped, 'input')} skipped, each logged in {summary.errors_file}",
              file=sys.stderr)
    _say_wrote(f"wrote {args.out} (merge with 'spes-jax merge {args.out} --out ALL.h5')")


def merge_command(args) -> None:
    from ._io import check_output
    from .corpus import merge

    check_output(args.out, args.overwrite)
    n = merge(args.run_dir, args.out)
    _say_wrote(f"wrote {args.out} ({count(n, 'utterance')})")


def explain_contrastive_command(args) -> None:
    import numpy as np

    from .contrastive import explain_contrastive_manifest, read_contrastive_manifest, ManifestRow
    from .explanation import save_explanations
    from .provenance import provenance

    if (args.manifest is None) == (args.audio is None):
        raise SpesError("give one audio file (with --foil) or --manifest, not both")
    if args.audio is not None and args.foil is None:
        raise SpesError("--foil is required with an audio file: the hypothesis with the word replaced")
    if args.manifest is not None and (args.target or args.foil or args.word_start is not None
                                      or args.word_end is not None):
        raise SpesError("--target, --foil, --word-start and --word-end apply to one audio file; "
                        "a manifest gives them per row")
    _hdf5_output(args, "explanations are")
    if args.manifest is not None:
        rows = read_contrastive_manifest(args.manifest)
    else:
        if not os.path.isfile(args.audio):
            raise SpesError(f"audio file not found: {args.audio}")
        rows = [ManifestRow(os.path.splitext(os.path.basename(args.audio))[0], args.audio, args.target, args.foil,
                            args.word_start, args.word_end)]
    task = args.task or assets.task(args.model)
    cfg = sweep_config(args, task)
    model = load_cli_model(args, task)
    cfg = model.sweep_config(cfg)
    exps = explain_contrastive_manifest(model, rows, cfg, scorer=args.scorer, word_probability=args.word_probability,
                                        normalizer=args.normalizer, strict=not args.loose_span,
                                        progress=not args.quiet)
    attrs, exps = provenance(model, cfg, task, exps, [r.audio for r in rows], explanation_task="contrastive",
                             contrastive_scorer=args.scorer, word_probability=args.word_probability,
                             normalizer=args.normalizer or "")
    ids = lambda pieces: np.array([model.dictionary.index(p) for p in pieces], np.int32)
    exps = [dataclasses.replace(e, meta={**e.meta, "token_ids": ids(e.contrastive["target"]),
                                         "foil_token_ids": ids(e.contrastive["foil"])}) for e in exps]
    save_explanations(args.out, exps, attrs)
    for e in exps:
        c = e.contrastive
        print(f"{e.id}\t{c['word']} vs {c['foil_word']}\tP_o {c['p_orig']:.4g}\tQ_o {c['q_orig']:.4g}")
    _say_wrote(f"wrote {args.out}")
