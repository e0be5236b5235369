"""A term's covariance from its relative factor, and its standard deviations and correlations (NumPy).

``Sigma_k = sigma^2 lambda_k lambda_k^T``; ``sd = sqrt(diag Sigma)`` and
``cor_ij = Sigma_ij / (sd_i sd_j)``, NaN where an sd is 0 (lme4 prints
nothing there; callers choose what to show).  Used wherever variance
components are reported: VarCorr, the printed summary, the profile's
parameters and the correlation of the fixed effects.
"""

from __future__ import annotations

import numpy as np


def term_covariance(lam: np.ndarray, sigma: float) -> np.ndarray:
    """``sigma^2 lambda lambda^T``."""
    lam = np.asarray(lam, dtype=float)
    return sigma ** 2 * lam @ lam.T


def sd_and_cor(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standard deviations and the correlation matrix of a covariance matrix (NaN where an sd is 0)."""
    cov = np.asarray(cov, dtype=float)
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    denom = np.outer(sd, sd)
    with np.errstate(invalid="ignore", divide="ignore"):
        cor = np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), np.nan)
    return sd, cor
