"""The penalized system of the sparse path's dense part, its factor and its inverse.

With ``Abar = A - U(theta_b)`` (``A`` the cross-products of ``[Z_d X y]``, ``U``
the block term's Schur update) and ``Lambda`` block-diagonal with the dense
terms' ``lambda_k``,

    R(theta) = [ Lambda^T Abar_dd Lambda + I    Lambda^T Abar_dx ]   =  [ R_dd  R_dx ]
               [ Abar_xd Lambda                 Abar_xx          ]      [ R_xd  R_xx ]

``Z_d^T W Z_d`` and ``U_dd`` are stored at the targets of the sparse pattern
only (``pls/sparse.py``): they are zero elsewhere.  When every dense term is scalar
``Lambda`` is a diagonal ``D`` and ``Lambda^T U Lambda = d_row d_col U`` at the
targets.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..lambda_rows import scale_dense_rows

from ...linalg import factor as linalg, smallmat
from .. import sparse
from ..data import CrossProducts


class System(NamedTuple):
    """``R(theta)`` (module docstring) and the pieces of it the derivatives reuse."""

    lams: list
    L: list              # block-term factors L_j (nested list of (l_b,))
    M: list              # M_j = lambda_b (L_j L_j^T)^{-1} lambda_b^T
    U_targets: jnp.ndarray  # U_dd at the targets (sparse.pair_sums)
    Abar_targets: jnp.ndarray  # Z_d^T W Z_d - U_dd at the targets (it is zero elsewhere)
    pattern: object
    R_dd: jnp.ndarray
    R_xd: jnp.ndarray
    Ab_xx: jnp.ndarray   # [X y]^T W [X y] - U_xx


def _scale(A, lams, structure, transpose: bool = False):
    """``Lambda^T A`` (or ``Lambda A`` with ``transpose``) on the dense rows of ``A``."""
    return scale_dense_rows(A, [l.T for l in lams] if transpose else lams, structure)


def _scalar_diagonal(lams, structure):
    """Diagonal of ``Lambda`` when every dense term is scalar, else None."""
    if any(structure.terms[k].ncols > 1 for k in structure.dense_terms):
        return None
    return jnp.concatenate([jnp.broadcast_to(lams[k][0, 0], (structure.terms[k].nlevels,))
                            for k in structure.dense_terms])


def _sandwich(X, lams, structure, transpose: bool = False):
    """``Lambda^T X Lambda`` (or ``Lambda X Lambda^T``) for a symmetric q_d x q_d ``X``."""
    d = _scalar_diagonal(lams, structure)
    if d is not None:
        return d[:, None] * X * d[None, :]
    return _scale(_scale(X, lams, structure, transpose).T, lams, structure, transpose)


def _scaled_targets(values, lams, structure, pattern):
    """``Lambda^T U Lambda`` at the targets for scalar dense terms: ``d_row d_col U``."""
    d = _scalar_diagonal(lams, structure)
    return values * d[pattern.target_row] * d[pattern.target_col]


def _dense_update(values, lams, structure, pattern):
    """``Lambda^T U Lambda`` as a dense matrix from ``U`` at the targets."""
    qd = structure.q_dense
    zero = jnp.zeros((qd, qd), values.dtype)
    if _scalar_diagonal(lams, structure) is not None:
        return sparse.add_targets(zero, _scaled_targets(values, lams, structure, pattern), pattern)
    return _sandwich(sparse.add_targets(zero, values, pattern), lams, structure)


def block_weights(theta, cp: CrossProducts):
    """Per level j of the block term: ``L_j = chol(lambda_b^T D_j lambda_b + I)`` (``D_j`` its
    diagonal block of ``Z_b^T W Z_b``) and ``M_j = lambda_b (L_j L_j^T)^{-1} lambda_b^T``."""
    s = cp.structure
    lam_b = s.lambdas(theta)[s.block_term]
    L = smallmat.cholesky(smallmat.congruence(lam_b, smallmat.split(cp.Dbb)))
    return L, sparse.level_weights(lam_b, L)


def system(theta, cp: CrossProducts, full: bool = False, U_targets=None) -> System:
    """``R(theta)`` from the sparse cross-products (module docstring).

    Unless ``full``, only the lower triangle of ``R_dd`` is filled when every dense term is scalar
    (all that a Cholesky factor, ``inverse_logdet`` and ``_ell_mixed`` read).  ``U_targets``:
    ``sparse.pair_sums`` at theta, if already computed.
    """
    s = cp.structure
    qd = s.q_dense
    pat = cp.Cdb.pattern
    lams = s.lambdas(theta)
    L, M = block_weights(theta, cp)
    c = sparse.pair_sums(M, cp.Cdb) if U_targets is None else U_targets
    U_xd, U_xx = sparse.cross_update(M, cp.Cdb, cp.Cxb, qd)
    d = _scalar_diagonal(lams, s)
    eye = jnp.eye(qd, dtype=c.dtype)
    if d is not None:             # Z_d^T W Z_d and U are zero off the targets: R_dd = I there
        R_dd = sparse.add_targets(eye, _scaled_targets(cp.Cdb.add_values - c, lams, s, pat), pat, upper=full)
    else:
        R_dd = _sandwich(cp.Add - sparse.add_targets(jnp.zeros_like(cp.Add), c, pat), lams, s) + eye
    R_xd = _scale((cp.Axd - U_xd).T, lams, s).T
    return System(lams, L, M, c, cp.Cdb.add_values - c, pat, R_dd, R_xd, cp.Axx - U_xx)


def cholesky(R):
    """``linalg.cholesky`` of a matrix symmetric by construction, without symmetrizing it first
    (``jnp.linalg.cholesky`` does, in a transposing pass as costly as the rest of the update)."""
    if R.shape[-1] <= linalg.RECURSIVE_MAX:
        return linalg.cholesky(R)
    return jax.lax.linalg.cholesky(R, symmetrize_input=False)                   # its lower triangle


def _factor(sy: System):
    """Cholesky factor of R_dd, ``ell``, ``W = L_dd^{-1} R_dx`` and ``S``."""
    L = cholesky(sy.R_dd)
    ell = 2.0 * jnp.sum(jnp.log(linalg.diag(L)))
    Wx = linalg.solve_lower(L, sy.R_xd.T)
    S = sy.Ab_xx - Wx.T @ Wx
    return L, ell, Wx, 0.5 * (S + S.T)


def inverse_logdet(R):
    """``(R^{-1}, log|R|)`` of a symmetric positive-definite ``R`` by block elimination.

    ``R = [[A, B^T], [B, C]]``: with ``Y = B A^{-1}`` and the Schur complement
    ``Sc = C - Y B^T``, ``R^{-1} = [[A^{-1} + Y^T Sc^{-1} Y, -(Sc^{-1} Y)^T], [-Sc^{-1} Y, Sc^{-1}]]``
    and ``log|R| = log|A| + log|Sc|``, recursively down to blocks of ``linalg.RECURSIVE_MAX``
    (factored by ``linalg``, no LAPACK).  About ``4/3 n^3`` flops in matrix products,
    against ``n^3 / 3`` for a Cholesky factor plus ``n^3`` for its inverse and ``n^3`` for
    ``L^{-T} L^{-1}`` in triangular solves and products.  Only the lower triangle of ``R``
    is read.
    """
    n = R.shape[0]
    if n <= linalg.RECURSIVE_MAX:
        L = linalg.cholesky(R)
        Li = linalg.inverse_lower(L)
        return Li.T @ Li, 2.0 * jnp.sum(jnp.log(linalg.diag(L)))
    n1 = n // 2
    A, B, C = R[:n1, :n1], R[n1:, :n1], R[n1:, n1:]
    Ai, ld1 = inverse_logdet(A)
    Y = B @ Ai
    Sc = C - Y @ B.T
    Si, ld2 = inverse_logdet(Sc)
    Z = Si @ Y
    P11 = Ai + Y.T @ Z
    return jnp.block([[0.5 * (P11 + P11.T), -Z.T], [-Z, Si]]), ld1 + ld2


def _primal(theta, cp):
    """``(ell, S)`` from one Cholesky factor of the whole lower triangle of ``R`` (Q x Q):
    its leading block gives ``ell``, its trailing ``(p+1) x (p+1)`` block is ``chol(S)``."""
    s = cp.structure
    qd = s.q_dense
    lams = s.lambdas(theta)
    if _scalar_diagonal(lams, s) is None:
        _, ell, _, S = _factor(system(theta, cp))
        return ell, S
    pat = cp.Cdb.pattern
    _, M = block_weights(theta, cp)
    c = sparse.pair_sums(M, cp.Cdb)
    U_xd, U_xx = sparse.cross_update(M, cp.Cdb, cp.Cxb, qd)
    R_xd = _scale((cp.Axd - U_xd).T, lams, s).T
    Q = qd + R_xd.shape[0]
    base = jnp.eye(Q, dtype=c.dtype).at[qd:, :qd].set(R_xd).at[qd:, qd:].set(cp.Axx - U_xx)
    R = sparse.add_targets(base, _scaled_targets(cp.Cdb.add_values - c, lams, s, pat), pat, upper=False)
    L = cholesky(R)
    ell = 2.0 * jnp.sum(jnp.log(linalg.diag(L)[:qd]))
    LS = L[qd:, qd:]
    return ell, LS @ LS.T
