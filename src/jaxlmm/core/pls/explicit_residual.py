"""The blocked path's PWRSS from the explicit residual: near-perfect fits to full precision.

The factor's last pivot ``y'Wy - |L^{-1} a|^2`` gives the PWRSS with an error of about
``eps y'Wy``: relative to the PWRSS, ``eps y'Wy / PWRSS``, 1e-6 and worse where the model
fits the data nearly exactly (sigma 1e-6 of the response's spread and below) -- a criterion
that scatters over small theta steps, on which Newton's method stops anywhere.  As lme4 does,
``explicit_pwrss`` takes the solution ``[u; beta]`` from the factor, improves it by one Newton
step whose gradient comes from the rows, and forms the PWRSS from the rows,
``|W^{1/2} (y - X beta - Z Lambda u)|^2 + |u|^2``: an error in the solution changes it only to
second order, and the rows' rounding is relative to the small residual (the floor: about
``eps |y| / sigma`` relative per row, lme4's too).

``core.fit`` refits from the optimum with this criterion where the factor's PWRSS at the optimum
moves the criterion away from the explicit one (``needs_explicit``), on the dense cross block
(``cross_dense``; a sparse one is formed dense: ``dense_cross_data``).
``precise_cross_products`` doubles the response's own entry of the cross-products, so that
the factor's last pivot, which is not used, stays positive.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from . import cross_dense
from ..linalg import factor as linalg, smallmat
from .data import CrossProducts, ModelData
from .solution_types import unflatten_dense
from .parts import criterion_from_parts

PRECISION = 1e-9    # refit where the factor's PWRSS moves the criterion by more than this, relative
DENSE_CROSS_MAX = 1 << 24   # entries of a cross block formed dense for the refit (128 MB in float64)


def dense_cross_data(data: ModelData) -> ModelData | None:
    """``data`` with its cross block formed dense (``cross_dense`` factors it), or None where that block
    would hold more than ``DENSE_CROSS_MAX`` entries."""
    if data.sparse is None:
        return data
    s = data.structure
    b = s.terms[s.block_term]
    if b.ncols * b.nlevels * s.q_dense > DENSE_CROSS_MAX:
        return None
    return dataclasses.replace(data, sparse=None)


def precise_cross_products(cp: CrossProducts) -> CrossProducts:
    """``cp`` with ``y'Wy`` doubled (module docstring): the factor and the solution are unchanged."""
    return dataclasses.replace(cp, Axx=cp.Axx.at[-1, -1].multiply(2.0))


def spherical_effects(cp: CrossProducts, fac) -> tuple[dict, jnp.ndarray]:
    """``u`` per term ((l_k, S_k) arrays) and ``beta - beta_shift`` from the blocked factor."""
    s = cp.structure
    qd, p = s.q_dense, cp.p
    L22 = fac.L22
    x_dense = linalg.solve_upper_t(L22[:-1, :-1], L22[-1, :-1][:, None])[:, 0]
    u = dict(unflatten_dense(x_dense[:qd], cp))
    if s.block_term is not None:
        L = smallmat.split(fac.Lb)
        rhs = [w[-1] - x_dense @ w[:-1] for w in smallmat.rows(fac.Wt)]
        u[s.block_term] = jnp.stack(smallmat.solve_upper_t(L, rhs), axis=-1)
    return u, x_dense[qd:qd + p]


def solve_penalized(cp: CrossProducts, fac, g: dict, g_beta: jnp.ndarray) -> tuple[dict, jnp.ndarray]:
    """``Omega_[Z X]^{-1} [g; g_beta]`` with the blocked factor (``g`` per term, (l_k, S_k))."""
    s = cp.structure
    qd = s.q_dense
    L22 = fac.L22[:-1, :-1]
    rhs = jnp.concatenate([jnp.concatenate([g[k].reshape(-1) for k in s.dense_terms] or
                                           [jnp.zeros((0,), g_beta.dtype)]), g_beta])
    if s.block_term is not None:
        L = smallmat.split(fac.Lb)
        Wt = fac.Wt[:, :-1, :]                                           # (S_b, Q', l_b)
        zb = jnp.stack(smallmat.solve_lower(L, list(g[s.block_term].T)))  # (S_b, l_b)
        rhs = rhs - jnp.einsum("aqj,aj->q", Wt, zb)
    x = linalg.solve_upper_t(L22, linalg.solve_lower(L22, rhs[:, None]))[:, 0]
    out = dict(unflatten_dense(x[:qd], cp))
    if s.block_term is not None:
        zb = zb - jnp.einsum("aqj,q->aj", Wt, x)
        out[s.block_term] = jnp.stack(smallmat.solve_upper_t(L, list(zb)), axis=-1)
    return out, x[qd:]


def _residual(cp: CrossProducts, data: ModelData, lambdas, u: dict, beta):
    """``W r`` (zero where unobserved) and ``Z_k^T W r`` per term (in the term's own columns)."""
    eta = data.X @ (beta + cp.beta_shift)
    for k in range(len(data.refs)):
        bk = u[k] @ lambdas[k].T
        if data.transforms[k] is not None:
            bk = data.transforms[k] @ bk
        eta = eta + jnp.sum(data.z[k] * bk[data.refs[k]], axis=1)
    w = jnp.where(data.weights > 0, data.weights, 0.0)
    r = jnp.where(data.weights > 0, data.y - data.offset - eta, 0.0)
    zr = {}
    for k in range(len(data.refs)):
        zk = jax.ops.segment_sum((w * r)[:, None] * data.z[k], data.refs[k], num_segments=u[k].shape[0])
        zr[k] = zk if data.transforms[k] is None else data.transforms[k].T @ zk
    return r, w, zr


def explicit_pwrss(cp: CrossProducts, data: ModelData, fac) -> jnp.ndarray:
    """``|W^{1/2} r|^2 + |u|^2`` at the factor's solution after one Newton step on it with the gradient
    from the rows (the solution's error, ``eps cond`` relative, enters the PWRSS squared), ``r`` formed
    from the rows."""
    u, beta = spherical_effects(cp, fac)
    r, w, zr = _residual(cp, data, fac.lambdas, u, beta)
    Xr = data.X.T @ (w * r)
    half_grad = {k: u[k] - zr[k] @ fac.lambdas[k] for k in u}               # u - Lambda^T Z^T W r
    du, dbeta = solve_penalized(cp, fac, half_grad, -Xr)
    u = {k: u[k] - du[k] for k in u}
    beta = beta - dbeta
    r, w, _ = _residual(cp, data, fac.lambdas, u, beta)
    return jnp.sum(w * r * r) + sum(jnp.sum(v * v) for v in u.values())


def explicit_deviance(theta: jnp.ndarray, cp: CrossProducts, data: ModelData, reml: bool = True) -> jnp.ndarray:
    """The REML criterion or ML deviance with ``explicit_pwrss`` (``cp``: ``precise_cross_products``)."""
    parts, fac = cross_dense.deviance_parts(theta, cp)
    return criterion_from_parts(parts._replace(pwrss=explicit_pwrss(cp, data, fac)), cp.p, reml)


def with_explicit_pwrss(sol, theta, cp: CrossProducts, data: ModelData, reml: bool):
    """A ``Solution`` at theta with the PWRSS, sigma, the covariances and the criterion from ``explicit_pwrss``."""
    _, fac = cross_dense.deviance_parts(theta, cp)
    p2 = explicit_pwrss(cp, data, fac)
    ratio = p2 / sol.parts.pwrss
    parts = sol.parts._replace(pwrss=p2)
    return sol._replace(criterion=criterion_from_parts(parts, cp.p, reml), sigma=sol.sigma * jnp.sqrt(ratio),
                        vcov_beta=sol.vcov_beta * ratio, cond_var=tuple(c * ratio for c in sol.cond_var),
                        parts=parts)


def needs_explicit(data: ModelData, out, reml: bool) -> bool:
    """Host check after a fit (``out``: ``core.fit.FitOutput``): does the factor's PWRSS, against the
    explicit one at its solution, move the criterion by more than ``PRECISION (1 + |criterion|)`` (or a
    hundredth of that where the fit did not converge: digits lost to cancellation may have stopped it)?"""
    w = np.asarray(data.weights, float)
    r = np.asarray(data.y, float) - np.asarray(out.fitted, float)
    explicit = float(np.sum(np.where(w > 0, w * r * r, 0.0)) + sum(np.sum(np.asarray(u, float) ** 2)
                                                                    for u in out.solution.u))
    factor = float(out.solution.parts.pwrss)
    if not (np.isfinite(explicit) and np.isfinite(factor) and explicit > 0):
        return False
    nu = float(np.sum(w > 0)) - (np.asarray(data.X).shape[1] if reml else 0)
    moved = nu * abs(np.log(factor / explicit)) if factor > 0 else np.inf
    tol = PRECISION * (1.0 + abs(float(out.solution.criterion)))
    return bool(moved > (tol if int(out.optim.status) == 0 else 0.01 * tol))
