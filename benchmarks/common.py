"""Shared helpers for the benchmark scripts: timing, XLA FLOP counts, a same-run matmul peak."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import platform
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from spes_jax.models import layers
from spes_jax.models.layers import matmul


def _cpu_model() -> str:
    """The host CPU's model name and its bfloat16 matmul units (AMD EPYCs and Intel Xeons with AMX
    run XLA's GEMMs at very different rates)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = [line.split(":", 1) for line in f if ":" in line]
    except OSError:
        info = []
    names = [v.strip() for k, v in info if k.strip() == "model name"]
    flags = next((v.split() for k, v in info if k.strip() == "flags"), [])
    units = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return " ".join([names[0] if names else platform.processor() or platform.machine()] + units)


def device_name() -> str:
    d = jax.devices()[0]
    kind = getattr(d, "device_kind", d.platform)
    return f"{d.platform}:{kind} x{jax.device_count()} ({_cpu_model()}, {os.cpu_count()} cpus)"


def time_call(fn: Callable[[], Any], min_time: float = 2.0, min_reps: int = 3) -> float:
    """Median seconds per call after one warm-up call; runs for at least ``min_time`` seconds."""
    jax.block_until_ready(fn())
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def compiled_flops(fn, *args, **kwargs) -> float:
    """FLOPs of one call of ``fn`` (a jitted function, or a traceable one whose keyword arguments are
    static) according to XLA's cost analysis of the lowered program (no second compile: on an
    accelerator a compile of the paper-size step costs more than timing it). On GPUs only the
    compiled program has one, and it leaves out library GEMM calls: count on the CPU backend there.

    On a CPU the models' long attention runs block by block in a loop (``layers.tiled_attention``),
    whose body the cost analysis counts once: the count is of the dense form (the same arithmetic),
    traced afresh. JAX's caches are cleared around it, so compiled functions compile again on their
    next call: count before warming up what is timed."""
    jax.clear_caches()
    with _dense_attention():
        jitted = fn if hasattr(fn, "lower") else jax.jit(functools.partial(fn, **kwargs))
        lowered = jitted.lower(*args, **kwargs) if jitted is fn else jitted.lower(*args)
        cost = lowered.cost_analysis() or lowered.compile().cost_analysis()  # GPU: only the compiled one
    jax.clear_caches()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


@contextlib.contextmanager
def _dense_attention():
    saved, layers._TILE_BYTES = layers._TILE_BYTES, math.inf
    try:
        yield
    finally:
        layers._TILE_BYTES = saved


def matmul_call(dtype=jnp.float32, n: int | None = None) -> tuple[Callable[[], jax.Array], float]:
    """A large square matmul on the default device, compiled, ready to time; and its FLOPs. Operands
    in ``dtype``, accumulated in float32, as every dot of the models (``models.layers.matmul``): on
    XLA:CPU a bfloat16 dot with a bfloat16 result runs as a float32 dot between converts, so that
    would understate the bfloat16 rate the models get."""
    if n is None:
        n = 2048 if jax.devices()[0].platform == "cpu" else 8192
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
    f = jax.jit(lambda x, y: matmul("ij,jk->ik", x, y, dtype))
    jax.block_until_ready(f(a, b))
    return lambda: f(a, b), 2.0 * n ** 3


def matmul_peak(dtype=jnp.float32, n: int | None = None) -> float:
    """Achieved FLOP/s of a large square matmul on the default device, measured now."""
    fn, flops = matmul_call(dtype, n)
    return flops / time_call(fn)


def write_results(name: str, rows: list[dict], meta: dict) -> str:
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(w) for c, w in zip(columns, widths)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)
