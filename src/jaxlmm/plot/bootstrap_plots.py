"""Histograms of bootstrap replicates (``bootMer``), with the estimates under ``confint``'s names."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._figure import _grid


def parameter_estimates(fit) -> pd.Series:
    """Estimates under ``confint``'s names: ``sd_(Intercept)|g``, ``cor_x.(Intercept)|g``, ``sigma``, fixed effects."""
    vc = fit.varcorr
    names, values = [], []
    for _, row in vc.iterrows():
        if row["grp"] == "Residual":
            continue
        names.append(f"sd_{row['var1']}|{row['grp']}" if row["var2"] == "" else
                     f"cor_{row['var2']}.{row['var1']}|{row['grp']}")
        values.append(row["sdcor"])
    names.append("sigma")
    values.append(fit.sigma)
    names.extend(fit.fixef_names)
    values.extend(fit.fixef.to_numpy().tolist())
    return pd.Series(values, index=names, name="estimate")


def bootstrap(boot_frame, estimates=None, level: float = 0.95, bins: int = 30, max_cols: int = 4):
    """Histograms of bootstrap replicates, one panel per parameter, with the estimate marked.

    lme4: ``hist(bootMer(m, FUN, nsim)$t[, j])`` for each column of the
    replicates (``confint(m, method = "boot")`` uses their percentiles).

    ``boot_frame`` has one row per replicate and one numeric column per
    parameter (``fit.bootstrap()``).  ``estimates`` (a mapping or Series
    keyed by column name, or a fitted model -- ``LmerResult``,
    ``StructuredResult`` or ``GlmerResult`` -- whose estimates are taken
    under ``confint``'s names) draws the estimate as a solid vertical
    line; dashed lines mark the percentile interval at ``level``.
    """
    frame = pd.DataFrame(boot_frame)
    cols = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    if not cols:
        raise ValueError("boot_frame has no numeric columns")
    from ..results.glmer_result import GlmerResult
    from ..results.linear_result import LinearMixedResult

    if isinstance(estimates, (LinearMixedResult, GlmerResult)):
        estimates = parameter_estimates(estimates)
    est = dict(estimates) if estimates is not None else {}
    alpha = (1 - level) / 2
    fig, axes = _grid(len(cols), max_cols=max_cols, panel=(3.4, 2.8))
    for ax, c in zip(axes, cols):
        x = frame[c].to_numpy(float)
        x = x[np.isfinite(x)]
        ax.hist(x, bins=bins, color="C0", alpha=0.75, edgecolor="white")
        if len(x):
            for q in np.quantile(x, [alpha, 1 - alpha]):
                ax.axvline(q, color="0.3", ls="--", lw=0.9)
        if c in est and est[c] is not None and np.isfinite(est[c]):
            ax.axvline(est[c], color="C3", lw=2, label="estimate")
        ax.set_title(str(c), fontsize=9)
        ax.set_xlabel("value")
        ax.set_ylabel("replicates")
    fig.tight_layout()
    return fig
