"""A bound on the compiled programs one process keeps: a long session survives any number of models.

Every XLA executable on a CPU keeps its machine code in memory maps of its own (a few hundred
for a fit's programs), and JAX keeps every executable it compiled for as long as the process
lives (its jit caches hold up to thousands per function).  A notebook that fits hundreds of
differently shaped models therefore grows its memory maps until Linux's ``vm.max_map_count``
(65,530 by default) is reached, and the next compilation fails ("LLVM compilation error: Cannot
allocate memory") or the process crashes.

The budget: JAX reports every executable it compiles or loads from the persistent cache
(``jax.monitoring``, the backend-compile event).  After any new one, the next jaxlmm call that
starts outside any trace counts the process's memory maps (``/proc/self/maps``: far cheaper than
the compilation that preceded it; a warm call compiles nothing and counts nothing) and, past
``fraction`` of ``vm.max_map_count`` (or past ``MAX_PROGRAMS`` executables where there is no
``/proc``), drops JAX's in-memory caches (``jax.clear_caches``).  That frees every executable at
once (JAX gives no way to evict one), so a model fitted again afterwards compiles again -- or
loads from the persistent compilation cache when it is on (``jaxlmm.enable_compilation_cache``).
``benchmarks/population.py`` measures what a release costs; ``releases()`` counts them.

The check runs only at the outermost jaxlmm call (``_x64.float64_scope``) and never inside a
trace, so no program being traced or run loses its cache.
"""

from __future__ import annotations

import gc
import threading

CHECK_EVERY = 1           # executables compiled or loaded before the memory maps are counted again
MAX_PROGRAMS = 2000       # without /proc: release after this many new executables
DEFAULT_FRACTION = 0.5    # of vm.max_map_count

_lock = threading.Lock()
_state = {"installed": False, "new": 0, "since_release": 0, "total": 0, "releases": 0,
          "fraction": DEFAULT_FRACTION}
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _on_event(event: str, duration: float, **kwargs) -> None:
    if event == _COMPILE_EVENT:
        with _lock:
            _state["new"] += 1
            _state["since_release"] += 1
            _state["total"] += 1


def install() -> None:
    """Start counting executables (once per process)."""
    if _state["installed"]:
        return
    import jax

    with _lock:
        if _state["installed"]:
            return
        jax.monitoring.register_event_duration_secs_listener(_on_event)
        _state["installed"] = True


def set_fraction(fraction: float) -> None:
    """Release when the memory maps pass ``fraction`` of ``vm.max_map_count`` (default 0.5)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    _state["fraction"] = float(fraction)


def map_count() -> int | None:
    """The process's memory maps (lines of ``/proc/self/maps``), or None where there is no /proc."""
    try:
        with open("/proc/self/maps", "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return None


def map_limit() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return 65530


def compilations() -> int:
    """Executables compiled (or loaded from the persistent cache) since ``install``."""
    return _state["total"]


def releases() -> int:
    """How often this process dropped its compiled programs."""
    return _state["releases"]


def _top_level() -> bool:
    try:
        from jax._src.core import trace_state_clean
    except ImportError:  # pragma: no cover - private API moved: never release from inside a call
        return False
    return trace_state_clean()


def maybe_release() -> bool:
    """Drop JAX's compiled programs if the process is past its budget (module docstring); True if it did."""
    if not _state["installed"]:
        install()
        return False
    if _state["new"] < CHECK_EVERY:
        return False
    with _lock:
        _state["new"] = 0
    maps = map_count()
    over = (maps > _state["fraction"] * map_limit()) if maps is not None else _state["since_release"] > MAX_PROGRAMS
    if not over or not _top_level():
        return False
    release()
    return True


def release() -> None:
    """Drop every compiled program of this process (``jax.clear_caches``) and collect the garbage."""
    import jax

    jax.clear_caches()
    gc.collect()
    with _lock:
        _state["releases"] += 1
        _state["since_release"] = 0
        _state["new"] = 0


__all__ = ["install", "maybe_release", "release", "releases", "map_count", "map_limit", "set_fraction",
           "CHECK_EVERY"]
