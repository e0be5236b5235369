"""Estimates at a given theta from the same blocked factor as the deviance.

With the full lower factor ``L`` of the penalized system, whose last row is
``[r^T, sqrt(pwrss)]``, the conditional modes ``u`` (spherical random
effects) and the BLUEs ``beta`` solve ``L^T [u; beta] = r``.  The random
effects are ``b = Lambda u``, the residual scale is

    sigma^2 = pwrss / (n - p)  (REML)   or   pwrss / n  (ML),

``Cov(beta) = sigma^2 (R_X R_X^T)^{-1}`` with ``R_X`` the fixed-effects block of
``L``, and lme4's conditional variances of ``b`` (``ranef(condVar = TRUE)``)
are the diagonal blocks of ``sigma^2 Lambda (L_Z L_Z^T)^{-1} Lambda^T``.  For the
block term the diagonal block of ``(L_Z L_Z^T)^{-1}`` at level j is
``L_j^{-T} (I + W_j^T S^{-1} W_j) L_j^{-1}`` with ``S = L_dd L_dd^T`` the dense
Schur complement; for dense terms it is the diagonal block of ``S^{-1}``.

A term with a relationship-matrix factor ``T`` (``K = T T^T``) is fitted in
spherical coordinates ``b* = Lambda u``; its effects on the levels are
``b = (T kron I) b*`` and their conditional covariance per level is the
diagonal block of ``sigma^2 (T kron Lambda) S^{-1}_kk (T kron Lambda)^T``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from . import linalg, smallmat
from .data import CrossProducts, ModelData
from .deviance import DevianceParts, criterion_from_parts, deviance_parts


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


def _unflatten_dense(x: jnp.ndarray, cp: CrossProducts) -> dict:
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


def _fixed_part(theta, cp: CrossProducts, reml: bool):
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
    vcov_beta = sigma2 * LX_inv.T @ LX_inv
    return crit, parts, fac, x_dense, sigma2, vcov_beta


def estimates(theta: jnp.ndarray, cp: CrossProducts, reml: bool = True) -> Estimates:
    """Criterion, beta, sigma and Cov(beta) at ``theta`` (no random effects)."""
    crit, parts, _, x_dense, sigma2, vcov_beta = _fixed_part(theta, cp, reml)
    qd = cp.structure.q_dense
    return Estimates(crit, x_dense[qd:qd + cp.p] + cp.beta_shift, jnp.sqrt(sigma2), vcov_beta, parts.n_obs)


def solve(theta: jnp.ndarray, cp: CrossProducts, reml: bool = True, transforms: tuple | None = None) -> Solution:
    """beta, u, b, sigma, Cov(beta) and conditional variances at ``theta``.

    ``transforms`` (``ModelData.transforms``) maps the effects of relationship-matrix
    terms back to their levels.
    """
    s = cp.structure
    crit, parts, fac, x_dense, sigma2, vcov_beta = _fixed_part(theta, cp, reml)
    qd, p = s.q_dense, cp.p
    L22 = fac.L22
    beta = x_dense[qd:qd + p] + cp.beta_shift
    u = dict(_unflatten_dense(x_dense[:qd], cp))
    if s.block_term is not None:
        L = smallmat.split(fac.Lb)
        Wt = smallmat.rows(fac.Wt)                                               # (Q, l_b) each
        rhs = [w[-1] - x_dense @ w[:-1] for w in Wt]
        u[s.block_term] = jnp.stack(smallmat.solve_upper_t(L, rhs), axis=-1)      # (l_b, S_b)

    # diagonal blocks of (L_Z L_Z^T)^{-1}
    Ldd_inv = linalg.inverse_lower(L22[:qd, :qd])
    prec_inv, transformed_var = {}, {}
    for k, off in zip(s.dense_terms, s.dense_offsets):
        t = s.terms[k]
        cols = Ldd_inv[:, off:off + t.q].reshape(qd, t.nlevels, t.ncols)
        T = None if transforms is None else transforms[k]
        if T is None:
            prec_inv[k] = jnp.einsum("rla,rlb->lab", cols, cols)
        else:
            G = jnp.einsum("ml,rls,as->rma", T, cols, fac.lambdas[k])
            transformed_var[k] = sigma2 * jnp.einsum("rma,rmb->mab", G, G)
    if s.block_term is not None:
        # L_j^{-T} (I + W_dj^T S^{-1} W_dj) L_j^{-1}, with S^{-1} = L_dd^{-T} L_dd^{-1}
        P = [Ldd_inv @ w[:qd] for w in Wt]                                       # (q_d, l_b) each
        Sb = len(P)
        inner = [[(1.0 if a == c else 0.0) + jnp.sum(P[a] * P[c], axis=0) for c in range(Sb)] for a in range(Sb)]
        Linv = smallmat.inverse_lower(L)
        prec = [[sum(Linv[c][a] * inner[c][d] * Linv[d][b] for c in range(Sb) for d in range(Sb))
                 for b in range(Sb)] for a in range(Sb)]
        prec_inv[s.block_term] = jnp.transpose(smallmat.stack(prec), (2, 0, 1))
    b, cond_var = [], []
    for k, t in enumerate(s.terms):
        lam = fac.lambdas[k]
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


def linear_predictor(data: ModelData, beta: jnp.ndarray, b: tuple, include: tuple | None = None) -> jnp.ndarray:
    """``offset + X beta + sum_k z_k[i] . b_k[refs_k[i]]`` over the terms in ``include``."""
    eta = data.offset + data.X @ beta
    for k in range(len(data.refs)) if include is None else include:
        eta = eta + jnp.sum(data.z[k] * b[k][data.refs[k]], axis=1)
    return eta
