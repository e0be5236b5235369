"""Cholesky factors and triangular solves for stacks of small matrices.

Random-effects blocks are tiny (1 x 1, 2 x 2, 3 x 3) and come in stacks of
thousands (levels x traits).  Batched LAPACK calls cost microseconds *per
matrix* on a CPU, so matrices up to ``UNROLL_MAX`` rows are factored by the
textbook recurrences written out element by element

    L_jj = sqrt(M_jj - sum_{k<j} L_jk^2),
    L_ij = (M_ij - sum_{k<j} L_ik L_jk) / L_jj,      i > j,

which XLA fuses into a few vectorized loops over the whole stack.  Larger
matrices use ``jnp.linalg.cholesky`` / ``solve_triangular``.  A matrix that is
not positive definite gives NaN (never an exception), as LAPACK does.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

UNROLL_MAX = 6


def _stack(rows: list[list]) -> jnp.ndarray:
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def cholesky(M: jnp.ndarray) -> jnp.ndarray:
    """Lower Cholesky factor of each matrix in the stack ``M`` (..., S, S)."""
    S = M.shape[-1]
    if S == 0:
        return M
    if S > UNROLL_MAX:
        return jnp.linalg.cholesky(M)
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


def solve_lower(L: jnp.ndarray, B: jnp.ndarray) -> jnp.ndarray:
    """``L^{-1} B`` for lower-triangular ``L`` (..., S, S) and ``B`` (..., S, m)."""
    S = L.shape[-1]
    if S == 0:
        return B
    if S > UNROLL_MAX:
        return solve_triangular(L, B, lower=True)
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
    if S > UNROLL_MAX:
        return solve_triangular(L, B, lower=True, trans="T")
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


def log_diag_sum(L: jnp.ndarray) -> jnp.ndarray:
    """``sum log diag(L)`` over the last two axes."""
    return jnp.sum(jnp.log(diag(L)), axis=-1)


def lam_t_times(lam: jnp.ndarray, C: jnp.ndarray) -> jnp.ndarray:
    """``lam^T C`` for a small ``lam`` (S, S) and a stack ``C`` (..., S, m).

    Written as S broadcast multiply-adds: XLA fuses them, whereas tiny batched
    ``dot_general`` calls are slow on CPU (and slower still under vmap).
    """
    S = lam.shape[0]
    if S > UNROLL_MAX:
        return jnp.einsum("sa,...sc->...ac", lam, C)
    out = lam[0, :, None] * C[..., 0:1, :]
    for s in range(1, S):
        out = out + lam[s, :, None] * C[..., s:s + 1, :]
    return out


def congruence(lam: jnp.ndarray, D: jnp.ndarray) -> jnp.ndarray:
    """``lam^T D lam`` for a stack of symmetric ``D`` (..., S, S)."""
    left = lam_t_times(lam, D)
    return jnp.swapaxes(lam_t_times(lam, jnp.swapaxes(left, -1, -2)), -1, -2)


def gram(W: jnp.ndarray, small: int = 16) -> jnp.ndarray:
    """``sum_i W_i^T W_i`` over all leading axes of ``W`` (..., Q) -> (Q, Q)."""
    Q = W.shape[-1]
    flat = W.reshape(-1, Q)
    if Q > small:
        return flat.T @ flat
    return jnp.sum(flat[:, :, None] * flat[:, None, :], axis=0)
