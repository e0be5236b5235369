"""Relationship-matrix terms of a linear fit: heritability ``h2`` with its SE, and the genetic values.

With every random-effects term scalar and one residual variance, the heritability of the first
relationship-matrix term ``g`` is its share of the variance,

    h2 = sigma_g^2 / (sum_k sigma_k^2 + sigma_e^2),

the same quantity for every model class; its delta-method SE is from the model class's own criterion:

- ``profiled_heritability`` (``LmerResult``): ``h2 = theta_g^2 / (1 + |theta|^2)`` in lme4's relative
  theta, SE from the exact Hessian of the profiled criterion (``core/params/heritability.py``);
- ``marginal_heritability`` (``StructuredResult``): the variances as functions of the absolute parameters
  ``phi`` (each structure's ``C(phi_t)``, the residual's SD or log-linear dispersion), SE from the
  parameters' covariance ``2 H^-1`` of the marginal criterion, parameters at a bound held fixed.

Either is NaN without a relationship-matrix term, with a term of several columns, or (structured fits)
with more than one residual variance; the SE is NaN where ``sigma_g`` is at its bound 0.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from .._x64 import float64_methods

NAN_PAIR = (float("nan"), float("nan"))


@float64_methods
class Heritability:
    """``h2``, ``h2_se`` and ``genetic_values`` of a fit whose class provides ``_heritability(k) -> (h2, se)``
    for the relationship-matrix term ``k`` (module docstring)."""

    @property
    def _h2_term(self) -> int | None:
        from ..model.design import heritability_term

        return heritability_term(self.design)

    @cached_property
    def _h2_and_se(self) -> tuple[float, float]:
        k = self._h2_term
        return NAN_PAIR if k is None else self._heritability(k)

    @property
    def h2(self) -> float:
        """Heritability: the first relationship-matrix term's variance over the sum of all
        variance components and the residual (``sigma_g^2 / (sigma_g^2 + sigma_e^2)`` with one
        term).  NaN without a relationship-matrix term or with vector-valued terms."""
        return self._h2_and_se[0]

    @property
    def h2_se(self) -> float:
        """Delta-method SE of ``h2`` from the exact Hessian of the criterion (NaN at a boundary)."""
        return self._h2_and_se[1]

    def genetic_values(self, group: str | None = None, include_unobserved: bool = True) -> pd.DataFrame:
        """BLUPs of a relationship-matrix term per level (``condval``, ``condsd``; for a term with
        several columns, one row per level and column as in ``ranef``).

        With ``include_unobserved``, levels of K without data are added with
        ``condval = K_mo K_oo^{-1} u_o`` (the conditional mean given the observed
        levels' BLUPs; ``condsd`` NaN).
        """
        terms = [t for t in self.design.terms if t.relmat is not None and (group is None or t.group == group)]
        if not terms:
            raise ValueError(f"no relationship-matrix term{'' if group is None else ' for ' + repr(group)}")
        t = terms[0]
        r = self.ranef
        out = r[(r["group"] == t.group) & r["term"].isin(t.columns)].copy()
        if include_unobserved and t.relmat.unused_levels:
            full = t.relmat.full
            obs = list(t.factor.levels)
            miss = list(t.relmat.unused_levels)
            K_oo = full.restrict(obs).K
            pos = {lv: i for i, lv in enumerate(full.levels)}
            K_mo = full.K[np.ix_([pos[lv] for lv in miss], [pos[lv] for lv in obs])]
            rows = []
            for col in t.columns:
                u = out[out["term"] == col].set_index("level").loc[obs, "condval"].to_numpy()
                pred = K_mo @ np.linalg.lstsq(K_oo, u, rcond=None)[0]
                rows.append(pd.DataFrame({"group": t.group, "term": col, "level": miss, "condval": pred,
                                          "condsd": np.nan}))
            out = pd.concat([out] + rows, ignore_index=True)
        return out.reset_index(drop=True)


def profiled_heritability(fit, k: int) -> tuple[float, float]:
    """lme4's fit: ``h2`` of term ``k`` from theta and its SE from the profiled criterion's Hessian."""
    import jax
    import jax.numpy as jnp

    from ..core.optim.newton import value_grad_hessian
    from ..core.params.heritability import heritability, heritability_se
    from ..core.pls.criterion import profiled_deviance

    theta = jnp.asarray(fit.theta)
    reml, sequential = bool(fit.reml), fit.model.engine.large

    def hessian(th, cp):
        return value_grad_hessian(lambda t: profiled_deviance(t, cp=cp, reml=reml), th, sequential)[2]

    H = jax.jit(hessian)(theta, fit.cross_products)
    return float(heritability(theta, k)), float(heritability_se(theta, H, k))


def _residual_variance(residual, psi: np.ndarray) -> tuple[float, np.ndarray]:
    """The one residual variance and its gradient in the residual parameters ``psi``: ``s^2`` of the SD, or
    ``exp(x^T delta)`` of a dispformula with one level (``core/marginal/residual.py``)."""
    if not residual.log_linear:
        return float(psi[0]) ** 2, np.array([2.0 * psi[0]])
    x = np.asarray(residual.level_X[0], float)
    r = float(np.exp(x @ psi))
    return r, r * x


def marginal_heritability(fit, k: int) -> tuple[float, float]:
    """A structured fit: ``h2`` of term ``k`` from the absolute parameters and its delta-method SE from
    their covariance (module docstring)."""
    mm, phi = fit._marginal, fit._phi
    if mm.residual.n_levels != 1:
        return NAN_PAIR
    base = mm.offsets[-1]
    variances, grads = [], []
    for t, off in zip(mm.terms, mm.offsets):
        C, dC, _ = t.cov.derivatives(phi[off:off + t.cov.n_params])
        g = np.zeros(len(phi))
        g[off:off + t.cov.n_params] = dC[:, 0, 0]
        variances.append(float(C[0, 0]))
        grads.append(g)
    r, dr = _residual_variance(mm.residual, phi[base:])
    g = np.zeros(len(phi))
    g[base:] = dr
    total, d_total = sum(variances) + r, sum(grads) + g
    h2 = variances[k] / total
    grad = grads[k] / total - variances[k] * d_total / total ** 2
    A = np.asarray(fit._out.phi_cov, float)
    free = np.isfinite(np.diagonal(A))
    own = slice(mm.offsets[k], mm.offsets[k + 1])
    if not free[own].all() or not np.all(np.isfinite(A[np.ix_(free, free)])):
        return h2, float("nan")
    var = float(grad[free] @ A[np.ix_(free, free)] @ grad[free])
    return h2, float(np.sqrt(var)) if var >= 0 else float("nan")
