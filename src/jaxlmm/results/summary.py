"""Text summaries that read like lme4's ``print(summary(m))``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.params.covariance import sd_and_cor
from ..model.naming import unique_group_names


def _column(values, digits: int = 4) -> list[str]:
    """R-style column formatting: common number of decimals for a column."""
    vals = np.asarray(values, dtype=float)
    finite = vals[np.isfinite(vals)]
    if finite.size == 0:
        return [str(v) for v in vals]
    big = np.max(np.abs(finite))
    small = np.min(np.abs(finite[finite != 0])) if np.any(finite != 0) else big
    mag = int(np.floor(np.log10(small))) if small > 0 else 0
    decimals = min(max(digits - 1 - mag, 0), 8)
    if big >= 1e15 or (big < 1e-4 and big > 0):
        return [f"{v:.{digits - 1}e}" for v in vals]
    return [f"{v:.{decimals}f}" for v in vals]


def abbreviate(name: str, minlength: int = 6) -> str:
    """R's ``abbreviate``: drop lower-case vowels, then lower-case letters, from the right."""
    chars = list(name)
    for pool in ("aeiou", "abcdefghijklmnopqrstuvwxyz"):
        i = len(chars) - 1
        while len(chars) > minlength and i > 0:
            if chars[i] in pool:
                del chars[i]
            i -= 1
    return "".join(chars[:max(minlength, 1)]) if len(chars) > minlength else "".join(chars)


def format_table(frame: pd.DataFrame, index: bool = True) -> str:
    """Right-aligned plain-text table."""
    cells = [[str(c) for c in frame.columns]]
    for _, row in frame.iterrows():
        cells.append([str(v) for v in row])
    labels = [""] + [str(i) for i in frame.index] if index else None
    widths = [max(len(r[j]) for r in cells) for j in range(len(cells[0]))]
    lw = max(len(s) for s in labels) if labels else 0
    lines = []
    for r, row in enumerate(cells):
        left = labels[r].ljust(lw) + " " if labels else ""
        lines.append(left + " ".join(c.rjust(w) for c, w in zip(row, widths)))
    return "\n".join(lines)


MAX_SHOWN = 8   # columns of a term shown in the summary (a spatial term may have hundreds)


def random_effects_frame(fit) -> pd.DataFrame:
    """The ``Random effects:`` rows (Groups, Name, Variance, Std.Dev., Corr) from ``fit.term_covariances`` and
    ``fit.residual_variances``, numbers formatted as the summary prints them (text and HTML alike)."""
    rows = []
    groups = unique_group_names([t.group for t in fit.design.terms])
    for t, grp, cov in zip(fit.design.terms, groups, fit.term_covariances):
        sd, cor = sd_and_cor(cov)
        shown = min(len(t.columns), MAX_SHOWN)
        for i, col in enumerate(t.columns[:shown]):
            rows.append([grp if i == 0 else "", col, cov[i, i], sd[i], " ".join(f"{cor[i, j]:.2f}" for j in range(i))])
        if shown < len(t.columns):
            rows.append(["", f"... ({len(t.columns) - shown} more)", np.nan, np.nan, ""])
    for name, variance in fit.residual_variances:
        rows.append([name, "", variance, np.sqrt(variance), ""])
    blank = lambda values: [v if v != "nan" else "" for v in _column(values)]  # noqa: E731
    return pd.DataFrame({"Groups": [r[0] for r in rows], "Name": [r[1] for r in rows],
                         "Variance": blank([r[2] for r in rows]), "Std.Dev.": blank([r[3] for r in rows]),
                         "Corr": [r[4] for r in rows]})


def random_effects_table(fit) -> str:
    """The ``Random effects:`` block (Groups, Name, Variance, Std.Dev., Corr)."""
    frame = random_effects_frame(fit)
    table = [list(frame.columns)] + frame.astype(str).values.tolist()
    widths = [max(len(row[j]) for row in table) for j in range(5)]
    lines = []
    for row in table:
        lines.append(" " + " ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]),
                                     row[3].rjust(widths[3]), row[4].ljust(widths[4])]).rstrip())
    return "\n".join(lines)


def _groups_line(fit) -> str:
    """``Number of obs: n, groups:  g, l_g, ...`` (each grouping factor once)."""
    seen = {}
    for t in fit.design.terms:
        seen.setdefault(t.group, len(t.factor.levels))
    parts = ", ".join(f"{g}, {n}" for g, n in seen.items())
    return f"Number of obs: {fit.nobs}, groups:  {parts}"


def fixed_effects_table(fit, coef_table: pd.DataFrame | None = None) -> str:
    """The ``Fixed effects:`` block: ``coef_table`` (default: estimates, standard errors and
    t values), numbers per column as R prints them, p-values as ``format.pval`` does."""
    table = coef_table if coef_table is not None else _wald_table(fit)
    shown = pd.DataFrame(index=table.index)
    for col in table.columns:
        vals = table[col].to_numpy(dtype=float)
        shown[col] = [_pvalue(v) for v in vals] if col.startswith("Pr(") else _column(vals, 4)
    return format_table(shown)


def _pvalue(p: float) -> str:
    """A p-value as lme4 prints it: 3 significant digits, ``<2e-16`` below machine precision."""
    if not np.isfinite(p):
        return "NA"
    if p < 2e-16:
        return "<2e-16"
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.2e}"


def _wald_table(fit) -> pd.DataFrame:
    """Estimates ``beta``, standard errors ``se`` and t values ``beta / se`` of the fixed effects."""
    est = fit.fixef.to_numpy()
    se = fit.se.to_numpy()
    return pd.DataFrame({"Estimate": est, "Std. Error": se, "t value": est / se}, index=fit.fixef_names)


def correlation_table(fit) -> str:
    """The ``Correlation of Fixed Effects:`` block: the lower triangle of ``D^{-1/2} V D^{-1/2}``
    (``V`` the covariance of the estimates, ``D`` its diagonal), names abbreviated as R does."""
    _, cor = sd_and_cor(fit.vcov.to_numpy())
    names = fit.fixef_names
    abbrev = [abbreviate(n) for n in names[:-1]]
    rows = []
    for i in range(1, len(names)):
        rows.append([f"{cor[i, j]:.3f}".replace("0.", ".", 0) for j in range(i)] + [""] * (len(names) - 1 - i))
    frame = pd.DataFrame(rows, index=names[1:], columns=abbrev)
    lines = format_table(frame).splitlines()
    return "\n".join(line.rstrip() for line in lines)


def format_summary(fit, coef_table: pd.DataFrame | None = None, title_suffix: str = "") -> str:
    """``print(summary(m))`` of lme4 (of lmerTest with a ``title_suffix`` and its ``coef_table``)."""
    method = "REML" if fit.reml else "maximum likelihood"
    structured = fit.structure_description if fit.kind == "structured" else None
    if structured:          # no lme4 or lmerTest class: the structures and the residual model instead
        kind = structured
    else:
        kind = "'lmerModLmerTest'" if title_suffix else "'lmerMod'"
    lines = [f"Linear mixed model fit by {method}{title_suffix} [{kind}]",
             f"Formula: {fit.formula}"]
    if structured and fit.design.dispformula is not None:
        lines.append(f"Dispersion: {fit.design.dispformula}")
    if fit.data_name:
        lines.append(f"   Data: {fit.data_name}")
    lines.append("")
    if fit.reml:
        lines.append(f"REML criterion at convergence: {fit.criterion:.1f}")
    else:
        stats = pd.DataFrame([[f"{fit.aic:.1f}", f"{fit.bic:.1f}", f"{fit.loglik:.1f}", f"{fit.deviance:.1f}",
                               str(fit.nobs - fit.df_model)]],
                             columns=["AIC", "BIC", "logLik", "deviance", "df.resid"])
        lines.append(format_table(stats, index=False))
    lines.append("")
    from ..errors import JaxlmmError

    try:
        res = fit.residuals("pearson", scaled=True)
    except JaxlmmError as exc:          # a residual SD at its bound 0: the residuals say why
        lines.append(f"Scaled residuals: {exc}")
    else:
        q = np.quantile(res, [0, 0.25, 0.5, 0.75, 1.0])
        lines.append("Scaled residuals: ")
        lines.append(format_table(pd.DataFrame([[f"{v:.4f}" for v in q]],
                                               columns=["Min", "1Q", "Median", "3Q", "Max"]), index=False))
    lines.append("")
    lines.append("Random effects:")
    lines.append(random_effects_table(fit))
    if structured:
        lines.append("\nCovariance parameters (Wald SEs):")
        cp = fit.covariance_parameters.set_index(["grp", "structure", "parameter"])
        shown = pd.DataFrame({"Estimate": _column(cp["estimate"].to_numpy()),
                              "Std. Error": [v if v != "nan" else "" for v in _column(cp["se"].to_numpy())]},
                             index=[" ".join(i) for i in cp.index])
        lines.append(format_table(shown))
    lines.append(_groups_line(fit))
    lines.append("")
    lines.append("Fixed effects:")
    lines.append(fixed_effects_table(fit, coef_table))
    if len(fit.fixef_names) > 1:
        lines.append("")
        lines.append("Correlation of Fixed Effects:")
        lines.append(correlation_table(fit))
    for msg in fit.messages:
        lines.append(msg)
    return "\n".join(lines)


def format_short(fit) -> str:
    """A few lines: method, formula, criterion, nobs, sigma and the fixed effects."""
    method = "REML" if fit.reml else "maximum likelihood"
    crit = f"REML criterion at convergence: {fit.criterion:.4f}" if fit.reml else f"deviance: {fit.criterion:.4f}"
    fe = ", ".join(f"{k} = {v:.4g}" for k, v in fit.fixef.items())
    return (f"<{type(fit).__name__} fit by {method}: {fit.formula}\n  {crit}; nobs = {fit.nobs}; sigma = {fit.sigma:.4g}\n"
            f"  fixef: {fe}>")
