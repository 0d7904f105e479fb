"""Cross-attention vs SPES input saliency on the embedded models (Papi et al. 2025, section 3 of
EXTENSIONS.md).

    python benchmarks/cross_attention.py [--masks 900] [--seeds 0]

For each bundled sample utterance and each embedded model: the model's hypothesis, its decoder
cross-attention weights, and SPES spectrogram maps (``spes_jax.explain``, ``--masks`` masks, no
prefix masks) pooled to the encoder's frames; Pearson correlation per token, averaged over all
tokens of all utterances, per layer (heads averaged), per head and for the heads/layers average.
With two seeds the saliency is the mean of the two runs' maps, and the split-half reliability of the
pooled saliency (Pearson between the two runs per token, then Spearman-Brown for the mean) bounds
what any correlation with it can reach (about the square root of the reliability).
Writes benchmarks/results/cross_attention_<masks>[_seeds].json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import device_name, write_results
from spes_jax import SPESConfig, explain, load_model
from spes_jax.assets import samples
from spes_jax.analysis.cross_attention import correlations, encoder_stride, pearson, pool_saliency

POOLINGS = (("max", "max"), ("mean", "mean"), ("max", "mean"), ("mean", "max"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", type=int, default=900, help="spectrogram masks per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed; maps averaged")
    args = ap.parse_args()
    rows = []
    for task in ("asr", "st"):
        model = load_model(task)
        base = SPESConfig.st() if task == "st" else SPESConfig.asr()
        wavs = samples()
        hyps = model.transcribe(list(wavs.values()))
        t = time.perf_counter()
        runs = [explain(model, list(wavs.values()), base.replace(n_masks=args.masks, n_token_masks=0, seed=seed),
                        ids=list(wavs), targets=[h.tokens for h in hyps]) for seed in args.seeds]
        seconds = time.perf_counter() - t
        stride = encoder_stride(model)
        per = {p: [] for p in POOLINGS}
        halves = {p: [] for p in POOLINGS}
        for i, ((uid, wav), hyp) in enumerate(zip(wavs.items(), hyps)):
            ca = model.cross_attention(wav, hyp.tokens)
            for p in POOLINGS:
                pooled = [pool_saliency(run[i].spectrogram_saliency, stride, *p) for run in runs]
                per[p].append(correlations(ca, np.mean(pooled, axis=0)))
                if len(pooled) > 1:
                    halves[p].append(pearson(pooled[0].astype(np.float64), pooled[1]))
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
            if halves[(time_pool, freq_pool)]:
                half = float(np.nanmean(np.concatenate(halves[(time_pool, freq_pool)])))
                rows[-1].update(reliability_half=round(half, 4), reliability=round(2 * half / (1 + half), 4))
    meta = {"device": device_name(), "masks_per_seed": args.masks, "token_masks": 0, "seeds": args.seeds}
    suffix = "" if len(args.seeds) == 1 else "_" + "_".join(map(str, args.seeds))
    path = write_results(f"cross_attention_{args.masks}{suffix}", rows, meta)
    n_layers = len(rows[0]["per_layer"])
    head = "| model | pooling (time, freq) | " + " | ".join(f"layer {i + 1}" for i in range(n_layers)) + \
           " | mean single head | best head | heads+layers avg | tokens | reliability |"
    print(head + "\n" + "|---" * (head.count("|") - 1) + "|")
    for r in rows:
        print(f"| {r['model']} | {r['pool_time']}, {r['pool_frequency']} | " +
              " | ".join(f"{x:.3f}" for x in r["per_layer"]) +
              f" | {r['mean_over_heads']:.3f} | {r['best_head']:.3f} | {r['average']:.3f} | {r['tokens']} | "
              f"{r.get('reliability', float('nan')):.3f} |")
    print(f"\n{meta}\nwrote {path}")


if __name__ == "__main__":
    main()
