"""The host driver of every sweep kind: parameters on the plan's devices, host work one utterance
ahead, the compiled sweep (``core.engine``), and the progress bar.

``explain``, ``explain_contrastive``, ``explain_encoder`` and corpus runs differ only in what they
prepare per utterance (``core.sweep.prepare`` and its counterparts) and in what they make of a
result; the rest is here:

    for swept in sweeps(model, plan, items, prepare, n_masks, until_r=..., progress="SPES"):
        package(swept.item, swept.host, swept.result)

The progress bar counts masks the device has finished (``core.pacing.StepQueue``), loses the masks
an early stop (``until_r``) did not run, and is closed however the loop ends (an error, Ctrl-C in
Python, or a caller that stops iterating). The command line's Ctrl-C handling is ``cli.main``'s.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Callable, Generic, Iterable, Iterator, Sequence, TypeVar

import jax

from .core import engine
from .core.engine import SweepPlan, SweepResult
from .core.segmentation import prefetch
from .errors import count
from .speech_model import SpeechToTextModel

Item = TypeVar("Item")


def params_on_devices(model: SpeechToTextModel, plan: SweepPlan):
    """The model's (float32) parameters, replicated on the plan's devices."""
    return jax.device_put(model.params, plan.replicated)


def sweep_one(plan: SweepPlan, params, inputs, n_masks: Sequence[int], *, until_r: float | None = None,
              progress: Callable[[int], None] | None = None) -> SweepResult:
    """One prepared utterance through the engine: ``init``, then ``run`` (one mask count per part)."""
    return engine.run(engine.init(params, inputs, plan=plan), plan, n_masks, until_r=until_r, progress=progress)


@dataclasses.dataclass(frozen=True)
class Swept(Generic[Item]):
    """One swept utterance: the caller's item, what ``prepare`` kept for it on the host, the result,
    and the seconds from dispatching its first step to its maps being computed."""

    item: Item
    host: Any
    result: SweepResult
    seconds: float


def sweeps(model: SpeechToTextModel, plan: SweepPlan, items: Iterable[Item],
           prepare: Callable[[Item], tuple[Any, Any]], n_masks: Sequence[int], *, until_r: float | None = None,
           progress: str | None = None, n_items: int | None = None) -> Iterator[Swept[Item]]:
    """Sweeps each item in order, one plan (one compilation per bucket) for all.

    prepare(item) -> (inputs, host): the padded inputs on the plan's devices and whatever the caller
    needs again to package the result (e.g. the segmentation); it runs one item ahead in a background
    thread. n_masks: the configured masks of each of the probe's parts (the maximum with ``until_r``).
    progress: the bar's name, or None for no bar; it is announced with ``n_items`` (default:
    ``len(items)``) once the sweeps start.
    """
    params = params_on_devices(model, plan)
    bar = _bar(progress, plan, n_masks, len(items) if n_items is None else n_items) if progress else None
    try:
        for item, (inputs, host) in prefetch(lambda it: (it, prepare(it)), items):
            start = time.perf_counter()
            result = sweep_one(plan, params, inputs, n_masks, until_r=until_r, progress=bar.update if bar else None)
            jax.block_until_ready(result.outputs)
            if bar:  # masks an early stop did not run leave the total
                bar.total -= sum(n_masks) - sum(result.n_masks.values())
            yield Swept(item, host, result, time.perf_counter() - start)
    finally:
        if bar:
            bar.close()


def progress_bar(name: str, total: int, unit: str, what: str):
    """A progress bar on stderr named ``name``, announced by one line ``name: what``."""
    from tqdm import tqdm

    tqdm.write(f"{name}: {what}", file=sys.stderr)
    return tqdm(total=total, unit=unit, desc=name, dynamic_ncols=True)


def _bar(name: str, plan: SweepPlan, n_masks: Sequence[int], n_items: int):
    masks = " and ".join(f"{n} {part}" for n, part in zip(n_masks, plan.probe.parts))
    return progress_bar(name, n_items * sum(n_masks), "mask", f"{count(n_items, 'utterance')}, {masks} masks each, "
                        f"on {plan.mesh.devices.flat[0].platform}")
