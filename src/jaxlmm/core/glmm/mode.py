"""The conditional mode ``u*(x)`` of the spherical random effects, with implicit derivatives.

For parameters ``x = (theta, beta, log dispersion)`` the mode minimizes the penalized objective

    h(u; x) = -sum_i log p(y_i | eta_i(u)) + |u|^2 / 2,

strictly convex in ``u`` (every family is log-concave in eta, ``families.py``).  Its Hessian is

    H(u; x) = I + J' W J,   J = d eta / d u (slots: ``layout.py``),   W_i = -d^2 log p_i / d eta_i^2

(the observed information: for canonical links it is the Fisher weight of PIRLS).  ``H`` is formed
as one dense ``q x q`` matrix by a scatter-add over the ``n x S x S`` slot pairs, or, for one term,
as ``q / s`` blocks of ``s x s`` (``block_diagonal``); its Cholesky factor gives the Newton step and
``log |H|``.

The mode is found by Newton's method with step halving (lme4's PIRLS, with the observed information)
to ``|step| <= 1e-10 (1 + |u|)``, and is a ``jax.custom_jvp`` function: its derivative is never the
unrolled iteration but the implicit function theorem at the mode, ``du = -H^{-1} (d/dx grad_u h) dx``
-- itself differentiable, so that ``jax.hessian`` of the Laplace objective is exact.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .families import constant, kernel, score_information
from .layout import GlmmData, GlmmLayout, gather, scatter, slot_coefficients, split, sum_by_level

MAX_ITER = 60
MAX_HALVINGS = 30
STEP_TOL = 1e-10


class Factor(NamedTuple):
    """The Cholesky factor of ``H``, blocked as lme4 blocks it: the first term's effects (``q1 = levels x s``)
    then the others' (``q2``),

        H = [[D, B], [B', C]] = L L',   L = [[L1, 0], [V', L2]],   L1 L1' = D,  V = L1^{-1} B,  L2 L2' = C - V'V,

    ``D`` block diagonal by the first term's levels (``L1``: (levels, s, s) blocks), ``V`` (q1, q2) and ``L2``
    (q2, q2) dense (empty for one term).  ``log |H| = 2 sum log diag L1 + 2 sum log diag L2``."""

    L: object      # (levels, s, s) the first term's blocks
    V: object      # (q1, q2)
    L2: object     # (q2, q2)


def linear_predictor(layout: GlmmLayout, x, data: GlmmData, u):
    """``eta = X beta + offset + J u`` (``layout.py``)."""
    theta, beta, _ = split(layout, x)
    a = slot_coefficients(layout, theta, data.z)
    return data.X @ beta + data.offset + jnp.sum(a * gather(layout, data, u), axis=1)


def penalized(layout: GlmmLayout, x, data: GlmmData, u, with_constant: bool = True):
    """``h(u; x)`` (module docstring); without the constant of the log-density in the mode's iterations."""
    _, _, log_disp = split(layout, x)
    eta = linear_predictor(layout, x, data, u)
    value = -jnp.sum(kernel(layout.family, eta, data.y, data.w, log_disp)) + 0.5 * jnp.dot(u, u)
    return value - jnp.sum(constant(layout.family, data.y, data.w)) if with_constant else value


def gradient_and_weights(layout: GlmmLayout, x, data: GlmmData, u):
    """``(grad_u h, W, a)`` at ``u``: the score scattered onto ``u``, the observed information per row."""
    theta, _, log_disp = split(layout, x)
    a = slot_coefficients(layout, theta, data.z)
    eta = linear_predictor(layout, x, data, u)
    score, info = score_information(layout.family, eta, data.y, data.w, log_disp)
    g = u - scatter(layout, data, a * score[:, None])
    return g, info, a


def factor(layout: GlmmLayout, info, a, data: GlmmData) -> Factor:
    """The blocked Cholesky factor of ``H = I + J' W J`` (``Factor``)."""
    first = layout.terms[0]
    s1, q1, q = first.ncols, first.ncols * first.nlevels, layout.q
    a1 = a[:, :s1]
    if s1 == 1:                                          # scalar blocks: the factor is a square root
        L1 = jnp.sqrt(1.0 + sum_by_level(layout, data, info * a1[:, 0] ** 2))[:, None, None]
    else:
        blocks = sum_by_level(layout, data, info[:, None, None] * a1[:, :, None] * a1[:, None, :])
        L1 = jnp.linalg.cholesky(blocks + jnp.eye(s1, dtype=a.dtype))
    if layout.block_diagonal:
        return Factor(L1, jnp.zeros((q1, 0), a.dtype), jnp.zeros((0, 0), a.dtype))
    q2 = q - q1
    i1, i2 = data.idx[:, :s1], data.idx[:, s1:] - q1
    a2 = a[:, s1:]
    B = jnp.zeros((q1, q2), a.dtype).at[i1[:, :, None], i2[:, None, :]].add(
        info[:, None, None] * a1[:, :, None] * a2[:, None, :])
    C = jnp.zeros((q2, q2), a.dtype).at[i2[:, :, None], i2[:, None, :]].add(
        info[:, None, None] * a2[:, :, None] * a2[:, None, :])
    V = _lower_blocks(L1, B)
    L2 = jnp.linalg.cholesky(C + jnp.eye(q2, dtype=a.dtype) - V.T @ V)
    return Factor(L1, V, L2)


def _lower_blocks(L1, v, transpose: bool = False):
    """``L1^{-1} v`` (or ``L1^{-T} v``) for the block-diagonal ``L1`` (levels, s, s) and ``v`` (q1, m)."""
    G, s, _ = L1.shape
    if s == 1:
        return v / L1[:, 0, 0][:, None]
    out = jax.scipy.linalg.solve_triangular(L1, v.reshape(G, s, -1), lower=True, trans=1 if transpose else 0)
    return out.reshape(v.shape)


def solve(layout: GlmmLayout, F: Factor, v):
    """``H^{-1} v`` for ``v`` (q,) or (q, m): forward then back substitution with the blocked factor."""
    vector = v.ndim == 1
    v = v[:, None] if vector else v
    q1 = F.V.shape[0]
    y1 = _lower_blocks(F.L, v[:q1])
    if F.L2.shape[0]:
        y2 = jax.scipy.linalg.solve_triangular(F.L2, v[q1:] - F.V.T @ y1, lower=True)
        x2 = jax.scipy.linalg.solve_triangular(F.L2, y2, lower=True, trans=1)
        x1 = _lower_blocks(F.L, y1 - F.V @ x2, transpose=True)
        out = jnp.concatenate([x1, x2], axis=0)
    else:
        out = _lower_blocks(F.L, y1, transpose=True)
    return out[:, 0] if vector else out


def logdet(layout: GlmmLayout, F: Factor):
    """``log |H|``."""
    return 2.0 * (jnp.sum(jnp.log(jnp.diagonal(F.L, axis1=-2, axis2=-1)))
                  + jnp.sum(jnp.log(jnp.diagonal(F.L2))))


def dense_factor(F):
    """The factor as one lower-triangular (q, q) NumPy matrix (host side: conditional covariances)."""
    import numpy as np
    from scipy.linalg import block_diag

    L1, V, L2 = (np.asarray(t) for t in F)
    top = block_diag(*L1) if L1.shape[1] > 1 else np.diag(L1[:, 0, 0])
    q1, q2 = V.shape
    out = np.zeros((q1 + q2, q1 + q2))
    out[:q1, :q1] = top
    out[q1:, :q1] = V.T
    out[q1:, q1:] = L2
    return out


def descend(h, step, v0):
    """Newton's method with step halving on a strictly convex ``h`` from ``v0``, ``step(v)`` the Newton step
    ``H^{-1} grad h``; stops when the step is below ``STEP_TOL (1 + |v|)``: ``(v, iterations)``."""
    def cond(state):
        _, _, it, done = state
        return (it < MAX_ITER) & ~done

    def body(state):
        v, hv, it, _ = state
        d = step(v)
        bound = hv + 1e-13 * (1.0 + jnp.abs(hv))       # rounding: a step at the optimum is not refused

        def refused(s):
            _, _, h_t, k = s
            return ((h_t > bound) | ~jnp.isfinite(h_t)) & (k < MAX_HALVINGS)

        def halve(s):
            t, _, _, k = s
            v_t = v - 0.5 * t * d
            return 0.5 * t, v_t, h(v_t), k + 1

        _, v_new, h_new, _ = lax.while_loop(refused, halve, (jnp.ones((), v.dtype), v - d, h(v - d),
                                                            jnp.zeros((), jnp.int32)))
        small = jnp.max(jnp.abs(d)) <= STEP_TOL * (1.0 + jnp.max(jnp.abs(v)))
        ok = jnp.isfinite(h_new) & (h_new <= bound)
        return jnp.where(ok, v_new, v), jnp.where(ok, h_new, hv), it + 1, small | ~ok

    v, _, it, _ = lax.while_loop(cond, body, (v0, h(v0), jnp.zeros((), jnp.int32), jnp.zeros((), bool)))
    return v, it


def _newton(layout: GlmmLayout, x, data: GlmmData, u0):
    """The conditional mode by ``descend`` from ``u0`` (module docstring): ``(u, iterations)``."""
    h = lambda u: penalized(layout, x, data, u, with_constant=False)

    def step(u):
        g, info, a = gradient_and_weights(layout, x, data, u)
        return solve(layout, factor(layout, info, a, data), g)

    return descend(h, step, u0.astype(x.dtype))


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def mode(layout: GlmmLayout, x, data: GlmmData, u0):
    """The conditional mode ``u*(x)`` (module docstring); ``u0`` is a start and has no derivative."""
    return _newton(layout, lax.stop_gradient(x), data, lax.stop_gradient(u0))[0]


@mode.defjvp
def _mode_jvp(layout, primals, tangents):
    x, data, u0 = primals
    dx = tangents[0]
    u = mode(layout, x, data, u0)
    grad_at_u = lambda xx: gradient_and_weights(layout, xx, data, u)[0]
    _, rhs = jax.jvp(grad_at_u, (x,), (dx,))
    _, info, a = gradient_and_weights(layout, x, data, u)
    return u, -solve(layout, factor(layout, info, a, data), rhs)
