"""Likelihood profiles and profile confidence intervals (lme4's ``profile`` / ``confint``).

For each parameter -- the sd and cor of each term, sigma, the fixed effects --
``zeta(c) = sign(c - estimate) sqrt(dev(c) - dev_min)`` with ``dev(c)`` the ML
deviance minimized with that parameter held at c (lme4 profiles the ML
deviance also for REML fits).  The interval at level ``1 - alpha`` is where
``zeta = -/+ z_{1 - alpha/2}``.

All profiled fits run as vmapped batches (``core/profile.py``): a grid of
values around every estimate (spaced by its Wald SE from the exact Hessian)
in one call, then a few rounds of bracketed secant steps, each round one call
for all parameters and both sides.  Where a bounded parameter (an sd at 0, a
correlation at -/+1) is reached before |zeta| does, that bound is the limit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from ._x64 import float64_methods, float64_scope
from .design import bucket
from .naming import confint_names

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

    def __init__(self, target: float, bound: float | None):
        self.target, self.bound = target, bound
        self.inner = (None, 0.0)    # (value, zeta) with |zeta| < z, closest to the crossing
        self.outer = None            # (value, zeta) with |zeta| >= z
        self.done_value = None

    def add(self, value: float, zeta: float):
        if not np.isfinite(zeta):
            return
        if abs(zeta) >= abs(self.target) and np.sign(zeta) == np.sign(self.target):
            if self.outer is None or abs(value - self.inner[0]) < abs(self.outer[0] - self.inner[0]):
                self.outer = (value, zeta)
        elif np.sign(zeta) == np.sign(self.target) or zeta == 0.0:
            if abs(zeta) >= abs(self.inner[1]):
                self.inner = (value, zeta)


def _estimates_and_names(ml):
    names = []
    for t in ml.design.terms:
        names.extend(confint_names(t.group, t.columns))
    names.append("sigma")
    return names


def _lanes(index, values, size, fill):
    idx = np.zeros(size, np.int32)
    val = np.full(size, fill, dtype=float)
    idx[:len(index)], val[:len(values)] = index, values
    return idx, val


def _block_runners(ml, w_hat, size):
    """The deviance at w-hat, its Hessian in w, and the two profile runners on the block path."""
    import jax
    import jax.numpy as jnp

    from .core import profile as core

    cp = ml.cross_products
    theta_hat = jnp.asarray(ml.theta)
    beta0 = float(ml.fixef.to_numpy()[0])

    def run_w(index, values):
        idx, val = _lanes(index, values, size, w_hat[0])
        fun, status, _ = jax.device_get(core.profile_varpar_program(cp, jnp.asarray(w_hat), jnp.asarray(idx),
                                                                    jnp.asarray(val)))
        return np.asarray(fun)[:len(index)], np.asarray(status)[:len(index)]

    def run_b(index, values):
        idx, val = _lanes(index, values, size, beta0)
        fun, status, _ = jax.device_get(core.profile_beta_program(cp, theta_hat, jnp.asarray(idx), jnp.asarray(val)))
        return np.asarray(fun)[:len(index)], np.asarray(status)[:len(index)]

    dev_w = float(core.ml_deviance_w(jnp.asarray(w_hat), cp))
    return dev_w, np.asarray(core.hessian_w(cp, jnp.asarray(w_hat))), run_w, run_b


@float64_scope
def profile(fit, level: float = 0.95) -> Profile:
    """Profile every parameter of ``fit`` and find its profile confidence limits."""
    from .core import profile as core

    ml = fit.refit_ml()
    structure = ml.design.structure
    w_hat = core.w_from_theta_sigma(ml.theta, ml.sigma, structure)
    kinds = core.varpar_kinds(structure)
    z = special.ndtri(0.5 + level / 2)
    var_names = _estimates_and_names(ml)
    beta_names = ml.fixef_names
    k, p = len(var_names), len(beta_names)

    size = bucket(max(len(GRID) * k, len(GRID) * p, 1))
    dev_w, H, run_w, run_b = _block_runners(ml, w_hat, size)
    dev_beta = ml.criterion
    with np.errstate(invalid="ignore"):
        se_w = np.sqrt(np.maximum(np.diag(2.0 * np.linalg.pinv(H)), 0.0))
    fallback = 0.3 * np.maximum(np.abs(w_hat), 0.3)
    se_w = np.where(np.isfinite(se_w) & (se_w > 1e-8), se_w, fallback)
    se_b = ml.se.to_numpy()
    beta_hat = ml.fixef.to_numpy()

    # one bracket search per (parameter, side) in w-space (variance) or beta-space
    sides = {}
    points = {}
    for i, name in enumerate(var_names):
        bound_lo = 0.0 if kinds[i] == 0 else None
        sides[name] = [_Side(-z, bound_lo), _Side(z, None)]
        points[name] = {}
    for name in beta_names:
        sides[name] = [_Side(-z, None), _Side(z, None)]
        points[name] = {}

    def natural(i, v):
        return v if kinds[i] == 0 else (np.tanh(v) if kinds[i] == 1 else np.exp(v))

    def record(names, est, index, values, devs, dev_min, to_natural):
        for i, v, d in zip(index, values, devs):
            zeta = np.sign(v - est[i]) * np.sqrt(max(d - dev_min, 0.0)) if np.isfinite(d) else np.nan
            name = names[i]
            points[name][float(to_natural(i, v))] = float(zeta)
            for side in sides[name]:
                side.add(v, zeta)

    # round 0: the grid
    wi, wv = [], []
    for i in range(k):
        for d in GRID:
            v = w_hat[i] + d * se_w[i]
            if kinds[i] == 0:
                v = max(v, 0.0)
            wi.append(i)
            wv.append(v)
    wi, wv = np.asarray(wi), np.asarray(wv)
    for i in range(k):
        for side in sides[var_names[i]]:
            side.inner = (w_hat[i], 0.0)
    devs, _ = run_w(wi, wv)
    record(var_names, w_hat, wi, wv, devs, dev_w, natural)
    bi = np.repeat(np.arange(p), len(GRID))
    bv = beta_hat[bi] + np.tile(GRID, p) * se_b[bi]
    for j in range(p):
        for side in sides[beta_names[j]]:
            side.inner = (beta_hat[j], 0.0)
    devs, _ = run_b(bi, bv)
    record(beta_names, beta_hat, bi, bv, devs, dev_beta, lambda i, v: v)

    # refinement rounds: secant inside brackets, outward steps where none yet
    all_names = var_names + beta_names
    for _ in range(ROUNDS):
        wi, wv, bi, bv = [], [], [], []
        for n_i, name in enumerate(all_names):
            is_var = n_i < k
            i = n_i if is_var else n_i - k
            est = w_hat[i] if is_var else beta_hat[i]
            scale = se_w[i] if is_var else se_b[i]
            for s_idx, side in enumerate(sides[name]):
                if side.done_value is not None:
                    continue
                v_in, z_in = side.inner
                if side.outer is not None:
                    v_out, z_out = side.outer
                    t = (side.target - z_in) / (z_out - z_in) if z_out != z_in else 0.5
                    v = v_in + np.clip(t, 0.02, 0.98) * (v_out - v_in)
                else:
                    direction = -1.0 if s_idx == 0 else 1.0
                    v = v_in + direction * 2.0 * scale * max(1.0, abs(v_in - est) / scale)
                    if is_var and kinds[i] == 0 and v <= 0.0:
                        if side.inner[0] == 0.0:
                            side.done_value = 0.0
                            continue
                        v = 0.0
                (wi if is_var else bi).append(i)
                (wv if is_var else bv).append(v)
        if wi:
            devs, _ = run_w(np.asarray(wi), np.asarray(wv))
            record(var_names, w_hat, wi, wv, devs, dev_w, natural)
        if bi:
            devs, _ = run_b(np.asarray(bi), np.asarray(bv))
            record(beta_names, beta_hat, bi, bv, devs, dev_beta, lambda i, v: v)
        if not wi and not bi:
            break

    limits = {}
    for n_i, name in enumerate(all_names):
        is_var = n_i < k
        i = n_i if is_var else n_i - k
        lims = []
        for side in sides[name]:
            if side.done_value is not None:
                v = side.done_value
            elif side.outer is not None:
                (v0, z0), (v1, z1) = side.inner, side.outer
                v = v0 + (side.target - z0) / (z1 - z0) * (v1 - v0) if z1 != z0 else v1
            else:
                v = np.nan
            lims.append(natural(i, v) if is_var else v)
        limits[name] = tuple(lims)
    estimates = np.concatenate([[natural(i, w_hat[i]) for i in range(k)], beta_hat])
    return Profile(fit, all_names, estimates, points, limits, level)
