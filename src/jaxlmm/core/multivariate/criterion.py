"""The exact REML criterion / ML deviance of the observed entries of a multivariate model.

Notation (``data.py``): after the rotation, record k has ``V_k = s_k Sigma_g + Sigma_e``; ``P = V^-1`` of the
complete data is block diagonal there.  With ``y0`` the responses with their m missing entries set to 0,
``S_m`` the selection of the missing entries and ``D = [S_m^T, I_d (x) X]`` the design of (the missing
entries, ``beta = vec(B)`` trait by trait), the observed entries' likelihood follows from the complete
data's (integrating the missing entries out of a Gaussian):

    log|V_oo|                 = log|V| + log|P_mm|
    X_o^T V_oo^-1 X_o         = the Schur complement of P_mm in  J = D^T P D
    r_o^T V_oo^-1 r_o (min)   = y0^T P y0 - c^T J^-1 c,    c = D^T P y0

so that (``likelihood.criteria.marginal_criterion`` with ``N_o`` observed entries and ``d p`` fixed effects)

    REML:  (N_o - d p) log 2 pi + log|V| + log|J| + q        ML:  N_o log 2 pi + log|V| + log|P_mm| + q.

Only d x d matrices per record, the (d p + m) x (d p + m) matrix ``J`` and its Cholesky factor enter: no
(n d) x (n d) matrix.  ``P_mm[(t, a), (u, b)] = sum_k Um[t, a, k] (V_k^-1)[t, u] Um[u, b, k]``.  At the
minimum the filled entries are the BLUPs of the missing ones given the observed (the completed residual
``r*`` satisfies ``P r* = S_o^T V_oo^-1 r_o``), so every estimate is read off the complete-data formulas.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from ..likelihood.criteria import marginal_criterion
from ..linalg import factor as linalg
from .covariance import TraitCovariance
from .data import MultivariateData


class Spec(NamedTuple):
    """The static description: the structures of ``Sigma_g`` and ``Sigma_e``."""

    genetic: TraitCovariance
    residual: TraitCovariance

    @property
    def n_params(self) -> int:
        return self.genetic.n_params + self.residual.n_params

    def matrices(self, params):
        kg = self.genetic.n_params
        return self.genetic.matrix(params[:kg]), self.residual.matrix(params[kg:])


class Pieces(NamedTuple):
    """What one evaluation factors: everything the criterion and the estimates need."""

    Sg: object
    Se: object
    Vinv: object       # (n, d, d)
    logdet_V: object
    LJ: object         # Cholesky factor of J (missing entries first, then beta)
    z: object          # LJ^-1 c
    yPy: object
    n_missing: int     # d * m_max (rows of J before beta's)


def _pieces(params, data: MultivariateData, spec: Spec) -> Pieces:
    Sg, Se = spec.matrices(params)
    d = Sg.shape[0]
    V = data.s[:, None, None] * Sg[None] + Se[None]
    L = linalg.cholesky(V)                    # d x d stacks: written out, no batched LAPACK call
    logdet_V = 2.0 * jnp.sum(jnp.log(linalg.diag(L)))
    Linv = linalg.inverse_lower(L)
    Vinv = jnp.einsum("kba,kbc->kac", Linv, Linv)                       # L^-T L^-1
    Xr, Yr = data.Xr, data.Yr
    p = Xr.shape[1]
    W = jnp.einsum("kab,kb->ka", Vinv, Yr)                               # rotated P y0
    yPy = jnp.sum(Yr * W)
    XtPX = jnp.einsum("kab,ki,kj->aibj", Vinv, Xr, Xr).reshape(d * p, d * p)
    XtPy = (Xr.T @ W).T.reshape(d * p)
    m_max = data.Um.shape[1]
    if m_max == 0:
        J, c = XtPX, XtPy
    else:
        Um = data.Um
        M = d * m_max
        Pmm = jnp.einsum("tak,ktu,ubk->taub", Um, Vinv, Um).reshape(M, M)
        Pmm = Pmm + jnp.diag(1.0 - data.m_mask.reshape(M).astype(Pmm.dtype))     # padding: identity
        PmX = jnp.einsum("tak,ktb,ki->tabi", Um, Vinv, Xr).reshape(M, d * p)
        Pmy = jnp.einsum("tak,kt->ta", Um, W).reshape(M)
        J = jnp.block([[Pmm, PmX], [PmX.T, XtPX]])
        c = jnp.concatenate([Pmy, XtPy])
    LJ = linalg.cholesky(J)
    z = linalg.solve_lower(LJ, c[:, None])[:, 0]
    return Pieces(Sg, Se, Vinv, logdet_V, LJ, z, yPy, d * m_max)


def criterion(params, data: MultivariateData, spec: Spec, reml):
    """The REML criterion (``reml``) or ML deviance of the observed entries at ``params`` (module docstring).
    ``reml`` may be a traced boolean (both are formed, one is kept: the scan's lanes mix them)."""
    pc = _pieces(params, data, spec)
    logdiag = jnp.log(linalg.diag(pc.LJ))
    logdet_J = 2.0 * jnp.sum(logdiag)
    logdet_Pmm = 2.0 * jnp.sum(logdiag[:pc.n_missing])
    q = pc.yPy - pc.z @ pc.z
    n_fixed = pc.LJ.shape[0] - pc.n_missing

    def value(flag: bool):
        return marginal_criterion(pc.logdet_V + logdet_Pmm, logdet_J - logdet_Pmm, q, data.n_obs, n_fixed, flag)

    if isinstance(reml, bool):
        return value(reml)
    return jnp.where(reml, value(True), value(False))


class Estimates(NamedTuple):
    """The estimates at ``params``: ``B`` (p, d), ``cov_beta`` (d p, d p; beta = vec(B), trait by trait), the
    filled missing entries ``gamma_m`` (d, m_max; minus their BLUPs), ``Pr`` (n, d) ``P r*`` in the rotated
    records, ``Sigma_g``, ``Sigma_e``."""

    B: object
    cov_beta: object
    gamma_m: object
    Pr: object
    Sg: object
    Se: object


def estimates(params, data: MultivariateData, spec: Spec) -> Estimates:
    """GLS fixed effects, their covariance and ``P r*`` at ``params`` (module docstring)."""
    pc = _pieces(params, data, spec)
    d = pc.Sg.shape[0]
    p = data.Xr.shape[1]
    gamma = linalg.solve_upper_t(pc.LJ, pc.z[:, None])[:, 0]
    M = pc.n_missing
    beta = gamma[M:]
    B = beta.reshape(d, p).T
    Linv = linalg.inverse_lower(pc.LJ)
    cov_beta = (Linv.T @ Linv)[M:, M:]
    m_max = data.Um.shape[1]
    gamma_m = gamma[:M].reshape(d, m_max)
    R = data.Yr - data.Xr @ B
    if m_max:
        R = R - jnp.einsum("tak,ta->kt", data.Um, gamma_m)
    Pr = jnp.einsum("kab,kb->ka", pc.Vinv, R)
    return Estimates(B, cov_beta, gamma_m, Pr, pc.Sg, pc.Se)
