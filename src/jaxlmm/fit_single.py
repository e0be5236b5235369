"""One fit of a ``Model``: lme4's ``optimizeLmer`` + ``mkMerMod``.

Small models (``lmer_model.dense_eligible``) run the host-driven Newton loop on
the dense block program (``core/dense_fit.py``); larger ones the jitted blocked
program (``core/fit.py``); an optax or optimistix optimizer, when given, its own loop
(``core/optimizers.py``).  The
output is put in one layout (``core.fit.FitOutput``) and wrapped in an
``LmerResult`` that keeps the model.
"""

from __future__ import annotations

import time

import numpy as np

from . import errors


def _dense_fit(model, theta0: np.ndarray):
    """Fit with ``core.dense_fit.fit_dense``; the output in the block path's layout."""
    from .core.dense_fit import fit_dense
    from .core.dense_layout import derivative_rows, per_term_solution
    from .core.fit import FitOutput
    from .core.optimize import NewtonOptions, OptimResult

    design, data = model.design, model.data
    structure = data.structure
    layout, system = model.dense
    transforms = [None if t.relmat is None else t.relmat.factor for t in design.terms]
    dt = np.dtype(model.dtype)
    lower = layout.pad_theta(structure.lower_bounds()).astype(dt)
    reflections = layout.pad_reflections(structure.reflections()).astype(dt)
    k = layout.k
    res, sol = fit_dense(system, derivative_rows(system.lam_index, layout.k_pad), layout.pad_theta(theta0), lower,
                         reflections, k, reml=model.reml, options=NewtonOptions(max_iter=model.max_iter))
    optim = OptimResult(res.theta[:k], res.fun, res.grad[:k], res.n_iter, res.status, res.step)
    solution = per_term_solution(sol, layout, [t.nlevels for t in structure.terms], transforms)
    eta = np.asarray(data.offset) + np.asarray(data.X) @ solution.beta
    for zk, rk, bk in zip(data.z, data.refs, solution.b):
        eta = eta + np.sum(np.asarray(zk) * bk[np.asarray(rk)], axis=1)
    return FitOutput(optim, solution, eta.astype(dt))


def _start(model, start) -> np.ndarray:
    structure = model.design.structure
    theta0 = structure.theta0() if start is None else np.asarray(start, dtype=float)
    if theta0.shape != (structure.ntheta,):
        raise ValueError(f"start must have {structure.ntheta} values (one per theta), got {theta0.shape}")
    return np.maximum(theta0, structure.lower_bounds())


def _optimize(model, theta0: np.ndarray):
    """The fit's ``FitOutput`` and the optimizer's name.

    A traced Newton fit (``model.trace``) runs the jitted program, whose loop records the path.
    """
    import jax.numpy as jnp

    from .core.fit import fit_program, fit_program_optax, run_fit_program
    from .core.optimize import NewtonOptions

    if model.optimizer is None and model.dense is not None and not model.trace:
        from .core.threads import small_blas

        with small_blas():
            return _dense_fit(model, theta0), "newton"
    start = jnp.asarray(theta0, model.dtype)
    if model.optimizer is None:
        options = NewtonOptions(max_iter=model.max_iter, trace=model.trace)
        program = fit_program if model.trace else run_fit_program
        return program(model.data, start, reml=model.reml, options=options), "newton"
    return fit_program_optax(model.data, start, model.optimizer, reml=model.reml,
                             options=model.first_order_options), model.optimizer_name


def fit_model(model, *, start=None, warn: bool = True, verbose: bool = False):
    """Fit ``model`` (a ``lmer_model.Model``) and return its ``LmerResult``."""
    from .model.memory import check_memory
    from .results.lmer_result import LmerResult

    if model.is_marginal:
        return _fit_marginal(model, start, warn, verbose)
    itemsize = np.dtype(model.dtype).itemsize
    check_memory(model.design, itemsize, sparse_ok=True)
    plan = model.plan
    check_memory(model.design, itemsize, need=plan.bytes_peak)
    if verbose:
        print(plan, flush=True)
    started = time.perf_counter()
    output, name = _optimize(model, _start(model, start))
    return _report(LmerResult(model, output, optimizer=name), name, started, warn, verbose)


def _report(fit, name: str, started: float, warn: bool, verbose: bool):
    """Print the optimizer's summary (``verbose``) and warn of its and the boundary's messages (``warn``)."""
    if verbose:
        print(f"{name} optimizer: {fit.n_iter} iterations, {'converged' if fit.converged else 'NOT converged'}, "
              f"criterion {fit.criterion:.6f}, {time.perf_counter() - started:.2f} s", flush=True)
    if warn:
        for msg in fit.messages:
            if msg.startswith("optimizer") or msg.startswith("boundary"):
                errors.warn(msg)
    return fit


def _fit_marginal(model, start, warn: bool, verbose: bool):
    """A model with structured covariances or ``dispformula`` (``marginal_entry.py``)."""
    from .marginal_entry import fit_marginal_model
    from .results.structured_result import StructuredResult

    if model.optimizer is not None or getattr(model, "trace", False):
        raise errors.JaxlmmError("models with structured covariances or dispformula are fitted by the projected "
                                 "Newton method only (optimizer= and trace= are not available for them yet)")
    started = time.perf_counter()
    fit = StructuredResult(model, fit_marginal_model(model, start), optimizer="newton")
    return _report(fit, "newton (marginal covariance)", started, warn, verbose)
