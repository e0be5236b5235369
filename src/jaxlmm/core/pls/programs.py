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
import numpy as np

from .batch_crossprod import batch_cross_products
from .crossprod import cross_products
from .data import ModelData
from .criterion import DevianceParts, profiled_deviance
from ..params.heritability import heritability, heritability_se
from ..optim.newton import NewtonOptions, OptimResult, minimize_newton, minimize_newton_traced, value_grad_hessian
from ..optim.first_order import FirstOrderOptions, minimize_first_order
from ..status import UNBOUNDED
from ..params.theta_scale import blocked_scale, scaled_start
from ..optim.trace import Trace
from .solve import Estimates, Solution, estimates, linear_predictor, solve


class FitOutput(NamedTuple):
    optim: OptimResult
    solution: Solution
    fitted: jnp.ndarray
    trace: Trace | None = None


def _minimize(cp, theta0, reml: bool, options, optimizer=None):
    """``(OptimResult, Trace or None)``: Newton (``options``: ``NewtonOptions``) or a first-order
    ``optimizer`` (``options``: ``FirstOrderOptions``) on the profiled criterion of ``cp``."""
    lower = jnp.asarray(cp.structure.lower_bounds(), dtype=theta0.dtype)
    objective = partial(profiled_deviance, cp=cp, reml=reml)
    if optimizer is not None:
        return minimize_first_order(objective, theta0, lower, optimizer, options, cp.structure.reflections())
    scale = blocked_scale(cp)
    theta0 = scaled_start(theta0, jnp.asarray(cp.structure.theta0(), theta0.dtype), scale)
    if options.trace:
        return minimize_newton_traced(objective, theta0, lower, options, cp.structure.reflections(), scale=scale)
    return minimize_newton(objective, theta0, lower, options, cp.structure.reflections(), scale=scale), None


def _fit(data: ModelData, theta0, reml: bool, options, optimizer=None) -> FitOutput:
    cp = cross_products(data)
    res, trace = _minimize(cp, theta0, reml, options, optimizer)
    sol = solve(res.theta, cp, reml, data.transforms)
    fitted = linear_predictor(data, sol.beta, sol.b)
    return FitOutput(res, sol, fitted, trace)


# On a CPU the programs use XLA's classic LLVM IR emitters: the newer fusion emitters (MLIR) compile
# the batch program's many small fusions much more slowly, for a slightly faster warm run (the figures
# are in benchmarks/results/xla_flag_cpu.md).  Other backends ignore the option.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


@partial(jax.jit, static_argnames=("reml", "options"))
def fit_program(data: ModelData, theta0, reml: bool = True, options: NewtonOptions = NewtonOptions()) -> FitOutput:
    """Fit one response with the projected Newton optimizer."""
    return _fit(data, theta0, reml, options)


def run_fit_program(data: ModelData, theta0, reml: bool = True, options: NewtonOptions = NewtonOptions()):
    """``fit_program``, served from the ahead-of-time cache when it is enabled (``compile/aot.py``); where the
    fit is near-perfect, refitted from its optimum with the explicit residual (``explicit_refit``)."""
    from ..compile import aot

    if not aot.enabled():
        out = fit_program(data, theta0, reml=reml, options=options)
    else:
        aot.register_output_types(FitOutput, OptimResult, Solution, DevianceParts)
        out = aot.call("fit_program", _fit, (data, theta0), dict(reml=reml, options=options))
    return explicit_refit(out, data, reml, options)


def explicit_refit(out: FitOutput, data: ModelData, reml: bool, options: NewtonOptions) -> FitOutput:
    """``out`` refitted from its optimum on the criterion whose PWRSS comes from the explicit residual
    (``explicit_residual``), where the factor's PWRSS has lost digits to cancellation; the iterations
    add up.  ``out`` itself where that is not needed, not available (a sparse cross block) or not finite."""
    from . import explicit_residual

    if int(out.optim.status) == UNBOUNDED or not explicit_residual.needs_explicit(data, out, reml):
        return out
    polished = explicit_program(data, out.optim.theta, reml=reml, options=options)
    if polished is None or not np.isfinite(float(polished.solution.criterion)):
        return out
    optim = polished.optim._replace(n_iter=polished.optim.n_iter + out.optim.n_iter)
    return polished._replace(optim=optim)


def explicit_program(data: ModelData, theta0, reml: bool = True, options: NewtonOptions = NewtonOptions()):
    """``_explicit_fit`` compiled, on the dense cross block (a sparse one is formed dense where it is
    small enough: ``explicit_residual.dense_cross_data``; None where it is not)."""
    from .explicit_residual import dense_cross_data

    data = dense_cross_data(data)
    if data is None:
        return None
    return _EXPLICIT(data, jnp.asarray(theta0), reml=reml, options=options)


def _explicit_fit(data: ModelData, theta0, reml: bool, options: NewtonOptions) -> FitOutput:
    from . import explicit_residual as er

    cp = er.precise_cross_products(cross_products(data))
    lower = jnp.asarray(cp.structure.lower_bounds(), dtype=theta0.dtype)
    objective = partial(er.explicit_deviance, cp=cp, data=data, reml=reml)
    res = minimize_newton(objective, theta0, lower, options._replace(trace=False), cp.structure.reflections(),
                          scale=blocked_scale(cp))
    sol = er.with_explicit_pwrss(solve(res.theta, cp, reml, data.transforms), res.theta, cp, data, reml)
    return FitOutput(res, sol, linear_predictor(data, sol.beta, sol.b))


_EXPLICIT = jax.jit(_explicit_fit, static_argnames=("reml", "options"))


def _fit_first_order(data: ModelData, theta0, optimizer, reml: bool, options: FirstOrderOptions) -> FitOutput:
    return _fit(data, theta0, reml, options, optimizer=optimizer)


# a first-order fit of one problem: on a CPU with XLA's backend optimizations off, as the dense
# programs of a few problems (``dense_fit.FAST_COMPILE``): sleepstudy's L-BFGS fit compiles in about
# half the time and runs as fast
_FIRST_ORDER = {fast: jax.jit(_fit_first_order, static_argnames=("optimizer", "reml", "options"),
                              compiler_options={**CPU_COMPILER_OPTIONS, "xla_backend_optimization_level": 0}
                              if fast else None) for fast in (True, False)}


def fit_program_optax(data: ModelData, theta0, optimizer, reml: bool = True,
                      options: FirstOrderOptions = FirstOrderOptions()) -> FitOutput:
    """Fit one response with an optax or optimistix optimizer (``optimizers.minimize_first_order``)."""
    return _FIRST_ORDER[jax.default_backend() == "cpu"](data, theta0, optimizer, reml=reml, options=options)


class BatchOutput(NamedTuple):
    """Per-trait results of a batch fit (leading axis: traits)."""

    optim: OptimResult
    estimates: Estimates
    h2: jnp.ndarray | None = None
    h2_se: jnp.ndarray | None = None
    trace: Trace | None = None


def _fit_estimates(cp, theta0, reml: bool, options, h2_term: int | None = None, optimizer=None) -> BatchOutput:
    res, trace = _minimize(cp, theta0, reml, options, optimizer)
    est = estimates(res.theta, cp, reml)
    if h2_term is None:
        return BatchOutput(res, est, trace=trace)
    objective = partial(profiled_deviance, cp=cp, reml=reml)
    _, _, H = value_grad_hessian(objective, res.theta, getattr(options, "sequential_hessian", False))
    return BatchOutput(res, est, heritability(res.theta, h2_term), heritability_se(res.theta, H, h2_term), trace)


@partial(jax.jit, static_argnames=("reml", "options", "h2_term", "optimizer"), compiler_options=CPU_COMPILER_OPTIONS)
def fit_batch_program(data: ModelData, Y, W, theta0, reml: bool = True, options: NewtonOptions = NewtonOptions(),
                      h2_term: int | None = None, optimizer=None) -> BatchOutput:
    """Fit T responses ``Y`` (T, n) with weights ``W`` (T, n) sharing one design.

    The cross-products of all traits come from a few matrix products with the
    shared design (``batch_cross_products``); the single-trait optimizer is then
    vmapped over traits: one program for the whole batch, each trait with its
    own weights (0 = missing) and starting value ``theta0`` (T, k).  ``optimizer`` (an optax
    or optimistix one, ``options`` then ``FirstOrderOptions``) replaces Newton.  With
    ``h2_term`` (all terms scalar) it also returns the heritability of that
    term and its delta-method SE (``core.heritability``).
    """
    cp = batch_cross_products(data, Y, W)
    fit_one = partial(_fit_estimates, reml=reml, options=options, h2_term=h2_term, optimizer=optimizer)
    return jax.vmap(fit_one)(cp, theta0)
