"""Derivatives of ``ell = log|R_dd|`` by trace identities, for well-conditioned large dense terms.

A dense term that is not small (``pls/schur/strips.py``) is *large*; when every large
term's ``lambda_t`` has its diagonal at least ``INVERSE_MIN`` in absolute value
(``_well_conditioned``), ``_ell_mixed`` differentiates ``ell`` through
``K_a = Lambda^{-1} dLambda/dtheta_a`` in ``O(q_d^2)`` work besides one product per
theta of the block term; otherwise ``schur_products._ell_products`` does, for any
lambda.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .blocks import _class_sums, _class_sums_targets, _dense_theta, _level_blocks, _symmetric_matrix
from .strips import _small_terms, _strip_derivatives
from .system import System

INVERSE_MIN = 1e-2  # smallest |diagonal of a large term's lambda_k| for which _ell_mixed is used


def _well_conditioned(lams, structure):
    """Whether ``_ell_mixed`` applies: every large dense term's lambda is well conditioned."""
    small = _small_terms(structure)
    diag = [jnp.abs(jnp.diagonal(lams[k])) for k in structure.dense_terms if k not in small]
    if not diag:
        return jnp.asarray(True)
    return jnp.min(jnp.concatenate(diag)) >= INVERSE_MIN


class _LargeTerms(NamedTuple):
    """The large dense terms ``t`` with ``lambda_t^{-1}`` and the level blocks ``P_l`` of ``P``
    on their rows, ``P[(l, r), (l, q)]`` as an (l_t, S_t, S_t) array."""

    terms: list
    inv: dict
    P_blocks: dict


def _large_terms(s, sy: System, P) -> _LargeTerms:
    small = _small_terms(s)
    large = [t for t in s.dense_terms if t not in small]
    offsets = dict(zip(s.dense_terms, s.dense_offsets))
    inv = {t: jnp.linalg.inv(sy.lams[t]) if s.terms[t].ncols > 1 else 1.0 / sy.lams[t] for t in large}
    P_blocks = {t: _level_blocks(P, s, t, offsets[t]) for t in large}
    return _LargeTerms(large, inv, P_blocks)


def _large_term_gradient(J, s, P, dense: dict, lt: _LargeTerms):
    """``J`` with ``d_a ell = <P, R_a> = 2 tr(Q K_a)`` set for every theta ``a`` of a large term:
    ``2 sum_{l, i} (lambda_t^{-1})[i, r] (I - P_l)[c, i]`` for the entry ``(r, c)`` of ``lambda_t``."""
    for a, (t, _, r, c) in dense.items():
        if t in lt.inv:
            Qd = jnp.eye(s.terms[t].ncols, dtype=P.dtype) - lt.P_blocks[t]
            J = J.at[a].set(2.0 * jnp.einsum("i,li->", lt.inv[t][:, r], Qd[:, c, :]))
    return J


def _large_pair_sums(P, s, sy: System, lt: _LargeTerms):
    """``pair(t, u) -> (pi(Q, Q), pi(M, P), pi(P, N))`` for large terms t, u, computed once per pair.

    ``pi(X, Y)[r, s, q, v] = sum_{l in t, m in u} X[(l, r), (m, q)] Y[(l, s), (m, v)]``, and
    ``N = R_dd - I``, ``Q = I - P``, ``M = N - Q``.  Off the diagonal blocks (t != u) these are
    ``-P``, ``R_dd`` and ``R_dd + P``; on them the identities add terms in ``D_t = sum_l P_l``
    and the number of levels ``l_t``.
    """
    D_sum = {t: jnp.sum(lt.P_blocks[t], axis=0) for t in lt.terms}
    pi_PP = _class_sums(P, P, s)
    if all(s.terms[t].ncols == 1 for t in s.dense_terms):
        pi_PR = _class_sums_targets(P, sy, s)        # R_dd = Lambda^T Abar Lambda + I, Abar zero off the targets
    else:
        pi_PR = _class_sums(P, sy.R_dd, s)

    def sums(t, u):
        S_t = s.terms[t].ncols
        e = jnp.eye(S_t, dtype=P.dtype)
        PP, PR = pi_PP[t, u], pi_PR[t, u]
        RP = jnp.transpose(PR, (1, 0, 3, 2))
        if t != u:
            return PP, RP + PP, PR
        D, l_t = D_sum[t], s.terms[t].nlevels
        ee = e[:, None, :, None] * e[None, :, None, :]
        eD = e[:, None, :, None] * D[None, :, None, :]
        De = D[:, None, :, None] * e[None, :, None, :]
        return PP + l_t * ee - eD - De, RP - 2.0 * eD + PP, PR - De                # QQ, MP, PN

    cache = {}

    def pair(t, u):
        if (t, u) not in cache:
            cache[t, u] = sums(t, u)
            cache[u, t] = sums(u, t)
        return cache[t, u]

    return pair


def _large_explicit_pair(i, X_j, s, P, dense: dict, lt: _LargeTerms, with_cross: bool):
    """For theta ``i`` of a large term and ``X_j = P R_j`` at hand: ``tr(P R_i X_j) =
    2 tr(K_i^T Q X_j^T)``, and with ``with_cross`` (``j`` of the block term)
    ``<P, R_ij> = 2 tr(K_i^T X_j^T)``, else None."""
    qd = s.q_dense
    t, off, r, c = dense[i]
    Xd = _level_blocks(X_j, s, t, off)                                              # X_j[(l, q), (l, i)]
    Sq = s.terms[t].ncols
    if Sq == 1:
        PX = jnp.sum(P * X_j, axis=1)[off:off + s.terms[t].q].reshape(-1, 1, 1)
    else:
        q = s.terms[t].q
        PX = jnp.einsum("lik,ljk->lij", P[off:off + q].reshape(-1, Sq, qd), X_j[off:off + q].reshape(-1, Sq, qd))
    E = jnp.swapaxes(Xd, 1, 2) - PX                                                 # E[l, i, q]
    Li = lt.inv[t][:, r]
    trace = 2.0 * jnp.einsum("i,li->", Li, E[:, :, c])
    cross = 2.0 * jnp.einsum("i,li->", Li, Xd[:, c, :]) if with_cross else None
    return trace, cross


def _large_large_pair(a, b, dense: dict, lt: _LargeTerms, pair):
    """For theta ``a``, ``b`` of large terms: ``tr(P R_a P R_b) = 2 tr(Q K_a Q K_b) +
    tr(M K_a P K_b^T) + tr(M K_b P K_a^T)`` and ``<P, R_ab> = 2 tr(P K_a^T N K_b)``."""
    t, _, ra, ca = dense[a]
    u, _, rb, cb = dense[b]
    QQ, MP, PN = pair(t, u)
    MP_ut = pair(u, t)[1]
    La, Lb = lt.inv[t][:, ra], lt.inv[u][:, rb]
    f_QQ = jnp.einsum("i,j,ij->", La, Lb, QQ[:, ca, cb, :])
    fT_ab = jnp.einsum("i,j,ij->", La, Lb, MP[:, ca, :, cb])
    fT_ba = jnp.einsum("j,i,ji->", Lb, La, MP_ut[:, cb, :, ca])
    return 2.0 * f_QQ + fT_ab + fT_ba, 2.0 * jnp.einsum("i,j,ij->", La, Lb, PN[ca, :, cb, :])


def _pair_traces(k, s, P, X_all: dict, rows_done: set, dense: dict, lt: _LargeTerms, pair, H1):
    """``tr(P R_a P R_b)`` for every pair of theta (nested lists), and ``H1`` with the
    ``<P, R_ab>`` that the large terms' identities give (the rows in ``rows_done`` are final).

    ``X_all``: ``X_a = P R_a`` for the theta of the block term and of the small terms.
    """
    tr = [[None] * k for _ in range(k)]
    for a in range(k):
        for b in range(a + 1):
            if a in X_all and b in X_all:
                tr[a][b] = tr[b][a] = jnp.sum(X_all[a] * X_all[b].T)
            elif a in X_all or b in X_all:
                i, j = (a, b) if b in X_all else (b, a)                          # i of a large term, j explicit
                tr[a][b], h = _large_explicit_pair(i, X_all[j], s, P, dense, lt, j not in rows_done)
                tr[b][a] = tr[a][b]
                if h is not None:                                                # j of the block term
                    H1 = H1.at[i, j].set(h).at[j, i].set(h)
            else:
                tr[a][b], h = _large_large_pair(a, b, dense, lt, pair)
                tr[b][a] = tr[a][b]
                H1 = H1.at[a, b].set(h).at[b, a].set(h)
    return tr, H1


def _ell_mixed(theta, s, sy: System, P, m_term, X_b: dict, U_b: dict, order: int):
    """Derivatives of ``ell = log|R_dd|`` in O(q_d^2), apart from one product per block theta.

    Large dense terms (well-conditioned lambda): with ``K_a = Lambda^{-1} dLambda/dtheta_a``
    (block-diagonal), ``N = R_dd - I``, ``Q = I - P = N P`` and ``M = N - Q``,
    ``R_a = K_a^T N + N K_a``, ``R_ab = K_a^T N K_b + K_b^T N K_a`` (a, b of such terms) and
    ``R_ab = K_a^T R_b + R_b K_a`` (b of the block term, ``X_b = P R_b``), hence

        <P, R_a>        = 2 tr(Q K_a)                   <P, R_ab> = 2 tr(P K_a^T N K_b)  or  2 tr(K_a^T X_b^T)
        tr(P R_a P R_b) = 2 tr(Q K_a Q K_b) + tr(M K_a P K_b^T) + tr(M K_b P K_a^T)
        tr(P R_a X_b)   = 2 tr(K_a^T Q X_b^T)          (any b with X_b = P R_b at hand)

    and every trace with a block-diagonal ``K`` is a sum over the terms' level blocks
    (``_class_sums``).  Small dense terms (any lambda, zero included) work with their strip of
    rows (``pls/schur/strips.py``): ``X_a = P R_a`` costs a strip product, and ``<P, R_a(theta')>``
    is a cheap function of theta' whose gradient gives their row of ``<P, R_ab>``.  The block
    term's own ``<P, R_b>``, ``<P, R_bc>`` are derivatives of
    ``-sum_j <M_j(theta), Gamma_j(Lambda P Lambda^T)>`` (``m_term``).  The Hessian is
    ``d_ab ell = <P, R_ab> - tr(P R_a P R_b)``.
    """
    k = theta.shape[0]
    dense = _dense_theta(s)
    lt = _large_terms(s, sy, P)
    J = _large_term_gradient(-jax.grad(m_term)(theta), s, P, dense, lt)
    strip_fun, X_s = _strip_derivatives(theta, s, sy, P, U_b, dense, order)
    for a, g in strip_fun.items():
        J = J.at[a].set(g(theta))
    if order == 1:
        return J, None

    H1 = -jax.hessian(m_term)(theta)
    for a, g in strip_fun.items():                                               # their rows and columns
        row = jax.grad(g)(theta)
        H1 = H1.at[a, :].set(row).at[:, a].set(row)
    pair = _large_pair_sums(P, s, sy, lt)
    tr, H1 = _pair_traces(k, s, P, {**X_b, **X_s}, set(strip_fun), dense, lt, pair, H1)
    return J, H1 - _symmetric_matrix(tr, k)
