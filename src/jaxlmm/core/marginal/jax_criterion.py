"""The marginal criterion of ``marginal/criterion.py`` as a pure JAX function of all its parameters.

``criterion(phi)`` builds ``V(phi) = sum_t (z_t C_t(phi_t) z_t^T) o G_t + diag(r(psi) / w)``
densely from each term's ``CovarianceFunction`` and returns the REML criterion or ML deviance
(``marginal/criterion.py``'s formula): what ``Model.objective`` is for a structured model, so that
``jax.grad``, ``jax.hessian``, ``jit`` and ``vmap`` work on it as on every other model.
The fit itself uses the closed-form derivatives on the host.
"""

from __future__ import annotations

import numpy as np

import jax.numpy as jnp

from ..likelihood import criteria
from .criterion import MarginalModel


def marginal_criterion(model: MarginalModel, y: np.ndarray, rows: np.ndarray, reml: bool):
    """``phi -> criterion`` for the response ``y`` on ``rows`` (a pure JAX function)."""
    X = jnp.asarray(model.X[rows])
    yv = jnp.asarray(y)
    inv_w = jnp.asarray(1.0 / model.w[rows])
    parts = [(jnp.asarray(t.z[rows]), jnp.asarray(t.pattern(rows)), t.cov.fn, off, t.cov.n_params)
             for t, off in zip(model.terms, model.offsets)]
    base = model.offsets[-1]
    n, p = X.shape

    def criterion(phi):
        V = jnp.diag(model.residual.variances_jax(phi[base:], rows) * inv_w)
        for z, G, fn, off, k in parts:
            V = V + (z @ fn(phi[off:off + k]) @ z.T) * G
        L = jnp.linalg.cholesky(V)
        Z = jnp.linalg.solve(L.T, jnp.linalg.solve(L, X))
        Q = X.T @ Z
        LQ = jnp.linalg.cholesky(Q)
        Viy = jnp.linalg.solve(L.T, jnp.linalg.solve(L, yv))
        beta = jnp.linalg.solve(Q, Z.T @ yv)
        quad = yv @ Viy - (Z.T @ yv) @ beta
        ld_V = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L)))
        ld_Q = 2.0 * jnp.sum(jnp.log(jnp.diagonal(LQ)))
        return criteria.marginal_criterion(ld_V, ld_Q, quad, n, p, reml)

    return criterion
