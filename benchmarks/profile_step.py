"""Where the paper-size spectrogram step spends its time: each module of one Conformer layer, the
subsampler, encoder, decoder and teacher-forced forward compiled alone, and the sweep step against the
plain forward of the same batch; achieved FLOP/s over a matmul peak measured in the same process.

    python benchmarks/profile_step.py [--precisions float32 bfloat16] [--batch 8] [--seconds 5]

FLOPs are XLA's cost analysis of each compiled piece (dead code removed). "step / forward" is the
throughput of the engine's spectrogram step (masks, forward, KL, split-half sums) over that of the
forward alone on the same padded input: 1.0 means the sweep costs nothing beyond the model.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from common import device_name, matmul_peak, print_table, time_call, write_results
from sweep import Bench, make_model
from spes_jax import SPESConfig
from spes_jax.models import S2TModel
from spes_jax.models.conformer import ConformerLayer, ConvModule, FeedForwardModule, SelfAttentionModule


def _flops(fn, *args) -> float:
    return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])


def _row(name: str, precision: str, fn, args, peak: float, min_time: float) -> dict:
    jitted = jax.jit(fn)
    seconds = time_call(lambda: jitted(*args), min_time=min_time)
    flops = _flops(fn, *args)
    return {"piece": name, "precision": precision, "ms": 1e3 * seconds, "gflop": flops / 1e9,
            "frac_of_peak": flops / seconds / peak}


def layer_rows(cfg, batch: int, frames: int, precision: str, peak: float, min_time: float) -> list[dict]:
    """One Conformer layer and its modules on (batch, frames, d) activations."""
    dtype = jnp.dtype(precision)
    d = cfg.encoder_embed_dim
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, frames, d))
    valid, lengths = jnp.ones((batch, frames), bool), jnp.full((batch,), frames)
    pieces = {
        "conformer layer": (ConformerLayer(cfg, dtype), (x, valid, lengths)),
        "feed-forward module": (FeedForwardModule(d, cfg.feed_forward_expansion_factor, dtype), (x,)),
        "self-attention module": (SelfAttentionModule(d, cfg.encoder_attention_heads, dtype), (x, valid, lengths)),
        "convolution module": (ConvModule(d, cfg.conformer_conv_kernel_size, cfg.conv_expansion_factor, dtype),
                               (x, valid)),
    }
    rows = []
    for name, (module, inputs) in pieces.items():
        params = module.init(jax.random.PRNGKey(1), *inputs)
        inputs = (inputs[0].astype(dtype), *inputs[1:])
        rows.append(_row(name, precision, lambda p, *a, m=module: m.apply(p, *a), (params, *inputs), peak, min_time))
    return rows


def model_rows(model, bench: Bench, precision: str, peak: float, min_time: float) -> tuple[list[dict], float]:
    """Subsampler, encoder, decoder and the whole forward on the bench's padded input; and the
    forward's seconds per batch."""
    module = S2TModel(model.cfg, jnp.dtype(precision))
    inputs = bench.state.inputs
    B = bench.plan.batch("spectrogram")
    feats = jnp.broadcast_to(inputs.features, (B, *inputs.features.shape))
    lengths = jnp.full((B,), inputs.length)
    prev = jnp.broadcast_to(inputs.prev, (B, *inputs.prev.shape))
    apply = module.apply
    encode = lambda p, x: apply({"params": p}, x, lengths, method="encode")
    subsample = lambda p, x: apply({"params": p}, x, lengths, method=lambda m, x, n: m.encoder.subsample(x, n)[0])

    def decode(p, enc):
        return apply({"params": p}, prev, apply({"params": p}, enc, method="cross_kv"), enc.valid, None, method="decode")

    forward = lambda p, x: apply({"params": p}, x, lengths, prev)[0]
    params = model.params
    enc = jax.jit(encode)(params, feats)
    rows = [_row("subsampler", precision, subsample, (params, feats), peak, min_time),
            _row("encoder", precision, lambda p, x: encode(p, x).out, (params, feats), peak, min_time),
            _row("decoder (with cross K/V)", precision, decode, (params, enc), peak, min_time),
            _row("teacher-forced forward", precision, forward, (params, feats), peak, min_time)]
    return rows, rows[-1]["ms"] / 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--min-time", type=float, default=2.0)
    args = ap.parse_args()
    model = make_model("paper")
    print(f"device: {device_name()}", flush=True)
    rows, steps = [], []
    for precision in args.precisions:
        peak = matmul_peak(jnp.dtype(precision))
        cfg = model.sweep_config(SPESConfig.asr(batch_size=args.batch, precision=precision))
        bench = Bench(model, cfg, args.seconds)
        frames = int(bench.state.inputs.features.shape[0]) // model.encoder_stride
        rows += layer_rows(model.cfg, args.batch, frames, precision, peak, args.min_time)
        pieces, forward_s = model_rows(model, bench, precision, peak, args.min_time)
        rows += pieces
        step_s = time_call(bench.spec_step, min_time=args.min_time)
        steps.append({"precision": precision, "batch": args.batch, "peak_gflops": peak / 1e9,
                      "forward_ms": 1e3 * forward_s, "step_ms": 1e3 * step_s, "step_over_forward": forward_s / step_s})
        print_table(rows[-8:], list(rows[0]))
        print_table(steps[-1:], list(steps[0]))
    print()
    print_table(rows, list(rows[0]))
    print_table(steps, list(steps[0]))
    path = write_results("profile_step", rows + steps, {"device": device_name(), "jax": jax.__version__,
                                                        "seconds": args.seconds, "vocab": model.cfg.vocab_size})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
