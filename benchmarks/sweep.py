"""SPES sweep throughput: masks/s and achieved FLOP/s over a same-run matmul peak, and what each
design choice buys, all measured in one process on one device.

    python benchmarks/sweep.py                        # CPU-sized defaults
    python benchmarks/sweep.py --models tiny paper --seconds 2 5 10 20 30 --precisions float32 bfloat16
    python benchmarks/sweep.py --models paper --seconds 5 10 20 30 --precisions bfloat16 \
        --batches 32 64 128 256 --full-sweep --no-ablations          # on an accelerator

For every (model, duration, precision): spectrogram masks/s, prefix masks/s, XLA-counted FLOPs per
mask, FLOP/s as a fraction of the matmul peak in that precision; with ``--batches``, the batch that
fills the device (the fastest of the list at the first duration, then used for all); with
``--full-sweep``, the wall time of explaining one utterance at N_X 20,000 + N_Y 2,000 (host SLIC, the
compiled sweep, maps back on the host; compilation excluded). Then, for one setting, the speed-up of
on-device masks over host-built masks, of segment-space over per-feature (K, T, C) accumulation, and
of encoder/cross-attention reuse over a full forward for prefix masks.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from dataclasses import dataclass
from typing import ClassVar

from common import compiled_flops, device_name, matmul_peak, print_table, time_call, write_results
from spes_jax import SPESConfig, core
from spes_jax.core import segment
from spes_jax.driver import params_on_devices
from spes_jax.models import ModelConfig, init_params, paper_config
from spes_jax.speech_model import FairseqModel
from spes_jax.text import Dictionary, Tokenizer

TINY = ModelConfig(conv_channels=128, encoder_embed_dim=64, encoder_layers=3, encoder_attention_heads=4,
                   conformer_conv_kernel_size=15, decoder_embed_dim=64, decoder_layers=2, decoder_attention_heads=4,
                   decoder_ffn_embed_dim=128, vocab_size=100, ctc_encoder_layer=2, ctc_vocab_size=101)


def make_model(name: str) -> FairseqModel:
    cfg = TINY if name == "tiny" else paper_config()
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(cfg.vocab_size - 4)]
    return FairseqModel(cfg, init_params(cfg), Tokenizer(Dictionary(symbols), None))


def features(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    T = int(seconds * 100)
    x = np.sin(np.arange(T)[:, None] / 7.0) * np.cos(np.arange(80)[None, :] / 5.0) + 0.3 * rng.standard_normal((T, 80))
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32)


# ---- Baselines of the design choices: mask sources and a prefix step the library does not ship.

@dataclass(frozen=True)
class PerFeature:
    """The sampler's masks accumulated per (t, c) feature instead of per segment."""

    per_segment: ClassVar[bool] = False

    def __call__(self, inputs, g):
        level, index = inputs.coords(g)
        keep = core.perturbation.segment_keep(inputs.key, level, index, inputs.n_slots, inputs.p_spec)
        mask = keep[inputs.labels[level]]
        return inputs.features * mask, 1.0 - mask


@dataclass(frozen=True)
class HostMasks:
    """Masks built on the host and transferred every step as full (B, T, C) arrays (the reference's way):
    ``inputs.replay`` holds this step's keep bits (B, S) and masks (B, T, C)."""

    per_segment: ClassVar[bool] = True

    def __call__(self, inputs, g):
        row = g % inputs.replay["masks"].shape[0]
        return inputs.features * inputs.replay["masks"][row], 1.0 - inputs.replay["keep"][row]


@dataclass(frozen=True)
class FullForwardProbe(core.SpesProbe):
    """SPES whose prefix masks re-encode the unperturbed input for every mask, as a plain forward does."""

    def score(self, part, module, params, inputs, ctx, x):
        if part == "spectrogram":
            return super().score(part, module, params, inputs, ctx, x)
        logits = module.apply({"params": params}, inputs.features[None], inputs.length[None], inputs.prev[None],
                              x[None])[0][0]
        return core.sweep.token_scores(self.scorer, inputs, ctx["log_p"], logits)


class Bench:
    """One utterance prepared for the core; times its compiled steps."""

    def __init__(self, model, cfg: SPESConfig, seconds: float, spectrogram_masks=None):
        self.plan = core.make_plan(model.module, cfg, jax.devices()[:1], spectrogram_masks=spectrogram_masks)
        feats = features(seconds)
        tokens = list(np.random.default_rng(1).integers(4, model.cfg.vocab_size, max(2, int(4 * seconds)) - 1)) + [2]
        self.seconds, self.tokens = seconds, tokens
        self.seg = segment(feats, cfg)
        self.cfg = cfg
        inputs = core.prepare(feats, tokens, self.seg, "bench", cfg, self.plan)
        if isinstance(spectrogram_masks, HostMasks):
            inputs = inputs.replace(replay=self._host_batch(inputs))
        self.state = core.init(params_on_devices(model, self.plan), inputs, plan=self.plan)

    def _host_batch(self, inputs):
        """This step's keep bits and full masks, sampled and expanded on the host."""
        labels = np.asarray(inputs.labels)
        g = np.arange(self.plan.batch("spectrogram"))
        level, index = g // int(inputs.per_level), g % int(inputs.per_level)
        cpu = jax.devices("cpu")[0]
        key = jax.device_put(inputs.key, cpu)
        keep = np.stack([np.asarray(core.perturbation.segment_keep(key, l, i, inputs.n_slots, self.cfg.p_spec))
                         for l, i in zip(level, index)])
        masks = np.take_along_axis(keep[:, None, :], labels[level].reshape(len(g), 1, -1), axis=2)
        return {"keep": keep, "masks": masks.reshape(len(g), *labels.shape[1:])}

    def spec_step(self):
        state = self.state
        if isinstance(self.plan.probe.spectrogram_masks, HostMasks):  # the transfer is part of the cost
            state = state.replace(inputs=state.inputs.replace(replay=jax.device_put(self._host_batch(state.inputs))))
        self.state = core.spectrogram_step(state, np.int32(0), plan=self.plan)
        return self.state.spectrogram

    def prefix_step(self, full_forward: bool = False):
        plan = self.plan
        if full_forward:
            probe = plan.probe
            plan = dataclasses.replace(plan, probe=FullForwardProbe(probe.spectrogram_masks, probe.token_masks,
                                                                    probe.scorer))
        self.state = core.prefix_step(self.state, np.int32(0), plan=plan)
        return self.state.prefix

    def spec_flops(self) -> float:
        return compiled_flops(core.engine.step, self.state, np.int32(0), plan=self.plan, part="spectrogram")

    def prefix_flops(self) -> float:
        return compiled_flops(core.engine.step, self.state, np.int32(0), plan=self.plan, part="prefix")


def fill_batch(model, seconds: float, precision: str, batches: list[int], min_time: float) -> int:
    """The batch with the most spectrogram masks/s (the smallest within 3 % of the best), printed."""
    rate = {}
    for batch in batches:
        try:
            b = Bench(model, model.sweep_config(SPESConfig.asr(batch_size=batch, precision=precision)), seconds)
            rate[batch] = batch / time_call(b.spec_step, min_time, 2)
        except Exception as e:  # out of device memory ends the scan
            print(f"batch {batch}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            break
        print(f"batch {batch}: {rate[batch]:.1f} spectrogram masks/s ({seconds:g} s, {precision})", flush=True)
    best = max(rate.values())
    return min(k for k, v in rate.items() if v >= 0.97 * best)


def fits(b: Bench) -> bool:
    """Whether one spectrogram and one prefix step of ``b`` run (False when out of device memory)."""
    try:
        jax.block_until_ready((b.spec_step(), b.prefix_step()))
        return True
    except Exception as e:  # XLA reports RESOURCE_EXHAUSTED as a runtime error
        if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
            raise
        print(f"batch {b.plan.batch('spectrogram')} does not fit {b.seconds:g} s: halving", flush=True)
        return False


def full_sweep(b: Bench, cfg: SPESConfig) -> float:
    """Seconds to explain the bench utterance at N_X 20,000 + N_Y 2,000 (compiled already by ``b``)."""
    cfg = cfg.replace(n_masks=20000, n_token_masks=2000)
    feats = features(b.seconds)
    jax.block_until_ready(core.finalize(b.state, plan=b.plan))  # compiled outside the timing
    t = time.perf_counter()
    seg = segment(feats, cfg)
    inputs = core.prepare(feats, b.tokens, seg, "bench", cfg, b.plan)
    res = core.run(core.init(b.state.params, inputs, plan=b.plan), b.plan, cfg)
    jax.device_get((res.spectrogram, res.prefix))
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "paper"])
    ap.add_argument("--seconds", type=float, nargs="+", default=[2, 5, 10])
    ap.add_argument("--paper-seconds", type=float, nargs="+", default=None,
                    help="durations for the paper model (default: --seconds)")
    ap.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--batch", type=int, default=None, help="masks per step (default 64 tiny, 8 paper on CPU)")
    ap.add_argument("--batches", type=int, nargs="+", help="try these batches at the first duration, keep the fastest")
    ap.add_argument("--full-sweep", action="store_true", help="also time a whole N_X 20,000 + N_Y 2,000 explanation")
    ap.add_argument("--no-ablations", action="store_true")
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
        if args.batches:
            batch = fill_batch(model, durations[0], args.precisions[-1], args.batches, args.min_time)
        for seconds in durations:
            for precision in args.precisions:
                cfg = SPESConfig.asr(batch_size=batch, token_batch_size=batch * 4, precision=precision)
                b = Bench(model, cfg, seconds)
                if args.batches:  # a batch that fills the device at the scan's duration may not fit a longer one
                    while batch > 1 and not fits(b):
                        batch //= 2
                        cfg = cfg.replace(batch_size=batch, token_batch_size=batch * 4)
                        b = Bench(model, cfg, seconds)
                f_spec, f_pre = b.spec_flops(), b.prefix_flops()  # before timing: it drops the compiled steps
                t_spec = time_call(b.spec_step, args.min_time, 2)
                t_pre = time_call(b.prefix_step, args.min_time, 2)
                B, TB = b.plan.batch("spectrogram"), b.plan.batch("prefix")
                rows.append({"model": name, "seconds": seconds, "precision": precision, "batch": B,
                             "spec_masks_per_s": B / t_spec, "prefix_masks_per_s": TB / t_pre,
                             "gflop_per_mask": f_spec / B / 1e9, "frac_of_peak": f_spec / t_spec / peaks[precision],
                             "prefix_frac_of_peak": f_pre / t_pre / peaks[precision],
                             "prefix_cost_ratio": (t_pre / TB) / (t_spec / B)})
                if args.full_sweep:
                    rows[-1]["full_sweep_s"] = full_sweep(b, cfg)
                print_table(rows[-1:], list(rows[-1]))
    print()
    print_table(rows, list(rows[0]))
    if args.no_ablations:
        path = write_results("sweep", rows, {"device": device_name(), "matmul_peaks": peaks})
        print(f"wrote {path}")
        return

    # Design choices, one setting, same process.
    model = make_model(args.ablation_model)
    batch = args.batch or 64
    cfg = SPESConfig.asr(batch_size=batch, token_batch_size=batch)
    sec = args.ablation_seconds
    base = Bench(model, cfg, sec)
    t_dev = time_call(base.spec_step, args.min_time, 2)
    t_host = time_call(Bench(model, cfg, sec, HostMasks()).spec_step, args.min_time, 2)
    t_feat = time_call(Bench(model, cfg, sec, PerFeature()).spec_step, args.min_time, 2)
    t_pre = time_call(base.prefix_step, args.min_time, 2)
    t_pre_full = time_call(lambda: base.prefix_step(full_forward=True), args.min_time, 2)
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
