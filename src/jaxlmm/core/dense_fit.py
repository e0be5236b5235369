"""Fitting small models: host-driven projected Newton on the dense criterion, then the estimates.

Three compiled programs, each shared by every model whose padded sizes fall
in one bucket (``dense.py``), REML and ML alike (``reml`` is an argument): the
criterion with its closed-form gradient and Hessian for a stack of thetas,
the criterion alone (line-search trials), and the estimates at the optimum.
The loop itself is ``newton_host``.

On a CPU every program uses XLA's classic emitters (``fit.CPU_COMPILER_OPTIONS``):
with the newer fusion emitters a vmapped second derivative through a batched
Cholesky factor can hang (jax 0.10.2, seen at 64 lanes).  Programs for a
single problem also turn XLA's backend optimizations off (``FAST_COMPILE``):
they compile about four times faster and run a few milliseconds slower, the
right trade for a fit of seven iterations; stacks of many problems
(bootstrap, profiles) keep them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .dense import DenseSolution, DenseSystem, dense_deviance, dense_solve, value_grad_hessian
from .fit import CPU_COMPILER_OPTIONS
from .newton_host import minimize_newton_host
from .optimize import NewtonOptions, OptimResult

FAST_COMPILE = {**CPU_COMPILER_OPTIONS, "xla_backend_optimization_level": 0}
FAST_MAX_BATCH = 8  # stacks up to this many problems use FAST_COMPILE on a CPU


def compiler_options(batch: int = 1) -> str:
    """Which compiler options a program for ``batch`` problems gets here: "fast", "cpu" or "default"."""
    if jax.default_backend() != "cpu":
        return "default"
    return "fast" if batch <= FAST_MAX_BATCH else "cpu"


OPTIONS = {"fast": FAST_COMPILE, "cpu": CPU_COMPILER_OPTIONS, "default": None}


def jit_variants(fn) -> dict:
    """``fn`` jitted once per entry of ``OPTIONS`` (compiled lazily, on first use)."""
    return {kind: jax.jit(fn, compiler_options=opts) for kind, opts in OPTIONS.items()}


def _derivatives(thetas, system: DenseSystem, row_of, reml):
    return jax.vmap(value_grad_hessian, in_axes=(0, None, None, None))(thetas, system, row_of, reml)


def _values(thetas, system: DenseSystem, reml):
    return jax.vmap(dense_deviance, in_axes=(0, None, None))(thetas, system, reml)


_PROGRAMS = {name: jit_variants(fn) for name, fn in
             (("derivatives", _derivatives), ("values", _values), ("estimates", dense_solve))}


def program(name: str, batch: int = 1):
    """The compiled program ``name`` ("derivatives", "values", "estimates") for a stack of ``batch``."""
    return _PROGRAMS[name][compiler_options(batch)]


def criterion_derivatives(thetas, system: DenseSystem, row_of, reml=True):
    """f, gradient and Hessian at each row of ``thetas`` (B, k)."""
    return program("derivatives", thetas.shape[0])(thetas, system, row_of, reml)


def criterion_values(thetas, system: DenseSystem, reml=True):
    """The criterion at each row of ``thetas`` (B, k)."""
    return program("values", thetas.shape[0])(thetas, system, reml)


def estimates_at(theta, system: DenseSystem, reml=True) -> DenseSolution:
    """``dense_solve`` as a compiled program."""
    return program("estimates")(theta, system, reml)


def compiled_count() -> int:
    """How many programs have been compiled so far (tests check that models share them)."""
    return sum(fn._cache_size() for variants in _PROGRAMS.values() for fn in variants.values())


def fit_dense(system: DenseSystem, row_of, theta0, lower, reflections, active_k: int, reml: bool = True,
              options: NewtonOptions = NewtonOptions()) -> tuple[OptimResult, DenseSolution]:
    """Minimize the criterion from ``theta0`` subject to ``theta >= lower``; the estimates at the optimum.

    Arrays are padded (``dense_layout``): only the first ``active_k`` thetas are free.
    """
    system = jax.device_put(system)
    row_of = jax.device_put(row_of)
    dtype = system.A.dtype
    flag = jnp.asarray(bool(reml))

    def vgh(x):
        return jax.device_get(criterion_derivatives(jnp.asarray(x, dtype), system, row_of, flag))

    def fun(x):
        return np.asarray(criterion_values(jnp.asarray(x, dtype), system, flag))

    res = minimize_newton_host(vgh, fun, np.asarray(theta0, float)[None], lower, options, reflections,
                               active_k=active_k, dtype=dtype)
    res = OptimResult(*(np.asarray(v)[0] for v in res))
    sol = jax.device_get(estimates_at(jnp.asarray(res.theta, dtype), system, flag))
    return res, sol
