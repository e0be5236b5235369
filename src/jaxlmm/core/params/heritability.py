"""Heritability and its standard error from the profiled criterion's exact Hessian.

With scalar random-effects terms ``k`` (variances ``sigma^2 theta_k^2``) and the
residual variance ``sigma^2``, the share of the variance due to term ``g``

    h2 = theta_g^2 / (1 + sum_k theta_k^2)

does not depend on ``sigma``.  The criterion is ``-2`` times the (restricted)
log-likelihood profiled over ``sigma`` and ``beta``, and the inverse Hessian of
a profiled log-likelihood is the corresponding block of the inverse full
information, so ``Cov(theta_hat) ~= 2 H^{-1}`` and by the delta method

    se(h2) = sqrt(grad(h2)^T  2 H^{-1}  grad(h2)).

Components at their bound (a zero variance) are held fixed: their rows and
columns are dropped from ``H``.  When ``theta_g`` itself is at zero the delta
method does not apply and the SE is NaN (the estimate sits on the boundary).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BOUNDARY = 1e-4  # lme4's singularity tolerance on theta


def heritability(theta: jnp.ndarray, term: int) -> jnp.ndarray:
    """``theta_term^2 / (1 + |theta|^2)`` for a model whose terms are all scalar."""
    return theta[term] ** 2 / (1.0 + jnp.sum(theta ** 2))


def heritability_se(theta: jnp.ndarray, hessian: jnp.ndarray, term: int) -> jnp.ndarray:
    """Delta-method SE of ``heritability(theta, term)`` from the criterion's Hessian at theta."""
    k = theta.shape[0]
    free = jnp.abs(theta) > BOUNDARY
    mask = free[:, None] & free[None, :]
    H = jnp.where(mask, hessian, jnp.eye(k, dtype=hessian.dtype))
    g = jnp.where(free, jax.grad(heritability)(theta, term), 0.0)
    var = 2.0 * g @ jnp.linalg.solve(H, g)
    ok = free[term] & jnp.all(jnp.isfinite(H)) & (var >= 0)
    return jnp.where(ok, jnp.sqrt(jnp.maximum(var, 0.0)), jnp.nan)
