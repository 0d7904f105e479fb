"""Cross-attention vs SPES input saliency on the embedded models (Papi et al. 2025, section 3 of
EXTENSIONS.md).

    python benchmarks/cross_attention.py [--masks 1500]

For each bundled sample utterance and each embedded model: the model's hypothesis, its decoder
cross-attention weights, and SPES spectrogram maps (``spes_jax.explain``, ``--masks`` masks, no
prefix masks) pooled to the encoder's frames; Pearson correlation per token, averaged over all
tokens of all utterances, per layer (heads averaged), per head and for the heads/layers average.
Writes benchmarks/results/cross_attention_<masks>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import device_name, write_results
from spes_jax import SPESConfig, explain, load_model
from spes_jax.assets import samples
from spes_jax.cross_attention import correlations, encoder_stride, pool_saliency

POOLINGS = (("max", "max"), ("mean", "mean"), ("max", "mean"), ("mean", "max"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    for task in ("asr", "st"):
        model = load_model(task)
        base = SPESConfig.st() if task == "st" else SPESConfig.asr()
        cfg = base.replace(n_masks=args.masks, n_token_masks=0, seed=args.seed)
        wavs = samples()
        hyps = model.transcribe(list(wavs.values()))
        t = time.perf_counter()
        exps = explain(model, list(wavs.values()), cfg, ids=list(wavs), targets=[h.tokens for h in hyps])
        seconds = time.perf_counter() - t
        stride = encoder_stride(model)
        per = {p: [] for p in POOLINGS}
        for (uid, wav), hyp, exp in zip(wavs.items(), hyps, exps):
            ca = model.cross_attention(wav, hyp.tokens)
            for p in POOLINGS:
                per[p].append(correlations(ca, pool_saliency(exp.spectrogram_saliency, stride, *p)))
        for (time_pool, freq_pool), corrs in per.items():
            cat = lambda name: np.concatenate([getattr(c, name) for c in corrs], axis=-1)
            mean = lambda x: np.nanmean(x, axis=-1)
            heads = mean(cat("per_head"))
            rows.append({"model": task, "pool_time": time_pool, "pool_frequency": freq_pool,
                         "tokens": int(np.isfinite(cat("average")).sum()), "utterances": len(corrs),
                         "per_layer": mean(cat("per_layer")).round(4).tolist(),
                         "per_head": heads.round(4).tolist(), "mean_over_heads": float(heads.mean().round(4)),
                         "best_head": float(heads.max().round(4)), "average": float(mean(cat("average")).round(4)),
                         "explain_seconds": round(seconds, 1)})
    meta = {"device": device_name(), "masks": args.masks, "token_masks": 0, "seed": args.seed}
    path = write_results(f"cross_attention_{args.masks}", rows, meta)
    n_layers = len(rows[0]["per_layer"])
    head = "| model | pooling (time, freq) | " + " | ".join(f"layer {i + 1}" for i in range(n_layers)) + \
           " | mean single head | best head | heads+layers avg | tokens |"
    print(head + "\n" + "|---" * (head.count("|") - 1) + "|")
    for r in rows:
        print(f"| {r['model']} | {r['pool_time']}, {r['pool_frequency']} | " +
              " | ".join(f"{x:.3f}" for x in r["per_layer"]) +
              f" | {r['mean_over_heads']:.3f} | {r['best_head']:.3f} | {r['average']:.3f} | {r['tokens']} |")
    print(f"\n{meta}\nwrote {path}")


if __name__ == "__main__":
    main()
