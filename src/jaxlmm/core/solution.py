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

On the sparse path (``sparse.py``, ``_solve_sparse``) the dense part is
inverted outright (``P = S^{-1}``, ``schur.inverse_logdet``) and the block
term's rows of ``L`` are never stored: with ``G_j = L_j^{-1} lambda_b^T``,
``W_j x = G_j C_j (Lambda x)`` is a sum over the level's nonzeros, and
``W_dj S^{-1} W_dj^T = G_j Gamma_j(K) G_j^T`` with ``K = Lambda_d P Lambda_d^T``,
one pass over the pairs of nonzeros.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from . import linalg, schur, smallmat, sparse
from .data import CrossProducts, ModelData
from .deviance import DevianceParts, criterion_from_parts, deviance_parts, scale_dense_rows


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
    if sparse.is_sparse(cp.Cdb):
        return _solve_sparse(theta, cp, reml)
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
        prec_inv[s.block_term] = _block_precision(L, inner)
    return _assemble(crit, beta, sigma2, vcov_beta, u, prec_inv, transformed_var, fac.lambdas, parts, s, transforms)


def _block_precision(L: list, inner: list) -> jnp.ndarray:
    """``L_j^{-T} inner_j L_j^{-1}`` per level, (l_b, S_b, S_b)."""
    Sb = len(L)
    Linv = smallmat.inverse_lower(L)
    prec = [[sum(Linv[c][a] * inner[c][d] * Linv[d][b] for c in range(Sb) for d in range(Sb))
             for b in range(Sb)] for a in range(Sb)]
    return jnp.transpose(smallmat.stack(prec), (2, 0, 1))


def _assemble(crit, beta, sigma2, vcov_beta, u, prec_inv, transformed_var, lambdas, parts, s, transforms):
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


def _solve_sparse(theta: jnp.ndarray, cp: CrossProducts, reml: bool) -> Solution:
    """``solve`` on the sparse path, from ``P = R_dd^{-1}`` (``schur.inverse_logdet``).

    With ``G = P R_dx`` and the Schur complement ``S = R_xx - R_xd G`` of ``[X y]``:
    ``beta = S_xx^{-1} S_xy``, ``u_d = G_y - G_X beta``, and the diagonal blocks of
    ``(L_Z L_Z^T)^{-1}`` for the dense terms are those of ``P``.
    """
    s = cp.structure
    qd, p = s.q_dense, cp.p
    lb = s.terms[s.block_term].nlevels
    sy = schur.system(theta, cp)
    P, ell = schur.inverse_logdet(sy.R_dd)
    G = P @ sy.R_xd.T
    S = sy.Ab_xx - sy.R_xd @ G
    LS = linalg.cholesky(0.5 * (S + S.T))
    d = linalg.diag(LS)
    parts = DevianceParts(2.0 * smallmat.log_diag_sum(sy.L) + ell, 2.0 * jnp.sum(jnp.log(d[:p])), d[-1] ** 2,
                          cp.n_obs, cp.sum_log_w)
    crit = criterion_from_parts(parts, p, reml)
    LX = LS[:p, :p]
    beta_s = linalg.solve_upper_t(LX, LS[p:, :p].T)[:, 0]                           # S_xx^{-1} S_xy
    x_dense = jnp.concatenate([G[:, p] - G[:, :p] @ beta_s, beta_s])
    sigma2 = parts.pwrss / (parts.n_obs - p if reml else parts.n_obs)
    LX_inv = linalg.inverse_lower(LX)
    vcov_beta = sigma2 * LX_inv.T @ LX_inv
    u = dict(_unflatten_dense(x_dense[:qd], cp))

    # the block term: W_j x = G_j C_j (Lambda~ x), G_j = L_j^{-1} lambda_b^T
    L, lams = sy.L, sy.lams
    lam_b, Sb = lams[s.block_term], len(sy.L)
    lams_t = [lam.T for lam in lams]
    xhat = jnp.concatenate([x_dense, -jnp.ones((1,), x_dense.dtype)])[:, None]
    Ch = [y[0] for y in sparse.cross_times(scale_dense_rows(xhat, lams_t, s), cp.Cdb, cp.Cxb, qd, lb)]
    rhs = [-r for r in smallmat.solve_lower(L, smallmat.lam_t_times(lam_b, Ch))]
    u[s.block_term] = jnp.stack(smallmat.solve_upper_t(L, rhs), axis=-1)              # (l_b, S_b)

    prec_inv = {}
    for k, off in zip(s.dense_terms, s.dense_offsets):
        t = s.terms[k]
        Pk = P[off:off + t.q, off:off + t.q].reshape(t.nlevels, t.ncols, t.nlevels, t.ncols)
        prec_inv[k] = jnp.moveaxis(jnp.diagonal(Pk, axis1=0, axis2=2), -1, 0)          # (l, S, S)
    # G_j Gamma_j(K) G_j^T with K = Lambda_d P Lambda_d^T (module docstring)
    K = scale_dense_rows(scale_dense_rows(P, lams_t, s).T, lams_t, s)
    Gam = sparse.gamma(sparse.at_targets(K, cp.Cdb.pattern), cp.Cdb, lb)
    Gj = [smallmat.solve_lower(L, [lam_b[c, a] for a in range(Sb)]) for c in range(Sb)]   # Gj[c][a] = G_j[a, c]
    inner = [[(1.0 if a == c else 0.0) + sum(Gj[t][a] * Gam[t][v] * Gj[v][c] for t in range(Sb) for v in range(Sb))
              for c in range(Sb)] for a in range(Sb)]
    prec_inv[s.block_term] = _block_precision(L, inner)
    return _assemble(crit, x_dense[qd:qd + p] + cp.beta_shift, sigma2, vcov_beta, u, prec_inv, {}, lams, parts, s,
                     None)


def linear_predictor(data: ModelData, beta: jnp.ndarray, b: tuple, include: tuple | None = None) -> jnp.ndarray:
    """``offset + X beta + sum_k z_k[i] . b_k[refs_k[i]]`` over the terms in ``include``."""
    eta = data.offset + data.X @ beta
    for k in range(len(data.refs)) if include is None else include:
        eta = eta + jnp.sum(data.z[k] * b[k][data.refs[k]], axis=1)
    return eta
