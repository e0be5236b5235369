"""The dense part of the sparse path, with exact derivatives that avoid differentiating a Cholesky.

After the block term is eliminated (``pls/sparse.py``), the dense part of the
penalized system is, with ``Abar = A - U(theta_b)`` (``A`` the cross-products
of ``[Z_d X y]``, ``U`` the block term's Schur update),

    R(theta) = [ Lambda^T Abar_dd Lambda + I    Lambda^T Abar_dx ]   =  [ R_dd  R_dx ]
               [ Abar_xd Lambda                 Abar_xx          ]      [ R_xd  R_xx ]

(``Lambda`` block-diagonal with the dense terms' ``lambda_k``).  The criterion
needs ``ell = log|R_dd|`` and the ``(p+1) x (p+1)`` Schur complement
``S = R_xx - R_xd R_dd^{-1} R_dx`` (``log|R_X|^2`` and the PWRSS are its
Cholesky factor's diagonal).  ``dense_parts(theta, cp) = (ell, S)`` computes
them from one Cholesky factor of ``R_dd`` and carries its own first and second
derivatives.  With ``P = R_dd^{-1}``, ``R_a = dR/dtheta_a``, ``G = P R_dx``,
``Ghat = [-G; I]`` and ``F_a = (R_a Ghat)_d``:

    d_a ell   = <P, R_a,dd>
    d_ab ell  = <P, R_ab,dd> - tr(P R_a,dd P R_b,dd)
    d_a S     = Ghat^T R_a Ghat
    d_ab S    = Ghat^T R_ab Ghat - F_a^T P F_b - F_b^T P F_a.

(The last two: ``S = Ghat^T R Ghat`` at the minimizing ``G``, so ``G``'s own
derivative drops out once and appears once in the second derivative.)

The value comes from one Cholesky factor of ``R_dd`` (``schur_system._primal``;
only its lower triangle is filled).  Autodiff through a q_d x q_d Cholesky would cost
several q_d^3 triangular solves per tangent and per pass; here the
derivatives need ``P`` (``inverse_logdet``: block elimination in matrix
products), one product ``X_b = P R_b,dd`` per theta of the block term, and
O(q_d^2) or O(number of pairs) work besides:

- ``d S`` and ``d^2 S``: ``Ghat^T R(theta') Ghat`` and ``(R(theta') Ghat)_d``
  are matrix-vector products, differentiated directly (``pls/schur/complement.py``).
- The block term enters ``<P, R_dd(theta')>`` as
  ``-sum_j <M_j(theta'), Gamma_j(Lambda P Lambda^T)>`` (``sparse.gamma``), a
  cheap function of theta.
- The dense terms' theta (``schur_traces._ell_mixed``): for a large term whose ``lambda_k``
  is well conditioned, ``dR/dtheta_a = K_a^T N + N K_a`` with ``N = R_dd - I``
  and the block-diagonal ``K_a = Lambda^{-1} dLambda/dtheta_a``, and ``P N = I - P``
  turns every trace into sums over the terms' level blocks of ``P``, ``P * P``,
  ``P * R_dd`` and ``P * X_b``; a small term (any lambda) works on its strip of
  rows of ``R_dd`` (``pls/schur/strips.py``).
- Otherwise (a large term's variance component near 0,
  ``schur_products._ell_products``) ``<P, R_dd(theta')>`` is differentiated
  through a function that matches it to second order, and
  ``tr(P R_a P R_b)`` comes from ``X_a = P R_a,dd`` for every theta (a strip of
  rows for a small term): slower, for any lambda.

``dense_parts`` is a ``custom_jvp`` whose rule calls ``_dense_parts_jac``
(value and first derivatives), itself a ``custom_jvp`` whose rule returns the
second derivatives: reverse mode, forward-over-reverse Hessians (the optimizer,
Satterthwaite) and forward-over-forward all see these formulas.  Third
derivatives go through plain autodiff of the second-derivative code (correct,
slow).  Derivatives with respect to the cross-products are not implemented.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from .. import sparse
from ..data import CrossProducts
from .blocks import _block_indices
from .complement import _s_at_fixed_g
from .products import _ell_products
# System, block_weights, system, cholesky, _factor and inverse_logdet are used as schur.* by
# pls/criterion.py and pls/solve.py.
from .system import (System, _dense_update, _factor, _primal, _sandwich, _scalar_diagonal,  # noqa: F401
                           _scaled_targets, block_weights, cholesky, inverse_logdet, system)
from .traces import _ell_mixed, _well_conditioned


def _derivatives(theta, cp: CrossProducts, order: int):
    """``(ell, S)``, their Jacobians and, with ``order=2``, their Hessians in theta."""
    s = cp.structure
    lb = s.terms[s.block_term].nlevels
    pat = cp.Cdb.pattern
    k = theta.shape[0]
    dtype = theta.dtype
    eye = jnp.eye(k, dtype=dtype)
    idx = _block_indices(s)

    # the Schur update and its derivatives in the block term's theta (linear in M), one pass
    def M_of(th):
        return block_weights(th, cp)[1]
    M = M_of(theta)
    dMs = [jax.jvp(M_of, (theta,), (eye[i],))[1] for i in idx] if order == 2 else []
    cs = sparse.pair_sums([M] + dMs, cp.Cdb)
    sy = system(theta, cp, U_targets=cs[0])
    P, ell = inverse_logdet(sy.R_dd)
    G = P @ sy.R_xd.T                                                            # P R_dx
    S = sy.Ab_xx - sy.R_xd @ G
    S = 0.5 * (S + S.T)
    p1 = G.shape[1]
    Ghat = jnp.concatenate([-G, jnp.eye(p1, dtype=dtype)], axis=0)

    # d S: Ghat^T R_a Ghat, and the second derivatives (module docstring)
    s_S = _s_at_fixed_g(theta, cp, Ghat)
    J_S = jax.jacfwd(lambda th: s_S(th)[0])(theta)                               # (p1, p1, k)

    # Gamma_j(Lambda P Lambda^T): the block term's part of <P, R(theta')>
    if _scalar_diagonal(sy.lams, s) is not None:
        K_t = _scaled_targets(sparse.at_targets(P, pat), sy.lams, s, pat)
    else:
        K_t = sparse.at_targets(_sandwich(P, sy.lams, s, transpose=True), pat)
    Gam = sparse.gamma(K_t, cp.Cdb, lb)

    def m_term(th):
        Mt = M_of(th)
        return sum(jnp.sum(Mt[a][c] * Gam[a][c]) for a in range(len(Mt)) for c in range(len(Mt)))

    ok = _well_conditioned(sy.lams, s)
    if order == 1:
        J_ell = jax.lax.cond(ok, lambda: _ell_mixed(theta, s, sy, P, m_term, {}, {}, 1)[0],
                             lambda: _ell_products(theta, cp, sy, P, m_term, [], {}, 1)[0])
        return (ell, S), (J_ell, J_S), None

    H_S = jax.jacfwd(jax.jacfwd(lambda th: s_S(th)[0]))(theta)                   # (p1, p1, k, k)
    F = jax.jacfwd(lambda th: s_S(th)[1])(theta)                                 # (q_d, p1, k)
    PF = jnp.einsum("cd,dpk->cpk", P, F)
    FPF = jnp.einsum("cpa,cqb->pqab", F, PF)
    H_S = H_S - FPF - jnp.transpose(FPF, (0, 1, 3, 2))

    X_b = {i: -P @ _dense_update(c, sy.lams, s, pat) for i, c in zip(idx, cs[1:])}   # P R_b
    U_b = dict(zip(idx, cs[1:]))
    J_ell, H_ell = jax.lax.cond(ok, lambda: _ell_mixed(theta, s, sy, P, m_term, X_b, U_b, 2),
                                lambda: _ell_products(theta, cp, sy, P, m_term, list(cs[1:]), X_b, 2))
    return (ell, S), (J_ell, J_S), (H_ell, H_S)


# ------------------------------------------------------------ custom derivatives
def _check_zero(tangent_cp) -> None:
    for leaf in jax.tree_util.tree_leaves(tangent_cp, is_leaf=lambda x: isinstance(x, SymbolicZero)):
        if not isinstance(leaf, SymbolicZero):
            raise NotImplementedError("the sparse path's deviance is differentiable in theta only, "
                                      "not in the cross-products")


def _apply(jac, dtheta):
    J_ell, J_S = jac
    return J_ell @ dtheta, J_S @ dtheta


@jax.custom_jvp
def dense_parts(theta, cp: CrossProducts):
    """``(log|R_dd|, S)`` at theta (module docstring); exact first and second derivatives in theta."""
    return _primal(theta, cp)


@jax.custom_jvp
def _dense_parts_jac(theta, cp: CrossProducts):
    value, jac, _ = _derivatives(theta, cp, order=1)
    return value, jac


def _zero_like(tree):
    return jax.tree_util.tree_map(jnp.zeros_like, tree)


def _dense_parts_rule(primals, tangents):
    theta, cp = primals
    dtheta, dcp = tangents
    _check_zero(dcp)
    value, jac = _dense_parts_jac(theta, cp)
    if isinstance(dtheta, SymbolicZero):
        return value, _zero_like(value)
    return value, _apply(jac, dtheta)


def _dense_parts_jac_rule(primals, tangents):
    theta, cp = primals
    dtheta, dcp = tangents
    _check_zero(dcp)
    value, jac, hess = _derivatives(theta, cp, order=2)
    out = (value, jac)
    if isinstance(dtheta, SymbolicZero):
        return out, _zero_like(out)
    H_ell, H_S = hess
    return out, (_apply(jac, dtheta), (H_ell @ dtheta, H_S @ dtheta))


dense_parts.defjvp(_dense_parts_rule, symbolic_zeros=True)
_dense_parts_jac.defjvp(_dense_parts_jac_rule, symbolic_zeros=True)
