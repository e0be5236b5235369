"""The blocked factorization when the cross block of the block term and the dense part is sparse.

A large crossed design (``pls/sparse.py``) lists the nonzeros of the cross block
``Cdb``: the Schur update is a sum over pairs of nonzeros sharing a level, and
``log|R_dd|`` and the ``(p+1) x (p+1)`` Schur complement of ``[X y]`` come from
``schur.dense_parts``, which carries its own exact first and second
derivatives.  ``Factor.Wt`` is None here; ``solve`` works from the
cross-products (``pls/solve.py`` states the mathematics).
"""

from __future__ import annotations

import jax.numpy as jnp

from ..likelihood.criteria import beta_covariance
from ..linalg import factor as linalg, smallmat
from .schur import factor as schur
from . import sparse
from .data import CrossProducts
from .lambda_rows import scale_dense_rows
from .solution_types import Solution, assemble, block_precision, unflatten_dense
from .parts import DevianceParts, Factor, criterion_from_parts


def factorize(theta: jnp.ndarray, cp: CrossProducts) -> Factor:
    """The sparse path's factor: ``L22 = [[L_dd, 0], [W_x^T, chol(S)]]`` with ``S`` from ``schur.dense_parts``."""
    sy = schur.system(theta, cp)
    Ldd, _, Wx, _ = schur._factor(sy)
    _, S = schur.dense_parts(theta, cp)
    qd, p1 = Wx.shape
    L22 = jnp.block([[Ldd, jnp.zeros((qd, p1), Ldd.dtype)], [Wx.T, linalg.cholesky(S)]])
    Lb = smallmat.stack(smallmat.fill_upper(sy.L))
    return Factor(sy.lams, Lb, None, L22, 2.0 * smallmat.log_diag_sum(sy.L))


def parts(theta: jnp.ndarray, cp: CrossProducts) -> DevianceParts:
    ell, S = schur.dense_parts(theta, cp)
    L, _ = schur.block_weights(theta, cp)
    d = linalg.diag(linalg.cholesky(S))
    p = cp.p
    return DevianceParts(2.0 * smallmat.log_diag_sum(L) + ell, 2.0 * jnp.sum(jnp.log(d[:p])), d[-1] ** 2,
                         cp.n_obs, cp.sum_log_w)


def deviance_parts(theta: jnp.ndarray, cp: CrossProducts) -> tuple[DevianceParts, Factor]:
    """``DevianceParts`` and the factor at theta."""
    return parts(theta, cp), factorize(theta, cp)


def solve(theta: jnp.ndarray, cp: CrossProducts, reml: bool = True, transforms: tuple | None = None) -> Solution:
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
    vcov_beta = beta_covariance(sigma2, LX_inv)
    u = dict(unflatten_dense(x_dense[:qd], cp))

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
    prec_inv[s.block_term] = block_precision(L, inner)
    return assemble(crit, x_dense[qd:qd + p] + cp.beta_shift, sigma2, vcov_beta, u, prec_inv, {}, lams, parts, s,
                     None)
