"""Speed of the embedded models' training step, against a matmul peak measured in the same run.

    python benchmarks/train_step.py [--frames 256 512 1024] [--max-frames 12000]

One optimiser step of ``spes_jax.training.train`` (Adam, label-smoothed cross-entropy + CTC) on random
batches of each padded length, ``max_frames // frames`` utterances each, as the training batches are
shaped; seconds per step, XLA's FLOP count and its share of the matmul peak. Training time on another
machine scales with these seconds.
"""

from __future__ import annotations

import argparse

import numpy as np

from common import compiled_flops, device_name, matmul_peak, print_table, time_call, write_results
from spes_jax.models import S2TModel, init_params
from spes_jax.training.train import lr_schedule, make_loss, make_step, optimizer, small_config


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--max-frames", type=int, default=12000)
    ap.add_argument("--vocab", type=int, default=300)
    args = ap.parse_args()
    cfg = small_config(args.vocab)
    model, params = S2TModel(cfg), init_params(cfg, seed=1)
    opt = optimizer(lr_schedule(1e-3, 400, 4000))
    state, step = opt.init(params), make_step(make_loss(model, cfg), opt)
    peak = matmul_peak()
    rows, rng = [], np.random.default_rng(0)
    for T in args.frames:
        B, L = max(1, args.max_frames // T), T // 16  # about one target piece per 16 frames
        tokens = lambda n: rng.integers(4, args.vocab, (B, n)).astype(np.int32)
        ctc = np.concatenate([tokens(L // 2), np.ones((B, L - L // 2), np.int32)], axis=1)  # half padding
        batch = (rng.standard_normal((B, T, 80)).astype(np.float32), np.full(B, T, np.int32), tokens(L),
                 tokens(L), ctc, np.ones(B, bool))
        seconds = time_call(lambda: step(params, state, *batch))
        flops = compiled_flops(step, params, state, *batch)
        rows.append({"frames": T, "batch": B, "s/step": seconds, "GFLOP": flops / 1e9,
                     "GFLOP/s": flops / seconds / 1e9, "of peak": flops / seconds / peak})
    print(f"{device_name()}: matmul peak {peak / 1e9:.0f} GFLOP/s")
    print_table(rows, ["frames", "batch", "s/step", "GFLOP", "GFLOP/s", "of peak"])
    write_results("train_step", rows, {"device": device_name(), "matmul_peak_flops": peak})


if __name__ == "__main__":
    main()
