"""The scan's n-long sums as r-long ones: an interpolative basis of the weights ``w_k(t) = 1 / (1 + e^t d_k)``.

Every n-long sum of ``core/scan.py`` has the form ``sum_k a_k w_k(t)`` (``d_k`` the
eigenvalues of a trait's relationship matrix, ``t = log lambda``).  On GEMMA's range
``t in [log 1e-5, log 1e5]`` the n weights are logistic functions of ``t + log d_k``
and so, as functions of t, numerically of low rank.  An interpolative
decomposition -- a pivoted QR of their values on a Chebyshev grid of t -- picks r of
them, the weights of the eigenvalues ``p_j = d_{J_j}`` (the *poles*), and writes every
other one through them:

    w_k(t) = sum_j C_kj / (1 + e^t p_j) + e_k(t),    max_{k, t} |e_k(t)| <= TOLERANCE,

checked on a second grid between the first one's points (r is about 20 for the
1000-individual kinship of the benchmarks, against n = 1000).  Then

    sum_k a_k w_k(t) = sum_j (sum_k a_k C_kj) w_{J_j}(t):

the n-long work is one matrix product per marker chunk (the coefficients, S x r),
and each evaluation of the likelihood in the search for lambda costs O(r) per
marker, with exact derivatives ``w' = -w (1 - w)`` and ``w'' = w (1 - w)(1 - 2 w)``.
The log-determinant ``L(t) = sum_k log(1 + e^t d_k)`` has ``L'(t) = n - sum_k w_k(t)``,
so, integrating the basis from 0 (``int w_j = t - log(1 + e^t p_j)``),

    L(t) = L(0) + n t - sum_j cbar_j [t - log(1 + e^t p_j) + log(1 + p_j)],   cbar_j = sum_k C_kj,

with ``L(0) = sum_k log(1 + d_k)`` exact.  The basis is built on the host (NumPy and
SciPy's pivoted QR, a few milliseconds); its width is padded to a multiple of
``WIDTH_STEP`` (poles 0 with zero coefficients) so that few programs are compiled.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

TOLERANCE = 1e-13
GRID = 129
WIDTH_STEP = 8
MIN_WIDTH = 16


class WeightBasis(NamedTuple):
    """``w_k(t) ~ sum_j coef[k, j] / (1 + e^t poles[j])`` on ``[lo, hi]``; ``logdet0 = sum_k log(1 + d_k)``."""

    poles: np.ndarray      # (r,)
    coef: np.ndarray       # (n, r)
    logdet0: float
    rank: int              # columns before padding


def _chebyshev_points(lo: float, hi: float, m: int) -> np.ndarray:
    return 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.cos(np.pi * np.arange(m) / (m - 1))


def _weights(t: np.ndarray, d: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(t)[:, None] * d[None, :])


def weight_basis(d, lo: float, hi: float, tol: float = TOLERANCE) -> WeightBasis:
    """The interpolative basis of the weights of the eigenvalues ``d`` (negative ones taken as 0) on
    ``t in [lo, hi]``, accurate to ``tol`` (absolute; the weights lie in (0, 1])."""
    from scipy.linalg import qr, solve_triangular

    from .threads import small_blas

    d = np.maximum(np.asarray(d, dtype=np.float64), 0.0)
    n = d.size
    t = _chebyshev_points(lo, hi, GRID)
    A = _weights(t, d)                                                    # (G, n)
    check = _weights(0.5 * (t[1:] + t[:-1]), d)                           # between the grid's points
    with small_blas():
        R, piv = qr(A, mode="r", pivoting=True, check_finite=False)
    size = np.abs(np.diag(R))
    rank = max(1, int(np.sum(size > tol * size[0])))
    while True:
        T = solve_triangular(R[:rank, :rank], R[:rank, :], check_finite=False)   # (r, n) in pivoted order
        J = piv[:rank]
        coef = np.empty((n, rank))
        coef[piv] = T.T
        err = max(np.max(np.abs(A[:, piv] - A[:, J] @ T)), np.max(np.abs(check - check[:, J] @ coef.T)))
        if err <= tol or rank >= min(size.size, n):
            break
        rank = min(rank + 2, size.size, n)
    width = max(MIN_WIDTH, -(-rank // WIDTH_STEP) * WIDTH_STEP)
    poles = np.zeros(width)
    poles[:rank] = d[J]
    padded = np.zeros((n, width))
    padded[:, :rank] = coef
    return WeightBasis(poles, padded, float(np.sum(np.log1p(d))), rank)


def common_width(bases: list[WeightBasis]) -> list[WeightBasis]:
    """The bases padded to one width (the widest), to stack traits in one program."""
    width = max(b.poles.size for b in bases)
    out = []
    for b in bases:
        extra = width - b.poles.size
        out.append(b if not extra else WeightBasis(np.concatenate([b.poles, np.zeros(extra)]),
                                                   np.pad(b.coef, ((0, 0), (0, extra))), b.logdet0, b.rank))
    return out
