"""Fitting small models: host-driven projected Newton on the dense criterion, then the estimates.

Three compiled programs, each shared by every model whose padded sizes fall
in one bucket (``dense.py``), REML and ML alike (``reml`` is an argument): the
criterion with its closed-form gradient and Hessian for a stack of thetas,
the criterion alone (line-search trials), and the estimates at the optimum.
The loop itself is ``newton_host``.

On a CPU, programs for a single problem are compiled with XLA's backend
optimizations off and its classic emitters (``FAST_COMPILE``): they compile
about four times faster and run a few milliseconds slower, which is the
right trade for a fit of seven iterations.  Stacks of many problems
(bootstrap, profiles) get XLA's full optimization.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .dense import DenseSolution, DenseSystem, dense_deviance, dense_solve, value_grad_hessian
from .newton_host import minimize_newton_host
from .optimize import NewtonOptions, OptimResult

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
FAST_MAX_BATCH = 8  # stacks up to this many problems use FAST_COMPILE on a CPU


def _derivatives(thetas, system: DenseSystem, row_of, reml):
    return jax.vmap(value_grad_hessian, in_axes=(0, None, None, None))(thetas, system, row_of, reml)


def _values(thetas, system: DenseSystem, reml):
    return jax.vmap(dense_deviance, in_axes=(0, None, None))(thetas, system, reml)


_PROGRAMS = {
    (name, fast): jax.jit(fn, compiler_options=FAST_COMPILE if fast else None)
    for name, fn in (("derivatives", _derivatives), ("values", _values), ("estimates", dense_solve))
    for fast in (False, True)
}


def program(name: str, batch: int = 1):
    """The compiled program ``name`` ("derivatives", "values", "estimates") for a stack of ``batch``."""
    fast = batch <= FAST_MAX_BATCH and jax.default_backend() == "cpu"
    return _PROGRAMS[name, fast]


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
    return sum(fn._cache_size() for fn in _PROGRAMS.values())


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
                               active_k=active_k)
    res = OptimResult(*(np.asarray(v)[0] for v in res))
    sol = jax.device_get(estimates_at(jnp.asarray(res.theta, dtype), system, flag))
    return res, sol
