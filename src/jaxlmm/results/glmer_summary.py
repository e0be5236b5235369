"""``print(summary(m))`` of a ``glmerMod``: family, fit statistics, random effects, Wald z tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .summary import _groups_line, correlation_table, fixed_effects_table, format_table, random_effects_table

LABEL = {"binomial": "binomial", "poisson": "poisson", "negative_binomial": "Negative Binomial",
         "gamma": "Gamma"}


def format_glmer_summary(fit) -> str:
    """lme4's summary of a GLMM (``results/glmer_result.py``)."""
    approx = "Laplace Approximation" if fit.nagq == 1 else f"Adaptive Gauss-Hermite Quadrature, nAGQ = {fit.nagq}"
    family = LABEL[fit.family]
    if fit.family == "negative_binomial":
        family += f"({fit.dispersion:.4g})"
    lines = [f"Generalized linear mixed model fit by maximum likelihood ({approx}) ['glmerMod']",
             f" Family: {family}  ( {fit.link} )",
             f"Formula: {fit.design.response_name} ~ {fit.design.formula.text.split('~', 1)[1].strip()}"]
    if fit.data_name:
        lines.append(f"   Data: {fit.data_name}")
    lines.append("")
    stats = pd.DataFrame([[f"{fit.aic:.1f}", f"{fit.bic:.1f}", f"{fit.loglik:.1f}", f"{fit.deviance:.1f}",
                           str(fit.nobs - fit.df_model)]], columns=["AIC", "BIC", "logLik", "deviance", "df.resid"])
    lines += [format_table(stats, index=False), ""]
    q = np.quantile(fit.residuals("pearson"), [0, 0.25, 0.5, 0.75, 1.0])
    lines += ["Scaled residuals: ", format_table(pd.DataFrame([[f"{v:.4f}" for v in q]],
                                                              columns=["Min", "1Q", "Median", "3Q", "Max"]),
                                                 index=False), ""]
    lines += ["Random effects:", random_effects_table(fit), _groups_line(fit), ""]
    if fit.family == "gamma":
        lines += [f"Dispersion (coefficient of variation, glmmTMB's sigma): {fit.dispersion:.4g}", ""]
    lines += ["Fixed effects:", fixed_effects_table(fit, fit.coef_table())]
    if len(fit.fixef_names) > 1:
        lines += ["", "Correlation of Fixed Effects:", correlation_table(fit)]
    lines += fit.messages
    return "\n".join(lines)
