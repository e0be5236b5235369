"""Satterthwaite and Kenward-Roger ingredients for small models, from the dense system.

The same quantities as ``core/inference.py`` (which states them), with the
model's structure as data (``dense.py``): one program per size bucket.

- Satterthwaite works in ``varpar = (theta, sigma)``:
  ``dev = log|L_Z|^2 + PWRSS / sigma^2 + n log(2 pi sigma^2)``
  [REML: ``+ log|R_X|^2 - p log(2 pi sigma^2)``] and ``Cov(beta) = sigma^2 (R_X R_X^T)^{-1}``.
- Kenward-Roger works in ``gamma``: the lower-triangle entries of each term's
  ``Sigma_k`` (theta's layout), then ``sigma^2``.  With ``C = Sigma / sigma^2``
  gathered into q x q by ``cov_index`` (``C[i, j] = gamma[cov_index[i, j]]``),

      log|V| = n log sigma^2 - sum log w + log|I + C A_zz|
      M      = (X^T W X - A_xz (I + C A_zz)^{-1} C A_zx) / sigma^2.

Padded thetas (and their gammas) have no effect; their rows and columns of
the information matrices are set to the identity before inverting and to 0
in what is returned, so ``jaxlmm.inference`` slices the real parameters out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .dense import DenseSystem, factor
from .dense_fit import compiler_options, jit_variants


def deviance_varpar(varpar, system: DenseSystem, reml):
    """lmerTest's ``devfun_vp`` at ``(theta, sigma)``, beta profiled (``reml`` may be traced)."""
    theta, sigma = varpar[:-1], varpar[-1]
    s2 = sigma ** 2
    _, parts = factor(theta, system)
    log2pis2 = jnp.log(2.0 * jnp.pi * s2)
    dev = parts.ldL2 + parts.pwrss / s2 + parts.n_obs * log2pis2
    return dev + jnp.where(jnp.asarray(reml, bool), parts.ldRX2 - system.p * log2pis2, 0.0)


def vcov_beta_varpar(varpar, system: DenseSystem):
    """``sigma^2 (R_X R_X^T)^{-1}`` at ``(theta, sigma)`` (padded columns included)."""
    from .dense import triangular_inverse

    q = system.lam_index.shape[0]
    L, _ = factor(varpar[:-1], system)
    RX_inv = triangular_inverse(L[q:-1, q:-1]) / system.x_scale[None, :]     # back to X's units
    return varpar[-1] ** 2 * RX_inv.T @ RX_inv


def _unit_on(mask, H):
    """``H`` with the rows and columns outside ``mask`` replaced by the identity's."""
    keep = mask[:, None] & mask[None, :]
    return jnp.where(keep, H, jnp.eye(H.shape[0], dtype=H.dtype))


def _satterthwaite(system: DenseSystem, varpar, active, reml):
    H = jax.hessian(deviance_varpar)(varpar, system, reml)
    H = _unit_on(active, 0.5 * (H + H.T))
    A = 2.0 * jnp.linalg.inv(H)
    J = jax.jacfwd(vcov_beta_varpar)(varpar, system)
    return A, jnp.moveaxis(J, -1, 0), vcov_beta_varpar(varpar, system)


def marginal_parts(gamma, system: DenseSystem, cov_index, fixed_mask):
    """``log|V|`` and ``M = X^T V^{-1} X`` (module docstring); padded columns of M are the identity's."""
    q = cov_index.shape[0]
    s2 = gamma[-1]
    C = jnp.concatenate([gamma[:-1], jnp.zeros((1,), gamma.dtype)])[cov_index] / s2
    A = system.A
    Azz, Bzx, XtWX = A[:q, :q], A[:q, q:-1], A[q:-1, q:-1]
    K = jnp.eye(q, dtype=A.dtype) + C @ Azz
    logdet = jnp.linalg.slogdet(K)[1]
    M = (XtWX - Bzx.T @ jnp.linalg.solve(K, C @ Bzx)) / s2
    D = system.x_scale
    M = D[:, None] * M * D[None, :]            # A holds X / x_scale: back to X's units
    M = _unit_on(fixed_mask, 0.5 * (M + M.T))
    return system.n_obs * jnp.log(s2) - system.sum_log_w + logdet, M


def _kenward_roger(system: DenseSystem, gamma, cov_index, active, fixed_mask):
    """pbkrtest's ingredients from the first and second derivatives ``P_r``, ``Q_rs`` of M.

    With ``Phi = M^{-1}``: ``d^2 Phi / dgamma_r dgamma_s = Phi (P_r Phi P_s + P_s Phi P_r - Q_rs) Phi``
    and ``d^2 log|M| = tr(Phi Q_rs) - tr(Phi P_r Phi P_s)``.  ``(log|V|, M)`` is differentiated
    twice in one nested forward pass that also returns the first derivatives, so its graph is
    traced once per order (tracing dominates this program's first call).
    """
    def parts(g):
        return marginal_parts(g, system, cov_index, fixed_mask)

    def first(g):
        J = jax.jacfwd(parts)(g)
        return J, J

    (d2_log_v, Q), (_, dM) = jax.jacfwd(first, has_aux=True)(gamma)
    Q = jnp.moveaxis(Q, (2, 3), (0, 1))                                    # (g, g, p, p)
    P = jnp.moveaxis(dM, -1, 0)                                            # (g, p, p)
    _, M = parts(gamma)
    Phi = jnp.linalg.inv(M)
    PPhi = jnp.einsum("rab,bc->rac", P, Phi)                               # P_r Phi
    hess_log_m = jnp.einsum("ab,rsba->rs", Phi, Q) - jnp.einsum("rab,sba->rs", PPhi, PPhi)
    IE2 = -(d2_log_v + hess_log_m)
    IE2 = _unit_on(active, 0.5 * (IE2 + IE2.T))
    ok = jnp.all(jnp.isfinite(IE2))
    IE2_safe = jnp.where(ok, IE2, jnp.eye(IE2.shape[0], dtype=IE2.dtype))
    cond = jnp.min(jnp.abs(jnp.linalg.eigvalsh(IE2_safe)))
    W = jnp.where(cond > 1e-10, 2.0 * jnp.linalg.inv(IE2_safe), 2.0 * jnp.linalg.pinv(IE2_safe))
    W = jnp.where(ok & active[:, None] & active[None, :], W, jnp.where(ok, 0.0, jnp.nan))
    inner = jnp.einsum("rab,sbc->rsac", PPhi, P) - Q                      # P_r Phi P_s - Q_rs
    inner = inner + jnp.swapaxes(jnp.einsum("rab,sbc->rsac", PPhi, P), 0, 1)  # + P_s Phi P_r
    d2Phi_w = jnp.einsum("rs,rsac->ac", W, inner)
    PhiA = Phi - Phi @ d2Phi_w @ Phi
    return Phi, 0.5 * (PhiA + PhiA.T), P, W


_SATTERTHWAITE = jit_variants(_satterthwaite)
_KENWARD_ROGER = jit_variants(_kenward_roger)


def satterthwaite_program(system: DenseSystem, varpar, active, reml):
    """(A, J, V): covariance of (theta, sigma), d Cov(beta) / d varpar, Cov(beta) (padded)."""
    return _SATTERTHWAITE[compiler_options()](system, varpar, active, reml)


def kenward_roger_program(system: DenseSystem, gamma, cov_index, active, fixed_mask):
    """(Phi, PhiA, P, W) of pbkrtest's ``vcovAdj`` (padded)."""
    return _KENWARD_ROGER[compiler_options()](system, gamma, cov_index, active, fixed_mask)
