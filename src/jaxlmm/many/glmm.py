"""Many responses of one GLMM: every trait a lane of the host Newton loop on the GLMM engine's programs.

The traits share the design (``X``, offset, grouping); each has its own response and missing values
(a missing value is a row of prior weight 0 for that trait only).  Traits are fitted in chunks of
``chunk_size`` lanes padded to that size (``core/optim/lanes.py``), so one compiled program of each kind
serves every chunk: the GLM start (theta held at 0), then the fit from lme4's start, then the Hessian at
each optimum (the standard errors).  A trait with too few observations, or a binomial trait that is 0
(or 1) everywhere, gets a status instead of a fit.
"""

from __future__ import annotations

import numpy as np

from ..core.optim.lanes import padded_chunks
from ..core.status import CONSTANT_RESPONSE, TOO_FEW_OBSERVATIONS

DEFAULT_CHUNK = 512


def _pre_status(model, Y: np.ndarray) -> np.ndarray:
    """Per trait: 0, or the status that stops it before a fit (module docstring)."""
    p = model.design.X.shape[1]
    status = np.zeros(Y.shape[1], np.int32)
    for j in range(Y.shape[1]):
        y = Y[:, j][~np.isnan(Y[:, j])]
        if y.size <= p:
            status[j] = TOO_FEW_OBSERVATIONS
        elif np.ptp(y) == 0:
            status[j] = CONSTANT_RESPONSE
    return status


def fit_glmm_batch(model, names, Y, *, start=None, chunk_size=None, progress=None, **_ignored):
    """Fit ``model`` to every column of ``Y``: a ``GlmmBatchResult`` (module docstring)."""
    from ..core.glmm.driver import fit_lanes, glm_start, glmm_data
    from ..results.glmm_batch_result import GlmmBatchResult

    Y = np.asarray(Y, float)
    pre = _pre_status(model, Y)
    valid = np.flatnonzero(pre == 0)
    engine = model.engine
    layout = engine.layout(model)
    k = layout.nparams
    size = int(chunk_size or min(DEFAULT_CHUNK, max(len(valid), 1)))
    out = {"x": np.full((Y.shape[1], k), np.nan), "fun": np.full(Y.shape[1], np.nan),
           "status": pre.copy(), "n_iter": np.zeros(Y.shape[1], np.int32), "hessian": np.full((Y.shape[1], k, k), np.nan)}
    R = engine.reflections(model)
    for take, n_real in padded_chunks(len(valid), size):
        cols = valid[take]
        data = glmm_data(model, Y[:, cols])
        x0 = glm_start(model, data) if start is None else np.broadcast_to(np.asarray(start, float), (len(cols), k))
        fit = fit_lanes(model, data, np.array(x0), R, value_program=True)
        H = fit.hessian
        real = cols[:n_real]
        out["x"][real] = fit.optim.theta[:n_real]
        out["fun"][real] = fit.optim.fun[:n_real]
        out["status"][real] = fit.optim.status[:n_real]
        out["n_iter"][real] = fit.optim.n_iter[:n_real]
        out["hessian"][real] = H[:n_real]
    return GlmmBatchResult(model, list(names), out)

