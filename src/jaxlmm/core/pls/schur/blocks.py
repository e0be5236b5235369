"""The dense terms' parameters and sums over their level blocks, for the derivatives of ``log|R_dd|``.

Dense term ``t`` (``l_t`` levels, ``S_t`` columns) occupies rows ``(l, r)`` of
``R_dd`` (level ``l``, column ``r``).  ``Lambda`` repeats ``lambda_t`` on each
level, so a trace against ``Lambda^T X Lambda`` needs only the sums of
``P[(l, r), (m, q)] X[(l, s), (m, v)]`` over the levels of two terms: a
``S_t x S_t x S_u x S_u`` array per pair of terms (``_class_sums``).
"""

from __future__ import annotations

import jax.numpy as jnp

from .. import sparse
from .system import _scaled_targets
from ...params.structure import theta_positions


def _block_indices(structure):
    """theta indices of the block term's ``lambda_b``."""
    off = structure.theta_offsets[structure.block_term]
    return list(range(off, off + structure.terms[structure.block_term].ntheta))


def _dense_theta(structure) -> dict:
    """theta index of a dense term -> (term, row offset in R_dd, row, column) of its entry of lambda."""
    out = {}
    for k, off in zip(structure.dense_terms, structure.dense_offsets):
        rows, cols = theta_positions(structure.terms[k])
        for a, (r, c) in enumerate(zip(rows, cols)):
            out[structure.theta_offsets[k] + a] = (k, off, int(r), int(c))
    return out


def _class_sums(P, X, structure) -> dict:
    """Per pair of dense terms (t, u): ``pi[r, s, q, v] = sum_{l in t, m in u} P[(l,r),(m,q)] X[(l,s),(m,v)]``.

    Then ``<P, Lambda^T X Lambda> = sum_{t,u} lambda_t[s, r] lambda_u[v, q] pi_tu[r, s, q, v]``.
    """
    terms = structure.dense_terms
    if all(structure.terms[t].ncols == 1 for t in terms):                 # block sums of P * X
        group = jnp.concatenate([jnp.full((structure.terms[t].nlevels,), i) for i, t in enumerate(terms)])
        O = (group[:, None] == jnp.arange(len(terms))[None, :]).astype(P.dtype)
        B = O.T @ ((P * X) @ O)
        return {(t, u): B[i, j].reshape(1, 1, 1, 1) for i, t in enumerate(terms) for j, u in enumerate(terms)}
    out = {}
    for t, ot in zip(terms, structure.dense_offsets):
        Tt = structure.terms[t]
        for u, ou in zip(terms, structure.dense_offsets):
            Tu = structure.terms[u]
            shape = (Tt.nlevels, Tt.ncols, Tu.nlevels, Tu.ncols)
            Pb = P[ot:ot + Tt.q, ou:ou + Tu.q].reshape(shape)
            Xb = X[ot:ot + Tt.q, ou:ou + Tu.q].reshape(shape)
            out[t, u] = jnp.einsum("arbq,asbv->rsqv", Pb, Xb)
    return out


def _class_sums_targets(P, sy, s) -> dict:
    """``_class_sums(P, R_dd)`` for scalar dense terms from the targets: ``R_dd = D Abar D + I``
    with ``Abar`` zero off the targets (``System.Abar_targets``)."""
    pat = sy.pattern
    B = sparse.term_sums(sparse.at_targets(P, pat) * _scaled_targets(sy.Abar_targets, sy.lams, s, pat), pat, s)
    terms = s.dense_terms
    diag = jnp.diagonal(P)
    out = {}
    for i, t in enumerate(terms):
        off, q = s.dense_offsets[i], s.terms[t].q
        for j, u in enumerate(terms):
            v = B[i, j] + (jnp.sum(diag[off:off + q]) if i == j else 0.0)
            out[t, u] = v.reshape(1, 1, 1, 1)
    return out


def _lambda_quadratic(lams, pi: dict):
    """``<P, Lambda^T X Lambda> = sum_{t,u} lambda_t[s, r] lambda_u[v, q] pi_tu[r, s, q, v]`` from
    ``pi = _class_sums(P, X)``: a polynomial of degree 2 in the dense terms' lambdas."""
    return sum(jnp.einsum("sr,vq,rsqv->", lams[t], lams[u], p) for (t, u), p in pi.items())


def _level_blocks(A, structure, t, off):
    """The level blocks ``A[(l, r), (l, q)]`` of dense term t: (l_t, S_t, S_t)."""
    T = structure.terms[t]
    S = T.ncols
    base = off + jnp.arange(T.nlevels)[:, None, None] * S
    rows = base + jnp.arange(S)[None, :, None]
    cols = base + jnp.arange(S)[None, None, :]
    return A[rows, cols]


def _symmetric_matrix(tr, k):
    """The symmetric part of the k x k matrix given as nested lists of scalars ``tr[a][b]``."""
    T = jnp.stack([jnp.stack([tr[a][b] for b in range(k)]) for a in range(k)])
    return 0.5 * (T + T.T)
