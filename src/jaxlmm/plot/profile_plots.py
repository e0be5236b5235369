"""Profile zeta plots: ``lattice::xyplot(profile(m))``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._figure import _grid


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
