"""Exponential families of a GLMM, as the log-density of one observation given its linear predictor.

Every family is one function ``log p(y_i | eta_i)`` per row (with the prior weight ``w_i`` and, for the
negative binomial and Gamma, the log of its dispersion parameter); everything else -- the score and the
observed information in eta that the conditional mode and the Laplace approximation need -- is its
derivative by automatic differentiation, so that every link has exact derivatives:

- binomial (``y`` the proportion of ``w`` trials; a 0/1 response has ``w = 1``):
  ``w [y log mu + (1 - y) log(1 - mu)] + log C(w, w y)`` with ``mu = logit^{-1}(eta)``,
  ``Phi(eta)`` (probit) or ``1 - exp(-exp(eta))`` (cloglog);
- Poisson (log link): ``w [y eta - exp(eta) - log y!]``;
- negative binomial NB2 (log link, ``var = mu + mu^2 / r``, ``r = exp(log_disp)``):
  ``log Gamma(y + r) - log Gamma(r) - log y! + r log r + y eta - (y + r) log(r + mu)``, times ``w``;
- Gamma (log link, shape ``nu = exp(log_disp)``, mean ``mu``, ``var = mu^2 / nu``):
  ``nu log nu - log Gamma(nu) + (nu - 1) log y - nu y / mu - nu log mu``, times ``w``.

Each is log-concave in eta (the observed information is positive), so the penalized objective of the
conditional mode is strictly convex.  Rows with ``w = 0`` (missing values, padding) contribute 0.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln, log_ndtr, ndtr

LINKS = {"binomial": ("logit", "probit", "cloglog"), "poisson": ("log",), "negative_binomial": ("log",),
         "gamma": ("log",)}
DEFAULT_LINK = {"binomial": "logit", "poisson": "log", "negative_binomial": "log", "gamma": "log"}
HAS_DISPERSION = {"binomial": False, "poisson": False, "negative_binomial": True, "gamma": True}


class Family(NamedTuple):
    """A family and its link (hashable: a static argument of the compiled programs)."""

    name: str
    link: str

    @property
    def dispersion(self) -> bool:
        """Whether the family has a dispersion parameter estimated with the fit (NB2's r, Gamma's shape)."""
        return HAS_DISPERSION[self.name]


def mean(family: Family, eta):
    """The inverse link ``mu(eta)``."""
    if family.name != "binomial":
        return jnp.exp(eta)
    if family.link == "logit":
        return jax.nn.sigmoid(eta)
    if family.link == "probit":
        return ndtr(eta)
    return -jnp.expm1(-jnp.exp(eta))


def _binomial_log_mu(link: str, eta):
    """``(log mu, log(1 - mu))`` computed without cancellation."""
    if link == "logit":
        return -jax.nn.softplus(-eta), -jax.nn.softplus(eta)
    if link == "probit":
        return log_ndtr(eta), log_ndtr(-eta)
    e = jnp.exp(eta)
    return jnp.log(-jnp.expm1(-e)), -e


def log_density(family: Family, eta, y, w, log_disp):
    """``log p(y_i | eta_i)`` per row (module docstring); ``log_disp`` is ignored without a dispersion."""
    return kernel(family, eta, y, w, log_disp) + constant(family, y, w)


def constant(family: Family, y, w):
    """The part of ``log p`` that depends on neither eta nor the dispersion (left out of the mode's iterations)."""
    if family.name == "binomial":
        wy = w * y
        return gammaln(w + 1.0) - gammaln(wy + 1.0) - gammaln(w - wy + 1.0)
    if family.name in ("poisson", "negative_binomial"):
        return -w * gammaln(y + 1.0)
    return jnp.zeros_like(y)


def kernel(family: Family, eta, y, w, log_disp):
    """``log p - constant``: what depends on eta or the dispersion."""
    if family.name == "binomial" and family.link == "logit":     # log mu = eta - softplus(eta): one softplus
        return w * (y * eta - jax.nn.softplus(eta))
    if family.name == "binomial":
        log_mu, log_1m = _binomial_log_mu(family.link, eta)
        wy = w * y
        return wy * log_mu + (w - wy) * log_1m
    if family.name == "poisson":
        return w * (y * eta - jnp.exp(eta))
    if family.name == "negative_binomial":
        r = jnp.exp(log_disp)
        value = gammaln(y + r) - gammaln(r) + r * log_disp + y * eta - (y + r) * jnp.logaddexp(log_disp, eta)
        return w * value
    nu = jnp.exp(log_disp)
    log_y = jnp.log(jnp.where(w > 0, y, 1.0))
    return w * (nu * log_disp - gammaln(nu) + (nu - 1.0) * log_y - nu * y * jnp.exp(-eta) - nu * eta)


def score_information(family: Family, eta, y, w, log_disp):
    """``(d/deta, -d^2/deta^2)`` of ``log_density`` per row (forward-mode: the rows are independent)."""
    f = lambda e: kernel(family, e, y, w, log_disp)
    first = lambda e: jax.jvp(f, (e,), (jnp.ones_like(e),))[1]
    score, slope = jax.jvp(first, (eta,), (jnp.ones_like(eta),))
    return score, -slope


def variance(family: Family, mu, w, log_disp):
    """The variance of ``y_i`` given ``mu_i`` (Pearson residuals): of the proportion for the binomial."""
    if family.name == "binomial":
        return mu * (1.0 - mu) / jnp.where(w > 0, w, 1.0)
    if family.name == "poisson":
        return mu
    if family.name == "negative_binomial":
        return mu + mu ** 2 / jnp.exp(log_disp)
    return mu ** 2 / jnp.exp(log_disp)
