"""Estimates at a given theta from the same blocked factor as the deviance.

With the full lower factor ``L`` of the penalized system, whose last row is
``[r^T, sqrt(pwrss)]``, the conditional modes ``u`` (spherical random
effects) and the BLUEs ``beta`` solve ``L^T [u; beta] = r``.  The random
effects are ``b = Lambda u``, the residual scale is

    sigma^2 = pwrss / (n - p)  (REML)   or   pwrss / n  (ML),

``Cov(beta) = sigma^2 (R_X R_X^T)^{-1}`` with ``R_X`` the fixed-effects block of
``L``, and lme4's conditional variances of ``b`` (``ranef(condVar = TRUE)``)
are the diagonal blocks of ``sigma^2 Lambda (L_Z L_Z^T)^{-1} Lambda^T``.  For the
block term the diagonal block of ``(L_Z L_Z^T)^{-1}`` at level j is
``L_j^{-T} (I + W_j^T S^{-1} W_j) L_j^{-1}`` with ``S = L_dd L_dd^T`` the dense
Schur complement; for dense terms it is the diagonal block of ``S^{-1}``.

A term with a relationship-matrix factor ``T`` (``K = T T^T``) is fitted in
spherical coordinates ``b* = Lambda u``; its effects on the levels are
``b = (T kron I) b*`` and their conditional covariance per level is the
diagonal block of ``sigma^2 (T kron Lambda) S^{-1}_kk (T kron Lambda)^T``.

On the sparse path (``pls/sparse.py``, ``cross_sparse.solve``) the dense part is
inverted outright (``P = S^{-1}``, ``schur.inverse_logdet``) and the block
term's rows of ``L`` are never stored: with ``G_j = L_j^{-1} lambda_b^T``,
``W_j x = G_j C_j (Lambda x)`` is a sum over the level's nonzeros, and
``W_dj S^{-1} W_dj^T = G_j Gamma_j(K) G_j^T`` with ``K = Lambda_d P Lambda_d^T``,
one pass over the pairs of nonzeros.
"""

from __future__ import annotations

import jax.numpy as jnp

from .data import CrossProducts, ModelData
from .criterion import cross_block, deviance_parts
from .solution_types import Estimates, Solution, fixed_part  # noqa: F401  (Solution, Estimates re-exported)


def estimates(theta: jnp.ndarray, cp: CrossProducts, reml: bool = True) -> Estimates:
    """Criterion, beta, sigma and Cov(beta) at ``theta`` (no random effects)."""
    crit, parts, _, x_dense, sigma2, vcov_beta = fixed_part(theta, cp, reml, deviance_parts)
    qd = cp.structure.q_dense
    return Estimates(crit, x_dense[qd:qd + cp.p] + cp.beta_shift, jnp.sqrt(sigma2), vcov_beta, parts.n_obs)


def solve(theta: jnp.ndarray, cp: CrossProducts, reml: bool = True, transforms: tuple | None = None) -> Solution:
    """beta, u, b, sigma, Cov(beta) and conditional variances at ``theta``.

    ``transforms`` (``ModelData.transforms``) maps the effects of relationship-matrix
    terms back to their levels.
    """
    return cross_block(cp).solve(theta, cp, reml, transforms)


def linear_predictor(data: ModelData, beta: jnp.ndarray, b: tuple, include: tuple | None = None) -> jnp.ndarray:
    """``offset + X beta + sum_k z_k[i] . b_k[refs_k[i]]`` over the terms in ``include``."""
    eta = data.offset + data.X @ beta
    for k in range(len(data.refs)) if include is None else include:
        eta = eta + jnp.sum(data.z[k] * b[k][data.refs[k]], axis=1)
    return eta
