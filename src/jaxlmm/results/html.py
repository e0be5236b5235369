"""Jupyter's display of fits and batches (``_repr_html_``): lme4's summary as HTML tables.

The parts are built from the numbers the plain text uses (``summary.py``'s formatting of the same
covariances, coefficient table and lines) and rendered by ``inference.html_tables.html_report``, which
escapes every user-supplied string (column names, factor levels, trait and data names).  The plain text
stays the ``repr``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..inference.html_tables import html_report


# ------------------------------------------------------------------ single fits (LmerResult, StructuredResult)
MAX_CORRELATIONS = 12     # fixed effects up to which the correlations are shown (lme4's lme4.summary.cor.max)


def correlation_frame(fit) -> pd.DataFrame:
    """The ``Correlation of Fixed Effects:`` lower triangle as ``summary.correlation_table`` prints it."""
    from ..core.params.covariance import sd_and_cor
    from .summary import abbreviate

    _, cor = sd_and_cor(fit.vcov.to_numpy())
    names = fit.fixef_names
    rows = [[f"{cor[i, j]:.3f}".replace("0.", ".", 0) if j < i else "" for j in range(len(names) - 1)]
            for i in range(1, len(names))]
    return pd.DataFrame(rows, index=names[1:], columns=[abbreviate(n) for n in names[:-1]])


def shown_coef_table(table: pd.DataFrame) -> pd.DataFrame:
    """A coefficient table's numbers as the summary prints them (``summary.fixed_effects_table``):
    R's common decimals per column, p-values as ``format.pval``."""
    from .summary import _column, _pvalue

    return pd.DataFrame({col: ([_pvalue(v) for v in table[col].to_numpy(dtype=float)] if str(col).startswith("Pr(")
                               else _column(table[col].to_numpy(dtype=float), 4)) for col in table.columns},
                        index=table.index)


def fit_html(fit) -> str:
    """lme4's ``summary(m)`` of one fit as HTML: the header lines (``summary.format_summary``'s), the
    information criteria (ML), scaled residuals, random effects, covariance parameters (structured fits)
    and the fixed effects with SE, df, t (or z) and p of ``fit.coef_table()`` with the default ``ddf`` of
    ``fit.summary()`` (the estimates, SEs and t values alone, with the reason, if the df fail)."""
    from ..inference.ddf import normalize_ddf
    from .summary import _column, _groups_line, _wald_table, random_effects_frame

    method = normalize_ddf(fit._default_ddf)
    suffix = {"satterthwaite": ". t-tests use Satterthwaite's method",
              "kenward-roger": ". t-tests use Kenward-Roger's method",
              "residual": ". t-tests use n - p df", "asymptotic": ". z-tests"}[method]
    kind, note = "lmerModLmerTest", None
    try:
        coefs = fit.coef_table(method)
    except Exception as exc:       # a display never fails: the Wald table without df, and why
        coefs, suffix, kind = _wald_table(fit), "", "lmerMod"
        note = f"(df and p-values not available: {exc})"
    title = f"Linear mixed model fit by {'REML' if fit.reml else 'maximum likelihood'}{suffix} ['{kind}']"
    blocks: list = [f"Formula: {fit.formula}", f"   Data: {fit.data_name}" if fit.data_name else None]
    if fit.reml:
        blocks.append(f"REML criterion at convergence: {fit.criterion:.1f}")
    else:
        blocks.append((None, pd.DataFrame([[f"{fit.aic:.1f}", f"{fit.bic:.1f}", f"{fit.loglik:.1f}",
                                            f"{fit.deviance:.1f}", str(fit.nobs - fit.df_model)]],
                                          columns=["AIC", "BIC", "logLik", "deviance", "df.resid"]), False))
    q = np.quantile(fit.residuals("pearson", scaled=True), [0, 0.25, 0.5, 0.75, 1.0])
    blocks.append(("Scaled residuals:", pd.DataFrame([[f"{v:.4f}" for v in q]],
                                                    columns=["Min", "1Q", "Median", "3Q", "Max"]), False))
    blocks.append(("Random effects:", random_effects_frame(fit), False))
    if fit.kind == "structured":     # lme4's summary has no such table: its fits show VarCorr only
        cp = fit.covariance_parameters
        shown = pd.DataFrame({"Group": cp["grp"], "Structure": cp["structure"], "Parameter": cp["parameter"],
                              "Estimate": _column(cp["estimate"].to_numpy()),
                              "Std. Error": [v if v != "nan" else "" for v in _column(cp["se"].to_numpy())]})
        blocks.append(("Covariance parameters (Wald SEs):", shown, False))
    blocks.append(_groups_line(fit))
    blocks.append(("Fixed effects:", shown_coef_table(coefs)))
    blocks.append(note)
    if 1 < len(fit.fixef_names) <= MAX_CORRELATIONS:
        blocks.append(("Correlation of Fixed Effects:", correlation_frame(fit)))
    blocks.extend(fit.messages)
    return html_report(title, blocks)


# ------------------------------------------------------------------ batches
def batch_html(batch) -> str:
    """A ``BatchResult``: its counts line, the traits per status and one row per trait (``to_frame()``;
    the first and last ten of a long batch)."""
    method = "REML" if batch.reml else "ML"
    counts = batch.status.value_counts().rename_axis("status").rename("traits").to_frame()
    blocks = [f"Formula: {batch.formula}", batch.summary(), ("Traits per status:", counts),
              (f"Per trait ({batch.n_traits}):", batch.to_frame())]
    return html_report(f"Batch of {batch.n_traits} traits fit by {method}", blocks)
