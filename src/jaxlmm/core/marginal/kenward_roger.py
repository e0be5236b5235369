"""Kenward-Roger's ingredients for a ``marginal.MarginalModel`` (pbkrtest's ``vcovAdj``).

At the REML estimate, with ``V_i = dV/dphi_i``, ``V_ij`` the second derivatives,
``P_i = dM/dphi_i = -X^T V^-1 V_i V^-1 X`` (``M = X^T V^-1 X``, ``Phi = M^-1``),
``Q_ij = X^T V^-1 V_i V^-1 V_j V^-1 X`` and ``R_ij = X^T V^-1 V_ij V^-1 X``:

    IE2_ij = tr(P V_i P V_j)        (P the REML projection; twice the expected information)
    W      = 2 IE2^-1
    Phi_A  = Phi + 2 Phi [sum_ij W_ij (Q_ij - P_i Phi P_j - R_ij / 4)] Phi

(Kenward & Roger 1997; ``R`` vanishes for covariances linear in their parameters, as in
pbkrtest).  The residual parameters enter as the residual levels' variances (linear) where
those are a reparametrization of them (one SD, or a dispformula such as ``~ factor``), else as
the dispersion model's coefficients with their second derivatives (``marginal/residual.py``);
the structures' parameters as they are defined (``params/covfuns.py``).
"""

from __future__ import annotations

import numpy as np

from ..likelihood.ddf_parts import adjusted_covariance, information_inverse
from .criterion import MarginalModel, covariance


def _full(D, n):
    kind, A = D
    return np.diag(A) if kind == "diag" else A


def kenward_roger(model: MarginalModel, phi: np.ndarray, y: np.ndarray, rows: np.ndarray):
    """``(Phi, PhiA, P, W)`` at ``phi`` (REML) for the response ``y`` on ``rows``."""
    n = len(rows)
    d = covariance(model, phi, rows)
    base = model.offsets[-1]
    first = [_full(D, n) for D in d.first]
    second = {key: _full(D, n) for key, D in d.second.items()}
    res = model.residual
    if res.linear_in_levels:                        # the levels' variances: V_l = diag(1{level l} / w), no V_ll
        codes = res.codes[rows]
        for r in range(res.n_levels):
            first[base + r] = np.diag((codes == r) / model.w[rows])
        for key in [key for key in second if key[0] >= base]:
            second.pop(key)
    X = model.X[rows]
    Vi = np.linalg.inv(d.V)
    ViX = Vi @ X
    Phi = np.linalg.inv(X.T @ ViX)
    Pm = Vi - ViX @ Phi @ ViX.T
    k = len(first)
    ViViX = [Vi @ (Vj @ ViX) for Vj in first]
    P = np.stack([-ViX.T @ Vj @ ViX for Vj in first])
    PV = [Pm @ Vj for Vj in first]
    IE2 = np.array([[float(np.einsum("ab,ba->", PV[i], PV[j])) for j in range(k)] for i in range(k)])
    W = information_inverse(np, IE2)
    S = np.zeros((k, k) + Phi.shape)                 # Q_ij - R_ij / 4 (module docstring)
    for i in range(k):
        for j in range(k):
            if W[i, j] == 0.0:
                continue
            S[i, j] = ViX.T @ first[i] @ ViViX[j]
            key = (min(i, j), max(i, j))
            if key in second:
                S[i, j] -= 0.25 * (ViX.T @ second[key] @ ViX)
    return Phi, adjusted_covariance(np, Phi, P, W, S), P, W
