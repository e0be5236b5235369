"""Opt-in process settings: XLA's CPU thread pool and the persistent compilation cache.

Nothing here runs on import: the command line calls these for its own
process; in Python they are the user's choice (float64 is scoped per call,
see ``_x64.py``).
"""

from __future__ import annotations

import os


def configure_xla() -> None:
    """Run XLA's CPU intra-op work single-threaded (``--xla_cpu_multi_thread_eigen=false``).

    With the multi-threaded Eigen pool, a batched LAPACK call (a Cholesky or a
    triangular solve of a dense block) inside a vmapped while loop can
    deadlock XLA's CPU thread pool (jax-ml/jax#24219 and reports like it):
    exactly what a batch of traits or a profile does.  Disabling that pool
    keeps XLA's parallelism across independent operations.  It has to be set
    before JAX starts its CPU backend; if that already happened, nothing is
    changed.  Opt-in: jaxlmm never calls it on import (the small-model path
    has no loop inside its programs and the block path avoids batched LAPACK
    calls in loops up to ``linalg.RECURSIVE_MAX``); call it first thing in a
    program that fits batches of large models on a CPU.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" in flags:
        return
    try:
        from jax._src import xla_bridge

        if getattr(xla_bridge, "_backends", None):
            return
    except Exception:  # pragma: no cover - private API moved
        pass
    os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()


def cache_directory(path: str | None = None) -> str | None:
    """The compilation cache folder: ``path``, else ``$JAXLMM_CACHE``, else ``~/.cache/jaxlmm/jax``.

    ``JAXLMM_CACHE=off`` (or ``0``, ``none``, ``false``) means no cache.
    """
    value = path or os.environ.get("JAXLMM_CACHE")
    if value is not None and value.strip().lower() in ("off", "0", "none", "false", ""):
        return None
    return value or os.path.join(os.path.expanduser("~"), ".cache", "jaxlmm", "jax")


def enable_compilation_cache(path: str | None = None, ahead_of_time: bool = False) -> str | None:
    """Use JAX's persistent compilation cache (default ``~/.cache/jaxlmm/jax``, or ``$JAXLMM_CACHE``).

    Compiled fit programs are then reused across processes, so a second
    ``jaxlmm fit`` of a model of the same shape skips compilation.  With
    ``ahead_of_time=True`` the lowered fit programs are kept as well
    (``core/compile/aot.py``), so a new process skips tracing too.

    The folder is created user-only (0700); a folder that cannot be created,
    is not writable, is owned by someone else or is writable by others
    disables the cache with one warning (``None`` is returned) instead of
    failing.
    """
    import jax

    from .core.compile.cache_safety import make_private_dir

    wanted = cache_directory(path)
    if wanted is None:
        return None
    directory = make_private_dir(wanted)
    if directory is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if ahead_of_time:
        from .core.compile import aot

        aot.enable(directory / "exported")
    return str(directory)
