"""Profile-likelihood intervals of a GLMM (lme4's ``confint(m, method = "profile")``).

For a parameter ``x_j`` (a fixed effect, or the SD of a scalar random-effects term, which is its theta)
the profile is ``f_j(v) = min over the others of -2 log L`` with ``x_j = v`` held, and its signed root
``zeta(v) = sign(v - x_j^) sqrt(f_j(v) - f^)``.  The interval's ends solve ``zeta(v) = -/+ z_(1+level)/2``.
Every end of every parameter is one lane of the host Newton loop with ``x_j`` held (``core/glmm/driver``):
the lanes start at the Wald ends and take secant steps on ``zeta`` together, each round one fit of all
lanes from the previous round's optimum.  An SD whose profile stays below the level at 0 has the lower
end 0, as lme4 reports it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

ROUNDS = 12
TOL = 1e-5


def profile_intervals(fit, level: float = 0.95) -> pd.DataFrame:
    """The profile intervals of the fixed effects and of scalar terms' SDs (module docstring)."""
    from ..core.glmm.driver import _run

    model, layout = fit.model, fit._layout
    if layout.nagq == 0:
        raise ValueError("profile intervals need the Laplace or AGQ fit (nAGQ >= 1): beta is not a parameter "
                         "of the nAGQ = 0 criterion")
    names = model.engine.theta_names(model)
    scalar = [t.theta_start for t in layout.terms if t.ncols == 1]
    params = scalar + list(range(layout.ntheta, layout.ntheta + layout.nbeta))
    z = special.ndtri(0.5 + level / 2)
    x_hat, f_hat = fit.x, fit.criterion
    se = np.sqrt(np.maximum(np.diag(fit.covariance.to_numpy()), 0))
    lower = model.engine.lower(model)
    lanes = [(j, s) for j in params for s in (-1.0, 1.0)]
    J = np.array([j for j, _ in lanes])
    side = np.array([s for _, s in lanes])
    target = side * z
    base = np.where(np.isfinite(se[J]) & (se[J] > 0), se[J], np.maximum(np.abs(x_hat[J]), 1.0))
    v = x_hat[J] + target * base
    at_zero = np.zeros(len(lanes), bool)
    v = np.maximum(v, lower[J])
    prev_v, prev_zeta = x_hat[J].copy(), np.zeros(len(lanes))
    data = model.engine.data(model)
    data = data._replace(y=np.repeat(np.asarray(data.y), len(lanes), 0), w=np.repeat(np.asarray(data.w), len(lanes), 0))
    start = np.tile(x_hat, (len(lanes), 1))
    held = np.zeros_like(start, bool)
    held[np.arange(len(lanes)), J] = True
    for _ in range(ROUNDS):
        start[np.arange(len(lanes)), J] = v
        res = _run(model, data, start, fixed=held, reflections=None)
        start = np.array(res.theta, float)
        zeta = side * np.sqrt(np.maximum(np.asarray(res.fun) - f_hat, 0.0))
        at_zero = (v <= lower[J]) & (np.abs(zeta) < z)
        done = at_zero | (np.abs(zeta - target) < TOL)
        if done.all():
            break
        slope = (zeta - prev_zeta) / np.where(v != prev_v, v - prev_v, 1.0)
        step = np.where(np.abs(slope) > 1e-12, (target - zeta) / slope, target * base)
        prev_v, prev_zeta = np.where(done, prev_v, v), np.where(done, prev_zeta, zeta)
        v = np.where(done, v, np.maximum(v + step, lower[J]))
    ends = np.where(at_zero, lower[J], v)
    rows = [names[j] if j >= layout.ntheta else f"sd_{names[j].split('.', 1)[1]}|{names[j].split('.', 1)[0]}"
            for j in params]
    lo, hi = (1 - level) / 2, (1 + level) / 2
    out = pd.DataFrame({f"{100 * lo:.3g} %": ends[side < 0], f"{100 * hi:.3g} %": ends[side > 0]}, index=rows)
    return out
