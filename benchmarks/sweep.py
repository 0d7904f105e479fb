"""SPES sweep throughput: masks/s and achieved FLOP/s over a same-run matmul peak, and what each
design choice buys, all measured in one process on one device.

    python benchmarks/sweep.py                        # CPU-sized defaults
    python benchmarks/sweep.py --models tiny paper --seconds 2 5 10 20 30 --precisions float32 bfloat16

For every (model, duration, precision): spectrogram masks/s, prefix masks/s, XLA-counted FLOPs per
mask, FLOP/s as a fraction of the matmul peak in that precision. Then, for one setting, the speed-up of
on-device masks over host-built masks, of segment-space over per-feature (K, T, C) accumulation, and
of encoder/cross-attention reuse over a full forward for prefix masks.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from common import compiled_flops, device_name, matmul_peak, print_table, time_call, write_results
from spes_jax import EngineOptions, SPESConfig, SweepEngine
from spes_jax.models import ModelConfig, init_params, paper_config
from spes_jax.pipeline import SpeechToTextModel
from spes_jax.segmentation import segment
from spes_jax.text import Dictionary, Tokenizer

TINY = ModelConfig(conv_channels=128, encoder_embed_dim=64, encoder_layers=3, encoder_attention_heads=4,
                   conformer_conv_kernel_size=15, decoder_embed_dim=64, decoder_layers=2, decoder_attention_heads=4,
                   decoder_ffn_embed_dim=128, vocab_size=100, ctc_encoder_layer=2, ctc_vocab_size=101)


def make_model(name: str) -> SpeechToTextModel:
    cfg = TINY if name == "tiny" else paper_config()
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(cfg.vocab_size - 4)]
    return SpeechToTextModel(cfg, init_params(cfg), Tokenizer(Dictionary(symbols), None))


def features(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    T = int(seconds * 100)
    x = np.sin(np.arange(T)[:, None] / 7.0) * np.cos(np.arange(80)[None, :] / 5.0) + 0.3 * rng.standard_normal((T, 80))
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32)


class Bench:
    """One utterance prepared for an engine; times its compiled steps."""

    def __init__(self, model, cfg: SPESConfig, seconds: float, options=EngineOptions()):
        self.engine = SweepEngine(model, cfg, options=options)
        feats = features(seconds)
        tokens = list(np.random.default_rng(1).integers(4, model.cfg.vocab_size, max(2, int(4 * seconds)) - 1)) + [2]
        self.seg = segment(feats, cfg)
        inp = self.engine.inputs(feats, tokens, self.seg, "bench")
        log_p, self.extra = self.engine._original(self.engine.params, inp)
        self.inp = inp.replace(log_p=log_p)
        self.slots = -(-(int(self.seg.n_segments.max()) + 1) // 256) * 256
        L = self.inp.prev.shape[0]
        n_levels, T, C = self.inp.labels.shape
        if self.engine.accumulate == "segments":
            self.sums = self.engine._zeros(((n_levels, self.slots, L), (n_levels, self.slots)))
        else:
            self.sums = self.engine._zeros(((L, T, C), (T, C)))
        self.tsums = self.engine._zeros(((L, L), (L,)))
        self.labels = np.asarray(self.inp.labels)

    def spec_step(self):
        e = self.engine
        if e.options.masks == "device":
            self.sums = e._spec_device(e.params, self.inp, self.sums, jnp.int32(0), self.slots)
        else:
            self.sums = e._spec_host(e.params, self.inp, self.sums,
                                     *e._host_batch(self.inp, self.labels, 0, self.slots, None))
        return self.sums

    def prefix_step(self):
        e = self.engine
        self.tsums = e._prefix(e.params, self.inp, self.extra, self.tsums, jnp.int32(0))
        return self.tsums

    def spec_flops(self) -> float:
        e = self.engine
        return compiled_flops(e._spec_device, e.params, self.inp, self.sums, jnp.int32(0), self.slots)

    def prefix_flops(self) -> float:
        e = self.engine
        return compiled_flops(e._prefix, e.params, self.inp, self.extra, self.tsums, jnp.int32(0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "paper"])
    ap.add_argument("--seconds", type=float, nargs="+", default=[2, 5, 10])
    ap.add_argument("--paper-seconds", type=float, nargs="+", default=None,
                    help="durations for the paper model (default: --seconds)")
    ap.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--batch", type=int, default=None, help="masks per step (default 64 tiny, 8 paper on CPU)")
    ap.add_argument("--ablation-model", default="tiny")
    ap.add_argument("--ablation-seconds", type=float, default=5)
    ap.add_argument("--min-time", type=float, default=2.0)
    args = ap.parse_args()

    peaks = {p: matmul_peak(jnp.bfloat16 if p == "bfloat16" else jnp.float32) for p in args.precisions}
    print(f"device: {device_name()}; matmul peak " +
          ", ".join(f"{p} {v / 1e9:.1f} GFLOP/s" for p, v in peaks.items()))
    on_cpu = jax.devices()[0].platform == "cpu"
    rows = []
    for name in args.models:
        model = make_model(name)
        durations = args.paper_seconds if (name == "paper" and args.paper_seconds) else args.seconds
        batch = args.batch or (64 if name == "tiny" or not on_cpu else 8)
        for seconds in durations:
            for precision in args.precisions:
                cfg = SPESConfig.asr(batch_size=batch, token_batch_size=batch * 4, precision=precision)
                b = Bench(model, cfg, seconds)
                t_spec = time_call(b.spec_step, args.min_time, 2)
                t_pre = time_call(b.prefix_step, args.min_time, 2)
                f_spec, _f_pre = b.spec_flops(), b.prefix_flops()
                rows.append({"model": name, "seconds": seconds, "precision": precision, "batch": b.engine.batch,
                             "spec_masks_per_s": b.engine.batch / t_spec,
                             "prefix_masks_per_s": b.engine.token_batch / t_pre,
                             "gflop_per_mask": f_spec / b.engine.batch / 1e9,
                             "frac_of_peak": f_spec / t_spec / peaks[precision],
                             "prefix_cost_ratio": (t_pre / b.engine.token_batch) / (t_spec / b.engine.batch)})
                print_table(rows[-1:], list(rows[-1]))
    print()
    print_table(rows, list(rows[0]))

    # Design choices, one setting, same process.
    model = make_model(args.ablation_model)
    batch = args.batch or 64
    cfg = SPESConfig.asr(batch_size=batch, token_batch_size=batch)
    sec = args.ablation_seconds
    base = Bench(model, cfg, sec)
    t_dev = time_call(base.spec_step, args.min_time, 2)
    t_host = time_call(Bench(model, cfg, sec, EngineOptions(masks="host")).spec_step, args.min_time, 2)
    t_feat = time_call(Bench(model, cfg, sec, EngineOptions(accumulate="features")).spec_step, args.min_time, 2)
    t_pre = time_call(base.prefix_step, args.min_time, 2)
    t_pre_full = time_call(Bench(model, cfg, sec, EngineOptions(reuse_encoder=False)).prefix_step, args.min_time, 2)
    ablations = [
        {"choice": "on-device masks vs host-built (B,T,C) masks", "speedup": t_host / t_dev},
        {"choice": "segment-space vs per-feature (K,T,C) accumulation", "speedup": t_feat / t_dev},
        {"choice": "encoder + cross-attention reuse vs full forward (prefix masks)", "speedup": t_pre_full / t_pre},
    ]
    print(f"\ndesign choices ({args.ablation_model} model, {sec:g} s, batch {batch}, float32):")
    print_table(ablations, ["choice", "speedup"])
    path = write_results("sweep", rows + ablations, {"device": device_name(), "matmul_peaks": peaks,
                                                     "ablation": {"model": args.ablation_model, "seconds": sec}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
