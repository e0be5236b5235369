"""One fit of a ``Model``: lme4's ``optimizeLmer`` + ``mkMerMod``.

The model's engine (``engines/``) checks the memory, runs its optimizer from the start and returns
its output; the engine's ``result_type`` wraps it in the result that keeps the model (an
``LmerResult``, or a ``StructuredResult`` for the marginal engine); its messages become warnings.
``dense_fit`` is the dense engine's fit: the host driver of the Newton kernel on the dense
programs, with its output in the blocked path's layout (``core.fit.FitOutput``).
"""

from __future__ import annotations

import time

import numpy as np

from . import errors


def dense_fit(model, theta0: np.ndarray):
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


def fit_model(model, *, start=None, warn: bool = True, verbose: bool = False):
    """Fit ``model`` (a ``lmer_model.Model``) by its engine and return its result."""
    engine = model.engine
    engine.check_memory(model, verbose)
    started = time.perf_counter()
    output, name = engine.fit(model, start)
    return _report(engine.result_type(model, output, optimizer=name), f"{name} ({engine.name} engine)", started,
                   warn, verbose)


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
