"""SPES against its baselines and ablations on a corpus: the paper's Table 1 (deletion and size).

Every method explains the same hypotheses (the model's beam search output, decoded once) with the
paper's relative budgets: N_X 20,000 and N_Y 2,000, Bubble Noise N_X 1,000. ``budget_scale``
multiplies all of them by one factor so the comparison fits smaller machines. Each method's
explanations are written to ``<out_dir>/<method>.h5``; a rerun with the same model and settings
reuses them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from .._io import write_json, write_text
from ..explainer import explain
from ..config import SPESConfig
from ..errors import SpesError, count
from ..explanation import load_explanations, save_explanations
from ..manifest import Entry
from .metrics import default_scorer, higher_is_better, perturbation_curve, size_curve
from ..provenance import parameters_sha256, provenance, recorded_options

# name -> (file stem, how the method's config derives from SPES's)
METHODS: dict[str, tuple[str, Callable[[SPESConfig], SPESConfig]]] = {
    "SPES": ("spes", lambda c: c),
    "feature-wise": ("feature_wise", SPESConfig.feature_wise),
    "Bubble Noise": ("bubble_noise", SPESConfig.bubble_noise),
    "- multi-scale": ("no_multi_scale", SPESConfig.single_scale),
    "- clustering": ("no_clustering", SPESConfig.grid),
    "- duration adaptation": ("no_duration_adaptation", SPESConfig.fixed_k),
    "- KL": ("no_kl", SPESConfig.prob_diff),
}


def method_config(name: str, task: str, budget_scale: float = 1.0, seed: int = 0) -> SPESConfig:
    """The configuration of one Table 1 method for ``task`` ("asr" or "st"), budgets scaled."""
    if name not in METHODS:
        raise SpesError(f"unknown method {name!r}; choose from {list(METHODS)}")
    if not 0 < budget_scale <= 1:
        raise SpesError(f"--budget-scale must be in (0, 1], got {budget_scale}")
    base = SPESConfig.st(seed=seed) if task == "st" else SPESConfig.asr(seed=seed)
    cfg = METHODS[name][1](base)
    return cfg.replace(n_masks=max(cfg.n_levels, round(cfg.n_masks * budget_scale)),
                       n_token_masks=max(1, round(cfg.n_token_masks * budget_scale)))


@dataclass(frozen=True)
class MethodResult:
    method: str
    n_masks: int
    n_token_masks: int
    deletion_auc: float
    size_auc: float
    size_auc_prefix: float
    explain_seconds: float
    deletion: dict
    size: dict


def _log(msg: str) -> None:
    print(f"spes-jax: {msg}", file=sys.stderr, flush=True)


def compare(model, entries: list[Entry], task: str, out_dir: str, budget_scale: float = 1.0,
            methods: list[str] | None = None, seed: int = 0, progress: bool = True,
            batch_size: int | None = None, greedy: bool = False) -> dict:
    """Runs every method on ``entries``, measures deletion and size, writes results and the table.

    ``batch_size``: spectrogram masks per compiled step (default: the configuration's); it changes
    memory and speed, not the results. ``greedy``: deletion curves decode greedily (faster; the paper's
    use beam search).
    Returns the results as written to ``<out_dir>/results.json``.
    """
    from .plotting import plot_deletion_curves, plot_size_curves

    names = methods or list(METHODS)
    configs = {n: method_config(n, task, budget_scale, seed) for n in names}  # validates names first
    if batch_size is not None:
        configs = {n: c.replace(batch_size=batch_size) for n, c in configs.items()}
    if not entries:
        raise SpesError("the manifest lists no utterances")
    os.makedirs(out_dir, exist_ok=True)
    scorer = default_scorer(task)
    ids = [e.id for e in entries]
    audio = {e.id: e.audio for e in entries}
    refs = {e.id: e.reference for e in entries}
    model_sha256 = parameters_sha256(model.params)
    features = [model.features(e.audio) for e in entries]
    _log(f"decoding {count(len(entries), 'utterance')}")
    targets = [list(h[0].tokens) for h in model.decode(features)]
    results: list[MethodResult] = []
    curves = {}
    for name in names:
        cfg = configs[name]
        path = os.path.join(out_dir, METHODS[name][0] + ".h5")
        exps, seconds = _cached(path, cfg, ids, model_sha256, model.options)
        if exps is None:
            # the progress bar announces the mask counts itself
            _log(f"{name}: explaining" + ("" if progress else f" with N_X {cfg.n_masks}, N_Y {cfg.n_token_masks}"))
            start = time.perf_counter()
            exps = explain(model, features, cfg, ids=ids, targets=targets, progress=progress and name)
            seconds = time.perf_counter() - start
            attrs, exps = provenance(model, cfg, task, exps, [audio[i] for i in ids], seconds=seconds)
            save_explanations(path, exps, attrs)
        else:
            _log(f"{name}: reusing {path}")
        deletion = perturbation_curve(model, exps, audio, refs, "deletion", scorer, greedy=greedy, progress=progress)
        note = None if curves else deletion.baseline_note(refs)  # the same unperturbed output for every method
        if note:
            _log(f"note: {note}")
        size = size_curve(exps)
        curves[name] = (deletion, size)
        results.append(MethodResult(name, cfg.n_masks, cfg.n_token_masks, deletion.auc_fraction,
                                    size.auc, size.auc_prefix, seconds, deletion.to_dict(), size.to_dict()))
        _log(f"{name}: deletion AUC {deletion.auc_fraction:.2f}, size AUC {size.auc:.2f} ({seconds:.0f} s of explaining)")
    payload = {"task": task, "scorer": scorer, "search": "greedy" if greedy else "beam", "budget_scale": budget_scale,
               "seed": seed, "utterances": len(entries), "model": model.path,
               "deletion_higher_is_better": higher_is_better("deletion", scorer),
               "methods": [r.__dict__ for r in results]}
    write_json(os.path.join(out_dir, "results.json"), payload)
    write_text(os.path.join(out_dir, "table.md"), table(payload) + "\n")
    plot_deletion_curves({n: c[0] for n, c in curves.items()}, os.path.join(out_dir, "deletion.png"))
    plot_size_curves({n: c[1] for n, c in curves.items()}, os.path.join(out_dir, "size.png"))
    return payload


def _cached(path: str, cfg: SPESConfig, ids: list[str], model_sha256: str, options: dict):
    """Explanations already in ``path`` for this exact model (parameter hash and loading options),
    configuration (batch sizes aside: they change speed and memory, not the maps) and utterance set,
    else None."""
    import h5py

    def maps_config(c: SPESConfig) -> SPESConfig:
        return c.replace(batch_size=None, token_batch_size=None)

    if not os.path.isfile(path):
        return None, 0.0
    with h5py.File(path, "r") as f:
        try:
            recorded = maps_config(SPESConfig.from_json(f.attrs.get("config", "")))
        except (TypeError, ValueError, KeyError):  # no or another version's configuration: explain again
            recorded = None
        same = (recorded == maps_config(cfg) and f.attrs.get("model_sha256") == model_sha256
                and recorded_options(f.attrs) == options and sorted(f.keys()) == sorted(ids))
        seconds = float(f.attrs.get("seconds", 0.0))
    if not same:
        return None, 0.0
    exps = load_explanations(path)
    return [exps[i] for i in ids], seconds


def _deletion_label(payload: dict) -> str:
    """'deletion (WER) ↑' or 'deletion (BLEU) ↓': the score and which direction is more faithful."""
    metric = "WER" if payload["scorer"].startswith("wer") else "BLEU"
    return f"deletion ({metric}) {'↑' if payload['deletion_higher_is_better'] else '↓'}"


def paper_table(payloads: list[dict]) -> str:
    """Several tasks side by side, as the paper's Table 1: one row per method, deletion and size per task."""
    head = "| method | " + " | ".join(
        f"{p['task'].upper()} {_deletion_label(p)} | {p['task'].upper()} size ↓" for p in payloads) + " |"
    lines = [head, "|---|" + "---|---|" * len(payloads)]
    names = [m["method"] for m in payloads[0]["methods"]]
    for name in names:
        cells = []
        for p in payloads:
            r = next((m for m in p["methods"] if m["method"] == name), None)
            cells += [f"{r['deletion_auc']:.2f}", f"{r['size_auc']:.2f}"] if r else ["", ""]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(payload: dict) -> str:
    """The paper's Table 1 layout as Markdown."""
    search = {"greedy": ", decoded greedily", "beam": ", decoded with beam search"}.get(payload.get("search"), "")
    caption = (f"{payload['task'].upper()}, {count(payload['utterances'], 'utterance')}, budget scale "
               f"{payload['budget_scale']:g} (N_X, N_Y per method below), deletion scored with {payload['scorer']}"
               f"{search}; "
               "AUCs on the paper's scale (deletion over the fraction deleted, size over thresholds 0..1)")
    lines = [caption, "",
             f"| method | {_deletion_label(payload)} | size ↓ | N_X | N_Y | explain time (s) |",
             "|---|---|---|---|---|---|"]
    for r in payload["methods"]:
        lines.append(f"| {r['method']} | {r['deletion_auc']:.2f} | {r['size_auc']:.2f} | {r['n_masks']} | "
                     f"{r['n_token_masks']} | {r['explain_seconds']:.0f} |")
    return "\n".join(lines)
