"""One fit of a ``Model``: lme4's ``optimizeLmer`` + ``mkMerMod``.

The model's engine (``engines/``) checks the memory, runs its optimizer from the start and returns
its output; the engine's ``result_type`` wraps it in the result that keeps the model (an
``LmerResult``, or a ``StructuredResult`` for the marginal engine); its messages become warnings.
"""

from __future__ import annotations

import time

from .. import errors


def fit_model(model, *, start=None, warn: bool = True, verbose: bool = False):
    """Fit ``model`` (a ``fitting.model.Model``) by its engine and return its result."""
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
