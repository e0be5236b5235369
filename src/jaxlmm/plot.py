"""Diagnostic and teaching plots of fitted models (matplotlib), with their lme4 equivalents.

Every function returns a ``matplotlib.figure.Figure`` made with ``pyplot``
(display it in a notebook, or ``fig.savefig(path)``).  matplotlib is imported
inside the functions, so ``import jaxlmm`` never needs it; install it with
``pip install 'jaxlmm[plot]'``.

==========================  =========================================================
``caterpillar(fit)``        ``lattice::dotplot(ranef(m, condVar = TRUE))``
``shrinkage(fit)``          the within-group vs. conditional estimates plot of
                            Bates' *lme4* book (``coef(lmList(...))`` vs ``coef(m)``)
``profile(frame)``          ``lattice::xyplot(profile(m))``
``residuals(fit)``          ``plot(m)`` and ``lattice::qqmath(ranef(m))``
``bootstrap(frame)``        histograms of ``bootMer(m, FUN)$t``
``batch_histogram(batch)``  ``hist()`` of a per-trait variance ratio (heritability)
``convergence(batch)``      overview of the optimizer's status over many traits
==========================  =========================================================
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd

__all__ = ["caterpillar", "shrinkage", "profile", "residuals", "bootstrap", "batch_histogram", "convergence"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("jaxlmm.plot needs matplotlib: pip install 'jaxlmm[plot]'") from exc
    return plt


def _grid(n: int, max_cols: int = 3, panel=(4.0, 3.2), layout=None):
    """A figure with ``n`` panels in rows of at most ``max_cols``; unused panels removed."""
    plt = _pyplot()
    ncols = max(1, min(n, max_cols))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False,
                             layout=layout)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


def _groups(fit, group) -> list[str]:
    available = list(dict.fromkeys(t.group for t in fit.design.terms))
    if group is None:
        return available
    wanted = [group] if isinstance(group, str) else list(group)
    unknown = [g for g in wanted if g not in available]
    if unknown:
        raise ValueError(f"no random-effects term for {', '.join(map(repr, unknown))}; "
                         f"grouping factors: {', '.join(available)}")
    return wanted


# --------------------------------------------------------------------------- caterpillar
def caterpillar(fit, group=None, z: float = 1.96, max_labels: int = 60):
    """Conditional modes (BLUPs) with intervals, one panel per random-effects term.

    lme4: ``lattice::dotplot(ranef(m, condVar = TRUE))``.

    In each panel the levels of the grouping factor are sorted by their
    conditional mode ``condval`` (``fit.ranef``) and drawn as points with
    horizontal intervals ``condval +/- z * condsd`` (``z = 1.96``: 95%
    prediction intervals); a vertical line marks 0, the population value.

    Parameters
    ----------
    fit : LmerResult
    group : str or list of str, optional
        Grouping factor(s) to show (default: all).
    z : float
        Half-width of the intervals in conditional SDs.
    max_labels : int
        Level names are written on the y axis up to this many levels.
    """
    re = fit.ranef
    panels = [(g, t) for g in _groups(fit, group) for t in dict.fromkeys(re.loc[re["group"] == g, "term"])]
    fig, axes = _grid(len(panels), max_cols=3, panel=(4.0, max(2.4, 0.5 + 0.16 * max(
        len(re[(re["group"] == g) & (re["term"] == t)]) for g, t in panels))))
    for ax, (g, t) in zip(axes, panels):
        d = re[(re["group"] == g) & (re["term"] == t)].sort_values("condval", kind="stable")
        y = np.arange(len(d))
        val, sd = d["condval"].to_numpy(), d["condsd"].to_numpy()
        ax.hlines(y, val - z * sd, val + z * sd, color="0.45", lw=1.2)
        ax.plot(val, y, "o", color="C0", ms=4, label="conditional mode")
        ax.axvline(0.0, color="0.2", lw=0.8, ls=":")
        if len(d) <= max_labels:
            ax.set_yticks(y, [str(v) for v in d["level"]], fontsize=7 if len(d) > 25 else 9)
        else:
            ax.set_yticks([])
        ax.set_ylim(-0.7, len(d) - 0.3)
        ax.set_title(f"{g}: {t}")
        ax.set_xlabel(f"conditional mode ± {z:g}·condsd")
        ax.set_ylabel(g)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- shrinkage
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
    plt = _pyplot()
    from matplotlib.patches import FancyArrowPatch

    group = group or fit.design.terms[0].group
    _groups(fit, group)
    own = within_group_estimates(fit, group)
    cols = list(own.columns)
    cond = fit.coef[group][cols].to_numpy()
    pop = _population(fit, cols)
    label_own, label_cond = "within-group estimate (no pooling)", "conditional estimate, coef() (partial pooling)"

    if len(cols) == 1:
        n = len(own)
        fig, ax = plt.subplots(figsize=(6.0, 2.2 + 0.28 * n), layout="constrained")
        o = own.iloc[:, 0].to_numpy()
        order = np.argsort(np.where(np.isfinite(o), o, cond[:, 0]), kind="stable")
        y = np.arange(n)
        for yi, j in zip(y, order):
            if np.isfinite(o[j]) and abs(cond[j, 0] - o[j]) > 0:
                ax.add_patch(FancyArrowPatch((o[j], yi), (cond[j, 0], yi), arrowstyle="-|>", mutation_scale=10,
                                             color="0.35", lw=1.0, shrinkA=3, shrinkB=3))
        ax.plot(o[order], y, "o", mfc="white", mec="C0", ms=7, label=label_own)
        ax.plot(cond[order, 0], y, "o", color="C1", ms=5, label=label_cond)
        ax.axvline(pop[0], color="0.2", ls="--", lw=1, label=f"population: fixed effect {pop[0]:.4g}")
        ax.set_yticks(y, [str(own.index[j]) for j in order])
        ax.set_ylim(-0.7, n - 0.3)
        ax.set_ylabel(group)
        ax.set_xlabel(cols[0])
        ax.set_title(f"shrinkage of {group}: {cols[0]}")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=8, ncol=1, frameon=False)
        return fig

    cov = _group_covariance(fit, group)
    pairs = [(0, j) for j in range(1, len(cols))]
    fig, axes = _grid(len(pairs), max_cols=2, panel=(6.0, 6.0), layout="constrained")
    for ax, (a, b) in zip(axes, pairs):
        for j in range(len(own)):
            start = own.iloc[j, [a, b]].to_numpy()
            if np.all(np.isfinite(start)):
                ax.add_patch(FancyArrowPatch(tuple(start), (cond[j, a], cond[j, b]), arrowstyle="-|>",
                                             mutation_scale=10, color="0.35", lw=1.0, shrinkA=3, shrinkB=3))
        ax.plot(own.iloc[:, a], own.iloc[:, b], "o", mfc="white", mec="C0", ms=7, label=label_own)
        ax.plot(cond[:, a], cond[:, b], "o", color="C1", ms=5, label=label_cond)
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
    """sigma^2 Lambda Lambda' of the group's terms (block-diagonal over its terms)."""
    blocks = [(lam, len(t.columns)) for t, lam in zip(fit.design.terms, fit.lambdas) if t.group == group]
    size = sum(s for _, s in blocks)
    cov = np.zeros((size, size))
    i = 0
    for lam, s in blocks:
        lam = np.asarray(lam, dtype=float)
        cov[i:i + s, i:i + s] = fit.sigma ** 2 * lam @ lam.T
        i += s
    return cov


# --------------------------------------------------------------------------- profile
def _interpolate_crossing(v, zeta, target):
    """Values where the piecewise-linear zeta(v) crosses ``target`` (first from the centre outwards)."""
    out = []
    for k in range(len(v) - 1):
        z0, z1 = zeta[k] - target, zeta[k + 1] - target
        if z0 == 0:
            out.append(v[k])
        elif z0 * z1 < 0:
            out.append(v[k] + (v[k + 1] - v[k]) * z0 / (z0 - z1))
    return out


def profile(profile_frame, z: float = 1.96, max_cols: int = 4):
    """Profile zeta plots, one panel per parameter.

    lme4: ``lattice::xyplot(profile(m))``.

    ``profile_frame`` is the tidy profile (``fit.profile()``, or an object
    with such a ``.frame``): columns ``param``, ``value`` and ``zeta``, the signed square root of the increase
    of the deviance when the parameter is fixed at ``value`` and the others
    are re-optimized.  Each panel draws zeta against the value, horizontal
    lines at ``+/- z`` (1.96: 95%), vertical lines where the profile crosses
    them (the profile confidence interval), and the linear reference (dashed):
    the straight line through the estimate (zeta = 0) with the profile's
    slope there.  A straight profile means the Wald interval is accurate;
    curvature shows where it is not.
    """
    frame = pd.DataFrame(getattr(profile_frame, "frame", profile_frame))
    missing = {"param", "value", "zeta"} - set(frame.columns)
    if missing:
        raise ValueError(f"profile frame needs columns param, value, zeta; missing {sorted(missing)}")
    params = list(dict.fromkeys(frame["param"]))
    fig, axes = _grid(len(params), max_cols=max_cols, panel=(3.4, 3.0))
    for ax, p in zip(axes, params):
        d = frame[frame["param"] == p].dropna(subset=["value", "zeta"]).sort_values("value")
        v, zeta = d["value"].to_numpy(float), d["zeta"].to_numpy(float)
        ax.plot(v, zeta, "-", color="C0", lw=1.5, marker="o" if len(v) <= 30 else None, ms=3, label="ζ")
        for level in (-z, z):
            ax.axhline(level, color="0.5", lw=0.8, ls=":")
        ax.axhline(0.0, color="0.8", lw=0.6)
        zero = _interpolate_crossing(v, zeta, 0.0)
        if zero and len(v) >= 2:
            est = zero[0]
            near = np.argsort(np.abs(zeta))[:max(2, min(len(v), 4))]
            A = np.stack([v[near] - est], axis=1)
            slope = float(np.linalg.lstsq(A, zeta[near], rcond=None)[0][0]) if np.ptp(v[near]) > 0 else np.nan
            if np.isfinite(slope) and slope != 0:
                lo, hi = -z * 1.3 / slope + est, z * 1.3 / slope + est
                xs = np.array([min(lo, hi), max(lo, hi)])
                ax.plot(xs, slope * (xs - est), "--", color="0.3", lw=0.9, label="linear reference")
        for level in (-z, z):
            for c in _interpolate_crossing(v, zeta, level):
                ax.axvline(c, color="C3", lw=0.8, ls="-.")
        if len(v) > 1:
            ax.set_xlim(v.min() - 0.02 * np.ptp(v), v.max() + 0.02 * np.ptp(v))
        # lme4's xyplot(profile) shows |zeta| up to about the interval's level, not the whole grid
        lim = 1.6 * z
        ax.set_ylim(max(-lim, min(-z * 1.25, np.nanmin(zeta))), min(lim, max(z * 1.25, np.nanmax(zeta))))
        ax.set_xlabel(p)
        ax.set_ylabel("ζ")
        ax.set_title(p, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- residuals
def _qq(ax, values, label):
    values = np.sort(np.asarray(values, dtype=float)[np.isfinite(values)])
    n = len(values)
    if n == 0:
        return
    nd = NormalDist()
    q = np.array([nd.inv_cdf((i + 0.5) / n) for i in range(n)])
    ax.plot(q, values, "o", ms=3.5, color="C0")
    q1, q3 = np.percentile(values, [25, 75])
    t1, t3 = nd.inv_cdf(0.25), nd.inv_cdf(0.75)
    slope = (q3 - q1) / (t3 - t1)
    ax.plot(q[[0, -1]], q1 + slope * (q[[0, -1]] - t1), "--", color="0.3", lw=0.9)
    ax.set_xlabel("standard normal quantiles")
    ax.set_ylabel(label)


def residuals(fit, scaled: bool = False):
    """Residuals against fitted values, and normal QQ plots of the BLUPs.

    lme4: ``plot(m)`` (residuals vs fitted) and ``lattice::qqmath(ranef(m))``.

    The first panel shows the response residuals ``y - fitted`` (divided by
    sigma when ``scaled``) against the fitted values (conditional on the
    BLUPs), with a line at 0: look for funnels (non-constant variance) and
    curvature (a missing term).  Then one normal QQ plot of the conditional
    modes per grouping factor and term, with the line through the quartiles:
    the model assumes the random effects are normal.
    """
    re = fit.ranef
    panels = [(g, t) for g in dict.fromkeys(re["group"]) for t in dict.fromkeys(re.loc[re["group"] == g, "term"])]
    fig, axes = _grid(1 + len(panels), max_cols=3, panel=(4.0, 3.4))
    ax = axes[0]
    r = fit.residuals(scaled=scaled)
    ax.plot(fit.fitted, r, "o", ms=3, alpha=0.6, color="C0")
    ax.axhline(0.0, color="0.2", lw=0.8, ls="--")
    ax.set_xlabel("fitted values")
    ax.set_ylabel("scaled residuals" if scaled else "residuals")
    ax.set_title("residuals vs fitted")
    for ax, (g, t) in zip(axes[1:], panels):
        _qq(ax, re.loc[(re["group"] == g) & (re["term"] == t), "condval"], f"BLUP {t}")
        ax.set_title(f"QQ plot of BLUPs: {g}")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- bootstrap
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
    keyed by column name, or a fitted ``LmerResult``, whose estimates are
    taken under ``confint``'s names) draws the estimate as a solid vertical
    line; dashed lines mark the percentile interval at ``level``.
    """
    frame = pd.DataFrame(boot_frame)
    cols = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    if not cols:
        raise ValueError("boot_frame has no numeric columns")
    if estimates is not None and hasattr(estimates, "varcorr") and hasattr(estimates, "fixef"):
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


# --------------------------------------------------------------------------- batches
def variance_ratio(batch, component: str | None = None) -> pd.Series:
    """Per trait ``v / (v + sigma^2)`` for one variance component ``v`` of ``batch.varcorr``.

    ``component`` is ``"var1|grp"`` (``"(Intercept)|g"``) or just the group;
    default: the first variance of the first term.  For a one-term,
    intercept-only model this is the intra-class correlation; with a
    relationship matrix on that term, the heritability.
    """
    vc = batch.varcorr
    var = vc[(vc["var2"] == "") & (vc["grp"] != "Residual")]
    if var.empty:
        raise ValueError("the model has no random-effects variance")
    keys = list(dict.fromkeys(zip(var["grp"], var["var1"])))
    if component is None:
        grp, var1 = keys[0]
    elif "|" in component:
        var1, grp = component.rsplit("|", 1)
    else:
        match = [k for k in keys if k[0] == component]
        if not match:
            raise ValueError(f"no variance component for group {component!r}")
        grp, var1 = match[0]
    if (grp, var1) not in keys:
        raise ValueError(f"no variance component {var1}|{grp}; available: "
                         + ", ".join(f"{v}|{g}" for g, v in keys))
    v = var[(var["grp"] == grp) & (var["var1"] == var1)].set_index("trait")["vcov"]
    s2 = vc[vc["grp"] == "Residual"].set_index("trait")["vcov"]
    out = (v / (v + s2.reindex(v.index))).reindex(batch.traits)
    out.name = f"{var1}|{grp}"
    return out


def batch_histogram(batch, what="h2", bins: int = 40):
    """Histogram of a per-trait heritability-like ratio over a batch of traits.

    lme4: ``hist(sapply(fits, function(m) { v <- as.data.frame(VarCorr(m))$vcov; v[1] / (v[1] + sigma(m)^2) }))``.

    ``what``:

    - ``"h2"``: the batch's ``h2`` attribute when it has one (fits with a
      relationship matrix), else as ``"variance_ratio"``;
    - ``"variance_ratio"``: ``var_term / (var_term + sigma^2)`` for the
      first variance of the first term (``variance_ratio``; for a one-term
      intercept model the intra-class correlation);
    - ``"var1|grp"`` (e.g. ``"x|g"``): the same ratio for that variance component;
    - a Series or array with one value per trait, or a function ``batch -> values``.

    Traits that failed (NaN) are left out and counted in the title; the
    median is marked.
    """
    plt = _pyplot()
    if callable(what):
        values, label = what(batch), getattr(what, "__name__", "value")
    elif isinstance(what, str) and what == "h2" and getattr(batch, "h2_term", None) is not None:
        values, label = batch.h2, "h2"
    elif isinstance(what, str):
        comp = None if what in ("h2", "variance_ratio") else what
        values = variance_ratio(batch, comp)
        label = f"var / (var + σ²), {values.name}" if comp or what == "variance_ratio" else \
            f"h² = var / (var + σ²), {values.name}"
    else:
        values, label = what, getattr(what, "name", None) or "value"
    x = np.asarray(values, dtype=float).reshape(-1)
    ok = np.isfinite(x)
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    ax.hist(x[ok], bins=bins, color="C0", alpha=0.8, edgecolor="white")
    if ok.any():
        med = float(np.median(x[ok]))
        ax.axvline(med, color="C3", lw=1.5, label=f"median {med:.3g}")
        ax.legend(fontsize=8)
    ax.set_xlabel(label)
    ax.set_ylabel("traits")
    n_bad = int((~ok).sum())
    ax.set_title(f"{int(ok.sum())} traits" + (f" ({n_bad} not estimated)" if n_bad else ""))
    fig.tight_layout()
    return fig


def convergence(batch):
    """Overview of the fits of a batch: status counts, singular fits, iterations, gradient norms.

    lme4 has no single equivalent: over a list of fits one would tabulate
    ``m@optinfo$conv``, ``isSingular(m)``, ``m@optinfo$feval`` and the
    gradient check of ``m@optinfo$derivs``.  Four panels: traits per status
    (``batch.status``), converged fits split into regular and singular
    (boundary) fits plus failures, a histogram of optimizer iterations, and
    a histogram of ``log10`` of the largest absolute gradient element at the
    estimate.
    """
    plt = _pyplot()
    d = batch.diagnostics
    fig, axes = plt.subplots(2, 2, figsize=(10.0, 6.5))
    ax = axes[0, 0]
    counts = d["status"].value_counts()
    bars = ax.bar(range(len(counts)), counts.to_numpy(), color=["C2" if s == "converged" else "C3"
                                                               for s in counts.index])
    ax.set_xticks(range(len(counts)), list(counts.index), rotation=20, ha="right", fontsize=8)
    ax.bar_label(bars, fontsize=8)
    ax.set_ylabel("traits")
    ax.set_title("status")

    ax = axes[0, 1]
    conv, sing = d["converged"].to_numpy(bool), d["singular"].to_numpy(bool)
    labels = ["regular", "singular", "not converged"]
    vals = [int((conv & ~sing).sum()), int((conv & sing).sum()), int((~conv).sum())]
    bars = ax.bar(labels, vals, color=["C2", "C1", "C3"])
    ax.bar_label(bars, fontsize=8)
    ax.set_ylabel("traits")
    ax.set_title("converged fits: regular vs boundary (singular)")

    ax = axes[1, 0]
    it = d["n_iter"].to_numpy(float)
    it = it[np.isfinite(it)]
    edges = np.arange(0, (it.max() if len(it) else 1) + 2) - 0.5
    ax.hist(it, bins=edges if len(edges) <= 120 else 60, color="C0", edgecolor="white")
    ax.set_xlabel("optimizer iterations")
    ax.set_ylabel("traits")
    ax.set_title(f"iterations (max {int(it.max())})" if len(it) else "iterations")

    ax = axes[1, 1]
    g = d["grad_norm"].to_numpy(float)
    g = g[np.isfinite(g)]
    ax.hist(np.log10(np.maximum(g, 1e-17)), bins=40, color="C0", edgecolor="white")
    ax.set_xlabel("log10 max |gradient| at the estimate")
    ax.set_ylabel("traits")
    ax.set_title("gradient norm (unprojected: nonzero outwards at a bound)")
    from matplotlib.ticker import MaxNLocator

    for ax in axes.ravel():
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(batch.summary(), fontsize=10)
    fig.tight_layout()
    return fig
