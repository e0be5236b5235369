"""Fitting small models: host-driven projected Newton on the dense criterion, then the estimates.

Three compiled programs, each shared by every model whose padded sizes fall
in one bucket (``dense.py``): the criterion with its closed-form gradient and
Hessian for a stack of thetas, the criterion alone (line-search trials), and
the estimates at the optimum.  The loop itself is ``newton_host``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .dense import DenseSolution, DenseSystem, dense_deviance, dense_solve, value_grad_hessian
from .newton_host import minimize_newton_host
from .optimize import NewtonOptions, OptimResult


@partial(jax.jit, static_argnames=("reml",))
def criterion_derivatives(thetas, system: DenseSystem, row_of, reml: bool = True):
    """f, gradient and Hessian at each row of ``thetas`` (B, k)."""
    return jax.vmap(value_grad_hessian, in_axes=(0, None, None, None))(thetas, system, row_of, reml)


@partial(jax.jit, static_argnames=("reml",))
def criterion_values(thetas, system: DenseSystem, reml: bool = True):
    """The criterion at each row of ``thetas`` (B, k)."""
    return jax.vmap(dense_deviance, in_axes=(0, None, None))(thetas, system, reml)


@partial(jax.jit, static_argnames=("reml",))
def estimates_at(theta, system: DenseSystem, reml: bool = True) -> DenseSolution:
    """``dense_solve`` as a compiled program."""
    return dense_solve(theta, system, reml)


def fit_dense(system: DenseSystem, row_of, theta0, lower, reflections, active_k: int, reml: bool = True,
              options: NewtonOptions = NewtonOptions()) -> tuple[OptimResult, DenseSolution]:
    """Minimize the criterion from ``theta0`` subject to ``theta >= lower``; the estimates at the optimum.

    Arrays are padded (``dense_layout``): only the first ``active_k`` thetas are free.
    """
    system = jax.device_put(system)
    row_of = jax.device_put(row_of)
    dtype = system.A.dtype

    def vgh(x):
        return jax.device_get(criterion_derivatives(jnp.asarray(x, dtype), system, row_of, reml=reml))

    def fun(x):
        return np.asarray(criterion_values(jnp.asarray(x, dtype), system, reml=reml))

    res = minimize_newton_host(vgh, fun, np.asarray(theta0, float)[None], lower, options, reflections,
                               active_k=active_k)
    res = OptimResult(*(np.asarray(v)[0] for v in res))
    sol = jax.device_get(estimates_at(jnp.asarray(res.theta, dtype), system, reml=reml))
    return res, sol
