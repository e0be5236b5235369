"""One fit of a model with structured covariances or ``dispformula`` (``core/marginal/criterion.py``).

The parameters are absolute (variances are not relative to sigma); the fit
starts from each structure's start, its standard deviations scaled by the
residual SD of the least-squares fit, and the output carries the estimates
in the layout every ``LmerResult`` reads (``core.fit.FitOutput``) plus the
structured parts (term covariances, residual SDs by level, the parameters' covariance).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class MarginalOutput(NamedTuple):
    optim: object       # core.optim.newton.OptimResult, theta = all parameters (terms, then the residual's)
    solution: object    # core.pls.solution_types.Solution
    fitted: np.ndarray
    estimates: object   # core.marginal.fit.MarginalEstimates
    phi_cov: np.ndarray  # 2 H^-1 on the free parameters
    trace: object = None  # no optimizer trace (the marginal engine takes no trace=)


def fit_marginal_model(model, start=None) -> MarginalOutput:
    """Fit ``model`` (a ``Model`` of the marginal engine) from ``start`` (``marginal_design.start_values``)."""
    from ..core.pls.solution_types import Solution
    from ..core.marginal.fit import estimates, fit_marginal, parameter_covariance
    from ..core.optim.newton import NewtonOptions, OptimResult
    from ..core.pls.parts import DevianceParts
    from ..model.marginal_design import check_user_covariances, start_values

    mm, design = model.marginal, model.design
    offset = np.asarray(design.offset, float)
    y = np.asarray(design.y, float) - offset
    observed = (np.asarray(design.weights) > 0) & np.isfinite(y)     # NaN: missing (LmerResult.refit)
    phi0 = start_values(model, start)
    res = fit_marginal(mm, y[:, None], observed[:, None], model.reml, phi0[None],
                       NewtonOptions(max_iter=max(model.max_iter, 200)))
    optim = OptimResult(*(np.asarray(v)[0] for v in res))
    phi = check_user_covariances(mm, np.asarray(optim.theta, float), at_start=False)
    rows = np.flatnonzero(observed)
    est = estimates(mm, phi, y[rows], rows, model.reml)
    resid_var = est.residual_sd[mm.resid_codes[rows]] ** 2
    sigma = float(est.residual_sd[0]) if mm.residual.n_levels == 1 else float(np.sqrt(np.mean(resid_var)))
    w = np.asarray(design.weights)[rows]
    parts = DevianceParts(est.logdet_V, est.logdet_Q, est.quad, float(len(rows)), float(np.sum(np.log(w))))
    solution = Solution(est.criterion, est.beta, sigma, est.vcov_beta, est.b, est.b, est.cond_var, parts)
    fitted = offset.copy()
    fitted[rows] += est.fitted
    fitted[~observed] = np.nan
    return MarginalOutput(optim, solution, fitted, est, parameter_covariance(est.hessian, mm.lower(), phi))
