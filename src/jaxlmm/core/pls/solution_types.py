"""The estimates at theta that both factorizations share: their types and how they are assembled.

``Solution`` (everything ``lmer`` reports at theta-hat) and ``Estimates`` (the
fixed-effects part a batch keeps); ``fixed_part`` solves ``L^T [u_d; beta] = r``
for the dense unknowns; ``assemble`` turns spherical effects and the diagonal
blocks of ``(L_Z L_Z^T)^{-1}`` into BLUPs and conditional variances
(``pls/solve.py`` states the mathematics).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from ..likelihood.criteria import beta_covariance
from ..linalg import factor as linalg, smallmat
from .data import CrossProducts
from .parts import DevianceParts, criterion_from_parts


class Solution(NamedTuple):
    """Estimates of one fit.  Random effects are listed per term in lme4 order."""

    criterion: jnp.ndarray
    beta: jnp.ndarray            # (p,)
    sigma: jnp.ndarray           # ()
    vcov_beta: jnp.ndarray       # (p, p) = sigma^2 (R_X R_X^T)^{-1}
    u: tuple                     # per term (l_k, S_k) spherical random effects
    b: tuple                     # per term (l_k, S_k) random effects (BLUPs)
    cond_var: tuple              # per term (l_k, S_k, S_k) conditional covariance of b
    parts: DevianceParts


def unflatten_dense(x: jnp.ndarray, cp: CrossProducts) -> dict:
    s = cp.structure
    out = {}
    for k, off in zip(s.dense_terms, s.dense_offsets):
        t = s.terms[k]
        out[k] = x[off:off + t.q].reshape(t.nlevels, t.ncols)
    return out


class Estimates(NamedTuple):
    """The fixed-effects part of a fit at theta (what a batch of traits keeps)."""

    criterion: jnp.ndarray
    beta: jnp.ndarray
    sigma: jnp.ndarray
    vcov_beta: jnp.ndarray
    n_obs: jnp.ndarray


def fixed_part(theta, cp: CrossProducts, reml: bool, deviance_parts):
    """Criterion, parts, factor, the dense unknowns ``[u_d; beta]``, sigma^2 and Cov(beta) at theta,
    from ``deviance_parts(theta, cp)`` (either factorization)."""
    parts, fac = deviance_parts(theta, cp)
    crit = criterion_from_parts(parts, cp.p, reml)
    qd, p = cp.structure.q_dense, cp.p
    L22 = fac.L22
    # back-substitution L^T [u; beta] = r for the dense unknowns [u_d; beta]
    r = L22[-1, :-1]
    x_dense = linalg.solve_upper_t(L22[:-1, :-1], r[:, None])[:, 0]
    nmp = parts.n_obs - p if reml else parts.n_obs
    sigma2 = parts.pwrss / nmp
    LX = L22[qd:qd + p, qd:qd + p]
    LX_inv = linalg.inverse_lower(LX)
    vcov_beta = beta_covariance(sigma2, LX_inv)
    return crit, parts, fac, x_dense, sigma2, vcov_beta


def block_precision(L: list, inner: list) -> jnp.ndarray:
    """``L_j^{-T} inner_j L_j^{-1}`` per level, (l_b, S_b, S_b)."""
    Sb = len(L)
    Linv = smallmat.inverse_lower(L)
    prec = [[sum(Linv[c][a] * inner[c][d] * Linv[d][b] for c in range(Sb) for d in range(Sb))
             for b in range(Sb)] for a in range(Sb)]
    return jnp.transpose(smallmat.stack(prec), (2, 0, 1))


def assemble(crit, beta, sigma2, vcov_beta, u, prec_inv, transformed_var, lambdas, parts, s, transforms):
    b, cond_var = [], []
    for k, t in enumerate(s.terms):
        lam = lambdas[k]
        bk = u[k] @ lam.T
        if k in transformed_var:
            bk = transforms[k] @ bk
            Vk = transformed_var[k]
        else:
            Vk = sigma2 * jnp.einsum("as,lst,bt->lab", lam, prec_inv[k], lam)
        b.append(bk)
        cond_var.append(Vk)
    return Solution(crit, beta, jnp.sqrt(sigma2), vcov_beta, tuple(u[k] for k in range(len(s.terms))),
                    tuple(b), tuple(cond_var), parts)
