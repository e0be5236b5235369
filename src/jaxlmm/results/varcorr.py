"""Variance components from theta and sigma, as lme4's ``as.data.frame(VarCorr(m))``.

For term k the covariance of one level's random effects is
``Sigma_k = sigma^2 lambda_k lambda_k^T``; rows are the variances
(``var1 = column``, ``sdcor`` = standard deviation) followed by the covariances
of the lower triangle in column-major order (``var1 = column j``,
``var2 = row i``, ``sdcor`` = correlation), then ``Residual`` with sigma^2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.params.covariance import sd_and_cor, term_covariance
from ..model.naming import unique_group_names


def varcorr_frame(lambdas: list[np.ndarray], groups: list[str], columns: list[tuple[str, ...]],
                  sigma: float) -> pd.DataFrame:
    rows = []
    for lam, grp, cols in zip(lambdas, unique_group_names(groups), columns):
        cov = term_covariance(lam, sigma)
        sd, cor = sd_and_cor(cov)
        for i, c in enumerate(cols):
            rows.append((grp, c, "", cov[i, i], sd[i]))
        for j in range(len(cols)):
            for i in range(j + 1, len(cols)):
                rows.append((grp, cols[j], cols[i], cov[i, j], cor[i, j]))
    rows.append(("Residual", "", "", sigma ** 2, sigma))
    return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])
