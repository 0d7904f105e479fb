"""How many masks a SPES map needs: convergence of each sampler to a large-budget ground truth.

    python benchmarks/convergence.py prepare [--asr 10 --st 5]       # host: synthesise, decode, SLIC (espeak-ng)
    python benchmarks/convergence.py run [--truth 100000] [--budgets 500 1000 2000 5000 10000 20000] [--seeds 3]
    python benchmarks/convergence.py plot                               # docs/figures/convergence.png
    python benchmarks/convergence.py real --model whisper-tiny.en/ --audio a.wav [...]   # any model, real audio

``prepare`` stores held-out utterances of the embedded models (features, the model's hypothesis,
the reference text, the SLIC labels) in .bench/convergence_inputs.npz, so ``run`` needs neither
espeak-ng nor the host segmentation and gives the same inputs on any machine.

``run``, per utterance: the ground truth is the reference sampler's map at ``--truth`` masks, as the
mean of two independent halves (seeds 1000 and 1001); the halves' per-token correlation, through the
Spearman-Brown formula, says how close the truth itself is to the limit. Then for every sampler and
seed one sweep of max(budgets) masks, with the maps taken at each budget on the way (levels are
interleaved, so the first N masks of a sweep are exactly an N-mask sweep's masks): per-token Pearson
r and relative L2 error against the truth (spectrogram maps over the valid frames; prefix maps over
the causal cells of tokens 3..K), the online split-half estimate at the same point, and the masks
each sampler needs for mean r 0.9 / 0.95 (log-linear interpolation). ``--until-r`` runs measure what
the convergence-driven budget spends and reaches. Deletion and size AUC of both samplers' maps at
``--auc-budget`` masks (one seed). Timing: masks/s of each sampler's compiled step.

``real``: the same questions for any model on real audio where a ground truth is too costly (on a
CPU, a Whisper mask is a 30 s encoder pass): per clip and seed one sweep of max(budgets) spectrogram
and max(token budgets) prefix masks of the model's own hypothesis, and at each budget on the way the
online split-half estimate (per token, and the mean ``--until-r`` compares, so the budget at which
``--until-r`` would stop is read off the curve) and the per-token Pearson r between the seeds' maps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import device_name, print_table

from spes_jax import SPESConfig, core, load_model
from spes_jax.driver import params_on_devices
from spes_jax.explainer import explanation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUTS = os.path.join(ROOT, ".bench", "convergence_inputs.npz")
RESULTS = os.path.join(ROOT, "benchmarks", "results", "convergence.json")
SAMPLERS = ("reference", "orthogonal")


def config(task: str, **kw) -> SPESConfig:
    return (SPESConfig.st if task == "st" else SPESConfig.asr)(**kw)


# ------------------------------------------------------------------------------------------- prepare

def prepare(args) -> None:
    from spes_jax.core import segment
    from spes_jax.training.data import build

    test = build(0, max(args.asr, args.st))[1]
    out = {}
    for task, n in (("asr", args.asr), ("st", args.st)):
        model = load_model(task)
        for u in test[:n]:
            feats = u.features.astype(np.float32)
            hyp = model.decode([feats])[0][0]
            key = f"{task}/{u.id}"
            out[key + "/features"] = feats
            out[key + "/tokens"] = np.asarray(hyp.tokens, np.int32)
            out[key + "/labels"] = segment(feats, config(task)).labels
            out[key + "/reference"] = np.asarray(u.en if task == "asr" else u.de)
            print(f"{key}: {feats.shape[0]} frames, {len(hyp.tokens)} tokens: {hyp.text}", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out}")


def load_inputs(path: str) -> list[dict]:
    data = np.load(path)
    utts: dict[tuple[str, str], dict] = {}
    for name in data.files:
        task, uid, field = name.split("/")
        utts.setdefault((task, uid), {"task": task, "id": uid})[field] = data[name]
    return list(utts.values())


# ----------------------------------------------------------------------------------------------- run

class Utterance:
    """One prepared utterance on the device, with its model's plan for any sampler/seed."""

    def __init__(self, u: dict, model, batch: int, token_batch: int):
        self.u, self.model, self.task = u, model, u["task"]
        self.K, self.T = len(u["tokens"]), u["features"].shape[0]
        self.seg = core.Segmentation(u["labels"], u["labels"].reshape(u["labels"].shape[0], -1).max(1), ())
        self.batch, self.token_batch = batch, token_batch

    def sweep(self, sampler: str, seed: int, n_masks: int, n_token_masks: int, until_r: float | None = None):
        cfg = config(self.task, n_masks=n_masks, n_token_masks=n_token_masks, seed=seed, sampler=sampler,
                     batch_size=self.batch, token_batch_size=self.token_batch, until_r=until_r)
        plan = core.make_plan(self.model.module, cfg, jax.devices()[:1])
        inputs = core.prepare(self.u["features"], list(self.u["tokens"]), self.seg, self.u["id"], cfg, plan)
        return cfg, plan, core.init(params_on_devices(self.model, plan), inputs, plan=plan)

    def truth(self, n: int) -> tuple[jax.Array, jax.Array, dict]:
        """Mean of two independent reference-sampler maps of n/2 masks each, and their agreement."""
        halves = []
        for seed in (1000, 1001):
            cfg, plan, state = self.sweep("reference", seed, n // 2, n // 20)
            res = core.run(state, plan, cfg)
            halves.append((res.spectrogram, res.prefix))
        spec = (halves[0][0] + halves[1][0]) / 2
        pre = (halves[0][1] + halves[1][1]) / 2
        agree = self.metrics(halves[0][0], halves[0][1], halves[1][0], halves[1][1])
        return spec, pre, {"halves_r_spec": agree["r_spec"], "halves_r_prefix": agree["r_prefix"]}

    def metrics(self, spec, pre, truth_spec, truth_pre) -> dict:
        r_s, e_s = _token_metrics(spec[: self.K, : self.T].reshape(self.K, -1),
                                  truth_spec[: self.K, : self.T].reshape(self.K, -1))
        # prefix maps: token k has k + 1 causal cells; tokens with >= 3 of them
        K = self.K
        idx = jnp.arange(K)
        w = (idx[None, :] <= idx[:, None]).astype(jnp.float32)
        r_p, e_p = _token_metrics(pre[:K, :K], truth_pre[:K, :K], w)
        keep_p = np.arange(K) >= 2
        return {"r_spec": _mean(r_s), "err_spec": _mean(e_s),
                "r_prefix": _mean(np.where(keep_p, r_p, np.nan)), "err_prefix": _mean(np.where(keep_p, e_p, np.nan))}


@jax.jit
def _token_metrics_jit(a, b, w):
    n = w.sum(-1, keepdims=True)
    ca = a - (a * w).sum(-1, keepdims=True) / n
    cb = b - (b * w).sum(-1, keepdims=True) / n
    sab, saa, sbb = (ca * cb * w).sum(-1), (ca * ca * w).sum(-1), (cb * cb * w).sum(-1)
    r = jnp.where((saa > 0) & (sbb > 0), sab / jnp.sqrt(jnp.maximum(saa * sbb, 1e-30)), jnp.nan)
    err = jnp.sqrt((((a - b) ** 2) * w).sum(-1)) / jnp.sqrt(((b ** 2) * w).sum(-1))
    return r, jnp.where(sbb > 0, err, jnp.nan)


def _token_metrics(a, b, w=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-row Pearson r and relative L2 error of a against b (NaN where b's row is constant)."""
    w = jnp.ones_like(b) if w is None else w
    r, e = jax.device_get(_token_metrics_jit(a, b, w))
    return np.asarray(r), np.asarray(e)


def _mean(x) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def _at_budgets(state, plan, step_fn, batch: int, budgets: list[int]):
    """Runs ``step_fn`` steps of ``batch`` masks; at each budget yields (masks so far, state, the maps
    (spectrogram, prefix), the online estimates (spectrogram (L,), prefix ()))."""
    done = 0
    for n in sorted(budgets):
        for i in range(done // batch, -(-n // batch)):
            state = step_fn(state, np.int32(i), plan=plan)
        done = max(done, -(-n // batch) * batch)
        maps, est = core.finalize(state, plan=plan), jax.device_get(core.split_half_r(state, plan=plan))
        yield done, state, (maps["spectrogram"], maps["prefix"]), (est["spectrogram"][0], est["prefix"][0])


def snapshots(utt: Utterance, sampler: str, seed: int, budgets: list[int], n_token: int, truth) -> list[dict]:
    """One sweep of max(budgets) masks; metrics and the online estimate at every budget on the way."""
    cfg, plan, state = utt.sweep(sampler, seed, max(budgets), n_token)
    rows = []
    t0 = time.perf_counter()
    batch = plan.batch("spectrogram")
    for done, state, (spec, _), (est, _) in _at_budgets(state, plan, core.spectrogram_step, batch, budgets):
        m = utt.metrics(spec, truth[1], truth[0], truth[1])
        rows.append({"sampler": sampler, "seed": seed, "n": done, "r_spec": m["r_spec"], "err_spec": m["err_spec"],
                     "estimated_r_spec": float(np.mean(est[: utt.K]))})
    jax.block_until_ready(state.spectrogram.num)
    rows[-1]["seconds"] = time.perf_counter() - t0
    return rows


def prefix_snapshots(utt: Utterance, seed: int, budgets: list[int], truth) -> list[dict]:
    cfg, plan, state = utt.sweep("reference", seed, 0, max(budgets))
    rows = []
    for done, state, (_, pre), (_, est) in _at_budgets(state, plan, core.prefix_step, plan.batch("prefix"), budgets):
        m = utt.metrics(truth[0], pre, truth[0], truth[1])
        rows.append({"seed": seed, "n_token": done, "r_prefix": m["r_prefix"], "err_prefix": m["err_prefix"],
                     "estimated_r_prefix": float(est)})
    return rows


def masks_for(rows: list[dict], target: float, key: str = "r_spec", n_key: str = "n") -> float:
    """Masks at which the mean curve first reaches ``target`` (log-linear interpolation); NaN if never."""
    by_n: dict[int, list[float]] = {}
    for r in rows:
        by_n.setdefault(r[n_key], []).append(r[key])
    ns = sorted(by_n)
    ys = [float(np.nanmean(by_n[n])) for n in ns]
    for (n0, y0), (n1, y1) in zip(zip(ns, ys), zip(ns[1:], ys[1:])):
        if y0 >= target:
            return float(n0)
        if y1 >= target:
            return float(np.exp(np.log(n0) + (target - y0) / (y1 - y0) * (np.log(n1) - np.log(n0))))
    return float(ns[0]) if ys and ys[0] >= target else float("nan")


def timing(utt: Utterance, reps: int = 5) -> dict:
    out = {}
    for sampler in SAMPLERS:
        cfg, plan, state = utt.sweep(sampler, 0, 10 ** 6, 0)
        state = core.spectrogram_step(state, np.int32(0), plan=plan)
        jax.block_until_ready(state.spectrogram.num)
        t = time.perf_counter()
        for i in range(1, reps + 1):
            state = core.spectrogram_step(state, np.int32(i), plan=plan)
        jax.block_until_ready(state.spectrogram.num)
        out[sampler] = reps * plan.batch("spectrogram") / (time.perf_counter() - t)
    return out


def auc_rows(utts: list[Utterance], models: dict, n: int, step: int) -> list[dict]:
    from spes_jax.analysis.metrics import default_scorer, perturbation_curve, size_curve

    rows = []
    for task in sorted({u.task for u in utts}):
        group = [u for u in utts if u.task == task]
        for sampler in SAMPLERS:
            exps = []
            for u in group:
                cfg, plan, state = u.sweep(sampler, 1, n, 0)
                exps.append(explanation(u.model, u.u["id"], list(u.u["tokens"]), u.T, u.seg, cfg,
                                        core.run(state, plan, cfg)))
            curve = perturbation_curve(models[task], exps, {u.u["id"]: u.u["features"] for u in group},
                                       {u.u["id"]: str(u.u["reference"]) for u in group},
                                       scorer=default_scorer(task), step=step)
            rows.append({"task": task, "sampler": sampler, "n": n, "deletion_auc": curve.auc_fraction,
                         "size_auc": size_curve(exps, step).auc})
            print_table(rows[-1:], list(rows[-1]))
    return rows


def run(args) -> None:
    utts_raw = load_inputs(args.inputs)
    # round robin over the tasks, so that a time limit leaves both models represented
    rank = {id(u): i for task in {u["task"] for u in utts_raw}
            for i, u in enumerate(x for x in utts_raw if x["task"] == task)}
    utts_raw.sort(key=lambda u: (rank[id(u)], u["task"]))
    models = {task: load_model(task) for task in sorted({u["task"] for u in utts_raw})}
    utts = [Utterance(u, models[u["task"]], args.batch, args.token_batch) for u in utts_raw]
    print(f"device: {device_name()}; {len(utts)} utterances; truth {args.truth} masks; budgets {args.budgets}; "
          f"{args.seeds} seeds", flush=True)
    t_start = time.perf_counter()
    result = {"meta": {"device": device_name(), "truth": args.truth, "budgets": args.budgets, "seeds": args.seeds,
                       "token_budgets": args.token_budgets, "until_r": args.until_r, "batch": args.batch},
              "utterances": [], "timing": timing(utts[0])}
    print(f"spectrogram masks/s ({utts[0].task}): {result['timing']}", flush=True)
    for utt in utts:
        if time.perf_counter() - t_start > args.max_seconds:
            print(f"time limit: stopped before {utt.u['id']}", flush=True)
            break
        t = time.perf_counter()
        spec, pre, agree = utt.truth(args.truth)
        truth = (spec, pre)
        rec = {"task": utt.task, "id": str(utt.u["id"]), "K": utt.K, "T": utt.T,
               "segments": [int(x) for x in utt.seg.n_segments], **agree, "rows": [], "prefix_rows": [], "until": []}
        for sampler in SAMPLERS:
            for seed in range(1, args.seeds + 1):
                rec["rows"] += snapshots(utt, sampler, seed, args.budgets, 0, truth)
        for seed in range(1, args.seeds + 1):
            rec["prefix_rows"] += prefix_snapshots(utt, seed, args.token_budgets, truth)
        for sampler in SAMPLERS:
            cfg, plan, state = utt.sweep(sampler, 7, max(args.budgets), max(args.token_budgets), args.until_r)
            res = core.run(state, plan, cfg)
            m = utt.metrics(res.spectrogram, res.prefix, spec, pre)
            rec["until"].append({"sampler": sampler, "n": res.n_masks["spectrogram"], "n_token": res.n_masks["prefix"],
                                 "r_spec": m["r_spec"], "r_prefix": m["r_prefix"],
                                 "estimated_r_spec": float(np.mean(np.asarray(res.r["spectrogram"])[: utt.K]))})
        result["utterances"].append(rec)
        last = {s: [r for r in rec["rows"] if r["sampler"] == s and r["n"] == rec["rows"][-1]["n"]] for s in SAMPLERS}
        print(f"{utt.task}/{utt.u['id']} ({time.perf_counter() - t:.0f} s): truth halves r {agree['halves_r_spec']:.3f}; "
              + "; ".join(f"{s} r@{max(args.budgets)} {np.mean([r['r_spec'] for r in v]):.3f}" for s, v in last.items()),
              flush=True)
        _write(result)
    if args.auc_budget and time.perf_counter() - t_start < args.max_seconds:
        result["auc"] = auc_rows(utts, models, args.auc_budget, args.auc_step)
    result["summary"] = summarise(result)
    _write(result)
    print(json.dumps(result["summary"], indent=1))


def real(args) -> None:
    from spes_jax.inputs import input_features

    model = load_model(args.model)
    budgets, token_budgets = sorted(args.budgets), sorted(args.token_budgets)
    result = {"meta": {"device": device_name(), "model": args.model, "budgets": budgets,
                       "token_budgets": token_budgets, "seeds": args.seeds, "precision": args.precision},
              "utterances": []}
    for path in args.audio:
        base = model.sweep_config(SPESConfig.asr(n_masks=budgets[-1], n_token_masks=token_budgets[-1],
                                                 precision=args.precision))
        feats = input_features(model, path, base, path)
        tokens = list(model.decode([feats])[0][0].tokens)
        K, T = len(tokens), feats.shape[0]
        seg = core.segment(feats, base)
        maps, rows = {}, []
        for seed in args.seeds:
            cfg = base.replace(seed=seed)
            plan = core.make_plan(model.module, cfg, jax.devices()[:1])
            inputs = core.prepare(feats, tokens, seg, os.path.basename(path), cfg, plan, layout=model.layout(feats))
            state = core.init(params_on_devices(model, plan), inputs, plan=plan)
            t0 = time.perf_counter()
            for part, step, ns in (("spectrogram", core.spectrogram_step, budgets),
                                   ("prefix", core.prefix_step, token_budgets)):
                batch, done = plan.batch(part), 0
                for n in ns:
                    for i in range(done // batch, -(-n // batch)):
                        state = step(state, np.int32(i), plan=plan)
                    done = max(done, -(-n // batch) * batch)
                    est = jax.device_get(core.split_half_r(state, plan=plan))[part]
                    maps[part, seed, n] = np.asarray(core.finalize(state, plan=plan)[part])
                    rows.append({"seed": seed, "part": part, "n": done, "seconds": time.perf_counter() - t0,
                                 "estimated_r": float(est[1]),  # per token where the part has rows (the prefix map: one)
                                 "estimated_r_tokens": np.atleast_1d(est[0])[:K].tolist()})
                    print(f"{os.path.basename(path)} seed {seed} {part} {done}: estimated r {float(est[1]):.3f} "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)
        agree = []
        for part, ns in (("spectrogram", budgets), ("prefix", token_budgets)):
            for n in ns:
                a, b = (maps[part, s, n] for s in args.seeds[:2])
                if part == "spectrogram":
                    r, _ = _token_metrics(a[:K, :T].reshape(K, -1), b[:K, :T].reshape(K, -1))
                else:  # token k's causal cells; tokens with >= 3 of them
                    w = (np.arange(K)[None, :] <= np.arange(K)[:, None]).astype(np.float32)
                    r, _ = _token_metrics(a[:K, :K], b[:K, :K], w)
                    r = np.where(np.arange(K) >= 2, r, np.nan)
                agree.append({"part": part, "n": n, "seeds_r": _mean(r)})
                print(f"{os.path.basename(path)} {part} {n}: r between seeds {_mean(r):.3f}", flush=True)
        result["utterances"].append({"audio": path, "K": K, "T": T, "text": model.tokenizer.decode(tokens),
                                     "segments": [int(x) for x in seg.n_segments], "rows": rows, "seeds": agree})
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


def auc_only(args) -> None:
    raw = load_inputs(args.inputs)
    raw = [u for u in raw if u["task"] == "asr"][: args.asr] + [u for u in raw if u["task"] == "st"][: args.st]
    models = {task: load_model(task) for task in sorted({u["task"] for u in raw})}
    utts = [Utterance(u, models[u["task"]], args.batch, args.batch) for u in raw]
    rows = auc_rows(utts, models, args.auc_budget, args.auc_step)
    with open(args.out, "w") as f:
        json.dump({"device": device_name(), "ids": [f"{u.task}/{u.u['id']}" for u in utts], "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")


def _write(result: dict) -> None:
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    tmp = RESULTS + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, RESULTS)
    if os.environ.get("OUT"):  # device runs: results also go to the returned folder
        with open(os.path.join(os.environ["OUT"], "convergence.json"), "w") as f:
            json.dump(result, f, indent=1)


def summarise(result: dict) -> dict:
    out = {}
    for task in sorted({u["task"] for u in result["utterances"]}):
        us = [u for u in result["utterances"] if u["task"] == task]
        s = {"utterances": len(us), "truth_halves_r_spec": _mean([u["halves_r_spec"] for u in us]),
             "truth_r_with_limit_spec": _mean([np.sqrt(2 * u["halves_r_spec"] / (1 + u["halves_r_spec"])) for u in us])}
        for sampler in SAMPLERS:
            rows = [r for u in us for r in u["rows"] if r["sampler"] == sampler]
            by_n = sorted({r["n"] for r in rows})
            s[sampler] = {
                "curve": [{"n": n, **{k: _mean([r[k] for r in rows if r["n"] == n])
                                      for k in ("r_spec", "err_spec", "estimated_r_spec")}} for n in by_n],
                "masks_for_r0.9": masks_for(rows, 0.9), "masks_for_r0.95": masks_for(rows, 0.95),
                "masks_for_r0.8": masks_for(rows, 0.8)}
            until = [x for u in us for x in u["until"] if x["sampler"] == sampler]
            s[sampler]["until_r"] = {"mean_masks": _mean([x["n"] for x in until]),
                                     "mean_r_spec": _mean([x["r_spec"] for x in until]),
                                     "min_r_spec": float(np.nanmin([x["r_spec"] for x in until])) if until else None,
                                     "mean_token_masks": _mean([x["n_token"] for x in until]),
                                     "mean_r_prefix": _mean([x["r_prefix"] for x in until])}
        pre = [r for u in us for r in u["prefix_rows"]]
        s["prefix"] = {"curve": [{"n_token": n, **{k: _mean([r[k] for r in pre if r["n_token"] == n])
                                                   for k in ("r_prefix", "err_prefix", "estimated_r_prefix")}}
                                 for n in sorted({r["n_token"] for r in pre})]}
        out[task] = s
    return out


def plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(RESULTS) as f:
        summary = json.load(f)["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for task, style in zip(sorted(summary), ("-", "--")):
        for sampler, colour in zip(SAMPLERS, ("C0", "C3")):
            c = summary[task][sampler]["curve"]
            n = [x["n"] for x in c]
            axes[0].plot(n, [x["r_spec"] for x in c], style, color=colour, marker="o", ms=3, label=f"{task} {sampler}")
            axes[0].plot(n, [x["estimated_r_spec"] for x in c], style, color=colour, alpha=0.35)
            axes[1].plot(n, [x["err_spec"] for x in c], style, color=colour, marker="o", ms=3, label=f"{task} {sampler}")
    for ax, label in zip(axes, ("mean per-token Pearson r with the truth\n(faint: online split-half estimate)",
                                "mean relative L2 error")):
        ax.set_xscale("log")
        ax.set_xlabel("spectrogram masks N_X")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--asr", type=int, default=10)
    p.add_argument("--st", type=int, default=5)
    p.add_argument("--out", default=INPUTS)
    p.set_defaults(func=prepare)
    r = sub.add_parser("run")
    r.add_argument("--inputs", default=INPUTS)
    r.add_argument("--truth", type=int, default=100000)
    r.add_argument("--budgets", type=int, nargs="+", default=[500, 1000, 2000, 5000, 10000, 20000])
    r.add_argument("--token-budgets", type=int, nargs="+", default=[100, 200, 500, 1000, 2000])
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--until-r", type=float, default=0.9)
    r.add_argument("--auc-budget", type=int, default=2000)
    r.add_argument("--auc-step", type=int, default=5)
    r.add_argument("--batch", type=int, default=500, help="spectrogram masks per step (a divisor of the budgets)")
    r.add_argument("--token-batch", type=int, default=100)
    r.add_argument("--max-seconds", type=float, default=float("inf"), help="start no new utterance after this")
    r.set_defaults(func=run)
    a = sub.add_parser("auc", help="only the deletion / size AUC part (e.g. on a CPU), for the first utterances")
    a.add_argument("--inputs", default=INPUTS)
    a.add_argument("--asr", type=int, default=6)
    a.add_argument("--st", type=int, default=5)
    a.add_argument("--auc-budget", type=int, default=2000)
    a.add_argument("--auc-step", type=int, default=5)
    a.add_argument("--batch", type=int, default=100)
    a.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "convergence_auc.json"))
    a.set_defaults(func=auc_only)
    e = sub.add_parser("real", help="split-half estimate and seed agreement of any model on real audio")
    e.add_argument("--model", required=True)
    e.add_argument("--audio", nargs="+", required=True)
    e.add_argument("--budgets", type=int, nargs="+", default=[1000, 2000, 4000, 6000])
    e.add_argument("--token-budgets", type=int, nargs="+", default=[200, 600, 2000])
    e.add_argument("--seeds", type=int, nargs=2, default=[0, 1])
    e.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    e.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "convergence_real.json"))
    e.set_defaults(func=real)
    g = sub.add_parser("plot")
    g.add_argument("--out", default=os.path.join(ROOT, "docs", "figures", "convergence.png"))
    g.set_defaults(func=plot)
    args = ap.parse_args()
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
