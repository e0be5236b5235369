"""The Schur complement ``S = R_xx - R_xd R_dd^{-1} R_dx`` as a function of theta with ``G`` fixed.

At the minimizing ``G = R_dd^{-1} R_dx``, ``S = Ghat^T R Ghat`` with ``Ghat = [-G; I]``,
so the derivatives of ``S`` need ``R(theta')`` only through the products
``R(theta') Ghat``: ``(p+1)`` matrix-vector products instead of a refactorization.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import sparse
from .blocks import _dense_theta
from .system import _scale, block_weights


def _s_at_fixed_g(theta, cp, Ghat):
    """``theta' -> (Ghat^T R(theta') Ghat, (R(theta') Ghat)_d)`` by matrix-vector products.

    With ``Ghat = [-G; I]`` fixed at theta, the first output is ``S`` at theta' with ``G``
    held fixed: its derivatives at theta are ``d_a S = Ghat^T R_a Ghat`` and the
    ``Ghat^T R_ab Ghat`` part of ``d_ab S``; the second output's derivatives are the
    ``F_a = (R_a Ghat)_d`` of the rest (``pls/schur/factor.py``).

    ``h(theta') = Lambda~(theta') Ghat`` (``Lambda~ = diag(Lambda, I)``) is linear in the dense
    terms' theta, so ``A h`` and ``C_j h`` are combinations of products formed once; the block
    term enters through ``M_j``.
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
