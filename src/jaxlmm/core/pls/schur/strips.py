"""Small dense terms: derivatives of ``log|R_dd|`` from their strips of rows of ``R_dd``.

A dense term with at most ``STRIP_FRACTION`` of the ``q_d`` dense columns is
*small*.  For theta ``a`` of such a term ``t`` only ``t``'s rows of
``Lambda^T Abar Lambda`` depend on ``lambda_t`` through ``dLambda_a``:

    R_a = N_a + N_a^T,    N_a = dLambda_a^T Abar Lambda   (nonzero in t's rows only),

so ``X_a = P R_a`` costs a product with a strip of ``q_t`` rows, and
``<P, R_a(theta')> = 2 <P[t's rows], N_a(theta')>`` is a cheap function of theta'
whose gradient is the row ``<P, R_ab>`` of the Hessian.  Nothing is inverted:
any ``lambda_t``, zero included, will do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import sparse
from .system import _scale

STRIP_FRACTION = 0.25  # a dense term with at most this share of q_d columns: X_a from a strip


def _small_terms(structure) -> list:
    """Dense terms with at most ``STRIP_FRACTION`` of the dense columns (handled by strips of rows)."""
    return [k for k in structure.dense_terms if structure.terms[k].q <= STRIP_FRACTION * structure.q_dense]


def _strip_terms(structure) -> dict:
    """theta index -> (row offset, rows) of the dense term it belongs to, where that term is small."""
    out = {}
    qd = structure.q_dense
    for k, off in zip(structure.dense_terms, structure.dense_offsets):
        t = structure.terms[k]
        if t.q <= STRIP_FRACTION * qd:
            for i in range(structure.theta_offsets[k], structure.theta_offsets[k] + t.ntheta):
                out[i] = (off, t.q)
    return out


def _strip_product(P, N, off, q):
    """``P R_a`` for ``R_a = N + N^T`` where ``N`` is the strip of ``q`` rows from ``off`` (zero
    elsewhere): ``P[:, rows] N``, plus ``P N^T`` in the rows' columns."""
    Xa = P[:, off:off + q] @ N
    return Xa.at[:, off:off + q].add(P @ N.T)


def _times_lambda(X, lams, s):
    """``X Lambda`` for rows ``X`` over the dense columns."""
    return _scale(X.T, lams, s).T


def _lambda_derivative_t_times(X, s, th, t, tangent):
    """``(dLambda/dtheta . tangent)^T X`` on dense term ``t``'s strip of rows ``X`` (q_t, m)."""
    T = s.terms[t]
    return jax.jvp(lambda tt: jnp.einsum("ls...,sr->lr...", X.reshape(T.nlevels, T.ncols, -1),
                                         s.lambdas(tt)[t]).reshape(X.shape), (th,), (tangent,))[1]


def _strip_derivatives(theta, s, sy, P, U_b: dict, dense: dict, order: int):
    """For each theta ``a`` of a small dense term: ``g_a(theta') = <P, R_a(theta')>`` and, with
    ``order=2``, ``X_a = P R_a`` at theta (module docstring).

    ``R_a(theta') = N_a + N_a^T`` with ``N_a = dLambda_a(theta')^T Abar(theta') Lambda(theta')`` on
    the term's rows, where ``Abar``'s dependence on the block term's theta ``b`` is linearized:
    ``Abar(theta') = Abar - sum_b (theta'_b - theta_b) U_b`` (``U_b``: the derivative of ``U_dd``
    at the targets), exact to the second order that the Hessian needs.

    Returns ``({a: g_a}, {a: X_a})`` (the second empty unless ``order == 2``).
    """
    qd = s.q_dense
    pat = sy.pattern
    eye = jnp.eye(theta.shape[0], dtype=P.dtype)
    offsets = dict(zip(s.dense_terms, s.dense_offsets))
    strip_fun, X_s = {}, {}
    for t in _small_terms(s):
        off, q = offsets[t], s.terms[t].q
        A_t = sparse.target_rows(sy.Abar_targets, pat, off, q, qd)                   # Abar[rows, :]
        U_t = {b: sparse.target_rows(c, pat, off, q, qd) for b, c in U_b.items()}
        P_t = P[off:off + q]
        for a in [i for i, v in dense.items() if v[0] == t]:
            def g(th, a=a, t=t, A_t=A_t, U_t=U_t, P_t=P_t):
                X = A_t - sum((th[b] - theta[b]) * U for b, U in U_t.items()) if U_t else A_t
                return 2.0 * jnp.sum(P_t * _times_lambda(_lambda_derivative_t_times(X, s, th, t, eye[a]),
                                                         s.lambdas(th), s))
            strip_fun[a] = g
            if order == 2:
                N = _times_lambda(_lambda_derivative_t_times(A_t, s, theta, t, eye[a]), sy.lams, s)
                X_s[a] = _strip_product(P, N, off, q)
    return strip_fun, X_s
