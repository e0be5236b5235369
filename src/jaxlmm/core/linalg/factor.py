"""Cholesky factors and triangular solves for stacks of small matrices.

Random-effects blocks are tiny (1 x 1, 2 x 2, 3 x 3) and come in stacks of
thousands (levels x traits).  A batched LAPACK call on a CPU pays a fixed
overhead *per matrix*, so matrices up to ``UNROLL_MAX`` rows are factored by the
textbook recurrences written out element by element

    L_jj = sqrt(M_jj - sum_{k<j} L_jk^2),
    L_ij = (M_ij - sum_{k<j} L_ik L_jk) / L_jj,      i > j,

which XLA fuses into a few vectorized loops over the whole stack.  Matrices
up to ``RECURSIVE_MAX`` rows are factored column by column in a
``lax.fori_loop`` (and likewise for triangular solves): plain XLA operations
in a small program whatever the size; only larger ones call LAPACK.  Batched LAPACK calls
inside vmapped loops (a batch of traits, a profile, the tangents of a Hessian)
can deadlock XLA's CPU thread pool (``_config.configure_xla``), so vmapped
programs stay clear of them up to that size.  A matrix that is not positive
definite gives NaN (never an exception), as LAPACK does.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from ..carry import tie

UNROLL_MAX = 6
RECURSIVE_MAX = 128


def _stack(rows: list[list]) -> jnp.ndarray:
    """The stack of matrices (..., S, S) whose entry ``(i, j)`` is the array ``rows[i][j]`` (...)."""
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def cholesky(M: jnp.ndarray) -> jnp.ndarray:
    """Lower Cholesky factor of each matrix in the stack ``M`` (..., S, S)."""
    S = M.shape[-1]
    if S == 0:
        return M
    if S > RECURSIVE_MAX:
        return jnp.linalg.cholesky(M)
    if S > UNROLL_MAX:
        return _cholesky_loop(M)
    zero = jnp.zeros(M.shape[:-2], M.dtype)
    L = [[zero] * S for _ in range(S)]
    for j in range(S):
        d = M[..., j, j]
        for k in range(j):
            d = d - L[j][k] ** 2
        L[j][j] = jnp.sqrt(d)
        for i in range(j + 1, S):
            v = M[..., i, j]
            for k in range(j):
                v = v - L[i][k] * L[j][k]
            L[i][j] = v / L[j][j]
    return _stack(L)


def _dyn(x, i, axis):
    """``x`` indexed at a traced position ``i`` along ``axis`` (negative axes from the end)."""
    from jax import lax

    return lax.dynamic_index_in_dim(x, i, axis=axis % x.ndim, keepdims=False)


def _cholesky_loop(M: jnp.ndarray) -> jnp.ndarray:
    """Column-by-column Cholesky: ``v = M[:, j] - L L[j, :]^T``, ``L[:, j] = v / sqrt(v_j)`` below the diagonal."""
    from jax import lax

    n = M.shape[-1]
    idx = jnp.arange(n)

    def body(j, L):
        v = _dyn(M, j, -1) - jnp.einsum("...ik,...k->...i", L, _dyn(L, j, -2))
        d = jnp.sqrt(_dyn(v, j, -1))
        col = jnp.where(idx >= j, v / d[..., None], 0.0)
        return lax.dynamic_update_index_in_dim(L, col, j, axis=L.ndim - 1)

    return lax.fori_loop(0, n, body, jnp.zeros_like(M))


def _solve_lower_loop(L: jnp.ndarray, B: jnp.ndarray) -> jnp.ndarray:
    """Forward substitution, row by row: ``x_i = (b_i - sum_{k<i} L_ik x_k) / L_ii``."""
    from jax import lax

    n = L.shape[-1]

    def body(i, X):
        Li = _dyn(L, i, -2)                                                  # row i (..., n)
        xi = (_dyn(B, i, -2) - jnp.einsum("...k,...km->...m", Li, X)) / _dyn(Li, i, -1)[..., None]
        return lax.dynamic_update_index_in_dim(X, xi, i, axis=X.ndim - 2)

    return lax.fori_loop(0, n, body, jnp.zeros_like(B))


def _solve_upper_t_loop(L: jnp.ndarray, B: jnp.ndarray) -> jnp.ndarray:
    """Back substitution with ``L^T``, last row first: ``x_i = (b_i - sum_{k>i} L_ki x_k) / L_ii``."""
    from jax import lax

    n = L.shape[-1]

    def body(step, X):
        i = n - 1 - step
        Li = _dyn(L, i, -1)                                                  # column i (..., n)
        xi = (_dyn(B, i, -2) - jnp.einsum("...k,...km->...m", Li, X)) / _dyn(Li, i, -1)[..., None]
        return lax.dynamic_update_index_in_dim(X, xi, i, axis=X.ndim - 2)

    return lax.fori_loop(0, n, body, jnp.zeros_like(B))


def inverse_lower(L: jnp.ndarray) -> jnp.ndarray:
    """``L^{-1}`` for lower-triangular ``L``."""
    eye = jnp.broadcast_to(jnp.eye(L.shape[-1], dtype=L.dtype), L.shape)
    return solve_lower(L, eye)


def spd_inverse(A: jnp.ndarray) -> jnp.ndarray:
    """Inverse of a symmetric positive-definite matrix through its Cholesky factor."""
    Linv = inverse_lower(cholesky(A))
    return jnp.swapaxes(Linv, -1, -2) @ Linv


def solve_lower(L: jnp.ndarray, B: jnp.ndarray) -> jnp.ndarray:
    """``L^{-1} B`` for lower-triangular ``L`` (..., S, S) and ``B`` (..., S, m)."""
    S = L.shape[-1]
    if S == 0:
        return B
    if S > RECURSIVE_MAX:
        return solve_triangular(L, B, lower=True)
    if S > UNROLL_MAX:
        return _solve_lower_loop(L, B)
    x = []
    for i in range(S):
        v = B[..., i, :]
        for k in range(i):
            v = v - L[..., i, k, None] * x[k]
        x.append(v / L[..., i, i, None])
    return jnp.stack(x, axis=-2)


def solve_upper_t(L: jnp.ndarray, B: jnp.ndarray) -> jnp.ndarray:
    """``L^{-T} B`` for lower-triangular ``L`` (..., S, S) and ``B`` (..., S, m)."""
    S = L.shape[-1]
    if S == 0:
        return B
    if S > RECURSIVE_MAX:
        return solve_triangular(L, B, lower=True, trans="T")
    if S > UNROLL_MAX:
        return _solve_upper_t_loop(L, B)
    x = [None] * S
    for i in reversed(range(S)):
        v = B[..., i, :]
        for k in range(i + 1, S):
            v = v - L[..., k, i, None] * x[k]
        x[i] = v / L[..., i, i, None]
    return jnp.stack(x, axis=-2)


def diag(L: jnp.ndarray) -> jnp.ndarray:
    """Diagonal of each matrix in a stack, as a strided slice (``jnp.diagonal`` is a
    gather whose derivatives are scatters, slow under vmap)."""
    n = L.shape[-1]
    return L.reshape(L.shape[:-2] + (n * n,))[..., ::n + 1]


def symmetric_eigen(A: jnp.ndarray, sweeps: int = 12):
    """Eigenvalues (ascending) and eigenvectors of a small symmetric matrix, by cyclic Jacobi.

    For the optimizer's k x k Hessians (k = number of theta): plain XLA
    operations, so a vmapped optimizer never calls LAPACK's eigensolver
    (see the module docstring).  Larger matrices use ``jnp.linalg.eigh``.
    """
    from jax import lax

    k = A.shape[-1]
    if k == 1:
        return A[..., 0, :], jnp.ones_like(A)
    if k > 8:
        return jnp.linalg.eigh(A)
    pairs = [(p, q) for p in range(k) for q in range(p + 1, k)]

    def rotate(state, pq):
        a, v = state
        p, q = pq
        app, aqq, apq = a[..., p, p], a[..., q, q], a[..., p, q]
        small = jnp.abs(apq) <= 1e-300
        tau = (aqq - app) / jnp.where(small, 1.0, 2.0 * apq)
        t = jnp.sign(tau + (tau == 0)) / (jnp.abs(tau) + jnp.sqrt(1.0 + tau * tau))
        t = jnp.where(small, 0.0, t)
        c = 1.0 / jnp.sqrt(1.0 + t * t)
        s = t * c
        rp, rq = a[..., p, :], a[..., q, :]
        a = a.at[..., p, :].set(c[..., None] * rp - s[..., None] * rq)
        a = a.at[..., q, :].set(s[..., None] * rp + c[..., None] * rq)
        cp, cq = a[..., :, p], a[..., :, q]
        a = a.at[..., :, p].set(c[..., None] * cp - s[..., None] * cq)
        a = a.at[..., :, q].set(s[..., None] * cp + c[..., None] * cq)
        vp, vq = v[..., :, p], v[..., :, q]
        v = v.at[..., :, p].set(c[..., None] * vp - s[..., None] * vq)
        v = v.at[..., :, q].set(s[..., None] * vp + c[..., None] * vq)
        return a, v

    def sweep(_, state):
        for pq in pairs:
            state = rotate(state, pq)
        return state

    v0 = tie(jnp.broadcast_to(jnp.eye(k, dtype=A.dtype), A.shape), A)
    a, v = lax.fori_loop(0, sweeps, sweep, (A, v0))
    w = diag(a)
    order = jnp.argsort(w, axis=-1)
    w = jnp.take_along_axis(w, order, axis=-1)
    v = jnp.take_along_axis(v, order[..., None, :], axis=-1)
    return w, v
