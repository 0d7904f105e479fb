"""Stability of SPES maps: seed-to-seed correlation as N_X grows, and bfloat16 against float32.

    python benchmarks/quality.py --model DIR --audio utt.wav [--n-masks 500 1000 2000 5000 10000 20000]

For each N_X, two runs with different seeds; per token the Pearson correlation of the two spectrogram
maps; the mean over tokens is reported. Then float32 against bfloat16 with the same seed and masks.
"""

from __future__ import annotations

import argparse

import numpy as np

from common import device_name, print_table, write_results
from spes_jax import SPESConfig, explain, load_model


def per_token_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--n-masks", type=int, nargs="+", default=[500, 1000, 2000, 5000, 10000, 20000])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--precision-only", action="store_true", help="skip the seed-to-seed curve")
    args = ap.parse_args()
    model = load_model(args.model)
    feats = model.features(args.audio)
    target = list(model.transcribe(feats).tokens)
    rows = []
    for n in [] if args.precision_only else args.n_masks:
        cfg = SPESConfig.asr(n_masks=n, n_token_masks=0, batch_size=args.batch)
        maps = [explain(model, feats, cfg.replace(seed=s), targets=[target]).spectrogram_saliency for s in (1, 2)]
        r = per_token_r(*maps)
        rows.append({"n_masks": n, "mean_r": float(r.mean()), "min_r": float(r.min())})
        print_table(rows[-1:], list(rows[-1]))
    cfg = SPESConfig.asr(n_masks=2000, n_token_masks=0, batch_size=args.batch)
    f32 = explain(model, feats, cfg, targets=[target]).spectrogram_saliency
    bf16 = explain(model, feats, cfg.replace(precision="bfloat16"), targets=[target]).spectrogram_saliency
    r = per_token_r(f32, bf16)
    precision = {"n_masks": 2000, "bf16_vs_f32_mean_r": float(r.mean()), "bf16_vs_f32_min_r": float(r.min())}
    if rows:
        print()
        print_table(rows, ["n_masks", "mean_r", "min_r"])
    print(f"bfloat16 vs float32 (N_X 2000, same masks): mean r {r.mean():.4f}, min r {r.min():.4f}")
    path = write_results("quality", rows + [precision], {"device": device_name(), "model": args.model,
                                                        "audio": args.audio, "tokens": len(target)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
