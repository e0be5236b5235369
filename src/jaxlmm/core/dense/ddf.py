"""Satterthwaite and Kenward-Roger ingredients for small models, from the dense system.

The same quantities as ``core/pls/ddf.py`` (which states them), with the
model's structure as data (``dense/system.py``): one program per size bucket.

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

import jax.numpy as jnp

from ..likelihood.criteria import beta_covariance, explicit_criterion
from ..likelihood.ddf_parts import (adjusted_covariance, information_inverse, satterthwaite_parts,
                                   unit_outside)
from .system import DenseSystem, factor
from .programs import compiler_options, jit_variants


def deviance_varpar(varpar, system: DenseSystem, reml):
    """lmerTest's ``devfun_vp`` at ``(theta, sigma)``, beta profiled (``reml`` may be traced)."""
    theta, sigma = varpar[:-1], varpar[-1]
    _, parts = factor(theta, system)
    return explicit_criterion(parts.ldL2, parts.ldRX2, parts.pwrss, parts.n_obs, system.p, sigma ** 2, reml)


def vcov_beta_varpar(varpar, system: DenseSystem):
    """``sigma^2 (R_X R_X^T)^{-1}`` at ``(theta, sigma)`` (padded columns included)."""
    from .system import triangular_inverse

    q = system.lam_index.shape[0]
    L, _ = factor(varpar[:-1], system)
    RX_inv = triangular_inverse(L[q:-1, q:-1]) / system.x_scale[None, :]     # back to X's units
    return beta_covariance(varpar[-1] ** 2, RX_inv)


def _satterthwaite(system: DenseSystem, varpar, active, reml):
    A, J, V, _ = satterthwaite_parts(lambda vp: deviance_varpar(vp, system, reml),
                                     lambda vp: vcov_beta_varpar(vp, system), varpar, active)
    return A, J, V


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
    M = unit_outside(jnp, 0.5 * (M + M.T), fixed_mask)
    return system.n_obs * jnp.log(s2) - system.sum_log_w + logdet, M


def marginal_derivatives(gamma, system: DenseSystem, cov_index, fixed_mask):
    """``M``, its first and second derivatives ``P_r``, ``Q_rs`` and the Hessian of ``log|V|`` in gamma,
    in closed form (one LU factor of ``K``; no differentiation through it).

    With ``C = Gamma / s2`` (``Gamma = sum_r gamma_r E_r``), ``K = I + C A_zz``, ``F = K^{-1}``,
    ``H = F C`` (symmetric) and ``N = X^T W X - A_xz H A_zx``, so that ``M = N / s2``:

        dH = F dC F^T,   d2H_rs = F C_rs F^T - S_sr - S_sr^T,   S_sr = F C_s A F C_r F^T
        d2 log|K|_rs = tr(F C_rs A) - tr(F C_s A F C_r A),

    where ``dC_r = E_r / s2`` and ``dC_s2 = -Gamma / s2^2`` (second derivatives only in s2).
    """
    q = cov_index.shape[0]
    R = gamma.shape[0]
    dtype = gamma.dtype
    s2 = gamma[-1]
    E = (cov_index[None] == jnp.arange(R - 1)[:, None, None]).astype(dtype)          # (R-1, q, q)
    Gamma = jnp.einsum("r,rab->ab", gamma[:-1], E)
    A = system.A
    Azz, Bzx, XtWX = A[:q, :q], A[:q, q:-1], A[q:-1, q:-1]
    dC = jnp.concatenate([E / s2, (-Gamma / s2 ** 2)[None]], axis=0)                  # (R, q, q)
    last = (jnp.arange(R) == R - 1).astype(dtype)
    d2C = (-(E / s2 ** 2)[:, None] * last[None, :, None, None])                       # (R-1, R, q, q)
    d2C = jnp.concatenate([d2C, jnp.concatenate([-(E / s2 ** 2), (2.0 * Gamma / s2 ** 3)[None]])[None]], axis=0)
    C = Gamma / s2
    K = jnp.eye(q, dtype=dtype) + C @ Azz
    F = jnp.linalg.inv(K)
    logdet_K = jnp.linalg.slogdet(K)[1]
    U = jnp.einsum("ab,rbc->rac", F, dC)                                               # F dC_r
    dH = jnp.einsum("rab,cb->rac", U, F)                                               # F dC_r F^T
    UA = jnp.einsum("rab,bc->rac", U, Azz)                                             # F dC_r A
    d2_logK = jnp.einsum("rsbc,cb->rs", d2C, Azz @ F) - jnp.einsum("sab,rba->rs", UA, UA)
    FB = F.T @ Bzx                                                                     # (q, p)
    H = F @ C
    N = XtWX - Bzx.T @ H @ Bzx
    dN = -jnp.einsum("aq,rab,bt->rqt", Bzx, dH, Bzx)
    left = jnp.einsum("aq,sab->sqb", Bzx, UA)                                          # B^T F dC_s A
    right = jnp.einsum("rbc,ct->rbt", dH, Bzx)                                         # F dC_r F^T B
    S = jnp.einsum("sqb,rbt->rsqt", left, right)
    d2N = -jnp.einsum("aq,rsab,bt->rsqt", FB, d2C, FB) + S + jnp.swapaxes(S, 2, 3)
    t, dt_, d2t = 1.0 / s2, -last / s2 ** 2, 2.0 * last[:, None] * last[None, :] / s2 ** 3
    M = N * t
    dM = dN * t + N[None] * dt_[:, None, None]
    d2M = (d2N * t + dN[:, None] * dt_[None, :, None, None] + dN[None, :] * dt_[:, None, None, None]
           + N[None, None] * d2t[:, :, None, None])
    D = system.x_scale[:, None] * system.x_scale[None, :]                              # back to X's units
    keep = (fixed_mask[:, None] & fixed_mask[None, :]).astype(dtype)

    def unit(Mx):
        return 0.5 * (Mx + jnp.swapaxes(Mx, -1, -2)) * D * keep

    M = unit(M) + jnp.diag(1.0 - fixed_mask.astype(dtype))
    d2_log_v = d2_logK - system.n_obs / s2 ** 2 * last[:, None] * last[None, :]
    return M, unit(dM), unit(d2M), d2_log_v, logdet_K


def _kenward_roger(system: DenseSystem, gamma, cov_index, active, fixed_mask):
    """pbkrtest's ingredients from the first and second derivatives ``P_r``, ``Q_rs`` of M.

    ``d^2 log|M| = tr(Phi Q_rs) - tr(Phi P_r Phi P_s)`` (``Phi = M^{-1}``); ``M``, ``P``, ``Q`` and the
    Hessian of ``log|V|`` come in closed form from ``marginal_derivatives``, the rest from
    ``likelihood.ddf_parts`` (V is linear in gamma: the second-order term is ``Q / 2``).
    """
    M, P, Q, d2_log_v, _ = marginal_derivatives(gamma, system, cov_index, fixed_mask)
    Phi = jnp.linalg.inv(M)
    PPhi = jnp.einsum("rab,bc->rac", P, Phi)                               # P_r Phi
    hess_log_m = jnp.einsum("ab,rsba->rs", Phi, Q) - jnp.einsum("rab,sba->rs", PPhi, PPhi)
    W = information_inverse(jnp, -(d2_log_v + hess_log_m), active)
    return Phi, adjusted_covariance(jnp, Phi, P, W, 0.5 * Q), P, W


_SATTERTHWAITE = jit_variants(_satterthwaite)
_KENWARD_ROGER = jit_variants(_kenward_roger)


def satterthwaite_program(system: DenseSystem, varpar, active, reml):
    """(A, J, V): covariance of (theta, sigma), d Cov(beta) / d varpar, Cov(beta) (padded)."""
    return _SATTERTHWAITE[compiler_options()](system, varpar, active, reml)


def kenward_roger_program(system: DenseSystem, gamma, cov_index, active, fixed_mask):
    """(Phi, PhiA, P, W) of pbkrtest's ``vcovAdj`` (padded)."""
    return _KENWARD_ROGER[compiler_options()](system, gamma, cov_index, active, fixed_mask)
