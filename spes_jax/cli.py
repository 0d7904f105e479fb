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
    from .attribution import explain
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spes-jax", description="Explain speech-to-text models with SPES, in JAX.")
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
