"""Jitted programs for Satterthwaite and Kenward-Roger inference (exact autodiff derivatives).

- ``satterthwaite_program``: the Hessian of lmerTest's deviance in (theta,
  sigma), ``A = 2 H^{-1}`` (the asymptotic covariance of the variance
  parameters), and the Jacobian of ``Cov(beta-hat)`` with respect to them.
- ``kenward_roger_program``: pbkrtest's ingredients from derivatives of
  ``log|V|`` and ``M = X^T V^{-1} X`` in the covariance parameters gamma:

      IE2 = -d^2/dgamma^2 [ log|V| + log|M| ]      (REML expected information)
      W   = 2 IE2^{-1},   P_r = dM/dgamma_r,   Phi = M^{-1}
      PhiA = Phi - sum_rs W_rs d^2 Phi / dgamma_r dgamma_s

  which equal pbkrtest's ``vcovAdj`` (its P, Q and K-trace terms are these
  derivatives written out with n x n matrices; here no n x n matrix exists).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jax import lax

from ..likelihood.ddf_parts import adjusted_covariance, information_inverse, satterthwaite_parts
from .data import CrossProducts
from .varpar import deviance_varpar, gamma_from_theta, marginal_parts, vcov_beta_varpar


def jacobian_sequential(f, x):
    """``jax.jacfwd(f)(x)`` with the tangent directions taken one by one (``lax.map``), leading axis
    last as jacfwd: no LAPACK call inside ``f`` gets a batch axis (see ``linalg/factor.py``)."""
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    cols = lax.map(lambda v: jax.jvp(f, (x,), (v,))[1], eye)
    return jnp.moveaxis(cols, 0, -1)


def hessian_sequential(f, x):
    return jacobian_sequential(lambda z: jacobian_sequential(f, z), x)


@partial(jax.jit, static_argnames=("reml",))
def satterthwaite_program(cp: CrossProducts, theta, sigma, reml: bool = True):
    """(A, J, V, H): vcov of (theta, sigma), d Cov(beta)/d varpar (m, p, p), Cov(beta), Hessian."""
    vp = jnp.concatenate([theta, jnp.reshape(sigma, (1,))])
    return satterthwaite_parts(lambda v: deviance_varpar(v, cp, reml), lambda v: vcov_beta_varpar(v, cp), vp)


@jax.jit
def kenward_roger_program(cp: CrossProducts, theta, sigma):
    """(Phi, PhiA, P, W, IE2) of pbkrtest's ``vcovAdj`` at the REML estimate."""
    gamma = gamma_from_theta(theta, sigma, cp.structure)

    def M_of(g):
        return marginal_parts(g, cp)[1]

    def ell(g):
        log_det_v, M = marginal_parts(g, cp)
        return log_det_v + jnp.linalg.slogdet(M)[1]

    IE2 = -hessian_sequential(ell, gamma)
    IE2 = 0.5 * (IE2 + IE2.T)
    IE2 = jnp.where(jnp.all(jnp.isfinite(IE2)), IE2, jnp.nan)
    M = M_of(gamma)
    Phi = jnp.linalg.inv(M)
    P = jnp.moveaxis(jacobian_sequential(M_of, gamma), -1, 0)             # (g, p, p)
    Q = jnp.moveaxis(hessian_sequential(M_of, gamma), (-2, -1), (0, 1))   # (g, g, p, p)
    W = information_inverse(jnp, IE2)
    return Phi, adjusted_covariance(jnp, Phi, P, W, 0.5 * Q), P, W, IE2
