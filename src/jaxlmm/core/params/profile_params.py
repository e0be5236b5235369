"""lme4's profile parameters of the variance components: ``w = (sd, atanh(cor), log sigma)``.

Per term, in lme4's order (the lower triangle of its covariance, column by
column), an sd for each diagonal element and ``atanh`` of the correlation for
each off-diagonal one; ``log sigma`` last.  NumPy only: the profile
(``profile.py``, ``pls/profile_lanes.py``) uses these layouts.
"""

from __future__ import annotations

import numpy as np

from .covariance import sd_and_cor, term_covariance
from .structure import ReStructure, theta_positions


def varpar_kinds(structure: ReStructure) -> np.ndarray:
    """Per variance parameter (lme4's order, then sigma): 0 = sd, 1 = cor, 2 = sigma."""
    kinds = []
    for t in structure.terms:
        rows, cols = theta_positions(t)
        kinds.extend(np.where(rows == cols, 0, 1))
    kinds.append(2)
    return np.asarray(kinds, dtype=np.int32)


def w_reflections(structure: ReStructure) -> np.ndarray:
    """Flipping an sd at 0 together with its correlations leaves the deviance unchanged."""
    k = structure.ntheta + 1
    R = np.zeros((k, k), dtype=bool)
    for t, off in zip(structure.terms, structure.theta_offsets):
        rows, cols = theta_positions(t)
        for a in range(t.ntheta):
            if rows[a] == cols[a]:
                for b in range(t.ntheta):
                    if rows[b] != cols[b] and rows[a] in (rows[b], cols[b]):
                        R[off + a, off + b] = True
    return R


def w_from_theta_sigma(theta: np.ndarray, sigma: float, structure: ReStructure) -> np.ndarray:
    """w at an estimate (theta, sigma) (NumPy; ``profile_block.theta_sigma`` maps back, with the
    correlations themselves in place of their atanh)."""
    out = []
    for lam, t in zip(structure.lambdas_numpy(theta), structure.terms):
        sd, cor = sd_and_cor(term_covariance(lam, sigma))
        rows, cols = theta_positions(t)
        for i, j in zip(rows, cols):
            if i == j:
                out.append(sd[i])
            else:
                r = 0.0 if np.isnan(cor[i, j]) else cor[i, j]
                out.append(np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12)))
    out.append(np.log(sigma))
    return np.asarray(out)
