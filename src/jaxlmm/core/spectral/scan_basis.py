"""The scan's n-long sums as r-long ones: an interpolative basis of the weights ``w_k(t) = 1 / (1 + e^t d_k)``.

Every n-long sum of ``core/spectral/scan.py`` has the form ``sum_k a_k w_k(t)`` (``d_k`` the
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
SciPy's pivoted QR, a few milliseconds); a chunk of traits shares one set of poles
(``weight_bases``: picked among all their eigenvalues, each trait with its own
coefficients), and its width is padded to a multiple of ``WIDTH_STEP`` (poles 0 with
zero coefficients) so that few programs are compiled.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

TOLERANCE = 1e-13
GRID = 129
WIDTH_STEP = 8
MIN_WIDTH = 16
SPACING = 3e-3


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


def _candidates(spectra: list[np.ndarray], hi: float, tol: float) -> np.ndarray:
    """The poles to choose from: every eigenvalue of the spectra, thinned to a relative spacing of
    ``SPACING`` (``weight_bases`` checks every weight against the basis of the thinned set), with
    those whose weight is 1 within ``tol`` on the whole range (``e^hi d < tol``) taken as 0."""
    d = np.concatenate(spectra)
    d = np.where(d * np.exp(hi) < tol, 0.0, d)
    pos = np.unique(d[d > 0])
    keep = [] if pos.size == 0 else [0]
    for i in range(1, pos.size):
        if pos[i] > pos[keep[-1]] * (1.0 + SPACING):
            keep.append(i)
    return np.concatenate([[0.0] if np.any(d == 0) else [], pos[keep]])


def weight_bases(spectra, lo: float, hi: float, tol: float = TOLERANCE) -> list[WeightBasis]:
    """One interpolative basis of the weights shared by several spectra (a chunk of traits): the poles
    are picked by a pivoted QR among all their eigenvalues (``_candidates``), each spectrum gets its own
    coefficients (least squares on the grid: exact for the picked eigenvalues themselves); every
    weight of every spectrum is checked to ``tol`` on the grid and between its points, and the basis
    grows until it is."""
    from scipy.linalg import qr, solve_triangular

    from ..linalg.threads import small_blas

    spectra = [np.maximum(np.asarray(d, dtype=np.float64), 0.0) for d in spectra]
    t = _chebyshev_points(lo, hi, GRID)
    mid = 0.5 * (t[1:] + t[:-1])
    cand = _candidates(spectra, hi, tol)
    A = _weights(t, cand)                                                 # (G, candidates)
    with small_blas():
        R, piv = qr(A, mode="r", pivoting=True, check_finite=False)
        size = np.abs(np.diag(R))
        rank = max(1, int(np.sum(size > tol * size[0])))
        grids = [(_weights(t, d), _weights(mid, d)) for d in spectra]
        while True:
            J = piv[:rank]
            Q, R11 = np.linalg.qr(A[:, J])
            coefs, err = [], 0.0
            for on, between in grids:
                c = solve_triangular(R11, Q.T @ on, check_finite=False).T             # (n, r)
                err = max(err, np.max(np.abs(on - A[:, J] @ c.T)),
                          np.max(np.abs(between - _weights(mid, cand[J]) @ c.T)))
                coefs.append(c)
            if err <= tol or rank >= min(size.size, cand.size):
                break
            rank = min(rank + 2, size.size, cand.size)
    width = max(MIN_WIDTH, -(-rank // WIDTH_STEP) * WIDTH_STEP)
    poles = np.zeros(width)
    poles[:rank] = cand[J]
    return [WeightBasis(poles, np.pad(c, ((0, 0), (0, width - rank))), float(np.sum(np.log1p(d))), rank)
            for c, d in zip(coefs, spectra)]


def weight_basis(d, lo: float, hi: float, tol: float = TOLERANCE) -> WeightBasis:
    """The interpolative basis of the weights of the eigenvalues ``d`` (negative ones taken as 0) on
    ``t in [lo, hi]``, accurate to ``tol`` (absolute; the weights lie in (0, 1]): ``weight_bases([d])``."""
    return weight_bases([d], lo, hi, tol)[0]
