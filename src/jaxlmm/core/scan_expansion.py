"""The scan's log-likelihood as a function of ``t = log lambda``, expanded once per marker chunk.

Every n-long sum of ``core/scan.py`` has the form ``sum_i a_i w_i(t)`` with the
weights ``w_i(t) = 1 / (1 + e^t d_i)`` (and ``sum_i log(1 + e^t d_i)``).  On GEMMA's
range ``t in [log 1e-5, log 1e5]`` each weight is a logistic function of t whose
poles lie at distance pi from the real axis, so its Chebyshev series converges
geometrically (Bernstein ellipse parameter ``rho = (pi + sqrt(pi^2 + h^2)) / h ~ 1.31``
for the half-width h = 11.5): ``N_CHEB = 128`` terms leave a relative error near
``rho^-128 ~ 1e-15`` (interpolation at Chebyshev nodes).  (64 terms, error ~3e-8, are
enough in the interior but not where the ML likelihood is flat up to lambda = 1e5:
the comparison with the range's ends then picks the wrong side.)  With the coefficients ``c_ip``

    sum_i a_i w_i(t) = sum_p T_p(s(t)) [sum_i a_i c_ip],

so the bracketed Newton search of every marker costs O(N) per evaluation, not
O(n): the n-long work is a few matrix products per chunk (``gram_coefficients``).
The search only steers lambda; the statistics at the optimum are then computed
from the exact weights (``core/scan._gram``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

N_CHEB = 128


class Expansion(NamedTuple):
    """Chebyshev coefficients of the Gram matrices (S, k, k, N) and of ``sum_i log h_i`` (N,)."""

    gram: jnp.ndarray
    logdet: jnp.ndarray
    lo: float
    hi: float


def _node_matrix(N: int) -> tuple[np.ndarray, np.ndarray]:
    """Chebyshev nodes on [-1, 1] and the matrix taking values at them to coefficients."""
    j = np.arange(N) + 0.5
    nodes = np.cos(np.pi * j / N)
    C = (2.0 / N) * np.cos(np.pi * np.outer(np.arange(N), j) / N)
    C[0] *= 0.5
    return nodes, C


def weight_coefficients(d, lo: float, hi: float, N: int = N_CHEB):
    """Coefficients (n, N) of ``w_i(t)`` and (N,) of ``sum_i log(1 + e^t d_i)`` on ``[lo, hi]``."""
    nodes, C = _node_matrix(N)
    t = 0.5 * (lo + hi) + 0.5 * (hi - lo) * jnp.asarray(nodes, d.dtype)
    lam_d = jnp.exp(t)[None, :] * d[:, None]                                # (n, N)
    Cm = jnp.asarray(C.T, d.dtype)
    return (1.0 / (1.0 + lam_d)) @ Cm, jnp.sum(jnp.log1p(lam_d), axis=0) @ Cm


def gram_coefficients(Wc, Rb, rx):
    """Coefficients (S, k, k, N) of ``M(t)`` for the columns ``[W, x, y]`` (``[W, y]``, S = 1, without rx)."""
    c1 = Rb.shape[1]
    Mbb = jnp.einsum("ia,ib,ip->abp", Rb, Rb, Wc)                          # (c+1, c+1, N)
    if rx is None:
        return Mbb[None]
    S = rx.shape[1]
    Mxb = jnp.einsum("is,iap->sap", rx, Rb[:, :, None] * Wc[:, None, :])    # (S, c+1, N)
    Mxx = (rx * rx).T @ Wc                                                  # (S, N)
    c = c1 - 1
    Mbb = jnp.broadcast_to(Mbb, (S,) + Mbb.shape)
    col_w = jnp.concatenate([Mbb[:, :c, :c], Mxb[:, None, :c], Mbb[:, c:, :c]], axis=1)
    col_x = jnp.concatenate([Mxb[:, :c], Mxx[:, None], Mxb[:, c:]], axis=1)[:, :, None]
    col_y = jnp.concatenate([Mbb[:, :c, c:], Mxb[:, None, c:], Mbb[:, c:, c:]], axis=1)
    return jnp.concatenate([col_w, col_x, col_y], axis=2)


def basis(t, lo: float, hi: float, N: int):
    """``T_p(s(t))`` (S, N) by doubling, ``T_{m+j} = 2 T_m T_j - T_{m-j}`` for j = 1..m: log2(N) vector
    steps instead of N sequential ones (differentiable everywhere on [-1, 1])."""
    s = (2.0 * t - lo - hi) / (hi - lo)
    T = jnp.stack([jnp.ones_like(s), s], axis=1)                            # T_0, T_1
    while T.shape[1] < N:
        m = T.shape[1] - 1
        upper = 2.0 * T[:, m:m + 1] * T[:, 1:] - T[:, m - 1::-1]           # T_{m+1} .. T_{2m}
        T = jnp.concatenate([T, upper], axis=1)
    return T[:, :N]


def evaluate(t, expansion: Expansion):
    """``M(t)`` (S, k, k) and ``sum_i log h_i(t)`` (S,) from the expansion."""
    T = basis(t, expansion.lo, expansion.hi, expansion.logdet.shape[0])
    return jnp.einsum("sp,sabp->sab", T, expansion.gram), T @ expansion.logdet


def with_derivatives(f, t, order: int):
    """``f(t)`` and its first ``order`` (0, 1, 2) derivatives, lane by lane (f acts on lanes separately)."""
    if order == 0:
        return f(t)
    ones = jnp.ones_like(t)
    if order == 1:
        return jax.jvp(f, (t,), (ones,))
    (v, g), (_, h) = jax.jvp(lambda s: jax.jvp(f, (s,), (ones,)), (t,), (ones,))
    return v, g, h
