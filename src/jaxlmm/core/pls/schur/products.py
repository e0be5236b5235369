"""Derivatives of ``ell = log|R_dd|`` for any lambdas, from one product ``X_a = P R_a`` per theta.

The fallback of ``schur_traces._ell_mixed`` when a large dense term's lambda is
near singular (a variance component near 0): nothing is inverted, at the cost
of a ``q_d^3`` product per theta of a large term (a strip product for a small one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import sparse
from .blocks import _block_indices, _class_sums, _lambda_quadratic, _symmetric_matrix
from .strips import _strip_product, _strip_terms
from .system import System, _sandwich, _scale


def _ell_products(theta, cp, sy: System, P, m_term, U_b: list, X_b: dict, order: int):
    """Derivatives of ``ell = log|R_dd|`` for any lambdas (one q_d^3 product per theta).

    ``d_a ell`` and ``<P, R_ab>`` are the derivatives of ``s(theta') = <P, R_dd(theta')>``,
    differentiated as a cheap function: ``<P, Lambda'^T X Lambda'>`` is a polynomial in the
    dense lambdas whose coefficients are ``_class_sums`` of ``P`` and a fixed ``X``; with
    ``delta = theta' - theta`` on the block term's parameters,

        s(theta') = <P, Lambda'^T Abar Lambda'> - <P, Lambda'^T (sum_b delta_b U_b) Lambda'>
                    + <P, Lambda^T (sum_b delta_b U_b) Lambda> - sum_j <M_j(theta'), Gamma_j(Lambda P Lambda^T)>

    equals ``<P, R_dd(theta')>`` up to a constant and to second order at theta (the U part of
    ``R_dd`` is linear in ``M`` and ``Lambda`` enters it twice).  ``tr(P R_a P R_b)`` comes
    from ``X_a = P R_a,dd`` (a strip of rows for a small dense term).
    """
    s = cp.structure
    pat = cp.Cdb.pattern
    qd = s.q_dense
    k = theta.shape[0]
    idx = _block_indices(s)
    zero = jnp.zeros((qd, qd), P.dtype)
    Ab_dd = sparse.add_targets(zero, sy.Abar_targets, pat)
    Ub = [sparse.add_targets(zero, c, pat) for c in U_b]
    pi_A = _class_sums(P, Ab_dd, s)
    pi_U = [_class_sums(P, u, s) for u in Ub]
    q_U = [_lambda_quadratic(sy.lams, p) for p in pi_U]

    def s_ell(th):
        lams = s.lambdas(th)
        out = _lambda_quadratic(lams, pi_A)
        for i, p, q in zip(idx, pi_U, q_U):
            out = out - (th[i] - theta[i]) * (_lambda_quadratic(lams, p) - q)
        return out - m_term(th)

    J = jax.grad(s_ell)(theta)
    if order == 1:
        return J, None
    H1 = jax.hessian(s_ell)(theta)

    eye = jnp.eye(k, dtype=P.dtype)
    strips = _strip_terms(s)
    X = []
    for i in range(k):
        if i in X_b:
            X.append(X_b[i])
            continue
        if i in strips:
            off, q = strips[i]
            N = jax.jvp(lambda th: _scale(Ab_dd, s.lambdas(th), s), (theta,), (eye[i],))[1][off:off + q]
            N = _scale(N.T, sy.lams, s).T                        # the term's rows of Lambda_a^T Abar Lambda
            X.append(_strip_product(P, N, off, q))
        else:
            R_i = jax.jvp(lambda th: _sandwich(Ab_dd, s.lambdas(th), s), (theta,), (eye[i],))[1]
            X.append(P @ R_i)
    tr = _symmetric_matrix([[jnp.sum(X[a] * X[b].T) for b in range(k)] for a in range(k)], k)
    return J, H1 - tr
