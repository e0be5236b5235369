"""Stacks of small matrices in structure-of-arrays form.

The block term has ``l_b`` tiny ``S x S`` blocks (and a batch of traits adds
another axis).  Stored as arrays with trailing ``S x S`` axes, every operation
works on vectors of length 2 or 3: XLA cannot vectorize them, and under
``vmap`` and second-order autodiff it fills the program with transposes and
copies (a Hessian 50x the cost of the function).  Here a small matrix is a
Python list of lists whose entries are arrays over the levels (last axis), so
every formula -- products with ``lambda``, the Cholesky recurrences, the
triangular solves -- is elementwise over long contiguous arrays, fuses into a
few loops, and differentiates into more of the same.

An entry may also carry leading axes (a row of ``Q`` columns per level is an
array ``(Q, l)``); scalars of ``lambda`` broadcast against entries.
"""

from __future__ import annotations

import jax.numpy as jnp


def split(A: jnp.ndarray) -> list:
    """``(S, T, ...)`` array -> S x T nested list of its ``A[i, j]``."""
    return [[A[i, j] for j in range(A.shape[1])] for i in range(A.shape[0])]


def rows(A: jnp.ndarray) -> list:
    """``(S, ...)`` array -> list of ``A[i]``."""
    return [A[i] for i in range(A.shape[0])]


def stack(M: list) -> jnp.ndarray:
    """Nested list -> array ``(S, T, ...)``."""
    return jnp.stack([jnp.stack(r) for r in M])


def congruence(lam, D: list, add_identity: bool = True) -> list:
    """``lam^T D lam (+ I)`` with ``lam`` an (S, S) lower-triangular array of scalars and ``D`` symmetric.

    Entry ``(a, b)`` is ``sum_{s >= a, t >= b} lam[s, a] lam[t, b] D[s][t]``: the
    products of ``lam``'s entries are formed first (scalars), so each level
    costs one multiply-add per distinct entry of ``D`` -- also in every
    derivative -- and the structural zeros of ``lam`` cost nothing.
    """
    S = len(D)
    out = [[None] * S for _ in range(S)]
    for a in range(S):
        for b in range(a + 1):
            coef = {}
            for s in range(a, S):
                for t in range(b, S):
                    key = (max(s, t), min(s, t))
                    term = lam[s, a] * lam[t, b]
                    coef[key] = coef[key] + term if key in coef else term
            v = sum(c * D[i][j] for (i, j), c in coef.items())
            if add_identity and a == b:
                v = v + 1.0
            out[a][b] = out[b][a] = v
    return out


def lam_t_times(lam, C: list) -> list:
    """``lam^T C`` for ``lam`` lower triangular and ``C`` a list of S rows (arrays)."""
    S = len(C)
    return [sum(lam[s, a] * C[s] for s in range(a, S)) for a in range(S)]


def cholesky(M: list, sqrt=jnp.sqrt) -> list:
    """Lower Cholesky factor (nested list; entries above the diagonal are None).

    Entries may be any numbers with ``+ - * /`` and a ``sqrt`` (JAX or NumPy scalars and arrays)."""
    S = len(M)
    L = [[None] * S for _ in range(S)]
    for j in range(S):
        d = M[j][j]
        for k in range(j):
            d = d - L[j][k] * L[j][k]
        L[j][j] = sqrt(d)
        for i in range(j + 1, S):
            v = M[i][j]
            for k in range(j):
                v = v - L[i][k] * L[j][k]
            L[i][j] = v / L[j][j]
    return L


def solve_lower(L: list, B: list) -> list:
    """``L^{-1} B`` for ``B`` a list of S rows; each row broadcasts against L's entries."""
    x = []
    for i in range(len(L)):
        v = B[i]
        for k in range(i):
            v = v - L[i][k] * x[k]
        x.append(v / L[i][i])
    return x


def solve_upper_t(L: list, B: list) -> list:
    """``L^{-T} B`` for ``B`` a list of S rows."""
    S = len(L)
    x = [None] * S
    for i in reversed(range(S)):
        v = B[i]
        for k in range(i + 1, S):
            v = v - L[k][i] * x[k]
        x[i] = v / L[i][i]
    return x


def inverse_lower(L: list) -> list:
    """``L^{-1}`` (lower triangular, nested list with zeros above the diagonal)."""
    S = len(L)
    zero = jnp.zeros_like(L[0][0])
    cols = []
    for j in range(S):
        e = [zero + (1.0 if i == j else 0.0) for i in range(S)]
        cols.append(solve_lower(L, e))
    return [[cols[j][i] for j in range(S)] for i in range(S)]


def log_diag_sum(L: list) -> jnp.ndarray:
    """``sum_i sum_levels log L_ii``."""
    return sum(jnp.sum(jnp.log(L[i][i])) for i in range(len(L)))


def fill_upper(L: list) -> list:
    zero = jnp.zeros_like(L[0][0])
    return [[L[i][j] if j <= i else zero for j in range(len(L))] for i in range(len(L))]
