"""The arrays of a GLMM and the layout of its parameters.

Random effects are ``b = Lambda(theta) u`` with ``u ~ N(0, I)``, term by term as in lme4: the
effects of level ``j`` of term ``k`` (``s_k`` columns) are ``b_kj = T_k u_kj``, ``T_k`` lower
triangular from the term's thetas (lme4's column-major lower triangle, ``params.structure``).  The
linear predictor of row ``i`` is

    eta_i = x_i' beta + offset_i + sum_k z_ik' T_k u_{k, g_k(i)} = x_i' beta + offset_i + sum_s a_is u_{idx_is}

with one *slot* ``s`` per (term, column): ``idx_is`` the position in ``u`` of the level of row ``i``
(``u`` ordered by term, then level, then column, as lme4 orders it) and ``a_i = T_k' z_ik`` the
slot's coefficient.  No ``n x q`` matrix is formed: ``J u`` is a gather and ``J' v`` a scatter-add
over the ``n x S`` slots (``S = sum_k s_k``).

The parameter vector of a fit is ``x = (theta, beta, log dispersion)`` (the last only for NB2 and
Gamma), lme4's order for glmer's ``(theta, beta)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..params.structure import TermSpec, theta_positions
from .families import Family


class GlmmTerm(NamedTuple):
    """One random-effects term: its columns, levels, covariance kind, and where it sits."""

    ncols: int
    nlevels: int
    kind: str           # "us" or "diag"
    slot: int           # first slot of the term
    u_start: int        # first position of its effects in u
    theta_start: int


class GlmmLayout(NamedTuple):
    """Static description of a GLMM (hashable: a static argument of the compiled programs)."""

    family: Family
    terms: tuple[GlmmTerm, ...]
    nbeta: int
    nagq: int = 1

    @property
    def q(self) -> int:
        return sum(t.ncols * t.nlevels for t in self.terms)

    @property
    def nslots(self) -> int:
        return sum(t.ncols for t in self.terms)

    @property
    def ntheta(self) -> int:
        return sum(len(theta_positions(TermSpec(t.nlevels, t.ncols, False, t.kind))[0]) for t in self.terms)

    @property
    def nparams(self) -> int:
        """Parameters of the outer fit: ``(theta, beta[, log dispersion])``; theta alone for ``nagq = 0``."""
        if self.nagq == 0:
            return self.ntheta
        return self.ntheta + self.nbeta + int(self.family.dispersion)

    @property
    def nmode(self) -> int:
        """Length of the inner mode: ``u``, or ``(u, beta)`` for ``nagq = 0`` (``joint.py``)."""
        return self.q + (self.nbeta if self.nagq == 0 else 0)

    @property
    def block_diagonal(self) -> bool:
        """One term: the Hessian in ``u`` is block diagonal by level (``s x s`` blocks)."""
        return len(self.terms) == 1

    @staticmethod
    def build(family: Family, terms: list[tuple[int, int, str]], nbeta: int, nagq: int = 1) -> "GlmmLayout":
        """``terms``: ``(ncols, nlevels, kind)`` per term in lme4's order."""
        out, slot, u, th = [], 0, 0, 0
        for ncols, nlevels, kind in terms:
            out.append(GlmmTerm(int(ncols), int(nlevels), str(kind), slot, u, th))
            slot, u = slot + ncols, u + ncols * nlevels
            th += len(theta_positions(TermSpec(nlevels, ncols, False, kind))[0])
        return GlmmLayout(family, tuple(out), int(nbeta), int(nagq))


class GlmmData(NamedTuple):
    """The rows of one response (a pytree of arrays).  ``w = 0`` marks a missing or padded row."""

    X: object        # (n, p)
    y: object        # (n,) response (binomial: the proportion of w trials)
    w: object        # (n,) prior weights (binomial: the trials)
    offset: object   # (n,)
    idx: object      # (n, S) int32: position in u of each slot's level
    z: object        # (n, S) the slot's covariate (1 for an intercept)


def gather(layout: "GlmmLayout", data: GlmmData, u):
    """``u[idx]`` (n, S): each row's effects of its levels, slot by slot."""
    return u[data.idx]


def scatter(layout: "GlmmLayout", data: GlmmData, v):
    """The sums by level of ``v`` (n, S): the vector ``J'``-like (q,) in ``u``'s order."""
    return jax.ops.segment_sum(v.ravel(), data.idx.ravel(), num_segments=layout.q)


def sum_by_level(layout: "GlmmLayout", data: GlmmData, values):
    """For one term: the sums of ``values`` (n, ...) over the rows of each level (levels, ...)."""
    term = layout.terms[0]
    return jax.ops.segment_sum(values, data.idx[:, 0] // term.ncols, num_segments=term.nlevels)


def by_level(layout: "GlmmLayout", data: GlmmData, values):
    """For one term: each row's entry of ``values`` (levels, ...) (n, ...)."""
    term = layout.terms[0]
    return values[data.idx[:, 0] // term.ncols]


def split(layout: GlmmLayout, x):
    """``(theta, beta, log_disp)`` from the parameter vector (``log_disp`` 0 without a dispersion)."""
    t, p = layout.ntheta, layout.nbeta
    log_disp = x[t + p] if layout.family.dispersion else jnp.zeros((), x.dtype)
    return x[:t], x[t:t + p], log_disp


def slot_coefficients(layout: GlmmLayout, theta, z):
    """``a`` (n, S): ``a_i = T_k' z_ik`` for every term (module docstring)."""
    parts = []
    for term in layout.terms:
        rows, cols = theta_positions(TermSpec(term.nlevels, term.ncols, False, term.kind))
        values = theta[term.theta_start:term.theta_start + len(rows)]
        T = jnp.zeros((term.ncols, term.ncols), theta.dtype).at[rows, cols].set(values)
        parts.append(z[:, term.slot:term.slot + term.ncols] @ T)
    return jnp.concatenate(parts, axis=1)


def slot_indices(layout: GlmmLayout, codes: list[np.ndarray]) -> np.ndarray:
    """``idx`` (n, S) from each term's level codes (0-based, per row)."""
    cols = []
    for term, code in zip(layout.terms, codes):
        base = term.u_start + np.asarray(code, np.int64) * term.ncols
        cols.extend(base + a for a in range(term.ncols))
    return np.stack(cols, axis=1).astype(np.int32)


def theta_lambdas(layout: GlmmLayout, theta) -> list[np.ndarray]:
    """Each term's ``T_k`` (NumPy): its random effects' covariance is ``T_k T_k'``."""
    out = []
    theta = np.asarray(theta, float)
    for term in layout.terms:
        rows, cols = theta_positions(TermSpec(term.nlevels, term.ncols, False, term.kind))
        T = np.zeros((term.ncols, term.ncols))
        T[rows, cols] = theta[term.theta_start:term.theta_start + len(rows)]
        out.append(T)
    return out
