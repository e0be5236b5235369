"""The arrays of a multivariate model: one eigendecomposition of ``Z K Z^T`` and the missing entries.

With ``Z K Z^T = U diag(s) U^T`` (n x n over the records; ``K = I`` for a grouping factor without a
relationship matrix) the complete-data covariance ``Sigma_g (x) Z K Z^T + Sigma_e (x) I`` is block diagonal
after the rotation ``U^T``: record k of ``U^T Y`` has the d x d covariance ``V_k = s_k Sigma_g + Sigma_e``.
Missing entries are kept in the rotation as zeros, and their rows of ``U`` are gathered by trait
(``Um[t, a] = U[row of the a-th missing entry of trait t]``, padded to the largest count with zero rows,
``m_mask`` marking the real ones): ``criterion.py`` integrates them out exactly through them.
Records with every trait missing carry no information and are dropped before the rotation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class MultivariateData(NamedTuple):
    """Rotated arrays of one multivariate model (module docstring); JAX or NumPy arrays."""

    Xr: object        # (n, p) U^T X
    Yr: object        # (n, d) U^T Y0, Y0 = Y with its missing entries set to 0
    s: object         # (n,) eigenvalues of Z K Z^T
    Um: object        # (d, m_max, n) rows of U of each trait's missing entries (zero rows where padded)
    m_mask: object    # (d, m_max) which of them are real
    n_obs: object     # () the number of observed entries


class Rotation(NamedTuple):
    """The host-side pieces kept for the estimates: ``U``, the kept records, the missing entries."""

    U: np.ndarray           # (n, n)
    rows: np.ndarray        # the design's records kept (some trait observed)
    missing: list           # per trait: the positions (in the kept records) of its missing entries


def rotate(X: np.ndarray, Y: np.ndarray, ZKZ: np.ndarray) -> tuple[MultivariateData, Rotation]:
    """``MultivariateData`` of ``X`` (n, p), ``Y`` (n, d; NaN = missing) and ``Z K Z^T`` (n, n), NumPy."""
    Y = np.asarray(Y, float)
    keep = np.flatnonzero(np.isfinite(Y).any(axis=1))
    X, Y = np.asarray(X, float)[keep], Y[keep]
    ZKZ = np.asarray(ZKZ, float)[np.ix_(keep, keep)]
    s, U = np.linalg.eigh(0.5 * (ZKZ + ZKZ.T))
    s = np.maximum(s, 0.0)                     # rounding below 0 on a singular K
    missing = [np.flatnonzero(~np.isfinite(Y[:, t])) for t in range(Y.shape[1])]
    m_max = max((len(m) for m in missing), default=0)
    d, n = Y.shape[1], len(keep)
    Um = np.zeros((d, m_max, n))
    m_mask = np.zeros((d, m_max), bool)
    for t, m in enumerate(missing):
        Um[t, :len(m)] = U[m]
        m_mask[t, :len(m)] = True
    Y0 = np.where(np.isfinite(Y), Y, 0.0)
    data = MultivariateData(U.T @ X, U.T @ Y0, s, Um, m_mask, np.asarray(float(np.isfinite(Y).sum())))
    return data, Rotation(U, keep, missing)
