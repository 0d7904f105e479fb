"""The ``spes-jax`` command: argument parsing only; every command calls the public Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import SpesError


def _convert(args) -> None:
    from convert import convert_checkpoint

    out = convert_checkpoint(args.checkpoint, args.out, config_yaml=args.config_yaml, dict_path=args.dict,
                             spm_path=args.spm, overwrite=args.overwrite)
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


def _explain(args) -> None:
    import jax

    from . import __version__
    from .explainer import explain
    from .config import SPESConfig
    from .explanation import save_explanations
    from .pipeline import load_model

    base = SPESConfig.st() if args.task == "st" else SPESConfig.asr()
    cfg = base.replace(n_masks=args.masks, n_token_masks=args.token_masks, seed=args.seed,
                       precision=args.precision, batch_size=args.batch_size,
                       token_batch_size=max(args.batch_size, base.token_batch_size))
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise SpesError(f"output directory does not exist: {out_dir}")
    model = load_model(args.model or args.task)
    if not args.quiet:
        print(f"spes-jax: explaining {len(args.audio)} utterance(s) with {cfg.masks_per_level * cfg.n_levels} "
              f"spectrogram and {cfg.n_token_masks} prefix masks on {jax.devices()[0].platform}", file=sys.stderr)
        if cfg.n_masks < 20000 or cfg.n_token_masks < 2000:
            print("spes-jax: note: fewer masks than the paper's 20000/2000 give noisier maps", file=sys.stderr)
    exps = explain(model, list(args.audio), cfg, progress=not args.quiet)
    attrs = {"config": cfg.to_json(), "seed": cfg.seed, "library": f"spes-jax {__version__}",
             "model": json.dumps(model.info or {}), "task": args.task}
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

    if os.path.isdir(path):
        from .corpus.rundir import file_attrs, read_identity

        identity = read_identity(path)
        return file_attrs(identity) if identity else {}

    try:
        with h5py.File(path, "r") as f:
            return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError:
        return {}


def _evaluate(args) -> None:
    from ._io import write_json
    from .corpus import load_any
    from .manifest import read_manifest
    from .metrics import default_scorer, perturbation_curve, size_curve
    from .plotting import plot_deletion_curves, plot_size_curves

    exps = load_any(args.explanations)
    os.makedirs(args.out_dir, exist_ok=True)
    results = {"explanations": os.path.abspath(args.explanations)}
    if "size" in args.metrics:
        size = size_curve(exps.values(), args.step)
        results["size"] = size.to_dict()
        plot_size_curves({"explanations": size}, os.path.join(args.out_dir, "size.png"))
        print(f"size AUC\tspectrogram {size.auc:.2f}\tprefix {size.auc_prefix:.2f}")
    curves = [m for m in args.metrics if m != "size"]
    if curves:
        if not args.manifest:
            raise SpesError("deletion and insertion need --manifest (the audio and references)")
        entries = {e.id: e for e in read_manifest(args.manifest)}
        missing = [i for i in exps if i not in entries]
        if missing:
            raise SpesError(f"{len(missing)} explained utterance(s) not in the manifest, e.g. {missing[0]!r}")
        model, task = _model_for(args, _file_attrs(args.explanations))
        scorer = args.scorer or default_scorer(task)
        for metric in curves:
            c = perturbation_curve(model, exps.values(), {i: e.audio for i, e in entries.items()},
                                   {i: e.reference for i, e in entries.items()}, metric, scorer, args.step)
            results[metric] = c.to_dict()
            plot_deletion_curves({"explanations": c}, os.path.join(args.out_dir, f"{metric}.png"))
            print(f"{metric} AUC ({scorer})\t{c.auc_fraction:.2f} (p as a fraction; {c.auc:.1f} with p in %)")
    write_json(os.path.join(args.out_dir, "metrics.json"), results)
    print(f"wrote {args.out_dir}/metrics.json", file=sys.stderr)


def _compare(args) -> None:
    from ._io import write_json, write_text
    from .compare import compare, paper_table, table
    from .manifest import read_manifest
    from .pipeline import load_model

    tasks = args.task or ["asr"] * len(args.manifest)
    if len(tasks) != len(args.manifest):
        raise SpesError(f"--task needs one value per manifest ({len(args.manifest)}), got {len(tasks)}")
    if args.model and len(args.manifest) > 1:
        raise SpesError("--model applies to a single manifest; without it each task uses its embedded model")
    work = [(read_manifest(m)[: args.limit], t) for m, t in zip(args.manifest, tasks)]  # check all inputs first
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


def _plot(args) -> None:
    from .audio import load_features
    from .explanation import load_explanations

    exps = load_explanations(args.explanations)
    uid = args.id or next(iter(exps), None)
    if uid not in exps:
        raise SpesError(f"no utterance {uid!r} in {args.explanations}; it has {list(exps)[:5]}")
    exp = exps[uid]
    feats = load_features(args.audio, exp.spectrogram_saliency.shape[2]) if args.audio else None
    exp.plot(feats, args.token, args.out)
    print(f"wrote {args.out}", file=sys.stderr)


def _plausibility(args) -> None:
    from ._io import write_json
    from .corpus import load_any
    from .manifest import read_word_timings
    from .plausibility import (
        kurtosis_ranking,
        match_timings,
        positional_saliency,
        time_alignment,
    )

    exps = list(load_any(args.explanations).values())
    out: dict = {}
    if args.timings:
        pairs, skipped = match_timings(exps, read_word_timings(args.timings))
        if not pairs:
            raise SpesError("no explained utterance has word timings matching its hypothesis")
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


def _explain_corpus(args) -> None:
    from .config import SPESConfig
    from .corpus import explain_corpus
    from .pipeline import load_model

    _distributed(args)
    base = SPESConfig.st() if args.task == "st" else SPESConfig.asr()
    cfg = base.replace(n_masks=args.masks, n_token_masks=args.token_masks, seed=args.seed,
                       precision=args.precision, batch_size=args.batch_size,
                       token_batch_size=max(args.batch_size, base.token_batch_size))
    model = load_model(args.model or args.task)
    summary = explain_corpus(model, args.manifest, args.out, cfg, targets=args.targets, task=args.task,
                             resume=args.resume, limit=args.limit, shard_size=args.shard_size,
                             progress=not args.quiet)
    print(f"spes-jax: {summary.line()}", file=sys.stderr)
    print(f"wrote {args.out} (merge with 'spes-jax merge {args.out} --out ALL.h5')", file=sys.stderr)


def _merge(args) -> None:
    from .corpus import merge

    n = merge(args.run_dir, args.out)
    print(f"wrote {args.out} ({n} utterances)", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spes-jax", description="Explain speech-to-text models with SPES, in JAX.")
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
    t.add_argument("audio", nargs="+", help="16 kHz mono WAV files")
    t.add_argument("--model", help="converted model directory (default: the embedded ASR model)")
    t.add_argument("--beam", type=int, default=5)
    t.add_argument("--greedy", action="store_true", help="greedy search instead of beam search")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--json", action="store_true", help="one JSON object per line")
    t.set_defaults(func=_transcribe)

    e = sub.add_parser("explain", help="SPES explanations of the model's hypotheses, written to HDF5")
    e.add_argument("audio", nargs="+", help="16 kHz mono WAV files")
    e.add_argument("--out", required=True, help="output HDF5 file (written only when everything succeeded)")
    e.add_argument("--model", help="converted model directory (default: the embedded model of --task)")
    e.add_argument("--task", choices=["asr", "st"], default="asr", help="asr: tau 7.5 s; st: tau 5 s")
    e.add_argument("--masks", type=int, default=20000, help="spectrogram masks N_X (default 20000)")
    e.add_argument("--token-masks", type=int, default=2000, help="prefix masks N_Y (default 2000)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    e.add_argument("--batch-size", type=int, default=64, help="masks per compiled step")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_explain)

    v = sub.add_parser("evaluate", help="deletion, insertion and size of an explanation file")
    v.add_argument("explanations", help="HDF5 file written by 'spes-jax explain' (or the reference), or a "
                   "run directory of 'spes-jax explain-corpus'")
    v.add_argument("--manifest", help="TSV with id, audio, reference (needed for deletion/insertion)")
    v.add_argument("--metrics", nargs="+", choices=["deletion", "insertion", "size"], default=["deletion", "size"])
    v.add_argument("--scorer", choices=["wer", "wer_max", "wer_sentence_max", "bleu"],
                   help="default: wer_max for ASR, bleu for ST")
    v.add_argument("--step", type=int, default=5, help="percentage / threshold step (default 5)")
    v.add_argument("--model", help="model that made the explanations (default: the embedded one of --task)")
    v.add_argument("--task", choices=["asr", "st"], help="default: as recorded in the file, else asr")
    v.add_argument("--out-dir", default=".", help="where metrics.json and the curve plots go")
    v.set_defaults(func=_evaluate)

    m = sub.add_parser("compare", help="SPES vs feature-wise, Bubble Noise and ablations (the paper's Table 1)")
    m.add_argument("manifest", nargs="+", help="TSV files with id, audio, reference (one per task)")
    m.add_argument("--out-dir", required=True, help="explanations, results.json, table.md and plots go here "
                   "(in one folder per task when there are several manifests)")
    m.add_argument("--task", nargs="+", choices=["asr", "st"], help="the task of each manifest (default asr)")
    m.add_argument("--model", help="converted model directory (default: the embedded model of --task)")
    m.add_argument("--budget-scale", type=float, default=1.0,
                   help="multiply every method's mask budget (paper: N_X 20000, N_Y 2000, Bubble Noise 1000)")
    m.add_argument("--methods", nargs="+", help="subset of: SPES, feature-wise, 'Bubble Noise', '- multi-scale', "
                   "'- clustering', '- duration adaptation', '- KL'")
    m.add_argument("--limit", type=int, help="only the first N utterances of the manifest")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=_compare)

    g = sub.add_parser("plot", help="spectrogram, saliency map, overlay and prefix matrix of one utterance")
    g.add_argument("explanations", help="HDF5 explanation file")
    g.add_argument("--out", required=True, help="image file (.png, .pdf, .svg)")
    g.add_argument("--id", help="utterance id (default: the first in the file)")
    g.add_argument("--audio", help="the utterance's WAV file, to draw the spectrogram and the overlay")
    g.add_argument("--token", type=int, help="explained token index (default: sentence-level map)")
    g.set_defaults(func=_plot)

    q = sub.add_parser("plausibility", help="time alignment, kurtosis ranking and positional saliency")
    q.add_argument("explanations", help="HDF5 explanation file or an explain-corpus run directory")
    q.add_argument("--timings", help="word timings: CTM, or JSON like the bundled samples' timings.json")
    q.add_argument("--min-count", type=int, default=1, help="kurtosis: only tokens seen this often (paper: 100)")
    q.add_argument("--out", help="JSON file for the results")
    q.set_defaults(func=_plausibility)

    k = sub.add_parser("explain-corpus", help="explain a whole corpus into a resumable, sharded run directory")
    k.add_argument("manifest", help="TSV manifest (ours or fairseq S2T, incl. features.zip:offset:length) "
                   "or a folder of audio files")
    k.add_argument("--out", required=True, help="run directory (see docs/corpus.md)")
    k.add_argument("--model", help="converted model directory (default: the embedded model of --task)")
    k.add_argument("--task", choices=["asr", "st"], default="asr", help="asr: tau 7.5 s; st: tau 5 s")
    k.add_argument("--masks", type=int, default=20000, help="spectrogram masks N_X (default 20000)")
    k.add_argument("--token-masks", type=int, default=2000, help="prefix masks N_Y (default 2000)")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    k.add_argument("--batch-size", type=int, default=64, help="masks per compiled step")
    k.add_argument("--targets", choices=["hypothesis", "reference"], default="hypothesis",
                   help="explain the model's beam output (decoded first, stored) or the manifest's text")
    k.add_argument("--resume", action="store_true", help="continue the run in --out (same model, config, seed)")
    k.add_argument("--limit", type=int, help="only the first N utterances of the manifest")
    k.add_argument("--shard-size", type=int, default=16, help="utterances per committed shard")
    k.add_argument("--coordinator", help="multi-host: address:port of process 0 (jax.distributed)")
    k.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    k.add_argument("--process-id", type=int, help="multi-host: this process's number")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.set_defaults(func=_explain_corpus)

    r = sub.add_parser("merge", help="one HDF5 file (reference layout) from a corpus run directory")
    r.add_argument("run_dir", help="run directory of 'spes-jax explain-corpus'")
    r.add_argument("--out", required=True, help="output HDF5 file")
    r.set_defaults(func=_merge)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.no_compile_cache:
        from ._compile_cache import enable

        enable()
    try:
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
