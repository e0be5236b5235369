"""Profiled ML deviances of a small model, on the fit's own compiled block program.

lme4's ``profile`` holds one parameter at a value and minimizes the ML
deviance over the others (``jaxlmm/profile.py`` runs the search).  Here every
such minimization is a lane of the host Newton loop (``newton_host``), and
every evaluation is one call of ``dense_fit``'s ``blocks`` program -- the
program that fitted the model -- so a profile compiles nothing of its own
beyond that program at its stack size.

- Variance parameters ``w = (sd, atanh(cor), log sigma)`` (lme4's order):
  ``theta(w)`` and ``s = log sigma`` are small maps evaluated with their first
  and second derivatives as ``jets``.  The ML deviance at a held sigma is,
  with ``l_s`` the block log-determinants of ``dense.block_derivatives`` and
  ``rho = l_all - l_[Z X] = log PWRSS``,

      D(theta, s) = l_Z + n log(2 pi) + 2 n s + exp(rho - 2 s) - sum log w,

  whose derivatives in (theta, s) follow from those of ``l_s``; the chain
  rule through ``theta(w)`` gives them in w.
- Fixed effects: holding ``beta_j = c`` replaces y by ``y - c X_j`` and
  removes column j (``hold_fixed_effect``, on the cross-products), a
  different system per lane; theta is optimized with sigma profiled (ML).
"""

from __future__ import annotations

import numpy as np

from .dense import DenseSystem
from .dense_fit import DenseStack, broadcast_system, fit_stack
from .jets import Jet, chain, cholesky
from .newton_host import minimize_newton_host
from .optimize import NewtonOptions
from .profile_params import varpar_kinds, w_reflections
from .structure import ReStructure, theta_positions


def theta_and_log_sigma(w: np.ndarray, structure: ReStructure, correlation: str = "atanh") -> list[Jet]:
    """Jets of ``theta`` (k) and ``log sigma`` at ``w`` (B, k + 1):
    ``Lambda_k = diag(sd / sigma) chol(R_k)`` with ``R_k`` the correlation matrix of ``tanh(w)``
    (``correlation="atanh"``, lme4's profile scale) or of ``w`` itself (``"r"``)."""
    seeds = Jet.seeds(np.asarray(w, float))
    s = seeds[-1]
    inv_sigma = (Jet.constant(0.0, s) - s).exp()
    thetas: list[Jet] = []
    for t, off in zip(structure.terms, structure.theta_offsets):
        rows, cols = theta_positions(t)
        S = t.ncols
        sd: list[Jet | None] = [None] * S
        R: list[list[Jet | None]] = [[Jet.constant(0.0, s) if i > j else None for j in range(S)] for i in range(S)]
        for a, (i, j) in enumerate(zip(rows, cols)):
            if i == j:
                sd[i] = seeds[off + a]
                R[i][i] = Jet.constant(1.0, s)
            else:
                R[i][j] = seeds[off + a].tanh() if correlation == "atanh" else seeds[off + a]
        L = cholesky(R)
        thetas.extend(sd[i] * L[i][j] * inv_sigma for i, j in zip(rows, cols))
    return thetas + [s]


def ml_deviance_at_sigma(blocks, s: np.ndarray, system: DenseSystem, k: int):
    """``D(theta, s)`` (module docstring) with its gradient and Hessian in (theta_1..k, s)."""
    logdets, grads, hess = blocks
    grads, hess = grads[:, :, :k], hess[:, :, :k, :k]
    n, sum_log_w = np.asarray(system.n_obs, float), np.asarray(system.sum_log_w, float)
    rho = logdets[:, 2] - logdets[:, 1]
    g_rho = grads[:, 2] - grads[:, 1]
    e = np.exp(rho - 2.0 * s)
    D = logdets[:, 0] + n * np.log(2.0 * np.pi) + 2.0 * n * s + e - sum_log_w
    B = D.shape[0]
    g = np.empty((B, k + 1))
    H = np.empty((B, k + 1, k + 1))
    g[:, :k] = grads[:, 0] + e[:, None] * g_rho
    g[:, k] = 2.0 * n - 2.0 * e
    H[:, :k, :k] = hess[:, 0] + e[:, None, None] * (hess[:, 2] - hess[:, 1]
                                                     + np.einsum("bi,bj->bij", g_rho, g_rho))
    H[:, :k, k] = H[:, k, :k] = -2.0 * e[:, None] * g_rho
    H[:, k, k] = 4.0 * e
    return D, g, H


LANES = 16  # lanes per program call: one compiled program serves every round of a profile
# the optimizer moves free correlations themselves, within R_MAX of -/+1: where a profiled fit's optimum
# is a correlation of -/+1 it reaches that bound in a few Newton steps (in atanh(cor), at infinity, every
# step would gain only a constant 0.5 on an exponentially flat criterion)
R_MAX = 1.0 - 1e-8


class VarianceProfile:
    """The ML deviance in w on one system, and its minimization with one component of w held per lane."""

    def __init__(self, system: DenseSystem, row_of, structure: ReStructure, chunk: int = LANES):
        self.structure, self.k, self.k_pad = structure, structure.ntheta, row_of.shape[0]
        self.system, self.row_of, self.chunk = system, row_of, chunk
        self.stack = DenseStack.of(system, chunk, row_of, chunk)

    def derivatives(self, w: np.ndarray, rows=None, correlation: str = "atanh"):
        """``(D, dD/dw, d2D/dw2)`` at each row of ``w`` (lanes, k + 1); every lane has the same system.

        ``correlation``: the scale of the correlation components of ``w`` (``theta_and_log_sigma``)."""
        jets = theta_and_log_sigma(w, self.structure, correlation)
        theta = np.zeros((w.shape[0], self.k_pad))
        theta[:, :self.k] = np.stack([j.value for j in jets[:-1]], axis=1)
        blocks = self.stack.blocks(theta, np.arange(w.shape[0]))
        D, gD, HD = ml_deviance_at_sigma(blocks, jets[-1].value, self.system, self.k)
        g, H = chain(gD, HD, jets)
        return D, g, H

    def minimize(self, index, values, starts, options: NewtonOptions = NewtonOptions()):
        """Minimize lane b from ``starts[b]`` with ``w[index[b]] = values[b]`` held (w-space in and out;
        the optimizer works on the correlations themselves, ``R_MAX``)."""
        kinds = varpar_kinds(self.structure)
        cor = kinds == 1
        lower = np.where(kinds == 0, 0.0, np.where(cor, -R_MAX, -np.inf))
        upper = np.where(cor, R_MAX, np.inf)
        lanes, index = len(index), np.asarray(index)
        x0 = np.array(starts, float)
        x0[:, cor] = np.tanh(x0[:, cor])
        x0 = np.clip(x0, lower, upper)
        x0[np.arange(lanes), index] = np.where(cor[index], np.clip(np.tanh(values), -R_MAX, R_MAX), values)
        held = np.arange(self.k + 1)[None, :] == index[:, None]
        res = minimize_newton_host(lambda x, rows: self.derivatives(x, rows, "r"), None, x0, lower, options,
                                   w_reflections(self.structure).astype(float), fixed=held,
                                   dtype=self.system.A.dtype, upper=upper)
        w = np.array(res.theta)
        w[:, cor] = np.arctanh(w[:, cor])
        w[np.arange(lanes), index] = values
        return res._replace(theta=w)




def hold_fixed_effect(system: DenseSystem, j: np.ndarray, c: np.ndarray) -> DenseSystem:
    """One system per lane with ``beta_{j[b]} = c[b]`` held (original units of X and y).

    In the system's scaled units ``beta'_j = (c - shift_j) x_scale_j / y_scale``; the y column
    becomes ``y - beta'_j X_j`` and column j a padding column (unit diagonal), so ``p`` drops by one.
    """
    A = np.asarray(system.A, float)
    m = A.shape[0]
    q = system.lam_index.shape[0]
    lanes = len(j)
    jj = q + np.asarray(j)
    shift, x_scale = np.asarray(system.beta_shift, float), np.asarray(system.x_scale, float)
    c_scaled = (np.asarray(c, float) - shift[j]) * x_scale[j] / float(system.y_scale)
    col_y = A[None, :, m - 1] - c_scaled[:, None] * A[:, jj].T
    yy = A[m - 1, m - 1] - 2.0 * c_scaled * A[jj, m - 1] + c_scaled ** 2 * A[jj, jj]
    As = np.repeat(A[None], lanes, axis=0)
    As[:, :, m - 1] = col_y
    As[:, m - 1, :] = col_y
    As[:, m - 1, m - 1] = yy
    lane = np.arange(lanes)
    As[lane, jj, :] = 0.0
    As[lane, :, jj] = 0.0
    As[lane, jj, jj] = 1.0
    dtype = system.A.dtype
    return broadcast_system(system, lanes)._replace(A=As.astype(dtype), p=np.full(lanes, float(system.p) - 1.0,
                                                                                  dtype=dtype))


class FixedEffectProfile:
    """The ML deviance with one fixed effect held per lane, theta optimized and sigma profiled."""

    def __init__(self, system: DenseSystem, row_of, structure: ReStructure, chunk: int = LANES):
        self.structure, self.system, self.row_of, self.chunk = structure, system, row_of, chunk

    def minimize(self, index, values, starts, options: NewtonOptions = NewtonOptions()):
        """Minimize lane b from theta ``starts[b]`` with ``beta[index[b]] = values[b]`` held."""
        stack = DenseStack(hold_fixed_effect(self.system, np.asarray(index), np.asarray(values)), self.row_of,
                           self.chunk)
        k, k_pad = self.structure.ntheta, self.row_of.shape[0]
        theta0, lower, reflections = np.zeros((len(index), k_pad)), np.zeros(k_pad), np.zeros((k_pad, k_pad))
        theta0[:, :k] = np.asarray(starts, float)[:, :k]
        lower[:k], reflections[:k, :k] = self.structure.lower_bounds(), self.structure.reflections()
        res = fit_stack(stack, theta0, lower, reflections, k, False, options)
        return res._replace(theta=res.theta[:, :k])
