"""What jaxlmm compiles: a public counter for users, benchmarks and tests.

JAX compiles a program the first time it meets a new shape; jaxlmm shares its programs across
models of one size bucket, across REML and ML, across responses and refits.  ``count_compilations``
says whether a step compiled anything::

    with jaxlmm.diagnostics.count_compilations() as compiled:
        fit.refit(new_y)
    compiled.count        # 0: the refit ran the programs of the first fit

Every XLA executable compiled -- or loaded from JAX's persistent compilation cache -- in this
process is counted (``jax.monitoring``'s backend-compile event), whoever compiled it.
``memory_maps()`` and ``releases()`` report the process's budget of compiled programs
(``jaxlmm._program_budget``: past half of ``vm.max_map_count`` JAX's caches are dropped).
"""

from __future__ import annotations

from . import _program_budget


class count_compilations:
    """Context manager: ``count`` is the number of executables compiled inside the ``with`` block."""

    def __init__(self):
        self.count = 0
        self._start = 0

    def __enter__(self) -> "count_compilations":
        _program_budget.install()
        self._start = _program_budget.compilations()
        return self

    def __exit__(self, *exc) -> None:
        self.count = _program_budget.compilations() - self._start


def compilations() -> int:
    """Executables compiled in this process since jaxlmm started counting (its first call)."""
    _program_budget.install()
    return _program_budget.compilations()


def memory_maps() -> int | None:
    """The process's memory maps (Linux), which each compiled CPU program adds to."""
    return _program_budget.map_count()


def releases() -> int:
    """How often this process dropped its compiled programs to stay within its budget."""
    return _program_budget.releases()


__all__ = ["count_compilations", "compilations", "memory_maps", "releases"]
