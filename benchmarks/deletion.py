"""Deletion metric throughput: the 21 levels of an utterance in one batched beam search vs one call each.

    python benchmarks/deletion.py [--model asr] [--utterances 8]

Uses the bundled samples (cycled) with flat random explanations, so the perturbed inputs are realistic
deletions of real speech. Both ways decode the same inputs with the same compiled beam search (batch
21 vs batch 1); the hypotheses must agree, and the table gives utterances per second and the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import device_name, write_results
from spes_jax import load_model
from spes_jax.assets import samples
from spes_jax.analysis.metrics import percentages, zeroed_cells


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="asr")
    ap.add_argument("--utterances", type=int, default=8)
    args = ap.parse_args()
    model = load_model(args.model)
    wavs = list(samples().values())
    feats = [model.features(wavs[i % len(wavs)]) for i in range(args.utterances)]
    levels = percentages(5)
    rng = np.random.default_rng(0)
    inputs = [list(np.where(zeroed_cells(rng.random(f.shape), levels), np.float32(0), f[None])) for f in feats]

    def batched():
        return [[h[0].text for h in model.decode(x, batch_size=len(levels))] for x in inputs]

    def one_by_one():
        return [[model.decode([v])[0][0].text for v in x] for x in inputs]

    rows = []
    for name, fn in (("batched (21 per call)", batched), ("one level per call", one_by_one)):
        fn()  # compile
        start = time.perf_counter()
        texts = fn()
        seconds = time.perf_counter() - start
        rows.append({"way": name, "seconds": seconds, "utterances_per_s": len(inputs) / seconds, "texts": texts})
    assert rows[0]["texts"] == rows[1]["texts"], "batched and single decoding disagree"
    speedup = rows[1]["seconds"] / rows[0]["seconds"]
    print(f"device: {device_name()}; {len(inputs)} utterances x {len(levels)} levels, beam 5")
    for r in rows:
        print(f"{r['way']:<24} {r['seconds']:7.2f} s  {r['utterances_per_s']:6.2f} utterances/s")
    print(f"batched speed-up: {speedup:.2f}x")
    write_results("deletion", [{k: v for k, v in r.items() if k != "texts"} for r in rows] + [{"speedup": speedup}],
                  {"device": device_name(), "model": args.model, "utterances": len(inputs)})


if __name__ == "__main__":
    main()
