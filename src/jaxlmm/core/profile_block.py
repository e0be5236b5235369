"""Profiled ML deviance over a grid of parameter values, as one vmapped program.

lme4's ``profile`` (and ``confint(method = "profile")``) works with the ML
deviance in the parameters ``sd`` / ``cor`` of each term, ``sigma`` and the
fixed effects; the profile of parameter i at value c is the minimum of the
deviance with that parameter held at c.

- Variance parameters: the optimizer works in ``w`` = (sd >= 0, atanh(cor),
  log sigma); ``lambda_k = diag(sd / sigma) chol(R_k)`` with ``R_k`` the
  correlation matrix.  Holding ``w_i`` is the optimizer's ``fixed`` mask, so
  every (parameter, value) pair is one lane of a single vmapped fit.
- Fixed effects: holding ``beta_j = c`` replaces y by ``y - c X_j`` and drops
  column j, which on the cross-products is index selection and a quadratic in
  c; theta is then optimized with sigma profiled.  (j, c) pairs are vmapped.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import linalg
from .data import CrossProducts
from .deviance import profiled_deviance
from .fit import CPU_COMPILER_OPTIONS
from .optimize import NewtonOptions, minimize_newton
from .profile_params import varpar_kinds, w_reflections
from .structure import ReStructure, theta_positions
from .varpar import deviance_varpar


def theta_sigma_from_w(w: jnp.ndarray, structure: ReStructure):
    """(theta, sigma) from w = (sd, atanh(cor), log sigma)."""
    sigma = jnp.exp(w[-1])
    thetas = []
    for t, off in zip(structure.terms, structure.theta_offsets):
        rows, cols = theta_positions(t)
        S = t.ncols
        sd = [None] * S
        corr = [[None] * S for _ in range(S)]
        for a in range(t.ntheta):
            i, j = int(rows[a]), int(cols[a])
            if i == j:
                sd[i] = w[off + a]
            else:
                corr[i][j] = corr[j][i] = jnp.tanh(w[off + a])
        one, zero = jnp.ones((), w.dtype), jnp.zeros((), w.dtype)
        R = jnp.stack([jnp.stack([one if i == j else (zero if corr[i][j] is None else corr[i][j]) for j in range(S)])
                       for i in range(S)])
        Lr = linalg.cholesky(R) if S > 1 else R
        lam = (jnp.stack(sd) / sigma)[:, None] * Lr
        thetas.append(lam[rows, cols])
    return jnp.concatenate(thetas), sigma


def ml_deviance_w(w: jnp.ndarray, cp: CrossProducts) -> jnp.ndarray:
    theta, sigma = theta_sigma_from_w(w, cp.structure)
    return deviance_varpar(jnp.concatenate([theta, sigma[None]]), cp, reml=False)


@partial(jax.jit, compiler_options=CPU_COMPILER_OPTIONS)
def hessian_w(cp: CrossProducts, w):
    return jax.hessian(ml_deviance_w)(w, cp)


@partial(jax.jit, static_argnames=("options",), compiler_options=CPU_COMPILER_OPTIONS)
def profile_varpar_program(cp: CrossProducts, w_hat, index, values, options: NewtonOptions = NewtonOptions()):
    """Profiled ML deviance with ``w[index[m]] = values[m]`` held, for every m (vmapped)."""
    k = w_hat.shape[0]
    kinds = varpar_kinds(cp.structure)
    lower = jnp.asarray(np.where(kinds == 0, 0.0, -np.inf), w_hat.dtype)
    R = w_reflections(cp.structure)

    def one(i, c):
        held = jnp.arange(k) == i
        x0 = jnp.where(held, c, jnp.maximum(w_hat, lower))
        res = minimize_newton(partial(ml_deviance_w, cp=cp), x0, lower, options, R, fixed=held)
        return res.fun, res.status, res.theta

    return jax.vmap(one)(index, values)


def fixed_beta_cross_products(cp: CrossProducts, j, c) -> CrossProducts:
    """Cross-products of the model with ``beta_j = c`` held: y -> y - c X_j, column j dropped.

    ``j`` may be traced: the kept columns are gathered with indices built from it.
    """
    p = cp.p
    keep = jnp.arange(p - 1) + (jnp.arange(p - 1) >= j)          # the other columns of X
    cols = jnp.concatenate([keep, jnp.array([p])])               # ... and y
    # the y column minus c times column j, in every cross-product
    def shift_y(A, axis):
        A = jnp.moveaxis(A, axis, -1)
        y = A[..., p] - c * A[..., j]
        A = A.at[..., p].set(y)
        return jnp.moveaxis(A, -1, axis)

    Axx = cp.Axx
    yy = Axx[p, p] - 2 * c * Axx[j, p] + c * c * Axx[j, j]
    Axx = shift_y(shift_y(Axx, 0), 1).at[p, p].set(yy)
    Axx = Axx[cols][:, cols]
    Cxb = jnp.take(shift_y(cp.Cxb, 1), cols, axis=1)
    Axd = jnp.take(shift_y(cp.Axd, 0), cols, axis=0)
    beta_shift = jnp.take(cp.beta_shift, keep)
    # the shift by beta_shift was applied to y already: y - X beta_shift; holding beta_j = c
    # means y - X_j c - X_{-j} b, so the held value is relative to beta_shift[j]
    return CrossProducts(cp.Dbb, Cxb, cp.Cdb, cp.Add, Axd, Axx, cp.n_obs, cp.sum_log_w, beta_shift, cp.structure)


@partial(jax.jit, static_argnames=("options",), compiler_options=CPU_COMPILER_OPTIONS)
def profile_beta_program(cp: CrossProducts, theta_hat, index, values, options: NewtonOptions = NewtonOptions()):
    """Profiled ML deviance with ``beta[index[m]] = values[m]`` held (theta optimized, sigma profiled)."""
    lower = jnp.asarray(cp.structure.lower_bounds(), theta_hat.dtype)
    R = cp.structure.reflections()

    def one(j, c):
        cpj = fixed_beta_cross_products(cp, j, c - cp.beta_shift[j])
        res = minimize_newton(partial(profiled_deviance, cp=cpj, reml=False), theta_hat, lower, options, R)
        return res.fun, res.status, res.theta

    return jax.vmap(one)(index, values)
