"""One command per embedded model: the training runs that made it, in order, each one started from the
model the one before wrote (``--init-from``).

    python -m spes_jax.training embedded st --out models/st

Every stage is an ordinary ``train`` run with a fixed seed. Stages before the last write their model
directory, curve and held-out scores under ``<out>.stages/``; the last writes ``<out>``. A finished stage
leaves ``<out>.stages/<stage>.done`` (its arguments and wall time), and the command started again skips
the stages whose marker holds the same arguments, so an interrupted run goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from .._io import write_text
from ..errors import SpesError

# Spliced ASR at a peak learning rate of 1e-3, which left the language-model plateau for every seed tried
# (2e-3 did not always: docs/models.md, "Leaving the plateau"): the first stage of both robust models.
_SPLICED_ASR = ("spliced", ("--task", "asr", "--lr", "1e-3"))

# name -> ((stage, train arguments), ...). --init-from of every stage after the first is added here.
STAGES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    # Inputs up to 7 s: the longest of their 6,000 training examples is 6.95 s (docs/models.md).
    "asr-spliced": (("spliced", ("--task", "asr", "--max-seconds", "7")),),
    "st-spliced": (("spliced", ("--task", "st", "--max-seconds", "7")),),
    "asr": (
        _SPLICED_ASR,
        ("robust", ("--task", "asr", "--data", "robust", "--train-sentences", "30000", "--steps", "8000",
                    "--cooldown", "3000", "--edge", "0.3", "--frame-bucket", "256", "--max-seconds", "12")),
    ),
    # As FBK's ST recipes: the encoder from an ASR model, the CTC loss on the English transcript.
    "st": (
        _SPLICED_ASR,
        ("robust", ("--task", "st", "--data", "robust", "--ctc-text", "source", "--train-sentences", "24000",
                    "--steps", "6000", "--cooldown", "2400", "--edge", "0.3", "--frame-bucket", "256",
                    "--max-seconds", "12")),
    ),
}


def stages(name: str, out: str) -> list[tuple[str, list[str], str]]:
    """(stage, full ``train`` argument list, marker path) for embedded model ``name`` writing its model to ``out``."""
    out = os.path.normpath(out)
    work = out + ".stages"
    plan, prev = [], None
    steps = STAGES[name]
    for i, (stage, args) in enumerate(steps):
        target = out if i == len(steps) - 1 else os.path.join(work, stage)
        argv = [*args, "--out", target] + (["--init-from", prev] if prev else [])
        plan.append((stage, argv, os.path.join(work, f"{stage}.done")))
        prev = target
    return plan


def _done(marker: str, argv: list[str]) -> bool:
    """The stage ran with these arguments and its model directory is still there."""
    if not os.path.isfile(os.path.join(argv[argv.index("--out") + 1], "config.json")):
        return False
    try:
        with open(marker, encoding="utf-8") as f:
            return json.load(f)["argv"] == argv
    except (OSError, ValueError, KeyError):
        return False


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m spes_jax.training embedded",
                                 description="Train an embedded model from scratch in one command: its stages in "
                                 "order, each from the last; started again, it continues at the first "
                                 "unfinished stage")
    ap.add_argument("name", choices=list(STAGES))
    ap.add_argument("--out", required=True, help="the model directory; stages before the last go to OUT.stages/")
    ap.add_argument("--dry-run", action="store_true", help="print the stages' commands and whether each is done")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing OUT that this command did not write")
    args = ap.parse_args(argv)
    from .train import main as train_main

    plan = stages(args.name, args.out)
    _, last_argv, last_marker = plan[-1]
    if os.path.exists(args.out) and not (args.overwrite or args.dry_run or _done(last_marker, last_argv)):
        raise SpesError(f"output exists: {args.out} (pass --overwrite to replace it)")
    for stage, stage_argv, marker in plan:
        done = _done(marker, stage_argv)
        command = "python -m spes_jax.training train " + " ".join(stage_argv)
        if args.dry_run:
            print(f"{stage}: {'done' if done else 'to run'}: {command}")
            continue
        if done:
            print(f"{args.name}: stage {stage} already done ({marker})", flush=True)
            continue
        print(f"{args.name}: stage {stage}: {command}", flush=True)
        t0 = time.time()
        train_main(stage_argv)
        write_text(marker, json.dumps({"argv": stage_argv, "seconds": round(time.time() - t0)}) + "\n")
