"""Aliased (linearly dependent) columns of the fixed-effects matrix, by R's pivoting QR rule."""

from __future__ import annotations

import numpy as np


def aliased_columns(X: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """Columns linearly dependent on earlier ones (R's ``qr(X, tol = 1e-7)`` rule).

    Column j is aliased when its residual on the earlier kept columns is at most
    ``tol`` times its norm.  The residuals come from a Cholesky factor of ``X^T X``
    grown column by column over the kept columns (one BLAS product, then ``O(p^2)``
    per column): ``|r_j|^2 = x_j^T x_j - |L^{-1} X_K^T x_j|^2``.  That difference
    cancels where the residual is tiny, so a column whose relative residual is
    below ``1e-5`` by it is decided again exactly, by least squares on the rows.
    """
    from scipy.linalg import solve_triangular

    X = np.asarray(X, dtype=float)
    p = X.shape[1]
    G = X.T @ X
    norms2 = np.diag(G).copy()
    aliased = np.zeros(p, dtype=bool)
    L = np.zeros((p, p))
    kept: list[int] = []
    for j in range(p):
        if norms2[j] == 0:
            aliased[j] = True
            continue
        k = len(kept)
        r = solve_triangular(L[:k, :k], G[kept, j], lower=True, check_finite=False) if k else np.zeros(0)
        resid2 = norms2[j] - r @ r
        if resid2 <= 1e-10 * norms2[j]:
            if k:
                coef, *_ = np.linalg.lstsq(X[:, kept], X[:, j], rcond=None)
                exact = X[:, j] - X[:, kept] @ coef
            else:
                exact = X[:, j]
            resid2 = float(exact @ exact)
        if resid2 <= tol * tol * norms2[j]:
            aliased[j] = True
            continue
        L[k, :k] = r
        L[k, k] = np.sqrt(resid2)
        kept.append(j)
    return aliased
