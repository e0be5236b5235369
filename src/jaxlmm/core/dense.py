"""The profiled deviance of a small model as one dense Cholesky factor, with its structure as data.

With ``A = [Z X y]^T W [Z X y]`` (``y`` minus the offset and a least-squares
shift, see ``crossprod.least_squares_shift``) and ``Lambda(theta)`` the
``q x q`` relative covariance factor, lme4's penalized system is

    Omega(theta) = [ Lambda^T A_zz Lambda + I    Lambda^T A_zr ]
                   [ A_rz Lambda                 A_rr          ],    r = [X y],

and its lower Cholesky factor ``L`` gives ``log|L_Z|^2``, ``log|R_X|^2`` and
the PWRSS ``L[-1, -1]^2`` (``deviance.py`` states the criterion).

Everything that depends on the model's structure is an array here, not a
Python constant: ``Lambda = theta_ext[lam_index]`` is a gather through a
``q x q`` index matrix (``theta_ext`` is theta with a 0 appended; structural
zeros point at it), and ``q``, ``p`` and ``k = len(theta)`` are padded to
buckets (``DenseLayout``).  Padded random-effect columns have no rows and no
entry in ``Lambda`` (they add a unit diagonal), padded fixed-effect columns
have a unit diagonal in ``A``, and padded thetas are held at their bound 0,
so padding changes no number, and every model of one bucket -- whatever its
formula -- runs the same compiled program.

The optimizer's loop runs on the host (``newton_host.py``), so these
programs contain no loop and call LAPACK directly: one Cholesky factor and
one triangular inverse per evaluation, first and second derivatives in closed
form (``value_grad_hessian``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from jax.scipy.linalg import solve_triangular

from .deviance import DevianceParts, criterion_from_parts


class DenseSystem(NamedTuple):
    """The cross-products and the structure of one response, padded (all leaves are arrays).

    - ``A``         (m, m): ``[Z X y]^T W [Z X y]``, m = q + p + 1
    - ``lam_index`` (q, q) int32: ``Lambda[i, j] = theta_ext[lam_index[i, j]]``
    - ``p``         (): the number of real fixed-effect columns (REML's ``n - p``)
    - ``n_obs``, ``sum_log_w`` (): rows with positive weight and their summed log weights
    - ``beta_shift`` (p_padded,): the least-squares shift of y, added back to beta
    - ``x_scale`` (p_padded,), ``y_scale`` (): the columns of X and the shifted y are divided by
      these (their root mean squares) before ``A`` is formed; ``factor`` and the estimates undo it

    With ``D = diag(x_scale)``, the system's factor is ``S L`` for ``S = diag(1, D^{-1}, 1/y_scale)``:
    ``log|L_Z|`` is unchanged, ``log|R_X|^2`` drops ``2 sum log x_scale`` and the PWRSS is divided by
    ``y_scale^2`` (constants in theta, added back exactly), and ``beta = shift + y_scale D^{-1} beta'``.
    """

    A: jnp.ndarray
    lam_index: jnp.ndarray
    p: jnp.ndarray
    n_obs: jnp.ndarray
    sum_log_w: jnp.ndarray
    beta_shift: jnp.ndarray
    x_scale: jnp.ndarray
    y_scale: jnp.ndarray


class DenseSolution(NamedTuple):
    """Estimates at theta, in the padded layout (``dense_layout`` slices them)."""

    criterion: jnp.ndarray
    beta: jnp.ndarray      # (p,)
    sigma: jnp.ndarray
    vcov_beta: jnp.ndarray  # (p, p)
    u: jnp.ndarray         # (q,) spherical random effects
    b: jnp.ndarray         # (q,) Lambda u
    cov_b: jnp.ndarray     # (q, q) sigma^2 Lambda (L_Z L_Z^T)^{-1} Lambda^T
    parts: DevianceParts


def relative_factor(theta: jnp.ndarray, lam_index: jnp.ndarray) -> jnp.ndarray:
    """``Lambda(theta)``: a gather of theta (with a trailing 0 for structural zeros)."""
    theta_ext = jnp.concatenate([theta, jnp.zeros((1,), theta.dtype)])
    return theta_ext[lam_index]


def penalized_system(theta: jnp.ndarray, system: DenseSystem) -> jnp.ndarray:
    """``Omega(theta)`` (module docstring)."""
    q = system.lam_index.shape[0]
    lam = relative_factor(theta, system.lam_index)
    A = system.A
    top = lam.T @ A[:q]                                    # Lambda^T [A_zz A_zr]
    zz = top[:, :q] @ lam + jnp.eye(q, dtype=A.dtype)
    return jnp.block([[zz, top[:, q:]], [top[:, q:].T, A[q:, q:]]])


def factor(theta: jnp.ndarray, system: DenseSystem) -> tuple[jnp.ndarray, DevianceParts]:
    """Lower Cholesky factor of ``Omega(theta)`` and the deviance's parts."""
    q = system.lam_index.shape[0]
    L = jnp.linalg.cholesky(penalized_system(theta, system))
    logd = jnp.log(jnp.diagonal(L))
    parts = DevianceParts(2.0 * jnp.sum(logd[:q]), 2.0 * jnp.sum(logd[q:-1]) + log_x_scale2(system),
                          (L[-1, -1] * system.y_scale) ** 2, system.n_obs, system.sum_log_w)
    return L, parts


def log_x_scale2(system: DenseSystem) -> jnp.ndarray:
    """``2 sum log x_scale``: what scaling X takes off ``log|R_X|^2``."""
    return 2.0 * jnp.sum(jnp.log(system.x_scale))


def dense_deviance(theta: jnp.ndarray, system: DenseSystem, reml=True) -> jnp.ndarray:
    """REML criterion (``reml`` true) or ML deviance at ``theta`` (``reml`` may be traced)."""
    _, parts = factor(theta, system)
    return _criterion(parts, system, reml)


def _criterion(parts: DevianceParts, system: DenseSystem, reml) -> jnp.ndarray:
    return jnp.where(jnp.asarray(reml, bool), criterion_from_parts(parts, system.p, True),
                     criterion_from_parts(parts, system.p, False))


def dense_solve(theta: jnp.ndarray, system: DenseSystem, reml=True) -> DenseSolution:
    """beta, u, b = Lambda u, sigma, Cov(beta) and Cov(b | y) at ``theta``.

    ``L^T [u; beta] = L[-1, :-1]`` (back-substitution), ``sigma^2 = PWRSS / (n - p)``
    (REML) or ``/ n`` (ML), ``Cov(beta) = sigma^2 (R_X R_X^T)^{-1}`` and lme4's
    conditional covariance ``sigma^2 Lambda (L_Z L_Z^T)^{-1} Lambda^T``.
    """
    q = system.lam_index.shape[0]
    L, parts = factor(theta, system)
    crit = _criterion(parts, system, reml)
    x = solve_triangular(L[:-1, :-1], L[-1, :-1], lower=True, trans="T")
    nmp = parts.n_obs - jnp.asarray(reml, parts.n_obs.dtype) * system.p
    sigma2 = parts.pwrss / nmp
    L_inv = triangular_inverse(L[:-1, :-1])
    LX_inv = L_inv[q:, q:]
    LZ_inv = L_inv[:q, :q]
    lam = relative_factor(theta, system.lam_index)
    half = lam @ LZ_inv.T
    u = x[:q] * system.y_scale
    beta = system.beta_shift + system.y_scale * x[q:] / system.x_scale
    RX_inv = LX_inv / system.x_scale[None, :]                   # R_X^{-1} in X's own units: L_X'^{-1} D^{-1}
    return DenseSolution(crit, beta, jnp.sqrt(sigma2), sigma2 * RX_inv.T @ RX_inv,
                         u, lam @ u, sigma2 * half @ half.T, parts)


# ------------------------------------------------------------------ closed-form derivatives
def criterion_weights(system: DenseSystem, reml, xp=jnp):
    """The criterion as ``sum_s c_s log|Omega_s| + const`` over the leading blocks s = Z, [Z X], all.

    With ``nu = n - p`` (REML) the PWRSS is ``|Omega| / |Omega_[Z X]|``, so
    REML: ``c = (0, 1 - nu, nu)``, ``const = nu (1 + log(2 pi / nu)) - sum log w``;
    ML:   ``c = (1, -n, n)``,      ``const = n (1 + log(2 pi / n)) - sum log w``.
    ``reml`` may be a traced 0/1 value: REML and ML fits share one program.  ``xp`` is the
    array module (``numpy`` on the host, for stacks of systems with leaves of shape (B,)).
    """
    n = system.n_obs
    r = xp.asarray(reml, n.dtype)
    nu = n - r * system.p                       # n - p (REML) or n (ML)
    c = xp.stack([1.0 - r + 0.0 * n, r * (1.0 - nu) - (1.0 - r) * n, nu], axis=-1)
    return c, nu * (1.0 + xp.log(2.0 * xp.pi / nu)) - system.sum_log_w


def block_derivatives(theta: jnp.ndarray, system: DenseSystem, row_of: jnp.ndarray):
    """``log|Omega_s|`` of the leading blocks s = Z, [Z X], all, with gradients and Hessians in theta.

    Returns ``(logdets (3,), grads (3, k), hessians (3, k, k))`` in the original units of X and y
    (the scaling constants of ``DenseSystem`` added back).  Every criterion of the model is a
    function of these three (the REML and ML criteria, ``combine``), so one compiled program
    serves the fits of every model of a size bucket.

    ``Lambda = sum_i theta_i E_i`` with 0/1 matrices ``E_i``; ``row_of[i, c]`` is the row of
    ``E_i``'s only nonzero in column c (``q`` where the column has none).  With
    ``Omega_i = G_i + G_i^T``, ``G_i = E_i^T [A_zz Lambda, A_zr]`` in the rows of Z, and
    ``P_s`` the inverse of the leading block s of ``Omega`` (zero-padded):

        d log|Omega_s| / d theta_i = tr(P_s Omega_i)
        d^2 log|Omega_s| / d theta_i d theta_j = -tr(P_s Omega_i P_s Omega_j) + 2 tr(P_s E_i^T A_zz E_j)

    (``Omega`` is quadratic in theta).  ``P_s = M_s^T M_s`` with ``M_s`` the leading
    block of ``L^{-1}``: one Cholesky factor and one triangular inverse serve all three blocks.
    The products are dense matrix products (a CPU runs them far faster than the equivalent gathers).
    """
    q = system.lam_index.shape[0]
    A = system.A
    m = A.shape[0]
    dtype = A.dtype
    lam = relative_factor(theta, system.lam_index)
    A_lam = jnp.concatenate([A[:, :q] @ lam, A[:, q:]], axis=1)          # A Lambda_e
    omega = jnp.concatenate([lam.T @ A_lam[:q], A_lam[q:]], axis=0) + jnp.diag(
        (jnp.arange(m) < q).astype(dtype))
    L = jnp.linalg.cholesky(omega)
    L_inv = triangular_inverse(L)
    logd = jnp.log(jnp.diagonal(L))
    idx = jnp.arange(m)
    inside = jnp.stack([idx < s for s in (q, m - 1, m)])                  # (3, m)
    M = L_inv[None] * inside[:, :, None] * inside[:, None, :]
    P = jnp.einsum("sam,san->smn", M, M)                                  # (3, m, m)
    units = jnp.stack([jnp.zeros((), dtype), log_x_scale2(system), log_x_scale2(system)
                       + 2.0 * jnp.log(system.y_scale)])
    logdets = 2.0 * jnp.sum(jnp.where(inside, logd[None], 0.0), axis=1) + units

    G = jnp.concatenate([A_lam[:q], jnp.zeros((1, m), dtype)], axis=0)[row_of]    # (k, q, m)
    grads = 2.0 * jnp.einsum("icm,smc->si", G, P[:, :, :q])
    K = jnp.einsum("sac,icb->siab", P[:, :, :q], G)                       # P_s G_i (G_i in the rows of Z)
    K = K.at[:, :, :, :q].add(jnp.einsum("sab,icb->siac", P, G))          # + P_s G_i^T
    A_ext = jnp.pad(A[:q, :q], ((0, 1), (0, 1)))
    pairs = A_ext[row_of[:, None, :, None], row_of[None, :, None, :]]      # (k, k, q, q): (E_i^T A E_j)[b, d]
    H = -jnp.einsum("siab,sjba->sij", K, K) + 2.0 * jnp.einsum("ijbd,sdb->sij", pairs, P[:, :q, :q])
    return logdets, grads, 0.5 * (H + jnp.swapaxes(H, 1, 2))


def combine(blocks, system: DenseSystem, reml):
    """The REML or ML criterion, gradient and Hessian from ``block_derivatives`` (``criterion_weights``)."""
    logdets, grads, hessians = blocks
    c, const = criterion_weights(system, reml)
    return jnp.dot(c, logdets) + const, c @ grads, jnp.einsum("s,sij->ij", c, hessians)


def value_grad_hessian(theta: jnp.ndarray, system: DenseSystem, row_of: jnp.ndarray, reml=True):
    """The criterion, its gradient and Hessian in theta, in closed form (no autodiff through Cholesky)."""
    return combine(block_derivatives(theta, system, row_of), system, reml)


def triangular_inverse(L: jnp.ndarray) -> jnp.ndarray:
    """``L^{-1}`` for lower-triangular ``L`` (its leading blocks invert L's leading blocks)."""
    return solve_triangular(L, jnp.eye(L.shape[-1], dtype=L.dtype), lower=True)
