"""Encoder + teacher-forced decoder forward throughput of the paper's 113M Conformer (random weights).

Reports utterances/s, XLA-counted FLOPs per utterance and achieved FLOP/s as a fraction of a float32
matmul peak measured in the same run on the same device.

    python benchmarks/model_forward.py [--seconds 5 10] [--batch 1 4] [--tokens-per-second 4]
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from common import compiled_flops, device_name, matmul_peak, print_table, time_call, write_results
from spes_jax.models import S2TModel, init_params, paper_config


@functools.partial(jax.jit, static_argnames=("model",))
def forward(model, params, feats, lengths, prev):
    logits, _ = model.apply({"params": params}, feats, lengths, prev)
    return jax.nn.log_softmax(logits, axis=-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[5, 10])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--tokens-per-second", type=float, default=4.0)
    ap.add_argument("--min-time", type=float, default=3.0)
    args = ap.parse_args()

    cfg = paper_config()
    model = S2TModel(cfg)
    params = init_params(cfg)
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    peak = matmul_peak()
    print(f"device: {device_name()}; model: {n_params / 1e6:.1f}M parameters; "
          f"float32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    rows = []
    rng = np.random.default_rng(0)
    for seconds in args.seconds:
        frames = int(seconds * 100)
        tokens = max(2, int(seconds * args.tokens_per_second))
        for batch in args.batch:
            feats = jnp.asarray(rng.standard_normal((batch, frames, 80)), jnp.float32)
            lengths = jnp.full((batch,), frames)
            prev = jnp.asarray(rng.integers(4, cfg.vocab_size, (batch, tokens)), jnp.int32)
            flops = compiled_flops(forward, model, params, feats, lengths, prev)
            t = time_call(lambda: forward(model, params, feats, lengths, prev), args.min_time)
            rows.append({"seconds": seconds, "batch": batch, "tokens": tokens,
                         "utt_per_s": batch / t, "gflop_per_utt": flops / batch / 1e9,
                         "gflop_per_s": flops / t / 1e9, "frac_of_peak": flops / t / peak})
    print_table(rows, ["seconds", "batch", "tokens", "utt_per_s", "gflop_per_utt", "gflop_per_s", "frac_of_peak"])
    path = write_results("model_forward", rows, {"device": device_name(), "matmul_peak_flops": peak,
                                                 "params": int(n_params)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
