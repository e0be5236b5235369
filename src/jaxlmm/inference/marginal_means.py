"""Estimated marginal means and their pairwise contrasts, as R's emmeans.

The reference grid crosses the levels of every factor in the fixed-effects
formula, with numeric covariates at their means.  The EMM of a level of
``specs`` is the equally weighted mean of the grid predictions at that level:
``emm = L beta`` with ``L`` the mean of the grid's model-matrix rows.  SEs and
df come from ``Cov(beta-hat)`` with Satterthwaite's df, or from the
Kenward-Roger adjusted covariance with KR df (``lmer.df = "kenward-roger"``,
emmeans' default for lmer fits).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import special

from .._x64 import float64_methods, float64_scope
from .ddf import contrast_rows, normalize_ddf


@float64_methods
class EMMeans:
    """Estimated marginal means: ``table`` (a DataFrame), the contrast matrix ``L`` and the fit."""

    def __init__(self, fit, specs: list[str], table: pd.DataFrame, L: np.ndarray, ddf: str, level: float):
        self.fit, self.specs, self.table, self.L, self.ddf, self.level = fit, specs, table, L, ddf, level

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def __repr__(self) -> str:
        return self.table.to_string(index=False) + f"\n\nDegrees-of-freedom method: {self.ddf}\n" \
            f"Confidence level used: {self.level}"

    def _repr_html_(self) -> str:
        """Jupyter's display: the table as HTML (levels escaped), then the df method and level."""
        from .html_tables import emmeans_html

        return emmeans_html(self)

    def __getitem__(self, key):
        return self.table[key]


def reference_grid(fit) -> tuple[pd.DataFrame, np.ndarray]:
    """The grid (factor levels crossed, covariates at their means) and its model matrix."""
    from ..model.design import _model_matrix
    from ..model.naming import lme4_column_name

    design = fit.design
    spec = design.fixed_spec
    levels, means = {}, {}
    for var, (kind, state) in getattr(spec, "encoder_state", {}).items():
        if str(kind).lower().endswith("categorical"):
            levels[var] = list(state.get("categories", sorted(design.frame[var].dropna().unique())))
        else:
            means[var] = float(np.mean(design.frame[var].to_numpy(dtype=float)))
    for var in spec.required_variables:
        if var not in levels and var not in means:
            means[var] = float(np.mean(design.frame[var].to_numpy(dtype=float)))
    names = list(levels)
    combos = list(itertools.product(*(levels[v] for v in names))) if names else [()]
    grid = pd.DataFrame(combos, columns=names)
    for var in names:
        grid[var] = pd.Categorical(grid[var], categories=levels[var])
    for var, value in means.items():
        grid[var] = value
    mm = _model_matrix(spec, grid, "the reference grid")
    cols = [lme4_column_name(c) for c in mm.columns]
    X = mm.to_numpy(dtype=float)[:, [cols.index(n) for n in design.fixef_names]]
    return grid, X


@float64_scope
def emmeans(fit, specs, ddf: str | None = None, level: float = 0.95, type: str = "link") -> EMMeans:
    """``emmeans(m, specs, lmer.df = ddf, type = type)``: means over the reference grid by the factor(s) ``specs``.

    ``ddf`` defaults to Kenward-Roger (emmeans' default for lmer fits), Satterthwaite for a model with
    structured covariances or ``dispformula``, and asymptotic (z) for a GLMM.  ``type="response"`` (a GLMM):
    the means back-transformed by the inverse link -- ``prob`` (binomial) or ``rate`` (counts) or ``response``
    (Gamma), the SE by the delta method ``SE * dmu/deta``, the limits the back-transformed link-scale limits,
    as emmeans reports them."""
    if type not in ("link", "response"):
        raise ValueError(f"type={type!r}: use 'link' or 'response'")
    if type == "response" and fit.kind != "glmm":
        raise ValueError("type='response' is for generalized models (glmer); a linear model's means are on the "
                         "response scale already")
    if ddf is None:
        ddf = fit.model.engine.default_ddf
    ddf = normalize_ddf(ddf)
    specs = [specs] if isinstance(specs, str) else list(specs)
    grid, X = reference_grid(fit)
    missing = [s for s in specs if s not in grid.columns or not isinstance(grid[s].dtype, pd.CategoricalDtype)]
    if missing:
        factors = [c for c in grid.columns if isinstance(grid[c].dtype, pd.CategoricalDtype)]
        raise ValueError(f"{', '.join(map(repr, missing))} is not a factor of the fixed effects "
                         f"(factors: {', '.join(factors) or 'none'})")
    keys = grid[specs].astype(str).agg(":".join, axis=1) if specs else pd.Series([""] * len(grid))
    order = list(dict.fromkeys(keys))
    L = np.stack([X[(keys == k).to_numpy()].mean(axis=0) for k in order])
    tests = contrast_rows(fit, L, ddf)
    first = grid.loc[[int(np.flatnonzero((keys == k).to_numpy())[0]) for k in order], specs].reset_index(drop=True)
    table = first.astype(str)
    table["emmean"] = tests["Estimate"].to_numpy()
    table["SE"] = tests["Std. Error"].to_numpy()
    table["df"] = tests["df"].to_numpy()
    crit = special.stdtrit(np.asarray(table["df"], float), 0.5 + level / 2)
    table["lower.CL"] = table["emmean"] - crit * table["SE"]
    table["upper.CL"] = table["emmean"] + crit * table["SE"]
    if type == "response":
        table = _response_scale(fit, table)
    return EMMeans(fit, specs, table, L, ddf, level)


def _response_scale(fit, table: pd.DataFrame) -> pd.DataFrame:
    """The link-scale table back-transformed (``emmeans``' docstring)."""
    import jax
    import jax.numpy as jnp

    from ..core.glmm.families import mean

    family = fit.model.engine.layout(fit.model).family
    inverse = lambda eta: np.asarray(mean(family, jnp.asarray(eta, float)))
    slope = np.asarray(jax.vmap(jax.grad(lambda e: mean(family, e)))(jnp.asarray(table["emmean"].to_numpy(float))))
    name = {"binomial": "prob", "poisson": "rate", "negative_binomial": "rate"}.get(family.name, "response")
    out = table.copy()
    out["SE"] = out["SE"].to_numpy() * slope
    out["lower.CL"], out["upper.CL"] = inverse(out["lower.CL"]), inverse(out["upper.CL"])
    out["emmean"] = inverse(out["emmean"])
    return out.rename(columns={"emmean": name})


@float64_scope
def pairs(emm: EMMeans, adjust: str = "tukey") -> pd.DataFrame:
    """``pairs(emm, adjust = ...)``: all pairwise differences ``level_i - level_j`` (i < j)."""
    adjust = adjust.lower()
    if adjust not in ("none", "tukey", "bonferroni"):
        raise ValueError(f"adjust must be 'none', 'tukey' or 'bonferroni', not {adjust!r}")
    labels = emm.table[emm.specs].astype(str).agg(" ".join, axis=1).tolist()
    if len(emm.specs) == 1:
        var = emm.specs[0]
        numeric_like = all(lab.replace(".", "", 1).lstrip("-").isdigit() for lab in labels)
        labels = [f"{var}{lab}" if numeric_like else lab for lab in labels]
    k = len(labels)
    idx = [(i, j) for i in range(k) for j in range(i + 1, k)]
    C = np.stack([emm.L[i] - emm.L[j] for i, j in idx])
    tests = contrast_rows(emm.fit, C, emm.ddf)
    t = tests["t value"].to_numpy()
    df = tests["df"].to_numpy()
    if adjust == "none":
        p = tests["Pr(>|t|)"].to_numpy()
    elif adjust == "bonferroni":
        p = np.minimum(1.0, tests["Pr(>|t|)"].to_numpy() * len(idx))
    else:
        from scipy import stats          # scipy.stats takes 0.3 s to import: only for Tukey

        p = stats.studentized_range.sf(np.abs(t) * np.sqrt(2.0), k, df)
    return pd.DataFrame({"contrast": [f"{labels[i]} - {labels[j]}" for i, j in idx],
                         "estimate": tests["Estimate"].to_numpy(), "SE": tests["Std. Error"].to_numpy(),
                         "df": df, "t.ratio": t, "p.value": p})
