"""Plots of a fit's conditional modes (BLUPs) and residuals.

``caterpillar``: ``lattice::dotplot(ranef(m, condVar = TRUE))``; ``residuals``:
``plot(m)`` and ``lattice::qqmath(ranef(m))``.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from ._figure import _grid, _groups


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
