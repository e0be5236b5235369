"""Static description of the random-effects structure and of the layout of theta.

Notation (lme4 / MixedModels.jl).  The model is

    y = X beta + sum_k Z_k b_k + eps,    eps ~ N(0, sigma^2 W^{-1}),

where term ``k`` has a grouping factor with ``l_k`` levels and ``S_k`` columns
(``(1 + x | g)`` has ``S = 2``).  Row ``i`` of ``Z_k`` is zero except for the
``S_k`` entries ``z_k[i, :]`` at level ``refs_k[i]``.  The random effects of one
level are ``b = sigma * lambda_k u`` with ``u ~ N(0, I)`` and ``lambda_k`` an
``S_k x S_k`` lower-triangular *relative covariance factor*, so that
``Var(b) = sigma^2 lambda_k lambda_k^T``.

``theta`` concatenates, term by term in lme4's order, the column-major lower
triangle of each ``lambda_k``.  Diagonal entries have lower bound 0, the others
are unbounded; the initial value is 1 on the diagonal and 0 elsewhere.  This is
exactly ``getME(m, "theta")`` of lme4.

For the factorization one term -- the *block term* -- is kept block-diagonal
(``l_b`` blocks of ``S_b x S_b``); all other terms are gathered into a dense
part of size ``q_d = sum_{k != b} l_k S_k``.  The choice of the block term and
the order of the dense terms never change what the user sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

import jax.numpy as jnp

from . import structured


@dataclass(frozen=True)
class TermSpec:
    """One random-effects term: ``nlevels`` levels, ``ncols`` columns per level.

    ``transformed`` marks a term whose columns are multiplied by a fixed dense
    matrix (a relationship-matrix factor); such a term can never be the block term.
    """

    nlevels: int
    ncols: int
    transformed: bool = False
    kind: str = "us"    # "us": lambda lower triangular (lme4's default); "diag": lambda diagonal

    @property
    def ntheta(self) -> int:
        """Free entries of ``lambda``: ``S (S + 1) / 2`` (``us``) or ``S`` (``diag``); a structured
        term's parameters (``params/structured.py``)."""
        if self.kind in structured.STRUCTURED:
            return structured.n_parameters(self.kind, self.ncols)
        return len(theta_positions(self)[0])

    @property
    def q(self) -> int:
        """Random effects of the term: ``l S``."""
        return self.nlevels * self.ncols


def theta_positions(term: "TermSpec") -> tuple[np.ndarray, np.ndarray]:
    """Row and column in ``lambda`` of each of the term's thetas, in lme4's order.

    ``us`` (unstructured, lme4's ``(x | g)``): the column-major lower triangle;
    ``diag`` (glmmTMB's ``diag(x | g)``): the diagonal -- variances only, no covariances.
    """
    if term.kind == "diag":
        idx = np.arange(term.ncols, dtype=np.int32)
        return idx, idx
    if term.kind != "us":
        raise ValueError(f"the thetas of a {term.kind!r} term are not entries of lambda (params/structured.py)")
    return _lower_triangle_indices(term.ncols)


def reported_positions(term: "TermSpec") -> tuple[np.ndarray, np.ndarray]:
    """Entries of the term's covariance reported as sd (diagonal) and cor: its thetas' positions,
    or for a structured term the whole lower triangle of the implied covariance."""
    if term.kind in structured.STRUCTURED:
        return _lower_triangle_indices(term.ncols)
    return theta_positions(term)


def _lower_triangle_indices(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the column-major lower triangle (lme4's order)."""
    rows, cols = [], []
    for j in range(size):
        for i in range(j, size):
            rows.append(i)
            cols.append(j)
    return np.asarray(rows, dtype=np.int32), np.asarray(cols, dtype=np.int32)


@dataclass(frozen=True)
class ReStructure:
    """The random-effects terms in lme4's order and the factorization plan.

    ``block_term`` is the index of the term factored as small diagonal blocks,
    or ``None`` when every term goes into the dense part.
    """

    terms: tuple[TermSpec, ...]
    block_term: int | None

    @staticmethod
    def build(terms: tuple[TermSpec, ...]) -> "ReStructure":
        """Pick the block term that leaves the smallest dense part.

        Removing term ``k`` from the dense part saves ``l_k S_k`` rows, so the
        block term is the non-transformed term with the largest ``l_k S_k``
        (ties go to the earlier term, which is lme4's choice for sorted terms).
        """
        candidates = [k for k, t in enumerate(terms) if not t.transformed]
        block = max(candidates, key=lambda k: (terms[k].q, -k)) if candidates else None
        return ReStructure(tuple(terms), block)

    # ----------------------------------------------------------------- layout
    @cached_property
    def theta_offsets(self) -> tuple[int, ...]:
        """Position of each term's first entry in theta."""
        offsets, total = [], 0
        for t in self.terms:
            offsets.append(total)
            total += t.ntheta
        return tuple(offsets)

    @property
    def ntheta(self) -> int:
        """Length of theta."""
        return sum(t.ntheta for t in self.terms)

    @cached_property
    def dense_terms(self) -> tuple[int, ...]:
        """Indices of the terms in the dense part, in lme4's order."""
        return tuple(k for k in range(len(self.terms)) if k != self.block_term)

    @cached_property
    def dense_offsets(self) -> tuple[int, ...]:
        """Row offset of each dense term (aligned with ``dense_terms``)."""
        offsets, total = [], 0
        for k in self.dense_terms:
            offsets.append(total)
            total += self.terms[k].q
        return tuple(offsets)

    @property
    def q_dense(self) -> int:
        """Size of the dense part: ``q_d = sum_{k != b} l_k S_k``."""
        return sum(self.terms[k].q for k in self.dense_terms)

    @property
    def q(self) -> int:
        """Number of random effects: ``sum_k l_k S_k``."""
        return sum(t.q for t in self.terms)

    @property
    def block(self) -> TermSpec | None:
        """The block term's ``TermSpec``, or None without one."""
        return None if self.block_term is None else self.terms[self.block_term]

    def lower_bounds(self) -> np.ndarray:
        """0 for diagonal elements of each lambda, -inf elsewhere."""
        out = []
        for t in self.terms:
            if t.kind in structured.STRUCTURED:
                out.extend(structured.lower_bounds(t.kind, t.ncols))
                continue
            rows, cols = theta_positions(t)
            out.extend(np.where(rows == cols, 0.0, -np.inf))
        return np.asarray(out)

    def theta0(self) -> np.ndarray:
        """lme4's starting value: 1 on the diagonal, 0 off it (structured terms: scales 1, correlation 0)."""
        out = []
        for t in self.terms:
            if t.kind in structured.STRUCTURED:
                out.extend(structured.start(t.kind, t.ncols))
            else:
                rows, cols = theta_positions(t)
                out.extend(np.where(rows == cols, 1.0, 0.0))
        return np.asarray(out)

    @property
    def structured(self) -> bool:
        """Whether a term's factor is a nonlinear function of its thetas (``params/structured.py``)."""
        return any(t.kind in structured.STRUCTURED for t in self.terms)

    def reflections(self) -> np.ndarray:
        """(ntheta, ntheta) 0/1 matrix: row i marks the entries below diagonal element i in its column.

        Flipping the sign of a column of ``lambda`` leaves ``lambda lambda^T``, hence
        the deviance, unchanged.  Where a diagonal element is 0 the flip negates
        the gradient with respect to it, which the optimizer uses to leave a
        boundary point that is not a local minimum.
        """
        R = np.zeros((self.ntheta, self.ntheta), dtype=bool)
        for t, off in zip(self.terms, self.theta_offsets):
            if t.kind in structured.STRUCTURED:
                continue
            rows, cols = theta_positions(t)
            for a in range(t.ntheta):
                if rows[a] == cols[a]:
                    for b in range(t.ntheta):
                        if cols[b] == cols[a] and rows[b] > rows[a]:
                            R[off + a, off + b] = True
        return R

    # ------------------------------------------------------------- theta -> lambda
    def lambdas_numpy(self, theta) -> list[np.ndarray]:
        """``lambdas`` in NumPy (for results; no JAX dispatch)."""
        theta = np.asarray(theta, dtype=float)
        out = []
        for t, off in zip(self.terms, self.theta_offsets):
            if t.kind in structured.STRUCTURED:
                out.append(np.asarray(structured.factor(t.kind, theta[off:off + t.ntheta], t.ncols)))
                continue
            rows, cols = theta_positions(t)
            lam = np.zeros((t.ncols, t.ncols))
            lam[rows, cols] = theta[off:off + t.ntheta]
            out.append(lam)
        return out

    def lambdas_stacked(self, theta) -> list[np.ndarray]:
        """``lambdas_numpy`` of every row of ``theta`` (B, k): per term an array (B, S, S)."""
        th = np.asarray(theta, dtype=float)
        if self.structured:
            rows = [self.lambdas_numpy(row) for row in th]
            return [np.stack([r[k] for r in rows]) if len(rows) else np.zeros((0, t.ncols, t.ncols))
                    for k, t in enumerate(self.terms)]
        out = []
        for t, off in zip(self.terms, self.theta_offsets):
            rows, cols = theta_positions(t)
            lam = np.zeros((th.shape[0], t.ncols, t.ncols))
            lam[:, rows, cols] = th[:, off:off + len(rows)]
            out.append(lam)
        return out

    def lambdas(self, theta) -> list:
        """The relative covariance factors ``lambda_k`` (S_k x S_k) from theta.

        Built by stacking theta's elements (no scatter), which keeps the
        derivatives of the deviance cheap under ``vmap`` and forward mode.
        """
        out = []
        for t, off in zip(self.terms, self.theta_offsets):
            if t.kind in structured.STRUCTURED:
                out.append(structured.factor(t.kind, theta[off:off + t.ntheta], t.ncols, xp=jnp))
                continue
            rows, cols = theta_positions(t)
            index = {(int(r), int(c)): off + a for a, (r, c) in enumerate(zip(rows, cols))}
            zero = jnp.zeros((), dtype=theta.dtype)
            entries = [theta[index[(r, c)]] if (r, c) in index else zero
                       for r in range(t.ncols) for c in range(t.ncols)]
            out.append(jnp.stack(entries).reshape(t.ncols, t.ncols))
        return out
