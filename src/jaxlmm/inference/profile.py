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
Every minimization of a round, variance parameters and fixed effects alike,
is a lane of one host Newton loop (``profile_lanes.py``), and every evaluation
one call of a small loop-free program for a stack of lanes
(``core/pls/profile_lanes.py``).
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
from .profile_lanes import ProfileLanes

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
    lanes: Callable             # (index, values, starts) -> the round's problems (profile_lanes.LaneSet)
    solutions: Callable         # (index, values, z) -> the solutions, as the starts of later rounds
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


def _search(families: list[_Family], z: float, minimize: Callable) -> dict:
    """The limits (natural scale) of every parameter of ``families``; each round's problems of all
    families go to ``minimize`` together (``ProfileLanes.minimize``: one host loop)."""
    sides = [family.sides(z) for family in families]
    todo = [_grid(family) for family in families]
    for _ in range(ROUNDS + 1):
        live = [(f, s, t) for f, s, t in zip(families, sides, todo) if t[0].size]
        if not live:
            break
        devs, solutions = minimize([f.lanes(*t) for f, _, t in live])
        at = 0
        for family, side, (index, values, _) in live:
            n = index.size
            family.record(side, index, values, devs[at:at + n], family.solutions(index, values, solutions[at:at + n]))
            at += n
        todo = [_next_values(f, s) for f, s in zip(families, sides)]
    return {name: tuple(family.natural(i, side.limit()) for side in family_sides[i])
            for family, family_sides in zip(families, sides) for i, name in enumerate(family.names)}


def _variance_names(ml):
    names = []
    for t in ml.design.terms:
        names.extend(confint_names(t.group, t.columns, t.cov))
    names.append("sigma")
    return names


def _wald_scale(H, w_hat):
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.maximum(np.diag(2.0 * np.linalg.pinv(H)), 0.0))
    fallback = 0.3 * np.maximum(np.abs(w_hat), 0.3)
    return np.where(np.isfinite(se) & (se > 1e-8), se, fallback)


@float64_scope
def profile(fit, level: float = 0.95) -> Profile:
    """Profile every parameter of ``fit`` and find its profile confidence limits (a small model's host
    loops with one BLAS thread, ``core/linalg/threads.py``)."""
    from ..core.linalg.threads import small_blas

    with small_blas(fit.model.engine.small):
        return _profile(fit, level)


def _profile(fit, level: float) -> Profile:
    from ..core.params import profile_params as core

    if fit.design.structure.structured:
        raise JaxlmmError("profiles of models with ar1() or cs() terms are not supported yet; "
                          "use confint(method='wald') or method='boot'")
    ml = fit.refit_ml()
    structure = ml.design.structure
    w_hat = core.w_from_theta_sigma(ml.theta, ml.sigma, structure)
    kinds = core.varpar_kinds(structure)
    z = special.ndtri(0.5 + level / 2)
    var_names, beta_names = _variance_names(ml), list(ml.fixef_names)
    lanes = ProfileLanes(ml)
    dev_w, H = lanes.at_estimate(w_hat)

    def natural(i, v):
        return v if kinds[i] == 0 else (np.tanh(v) if kinds[i] == 1 else np.exp(v))

    variance = _Family(var_names, w_hat, _wald_scale(H, w_hat), np.where(kinds == 0, 0.0, -np.inf), natural,
                       lanes.variance_lanes, lanes.variance_solutions, dev_w, w_hat)
    beta_hat = ml.fixef.to_numpy()
    fixed = _Family(beta_names, beta_hat, ml.se.to_numpy(), np.full(len(beta_names), -np.inf),
                    lambda i, v: v, lanes.fixed_lanes, lanes.fixed_solutions, ml.criterion,
                    np.asarray(ml.theta, float))
    limits = _search([variance, fixed], z, lanes.minimize)
    estimates = np.concatenate([[natural(i, w) for i, w in enumerate(w_hat)], beta_hat])
    return Profile(fit, var_names + beta_names, estimates, {**variance.points, **fixed.points}, limits, level)
