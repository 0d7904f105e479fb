"""JAX's persistent compilation cache: a second run (command line or Python) reuses compiled executables."""

from __future__ import annotations

import os


def default_dir() -> str:
    """$SPES_JAX_CACHE_DIR, else $XDG_CACHE_HOME/spes-jax/xla, else ~/.cache/spes-jax/xla."""
    if os.environ.get("SPES_JAX_CACHE_DIR"):
        return os.environ["SPES_JAX_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "spes-jax", "xla")


def enable(path: str | None = None) -> str | None:
    """Turns the cache on at ``path`` (default ``default_dir()``); returns the directory, or None when
    it cannot be created (the run then simply compiles, as without a cache)."""
    import jax

    path = path or default_dir()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    # Cache every executable that took noticeable time: the sweep's steps and the beam search.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return path


def enable_default() -> None:
    """Turns the cache on at ``default_dir()`` unless JAX's cache is configured already: a directory set
    (``jax_compilation_cache_dir``) or the cache turned off (``jax_enable_compilation_cache`` False, what
    ``spes-jax --no-compile-cache`` does). ``load_model`` calls it, so Python sessions share the command
    line's executables."""
    import jax

    if jax.config.jax_compilation_cache_dir is None and jax.config.jax_enable_compilation_cache:
        enable()
