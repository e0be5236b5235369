"""The profile's minimizations as lanes of one host Newton loop.

Each (parameter, value) pair of a round of ``profile.py``'s search is one
problem of ``core/optim/host.py``'s loop, on ``z`` of length k + 1:

- a variance parameter held: ``z = (sd, cor, log sigma)`` (the correlations
  themselves, within ``R_MAX`` of -/+1; lme4's profile scale is ``atanh(cor)``,
  converted on the way in and out), ``z_i`` held;
- a fixed effect held: ``z = (theta, 0)``, its last component unused and held.

Both kinds go into one loop -- every round of every parameter at once -- and
every evaluation is one call of ``core/profile_block.lane_program`` per
``LANES`` lanes (per-problem bounds and reflections).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

LANES = 16  # lanes per program call: one compiled program serves every round of a profile
# the optimizer moves free correlations themselves, within R_MAX of -/+1: where a profiled fit's optimum
# is a correlation of -/+1 it reaches that bound in a few Newton steps (in atanh(cor), at infinity, every
# step would gain only a constant 0.5 on an exponentially flat criterion)
R_MAX = 1.0 - 1e-8


class LaneSet(NamedTuple):
    """Problems of the host loop, one row each (``z0``, ``held``, ``lower``, ``upper``: (n, k + 1);
    ``reflections`` (n, k + 1, k + 1); the lane program's ``j``, ``c`` and ``fixed``: (n,))."""

    z0: np.ndarray
    held: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    reflections: np.ndarray
    j: np.ndarray
    c: np.ndarray
    fixed: np.ndarray


class ProfileLanes:
    """The lanes of one ML fit's profile: building them, evaluating and minimizing them."""

    def __init__(self, ml):
        from ..core.params.profile_params import varpar_kinds, w_reflections

        self.cp, self.structure = ml.cross_products, ml.design.structure
        self.dtype = np.dtype(ml.model.dtype)
        self.kinds = varpar_kinds(self.structure)
        self.cor = self.kinds == 1
        self.k = self.structure.ntheta
        self.w_reflections = w_reflections(self.structure).astype(float)
        self.theta_reflections = np.zeros((self.k + 1, self.k + 1))
        self.theta_reflections[:self.k, :self.k] = self.structure.reflections()

    def evaluate(self, z, j, c, fixed):
        """``lane_program`` in chunks of ``LANES`` lanes (the last one padded with its last lane)."""
        import jax

        from ..core.optim.lanes import map_padded
        from ..core.pls.profile_lanes import lane_program

        def call(sel):
            return tuple(lane_program(np.asarray(z, float)[sel].astype(self.dtype), np.asarray(j)[sel].astype(np.int32),
                                      np.asarray(c, float)[sel].astype(self.dtype), np.asarray(fixed, bool)[sel],
                                      self.cp))

        return tuple(np.asarray(r, float) for r in map_padded(call, len(z), LANES))

    def at_estimate(self, w_hat):
        """The ML deviance at ``w_hat`` and its Hessian in w, on lme4's atanh(cor) scale
        (``r = tanh(w)``: ``dr/dw = 1 - r^2``, ``d2r/dw2 = -2 r (1 - r^2)``)."""
        r = np.where(self.cor, np.tanh(w_hat), w_hat)
        D, g, H = self.evaluate(r[None], [-1], [0.0], [False])
        dr = np.where(self.cor, 1.0 - r ** 2, 1.0)
        d2r = np.where(self.cor, -2.0 * r * (1.0 - r ** 2), 0.0)
        return float(D[0]), dr[:, None] * H[0] * dr[None, :] + np.diag(g[0] * d2r)

    def variance_lanes(self, index, values, starts) -> LaneSet:
        """``w[index[b]] = values[b]`` held, from ``starts[b]`` (w, atanh scale)."""
        n, cor = len(index), self.cor
        lower = np.where(self.kinds == 0, 0.0, np.where(cor, -R_MAX, -np.inf))
        upper = np.where(cor, R_MAX, np.inf)
        z0 = np.array(starts, float).reshape(n, self.k + 1)
        z0[:, cor] = np.tanh(z0[:, cor])
        z0 = np.clip(z0, lower, upper)
        z0[np.arange(n), index] = np.where(cor[index], np.clip(np.tanh(values), -R_MAX, R_MAX), values)
        held = np.arange(self.k + 1)[None, :] == np.asarray(index)[:, None]
        return LaneSet(z0, held, np.tile(lower, (n, 1)), np.tile(upper, (n, 1)),
                       np.broadcast_to(self.w_reflections, (n, self.k + 1, self.k + 1)),
                       np.full(n, -1), np.zeros(n), np.zeros(n, bool))

    def variance_solutions(self, index, values, z):
        """The solutions in w (atanh scale), the held component exactly its value."""
        w = np.array(z)
        w[:, self.cor] = np.arctanh(w[:, self.cor])
        w[np.arange(len(index)), index] = values
        return w

    def fixed_lanes(self, index, values, starts) -> LaneSet:
        """``beta[index[b]] = values[b]`` held, theta from ``starts[b]``."""
        n, k = len(index), self.k
        z0 = np.zeros((n, k + 1))
        z0[:, :k] = np.asarray(starts, float).reshape(n, -1)[:, :k]
        held = np.zeros((n, k + 1), bool)
        held[:, k] = True
        lower = np.append(self.structure.lower_bounds(), -np.inf)
        return LaneSet(z0, held, np.tile(lower, (n, 1)), np.full((n, k + 1), np.inf),
                       np.broadcast_to(self.theta_reflections, (n, k + 1, k + 1)),
                       np.asarray(index), np.asarray(values, float), np.ones(n, bool))

    def fixed_solutions(self, index, values, z):
        return np.array(z)[:, :self.k]

    def minimize(self, sets: list[LaneSet]):
        """Minimize every lane of ``sets`` in one host Newton loop: ``(fun, z)``, rows in order."""
        from ..core.optim.host import minimize_newton_host

        lanes = LaneSet(*(np.concatenate(part) for part in zip(*sets)))

        def vgh(z, rows):
            return self.evaluate(z, lanes.j[rows], lanes.c[rows], lanes.fixed[rows])

        res = minimize_newton_host(vgh, None, lanes.z0, lanes.lower, reflections=lanes.reflections,
                                   fixed=lanes.held, dtype=self.dtype, upper=lanes.upper)
        return res.fun, res.theta
