"""A ``Design`` as the marginal engine's ``MarginalModel`` (``core/marginal/criterion.py``).

Each term keeps its per-row covariates and level codes; a relationship-matrix
term its ``K`` on the fitted levels; every term its ``CovarianceFunction``
(``structured_terms.term_covariance``).  The residual variance model comes from
``dispformula`` (``structured_terms.residual_model``).
"""

from __future__ import annotations

import numpy as np

from ..core.marginal.criterion import MarginalModel, MarginalTerm
from .structured_terms import residual_model, term_covariance

MAX_ROWS = 4000   # V is n x n: beyond this the marginal engine is too slow and too large


def marginal_model(design) -> MarginalModel:
    """The ``MarginalModel`` of ``design`` (rows with zero weight dropped by the caller's ``observed``)."""
    from ..errors import DataError

    n = design.X.shape[0]
    if n > MAX_ROWS:
        raise DataError(f"models with structured covariances or dispformula are fitted by their marginal "
                        f"covariance, limited to {MAX_ROWS} rows for now; this one has {n}")
    terms = []
    for t in design.terms:
        K = None if t.relmat is None else np.asarray(t.relmat.K, float)
        terms.append(MarginalTerm(np.asarray(t.z, float), np.asarray(t.factor.codes), len(t.factor.levels),
                                  term_covariance(t, design.covariances), K))
    residual = residual_model(design.dispformula, design.frame, np.asarray(design.resid_codes),
                              list(design.resid_levels))
    return MarginalModel(np.asarray(design.X, float), np.asarray(design.weights, float), tuple(terms), residual)


def response_scale(design, y: np.ndarray, observed: np.ndarray) -> float:
    """Residual SD of the least-squares fit of ``y`` on ``X``: the scale of the starting values."""
    X, yy = design.X[observed], y[observed]
    beta, *_ = np.linalg.lstsq(X, yy, rcond=None)
    r = yy - X @ beta
    dof = max(len(yy) - X.shape[1], 1)
    s = float(np.sqrt(r @ r / dof))
    return s if s > 0 else 1.0


def start_values(model, start) -> np.ndarray:
    """The fit's start: ``start`` as given, or each structure's default scaled to the response."""
    mm = model.marginal
    if start is not None:
        phi0 = np.asarray(start, float).reshape(-1)
        if phi0.shape != (mm.n_params,):
            raise ValueError(f"start must have {mm.n_params} values (the term parameters, then the residual "
                             f"parameters), got {phi0.shape[0]}")
        return check_user_covariances(mm, np.clip(phi0, mm.lower(), mm.upper()))
    observed = (np.asarray(model.design.weights) > 0) & np.isfinite(np.asarray(model.design.y, float))
    return check_user_covariances(mm, np.clip(mm.start(response_scale(model.design, np.asarray(model.design.y, float),
                                                                      observed)), mm.lower(), mm.upper()))


def check_user_covariances(mm, phi: np.ndarray, at_start: bool = True) -> np.ndarray:
    """Every user-written covariance of ``mm`` evaluated at ``phi`` (``covfuns.check_at_start``: an (S, S)
    finite, symmetric, positive semi-definite matrix with finite derivatives; at the estimate the matrix
    only); ``phi`` unchanged."""
    from ..core.params.covfuns import check_at_start, check_matrix

    for t, off in zip(mm.terms, mm.offsets):
        if t.cov.origin is None:
            continue
        p = phi[off:off + t.cov.n_params]
        if at_start:
            check_at_start(t.cov, p, t.z.shape[1])
        else:
            check_matrix(t.cov, p, t.z.shape[1], "the estimate")
    return phi
