"""Cross-attention vs SPES input saliency and encoder-output saliency on the embedded models
(Papi et al. 2025, section 3 of EXTENSIONS.md).

    python benchmarks/cross_attention.py [--masks 900] [--encoder-masks 900] [--seeds 0]

For each bundled sample utterance and each embedded model: the model's hypothesis, its decoder
cross-attention weights, SPES spectrogram maps (``spes_jax.explain``, ``--masks`` masks, no prefix
masks) pooled to the encoder's frames, and encoder-output saliency (``spes_jax.explain_encoder``,
``--encoder-masks`` masks, p 0.5, already at the encoder's frames). Pearson correlation per token,
averaged over all tokens of all utterances: cross-attention against each saliency view per layer
(heads averaged), per head and for the heads/layers average, and pooled input saliency against
encoder-output saliency. With two seeds each saliency is the mean of the two runs' maps, and the
split-half reliability of each (Pearson between the two runs per token, then Spearman-Brown for
the mean) bounds what any correlation with it can reach (about the square root of the reliability).
Cost: masks per second of both sweeps over the whole run (compilation and SLIC included) and in
steady state (the compiled sweeps of the first utterance timed directly).
Writes benchmarks/results/cross_attention_<masks>[_seeds].json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from common import device_name, write_results
from spes_jax import SPESConfig, explain, explain_encoder, load_model
from spes_jax.assets import samples
from spes_jax.analysis.cross_attention import correlations, encoder_stride, pearson, pool_saliency
from spes_jax.core import encoder_sweep, segment, sweep

POOLINGS = (("max", "max"), ("mean", "mean"), ("max", "mean"), ("mean", "max"))


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _reliability(pairs: list[np.ndarray]) -> dict:
    """Split-half reliability from per-token Pearson r between two runs (empty: nothing)."""
    if not pairs:
        return {}
    half = float(np.nanmean(np.concatenate(pairs)))
    return {"reliability_half": round(half, 4), "reliability": round(2 * half / (1 + half), 4)}


def _summary(corrs) -> dict:
    cat = lambda name: np.concatenate([getattr(c, name) for c in corrs], axis=-1)
    mean = lambda x: np.nanmean(x, axis=-1)
    heads = mean(cat("per_head"))
    return {"tokens": int(np.isfinite(cat("average")).sum()), "per_layer": mean(cat("per_layer")).round(4).tolist(),
            "per_head": heads.round(4).tolist(), "mean_over_heads": float(heads.mean().round(4)),
            "best_head": float(heads.max().round(4)), "average": float(mean(cat("average")).round(4))}


def _cost(model, wav, tokens, base, args, repeats: int = 3) -> dict:
    """Steady-state masks per second of the two compiled sweeps on one utterance (the engine's
    functions called directly: SLIC, features and compilation excluded; median of ``repeats``,
    alternating). The encoder-output sweep runs 10x the masks so that its time is measurable."""
    cfg = model.sweep_config(base.replace(n_masks=args.masks, n_token_masks=0))
    feats = model.features(wav)
    plan = sweep.make_plan(model.module, cfg)
    params = jax.device_put(model.params, plan.replicated)
    inputs = sweep.prepare(feats, tokens, segment(feats, cfg), "cost", cfg, plan)
    n_enc = 10 * args.encoder_masks
    eplan = encoder_sweep.make_plan(model.module, batch=cfg.batch_size)
    einputs = encoder_sweep.prepare(feats, tokens, "cost", seed=0, p=0.5, n_masks=n_enc, plan=eplan)
    spec = lambda: jax.block_until_ready(sweep.run(sweep.init(params, inputs, plan=plan), plan, cfg).spectrogram)
    enc = lambda: jax.block_until_ready(encoder_sweep.run(encoder_sweep.init(params, einputs, plan=eplan), eplan,
                                                          n_enc).encoder)
    spec(), enc()  # compiled already by the runs above unless the bucket is new
    times = [(_timed(spec)[1], _timed(enc)[1]) for _ in range(repeats)]
    spec_s, enc_s = map(float, np.median(times, axis=0))
    n_spec = cfg.n_masks
    return {"frames": int(feats.shape[0]), "tokens": len(tokens),
            "steady_spectrogram_masks_per_s": round(n_spec / spec_s, 1),
            "steady_encoder_masks_per_s": round(n_enc / enc_s, 1),
            "steady_ratio": round(n_enc / enc_s / (n_spec / spec_s), 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", type=int, default=900, help="spectrogram masks per run")
    ap.add_argument("--encoder-masks", type=int, default=900, help="encoder-output masks per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed; maps averaged")
    args = ap.parse_args()
    rows, costs = [], {}
    for task in ("asr", "st"):
        model = load_model(task)
        base = SPESConfig.st() if task == "st" else SPESConfig.asr()
        wavs = samples()
        hyps = model.transcribe(list(wavs.values()))
        targets = [h.tokens for h in hyps]
        runs, spec_s = _timed(lambda: [explain(model, list(wavs.values()), base.replace(
            n_masks=args.masks, n_token_masks=0, seed=seed), ids=list(wavs), targets=targets) for seed in args.seeds])
        enc_runs, enc_s = _timed(lambda: [explain_encoder(model, list(wavs.values()), args.encoder_masks, seed=seed,
                                                          ids=list(wavs), targets=targets) for seed in args.seeds])
        n_spec = len(args.seeds) * len(wavs) * args.masks
        n_enc = len(args.seeds) * len(wavs) * args.encoder_masks
        costs[task] = {"spectrogram_seconds": round(spec_s, 1), "encoder_seconds": round(enc_s, 1),
                       "spectrogram_masks_per_s": round(n_spec / spec_s, 1),
                       "encoder_masks_per_s": round(n_enc / enc_s, 1),
                       **_cost(model, next(iter(wavs.values())), targets[0], base, args)}
        stride = encoder_stride(model)
        per = {p: [] for p in POOLINGS}
        halves = {p: [] for p in POOLINGS}
        with_encoder = {p: [] for p in POOLINGS}
        per_encoder, enc_halves = [], []
        for i, ((uid, wav), hyp) in enumerate(zip(wavs.items(), hyps)):
            ca = model.cross_attention(wav, hyp.tokens)
            enc = [run[i].saliency for run in enc_runs]
            enc_mean = np.mean(enc, axis=0)
            per_encoder.append(correlations(ca, enc_mean))
            if len(enc) > 1:
                enc_halves.append(pearson(enc[0].astype(np.float64), enc[1]))
            for p in POOLINGS:
                pooled = [pool_saliency(run[i].spectrogram_saliency, stride, *p) for run in runs]
                per[p].append(correlations(ca, np.mean(pooled, axis=0)))
                with_encoder[p].append(pearson(np.mean(pooled, axis=0).astype(np.float64), enc_mean))
                if len(pooled) > 1:
                    halves[p].append(pearson(pooled[0].astype(np.float64), pooled[1]))
        encoder_view = {"encoder_" + k: v for k, v in _summary(per_encoder).items() if k != "tokens"}
        encoder_view.update({"encoder_" + k: v for k, v in _reliability(enc_halves).items()})
        for (time_pool, freq_pool), corrs in per.items():
            rows.append({"model": task, "pool_time": time_pool, "pool_frequency": freq_pool,
                         "utterances": len(corrs), **_summary(corrs),
                         "input_vs_encoder": float(np.nanmean(np.concatenate(with_encoder[(time_pool, freq_pool)]))
                                                   .round(4)),
                         **encoder_view, **_reliability(halves[(time_pool, freq_pool)])})
    meta = {"device": device_name(), "masks_per_seed": args.masks, "encoder_masks_per_seed": args.encoder_masks,
            "encoder_p": 0.5, "token_masks": 0, "seeds": args.seeds, "cost": costs}
    suffix = "" if len(args.seeds) == 1 else "_" + "_".join(map(str, args.seeds))
    path = write_results(f"cross_attention_{args.masks}{suffix}", rows, meta)
    n_layers = len(rows[0]["per_layer"])
    layers = lambda r, key: " | ".join(f"{x:.3f}" for x in r[key])
    head = ("| model | pooling (time, freq) | CA vs input: " + " | ".join(f"layer {i + 1}" for i in range(n_layers)) +
            " | heads+layers avg | CA vs encoder output: " + " | ".join(f"layer {i + 1}" for i in range(n_layers)) +
            " | heads+layers avg | input vs encoder output | tokens | reliability input / encoder |")
    print(head + "\n" + "|---" * (head.count("|") - 1) + "|")
    for r in rows:
        print(f"| {r['model']} | {r['pool_time']}, {r['pool_frequency']} | {layers(r, 'per_layer')} | "
              f"{r['average']:.3f} | {layers(r, 'encoder_per_layer')} | {r['encoder_average']:.3f} | "
              f"{r['input_vs_encoder']:.3f} | {r['tokens']} | {r.get('reliability', float('nan')):.3f} / "
              f"{r.get('encoder_reliability', float('nan')):.3f} |")
    print("\n| model | single heads: CA vs input (max, max) | CA vs encoder output |\n|---|---|---|")
    for r in rows[::len(POOLINGS)]:
        print(f"| {r['model']} | mean {r['mean_over_heads']:.3f}, best {r['best_head']:.3f} | "
              f"mean {r['encoder_mean_over_heads']:.3f}, best {r['encoder_best_head']:.3f} |")
    print(f"\n{meta}\nwrote {path}")


if __name__ == "__main__":
    main()
