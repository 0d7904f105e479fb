"""spes-jax against the reference FBK-fairseq SPES pipeline, side by side on one machine: masks/s.

The reference runs in its own virtual environment (CPU torch) through its throughput script, which
times ``generate_occlusion_explanation.py`` in-process and prints one ``RESULT {json}`` line per run;
its ``prepare`` subcommand writes the shared input (500 x 80 random fbank, 20 target tokens) and its
``build-paper`` subcommand a random paper-size (116M) Conformer checkpoint. Both sides explain the
same input with the same weights, targets, mask count and SPES settings (p 0.5, three SLIC levels,
spectrogram masks only); spes-jax in float32 and bfloat16. Runs alternate (reference, float32,
bfloat16, reference, ...) and the ratios are medians of the ratios of neighbouring runs, so that the
load of a shared machine moves both sides alike.

What is timed: reference, its mask loop (host masks, SLIC, model, KL, accumulation; not the imports,
checkpoint load or unperturbed pass); spes-jax, ``explain`` with given targets (feature checks, SLIC,
unperturbed pass, the sweep, maps back on the host; not the checkpoint load or the compilation, done
by a warm-up call).

    python benchmarks/reference.py --ref-python REF_VENV/bin/python --ref-script THROUGHPUT.py \
        --ref-src REF_SRC --work /tmp/refbench [--models tiny paper] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import jax
import numpy as np

from common import device_name, print_table, write_results
from spes_jax import SPESConfig, explain, load_model
from spes_jax.convert import convert_checkpoint

MASKS = {"tiny": 600, "paper": 200}  # per run: ~5-60 s on a 2-core CPU
BATCH = {"tiny": 64, "paper": 8}


class Reference:
    """The reference pipeline's throughput script, run in its own interpreter."""

    def __init__(self, python: str, script: str, src: str):
        self.python, self.script, self.src = python, script, src

    def __call__(self, *args: str) -> str:
        env = dict(os.environ, REF_SRC=self.src)
        out = subprocess.run([self.python, self.script, "--fbk", self.src, *args], env=env, check=True,
                             capture_output=True, text=True)
        return out.stdout

    def masks_per_s(self, work: str, ckpt: str, n_masks: int) -> float:
        lines = [l for l in self("run", "--work", work, "--ckpt", ckpt, "--n-masks", str(n_masks)).splitlines()
                 if l.startswith("RESULT ")]
        return json.loads(lines[-1][len("RESULT "):])["masks_per_s"]


def checkpoint(ref: Reference, name: str, work: str, fixtures: str) -> str:
    """The fairseq checkpoint of ``name``: the fixture's tiny Conformer, or a random paper-size one."""
    if name == "tiny":
        return os.path.join(fixtures, "model", "conformer_tiny.pt")
    path = os.path.join(work, "paper.pt")
    if not os.path.exists(path):
        ref("build-paper", "--fixtures", fixtures, "--out", path)
    return path


def prepared(ref: Reference, ckpt: str, work: str, fixtures: str) -> tuple[np.ndarray, list[int]]:
    """The shared input (raw fbank) and target ids of ``work``, written by the reference if missing."""
    if not os.path.exists(os.path.join(work, "targets.json")):
        ref("prepare", "--ckpt", ckpt, "--work", work, "--fixtures", fixtures)
    with open(os.path.join(work, "targets.json")) as f:
        ids = json.load(f)["target_ids"]
    return np.load(os.path.join(work, "input_fbank80.npy")), ids


def jax_masks_per_s(model, feats: np.ndarray, ids: list[int], cfg: SPESConfig) -> float:
    t = time.perf_counter()
    exp = explain(model, feats, cfg, targets=[ids])
    assert np.isfinite(exp.spectrogram_saliency).all()
    return cfg.n_masks / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref-python", required=True, help="python of the reference's virtual environment")
    ap.add_argument("--ref-script", required=True, help="the reference's throughput script")
    ap.add_argument("--ref-src", required=True, help="the patched reference source tree")
    ap.add_argument("--work", required=True, help="folder for checkpoints, inputs and converted models")
    ap.add_argument("--fixtures", default=os.environ.get("SPES_FBK_FIXTURES"),
                    help="the FBK fixtures (model/ with config_explain.yaml; default: fixtures/fbk beside the folder "
                         "of the throughput script, as that script assumes)")
    ap.add_argument("--models", nargs="+", default=["tiny", "paper"], choices=["tiny", "paper"])
    ap.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    ref = Reference(args.ref_python, args.ref_script, os.path.abspath(args.ref_src))
    fixtures = os.path.abspath(args.fixtures or os.path.join(os.path.dirname(args.ref_script), "..", "fixtures", "fbk"))
    if not os.path.isfile(os.path.join(fixtures, "model", "config_explain.yaml")):
        ap.error(f"{fixtures}/model has no config_explain.yaml: pass --fixtures (the shared FBK fixtures)")
    print(f"device: {device_name()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for name in args.models:
        work = os.path.abspath(os.path.join(args.work, name))
        os.makedirs(work, exist_ok=True)
        ckpt = checkpoint(ref, name, work, fixtures)
        feats, ids = prepared(ref, ckpt, work, fixtures)
        jax_dir = os.path.join(work, "spes-jax")
        if not os.path.exists(jax_dir):
            convert_checkpoint(ckpt, jax_dir, config_yaml=os.path.join(fixtures, "model", "config.yaml"))
        model = load_model(jax_dir)
        cfgs = {p: SPESConfig.asr(n_masks=MASKS[name], n_token_masks=0, batch_size=BATCH[name], precision=p)
                for p in args.precisions}
        for cfg in cfgs.values():  # compile outside the timing
            explain(model, feats, cfg.replace(n_masks=cfg.batch_size), targets=[ids])
        rates = {side: [] for side in ["reference", *cfgs]}
        for rep in range(args.reps):
            rates["reference"].append(ref.masks_per_s(work, ckpt, MASKS[name]))
            for p, cfg in cfgs.items():
                rates[p].append(jax_masks_per_s(model, feats, ids, cfg))
            print(f"{name} rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rates.items())
                  + f" masks/s; load {os.getloadavg()[0]:.1f}", flush=True)
        ref_rates = np.array(rates["reference"])
        for p in cfgs:
            jr = np.array(rates[p])
            rows.append({"model": name, "precision": p, "masks": MASKS[name], "batch": BATCH[name],
                         "reference_masks_per_s": float(np.median(ref_rates)),
                         "spes_jax_masks_per_s": float(np.median(jr)),
                         "speedup": float(np.median(jr / ref_rates))})
        print_table(rows[-len(cfgs):], list(rows[-1]))
    print()
    print_table(rows, list(rows[0]))
    path = write_results("reference", rows, {"device": device_name(), "jax": jax.__version__,
                                             "load_average_end": os.getloadavg()[0]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
