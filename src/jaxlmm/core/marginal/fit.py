"""Fitting and estimates of a ``marginal.MarginalModel``: host Newton, then BLUEs and BLUPs.

At the optimum ``phi``: ``beta = (X^T V^-1 X)^-1 X^T V^-1 y`` with covariance
``(X^T V^-1 X)^-1``; term t's BLUPs ``b_t = (K_t kron C_t) Z_t^T V^-1 (y - X beta)``
and their conditional covariances (lme4's ``condVar``)
``K_t[l, l] C_t - C_t W_l^T V^-1 W_l C_t`` with ``W_l = Z_t (K_t[:, l] kron I)`` (the BLUP of a
level's effect at a position the fit did not see is ``C_t(s0, S) Z_t^T V^-1 (y - X beta)``, kriging); fitted
values ``y - R V^-1 (y - X beta)`` (``R`` the residual covariance); the parameters'
covariance ``A = 2 H^-1`` from the criterion's Hessian (Wald standard errors).  glmmTMB's
standard errors of beta add the variance parameters' uncertainty, ``Phi + J A J^T``
with ``J = d beta / d phi`` (the inverse of the joint Hessian's beta block).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .criterion import MarginalModel, _apply, covariance, evaluate, factor
from ..optim.host import minimize_newton_host
from ..optim.newton import NewtonOptions, OptimResult


SMALL_N = 1024


class MarginalEstimates(NamedTuple):
    criterion: float
    beta: np.ndarray
    vcov_beta: np.ndarray
    b: tuple            # per term (levels, S)
    cond_var: tuple     # per term (levels, S, S)
    covariances: tuple  # per term C_t (S, S)
    residual_sd: np.ndarray     # per residual level (marginal/residual.py)
    fitted: np.ndarray
    hessian: np.ndarray
    logdet_V: float
    logdet_Q: float
    quad: float
    beta_jacobian: np.ndarray   # (p, k): d beta / d phi = -Phi X^T V^-1 V_j P y
    vcov_jacobian: np.ndarray   # (k, p, p): d Phi / d phi = Phi X^T V^-1 V_j V^-1 X Phi
    zt_vinv_r: tuple = ()       # per term (levels, S): Z_t^T V^-1 (y - X beta), b_t = this C_t (kriging)


def _reflections(model: MarginalModel) -> np.ndarray:
    """Sign flips of an unstructured factor's columns (``ReStructure.reflections``)."""
    R = np.zeros((model.n_params, model.n_params))
    for t, off in zip(model.terms, model.offsets):
        if t.cov.name != "us":
            continue
        S = t.z.shape[1]
        rows, cols = np.tril_indices(S)
        order = np.lexsort((rows, cols))
        rows, cols = rows[order], cols[order]
        for a in range(len(rows)):
            if rows[a] == cols[a]:
                R[off + a, off + np.flatnonzero((cols == cols[a]) & (rows > rows[a]))] = 1.0
    return R


def fit_marginal(model: MarginalModel, Y: np.ndarray, observed: np.ndarray, reml: bool, phi0: np.ndarray,
                 options: NewtonOptions = NewtonOptions()) -> OptimResult:
    """Minimize the criterion of each response ``Y[:, b]`` (rows ``observed[:, b]``) from ``phi0`` (B, k)."""
    rows_of = [np.flatnonzero(observed[:, b]) for b in range(Y.shape[1])]

    def vgh(x, lanes):
        out = [evaluate(model, xi, Y[rows_of[b], b], rows_of[b], reml) for xi, b in zip(x, lanes)]
        return (np.array([e.value for e in out]), np.stack([e.grad for e in out]),
                np.stack([e.hess for e in out]))

    with blas_threads(Y.shape[0]):
        return minimize_newton_host(vgh, None, np.asarray(phi0, float), model.lower(), options,
                                    _reflections(model), upper=model.upper())


def blas_threads(n: int):
    """One BLAS thread for matrices below ``SMALL_N`` rows (``threads.small_blas``)."""
    from ..linalg.threads import small_blas

    return small_blas(n < SMALL_N)


def estimates(model: MarginalModel, phi: np.ndarray, y: np.ndarray, rows: np.ndarray, reml: bool):
    """``MarginalEstimates`` at ``phi`` for the response ``y`` on ``rows`` (module docstring)."""
    with blas_threads(len(rows)):
        return _estimates(model, phi, y, rows, reml)


def _estimates(model: MarginalModel, phi: np.ndarray, y: np.ndarray, rows: np.ndarray, reml: bool):
    d = covariance(model, phi, rows, second=False)
    X = model.X[rows]
    f = factor(d.V, X, y, reml)
    if f is None:
        raise np.linalg.LinAlgError("the marginal covariance is not positive definite at the estimate")
    Vir = f.Py
    b, cond, covs, weights = [], [], [], []
    for t, off in zip(model.terms, model.offsets):
        C = t.cov.derivatives(phi[off:off + t.cov.n_params])[0]
        S, L = C.shape[0], t.nlevels
        Zfull = np.zeros((len(rows), L * S))
        cols = t.codes[rows][:, None] * S + np.arange(S)[None, :]
        np.put_along_axis(Zfull, cols, t.z[rows], axis=1)
        K = np.eye(L) if t.K is None else t.K
        if t.K is not None:
            Zfull = Zfull @ np.kron(K, np.eye(S))
        ZtVir = (Zfull.T @ Vir).reshape(L, S)
        b.append(ZtVir @ C)
        weights.append(ZtVir)
        B = (Zfull.T @ f.Vi @ Zfull).reshape(L, S, L, S)
        Bll = np.einsum("lalb->lab", B)
        cond.append(np.diagonal(K)[:, None, None] * C[None] - np.einsum("ab,lbc,cd->lad", C, Bll, C))
        covs.append(C)
    psi = phi[model.offsets[-1]:]
    resid_var = model.residual.variances(psi, rows) / model.w[rows]
    fitted = y - resid_var * Vir
    H = evaluate(model, phi, y, rows, reml).hess
    ViX = f.Vi @ X
    left = f.vcov_beta @ ViX.T                                           # Phi X^T V^-1
    J = np.stack([-left @ _apply(Dj, f.Py) for Dj in d.first], axis=1)
    dPhi = np.stack([left @ _apply_matrix(Dj, left.T) for Dj in d.first])
    return MarginalEstimates(f.value, f.beta, f.vcov_beta, tuple(b), tuple(cond), tuple(covs),
                             model.residual.level_sd(psi), fitted, H,
                             f.logdet_V, f.logdet_Q, float(y @ f.Py), J, dPhi, tuple(weights))


def _apply_matrix(D, M):
    """``V_j M``."""
    kind, A = D
    return A[:, None] * M if kind == "diag" else A @ M


def parameter_covariance(hessian: np.ndarray, lower: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """``2 H^-1`` on the parameters off their bounds (NaN rows and columns for those at a bound)."""
    k = len(phi)
    free = ~(np.isfinite(lower) & (phi <= lower + 1e-8 * np.maximum(1.0, np.abs(phi))))
    out = np.full((k, k), np.nan)
    if free.any():
        Hf = hessian[np.ix_(free, free)]
        try:
            out[np.ix_(free, free)] = 2.0 * np.linalg.inv(Hf)
        except np.linalg.LinAlgError:
            pass
    return out


def fit_lanes(model: MarginalModel, Y: np.ndarray, reml: bool, phi0: np.ndarray,
              options: NewtonOptions = NewtonOptions()):
    """Minimize the criterion of every column of ``Y`` (all rows observed) from ``phi0`` (B, k), the
    lanes batched (``marginal/lanes.py``); the optimizer's result and each lane's beta."""
    from .blocks import BlockLayout, block_terms, row_blocks
    from .lanes import evaluate_lanes

    rows = np.arange(Y.shape[0])
    layout = BlockLayout(row_blocks(model, rows))
    terms = block_terms(model, rows, layout)

    def vgh(x, lanes):
        return evaluate_lanes(model, x, Y[:, lanes], rows, reml, layout, terms)[:3]

    with blas_threads(Y.shape[0]):
        res = minimize_newton_host(vgh, None, np.asarray(phi0, float), model.lower(), options,
                                   _reflections(model), upper=model.upper())
        beta = evaluate_lanes(model, res.theta, Y, rows, reml, layout, terms)[3]
    return res, beta
