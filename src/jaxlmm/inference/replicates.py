"""The default replicate statistics of a bootstrap: fixed effects, each term's SDs and correlations
(lme4's ``confint`` names) and sigma, from each replicate's estimates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.params.structure import reported_positions
from ..model.naming import confint_names


def replicate_statistics(design, fixef: pd.DataFrame, sigma: np.ndarray, lambdas) -> pd.DataFrame:
    """The replicate table from each replicate's fixed effects, sigma and relative covariance factors
    (per term an array (B, S, S)): fixed effects, then sd/cor of each term (lme4's names) and sigma."""
    cols = {}
    for t, L in zip(design.terms, lambdas):
        cov = sigma[:, None, None] ** 2 * np.einsum("tij,tkj->tik", L, L)
        sd = np.sqrt(np.maximum(np.einsum("tii->ti", cov), 0.0))
        rows, columns = reported_positions(t.spec)
        for name, i, j in zip(confint_names(t.group, t.columns, t.cov), rows, columns):
            with np.errstate(invalid="ignore", divide="ignore"):
                cols[name] = sd[:, i] if i == j else cov[:, i, j] / (sd[:, i] * sd[:, j])
    cols["sigma"] = sigma
    return pd.concat([fixef, pd.DataFrame(cols)], axis=1)
