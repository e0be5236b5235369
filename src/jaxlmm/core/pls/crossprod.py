"""Weighted cross-products of the augmented model matrix ``[Z_b | Z_d | X | y]``.

Everything the profiled deviance needs from the n rows is a weighted
cross-product of the columns of ``[Z_b | Z_d | X | y]`` (MixedModels.jl's
``A = [Z X y]^T W [Z X y]``).  They are formed once per response by
segment sums over rows -- ``Z`` is never materialized -- and the optimizer then
works on arrays whose size does not depend on n.

Row i of the block term contributes ``w_i z_b[i] z_b[i]^T`` to level
``refs_b[i]``; a dense term k contributes its ``S_k`` values at columns
``offset_k + refs_k[i] * S_k + s``.  With ``data.sparse`` (a crossed design,
see ``pls/sparse.py``) the block term x dense cross block is summed into its
listed nonzeros instead of a dense ``(S_b, q_d, l_b)`` array.  A term with a relationship-matrix factor
``T`` (``K = T T^T``) has columns ``Z_k (T kron I_S)``; its rows of the
cross-products are multiplied by ``(T kron I_S)^T`` after the sums.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..linalg import factor as linalg
from . import sparse
from .data import CrossProducts, ModelData


def _dense_columns(data: ModelData):
    """Per row, the dense-part column indices (n, m) and values (n, m)."""
    s = data.structure
    cols, vals = [], []
    for k, off in zip(s.dense_terms, s.dense_offsets):
        S = s.terms[k].ncols
        cols.append(off + data.refs[k][:, None] * S + jnp.arange(S)[None, :])
        vals.append(data.z[k])
    n = data.nobs_rows
    if not cols:
        return jnp.zeros((n, 0), jnp.int32), jnp.zeros((n, 0), data.X.dtype)
    return jnp.concatenate(cols, axis=1), jnp.concatenate(vals, axis=1)


def _transform_rows(A, data: ModelData, axis: int = 0):
    """Multiply the dense rows of ``A`` (along ``axis``) by ``(T kron I)^T`` per transformed term."""
    s = data.structure
    if not any(data.transforms[k] is not None for k in s.dense_terms):
        return A
    A = jnp.moveaxis(A, axis, 0)
    pieces = []
    for k, off in zip(s.dense_terms, s.dense_offsets):
        t = s.terms[k]
        block = A[off:off + t.q]
        T = data.transforms[k]
        if T is not None:
            block = block.reshape((t.nlevels, t.ncols) + block.shape[1:])
            block = jnp.einsum("lm,ls...->ms...", T, block).reshape((t.q,) + block.shape[2:])
        pieces.append(block)
    return jnp.moveaxis(jnp.concatenate(pieces, axis=0), 0, axis)


def cross_products(data: ModelData) -> CrossProducts:
    """The sufficient statistics of one response (see ``CrossProducts``)."""
    s = data.structure
    w = data.weights
    observed = w > 0
    w = jnp.where(observed, w, 0.0)
    y = jnp.where(observed, data.y - data.offset, 0.0)
    XtWX = data.X.T @ (w[:, None] * data.X)
    beta_shift = least_squares_shift(XtWX, data.X.T @ (w * y))
    resid = jnp.where(observed, y - data.X @ beta_shift, 0.0)
    for _ in range(REFINE_SHIFT):
        beta_shift = beta_shift + least_squares_shift(XtWX, data.X.T @ (w * resid))
        resid = jnp.where(observed, y - data.X @ beta_shift, 0.0)
    y = resid
    xy = jnp.concatenate([data.X, y[:, None]], axis=1)  # (n, p1)
    wxy = w[:, None] * xy
    p1 = xy.shape[1]
    dtype = xy.dtype

    if s.block_term is not None:
        b = s.block_term
        lb, Sb = s.terms[b].nlevels, s.terms[b].ncols
        zb, rb = data.z[b], data.refs[b]
        Dbb = jax.ops.segment_sum(w[:, None, None] * zb[:, :, None] * zb[:, None, :], rb, lb)
        Cxb = jax.ops.segment_sum(zb[:, :, None] * wxy[:, None, :], rb, lb)
        Dbb, Cxb = jnp.transpose(Dbb, (1, 2, 0)), jnp.transpose(Cxb, (1, 2, 0))   # levels last
    else:
        lb, Sb = 0, 0
        Dbb = jnp.zeros((0, 0, 0), dtype)
        Cxb = jnp.zeros((0, p1, 0), dtype)

    qd = s.q_dense
    cols, vals = _dense_columns(data)
    if qd:
        wvals = w[:, None] * vals  # (n, m)
        pair_ids = (cols[:, :, None] * qd + cols[:, None, :]).reshape(-1)
        pair_vals = (wvals[:, :, None] * vals[:, None, :]).reshape(-1)
        Add = jax.ops.segment_sum(pair_vals, pair_ids, qd * qd).reshape(qd, qd)
        Axd = jax.ops.segment_sum(
            (vals[:, :, None] * wxy[:, None, :]).reshape(-1, p1), cols.reshape(-1), qd
        ).T
        if lb and data.sparse is not None:
            Cdb = sparse.cross_values(data.sparse, wvals, vals, zb)
        elif lb:
            ids = (cols * lb + data.refs[s.block_term][:, None]).reshape(-1)
            Cdb = jax.ops.segment_sum(
                (wvals[:, :, None] * zb[:, None, :]).reshape(-1, Sb), ids, qd * lb
            ).reshape(qd, lb, Sb)
            Cdb = jnp.transpose(Cdb, (2, 0, 1))                                   # (S_b, q_d, l_b)
        else:
            Cdb = jnp.zeros((0, qd, 0), dtype)
        Add = _transform_rows(_transform_rows(Add, data, 0), data, 1)
        Axd = _transform_rows(Axd, data, 1)
        if not sparse.is_sparse(Cdb):
            Cdb = _transform_rows(Cdb, data, 1)
    else:
        Add = jnp.zeros((0, 0), dtype)
        Axd = jnp.zeros((p1, 0), dtype)
        Cdb = jnp.zeros((Sb, 0, lb), dtype)

    Axx = xy.T @ wxy
    n_obs = jnp.sum(observed).astype(dtype)
    sum_log_w = jnp.sum(jnp.where(observed, jnp.log(jnp.where(observed, w, 1.0)), 0.0))
    return CrossProducts(Dbb, Cxb, Cdb, Add, Axd, Axx, n_obs, sum_log_w, beta_shift, s)


REFINE_SHIFT = 2   # refinements of the least-squares shift on its residual (the normal equations lose
# cond(X)^2 digits; a shift that leaves X's trend in y brings back the cancellation it is there to remove)


def least_squares_shift(XtWX, XtWy):
    """Weighted least-squares ``beta_0`` (slightly ridged), by which y is shifted.

    The mixed model is invariant to ``y -> y - X beta_0`` (beta-hat shifts by
    beta_0; residuals, log-determinants and PWRSS are unchanged), for any
    beta_0.  With the least-squares one, y's cross-products no longer carry
    its mean and fixed-effect trend, which removes most of the cancellation in
    ``y^T W y - ...`` and makes the criterion accurate to far fewer digits of
    noise (vital in float32, helpful in float64).
    """
    p = XtWX.shape[-1]
    if p == 0:
        return XtWy
    ridge = 1e-10 * (jnp.trace(XtWX) / p + 1e-300)
    L = linalg.cholesky(XtWX + ridge * jnp.eye(p, dtype=XtWX.dtype))
    return linalg.solve_upper_t(L, linalg.solve_lower(L, XtWy[:, None]))[:, 0]
