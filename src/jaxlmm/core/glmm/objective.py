"""The GLMM objective: ``-2 log L(x)`` by the Laplace approximation or adaptive Gauss-Hermite quadrature.

Laplace (``nAGQ = 1``), at the conditional mode ``u* = u*(x)`` (``mode.py``):

    -2 log L(x) ~= 2 h(u*; x) + log |H(u*; x)| = -2 sum_i log p(y_i | eta_i(u*)) + |u*|^2 + log |I + J'WJ|,

the constant ``2 pi`` terms cancelling -- lme4's ``glmer`` deviance with the full log-density (for the
binomial the ``log C(w, w y)`` term included, as lme4's ``logLik`` and glmmTMB have it), and glmmTMB's
exact Laplace approximation (``W`` the observed information, which is PIRLS's for canonical links).

Adaptive Gauss-Hermite (``nAGQ = K > 1``; one term of ``s <= 3`` columns, so that the integral factors
by level ``j``): with ``H_j = L_j L_j'`` the block of level ``j`` and ``(z_m, w_m)`` the product grid
of ``K`` probabilists' Gauss-Hermite nodes in each of the ``s`` dimensions (weights summing to 1),

    log L_j ~= -log |L_j| + logsumexp_m [ log w_m + l_j(u_jm) - |u_jm|^2 / 2 + |z_m|^2 / 2 ],
    u_jm = u*_j + L_j^{-T} z_m,

``l_j`` the log-likelihood of the rows of level ``j``.  With ``K = 1`` (``z = 0``, ``w = 1``) this is the
Laplace approximation.  Both are pure JAX functions of ``x``: gradients and Hessians by autodiff through
the mode's implicit derivatives.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from .families import log_density
from .layout import GlmmData, GlmmLayout, by_level, slot_coefficients, split, sum_by_level
from .mode import factor, gradient_and_weights, linear_predictor, logdet, mode, penalized


def objective(layout: GlmmLayout, x, data: GlmmData, u0=None):
    """``-2 log L`` at ``x`` (module docstring): Laplace, or AGQ when ``layout.nagq > 1``."""
    return objective_and_state(layout, x, data, u0)[0]


def objective_and_state(layout: GlmmLayout, x, data: GlmmData, u0=None):
    """``(-2 log L, (u, eta, F))``: the objective with the conditional mode, the linear predictor and the
    factor of ``H`` it was computed from (what a fit reports at its optimum)."""
    u0 = jnp.zeros(layout.q, x.dtype) if u0 is None else u0
    u = mode(layout, x, data, u0)
    _, info, a = gradient_and_weights(layout, x, data, u)
    F = factor(layout, info, a, data)
    state = (u, linear_predictor(layout, x, data, u), F)
    if layout.nagq <= 1:
        return 2.0 * penalized(layout, x, data, u) + logdet(layout, F), state
    return _agq(layout, x, data, u, F.L), state


def gauss_hermite_grid(nagq: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (M, s) and log weights (M,) of the product grid (probabilists' rule, weights summing to 1)."""
    z, w = np.polynomial.hermite_e.hermegauss(nagq)
    w = w / w.sum()
    nodes = np.array(list(itertools.product(z, repeat=s)), dtype=float).reshape(-1, s)
    logw = np.array([np.sum(np.log(c)) for c in itertools.product(w, repeat=s)], dtype=float)
    return nodes, logw


def _agq(layout: GlmmLayout, x, data: GlmmData, u, L):
    """Adaptive Gauss-Hermite quadrature by level of the one term (module docstring)."""
    term = layout.terms[0]
    s, G = term.ncols, term.nlevels
    theta, beta, log_disp = split(layout, x)
    nodes, logw = gauss_hermite_grid(layout.nagq, s)
    Z = jnp.asarray(nodes, x.dtype)                                   # (M, s)
    U = u.reshape(G, s)
    # L_j^{-T} z_m for every level and node: (G, M, s)
    shift = jax.scipy.linalg.solve_triangular(L, jnp.broadcast_to(Z.T, (G, s, Z.shape[0])), lower=True, trans=1)
    Ujm = U[:, None, :] + jnp.swapaxes(shift, 1, 2)
    a = slot_coefficients(layout, theta, data.z)                      # (n, s)
    fixed = data.X @ beta + data.offset
    eta = fixed[:, None] + jnp.einsum("is,ims->im", a, by_level(layout, data, Ujm))     # (n, M)
    rows = log_density(layout.family, eta, data.y[:, None], data.w[:, None], log_disp)
    l_jm = sum_by_level(layout, data, rows)                           # (G, M)
    terms = jnp.asarray(logw, x.dtype) + l_jm - 0.5 * jnp.sum(Ujm ** 2, axis=-1) + 0.5 * jnp.sum(Z ** 2, axis=-1)
    log_L = -jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1) + jax.nn.logsumexp(terms, axis=1)
    return -2.0 * jnp.sum(log_L)
