"""``covariance_parameters`` of a fit: each term's structure's reported quantities and the residual's, with
Wald SEs (delta method on ``A = 2 H^-1``, ``H`` the Hessian of the marginal criterion, ``core/marginal/criterion.py``).

A structured fit (``StructuredResult``) has its parameters ``phi`` and ``A`` from its own fit.  A fit by
lme4's engine (``us()``, ``diag()``, plain terms) has them as ``phi = (sigma * theta, sigma)``: lme4's theta
is the column-major lower triangle of each term's relative factor, which times sigma is the parameter
vector of the same structure in ``core/params/covfuns.py`` (checked against the fit's term covariances), and
``H`` is the marginal criterion's Hessian there (models up to ``marginal_design.MAX_ROWS`` rows; beyond,
the SEs are NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..model.naming import unique_group_names


COLUMNS = ["grp", "structure", "parameter", "estimate", "se"]


def parameter_table(design, covs, residual, phi: np.ndarray, V: np.ndarray) -> pd.DataFrame:
    """``covariance_parameters``: per term its structure's reported quantities (``CovarianceFunction.report``),
    then the residual's, with delta-method SEs from ``V`` (the parameters' covariance, NaN where unknown)."""
    rows = []
    offsets = np.concatenate([[0], np.cumsum([c.n_params for c in covs])]).astype(int)
    for grp, cov, off in zip(unique_group_names([t.group for t in design.terms]), covs, offsets):
        sl = slice(off, off + cov.n_params)
        values, ses = cov.report(phi[sl], V[sl, sl])
        for name, v in values.items():
            rows.append((grp, cov.name, name, v, ses[name]))
    base = offsets[-1]
    if not residual.log_linear:
        s, v = phi[base], V[base, base]
        se = 2.0 * s * np.sqrt(v) if np.isfinite(v) else np.nan
        rows.append(("Residual", "residual", "variance", s ** 2, se))
        return pd.DataFrame(rows, columns=COLUMNS)
    delta, A = phi[base:], V[base:, base:]
    for name, d, v in zip(residual.names, delta, np.diagonal(A)):
        rows.append(("Residual", "dispersion", name, d, np.sqrt(v) if np.isfinite(v) else np.nan))
    if residual.linear_in_levels:            # a factor's levels: their variances, as the model's parameters
        variances = np.exp(residual.level_X @ delta)
        for level, x, var in zip(residual.levels, residual.level_X, variances):
            se = var * np.sqrt(max(float(x @ A @ x), 0.0)) if np.all(np.isfinite(A)) else np.nan
            rows.append(("Residual", "residual", f"variance.{level}", var, se))
    return pd.DataFrame(rows, columns=COLUMNS)


def lme4_covariance_parameters(fit) -> pd.DataFrame:
    """``covariance_parameters`` of a fit by lme4's engine (module docstring)."""
    from ..core.marginal.criterion import evaluate
    from ..core.marginal.fit import blas_threads, parameter_covariance
    from ..core.marginal.residual import ResidualVariance
    from ..model.marginal_design import MAX_ROWS
    from ..model.structured_terms import term_covariance

    design = fit.design
    covs = [term_covariance(t, design.covariances) for t in design.terms]
    theta, sigma = np.asarray(fit.theta, float), float(fit.sigma)
    if sum(c.n_params for c in covs) != len(theta):
        raise NotImplementedError("covariance_parameters: this model's theta does not map onto its terms' "
                                  "covariance structures")
    phi = np.concatenate([sigma * theta, [sigma]])
    off = 0
    for cov, C in zip(covs, fit.term_covariances):    # the map sigma * theta -> phi is the structures' own
        got = cov.derivatives(phi[off:off + cov.n_params])[0]
        if not np.allclose(got, C, rtol=1e-8, atol=1e-12 * max(float(np.max(np.abs(C))), 1.0)):
            raise NotImplementedError(f"covariance_parameters: the {cov.name}() parameters of this fit do not "
                                      "reproduce its term covariance")
        off += cov.n_params
    V = np.full((len(phi), len(phi)), np.nan)
    y = np.asarray(design.y, float) - np.asarray(design.offset, float)
    rows = np.flatnonzero((np.asarray(design.weights) > 0) & np.isfinite(y))
    if design.X.shape[0] <= MAX_ROWS:
        mm = fit.model.marginal
        with blas_threads(len(rows)):
            H = evaluate(mm, phi, y[rows], rows, bool(fit.reml)).hess
        V = parameter_covariance(H, mm.lower(), phi)
    return parameter_table(design, covs, ResidualVariance.single_sd(len(y)), phi, V)
