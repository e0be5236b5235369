"""The REML criterion and the ML deviance (-2 log-likelihood), in the three parametrizations jaxlmm uses.

With ``n`` observations (``w`` their case weights), ``p`` fixed effects, ``log|L|^2`` the log
determinant of the random-effects part (``ldL2``: lme4's ``log|L_theta|^2``, or ``log|V|`` of the
relative marginal covariance), ``log|R_X|^2`` that of the fixed effects' normal matrix after the
random effects are eliminated, and ``PWRSS`` the penalized weighted residual sum of squares:

- sigma profiled out (lme4's ``devfun``, ``profiled_criterion``)::

      REML:  log|L|^2 + log|R_X|^2 + (n - p) (1 + log(2 pi PWRSS / (n - p))) - sum log w
      ML:    log|L|^2 + n (1 + log(2 pi PWRSS / n)) - sum log w

- sigma explicit (lmerTest's ``devfun_vp``, ``explicit_criterion``; beta still profiled)::

      log|L|^2 + PWRSS / sigma^2 + n log(2 pi sigma^2)   [REML: + log|R_X|^2 - p log(2 pi sigma^2)]

  (the constant ``- sum log w`` is left out: it changes no derivative);

- absolute (the marginal criterion of a structured model, ``marginal_criterion``), with
  ``V`` the observations' covariance, ``Q = X^T V^-1 X`` and ``r`` the GLS residual::

      REML:  (n - p) log(2 pi) + log|V| + log|Q| + r^T V^-1 r
      ML:    n log(2 pi) + log|V| + r^T V^-1 r

``reml`` is a Python bool or a traced boolean (then both forms are computed and one selected).
The explicit and profiled forms take ``jax.numpy`` arrays; the marginal form is plain arithmetic
and works on NumPy scalars as well.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def _static(flag) -> bool:
    return isinstance(flag, (bool, int)) or type(flag).__module__ == "numpy"


def profiled_criterion(ld_L2, ld_RX2, pwrss, n, p, reml, sum_log_w=0.0):
    """lme4's REML criterion (``reml``) or ML deviance with sigma^2 profiled out (module docstring)."""
    def ml():
        return ld_L2 + n * (1.0 + jnp.log(2.0 * jnp.pi * pwrss / n)) - sum_log_w

    def restricted():
        nmp = n - p
        return ld_L2 + ld_RX2 + nmp * (1.0 + jnp.log(2.0 * jnp.pi * pwrss / nmp)) - sum_log_w

    if _static(reml):
        return restricted() if reml else ml()
    return jnp.where(jnp.asarray(reml, bool), restricted(), ml())


def explicit_criterion(ld_L2, ld_RX2, pwrss, n, p, sigma2, reml):
    """lmerTest's deviance at an explicit ``sigma^2`` (module docstring)."""
    log_2pi_s2 = jnp.log(2.0 * jnp.pi * sigma2)
    dev = ld_L2 + pwrss / sigma2 + n * log_2pi_s2
    if _static(reml):
        return dev + (ld_RX2 - p * log_2pi_s2) if reml else dev
    return dev + jnp.where(jnp.asarray(reml, bool), ld_RX2 - p * log_2pi_s2, 0.0)


def marginal_criterion(ld_V, ld_Q, quad, n, p, reml: bool):
    """The absolute REML criterion or ML deviance from ``log|V|``, ``log|Q|`` and ``r^T V^-1 r``."""
    if reml:
        return (n - p) * LOG_2PI + ld_V + ld_Q + quad
    return n * LOG_2PI + ld_V + quad


def beta_covariance(sigma2, LX_inv):
    """``Cov(beta-hat) = sigma^2 (R_X^T R_X)^-1 = sigma^2 L_X^-T L_X^-1`` from ``L_X^-1`` (``R_X = L_X^T`` the
    fixed effects' factor after the random effects are eliminated; its columns may carry X's scaling)."""
    return sigma2 * LX_inv.T @ LX_inv
