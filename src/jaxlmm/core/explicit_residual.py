"""The blocked path's PWRSS from the explicit residual: near-perfect fits to full precision.

The factor's last pivot ``y'Wy - |L^{-1} a|^2`` gives the PWRSS with an error of about
``eps y'Wy``: relative to the PWRSS, ``eps y'Wy / PWRSS``, 1e-6 and worse where the model
fits the data nearly exactly (sigma 1e-6 of the response's spread and below) -- a criterion
that scatters over small theta steps, on which Newton's method stops anywhere.  As lme4 does,
``explicit_pwrss`` takes the solution ``[u; beta]`` from the factor and forms the PWRSS from
the rows, ``|W^{1/2} (y - X beta - Z Lambda u)|^2 + |u|^2``: an error in the solution changes
it only to second order, and the rows' rounding is relative to the small residual.

``core.fit`` refits from the optimum with this criterion where the factor's PWRSS at the optimum
differs from the explicit one (``needs_explicit``; on the dense cross block: ``cross_dense``,
``dense_cross_data``).
``precise_cross_products`` doubles the response's own entry of the cross-products, so that
the factor's last pivot, which is not used, stays positive.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from . import cross_dense, linalg, smallmat
from .data import CrossProducts, ModelData
from .estimates import unflatten_dense
from .parts import criterion_from_parts

PRECISION = 1e-10   # refit where the factor's PWRSS is off the explicit one by more than this, relative


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


def explicit_pwrss(cp: CrossProducts, data: ModelData, fac) -> jnp.ndarray:
    """``|W^{1/2} r|^2 + |u|^2`` at the factor's solution, ``r`` formed from the rows."""
    u, beta = spherical_effects(cp, fac)
    eta = data.X @ (beta + cp.beta_shift)
    for k in range(len(data.refs)):
        bk = u[k] @ fac.lambdas[k].T
        if data.transforms[k] is not None:
            bk = data.transforms[k] @ bk
        eta = eta + jnp.sum(data.z[k] * bk[data.refs[k]], axis=1)
    w = data.weights
    observed = w > 0
    r = jnp.where(observed, data.y - data.offset - eta, 0.0)
    return jnp.sum(jnp.where(observed, w, 0.0) * r * r) + sum(jnp.sum(v * v) for v in u.values())


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


def needs_explicit(data: ModelData, out) -> bool:
    """Host check after a fit (``out``: ``core.fit.FitOutput``): does the factor's PWRSS differ from the
    explicit one at its solution by more than ``PRECISION`` relative (digits lost to cancellation)?"""
    w = np.asarray(data.weights, float)
    r = np.asarray(data.y, float) - np.asarray(out.fitted, float)
    explicit = float(np.sum(np.where(w > 0, w * r * r, 0.0)) + sum(np.sum(np.asarray(u, float) ** 2)
                                                                    for u in out.solution.u))
    factor = float(out.solution.parts.pwrss)
    return bool(np.isfinite(explicit) and np.isfinite(factor) and abs(explicit - factor) > PRECISION * explicit)
