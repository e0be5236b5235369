"""lme4's ``nAGQ = 0``: the fixed effects inside the penalized iteration, theta alone outside.

For theta, the joint mode ``v* = (u*, beta*)`` minimizes the penalized objective of ``mode.py`` over both
(beta unpenalized; lme4's PIRLS with beta):

    h(u, beta; theta) = -sum_i log p(y_i | eta_i) + |u|^2 / 2,   eta = X beta + offset + J(theta) u,

whose Hessian is ``[[H_uu, J'WX], [X'WJ, X'WX]]`` with ``H_uu = I + J'WJ`` (``mode.Factor``).  A Newton
step eliminates beta through the Schur complement ``S = X'WX - X'WJ H_uu^{-1} J'WX`` (``p x p``).  The
criterion is the Laplace approximation at the joint mode, ``2 h(v*) + log |H_uu(v*)|``, a function of theta
only; ``S^{-1}`` at the optimum is the covariance of beta (lme4's ``RX``-based ``vcov``).  The joint mode is
differentiated implicitly in theta, as the conditional mode is.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from .families import score_information
from .layout import GlmmData, GlmmLayout, scatter, slot_coefficients
from .mode import descend, factor, linear_predictor, logdet, penalized, solve


def full_parameters(layout: GlmmLayout, theta, v):
    """``(theta, beta)`` with beta from the joint mode ``v = (u, beta)``."""
    return jnp.concatenate([theta, v[layout.q:]])


def gradient(layout: GlmmLayout, theta, data: GlmmData, v):
    """``(grad_v h, W, a)`` at ``v`` (module docstring)."""
    q = layout.q
    x = full_parameters(layout, theta, v)
    a = slot_coefficients(layout, theta, data.z)
    eta = linear_predictor(layout, x, data, v[:q])
    score, info = score_information(layout.family, eta, data.y, data.w, jnp.zeros((), theta.dtype))
    g = jnp.concatenate([v[:q] - scatter(layout, data, a * score[:, None]), -data.X.T @ score])
    return g, info, a


def joint_factor(layout: GlmmLayout, info, a, data: GlmmData):
    """``(F, J'WX, H_uu^{-1} J'WX, chol S)`` (module docstring)."""
    F = factor(layout, info, a, data)
    cross = jax.vmap(lambda xj: scatter(layout, data, a * (info * xj)[:, None]), in_axes=1, out_axes=1)(data.X)
    M = solve(layout, F, cross)
    S = data.X.T @ (info[:, None] * data.X) - cross.T @ M
    return F, cross, M, jnp.linalg.cholesky(S)


def joint_solve(layout: GlmmLayout, parts, g):
    """The joint Hessian's inverse times ``g`` (q + p,) by elimination of beta."""
    F, cross, M, LS = parts
    q = layout.q
    gu, gb = g[:q], g[q:]
    db = jax.scipy.linalg.cho_solve((LS, True), gb - M.T @ gu)
    return jnp.concatenate([solve(layout, F, gu - cross @ db), db])


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def joint_mode(layout: GlmmLayout, theta, data: GlmmData, v0):
    """``v* = (u*, beta*)`` at theta (module docstring); ``v0`` is a start and has no derivative."""
    theta = lax.stop_gradient(theta)
    h = lambda v: penalized(layout, full_parameters(layout, theta, v), data, v[:layout.q], with_constant=False)

    def step(v):
        g, info, a = gradient(layout, theta, data, v)
        return joint_solve(layout, joint_factor(layout, info, a, data), g)

    return descend(h, step, lax.stop_gradient(v0).astype(theta.dtype))[0]


@joint_mode.defjvp
def _joint_mode_jvp(layout, primals, tangents):
    theta, data, v0 = primals
    v = joint_mode(layout, theta, data, v0)
    _, rhs = jax.jvp(lambda t: gradient(layout, t, data, v)[0], (theta,), (tangents[0],))
    _, info, a = gradient(layout, theta, data, v)
    return v, -joint_solve(layout, joint_factor(layout, info, a, data), rhs)


def joint_objective(layout: GlmmLayout, theta, data: GlmmData, v0):
    """``-2 log L`` (Laplace) at the joint mode: a function of theta (module docstring)."""
    return joint_objective_and_state(layout, theta, data, v0)[0]


def joint_objective_and_state(layout: GlmmLayout, theta, data: GlmmData, v0):
    """``(-2 log L, (v, eta, F))`` as ``objective.objective_and_state``, ``v = (u, beta)`` the joint mode."""
    v = joint_mode(layout, theta, data, v0)
    x = full_parameters(layout, theta, v)
    u = v[:layout.q]
    _, info, a = gradient(layout, theta, data, v)
    F = factor(layout, info, a, data)
    return 2.0 * penalized(layout, x, data, u) + logdet(layout, F), (v, linear_predictor(layout, x, data, u), F)


def beta_covariance(layout: GlmmLayout, theta, data: GlmmData, v):
    """``S^{-1}`` at the joint mode ``v``: the covariance of beta."""
    _, info, a = gradient(layout, theta, data, v)
    LS = joint_factor(layout, info, a, data)[3]
    return jax.scipy.linalg.cho_solve((LS, True), jnp.eye(LS.shape[0], dtype=LS.dtype))
