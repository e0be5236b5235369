"""The profiled deviance of a small model as one dense Cholesky factor, with its structure as data.

With ``A = [Z X y]^T W [Z X y]`` (``y`` minus the offset and a least-squares
shift, see ``crossprod.least_squares_shift``) and ``Lambda(theta)`` the
``q x q`` relative covariance factor, lme4's penalized system is

    Omega(theta) = [ Lambda^T A_zz Lambda + I    Lambda^T A_zr ]
                   [ A_rz Lambda                 A_rr          ],    r = [X y],

and its lower Cholesky factor ``L`` gives ``log|L_Z|^2``, ``log|R_X|^2`` and
the PWRSS ``L[-1, -1]^2`` (``pls/criterion.py`` states the criterion).

Everything that depends on the model's structure is an array here, not a
Python constant: ``Lambda = theta_ext[lam_index]`` is a gather through a
``q x q`` index matrix (``theta_ext`` is theta with a 0 appended; structural
zeros point at it), and ``q``, ``p`` and ``k = len(theta)`` are padded to
buckets (``DenseLayout``).  Padded random-effect columns have no rows and no
entry in ``Lambda`` (they add a unit diagonal), padded fixed-effect columns
have a unit diagonal in ``A``, and padded thetas are held at their bound 0,
so padding changes no number, and every model of one bucket -- whatever its
formula -- runs the same compiled program.

The optimizer's loop runs on the host (``optim/host.py``), so these
programs contain no loop and call LAPACK directly: one Cholesky factor and
one triangular inverse per evaluation, first and second derivatives in closed
form (``value_grad_hessian``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from jax.scipy.linalg import solve_triangular

from ..likelihood.criteria import beta_covariance
from ..pls.criterion import DevianceParts, criterion_from_parts


class DenseSystem(NamedTuple):
    """The cross-products and the structure of one response, padded (all leaves are arrays).

    - ``A``         (m, m): ``[Z X y]^T W [Z X y]``, m = q + p + 1
    - ``lam_index`` (q, q) int32: ``Lambda[i, j] = theta_ext[lam_index[i, j]]``
    - ``p``         (): the number of real fixed-effect columns (REML's ``n - p``)
    - ``n_obs``, ``sum_log_w`` (): rows with positive weight and their summed log weights
    - ``beta_shift`` (p_padded,): the least-squares shift of y, added back to beta
    - ``x_scale`` (p_padded,), ``y_scale`` (): the columns of X and the shifted y are divided by
      these (their root mean squares) before ``A`` is formed; ``factor`` and the estimates undo it

    - ``ref_b`` (q_padded,), ``ref_beta`` (p_padded,): a reference fit ``Z ref_b + X ref_beta`` of the
      (shifted, scaled) response; the last row and column of ``A`` are the cross-products of its residual
      ``e = y - Z ref_b - X ref_beta``, not of y (zeros: ``e = y``; ``dense_layout.rereference``)

    With ``D = diag(x_scale)``, the system's factor is ``S L`` for ``S = diag(1, D^{-1}, 1/y_scale)``:
    ``log|L_Z|`` is unchanged, ``log|R_X|^2`` drops ``2 sum log x_scale`` and the PWRSS is divided by
    ``y_scale^2`` (constants in theta, added back exactly), and ``beta = shift + y_scale D^{-1} beta'``.

    The PWRSS is never read off the factor's last diagonal element, ``y'y - |L_[ZX]^{-1} a|^2``, whose
    relative error is ``eps y'y / PWRSS`` (1e-6 and worse on near-perfect fits: a criterion that
    scatters over theta steps): it is ``|r|^2 + |u|^2`` at the solution, with
    ``r = e + Z (ref_b - Lambda u) + X (ref_beta - beta)`` (``pwrss``) -- each term small when the
    reference is near the solution, which ``dense_fit`` arranges where it matters.
    """

    A: jnp.ndarray
    lam_index: jnp.ndarray
    p: jnp.ndarray
    n_obs: jnp.ndarray
    sum_log_w: jnp.ndarray
    beta_shift: jnp.ndarray
    x_scale: jnp.ndarray
    y_scale: jnp.ndarray
    ref_b: jnp.ndarray
    ref_beta: jnp.ndarray


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


def y_products(system: DenseSystem) -> jnp.ndarray:
    """``[Z X]^T W y`` of the response itself: the residual's products (A's last column) plus the
    reference fit's, ``A_[ZX] [ref_b; ref_beta]``."""
    A = system.A
    ref = jnp.concatenate([system.ref_b, system.ref_beta])
    return A[:-1, -1] + A[:-1, :-1] @ ref


def penalized_system(theta: jnp.ndarray, system: DenseSystem) -> jnp.ndarray:
    """``Omega(theta)`` (module docstring) with the response's row and column replaced by a unit
    diagonal: its Cholesky factor is ``[L_[ZX] 0; 0 1]`` (the PWRSS is ``pwrss``'s)."""
    q = system.lam_index.shape[0]
    lam = relative_factor(theta, system.lam_index)
    A = system.A
    m = A.shape[0]
    last = jnp.arange(m) == m - 1
    A = jnp.where(last[:, None] | last[None, :], jnp.diag(last.astype(A.dtype)), A)
    top = lam.T @ A[:q]                                    # Lambda^T [A_zz A_zr]
    zz = top[:, :q] @ lam + jnp.eye(q, dtype=A.dtype)
    return jnp.block([[zz, top[:, q:]], [top[:, q:].T, A[q:, q:]]])


def right_side(lam: jnp.ndarray, system: DenseSystem) -> jnp.ndarray:
    """``[Lambda^T Z^T W y; X^T W y; 0]``: the penalized system's right-hand side (padded to m)."""
    q = system.lam_index.shape[0]
    a = y_products(system)
    return jnp.concatenate([lam.T @ a[:q], a[q:], jnp.zeros((1,), a.dtype)])


def pwrss(lam: jnp.ndarray, v: jnp.ndarray, system: DenseSystem):
    """``(|r|^2 + |u|^2, [Z X]^T W r)`` at ``v = [u; beta; 0]``, ``r = y - Z Lambda u - X beta``, from the
    reference residual's products and the differences ``d`` to the reference fit (``DenseSystem``)."""
    q = system.lam_index.shape[0]
    A = system.A
    u = v[:q]
    d = jnp.concatenate([system.ref_b - lam @ u, system.ref_beta - v[q:-1]])
    Ad = A[:-1, :-1] @ d
    zr = A[:-1, -1] + Ad
    rr = A[-1, -1] + jnp.dot(d, A[:-1, -1] + zr)
    return rr + jnp.dot(u, u), zr


def refine(lam: jnp.ndarray, v: jnp.ndarray, solve, system: DenseSystem):
    """One Newton step on ``|r|^2 + |u|^2`` from ``v`` with the precise gradient
    ``[u - Lambda^T Z^T W r; -X^T W r]`` (``pwrss``; ``solve`` applies ``Omega_[Z X]^{-1}``), and
    ``pwrss`` there: on an ill-conditioned system (large theta) the solution of the normal
    equations is off by ``eps cond`` and the PWRSS by the square of that in its metric."""
    q = system.lam_index.shape[0]
    _, zr = pwrss(lam, v, system)
    half_grad = jnp.concatenate([v[:q] - lam.T @ zr[:q], -zr[q:], jnp.zeros((1,), v.dtype)])
    v = v - solve(half_grad)
    return (v,) + pwrss(lam, v, system)


def factor(theta: jnp.ndarray, system: DenseSystem) -> tuple[jnp.ndarray, DevianceParts]:
    """Lower Cholesky factor of ``penalized_system`` and the deviance's parts."""
    L, parts, _ = _factor_solve(theta, system)
    return L, parts


def _factor_solve(theta: jnp.ndarray, system: DenseSystem):
    """The factor, the deviance's parts and the solution ``v = [u; beta'; 0]``."""
    q = system.lam_index.shape[0]
    lam = relative_factor(theta, system.lam_index)
    L = jnp.linalg.cholesky(penalized_system(theta, system))
    def solve(b):
        return solve_triangular(L, solve_triangular(L, b, lower=True), lower=True, trans="T")

    v, p2, _ = refine(lam, solve(right_side(lam, system)), solve, system)
    logd = jnp.log(jnp.diagonal(L))
    parts = DevianceParts(2.0 * jnp.sum(logd[:q]), 2.0 * jnp.sum(logd[q:-1]) + log_x_scale2(system),
                          p2 * system.y_scale ** 2, system.n_obs, system.sum_log_w)
    return L, parts, v


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

    ``L_[ZX]^T L_[ZX] [u; beta] = [Lambda^T Z^T W y; X^T W y]``, ``sigma^2 = PWRSS / (n - p)``
    (REML) or ``/ n`` (ML), ``Cov(beta) = sigma^2 (R_X R_X^T)^{-1}`` and lme4's
    conditional covariance ``sigma^2 Lambda (L_Z L_Z^T)^{-1} Lambda^T``.
    """
    q = system.lam_index.shape[0]
    L, parts, x = _factor_solve(theta, system)
    crit = _criterion(parts, system, reml)
    nmp = parts.n_obs - jnp.asarray(reml, parts.n_obs.dtype) * system.p
    sigma2 = parts.pwrss / nmp
    L_inv = triangular_inverse(L[:-1, :-1])
    LX_inv = L_inv[q:, q:]
    LZ_inv = L_inv[:q, :q]
    lam = relative_factor(theta, system.lam_index)
    half = lam @ LZ_inv.T
    u = x[:q] * system.y_scale
    beta = system.beta_shift + system.y_scale * x[q:-1] / system.x_scale
    RX_inv = LX_inv / system.x_scale[None, :]                   # R_X^{-1} in X's own units: L_X'^{-1} D^{-1}
    return DenseSolution(crit, beta, jnp.sqrt(sigma2), beta_covariance(sigma2, RX_inv),
                         u, lam @ u, sigma2 * half @ half.T, parts)


# ------------------------------------------------------------------ closed-form derivatives
def criterion_weights(system: DenseSystem, reml, xp=jnp):
    """The criterion as ``c_Z log|Omega_Z| + c_ZX log|Omega_[Z X]| + c_p log PWRSS + const``.

    With ``nu = n - p`` (REML) or ``n`` (ML):
    REML: ``c = (0, 1, nu)``, ``const = nu (1 + log(2 pi / nu)) - sum log w``;
    ML:   ``c = (1, 0, n)``,  ``const = n (1 + log(2 pi / n)) - sum log w``.
    ``reml`` may be a traced 0/1 value: REML and ML fits share one program.  ``xp`` is the
    array module (``numpy`` on the host, for stacks of systems with leaves of shape (B,)).
    """
    n = system.n_obs
    r = xp.asarray(reml, n.dtype)
    nu = n - r * system.p                       # n - p (REML) or n (ML)
    c = xp.stack([1.0 - r + 0.0 * n, r + 0.0 * n, nu], axis=-1)
    return c, nu * (1.0 + xp.log(2.0 * xp.pi / nu)) - system.sum_log_w


def block_derivatives(theta: jnp.ndarray, system: DenseSystem, row_of: jnp.ndarray):
    """``log|Omega_Z|``, ``log|Omega_[Z X]|`` and ``log PWRSS`` with their gradients and Hessians in theta.

    Returns ``(logdets (3,), grads (3, k), hessians (3, k, k))`` in the original units of X and y
    (the scaling constants of ``DenseSystem`` added back).  Every criterion of the model is a
    function of these three (the REML and ML criteria, ``combine``), so one compiled program
    serves the fits of every model of a size bucket.

    ``Lambda = sum_i theta_i E_i`` with 0/1 matrices ``E_i``; ``row_of[i, c]`` is the row of
    ``E_i``'s only nonzero in column c (``q`` where the column has none).  With
    ``Omega_i = G_i + G_i^T``, ``G_i = E_i^T [A_zz Lambda, A_zr]`` in the rows of Z, and
    ``P_s`` the inverse of the leading block s of ``Omega`` (zero-padded; s = all: the whole system):

        d log|Omega_s| / d theta_i = tr(P_s Omega_i)
        d^2 log|Omega_s| / d theta_i d theta_j = -tr(P_s Omega_i P_s Omega_j) + 2 tr(P_s E_i^T A_zz E_j)

    (``Omega`` is quadratic in theta), and ``log PWRSS = log|Omega| - log|Omega_[Z X]|``.
    ``P_s = M_s^T M_s`` with ``M_s`` the leading block of ``L_[Z X]^{-1}`` (one Cholesky factor
    and one triangular inverse); the whole system's ``P = P_[Z X] + w w^T / PWRSS``,
    ``w = [-v; 1]`` with ``v = [u; beta]`` the solution.  The PWRSS itself and its gradient
    ``-2 u^T E_i^T Z^T W r`` (envelope theorem) are computed from the residual (``pwrss``), not from
    differences of log-determinants, which lose its digits on near-perfect fits.
    The products are dense matrix products (a CPU runs them far faster than the equivalent gathers).
    """
    A = system.A
    m = A.shape[0]
    last = jnp.arange(m) == m - 1
    a = y_products(system)
    Ay = jnp.where(last[:, None] | last[None, :], 0.0, A).at[:-1, -1].set(a).at[-1, :-1].set(a)
    q, idx, dtype, lam, A_lam, omega = _omega(theta, system, Ay)
    L = jnp.linalg.cholesky(jnp.where(last[:, None] | last[None, :], jnp.diag(last.astype(dtype)), omega))
    L_inv = triangular_inverse(L)
    logd = jnp.log(jnp.diagonal(L))
    inside = jnp.stack([idx < q, idx < m - 1])                            # (2, m)
    M = L_inv[None] * inside[:, :, None] * inside[:, None, :]
    P = jnp.einsum("sam,san->smn", M, M)                                  # P_Z, P_[Z X]
    v, p2, zr = refine(lam, P[1] @ omega[:, -1], lambda b: P[1] @ b, system)   # [u; beta; 0]
    w = jnp.where(last, 1.0, -v)
    P = jnp.concatenate([P, (P[1] + jnp.outer(w, w) / p2)[None]], axis=0)  # (3, m, m)
    units = jnp.stack([jnp.zeros((), dtype), log_x_scale2(system), 2.0 * jnp.log(system.y_scale)])
    logdets = 2.0 * jnp.sum(jnp.where(inside, logd[None], 0.0), axis=1)
    logdets = jnp.concatenate([logdets, jnp.log(p2)[None]]) + units

    grads, H = _trace_derivatives(P, A_lam, A, row_of)
    zr_ext = jnp.concatenate([zr[:q], jnp.zeros((1,), dtype)])
    grads = jnp.concatenate([grads[:2], (-2.0 * jnp.einsum("ic,c->i", zr_ext[row_of], v[:q]) / p2)[None]])
    H = H.at[2].add(-H[1])                                                # log PWRSS = log|Omega| - log|Omega_ZX|
    return logdets, grads, 0.5 * (H + jnp.swapaxes(H, 1, 2))


def _omega(theta, system: DenseSystem, A):
    """``(q, arange(m), dtype, Lambda_e, A Lambda_e, Omega(theta))`` of the products ``A`` (m x m)."""
    q = system.lam_index.shape[0]
    idx = jnp.arange(A.shape[0])
    lam = relative_factor(theta, system.lam_index)
    A_lam = jnp.concatenate([A[:, :q] @ lam, A[:, q:]], axis=1)          # A Lambda_e
    omega = jnp.concatenate([lam.T @ A_lam[:q], A_lam[q:]], axis=0) + jnp.diag((idx < q).astype(A.dtype))
    return q, idx, A.dtype, lam, A_lam, omega


def _trace_derivatives(P, A_lam, A, row_of):
    """``d log|Omega_s| / d theta_i = tr(P_s Omega_i)`` and the second derivatives (``block_derivatives``'
    docstring) for every block ``s`` of ``P`` (s, m, m)."""
    q, m = row_of.shape[1], A_lam.shape[1]
    G = jnp.concatenate([A_lam[:q], jnp.zeros((1, m), A.dtype)], axis=0)[row_of]    # (k, q, m)
    grads = 2.0 * jnp.einsum("icm,smc->si", G, P[:, :, :q])
    K = jnp.einsum("sac,icb->siab", P[:, :, :q], G)                       # P_s G_i (G_i in the rows of Z)
    K = K.at[:, :, :, :q].add(jnp.einsum("sab,icb->siac", P, G))          # + P_s G_i^T
    A_ext = jnp.pad(A[:q, :q], ((0, 1), (0, 1)))
    pairs = A_ext[row_of[:, None, :, None], row_of[None, :, None, :]]      # (k, k, q, q): (E_i^T A E_j)[b, d]
    H = -jnp.einsum("siab,sjba->sij", K, K) + 2.0 * jnp.einsum("ijbd,sdb->sij", pairs, P[:, :q, :q])
    return grads, H


def without_reference(system: DenseSystem) -> DenseSystem:
    """The system with the response's own products ``[Z X]'Wy``, ``y'Wy`` in A's last row and column and no
    reference fit (NumPy, on the host): what ``block_derivatives_plain`` reads."""
    import numpy as np

    A = np.array(system.A, float)
    ref = np.concatenate([np.asarray(system.ref_b, float), np.asarray(system.ref_beta, float)], axis=-1)
    zy = A[..., :-1, -1] + np.einsum("...ij,...j->...i", A[..., :-1, :-1], ref)
    yy = A[..., -1, -1] + 2 * np.einsum("...i,...i->...", ref, A[..., :-1, -1]) + np.einsum(
        "...i,...ij,...j->...", ref, A[..., :-1, :-1], ref)
    A[..., :-1, -1], A[..., -1, :-1], A[..., -1, -1] = zy, zy, yy
    return system._replace(A=A.astype(np.asarray(system.A).dtype), ref_b=np.zeros_like(system.ref_b),
                           ref_beta=np.zeros_like(system.ref_beta))


def block_derivatives_plain(theta: jnp.ndarray, system: DenseSystem, row_of: jnp.ndarray):
    """``block_derivatives`` on a system ``without_reference``, with the PWRSS read off the factor of the
    whole system (``L[-1, -1]^2``) and its derivatives from ``log|Omega| - log|Omega_[Z X]|``: exact but for
    rounding of relative size
    ``eps y'Wy / PWRSS`` -- below 1e-13 unless the fit is near-perfect, which ``programs.fit_dense`` detects
    at the optimum (``reference.cancellation``) and then refits with ``block_derivatives``.  Its compiled
    program is about half the size (a model's first fit compiles it: the cold start)."""
    A = system.A
    m = A.shape[0]
    q, idx, dtype, lam, A_lam, omega = _omega(theta, system, A)
    L = jnp.linalg.cholesky(omega)
    L_inv = triangular_inverse(L)
    logd = jnp.log(jnp.diagonal(L))
    inside = jnp.stack([idx < s for s in (q, m - 1, m)])                  # (3, m)
    M = L_inv[None] * inside[:, :, None] * inside[:, None, :]
    P = jnp.einsum("sam,san->smn", M, M)                                  # (3, m, m)
    units = jnp.stack([jnp.zeros((), dtype), log_x_scale2(system), 2.0 * jnp.log(system.y_scale)])
    logdets = 2.0 * jnp.sum(jnp.where(inside, logd[None], 0.0), axis=1)
    logdets = logdets.at[2].add(-logdets[1]) + units
    grads, H = _trace_derivatives(P, A_lam, A, row_of)
    grads = grads.at[2].add(-grads[1])
    H = H.at[2].add(-H[1])                                                # log PWRSS = log|Omega| - log|Omega_ZX|
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
