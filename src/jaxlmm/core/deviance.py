"""The profiled deviance of a linear mixed model as a pure function of theta.

With ``Lambda`` the block-diagonal relative covariance factor, lme4's penalized
least-squares problem has the positive-definite coefficient matrix

    [ Lambda^T Z^T W Z Lambda + I    Lambda^T Z^T W X    Lambda^T Z^T W y ]
    [            .                         X^T W X             X^T W y    ]
    [            .                            .                y^T W y    ]

and its lower Cholesky factor ``L`` gives everything: with ``L_Z`` the random-
effects block, ``R_X`` the fixed-effects block and ``r`` the last diagonal
element,

    log|L_Z|^2 = ldL2,   log|R_X|^2 = ldRX2,   r^2 = pwrss (penalized weighted RSS).

Profiling out sigma^2, with n observations, p = rank(X) and prior weights w,

    REML criterion  = ldL2 + ldRX2 + (n - p) (1 + log(2 pi pwrss / (n - p))) - sum log w
    ML deviance     = ldL2         +  n      (1 + log(2 pi pwrss / n))       - sum log w

(lme4's ``devcomp$cmp[["REML"]]`` and ``deviance()``).

The factor is computed blockwise (MixedModels.jl's scheme): the block term's
diagonal part is ``l_b`` small ``S_b x S_b`` Cholesky factors ``L_j``; the rows
of every other column block below it are ``W_j^T = L_j^{-1} lambda_b^T C_j``
(``C_j`` its cross-products with level j); the rest ``[Z_d | X | y]`` is the
dense Schur complement ``R - sum_j W_j^T W_j`` factored by one dense Cholesky.
No q x q matrix is ever formed.

Where the cross block of the block term and the dense part is sparse (a large
crossed design, ``sparse.py``), ``cp.Cdb`` lists its nonzeros: the Schur update
is a sum over pairs of nonzeros sharing a level, and ``log|R_dd|`` and the
``(p+1) x (p+1)`` Schur complement of ``[X y]`` come from ``schur.dense_parts``,
which carries its own exact first and second derivatives.  ``factorize`` and
``deviance_parts`` give the same ``Factor`` and ``DevianceParts`` on both paths
(on the sparse path ``Factor.Wt`` is None; ``solution.py`` works from ``cp``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from . import linalg, schur, smallmat, sparse
from .crossprod import cross_products
from .data import CrossProducts, ModelData
from .dense_rows import scale_dense_rows  # noqa: F401  (re-exported for solution, varpar)


SMALL_Q = 12  # up to this many columns in [Z_d X y], the block algebra is written per column


class Factor(NamedTuple):
    """Blocked Cholesky factor of the penalized system at one theta."""

    lambdas: list          # lambda_k per term
    Lb: jnp.ndarray        # (S_b, S_b, l_b) block-term factors L_j (levels last)
    Wt: jnp.ndarray        # (S_b, Q, l_b): L_j^{-1} lambda_b^T [C_dj, C_xj], Q = q_d + p + 1 (None: sparse path)
    L22: jnp.ndarray       # (Q, Q) dense factor of [Z_d | X | y]
    logdet_b: jnp.ndarray  # 2 sum_j log |L_j|


class DevianceParts(NamedTuple):
    ldL2: jnp.ndarray
    ldRX2: jnp.ndarray
    pwrss: jnp.ndarray
    n_obs: jnp.ndarray
    sum_log_w: jnp.ndarray


def factorize(theta: jnp.ndarray, cp: CrossProducts) -> Factor:
    """Blocked Cholesky factor of the penalized system (see module docstring)."""
    if sparse.is_sparse(cp.Cdb):
        return _factorize_sparse(theta, cp)
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
            # every column of [Z_d X y] separately: all arrays are (l_b,), see smallmat.py
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


def _factorize_sparse(theta: jnp.ndarray, cp: CrossProducts) -> Factor:
    """The sparse path's factor: ``L22 = [[L_dd, 0], [W_x^T, chol(S)]]`` with ``S`` from ``schur.dense_parts``."""
    sy = schur.system(theta, cp)
    Ldd, _, Wx, _ = schur._factor(sy)
    _, S = schur.dense_parts(theta, cp)
    qd, p1 = Wx.shape
    L22 = jnp.block([[Ldd, jnp.zeros((qd, p1), Ldd.dtype)], [Wx.T, linalg.cholesky(S)]])
    Lb = smallmat.stack(smallmat.fill_upper(sy.L))
    return Factor(sy.lams, Lb, None, L22, 2.0 * smallmat.log_diag_sum(sy.L))


def _sparse_parts(theta: jnp.ndarray, cp: CrossProducts) -> DevianceParts:
    ell, S = schur.dense_parts(theta, cp)
    L, _ = schur.block_weights(theta, cp)
    d = linalg.diag(linalg.cholesky(S))
    p = cp.p
    return DevianceParts(2.0 * smallmat.log_diag_sum(L) + ell, 2.0 * jnp.sum(jnp.log(d[:p])), d[-1] ** 2,
                         cp.n_obs, cp.sum_log_w)


def parts(theta: jnp.ndarray, cp: CrossProducts) -> DevianceParts:
    """``DevianceParts`` at theta (``deviance_parts`` without the factor)."""
    if sparse.is_sparse(cp.Cdb):
        return _sparse_parts(theta, cp)
    return deviance_parts(theta, cp)[0]


def deviance_parts(theta: jnp.ndarray, cp: CrossProducts) -> tuple[DevianceParts, Factor]:
    """log-determinants and penalized RSS from one factorization."""
    if sparse.is_sparse(cp.Cdb):
        return _sparse_parts(theta, cp), _factorize_sparse(theta, cp)
    fac = factorize(theta, cp)
    qd, p = cp.structure.q_dense, cp.p
    d = linalg.diag(fac.L22)
    ldL2 = fac.logdet_b + 2.0 * jnp.sum(jnp.log(d[:qd]))
    ldRX2 = 2.0 * jnp.sum(jnp.log(d[qd:qd + p]))
    pwrss = d[-1] ** 2
    return DevianceParts(ldL2, ldRX2, pwrss, cp.n_obs, cp.sum_log_w), fac


def criterion_from_parts(parts: DevianceParts, p: int, reml: bool) -> jnp.ndarray:
    """REML criterion or ML deviance from its parts (sigma^2 profiled out)."""
    n = parts.n_obs
    if reml:
        nmp = n - p
        return parts.ldL2 + parts.ldRX2 + nmp * (1.0 + jnp.log(2.0 * jnp.pi * parts.pwrss / nmp)) - parts.sum_log_w
    return parts.ldL2 + n * (1.0 + jnp.log(2.0 * jnp.pi * parts.pwrss / n)) - parts.sum_log_w


def profiled_deviance(theta: jnp.ndarray, cp: CrossProducts, reml: bool = True) -> jnp.ndarray:
    """REML criterion (``reml=True``) or ML deviance at ``theta`` from cross-products."""
    return criterion_from_parts(parts(theta, cp), cp.p, reml)


def deviance(theta: jnp.ndarray, data: ModelData, reml: bool = True) -> jnp.ndarray:
    """lme4's profiled REML criterion / ML deviance at ``theta`` for one response.

    Pure and jittable; differentiate it with ``jax.grad`` / ``jax.hessian``.
    """
    return profiled_deviance(theta, cross_products(data), reml)
