"""The shrinkage plot: within-group ("no pooling") against conditional ("partial pooling") estimates.

A level's conditional estimate (fixed effect + BLUP) lies between its own
least-squares estimate and the population value (the fixed effects); how far
it moves is how strongly the model pools it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._figure import _grid, _groups, _pyplot


def _group_columns(fit, group: str):
    """Columns and row-level Z (n, S) of all terms of ``group`` (as ``coef`` combines them)."""
    cols, zs, codes = [], [], None
    for t in fit.design.terms:
        if t.group == group:
            cols.extend(t.columns)
            zs.append(np.asarray(t.z, dtype=float))
            codes = np.asarray(t.factor.codes)
            levels = list(t.factor.levels)
    return cols, np.concatenate(zs, axis=1), codes, levels


def within_group_estimates(fit, group: str | None = None) -> pd.DataFrame:
    """Per-level least-squares estimates of the columns of ``group``'s random-effects terms.

    The "no pooling" estimates (lme4: ``coef(lmList(y ~ x | g, data))``): for
    each level, the weighted least-squares fit of the partial response
    ``y - offset - X_other beta_hat`` on the term's columns, where
    ``X_other`` are the fixed-effect columns that are not also random in
    ``group`` (for ``Reaction ~ Days + (1 | Subject)`` the intercept of each
    subject is the mean of ``Reaction - Days * beta_Days``).  Levels whose
    rows cannot determine the columns give NaN.  Other grouping factors are
    ignored.
    """
    group = group or fit.design.terms[0].group
    cols, Z, codes, levels = _group_columns(fit, group)
    d = fit.design
    beta = fit.fixef
    other = [i for i, name in enumerate(fit.fixef_names) if name not in cols]
    y = np.asarray(d.y, dtype=float).reshape(-1)
    r = y - np.asarray(d.offset, dtype=float) - np.asarray(d.X)[:, other] @ beta.to_numpy()[other]
    w = np.asarray(d.weights, dtype=float)
    ok = np.isfinite(r) & (w > 0)
    out = np.full((len(levels), len(cols)), np.nan)
    for j in range(len(levels)):
        rows = ok & (codes == j)
        if rows.sum() < len(cols):
            continue
        sw = np.sqrt(w[rows])
        A = Z[rows] * sw[:, None]
        if np.linalg.matrix_rank(A) < len(cols):
            continue
        out[j] = np.linalg.lstsq(A, r[rows] * sw, rcond=None)[0]
    return pd.DataFrame(out, index=pd.Index(levels, name=group), columns=cols)


def _population(fit, cols) -> np.ndarray:
    """The fixed effects of ``cols`` (0 for a column that is not a fixed effect)."""
    return np.asarray([fit.fixef.get(c, 0.0) for c in cols], dtype=float)


def _covariance_ellipse(ax, center, cov, chi2: float = 5.991, **kw):
    """The contour ``x' cov^-1 x = chi2`` (95% for 2 df) as a patch."""
    from matplotlib.patches import Ellipse

    vals, vecs = np.linalg.eigh(cov)
    if not np.all(np.isfinite(vals)) or vals.min() <= 1e-12 * max(vals.max(), 1e-300):
        return None
    angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
    w, h = 2 * np.sqrt(chi2 * vals[1]), 2 * np.sqrt(chi2 * vals[0])
    return ax.add_patch(Ellipse(center, w, h, angle=angle, fill=False, **kw))


def shrinkage(fit, group=None):
    """Within-group estimates against the conditional (BLUP-based) estimates, with arrows.

    lme4: the shrinkage plot of Bates' *lme4* book (sleepstudy): the per-subject
    least-squares lines ``coef(lmList(Reaction ~ Days | Subject, sleepstudy))``
    against ``coef(m)``.

    For each level of the grouping factor the arrow starts at the
    level's own least-squares estimate (``within_group_estimates``: fixed
    effects of that group alone, "no pooling") and ends at its conditional
    estimate ``coef(fit)[group]`` = fixed effect + BLUP ("partial pooling").
    The population value (the fixed effects, "complete pooling") is drawn as
    a line (one column) or a cross (two columns).  The arrows show how far
    each level is pulled towards the population: far for levels with few or
    noisy rows, all the way for a singular fit.

    - intercept-only terms: one panel, levels on the y axis sorted by their
      within-group estimate, horizontal arrows, a vertical population line;
    - intercept and slope (``(1 + x | g)``): arrows in the (intercept, slope)
      plane, the population cross and the 95% contour of the estimated
      random-effects distribution ``N(beta, Sigma_g)``; with more than two
      columns, one such panel per pair (first column, column j).

    Parameters
    ----------
    fit : LmerResult
    group : str, optional
        The grouping factor (default: the first term's).
    """
    _pyplot()                                           # matplotlib is checked for before anything else
    group = group or fit.design.terms[0].group
    _groups(fit, group)
    own = within_group_estimates(fit, group)
    cols = list(own.columns)
    cond = fit.coef[group][cols].to_numpy()
    pop = _population(fit, cols)
    if len(cols) == 1:
        return _shrinkage_one_column(own, cond, pop, group)
    return _shrinkage_pairs(own, cond, pop, group, _group_covariance(fit, group))


_LABEL_OWN = "within-group estimate (no pooling)"
_LABEL_COND = "conditional estimate, coef() (partial pooling)"


def _arrow(start, end):
    """An arrow from a within-group estimate to the conditional estimate."""
    from matplotlib.patches import FancyArrowPatch

    return FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color="0.35", lw=1.0,
                           shrinkA=3, shrinkB=3)


def _shrinkage_one_column(own: pd.DataFrame, cond: np.ndarray, pop: np.ndarray, group: str):
    """One panel: per level (y axis, sorted by its own estimate) an arrow from the within-group
    estimate ``own`` to the conditional estimate ``cond``, and the population value ``pop``."""
    plt = _pyplot()
    cols = list(own.columns)
    n = len(own)
    fig, ax = plt.subplots(figsize=(6.0, 2.2 + 0.28 * n), layout="constrained")
    o = own.iloc[:, 0].to_numpy()
    order = np.argsort(np.where(np.isfinite(o), o, cond[:, 0]), kind="stable")
    y = np.arange(n)
    for yi, j in zip(y, order):
        if np.isfinite(o[j]) and abs(cond[j, 0] - o[j]) > 0:
            ax.add_patch(_arrow((o[j], yi), (cond[j, 0], yi)))
    ax.plot(o[order], y, "o", mfc="white", mec="C0", ms=7, label=_LABEL_OWN)
    ax.plot(cond[order, 0], y, "o", color="C1", ms=5, label=_LABEL_COND)
    ax.axvline(pop[0], color="0.2", ls="--", lw=1, label=f"population: fixed effect {pop[0]:.4g}")
    ax.set_yticks(y, [str(own.index[j]) for j in order])
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_ylabel(group)
    ax.set_xlabel(cols[0])
    ax.set_title(f"shrinkage of {group}: {cols[0]}")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=8, ncol=1, frameon=False)
    return fig


def _shrinkage_pairs(own: pd.DataFrame, cond: np.ndarray, pop: np.ndarray, group: str, cov):
    """One panel per pair of columns (first, j): arrows from ``own`` to ``cond`` in that plane, the
    population cross ``pop`` and the 95% contour of ``N(pop, cov)`` restricted to the pair."""
    cols = list(own.columns)
    pairs = [(0, j) for j in range(1, len(cols))]
    fig, axes = _grid(len(pairs), max_cols=2, panel=(6.0, 6.0), layout="constrained")
    for ax, (a, b) in zip(axes, pairs):
        for j in range(len(own)):
            start = own.iloc[j, [a, b]].to_numpy()
            if np.all(np.isfinite(start)):
                ax.add_patch(_arrow(tuple(start), (cond[j, a], cond[j, b])))
        ax.plot(own.iloc[:, a], own.iloc[:, b], "o", mfc="white", mec="C0", ms=7, label=_LABEL_OWN)
        ax.plot(cond[:, a], cond[:, b], "o", color="C1", ms=5, label=_LABEL_COND)
        ax.plot([pop[a]], [pop[b]], "+", color="k", ms=16, mew=2, label="population (fixed effects)")
        if cov is not None:
            _covariance_ellipse(ax, (pop[a], pop[b]), cov[np.ix_([a, b], [a, b])], color="0.5", ls=":",
                                label="95% contour of the random effects")
        ax.set_xlabel(cols[a])
        ax.set_ylabel(cols[b])
        ax.set_title(f"shrinkage of {group}")
        ax.autoscale_view()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", fontsize=8, ncol=2,
               frameon=False)
    return fig


def _group_covariance(fit, group):
    """``sigma^2 lambda lambda^T`` of the group's terms (block-diagonal over its terms)."""
    blocks = [(lam, len(t.columns)) for t, lam in zip(fit.design.terms, fit.lambdas) if t.group == group]
    size = sum(s for _, s in blocks)
    cov = np.zeros((size, size))
    i = 0
    for lam, s in blocks:
        lam = np.asarray(lam, dtype=float)
        cov[i:i + s, i:i + s] = fit.sigma ** 2 * lam @ lam.T
        i += s
    return cov
