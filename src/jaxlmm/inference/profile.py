"""Likelihood profiles and profile confidence intervals (lme4's ``profile`` / ``confint``).

For each parameter -- the sd and cor of each term, sigma, the fixed effects --
``zeta(c) = sign(c - estimate) sqrt(dev(c) - dev_min)`` with ``dev(c)`` the ML
deviance minimized with that parameter held at c (lme4 profiles the ML
deviance also for REML fits).  The interval at level ``1 - alpha`` is where
``zeta = -/+ z_{1 - alpha/2}``.

The profiled fits run as stacks of problems, one lane per (parameter, value):
a grid of values around every estimate (spaced by its Wald SE from the exact
Hessian), then rounds of bracketed secant steps, each round one stack for all
parameters and both sides, every lane starting from the solution at the
nearest value already profiled.  Where a bounded parameter (an sd at 0, a
correlation at -/+1) is reached before |zeta| does, that bound is the limit.
Every minimization is a lane of the host Newton loop (``core/newton_host.py``)
and every evaluation one call of a small loop-free program for a stack of
lanes (``core/profile_block.py``): one pair of programs serves every model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy import special

from .._x64 import float64_methods, float64_scope
from ..errors import JaxlmmError
from ..model.naming import confint_names

GRID = np.array([-4.0, -3.0, -2.25, -1.5, -0.75, 0.75, 1.5, 2.25, 3.0, 4.0])
ROUNDS = 6


@float64_methods
class Profile:
    """Profile of a fit: ``frame`` (param, value, zeta) and ``confint(level)``."""

    def __init__(self, fit, params: list[str], estimates: np.ndarray, points: dict, limits: dict, level: float):
        self.fit, self.params, self.estimates = fit, params, estimates
        self._points, self._limits, self.level = points, limits, level

    @property
    def frame(self) -> pd.DataFrame:
        rows = []
        for name, est in zip(self.params, self.estimates):
            pts = dict(self._points.get(name, {}))
            pts[float(est)] = 0.0
            for v in sorted(pts):
                rows.append((name, v, pts[v]))
        return pd.DataFrame(rows, columns=["param", "value", "zeta"])

    def confint(self) -> pd.DataFrame:
        lo = [self._limits[p][0] for p in self.params]
        hi = [self._limits[p][1] for p in self.params]
        a = (1 - self.level) / 2
        return pd.DataFrame({f"{100 * a:.1f} %": lo, f"{100 * (1 - a):.1f} %": hi}, index=self.params)


# a runner profiles lanes: (index, values, starts (lanes, d) or None) -> (deviances, solutions (lanes, d))
Runner = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class _Side:
    """Bracket search for one parameter on one side (target zeta = +/- z)."""

    def __init__(self, target: float, estimate: float, start: np.ndarray):
        self.target = target
        self.inner = (estimate, 0.0, start)   # (value, zeta, solution) with |zeta| < z, closest to the crossing
        self.outer = None                     # (value, zeta) with |zeta| >= z
        self.done_value = None

    def add(self, value: float, zeta: float, solution: np.ndarray):
        if not np.isfinite(zeta):
            return
        if abs(zeta) >= abs(self.target) and np.sign(zeta) == np.sign(self.target):
            if self.outer is None or abs(value - self.inner[0]) < abs(self.outer[0] - self.inner[0]):
                self.outer = (value, zeta)
        elif np.sign(zeta) == np.sign(self.target) or zeta == 0.0:
            if abs(zeta) >= abs(self.inner[1]):
                self.inner = (value, zeta, solution)

    def limit(self) -> float:
        if self.done_value is not None:
            return self.done_value
        if self.outer is None:
            return np.nan
        (v0, z0, _), (v1, z1) = self.inner, self.outer
        return v0 + (self.target - z0) / (z1 - z0) * (v1 - v0) if z1 != z0 else v1


@dataclass
class _Family:
    """The parameters profiled by one runner: variance parameters in w, or fixed effects."""

    names: list[str]
    estimate: np.ndarray
    scale: np.ndarray           # Wald SE: the grid's and the outward steps' unit
    lower: np.ndarray           # the bound of each parameter (-inf if none)
    natural: Callable           # (i, value) -> the reported value
    run: Runner
    dev_min: float
    start: np.ndarray           # the solution at the estimate
    points: dict = field(default_factory=dict)

    def sides(self, z: float) -> list[list[_Side]]:
        return [[_Side(-z, e, self.start), _Side(z, e, self.start)] for e in self.estimate]

    def record(self, sides, index, values, devs, solutions):
        for i, v, d, x in zip(index, values, devs, solutions):
            zeta = np.sign(v - self.estimate[i]) * np.sqrt(max(d - self.dev_min, 0.0)) if np.isfinite(d) else np.nan
            self.points.setdefault(self.names[i], {})[float(self.natural(i, v))] = float(zeta)
            for side in sides[i]:
                side.add(v, zeta, x)


def _grid(family: _Family):
    index = np.repeat(np.arange(len(family.names)), len(GRID))
    values = np.maximum(family.estimate[index] + np.tile(GRID, len(family.names)) * family.scale[index],
                        family.lower[index])
    return index, values, np.tile(family.start, (len(index), 1))


def _next_values(family: _Family, sides):
    """Secant steps inside brackets and outward steps where there is none yet; starts from the inner solution."""
    index, values, starts = [], [], []
    for i, (est, scale) in enumerate(zip(family.estimate, family.scale)):
        for s_idx, side in enumerate(sides[i]):
            if side.done_value is not None:
                continue
            v_in, z_in, x_in = side.inner
            if side.outer is not None:
                v_out, z_out = side.outer
                t = (side.target - z_in) / (z_out - z_in) if z_out != z_in else 0.5
                v = v_in + np.clip(t, 0.02, 0.98) * (v_out - v_in)
            else:
                direction = -1.0 if s_idx == 0 else 1.0
                v = v_in + direction * 2.0 * scale * max(1.0, abs(v_in - est) / scale)
                if v <= family.lower[i]:
                    if v_in <= family.lower[i]:
                        side.done_value = float(family.lower[i])
                        continue
                    v = float(family.lower[i])
            index.append(i)
            values.append(v)
            starts.append(x_in)
    return np.asarray(index, int), np.asarray(values, float), np.asarray(starts)


def _search(family: _Family, z: float) -> dict:
    """The limits (natural scale) of every parameter of ``family``."""
    sides = family.sides(z)
    index, values, starts = _grid(family)
    for _ in range(ROUNDS + 1):
        if index.size == 0:
            break
        devs, solutions = family.run(index, values, starts)
        family.record(sides, index, values, devs, solutions)
        index, values, starts = _next_values(family, sides)
    return {name: tuple(family.natural(i, side.limit()) for side in sides[i])
            for i, name in enumerate(family.names)}


def _variance_names(ml):
    names = []
    for t in ml.design.terms:
        names.extend(confint_names(t.group, t.columns, t.cov))
    names.append("sigma")
    return names


LANES = 16  # lanes per program call: one compiled pair of programs serves every round of a profile
# the optimizer moves free correlations themselves, within R_MAX of -/+1: where a profiled fit's optimum
# is a correlation of -/+1 it reaches that bound in a few Newton steps (in atanh(cor), at infinity, every
# step would gain only a constant 0.5 on an exponentially flat criterion)
R_MAX = 1.0 - 1e-8


def _runners(ml, w_hat):
    """The ML deviance at w-hat, its Hessian in w and the two runners (variance parameters, fixed
    effects): host Newton loops over lanes, each evaluation one call of ``core/profile_block.py``'s
    ``lane_program`` per ``LANES`` lanes."""
    import jax

    from ..core.newton_host import minimize_newton_host
    from ..core.profile_block import lane_program
    from ..core.profile_params import varpar_kinds, w_reflections

    cp, structure = ml.cross_products, ml.design.structure
    dtype = np.dtype(ml.model.dtype)
    kinds = varpar_kinds(structure)
    cor = kinds == 1
    k = structure.ntheta

    def call(z, j, c, fixed):
        """``lane_program`` in chunks of ``LANES`` lanes (the last one padded with its last lane)."""
        n, out = len(z), []
        for lo in range(0, n, LANES):
            sel = np.minimum(np.arange(lo, lo + LANES), n - 1)
            res = jax.device_get(lane_program(z[sel].astype(dtype), j[sel].astype(np.int32), c[sel].astype(dtype),
                                              fixed[sel], cp))
            out.append([np.asarray(r, float)[:min(LANES, n - lo)] for r in res])
        return tuple(np.concatenate(part) for part in zip(*out))

    def variance(x, rows=None):
        n = len(x)
        return call(np.asarray(x, float), np.full(n, -1), np.zeros(n), np.zeros(n, bool))

    def run_w(index, values, starts):
        """Minimize lane b from ``starts[b]`` with ``w[index[b]] = values[b]`` held (w in and out)."""
        lower = np.where(kinds == 0, 0.0, np.where(cor, -R_MAX, -np.inf))
        upper = np.where(cor, R_MAX, np.inf)
        lanes = np.arange(len(index))
        x0 = np.array(starts, float)
        x0[:, cor] = np.tanh(x0[:, cor])
        x0 = np.clip(x0, lower, upper)
        x0[lanes, index] = np.where(cor[index], np.clip(np.tanh(values), -R_MAX, R_MAX), values)
        held = np.arange(k + 1)[None, :] == np.asarray(index)[:, None]
        res = minimize_newton_host(variance, None, x0, lower, reflections=w_reflections(structure).astype(float),
                                   fixed=held, dtype=dtype, upper=upper)
        w = np.array(res.theta)
        w[:, cor] = np.arctanh(w[:, cor])
        w[lanes, index] = values
        return res.fun, w

    def run_b(index, values, starts):
        """Minimize lane b over theta from ``starts[b]`` with ``beta[index[b]] = values[b]`` held
        (``z = (theta, 0)``, its last component unused and held)."""
        index, values = np.asarray(index), np.asarray(values, float)
        lanes = len(index)
        z0 = np.zeros((lanes, k + 1))
        z0[:, :k] = np.asarray(starts, float)[:, :k]
        lower = np.append(structure.lower_bounds(), -np.inf)
        reflections = np.zeros((k + 1, k + 1))
        reflections[:k, :k] = structure.reflections()
        held = np.zeros((lanes, k + 1), bool)
        held[:, k] = True

        def vgh(z, rows):
            return call(np.asarray(z, float), index[rows], values[rows], np.ones(len(rows), bool))

        res = minimize_newton_host(vgh, None, z0, lower, reflections=reflections, fixed=held, dtype=dtype)
        return res.fun, res.theta[:, :k]

    # the deviance and its Hessian at w-hat on lme4's atanh(cor) scale: r = tanh(w), dr/dw = 1 - r^2
    r = np.where(cor, np.tanh(w_hat), w_hat)
    D, g, H = variance(r[None])
    dr = np.where(cor, 1.0 - r ** 2, 1.0)
    d2r = np.where(cor, -2.0 * r * (1.0 - r ** 2), 0.0)
    H_w = dr[:, None] * H[0] * dr[None, :] + np.diag(g[0] * d2r)
    return float(D[0]), H_w, run_w, run_b


def _wald_scale(H, w_hat):
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.maximum(np.diag(2.0 * np.linalg.pinv(H)), 0.0))
    fallback = 0.3 * np.maximum(np.abs(w_hat), 0.3)
    return np.where(np.isfinite(se) & (se > 1e-8), se, fallback)


@float64_scope
def profile(fit, level: float = 0.95) -> Profile:
    """Profile every parameter of ``fit`` and find its profile confidence limits (a small model's host
    loops with one BLAS thread, ``core/threads.py``)."""
    from ..core.threads import small_blas

    with small_blas(getattr(fit, "_dense", None) is not None):
        return _profile(fit, level)


def _profile(fit, level: float) -> Profile:
    from ..core import profile_params as core

    if fit.design.structure.structured:
        raise JaxlmmError("profiles of models with ar1() or cs() terms are not supported yet; "
                          "use confint(method='wald') or method='boot'")
    ml = fit.refit_ml()
    structure = ml.design.structure
    w_hat = core.w_from_theta_sigma(ml.theta, ml.sigma, structure)
    kinds = core.varpar_kinds(structure)
    z = special.ndtri(0.5 + level / 2)
    var_names, beta_names = _variance_names(ml), list(ml.fixef_names)
    dev_w, H, run_w, run_b = _runners(ml, w_hat)

    def natural(i, v):
        return v if kinds[i] == 0 else (np.tanh(v) if kinds[i] == 1 else np.exp(v))

    variance = _Family(var_names, w_hat, _wald_scale(H, w_hat), np.where(kinds == 0, 0.0, -np.inf), natural,
                       run_w, dev_w, w_hat)
    beta_hat = ml.fixef.to_numpy()
    fixed = _Family(beta_names, beta_hat, ml.se.to_numpy(), np.full(len(beta_names), -np.inf),
                    lambda i, v: v, run_b, ml.criterion, np.asarray(ml.theta, float))
    limits = {**_search(variance, z), **_search(fixed, z)}
    estimates = np.concatenate([[natural(i, w) for i, w in enumerate(w_hat)], beta_hat])
    return Profile(fit, var_names + beta_names, estimates, {**variance.points, **fixed.points}, limits, level)
