"""The dense part of the sparse path, with exact derivatives that avoid differentiating a Cholesky.

After the block term is eliminated (``sparse.py``), the dense part of the
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

The value comes from one Cholesky factor of ``R_dd`` (``_primal``; only its
lower triangle is filled).  Autodiff through a q_d x q_d Cholesky would cost
several q_d^3 triangular solves per tangent and per pass; here the
derivatives need ``P`` (``inverse_logdet``: block elimination in matrix
products), one product ``X_b = P R_b,dd`` per theta of the block term, and
O(q_d^2) or O(number of pairs) work besides:

- ``d S`` and ``d^2 S``: ``Ghat^T R(theta') Ghat`` and ``(R(theta') Ghat)_d``
  are matrix-vector products, differentiated directly (``_s_of``).
- The block term enters ``<P, R_dd(theta')>`` as
  ``-sum_j <M_j(theta'), Gamma_j(Lambda P Lambda^T)>`` (``sparse.gamma``), a
  cheap function of theta.
- The dense terms' theta (``_ell_mixed``): for a large term whose ``lambda_k``
  is well conditioned, ``dR/dtheta_a = K_a^T N + N K_a`` with ``N = R_dd - I``
  and the block-diagonal ``K_a = Lambda^{-1} dLambda/dtheta_a``, and ``P N = I - P``
  turns every trace into sums over the terms' level blocks of ``P``, ``P * P``,
  ``P * R_dd`` and ``P * X_b``; a small term (any lambda) works on its strip of
  rows of ``R_dd``.
- Otherwise (a large term's variance component near 0, ``_ell_products``) ``<P, R_dd(theta')>``
  is differentiated through a function that matches it to second order, and
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

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from . import linalg, smallmat, sparse
from .data import CrossProducts


class System(NamedTuple):
    lams: list
    L: list              # block-term factors L_j (nested list of (l_b,))
    M: list              # M_j = lambda_b (L_j L_j^T)^{-1} lambda_b^T
    U_targets: jnp.ndarray  # U_dd at the targets (sparse.pair_sums)
    Abar_targets: jnp.ndarray  # Z_d^T W Z_d - U_dd at the targets (it is zero elsewhere)
    pattern: object
    R_dd: jnp.ndarray
    R_xd: jnp.ndarray
    Ab_xx: jnp.ndarray   # [X y]^T W [X y] - U_xx


def _scale(A, lams, structure, transpose: bool = False):
    """``Lambda^T A`` (or ``Lambda A`` with ``transpose``) on the dense rows of ``A``."""
    from .deviance import scale_dense_rows

    return scale_dense_rows(A, [l.T for l in lams] if transpose else lams, structure)


def _scalar_diagonal(lams, structure):
    """Diagonal of ``Lambda`` when every dense term is scalar, else None."""
    if any(structure.terms[k].ncols > 1 for k in structure.dense_terms):
        return None
    return jnp.concatenate([jnp.broadcast_to(lams[k][0, 0], (structure.terms[k].nlevels,))
                            for k in structure.dense_terms])


def _sandwich(X, lams, structure, transpose: bool = False):
    """``Lambda^T X Lambda`` (or ``Lambda X Lambda^T``) for a symmetric q_d x q_d ``X``."""
    d = _scalar_diagonal(lams, structure)
    if d is not None:
        return d[:, None] * X * d[None, :]
    return _scale(_scale(X, lams, structure, transpose).T, lams, structure, transpose)


def _scaled_targets(values, lams, structure, pattern):
    """``Lambda^T U Lambda`` at the targets for scalar dense terms: ``d_row d_col U``."""
    d = _scalar_diagonal(lams, structure)
    return values * d[pattern.target_row] * d[pattern.target_col]


def _dense_update(values, lams, structure, pattern):
    """``Lambda^T U Lambda`` as a dense matrix from ``U`` at the targets."""
    qd = structure.q_dense
    zero = jnp.zeros((qd, qd), values.dtype)
    if _scalar_diagonal(lams, structure) is not None:
        return sparse.add_targets(zero, _scaled_targets(values, lams, structure, pattern), pattern)
    return _sandwich(sparse.add_targets(zero, values, pattern), lams, structure)


def block_weights(theta, cp: CrossProducts):
    s = cp.structure
    lam_b = s.lambdas(theta)[s.block_term]
    L = smallmat.cholesky(smallmat.congruence(lam_b, smallmat.split(cp.Dbb)))
    return L, sparse.level_weights(lam_b, L)


def system(theta, cp: CrossProducts, full: bool = False, U_targets=None) -> System:
    """``R(theta)`` from the sparse cross-products (module docstring).

    Unless ``full``, only the lower triangle of ``R_dd`` is filled when every dense term is scalar
    (all that a Cholesky factor, ``inverse_logdet`` and ``_ell_mixed`` read).  ``U_targets``:
    ``sparse.pair_sums`` at theta, if already computed.
    """
    s = cp.structure
    qd = s.q_dense
    pat = cp.Cdb.pattern
    lams = s.lambdas(theta)
    L, M = block_weights(theta, cp)
    c = sparse.pair_sums(M, cp.Cdb) if U_targets is None else U_targets
    U_xd, U_xx = sparse.cross_update(M, cp.Cdb, cp.Cxb, qd)
    d = _scalar_diagonal(lams, s)
    eye = jnp.eye(qd, dtype=c.dtype)
    if d is not None:             # Z_d^T W Z_d and U are zero off the targets: R_dd = I there
        R_dd = sparse.add_targets(eye, _scaled_targets(cp.Cdb.add_values - c, lams, s, pat), pat, upper=full)
    else:
        R_dd = _sandwich(cp.Add - sparse.add_targets(jnp.zeros_like(cp.Add), c, pat), lams, s) + eye
    R_xd = _scale((cp.Axd - U_xd).T, lams, s).T
    return System(lams, L, M, c, cp.Cdb.add_values - c, pat, R_dd, R_xd, cp.Axx - U_xx)


def cholesky(R):
    """``linalg.cholesky`` of a matrix symmetric by construction, without symmetrizing it first
    (``jnp.linalg.cholesky`` does, in a transposing pass as costly as the rest of the update)."""
    if R.shape[-1] <= linalg.RECURSIVE_MAX:
        return linalg.cholesky(R)
    return jax.lax.linalg.cholesky(R, symmetrize_input=False)                   # its lower triangle


def _factor(sy: System):
    """Cholesky factor of R_dd, ``ell``, ``W = L_dd^{-1} R_dx`` and ``S``."""
    L = cholesky(sy.R_dd)
    ell = 2.0 * jnp.sum(jnp.log(linalg.diag(L)))
    Wx = linalg.solve_lower(L, sy.R_xd.T)
    S = sy.Ab_xx - Wx.T @ Wx
    return L, ell, Wx, 0.5 * (S + S.T)


def inverse_logdet(R):
    """``(R^{-1}, log|R|)`` of a symmetric positive-definite ``R`` by block elimination.

    ``R = [[A, B^T], [B, C]]``: with ``Y = B A^{-1}`` and the Schur complement
    ``Sc = C - Y B^T``, ``R^{-1} = [[A^{-1} + Y^T Sc^{-1} Y, -(Sc^{-1} Y)^T], [-Sc^{-1} Y, Sc^{-1}]]``
    and ``log|R| = log|A| + log|Sc|``, recursively down to blocks of ``linalg.RECURSIVE_MAX``
    (factored by ``linalg``, no LAPACK).  About ``4/3 n^3`` flops in matrix products,
    against ``n^3 / 3`` for a Cholesky factor plus ``n^3`` for its inverse and ``n^3`` for
    ``L^{-T} L^{-1}`` in triangular solves and products.  Only the lower triangle of ``R``
    is read.
    """
    n = R.shape[0]
    if n <= linalg.RECURSIVE_MAX:
        L = linalg.cholesky(R)
        Li = linalg.inverse_lower(L)
        return Li.T @ Li, 2.0 * jnp.sum(jnp.log(linalg.diag(L)))
    n1 = n // 2
    A, B, C = R[:n1, :n1], R[n1:, :n1], R[n1:, n1:]
    Ai, ld1 = inverse_logdet(A)
    Y = B @ Ai
    Sc = C - Y @ B.T
    Si, ld2 = inverse_logdet(Sc)
    Z = Si @ Y
    P11 = Ai + Y.T @ Z
    return jnp.block([[0.5 * (P11 + P11.T), -Z.T], [-Z, Si]]), ld1 + ld2


def _primal(theta, cp):
    """``(ell, S)`` from one Cholesky factor of the whole lower triangle of ``R`` (Q x Q):
    its leading block gives ``ell``, its trailing ``(p+1) x (p+1)`` block is ``chol(S)``."""
    s = cp.structure
    qd = s.q_dense
    lams = s.lambdas(theta)
    if _scalar_diagonal(lams, s) is None:
        _, ell, _, S = _factor(system(theta, cp))
        return ell, S
    pat = cp.Cdb.pattern
    _, M = block_weights(theta, cp)
    c = sparse.pair_sums(M, cp.Cdb)
    U_xd, U_xx = sparse.cross_update(M, cp.Cdb, cp.Cxb, qd)
    R_xd = _scale((cp.Axd - U_xd).T, lams, s).T
    Q = qd + R_xd.shape[0]
    base = jnp.eye(Q, dtype=c.dtype).at[qd:, :qd].set(R_xd).at[qd:, qd:].set(cp.Axx - U_xx)
    R = sparse.add_targets(base, _scaled_targets(cp.Cdb.add_values - c, lams, s, pat), pat, upper=False)
    L = cholesky(R)
    ell = 2.0 * jnp.sum(jnp.log(linalg.diag(L)[:qd]))
    LS = L[qd:, qd:]
    return ell, LS @ LS.T


# ------------------------------------------------------------ the derivatives
def _block_indices(structure):
    off = structure.theta_offsets[structure.block_term]
    return list(range(off, off + structure.terms[structure.block_term].ntheta))


def _dense_theta(structure) -> dict:
    """theta index of a dense term -> (term, offset, row, column) of its entry of lambda."""
    from .structure import _lower_triangle_indices

    out = {}
    for k, off in zip(structure.dense_terms, structure.dense_offsets):
        rows, cols = _lower_triangle_indices(structure.terms[k].ncols)
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


def _quad(lams, pi: dict):
    return sum(jnp.einsum("sr,vq,rsqv->", lams[t], lams[u], p) for (t, u), p in pi.items())


def _diag_blocks(A, structure, t, off):
    """The level blocks ``A[(l, r), (l, q)]`` of dense term t: (l_t, S_t, S_t)."""
    T = structure.terms[t]
    S = T.ncols
    base = off + jnp.arange(T.nlevels)[:, None, None] * S
    rows = base + jnp.arange(S)[None, :, None]
    cols = base + jnp.arange(S)[None, None, :]
    return A[rows, cols]


def _s_of(theta, cp, Ghat):
    """``theta' -> (Ghat^T R(theta') Ghat, (R(theta') Ghat)_d)`` by matrix-vector products.

    ``h(theta') = Lambda~(theta') Ghat`` is linear in the dense terms' theta, so ``A h`` and
    ``C_j h`` are combinations of products formed once; the block term enters through ``M_j``.
    """
    s = cp.structure
    qd = s.q_dense
    lb = s.terms[s.block_term].nlevels
    p1 = Ghat.shape[1]
    dense = sorted(_dense_theta(s))
    eye = jnp.eye(theta.shape[0], dtype=theta.dtype)

    def h_of(th):
        return _scale(Ghat, s.lambdas(th), s, transpose=True)                      # Lambda~ Ghat
    H = jnp.stack([h_of(theta)] + [jax.jvp(h_of, (theta,), (eye[i],))[1] for i in dense], axis=1)
    nh = H.shape[1]
    Hf = H.reshape(-1, nh * p1)
    AddH = sparse.targets_times(cp.Cdb.add_values, Hf[:qd], cp.Cdb.pattern)      # Z_d^T W Z_d is sparse
    AH = jnp.concatenate([AddH + cp.Axd.T @ Hf[qd:], cp.Axd @ Hf[:qd] + cp.Axx @ Hf[qd:]], axis=0)
    AH = AH.reshape(-1, nh, p1)
    YH = [y.reshape(nh, p1, lb) for y in sparse.cross_times(Hf, cp.Cdb, cp.Cxb, qd, lb)]
    Gd = Ghat[:qd]
    di = jnp.asarray(dense, dtype=jnp.int32)

    def fun(th):
        coef = jnp.concatenate([jnp.ones((1,), th.dtype), th[di] - theta[di]])
        h = jnp.einsum("qnp,n->qp", H, coef)
        Ah = jnp.einsum("qnp,n->qp", AH, coef)
        y = [jnp.einsum("npl,n->pl", Y, coef) for Y in YH]                          # C_j h
        _, M = block_weights(th, cp)
        S = len(M)
        My = [sum(M[a][c] * y[c] for c in range(S)) for a in range(S)]
        sigma = h.T @ Ah - sum(y[a] @ My[a].T for a in range(S)) + Gd.T @ Gd
        Uh = sparse.cross_t_times(My, cp.Cdb, cp.Cxb, qd)
        RG_d = _scale(Ah - Uh, s.lambdas(th), s)[:qd] + Gd
        return 0.5 * (sigma + sigma.T), RG_d

    return fun


INVERSE_MIN = 1e-2  # smallest |diagonal of a large term's lambda_k| for which _ell_mixed is used
STRIP_FRACTION = 0.25  # a dense term with at most this share of q_d columns: X_a from a strip


def _small_terms(structure) -> list:
    """Dense terms with at most ``STRIP_FRACTION`` of the dense columns (handled by strips of rows)."""
    return [k for k in structure.dense_terms if structure.terms[k].q <= STRIP_FRACTION * structure.q_dense]


def _well_conditioned(lams, structure):
    """Whether ``_ell_mixed`` applies: every large dense term's lambda is well conditioned."""
    small = _small_terms(structure)
    diag = [jnp.abs(jnp.diagonal(lams[k])) for k in structure.dense_terms if k not in small]
    if not diag:
        return jnp.asarray(True)
    return jnp.min(jnp.concatenate(diag)) >= INVERSE_MIN


def _sym(tr, k):
    T = jnp.stack([jnp.stack([tr[a][b] for b in range(k)]) for a in range(k)])
    return 0.5 * (T + T.T)


def _derivatives(theta, cp: CrossProducts, order: int):
    """``(ell, S)``, their Jacobians and, with ``order=2``, their Hessians in theta."""
    s = cp.structure
    qd = s.q_dense
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
    s_S = _s_of(theta, cp, Ghat)
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
    rows: ``R_a = N_a + N_a^T`` with ``N_a = dLambda_a^T Abar Lambda`` (rows of the term), so
    ``X_a = P R_a`` costs a strip product, and ``<P, R_a(theta')>`` is a cheap function of
    theta' whose gradient gives their row of ``<P, R_ab>`` (``Abar``'s dependence on the block
    term linearized, as in ``_ell_products``).  The block term's own ``<P, R_b>``, ``<P, R_bc>``
    are derivatives of ``-sum_j <M_j(theta), Gamma_j(Lambda P Lambda^T)>`` (``m_term``).
    """
    k = theta.shape[0]
    qd = s.q_dense
    pat = sy.pattern
    dense = _dense_theta(s)
    small = _small_terms(s)
    large = [t for t in s.dense_terms if t not in small]
    offsets = dict(zip(s.dense_terms, s.dense_offsets))
    inv = {t: jnp.linalg.inv(sy.lams[t]) if s.terms[t].ncols > 1 else 1.0 / sy.lams[t] for t in large}
    Pd = {t: _diag_blocks(P, s, t, offsets[t]) for t in large}                   # (l, S, S)
    J = -jax.grad(m_term)(theta)
    for a, (t, _, r, c) in dense.items():
        if t in large:
            Qd = jnp.eye(s.terms[t].ncols, dtype=P.dtype) - Pd[t]
            J = J.at[a].set(2.0 * jnp.einsum("i,li->", inv[t][:, r], Qd[:, c, :]))

    # small terms: <P, R_a(theta')> on the term's strip of rows
    eye = jnp.eye(k, dtype=P.dtype)

    def right(X, lams):                                                            # X Lambda
        return _scale(X.T, lams, s).T

    def left(X, th, a, t):                         # dLambda_a^T X on term t's strip of rows X
        T = s.terms[t]
        return jax.jvp(lambda tt: jnp.einsum("ls...,sr->lr...", X.reshape(T.nlevels, T.ncols, -1),
                                             s.lambdas(tt)[t]).reshape(X.shape), (th,), (eye[a],))[1]

    strip_fun, X_s = {}, {}
    for t in small:
        off, q = offsets[t], s.terms[t].q
        A_t = sparse.target_rows(sy.Abar_targets, pat, off, q, qd)                   # Abar[rows, :]
        U_t = {b: sparse.target_rows(c, pat, off, q, qd) for b, c in U_b.items()}
        P_t = P[off:off + q]
        for a in [i for i, v in dense.items() if v[0] == t]:
            def g(th, a=a, t=t, A_t=A_t, U_t=U_t, P_t=P_t):
                X = A_t - sum((th[b] - theta[b]) * U for b, U in U_t.items()) if U_t else A_t
                return 2.0 * jnp.sum(P_t * right(left(X, th, a, t), s.lambdas(th)))
            strip_fun[a] = g
            J = J.at[a].set(g(theta))
            if order == 2:
                N = right(left(A_t, theta, a, t), sy.lams)                          # rows of R_a = N + N^T
                Xa = P[:, off:off + q] @ N                                          # P R_a
                X_s[a] = Xa.at[:, off:off + q].add(P @ N.T)
    if order == 1:
        return J, None

    H1 = -jax.hessian(m_term)(theta)
    rows_done = set()
    for a, g in strip_fun.items():                                               # their rows and columns
        row = jax.grad(g)(theta)
        H1 = H1.at[a, :].set(row).at[:, a].set(row)
        rows_done.add(a)
    X_all = {**X_b, **X_s}
    Dsum = {t: jnp.sum(Pd[t], axis=0) for t in large}                           # sum_l of P's level blocks
    pi_PP = _class_sums(P, P, s)
    if all(s.terms[t].ncols == 1 for t in s.dense_terms):
        pi_PR = _class_sums_targets(P, sy, s)        # R_dd = Lambda^T Abar Lambda + I, Abar zero off the targets
    else:
        pi_PR = _class_sums(P, sy.R_dd, s)

    def pis(t, u):
        S_t = s.terms[t].ncols
        e = jnp.eye(S_t, dtype=P.dtype)
        PP, PR = pi_PP[t, u], pi_PR[t, u]
        RP = jnp.transpose(PR, (1, 0, 3, 2))
        if t != u:
            return PP, RP + PP, PR
        D, lt = Dsum[t], s.terms[t].nlevels
        ee = e[:, None, :, None] * e[None, :, None, :]
        eD = e[:, None, :, None] * D[None, :, None, :]
        De = D[:, None, :, None] * e[None, :, None, :]
        return PP + lt * ee - eD - De, RP - 2.0 * eD + PP, PR - De                # QQ, MP, PN

    cache = {}
    tr = [[None] * k for _ in range(k)]
    for a in range(k):
        for b in range(a + 1):
            if a in X_all and b in X_all:
                tr[a][b] = tr[b][a] = jnp.sum(X_all[a] * X_all[b].T)
            elif a in X_all or b in X_all:
                i, j = (a, b) if b in X_all else (b, a)                          # i of a large term, j explicit
                t, off, r, c = dense[i]
                Xd = _diag_blocks(X_all[j], s, t, off)                           # X_j[(l, q), (l, i)]
                Sq = s.terms[t].ncols
                if Sq == 1:
                    PX = jnp.sum(P * X_all[j], axis=1)[off:off + s.terms[t].q].reshape(-1, 1, 1)
                else:
                    q = s.terms[t].q
                    PX = jnp.einsum("lik,ljk->lij", P[off:off + q].reshape(-1, Sq, qd),
                                    X_all[j][off:off + q].reshape(-1, Sq, qd))
                E = jnp.swapaxes(Xd, 1, 2) - PX                                  # E[l, i, q]
                Li = inv[t][:, r]
                tr[a][b] = tr[b][a] = 2.0 * jnp.einsum("i,li->", Li, E[:, :, c])
                if j not in rows_done:                                           # j of the block term
                    h = 2.0 * jnp.einsum("i,li->", Li, Xd[:, c, :])
                    H1 = H1.at[i, j].set(h).at[j, i].set(h)
            else:
                t, _, ra, ca = dense[a]
                u, _, rb, cb = dense[b]
                if (t, u) not in cache:
                    cache[t, u] = pis(t, u)
                    cache[u, t] = pis(u, t)
                QQ, MP, PN = cache[t, u]
                MP_ut = cache[u, t][1]
                La, Lb = inv[t][:, ra], inv[u][:, rb]
                f_QQ = jnp.einsum("i,j,ij->", La, Lb, QQ[:, ca, cb, :])
                fT_ab = jnp.einsum("i,j,ij->", La, Lb, MP[:, ca, :, cb])
                fT_ba = jnp.einsum("j,i,ji->", Lb, La, MP_ut[:, cb, :, ca])
                tr[a][b] = tr[b][a] = 2.0 * f_QQ + fT_ab + fT_ba
                h = 2.0 * jnp.einsum("i,j,ij->", La, Lb, PN[ca, :, cb, :])
                H1 = H1.at[a, b].set(h).at[b, a].set(h)
    return J, H1 - _sym(tr, k)


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
    q_U = [_quad(sy.lams, p) for p in pi_U]

    def s_ell(th):
        lams = s.lambdas(th)
        out = _quad(lams, pi_A)
        for i, p, q in zip(idx, pi_U, q_U):
            out = out - (th[i] - theta[i]) * (_quad(lams, p) - q)
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
            # R_a = N + N^T (embedded): P R_a = P[:, rows] N + (P N^T) in the rows' columns
            Xi = P[:, off:off + q] @ N
            X.append(Xi.at[:, off:off + q].add(P @ N.T))
        else:
            R_i = jax.jvp(lambda th: _sandwich(Ab_dd, s.lambdas(th), s), (theta,), (eye[i],))[1]
            X.append(P @ R_i)
    tr = _sym([[jnp.sum(X[a] * X[b].T) for b in range(k)] for a in range(k)], k)
    return J, H1 - tr


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
