"""SPES on Whisper: spes-jax's compiled sweep against the perturbation loop a transformers user would
write, same masks, same process, same device, timed alternately (A B A B).

    python benchmarks/whisper_sweep.py                    # tiny.en (real weights) and base (random), CPU
    python benchmarks/whisper_sweep.py --quick            # CI-size: tiny.en, batch 2, one timed step
    python benchmarks/whisper_sweep.py --batch 2 --precision float32 bfloat16 \
        --baseline-precision float32 bfloat16             # both precisions on both sides, one run
    python benchmarks/whisper_sweep.py --models large-v3-turbo --seconds 5 10 30 --precision bfloat16 \
        --batch 64 --token-batch 256 --no-baseline       # on an accelerator (the baseline is CPU-only)

For each model: spectrogram and prefix masks/s of spes-jax's compiled steps (median over ``--steps``
steps after compilation), FLOPs per mask from XLA's cost analysis, FLOP/s as a fraction of the rate
of a square matmul in the sweep's precision, timed between the steps (each step against the matmul
next to it: the machine may be shared), and the time N_X 20,000 + N_Y 2,000 masks take at these
rates (``--full-sweep`` also times one whole explanation); and the same for the baseline, a batched
loop over transformers' ``WhisperForConditionalGeneration`` (eval, no_grad, default attention, on
the CPU; float32, or with ``--baseline-precision bfloat16`` under ``torch.autocast``, bfloat16
operands where autocast puts them, which covers the matmuls and convolutions):

- spectrogram masks: the utterance's log-mel occluded per segment of spes-jax's own segmentation
  (keep bits from a numpy RNG: the cost does not depend on which masks), padded to 30 s with the
  same floor, a full forward with the teacher-forced prompt + tokens, log-softmax, KL against the
  unperturbed distribution per token, and Eq. 3's per-segment sums;
- prefix masks: the encoder output computed once and passed as ``encoder_outputs``; the decoder
  reads the token embeddings times the keep bits (``decoder_inputs_embeds``), then the same scores
  and sums. Its cross-attention keys/values are recomputed per mask, as transformers does.

FLOPs of the baseline are counted by ``torch.utils.flop_counter`` (matmuls, convolutions,
attention; counted with eager attention, whose arithmetic the timed fused kernel shares), over
torch's own matmul rate. ``--breakdown`` also times each side's encoder alone on the same batch, to
show where a spectrogram mask's time goes.

Several ``--precision`` / ``--baseline-precision`` values make one side each, all timed in turn in
one process; every spes-jax side gets a speed-up against every baseline side. Accuracy of the
precisions: each side's unperturbed log-probabilities against a float32 side with the same weights
(tiny.en: the float32 baseline, an independent implementation; base, whose random weights differ
between the frameworks: the same framework in float32), the largest difference over the whole
vocabulary and over the explained tokens' own log-probabilities.

tiny.en is the Whisper fixture (``$SPES_WHISPER_FIXTURES``, default ``../shared/fixtures/whisper``
beside the repository),
loaded by spes-jax and by transformers' ``from_pretrained`` from the same safetensors; base and
large-v3-turbo have random weights (spes-jax's init; transformers' own init, which costs the same).
The utterance is the fixture clip ``librivox_0920`` (6.05 s, its 22 greedy tokens), or with
``--seconds`` that clip repeated to the length, with its tokens repeated in proportion.

torch and transformers are no dependency of spes-jax; the baseline runs when both import, e.g. in
a separate environment (PyPI's torch wheel is large, ~6 GB with its CUDA libraries; check
``df -h`` first):

    python -m venv /path/to/bench-venv
    /path/to/bench-venv/bin/pip install -e . torch transformers
    /path/to/bench-venv/bin/python benchmarks/whisper_sweep.py
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from common import compiled_flops, device_name, matmul_call, print_table, write_results
from spes_jax import SPESConfig, core
from spes_jax.audio import SAMPLE_RATE, read_audio
from spes_jax.driver import params_on_devices
from spes_jax.models.whisper import init_params
from spes_jax.whisper import FeatureSettings
from spes_jax.whisper.model import WhisperModel, load_whisper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.environ.get("SPES_WHISPER_FIXTURES", os.path.join(REPO, "..", "shared", "fixtures", "whisper"))
CLIP = "librivox_0920"
TINY_DIR = ("model", "whisper-tiny.en")
PAPER_MASKS = (20000, 2000)  # N_X spectrogram + N_Y prefix masks of one explanation (SPES's budget)

# Hugging Face config shapes of the random-weight models (vocabularies as published; their special
# ids only need to be valid ids, the tokens being explained are the clip's).
SHAPES = {
    "base": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                 decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048),
    "large-v3-turbo": dict(num_mel_bins=128, d_model=1280, encoder_layers=32, decoder_layers=4,
                           encoder_attention_heads=20, decoder_attention_heads=20, encoder_ffn_dim=5120,
                           decoder_ffn_dim=5120, vocab_size=51866),
}


def fixture(*parts: str) -> str:
    path = os.path.join(FIXTURES, *parts)
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: set SPES_WHISPER_FIXTURES to the Whisper fixtures folder")
    return path


def load_model(name: str) -> WhisperModel:
    """tiny.en from the fixture; other sizes: its tokenizer and settings with random weights."""
    tiny = load_whisper(fixture(*TINY_DIR))
    if name == "tiny.en":
        return tiny
    cfg = dataclasses.replace(tiny.cfg, **SHAPES[name])
    features = FeatureSettings.from_dir(fixture(*TINY_DIR), n_mels=cfg.num_mel_bins)
    return WhisperModel(cfg, init_params(cfg), tiny.tokenizer.whisper, tiny.generation, features)


def utterance(model: WhisperModel, seconds: float | None) -> tuple[np.ndarray, list[int], float]:
    """(T, C) log-mel frames, the explained ids (ending with the end token) and the duration of the
    fixture clip, or of the clip repeated to ``seconds``."""
    wave = read_audio(fixture("audio", f"{CLIP}.wav"))
    with open(fixture("reference", "index.json")) as f:
        ids = json.load(f)["clips"][CLIP]["greedy_ids"]
    text = ids[2:-1]  # without <|startoftranscript|> <|notimestamps|> and <|endoftext|>
    if seconds is not None:
        n = round(seconds * SAMPLE_RATE)
        text = list(np.resize(text, max(1, round(len(text) * n / len(wave)))))
        wave = np.resize(wave, n)
    return model.features(wave), [int(t) for t in text] + [model.cfg.eos], len(wave) / SAMPLE_RATE


class JaxSweep:
    """spes-jax's compiled steps on one utterance (compiled on construction)."""

    def __init__(self, model: WhisperModel, cfg: SPESConfig, feats: np.ndarray, tokens: list[int]):
        self.plan = core.make_plan(model.module, cfg, jax.devices()[:1])
        self.cfg, self.feats, self.tokens = cfg, feats, tokens
        self.seg = core.segment(feats, cfg)
        self.layout = model.layout(feats)
        inputs = core.prepare(feats, tokens, self.seg, "bench", cfg, self.plan, layout=self.layout)
        self.state = core.init(params_on_devices(model, self.plan), inputs, plan=self.plan)
        self.module, self.params = self.plan.module, self.state.params
        # Counted before the steps compile: counting drops JAX's compiled functions (common.compiled_flops).
        self._flops = (compiled_flops(core.engine.step, self.state, np.int32(0), plan=self.plan, part="spectrogram"),
                       compiled_flops(core.engine.step, self.state, np.int32(0), plan=self.plan, part="prefix"))
        jax.block_until_ready((self.spectrogram_step(), self.prefix_step()))

    def spectrogram_step(self):
        self.state = core.spectrogram_step(self.state, np.int32(0), plan=self.plan)
        return self.state.spectrogram

    def prefix_step(self):
        self.state = core.prefix_step(self.state, np.int32(0), plan=self.plan)
        return self.state.prefix

    def flops(self) -> tuple[float, float]:
        """XLA's FLOPs of one spectrogram step and one prefix step."""
        return self._flops

    def encoder_only(self) -> Callable[[], jax.Array]:
        """The spectrogram step's encoder alone (with the cross-attention keys/values), on a batch of
        the unperturbed input, compiled."""
        inputs = self.state.inputs
        x = jnp.broadcast_to(inputs.features, (self.plan.batch("spectrogram"),) + inputs.features.shape)
        fn = jax.jit(lambda p, x: jax.vmap(lambda f: core.sweep.encode(self.module, p, f, inputs.length)[0])(x))
        jax.block_until_ready(fn(self.params, x))
        return lambda: fn(self.params, x)

    def full_sweep(self) -> float:
        """Seconds to explain the utterance at N_X 20,000 + N_Y 2,000 (host SLIC, the compiled sweep,
        maps back on the host; compilation excluded: the steps are compiled already)."""
        cfg = self.cfg.replace(n_masks=PAPER_MASKS[0], n_token_masks=PAPER_MASKS[1])
        jax.block_until_ready(core.finalize(self.state, plan=self.plan))
        t = time.perf_counter()
        inputs = core.prepare(self.feats, self.tokens, core.segment(self.feats, cfg), "bench", cfg, self.plan,
                              layout=self.layout)
        res = core.run(core.init(self.params, inputs, plan=self.plan), self.plan, cfg)
        jax.device_get((res.spectrogram, res.prefix))
        return time.perf_counter() - t


class TorchLoop:
    """The batched perturbation loop over transformers' Whisper, Eq. 3 in torch (CPU), in float32 or
    under bfloat16 autocast."""

    def __init__(self, name: str, model: WhisperModel, sweep: JaxSweep, precision: str, seed: int = 0):
        import torch
        import transformers

        self.torch, self.precision = torch, precision
        if name == "tiny.en":
            self.hf = transformers.WhisperForConditionalGeneration.from_pretrained(fixture(*TINY_DIR),
                                                                                   dtype=torch.float32)
        else:
            torch.manual_seed(seed)
            self.hf = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**model.cfg.to_hf()))
        self.hf.eval()
        cfg, layout, T = sweep.cfg, sweep.layout, sweep.feats.shape[0]
        self.batch, self.token_batch = sweep.plan.batch("spectrogram"), sweep.plan.batch("prefix")
        self.p_spec, self.p_tok = cfg.p_spec, cfg.p_tok
        self.rng = np.random.default_rng(seed)
        # Channel-major (C, T) as transformers reads features; only the utterance's T frames are perturbed.
        self.labels = sweep.seg.labels.transpose(0, 2, 1)  # (n_levels, C, T)
        self.feats, self.fill = sweep.feats.T, np.asarray(layout.fill, np.float32)[:, None]
        self.padded = np.full((sweep.feats.shape[1], sweep.plan.module.cfg.max_source_positions * 2),
                              layout.pad_value, np.float32)
        self.padded[:, :T] = self.feats
        self.T = T
        self.n_fixed = len(layout.prompt) - 1
        self.ids = torch.tensor([list(layout.prompt) + sweep.tokens[:-1]])  # (1, n_fixed + K)
        n_levels, self.K = self.labels.shape[0], len(sweep.tokens)
        S = int(sweep.seg.n_segments.max()) + 1
        self.spec_num, self.spec_den = torch.zeros(n_levels, S, self.K), torch.zeros(n_levels, S)
        self.pre_num, self.pre_den = torch.zeros(self.K, self.K), torch.zeros(self.K)
        with self._mode():
            enc = self.hf.model.encoder(torch.from_numpy(self.padded)[None])
            self.encoder_out = enc.last_hidden_state
            logits = self.hf(encoder_outputs=enc, decoder_input_ids=self.ids).logits
            self.log_p = torch.log_softmax(logits[0, self.n_fixed:].float(), -1)  # (K, V)
        self.spectrogram_step()  # first calls allocate; keep them out of the timing
        self.prefix_step()

    @contextlib.contextmanager
    def _mode(self):
        """no_grad, and bfloat16 autocast for a bfloat16 loop."""
        torch = self.torch
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            yield

    def _scores(self, logits):
        """(B, n_fixed + K, V) -> (B, K) KL(P || Q) of every explained token."""
        log_q = self.torch.log_softmax(logits[:, self.n_fixed:].float(), -1)
        return (self.log_p.exp() * (self.log_p - log_q)).sum(-1)

    def spectrogram_step(self):
        torch, B = self.torch, self.batch
        with self._mode():
            level = self.rng.integers(len(self.labels), size=B)
            keep = self.rng.random((B, self.spec_num.shape[1])) >= self.p_spec
            keep[:, 0] = True  # label 0 is no segment
            kept = np.take_along_axis(keep[:, None, :], self.labels[level].reshape(B, 1, -1), 2)
            kept = kept.reshape(B, *self.feats.shape).astype(np.float32)
            x = np.broadcast_to(self.padded, (B,) + self.padded.shape).copy()
            x[:, :, :self.T] = self.feats * kept + self.fill * (1.0 - kept)
            logits = self.hf(input_features=torch.from_numpy(x), decoder_input_ids=self.ids.expand(B, -1)).logits
            r = self._scores(logits)
            occluded = torch.from_numpy(1.0 - keep.astype(np.float32))
            lv = torch.from_numpy(level)
            self.spec_num.index_add_(0, lv, occluded[:, :, None] * r[:, None, :])
            self.spec_den.index_add_(0, lv, occluded)
        return self.spec_num

    def prefix_step(self):
        torch, B = self.torch, self.token_batch
        with self._mode():
            keep = torch.from_numpy((self.rng.random((B, self.K)) >= self.p_tok).astype(np.float32))
            mask = torch.cat([torch.ones(B, self.n_fixed), keep], 1)
            embeds = self.hf.model.decoder.embed_tokens(self.ids.expand(B, -1)) * mask[:, :, None]
            enc = (self.encoder_out.expand(B, -1, -1),)
            r = self._scores(self.hf(encoder_outputs=enc, decoder_inputs_embeds=embeds).logits)
            self.pre_num += r.T @ (1.0 - keep)
            self.pre_den += (1.0 - keep).sum(0)
        return self.pre_num

    def flops(self) -> tuple[float, float]:
        """FLOPs of one spectrogram step and one prefix step, counted with eager attention: the
        counter does not see the CPU's fused attention kernel, whose arithmetic is the same."""
        from torch.utils.flop_counter import FlopCounterMode

        timed = self.hf.config._attn_implementation
        self.hf.set_attn_implementation("eager")
        counts = []
        for step in (self.spectrogram_step, self.prefix_step):
            with FlopCounterMode(display=False) as counter:
                step()
            counts.append(float(counter.get_total_flops()))
        self.hf.set_attn_implementation(timed)
        return counts[0], counts[1]

    def encoder_only(self) -> Callable[[], object]:
        """The encoder alone on a batch of the unperturbed input, warmed up."""
        x = self.torch.from_numpy(np.broadcast_to(self.padded, (self.batch,) + self.padded.shape).copy())

        def run():
            with self._mode():
                return self.hf.model.encoder(x).last_hidden_state
        run()
        return run

    def matmul_call(self, n: int = 2048) -> tuple[Callable[[], object], float]:
        """An n x n matmul in torch in the loop's precision, ready to time, and its FLOPs."""
        dtype = getattr(self.torch, self.precision)
        a, b = self.torch.randn(n, n, dtype=dtype), self.torch.randn(n, n, dtype=dtype)
        return lambda: a @ b, 2.0 * n ** 3


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def alternate(calls: dict[str, Callable[[], object]], reps: int) -> dict[str, np.ndarray]:
    """Seconds of every call of ``calls``, timed in turn, ``reps`` times: (reps,) per name. Rep i of
    one call ran next to rep i of the others, so per-rep ratios see the same load on a shared machine."""
    times = {k: [] for k in calls}
    for fn in calls.values():  # untimed: whatever an earlier side's FLOP count made compile again
        _timed(fn)
    for _ in range(reps):
        for k, fn in calls.items():
            times[k].append(_timed(fn))
    return {k: np.array(v) for k, v in times.items()}


def summary(times: dict[str, np.ndarray], side: str, flops: tuple[float, float], batches: tuple[int, int],
            mm_flops: float) -> dict:
    """One side's masks/s (median) and fraction of its own matmul peak (median over reps, each rep
    against the peak measured next to it)."""
    row, paper_s = {}, 0.0
    for kind, f, n, n_paper in zip(("spec", "prefix"), flops, batches, PAPER_MASKS):
        t = times[f"{side}_{kind}"]
        row |= {f"{kind}_masks_per_s": n / float(np.median(t)), f"gflop_per_{kind}_mask": f / n / 1e9,
                f"{kind}_frac_of_peak": float(np.median((f / t) / (mm_flops / times[f"{side}_matmul"])))}
        paper_s += n_paper / row[f"{kind}_masks_per_s"]
    row["paper_sweep_s_at_these_rates"] = paper_s
    if f"{side}_encoder" in times:
        row["encoder_share"] = float(np.median(times[f"{side}_encoder"] / times[f"{side}_spec"]))
    return row


def versions(with_torch: bool) -> dict:
    import flax

    out = {"jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__}
    if with_torch:
        import torch
        import transformers

        out |= {"torch": torch.__version__, "transformers": transformers.__version__,
                "torch_threads": torch.get_num_threads()}
    return out


def baseline_available() -> str | None:
    """None when torch and transformers import, else why the baseline is skipped."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        return f"baseline skipped: {e.name} is not importable (see this script's docstring to install it)"
    return None


def log_p_agreement(name: str, sides: dict[str, object], tokens: list[int]) -> dict[str, dict]:
    """Per side, its unperturbed (K, V) log-probabilities against a float32 side with the same weights:
    the largest difference over the vocabulary, and over the explained tokens' own log-probabilities."""
    k, ids = np.arange(len(tokens)), np.asarray(tokens)

    def log_p(impl) -> np.ndarray:
        lp = impl.state.log_p[:len(tokens)] if isinstance(impl, JaxSweep) else impl.log_p.numpy()
        return np.asarray(lp, np.float32)

    def reference(side: str) -> str | None:
        same_weights = [s for s in sides if s.endswith("float32") and s != side
                        and (name == "tiny.en" or s.split()[0] == side.split()[0])]  # random weights: own init
        independent = [s for s in same_weights if s.split()[0] != side.split()[0]]
        return (independent or same_weights or [None])[0]

    out = {}
    for side, impl in sides.items():
        if (ref := reference(side)) is not None:
            diff = np.abs(log_p(impl) - log_p(sides[ref]))
            out[side] = {"log_p_vs": ref, "log_p_max_diff": float(diff.max()),
                         "token_log_p_max_diff": float(diff[k, ids].max())}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--models", nargs="+", default=["tiny.en", "base"], choices=["tiny.en", *SHAPES])
    ap.add_argument("--seconds", type=float, nargs="+", default=[None],
                    help="repeat the clip to these lengths (default: the 6.05 s clip as is)")
    ap.add_argument("--batch", type=int, default=2,
                    help="spectrogram masks per step (2: spes-jax's default for Whisper on a CPU)")
    ap.add_argument("--token-batch", type=int, default=32, help="prefix masks per step")
    ap.add_argument("--precision", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                    help="spes-jax's compute precision; several: one side each")
    ap.add_argument("--baseline-precision", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                    help="the baseline's: float32, or bfloat16 autocast; several: one side each")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side (after one untimed step)")
    ap.add_argument("--breakdown", action="store_true", help="also time each side's encoder alone")
    ap.add_argument("--full-sweep", action="store_true", help="time one N_X 20,000 + N_Y 2,000 explanation")
    ap.add_argument("--no-baseline", action="store_true", help="spes-jax only")
    ap.add_argument("--quick", action="store_true", help="CI-size: tiny.en, batch 2, token batch 8, one step")
    args = ap.parse_args()
    if args.quick:
        args.models, args.batch, args.token_batch, args.steps = ["tiny.en"], 2, 8, 1

    skipped = "baseline skipped: --no-baseline" if args.no_baseline else baseline_available()
    if skipped:
        print(skipped)
    print(f"device: {device_name()}", flush=True)
    rows = []
    for name in args.models:
        model = load_model(name)
        for seconds in args.seconds:
            feats, tokens, duration = utterance(model, seconds)
            sides, setup_s = {}, {}
            for precision in args.precision:
                t0 = time.perf_counter()
                cfg = SPESConfig.asr(batch_size=args.batch, token_batch_size=args.token_batch, precision=precision)
                sides[f"spes-jax {precision}"] = JaxSweep(model, cfg, feats, tokens)
                setup_s[f"spes-jax {precision}"] = time.perf_counter() - t0
            jx = next(iter(sides.values()))
            ours = list(sides)
            if not skipped:
                sides |= {f"transformers {p}": TorchLoop(name, model, jx, p) for p in args.baseline_precision}
            calls, matmul = {}, {}
            for side, impl in sides.items():
                matmul[side] = (matmul_call(getattr(jnp, side.split()[1])) if side in ours
                                else impl.matmul_call())
                calls |= {f"{side}_spec": impl.spectrogram_step, f"{side}_prefix": impl.prefix_step,
                          f"{side}_matmul": matmul[side][0]}
                if args.breakdown:
                    calls[f"{side}_encoder"] = impl.encoder_only()
            times = alternate(calls, args.steps)
            batches = (jx.plan.batch("spectrogram"), jx.plan.batch("prefix"))
            base = {"model": name, "seconds": round(duration, 2), "tokens": len(tokens),
                    "batch": batches[0], "token_batch": batches[1]}
            agreement = log_p_agreement(name, sides, tokens)
            new = []
            for side, impl in sides.items():
                mm_flops = matmul[side][1]
                row = {**base, "side": side, **summary(times, side, impl.flops(), batches, mm_flops),
                       "matmul_gflop_per_s": mm_flops / float(np.median(times[f"{side}_matmul"])) / 1e9,
                       **agreement.get(side, {})}
                if side in ours:
                    row["setup_s"] = setup_s[side]
                    for theirs in sides:  # per-rep ratios of neighbouring steps; equal batches on both sides
                        if theirs not in ours:
                            row |= {f"{kind}_speedup_vs_{theirs.split()[1]}":
                                    float(np.median(times[f"{theirs}_{kind}"] / times[f"{side}_{kind}"]))
                                    for kind in ("spec", "prefix")}
                    if args.full_sweep:
                        row["full_sweep_s"] = impl.full_sweep()
                new.append(row)
            print_table(new, list(dict.fromkeys(k for r in new for k in r)))
            print(flush=True)
            rows += new
    meta = {"device": device_name(), "versions": versions(not skipped), "baseline": skipped or "transformers",
            "clip": CLIP, "steps": args.steps}
    path = write_results("whisper_sweep", rows, meta)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
