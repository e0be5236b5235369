"""One jitted program per model shape: cross-products -> optimize theta -> estimates.

``fit_program(data, theta0, reml, options)`` is the whole fit of one response
(lme4's ``mkLmerDevfun`` + ``optimizeLmer`` + the estimates of ``mkMerMod``).
It is compiled once per (shapes, structure, reml, options) and reused: a
second call with another response or other weights of the same shape does not
recompile.  ``fit_batch_program`` is the same program vmapped over responses
(and weights, so each trait keeps its own missing values).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .crossprod import cross_products
from .data import ModelData
from .deviance import profiled_deviance
from .optimize import NewtonOptions, OptimResult, minimize_newton, minimize_optax
from .solution import Solution, linear_predictor, solve


class FitOutput(NamedTuple):
    optim: OptimResult
    solution: Solution
    fitted: jnp.ndarray


def _fit(data: ModelData, theta0, reml: bool, options, optimizer=None) -> FitOutput:
    cp = cross_products(data)
    lower = jnp.asarray(data.structure.lower_bounds(), dtype=theta0.dtype)
    objective = partial(profiled_deviance, cp=cp, reml=reml)
    if optimizer is None:
        res = minimize_newton(objective, theta0, lower, options)
    else:
        res = minimize_optax(objective, theta0, lower, optimizer, **dict(options))
    sol = solve(res.theta, cp, reml)
    fitted = linear_predictor(data, sol.beta, sol.b)
    return FitOutput(res, sol, fitted)


@partial(jax.jit, static_argnames=("reml", "options"))
def fit_program(data: ModelData, theta0, reml: bool = True, options: NewtonOptions = NewtonOptions()) -> FitOutput:
    """Fit one response with the projected Newton optimizer."""
    return _fit(data, theta0, reml, options)


@partial(jax.jit, static_argnames=("reml", "optimizer", "options"))
def fit_program_optax(data: ModelData, theta0, optimizer, reml: bool = True, options: tuple = ()) -> FitOutput:
    """Fit one response with an optax optimizer (``options``: max_iter, gtol as pairs)."""
    return _fit(data, theta0, reml, options, optimizer=optimizer)
