"""What a user waits for compilation: the first explanation of each new input size, with and without
the persistent compilation cache.

    python benchmarks/compile_cost.py [--models embedded paper] [--masks 64] [--token-masks 16]

For each model, two fresh processes explain the bundled samples (three padding buckets) one after the
other with few masks, so that compilation dominates, then the first sample again (compiled: the
steady cost of those masks). The first process starts with an empty cache directory, the second
reuses what the first left there (what a second ``spes-jax`` run or Python session sees). A
sample's compilation cost is its time minus the steady time. "embedded" is the default ASR model
(its beam search included); "paper" the paper's 113M Conformer with random weights, explaining
given targets (a random model's own output would be noise of maximal length).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _child(model_name: str, masks: int, token_masks: int) -> None:
    import jax

    import spes_jax
    from spes_jax import assets

    t0 = time.perf_counter()
    model = spes_jax.load_model()  # turns the persistent cache on, at $SPES_JAX_CACHE_DIR
    targets = None
    if model_name == "paper":
        from spes_jax.models import init_params, paper_config
        from spes_jax.speech_model import FairseqModel

        cfg = paper_config(len(model.tokenizer.dictionary))
        model = FairseqModel(cfg, init_params(cfg, jax.random.PRNGKey(0)), model.tokenizer, model.data)
        targets = [model.tokenizer.encode(t["text"]) for t in assets.sample_timings().values()]
    load_s = time.perf_counter() - t0
    config = spes_jax.SPESConfig.asr(n_masks=masks, n_token_masks=token_masks)
    paths = list(assets.samples().values())
    rows = []
    for i, path in enumerate(paths + paths[:1]):
        t = time.perf_counter()
        exp = spes_jax.explain(model, [path], config,
                               targets=None if targets is None else [targets[i % len(paths)]])[0]
        rows.append({"sample": os.path.basename(path), "frames": exp.spectrogram_saliency.shape[1],
                     "seconds": time.perf_counter() - t})
    print(json.dumps({"load_s": load_s, "rows": rows}))


def _run(model_name: str, masks: int, token_masks: int, cache: str) -> dict:
    env = {**os.environ, "SPES_JAX_CACHE_DIR": cache}
    r = subprocess.run([sys.executable, __file__, "--child", model_name, "--masks", str(masks),
                        "--token-masks", str(token_masks)], env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["embedded", "paper"], choices=["embedded", "paper"])
    ap.add_argument("--masks", type=int, default=64)
    ap.add_argument("--token-masks", type=int, default=16)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args.child, args.masks, args.token_masks)
    from common import device_name, write_results

    from spes_jax._shapes import bucket

    out = []
    for name in args.models:
        with tempfile.TemporaryDirectory() as cache:
            runs = {"empty cache": _run(name, args.masks, args.token_masks, cache)}
            runs["warm cache"] = _run(name, args.masks, args.token_masks, cache)
        for label, run in runs.items():
            *first, steady = run["rows"]
            padded = [bucket(r["frames"]) for r in first]
            new = [r["seconds"] - steady["seconds"] for i, r in enumerate(first) if padded[i] not in padded[:i]]
            out.append({"model": name, "cache": label, "frames": [r["frames"] for r in first], "buckets": padded,
                        "first_s": [round(r["seconds"], 2) for r in first], "steady_s": round(steady["seconds"], 2),
                        "load_s": round(run["load_s"], 2), "compile_s_per_bucket": round(sum(new) / len(new), 2)})
            print(f"{name:8s} {label:11s} samples of {out[-1]['frames']} frames (buckets {padded}): "
                  f"{out[-1]['first_s']} s; the first again {steady['seconds']:.2f} s: "
                  f"{out[-1]['compile_s_per_bucket']:.1f} s of compilation per new bucket")
    path = write_results("compile_cost", out, {"device": device_name(), "masks": args.masks,
                                               "token_masks": args.token_masks})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
