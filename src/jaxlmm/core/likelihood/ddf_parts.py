"""Satterthwaite's and Kenward-Roger's ingredients, written once over the parts an engine computes.

Satterthwaite (lmerTest), in the variance parameters ``varpar`` (e.g. ``(theta, sigma)``) with
beta profiled: ``H`` the Hessian of the deviance, ``A = 2 H^-1`` their asymptotic covariance,
``J_i = d Cov(beta) / d varpar_i`` and ``V = Cov(beta)`` (``satterthwaite_parts``).  Components
outside ``active`` (padding) get the identity's rows in ``H`` before it is inverted.

Kenward-Roger (pbkrtest's ``vcovAdj``), in covariance parameters ``gamma`` with
``M = X^T V^-1 X``, ``Phi = M^-1``, ``P_r = dM/dgamma_r`` and ``IE2`` twice the (expected or
observed) REML information of gamma::

    W     = 2 IE2^-1                                   (information_inverse)
    PhiA  = Phi + 2 Phi [sum_rs W_rs (S_rs - P_r Phi P_s)] Phi        (adjusted_covariance)

where ``S_rs`` is Kenward and Roger's second-order term: ``Q_rs - R_rs / 4`` with
``Q_rs = X^T V^-1 V_r V^-1 V_s V^-1 X`` and ``R_rs = X^T V^-1 V_rs V^-1 X``; for a ``V``
linear in gamma (lme4's models written in gamma) this is ``d^2 M / dgamma_r dgamma_s / 2``.
With ``d^2 Phi_rs = Phi (P_r Phi P_s + P_s Phi P_r - d^2 M_rs) Phi`` the same adjustment reads
``PhiA = Phi - sum_rs W_rs d^2 Phi_rs``.

``xp`` is ``numpy`` or ``jax.numpy``: the marginal engine assembles its parts with NumPy on the
host, the dense and blocked engines inside their compiled programs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SINGULAR_RATIO = 1e-10   # IE2 with min |eigenvalue| below this times its largest: pseudo-inverse


def unit_outside(xp, H, active):
    """``H`` with the rows and columns outside ``active`` replaced by the identity's."""
    if active is None:
        return H
    keep = active[:, None] & active[None, :]
    return xp.where(keep, H, xp.eye(H.shape[0], dtype=H.dtype))


def satterthwaite_parts(deviance, vcov_beta, varpar, active=None):
    """``(A, J, V, H)`` at ``varpar``: ``A = 2 H^-1`` (``H`` the Hessian of ``deviance``, symmetrized,
    identity outside ``active``), ``J`` (m, p, p) the derivatives of ``vcov_beta``, ``V = vcov_beta``."""
    H = jax.hessian(deviance)(varpar)
    H = unit_outside(jnp, 0.5 * (H + H.T), active)
    A = 2.0 * jnp.linalg.inv(H)
    J = jnp.moveaxis(jax.jacfwd(vcov_beta)(varpar), -1, 0)
    return A, J, vcov_beta(varpar), H


def information_inverse(xp, IE2, active=None):
    """``W = 2 IE2^-1`` (pseudo-inverse where IE2 is near singular); 0 outside ``active``, NaN where IE2
    is not finite (a NaN result, never a hanging eigensolver)."""
    IE2 = unit_outside(xp, 0.5 * (IE2 + IE2.T), active)
    ok = xp.all(xp.isfinite(IE2))
    safe = xp.where(ok, IE2, xp.eye(IE2.shape[0], dtype=IE2.dtype))
    eig = xp.abs(xp.linalg.eigvalsh(safe))
    regular = xp.min(eig) > SINGULAR_RATIO * xp.maximum(xp.max(eig), 1e-300)
    if xp.__name__ == "numpy":          # NumPy's inv raises on a singular matrix: choose before calling
        W = 2.0 * (xp.linalg.inv(safe) if bool(regular) else xp.linalg.pinv(safe))
    else:
        W = 2.0 * xp.where(regular, xp.linalg.inv(safe), xp.linalg.pinv(safe))
    if active is not None:
        W = xp.where(active[:, None] & active[None, :], W, 0.0)
    return xp.where(ok, W, xp.nan)


def adjusted_covariance(xp, Phi, P, W, S):
    """Kenward-Roger's ``PhiA`` (module docstring) from ``Phi`` (p, p), ``P`` (g, p, p), ``W`` (g, g) and
    the second-order terms ``S`` (g, g, p, p); symmetric."""
    PPhi = xp.einsum("rab,bc->rac", P, Phi)                              # P_r Phi
    inner = xp.einsum("rs,rsac->ac", W, S) - xp.einsum("rs,rab,sbc->ac", W, PPhi, P)
    PhiA = Phi + 2.0 * Phi @ inner @ Phi
    return 0.5 * (PhiA + PhiA.T)
