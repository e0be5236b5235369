"""The units Newton's method works in: each theta by the spread of its random-effect covariate.

An element of theta in row r of its term's ``lambda`` multiplies the covariate of column r
(``b_r = sum_c lambda_rc u_c``, and ``b_r`` enters y as ``z_r b_r``): for a covariate of spread
``s`` (root mean square over the rows), ``theta s`` is in the response's units relative to sigma.
A covariate on the scale of 1e4 leaves its thetas near 1e-4 and one on the scale of 1e-3 near
1e3, beside intercepts' thetas near 1; the Newton kernel's step cap, tolerances, eigenvalue
floor and boundary snap are not invariant to that (``newton_kernel``, item 8).  ``scale`` is
``1 / 2^round(log2 s)`` for a spread outside ``[1/8, 8]`` and 1 inside, a power of two, so that
the iteration's units map onto theta's without rounding and models with covariates of ordinary
spread (sleepstudy's Days) iterate exactly as without it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .structure import theta_positions

SPREAD_RANGE = 3.0   # |log2 spread| up to this keeps unit 1


def _scale(xp, sum_sq, n_obs):
    """``1 / unit`` of each theta from the summed squares of its covariate over ``n_obs`` rows."""
    spread = xp.sqrt(xp.maximum(sum_sq, 0.0) / xp.maximum(n_obs, 1.0))
    e = xp.round(xp.log2(xp.where(spread > 0, spread, 1.0)))
    e = xp.where((xp.abs(e) > SPREAD_RANGE) & (spread > 0) & xp.isfinite(spread), e, 0.0)
    return xp.exp2(-e)


def dense_scale(systems, k_pad: int) -> np.ndarray:
    """(B, k_pad) scales for a stack of ``dense.DenseSystem`` (NumPy leaves with a lane axis; thetas
    that are padding get 1).  The covariate of the row of each theta's entries in ``lambda`` is read
    off the diagonal of ``A`` (Z is not scaled in the system)."""
    lam_index = np.asarray(systems.lam_index).astype(np.int64)
    rows, cols = np.nonzero(lam_index < k_pad)
    which = lam_index[rows, cols]
    A = np.asarray(systems.A, float)
    diag = np.diagonal(A, axis1=-2, axis2=-1)[..., rows]                    # (B, nnz)
    onehot = (which[:, None] == np.arange(k_pad)[None, :]).astype(float)      # (nnz, k_pad)
    sum_sq = diag @ onehot
    n_obs = np.asarray(systems.n_obs, float)[..., None]
    return np.where(onehot.sum(axis=0) > 0, _scale(np, sum_sq, n_obs), 1.0)


def blocked_scale(cp) -> jnp.ndarray:
    """(ntheta,) scales from the blocked path's ``CrossProducts`` (traceable)."""
    s = cp.structure
    per_column = {}
    if s.block_term is not None:
        per_column[s.block_term] = jnp.sum(jnp.diagonal(cp.Dbb, axis1=0, axis2=1), axis=0)      # (S_b,)
    diag = jnp.diagonal(cp.Add)
    for k, off in zip(s.dense_terms, s.dense_offsets):
        t = s.terms[k]
        per_column[k] = jnp.sum(diag[off:off + t.q].reshape(t.nlevels, t.ncols), axis=0)
    out = []
    for k, t in enumerate(s.terms):
        try:
            rows, _ = theta_positions(t)
        except ValueError:                      # a structured term: its thetas are not entries of lambda
            out.append(jnp.full((t.ntheta,), -1.0, cp.Axx.dtype))
            continue
        out.append(per_column[k][jnp.asarray(rows)])
    sum_sq = jnp.concatenate(out) if out else jnp.zeros((0,), cp.Axx.dtype)
    return jnp.where(sum_sq >= 0, _scale(jnp, sum_sq, cp.n_obs), 1.0)


def scaled_start(theta0, default, scale):
    """lme4's default start (1 on lambda's diagonal, 0 off it) in the iteration's units: the diagonal
    elements whose covariates are rescaled start at ``scale`` (1 in those units, the same relative
    spread as an intercept's start); any other start is kept as given.  ``xp``-generic (NumPy or traced)."""
    xp = np if isinstance(theta0, np.ndarray) else jnp
    is_default = xp.all(theta0 == default, axis=-1, keepdims=True)
    return xp.where(is_default & (default == 1), scale, theta0)


def dense_default(lam_index, k_pad: int) -> np.ndarray:
    """(k_pad,) lme4's default start of a dense system's thetas: 1 for the elements on lambda's diagonal."""
    lam_index = np.asarray(lam_index)
    rows, cols = np.nonzero((lam_index < k_pad) & (np.arange(len(lam_index))[:, None] == np.arange(len(lam_index))))
    out = np.zeros(k_pad)
    out[lam_index[rows, cols]] = 1.0
    return out
