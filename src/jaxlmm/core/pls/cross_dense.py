"""The blocked factorization when the cross block of the block term and the dense part is dense.

The block term's diagonal part is ``l_b`` small ``S_b x S_b`` Cholesky factors
``L_j``; the rows of every other column block below it are
``W_j^T = L_j^{-1} lambda_b^T C_j``; the rest ``[Z_d | X | y]`` is the dense Schur
complement ``R - sum_j W_j^T W_j`` factored by one dense Cholesky
(``pls/criterion.py`` states the whole scheme; ``pls/cross_sparse.py`` is the other
factorization, ``deviance.cross_block`` chooses between them).
"""

from __future__ import annotations

import jax.numpy as jnp

from ..linalg import factor as linalg, smallmat
from .data import CrossProducts
from .lambda_rows import scale_dense_rows
from .solution_types import Solution, assemble, block_precision, fixed_part, unflatten_dense
from .parts import DevianceParts, Factor

SMALL_Q = 12  # up to this many columns in [Z_d X y], the block algebra is written per column


def factorize(theta: jnp.ndarray, cp: CrossProducts) -> Factor:
    """Blocked Cholesky factor of the penalized system (see module docstring)."""
    s = cp.structure
    lambdas = s.lambdas(theta)
    qd, p1 = s.q_dense, cp.Axx.shape[0]
    Q = qd + p1
    dtype = cp.Axx.dtype

    # dense part R = [Lambda_d^T Z_d^T W Z_d Lambda_d + I, ...; ..., [X y]^T W [X y]]
    Add = scale_dense_rows(scale_dense_rows(cp.Add, lambdas, s).T, lambdas, s)
    Axd = scale_dense_rows(cp.Axd.T, lambdas, s).T
    R = jnp.block([[Add + jnp.eye(qd, dtype=dtype), Axd.T], [Axd, cp.Axx]]) if qd else cp.Axx

    if s.block_term is not None:
        lam_b = lambdas[s.block_term]
        L = smallmat.cholesky(smallmat.congruence(lam_b, smallmat.split(cp.Dbb)))
        Cd = jnp.moveaxis(scale_dense_rows(jnp.moveaxis(cp.Cdb, 1, 0), lambdas, s), 0, 1) if qd else cp.Cdb
        C = jnp.concatenate([Cd, cp.Cxb], axis=1)                             # (S_b, Q, l_b)
        if Q <= SMALL_Q:
            # every column of [Z_d X y] separately: all arrays are (l_b,), see linalg/smallmat.py
            cols = [smallmat.solve_lower(L, smallmat.lam_t_times(lam_b, [C[a, q] for a in range(len(L))]))
                    for q in range(Q)]
            # the level sums of log|L_j| and of the Q (Q + 1) / 2 distinct entries of U in one reduction
            pairs = [(q, r) for q in range(Q) for r in range(q + 1)]
            per_level = [sum(jnp.log(L[a][a]) for a in range(len(L)))]
            per_level += [sum(cols[q][a] * cols[r][a] for a in range(len(L))) for q, r in pairs]
            sums = jnp.sum(jnp.stack(per_level), axis=-1)
            entry = {pair: sums[i + 1] for i, pair in enumerate(pairs)}
            U = jnp.stack([jnp.stack([entry[max(q, r), min(q, r)] for r in range(Q)]) for q in range(Q)])
            logdet_b = 2.0 * sums[0]
            Wt = [jnp.stack([cols[q][a] for q in range(Q)]) for a in range(len(L))]
        else:
            Wt = smallmat.solve_lower(L, smallmat.lam_t_times(lam_b, smallmat.rows(C)))  # S_b rows of (Q, l_b)
            U = sum(w @ w.T for w in Wt)
            logdet_b = 2.0 * smallmat.log_diag_sum(L)
        R = R - U
        Lb, Wt = smallmat.stack(smallmat.fill_upper(L)), jnp.stack(Wt)
    else:
        Lb = jnp.zeros((0, 0, 0), dtype)
        Wt = jnp.zeros((0, Q, 0), dtype)
        logdet_b = jnp.zeros((), dtype)
    L22 = linalg.cholesky(R)
    return Factor(lambdas, Lb, Wt, L22, logdet_b)


def deviance_parts(theta: jnp.ndarray, cp: CrossProducts) -> tuple[DevianceParts, Factor]:
    """log-determinants and penalized RSS from one factorization."""
    fac = factorize(theta, cp)
    qd, p = cp.structure.q_dense, cp.p
    d = linalg.diag(fac.L22)
    ldL2 = fac.logdet_b + 2.0 * jnp.sum(jnp.log(d[:qd]))
    ldRX2 = 2.0 * jnp.sum(jnp.log(d[qd:qd + p]))
    pwrss = d[-1] ** 2
    return DevianceParts(ldL2, ldRX2, pwrss, cp.n_obs, cp.sum_log_w), fac


def parts(theta: jnp.ndarray, cp: CrossProducts) -> DevianceParts:
    """``DevianceParts`` at theta."""
    return deviance_parts(theta, cp)[0]


def solve(theta: jnp.ndarray, cp: CrossProducts, reml: bool = True, transforms: tuple | None = None) -> Solution:
    """beta, u, b, sigma, Cov(beta) and conditional variances at ``theta``.

    ``transforms`` (``ModelData.transforms``) maps the effects of relationship-matrix
    terms back to their levels.
    """
    s = cp.structure
    crit, parts, fac, x_dense, sigma2, vcov_beta = fixed_part(theta, cp, reml, deviance_parts)
    qd, p = s.q_dense, cp.p
    L22 = fac.L22
    beta = x_dense[qd:qd + p] + cp.beta_shift
    u = dict(unflatten_dense(x_dense[:qd], cp))
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
        prec_inv[s.block_term] = block_precision(L, inner)
    return assemble(crit, beta, sigma2, vcov_beta, u, prec_inv, transformed_var, fac.lambdas, parts, s, transforms)
