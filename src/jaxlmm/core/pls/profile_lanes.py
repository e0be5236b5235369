"""Profiled ML deviances with one parameter held, as one small loop-free lane program.

lme4's ``profile`` (and ``confint(method = "profile")``) works with the ML
deviance in the parameters ``sd`` / ``cor`` of each term, ``sigma`` and the
fixed effects; the profile of parameter i at value c is the minimum of the
deviance with that parameter held at c.  The minimizations run in the host
Newton loop (``newton_host``, the method of every fit); each of its evaluations
is one call of the program below for a stack of lanes, one (parameter, value)
pair each:

- variance lanes: the ML deviance in ``x = (sd, cor, log sigma)``
  (``deviance_varpar`` at ``lambda_k = diag(sd / sigma) chol(R_k)``, ``R_k`` the
  correlation matrix).  The optimizer moves the correlations themselves, so
  where a profiled optimum is a correlation of -/+1 it reaches that bound in a
  few steps; ``profile.py`` reports them as lme4 does, on the ``atanh`` scale.
  Holding ``x_i`` is the optimizer's ``fixed`` mask.
- fixed-effect lanes: with ``beta_j = c`` held, y becomes ``y - c X_j`` and
  column j a padding column (``held_cross_products``), and theta is optimized
  with sigma profiled.

One program, ``lane_program``, serves both kinds and every round of a
profile: ``optimize.value_grad_hessian`` of the blocked deviance
(``pls/criterion.py``) vmapped over lanes, with no loop, so it compiles in well
under a second.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ..likelihood.criteria import explicit_criterion
from ..linalg import factor as linalg
from .data import CrossProducts
from .criterion import criterion_from_parts, parts
from .programs import CPU_COMPILER_OPTIONS
from ..optim.newton import value_grad_hessian
from ..params.structure import ReStructure, theta_positions


def theta_sigma(x: jnp.ndarray, structure: ReStructure):
    """(theta, sigma) from ``x = (sd, cor, log sigma)`` (lme4's order of each term's lower triangle)."""
    sigma = jnp.exp(x[-1])
    thetas = []
    for t, off in zip(structure.terms, structure.theta_offsets):
        rows, cols = theta_positions(t)
        S = t.ncols
        sd = [None] * S
        corr = [[None] * S for _ in range(S)]
        for a in range(t.ntheta):
            i, j = int(rows[a]), int(cols[a])
            if i == j:
                sd[i] = x[off + a]
            else:
                corr[i][j] = corr[j][i] = x[off + a]
        one, zero = jnp.ones((), x.dtype), jnp.zeros((), x.dtype)
        R = jnp.stack([jnp.stack([one if i == j else (zero if corr[i][j] is None else corr[i][j]) for j in range(S)])
                       for i in range(S)])
        Lr = linalg.cholesky(R) if S > 1 else R
        lam = (jnp.stack(sd) / sigma)[:, None] * Lr
        thetas.append(lam[rows, cols])
    return jnp.concatenate(thetas), sigma


def held_cross_products(cp: CrossProducts, j, c) -> CrossProducts:
    """Cross-products with ``beta_j = c`` held (``c`` relative to ``cp.beta_shift[j]``), same shapes.

    y becomes ``y - c X_j`` and column j a padding column: no cross-products, a unit diagonal.  The
    ML deviance (the only criterion profiled) does not see it: it adds 0 to ``log|R_X|^2`` and
    nothing to the PWRSS.  ``j`` may be traced; ``j = -1`` (with ``c = 0``) leaves ``cp`` as it is.
    """
    p = cp.p
    dtype = cp.Axx.dtype
    e = (jnp.arange(p + 1) == j).astype(dtype)                   # column j of [X y] (none for j = -1)
    keep = 1.0 - e
    last = jnp.arange(p + 1) == p

    def along(A, axis):                                          # y -> y - c X_j, then column j dropped
        A = jnp.moveaxis(A, axis, -1)
        y = A[..., p] - c * (A @ e)
        A = jnp.where(last, y[..., None], A) * keep
        return jnp.moveaxis(A, -1, axis)

    Axx = along(along(cp.Axx, 0), 1)
    yy = cp.Axx[p, p] - 2.0 * c * (e @ cp.Axx[:, p]) + c * c * (e @ cp.Axx @ e)
    Axx = Axx.at[p, p].set(yy) + jnp.diag(e)
    return CrossProducts(cp.Dbb, along(cp.Cxb, 1), cp.Cdb, cp.Add, along(cp.Axd, 0), Axx, cp.n_obs,
                         cp.sum_log_w, cp.beta_shift, cp.structure)


def lane_deviance(z: jnp.ndarray, j, c, fixed, cp: CrossProducts) -> jnp.ndarray:
    """The ML deviance of one lane (``z`` (k + 1,)):

    - a variance lane (``fixed`` false): at ``z = (sd, cor, log sigma)``, beta profiled
      (``deviance_varpar``);
    - a fixed-effect lane: at ``theta = z[:k]`` with ``beta_j = c`` held and sigma profiled
      (``z[k]`` unused).
    """
    k = cp.structure.ntheta
    theta_v, sigma = theta_sigma(jnp.where(fixed, jnp.zeros_like(z), z), cp.structure)   # no NaN to select from
    theta = jnp.where(fixed, z[:k], theta_v)
    shift = jnp.where(fixed, c - cp.beta_shift[jnp.maximum(j, 0)], 0.0)
    held = held_cross_products(cp, jnp.where(fixed, j, -1), shift)
    pt = parts(theta, held)
    at_sigma = explicit_criterion(pt.ldL2, pt.ldRX2, pt.pwrss, pt.n_obs, cp.p, sigma ** 2, False)
    return jnp.where(fixed, criterion_from_parts(pt, cp.p, False), at_sigma)


@partial(jax.jit, compiler_options=CPU_COMPILER_OPTIONS)
def lane_program(z, j, c, fixed, cp: CrossProducts):
    """``(D, dD/dz, d2D/dz2)`` of ``lane_deviance`` for every lane (``z`` (lanes, k + 1); ``j``, ``c``,
    ``fixed`` (lanes,))."""
    def one(zi, ji, ci, fi):
        return value_grad_hessian(lambda v: lane_deviance(v, ji, ci, fi, cp), zi)

    return jax.vmap(one)(z, j, c, fixed)
