"""The likelihood in other parametrizations, for inference on the fixed effects.

Satterthwaite (lmerTest) works in ``varpar = (theta, sigma)`` with beta
profiled out:

    dev(theta, sigma) = ldL2 + pwrss / sigma^2 + n log(2 pi sigma^2)
                        [REML: + ldRX2 - p log(2 pi sigma^2)]
    Cov(beta-hat)(theta, sigma) = sigma^2 (R_X R_X^T)^{-1}

Kenward-Roger (pbkrtest) works in the covariance parameters ``gamma`` of
the marginal covariance ``V = sum_r gamma_r G_r``: per random-effects term the
lower-triangle entries of its covariance matrix ``Sigma_k``, then the residual
variance ``sigma^2``.  Its ingredients are derivatives of ``log|V|`` and of
``M = X^T V^{-1} X`` (``Cov(beta-hat) = M^{-1}``).  ``marginal_parts`` computes
both *without any n x n matrix*: with ``A = Z^T W Z``, ``B = Z^T W X`` and
``C = blockdiag(Sigma_k) / sigma^2``,

    log|V| = n log sigma^2 - sum log w + log|I + C A|
    sigma^2 M = X^T W X - B^T (I + C A)^{-1} C B

and ``I + C A`` is factored blockwise like the deviance: small blocks for the
block term, a dense Schur complement for the rest.  It is written in ``C``
directly (not through ``lambda = chol(C)``), so it stays differentiable where
a variance component is 0, as pbkrtest's matrices are.  On the sparse path
(``pls/sparse.py``) its cross block is made dense first: correct, not fast.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..likelihood.criteria import beta_covariance, explicit_criterion
from ..linalg import smallmat
from . import sparse
from .data import CrossProducts
from .lambda_rows import scale_dense_rows
from .criterion import deviance_parts, parts
from ..params.structure import theta_positions


def deviance_varpar(varpar: jnp.ndarray, cp: CrossProducts, reml: bool = True) -> jnp.ndarray:
    """lmerTest's ``devfun_vp``: -2 log-likelihood at (theta, sigma), beta profiled."""
    theta, sigma = varpar[:-1], varpar[-1]
    pt = parts(theta, cp)
    return explicit_criterion(pt.ldL2, pt.ldRX2, pt.pwrss, pt.n_obs, cp.p, sigma ** 2, reml)


def vcov_beta_varpar(varpar: jnp.ndarray, cp: CrossProducts) -> jnp.ndarray:
    """``Cov(beta-hat) = sigma^2 (R_X R_X^T)^{-1}`` at (theta, sigma)."""
    from ..linalg import factor as linalg

    theta, sigma = varpar[:-1], varpar[-1]
    _, fac = deviance_parts(theta, cp)
    qd, p = cp.structure.q_dense, cp.p
    LX = fac.L22[qd:qd + p, qd:qd + p]
    LX_inv = linalg.inverse_lower(LX)
    return beta_covariance(sigma ** 2, LX_inv)


# --------------------------------------------------------------------- gamma
def gamma_from_theta(theta: jnp.ndarray, sigma: jnp.ndarray, structure) -> jnp.ndarray:
    """Covariance parameters: per term the lower triangle (column-major) of
    ``Sigma_k = sigma^2 lambda_k lambda_k^T``, then ``sigma^2``."""
    out = []
    for lam, t in zip(structure.lambdas(theta), structure.terms):
        cov = sigma ** 2 * lam @ lam.T
        rows, cols = theta_positions(t)
        out.append(cov[rows, cols])
    out.append(jnp.reshape(sigma ** 2, (1,)))
    return jnp.concatenate(out)


def _relative_covariances(gamma: jnp.ndarray, structure) -> tuple[list, jnp.ndarray]:
    """``C_k = Sigma_k / sigma^2`` per term, and ``sigma^2``."""
    sigma2 = gamma[-1]
    out = []
    for t, off in zip(structure.terms, structure.theta_offsets):
        rows, cols = theta_positions(t)
        index = {(int(r), int(c)): off + a for a, (r, c) in enumerate(zip(rows, cols))}
        zero = jnp.zeros((), gamma.dtype)
        entries = [gamma[index[(max(r, c), min(r, c))]] if (max(r, c), min(r, c)) in index else zero
                   for r in range(t.ncols) for c in range(t.ncols)]
        out.append(jnp.stack(entries).reshape(t.ncols, t.ncols) / sigma2)
    return out, sigma2


def marginal_parts(gamma: jnp.ndarray, cp: CrossProducts) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``log|V|`` and ``M = X^T V^{-1} X`` as functions of the covariance parameters."""
    s = cp.structure
    Cs, sigma2 = _relative_covariances(gamma, s)
    p, qd = cp.p, s.q_dense
    dtype = cp.Axx.dtype
    XtWX = cp.Axx[:p, :p]
    Bd = cp.Axd[:p, :].T                                                     # (q_d, p)
    logdet = jnp.zeros((), dtype)
    corr = jnp.zeros((p, p), dtype)                                          # B^T (I + CA)^{-1} C B

    if s.block_term is not None:
        # per level K_j^{-1} C_b = G_j = C_b - C_b D^{1/2} (I + D^{1/2} C_b D^{1/2})^{-1} D^{1/2} C_b
        # (symmetric, with D_j^{1/2} constant in gamma): no pivoting and no LAPACK
        Cb = Cs[s.block_term]
        Dh = smallmat.split(cp_sqrt_D(cp))                                      # D_j^{1/2}, (S, S, l)
        Sb = len(Dh)
        DC = [[sum(Dh[a][t] * Cb[t, c] for t in range(Sb)) for c in range(Sb)] for a in range(Sb)]
        inner = [[sum(DC[a][t] * Dh[t][b] for t in range(Sb)) + (1.0 if a == b else 0.0) for b in range(Sb)]
                 for a in range(Sb)]                                             # I + D^{1/2} C_b D^{1/2}
        Li = smallmat.cholesky(inner)
        logdet = logdet + 2.0 * smallmat.log_diag_sum(Li)
        # F = L^{-1} D^{1/2} C_b  (rows a, columns c); G = C_b - F^T F
        F = [smallmat.solve_lower(Li, [DC[a][c] for a in range(Sb)]) for c in range(Sb)]  # F[c][a]
        G = [[Cb[a, c] - sum(F[a][t] * F[c][t] for t in range(Sb)) for c in range(Sb)] for a in range(Sb)]
        G = jnp.transpose(smallmat.stack(G), (2, 0, 1))                           # (l, S, S)
        Bb = jnp.transpose(cp.Cxb[:, :p, :], (2, 0, 1))                          # (l, S, p)
        Rb = G @ Bb                                                              # K_j^{-1} C_b B_j
    if qd:
        Cd_Add = scale_dense_rows(cp.Add, Cs, s)                             # C_d A_dd
        S = jnp.eye(qd, dtype=dtype) + Cd_Add
        rhs = scale_dense_rows(Bd, Cs, s)                                    # C_d B_d
        if s.block_term is not None:
            Cdb = cp.Cdb
            if sparse.is_sparse(Cdb):
                Cdb = sparse.densify(Cdb, qd, s.terms[s.block_term].nlevels)
            Abd = jnp.transpose(Cdb, (2, 0, 1))                              # (l, S, q_d): Z_b^T W Z_d
            T = G @ Abd                                                      # K_j^{-1} C_b A_bd,j
            S = S - scale_dense_rows(jnp.einsum("lsd,lse->de", Abd, T), Cs, s)
            rhs = rhs - scale_dense_rows(jnp.einsum("lsd,lsp->dp", Abd, Rb), Cs, s)
        logdet = logdet + jnp.linalg.slogdet(S)[1]
        xd = jnp.linalg.solve(S, rhs)                                        # (q_d, p)
        corr = corr + Bd.T @ xd
        if s.block_term is not None:
            xb = Rb - T @ xd                                                 # K^{-1}(C_b B_j - C_b A_bd x_d)
            corr = corr + jnp.einsum("lsp,lsq->pq", Bb, xb)
    elif s.block_term is not None:
        corr = corr + jnp.einsum("lsp,lsq->pq", Bb, Rb)

    n = cp.n_obs
    log_det_v = n * jnp.log(sigma2) - cp.sum_log_w + logdet
    M = (XtWX - corr) / sigma2
    return log_det_v, 0.5 * (M + M.T)


def cp_sqrt_D(cp: CrossProducts) -> jnp.ndarray:
    """Symmetric square roots of the block term's ``D_j = Z_j^T W Z_j`` (S, S, l).

    D_j does not depend on the parameters, so its square root (by an
    eigen-decomposition, with negative rounding clipped) needs no derivative.
    """
    import jax

    D = jnp.transpose(cp.Dbb, (2, 0, 1))
    w, U = jnp.linalg.eigh(jax.lax.stop_gradient(D))
    root = (U * jnp.sqrt(jnp.maximum(w, 0.0))[:, None, :]) @ jnp.swapaxes(U, -1, -2)
    return jnp.transpose(root, (1, 2, 0))
