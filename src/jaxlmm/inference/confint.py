"""Confidence intervals as lme4's ``confint.merMod``: Wald, profile and parametric bootstrap.

- ``"wald"``: fixed effects only, ``beta +- z_{1-alpha/2} SE`` (lme4 gives NA for
  the variance parameters, which are left out here);
- ``"profile"``: where the signed root deviance ``zeta`` crosses ``-/+ z``
  (``profile.py``), for sd/cor of each term, sigma and the fixed effects;
- ``"boot"``: percentile intervals of ``nsim`` parametric-bootstrap replicates
  (``bootstrap.py``), for the same parameters.
"""

from __future__ import annotations

import pandas as pd
from scipy import special

from .._x64 import float64_scope


def _labels(level: float) -> tuple[str, str]:
    a = (1 - level) / 2
    return f"{100 * a:.1f} %", f"{100 * (1 - a):.1f} %"


@float64_scope
def confint(fit, method: str = "profile", level: float = 0.95, nsim: int = 500, seed: int | None = None,
            use_u: bool = False) -> pd.DataFrame:
    method = method.lower()
    lo, hi = _labels(level)
    if method == "wald":
        z = special.ndtri(0.5 + level / 2)
        est, se = fit.fixef.to_numpy(), fit.se.to_numpy()
        return pd.DataFrame({lo: est - z * se, hi: est + z * se}, index=fit.fixef_names)
    if method == "profile":
        from .profile import profile

        return profile(fit, level=level).confint()
    if method in ("boot", "bootstrap"):
        from .bootstrap import bootstrap

        reps = bootstrap(fit, nsim=nsim, seed=seed, use_u=use_u)
        a = (1 - level) / 2
        q = reps.quantile([a, 1 - a]).T
        q.columns = [lo, hi]
        names = [c for c in reps.columns if c not in fit.fixef_names] + fit.fixef_names
        return q.loc[names]
    raise ValueError(f"method must be 'wald', 'profile' or 'boot', not {method!r}")
