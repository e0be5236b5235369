"""Host-side assembly of a ``dense.DenseSystem``: cross-products, Lambda's index matrix, buckets.

Columns of ``Z`` are ordered term by term (lme4's order), level-major within a
term (``offset_k + level * S_k + s``), so term k's spherical effects are
``u[offset_k : offset_k + l_k S_k].reshape(l_k, S_k)``.  A term with a
relationship-matrix factor ``T`` (``K = T T^T``) has columns ``Z_k (T kron I_S)``.

Sizes are padded to coarse buckets (``bucket_q``, ``bucket_p``, ``bucket_k``)
so that models of different formulas share one compiled program; the
cross-products are formed in float64 with ``scipy.sparse`` (``Z`` has ``S_k``
nonzeros per row and term) and cast to the working dtype at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..pls.crossprod import REFINE_SHIFT
from .system import DenseSystem
from .reference import Rows, remember_rows
from ..params.structure import theta_positions

DENSE_MAX = 256  # largest padded q + p + 1 fitted by the dense programs (q_pad 64 or 128)


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def bucket_q(q: int) -> int:
    """Random-effect columns: 64, 128, 256, 512 (small models all share 64)."""
    return max(64, _pow2(q))


def bucket_p(p: int) -> int:
    """Fixed-effect columns: ``2^j - 1`` (3, 7, 15, ...), so that ``p + 1`` is a power of two."""
    return max(4, _pow2(p + 1)) - 1


def bucket_k(k: int) -> int:
    """Variance parameters: 4, 8, 16, ..."""
    return max(4, _pow2(k))


def fits_dense(q: int, p: int) -> bool:
    return bucket_q(q) + bucket_p(p) + 1 <= DENSE_MAX


@dataclass(frozen=True)
class TermLayout:
    nlevels: int
    ncols: int
    z_offset: int       # first column of Z
    theta_offset: int   # first element of theta
    kind: str = "us"    # which entries of lambda are thetas (``structure.theta_positions``)


@dataclass(frozen=True)
class DenseLayout:
    terms: tuple[TermLayout, ...]
    q: int
    p: int
    k: int

    @property
    def q_pad(self) -> int:
        return bucket_q(self.q)

    @property
    def p_pad(self) -> int:
        return bucket_p(self.p)

    @property
    def k_pad(self) -> int:
        return bucket_k(self.k)

    @staticmethod
    def build(term_sizes, p: int) -> "DenseLayout":
        """From ``(nlevels, ncols)`` or ``(nlevels, ncols, kind)`` per term and the number of fixed-effect columns."""
        terms, q, k = [], 0, 0
        for nlevels, ncols, *kind in term_sizes:
            term = TermLayout(int(nlevels), int(ncols), q, k, *kind)
            terms.append(term)
            q += nlevels * ncols
            k += len(theta_positions(term)[0])
        return DenseLayout(tuple(terms), q, int(p), k)

    def lam_index(self) -> np.ndarray:
        """(q_pad, q_pad) int32: the theta entry of each element of Lambda (``k_pad`` = structural zero)."""
        return self._block_index(symmetric=False)

    def cov_index(self) -> np.ndarray:
        """(q_pad, q_pad) int32: the entry of gamma (theta's layout) of each element of
        ``blockdiag(Sigma_k kron I)``, both triangles (``k_pad`` = structural zero)."""
        return self._block_index(symmetric=True)

    def _block_index(self, symmetric: bool) -> np.ndarray:
        """Each term's thetas at their positions (``structure.theta_positions``, lme4's order) repeated on its
        levels' diagonal blocks."""
        index = np.full((self.q_pad, self.q_pad), self.k_pad, dtype=np.int32)
        for t in self.terms:
            S = t.ncols
            tri = np.full((S, S), self.k_pad, dtype=np.int32)
            rows, cols = theta_positions(t)
            tri[rows, cols] = t.theta_offset + np.arange(len(rows))
            if symmetric:
                tri[cols, rows] = t.theta_offset + np.arange(len(rows))
            base = t.z_offset + np.arange(t.nlevels)[:, None] * S                     # (l, 1)
            rows = (base[:, :, None] + np.arange(S)[None, :, None]).reshape(t.nlevels, S, 1)
            cols = (base[:, :, None] + np.arange(S)[None, None, :]).reshape(t.nlevels, 1, S)
            index[rows, cols] = tri[None]
        return index

    def pad_theta(self, theta, fill: float = 0.0) -> np.ndarray:
        out = np.full(self.k_pad, fill, dtype=float)
        out[:self.k] = theta
        return out

    def pad_reflections(self, R: np.ndarray) -> np.ndarray:
        out = np.zeros((self.k_pad, self.k_pad))
        out[:self.k, :self.k] = R
        return out


def random_effects_matrix(refs, z, transforms, layout: DenseLayout, n: int):
    """``Z`` (n x q) as a ``scipy.sparse`` CSC matrix (relationship-matrix terms transformed)."""
    from scipy import sparse

    blocks = []
    for t, r, zk, T in zip(layout.terms, refs, z, transforms):
        S = t.ncols
        rows = np.repeat(np.arange(n), S)
        cols = (np.asarray(r)[:, None] * S + np.arange(S)[None, :]).reshape(-1)
        Zk = sparse.csc_matrix((np.asarray(zk, float).reshape(-1), (rows, cols)), shape=(n, t.nlevels * S))
        if T is not None:
            Zk = sparse.csc_matrix(Zk @ np.kron(np.asarray(T, float), np.eye(S)))
        blocks.append(Zk)
    return sparse.hstack(blocks, format="csc")


def least_squares_shift(XtWX: np.ndarray, XtWy: np.ndarray) -> np.ndarray:
    """Weighted least-squares ``beta_0`` (slightly ridged) by which y is shifted (``pls/crossprod.py``)."""
    p = XtWX.shape[0]
    if p == 0:
        return np.zeros(np.shape(XtWy))
    ridge = 1e-10 * (np.trace(XtWX) / p + 1e-300)
    return np.linalg.solve(XtWX + ridge * np.eye(p), XtWy)


def dense_system(X, y, weights, offset, refs, z, transforms, layout: DenseLayout, dtype) -> DenseSystem:
    """The padded ``DenseSystem`` of one response (NumPy leaves; see ``dense/system.py``).

    Rows with weight 0 or a missing response are left out.
    """
    systems, rows = _systems(X, np.asarray(y, float)[:, None], weights, offset, refs, z, transforms, layout, dtype)
    system = DenseSystem(*(leaf if name == "lam_index" else leaf[0]
                           for name, leaf in zip(DenseSystem._fields, systems)))
    remember_rows(system, rows._replace(R=rows.R[:, 0]))
    return system


def dense_systems(X, Y, weights, offset, refs, z, transforms, layout: DenseLayout, dtype) -> DenseSystem:
    """The ``DenseSystem`` of every column of ``Y`` (n, T), stacked on a leading axis (``lam_index`` shared).

    Every column has the same rows observed: weight > 0 and no response missing in the row
    (callers give columns with other missing rows their own call).  Only the parts of ``A``
    that involve y differ between columns.
    """
    return _systems(X, Y, weights, offset, refs, z, transforms, layout, dtype)[0]


def _systems(X, Y, weights, offset, refs, z, transforms, layout: DenseLayout, dtype):
    """``dense_systems`` and the rows they were formed from, in the systems' units (``Rows``)."""
    X = np.asarray(X, float)
    Y = np.asarray(Y, float)
    w = np.asarray(weights, float)
    observed = (w > 0) & ~np.isnan(Y).any(axis=1)
    w = np.where(observed, w, 0.0)
    Yo = np.where(observed[:, None], Y - np.asarray(offset, float)[:, None], 0.0)
    n, p = X.shape
    T = Y.shape[1]
    WX = w[:, None] * X
    XtWX = X.T @ WX
    shift = least_squares_shift(XtWX, WX.T @ Yo)                          # (p, T)
    R = np.where(observed[:, None], Yo - X @ shift, 0.0)
    for _ in range(REFINE_SHIFT):     # refined on the residual (crossprod.REFINE_SHIFT)
        shift = shift + least_squares_shift(XtWX, WX.T @ R)
        R = np.where(observed[:, None], Yo - X @ shift, 0.0)
    # unit root-mean-square columns of X and of each shifted y: the system is formed in the same
    # units whatever the data's (float32 then holds y * 1e10 as well as y); dense/system.py undoes it
    x_scale, y_scale = column_scales(X, w), column_scales(R, w)
    X, R, WX = X / x_scale, R / y_scale, WX / x_scale
    Z = random_effects_matrix(refs, z, transforms, layout, n)
    WZ = Z.multiply(w[:, None]).tocsc()
    q, qp, pp = layout.q, layout.q_pad, layout.p_pad
    m = qp + pp + 1
    A = np.zeros((T, m, m))
    xcols = np.arange(qp, qp + p)
    A[:, :q, :q] = (Z.T @ WZ).toarray()
    zx = np.asarray(WZ.T @ X)
    A[:, :q, xcols] = zx
    A[:, xcols[:, None], np.arange(q)[None, :]] = zx.T
    A[:, xcols[:, None], xcols[None, :]] = X.T @ WX
    zy = np.asarray(WZ.T @ R).T                                            # (T, q)
    xy = (WX.T @ R).T                                                      # (T, p)
    A[:, :q, m - 1] = A[:, m - 1, :q] = zy
    A[:, xcols, m - 1] = A[:, m - 1, xcols] = xy
    A[:, m - 1, m - 1] = np.einsum("nt,nt,n->t", R, R, w)
    A[:, range(qp + p, qp + pp), range(qp + p, qp + pp)] = 1.0
    dt = np.dtype(dtype)
    shift_pad, scale_pad = np.zeros((T, pp)), np.ones((T, pp))
    shift_pad[:, :p], scale_pad[:, :p] = shift.T, x_scale

    def each(value):
        return np.full(T, value, dtype=dt)

    systems = DenseSystem(A.astype(dt), layout.lam_index(), each(p), each(observed.sum()),
                          each(np.sum(np.log(w[observed]))), shift_pad.astype(dt), scale_pad.astype(dt),
                          np.asarray(y_scale, dt), np.zeros((T, qp), dt), np.zeros((T, pp), dt))
    return systems, Rows(X, R, Z, w)


def column_scales(M: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted root mean square of each column of ``M`` (1 for a zero column)."""
    total = max(float(w.sum()), 1e-300)
    rms = np.sqrt(np.einsum("ni,ni,n->i", M, M, w) / total)
    return np.where(rms > 0, rms, 1.0)


def per_term_solution(sol, layout: DenseLayout, nlevels_padded, transforms):
    """Split a ``DenseSolution`` (NumPy leaves) into the per-term ``solution.Solution`` layout.

    Term k's arrays have ``nlevels_padded[k]`` rows (zeros past its levels), as
    the block-algebra path returns them.  A relationship-matrix term's effects
    and conditional covariances are mapped back to its levels by ``T kron I``.
    """
    from ..pls.solve import Solution

    u_all, b_all, cov = (np.asarray(a) for a in (sol.u, sol.b, sol.cov_b))
    u, b, cond_var = [], [], []
    for t, l_pad, T in zip(layout.terms, nlevels_padded, transforms):
        S, l, sl = t.ncols, t.nlevels, slice(t.z_offset, t.z_offset + t.nlevels * t.ncols)
        uk = u_all[sl].reshape(l, S)
        bk = b_all[sl].reshape(l, S)
        block = cov[sl, sl].reshape(l, S, l, S)
        if T is None:
            Vk = np.einsum("lalb->lab", block)
        else:
            T = np.asarray(T, float)
            bk = T @ bk
            Vk = np.einsum("ml,lanb,mn->mab", T, block, T)
        pad = ((0, l_pad - l),)
        u.append(np.pad(uk, pad + ((0, 0),)))
        b.append(np.pad(bk, pad + ((0, 0),)))
        cond_var.append(np.pad(Vk, pad + ((0, 0), (0, 0))))
    p = layout.p
    return Solution(np.asarray(sol.criterion), np.asarray(sol.beta)[:p], np.asarray(sol.sigma),
                    np.asarray(sol.vcov_beta)[:p, :p], tuple(u), tuple(b), tuple(cond_var),
                    type(sol.parts)(*(np.asarray(v) for v in sol.parts)))


def derivative_rows(lam_index: np.ndarray, k_pad: int) -> np.ndarray:
    """(k_pad, q) int32: per theta i and column c, the row of ``E_i``'s nonzero in column c (q if none).

    ``E_i = (lam_index == i)`` has at most one nonzero per column: within one
    column of ``Lambda`` every entry is a different element of theta.
    """
    q = lam_index.shape[0]
    out = np.full((k_pad, q), q, dtype=np.int32)
    rows, cols = np.nonzero(lam_index < k_pad)
    out[lam_index[rows, cols], cols] = rows
    return out


def compact_system(system: DenseSystem, layout: DenseLayout) -> tuple[DenseSystem, np.ndarray]:
    """The system with the random-effect padding cut to a multiple of 8.

    A stack that is evaluated many times (profiles) runs on this smaller system: its
    program is compiled for the stack anyway, and the work of ``dense.block_derivatives``
    grows with ``q k m^2``.  Thetas stay padded to ``layout.k_pad``, so that models
    that differ only in their number of thetas share the program.  Returns the system
    and its ``derivative_rows``.
    """
    q_new = min(layout.q_pad, -(-max(layout.q, 1) // 8) * 8)
    m = system.A.shape[-1]
    keep = np.concatenate([np.arange(q_new), np.arange(layout.q_pad, m)])
    A = np.asarray(system.A)[..., keep[:, None], keep[None, :]]
    lam = np.asarray(system.lam_index)[:q_new, :q_new]
    return (system._replace(A=A, lam_index=lam, ref_b=np.asarray(system.ref_b)[..., :q_new]),
            derivative_rows(lam, layout.k_pad))
