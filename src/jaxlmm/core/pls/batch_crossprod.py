"""Cross-products of many responses sharing one design, as matrix products.

Every cross-product in ``CrossProducts`` is linear in the weights ``w`` (the
columns of Z and X), in ``w * y`` (products with y) or in ``w * y^2``.  With
a design-only feature matrix ``F`` (n x m) holding, per row, the products of
Z and X columns that land in each entry, the statistics of T traits are

    stats = W @ F_w + (W * Y) @ F_wy + sum(W * Y^2),       W, Y: (T, n),

one matrix product each instead of T scatters.  ``F`` has one column per
entry, so this path is used when ``n * m`` is moderate (``fits_in_matmul``);
otherwise the single-response ``cross_products`` is vmapped.  A batch always
keeps the dense cross block (``ModelData.sparse`` is ignored): the sparse
path's index lists would get a trait axis under vmap.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .crossprod import REFINE_SHIFT, _dense_columns, _transform_rows, cross_products, least_squares_shift
from .data import CrossProducts, ModelData

MAX_FEATURE_ELEMENTS = 2.5e7


def feature_size(data: ModelData) -> int:
    """Number of elements of the feature matrices of ``data``'s design."""
    s = data.structure
    n, p = data.X.shape
    Sb = s.block.ncols if s.block is not None else 0
    lb = s.block.nlevels if s.block is not None else 0
    qd = s.q_dense
    per_row = Sb * Sb * lb + Sb * (p + 1) * lb + qd * qd + qd * (p + 1) + Sb * qd * lb + p * p + p
    return n * per_row


def fits_in_matmul(data: ModelData) -> bool:
    return feature_size(data) <= MAX_FEATURE_ELEMENTS


def batch_cross_products(data: ModelData, Y: jnp.ndarray, W: jnp.ndarray) -> CrossProducts:
    """``CrossProducts`` with a leading trait axis for responses ``Y`` and weights ``W`` (T, n)."""
    data = dataclasses.replace(data, sparse=None)
    if not fits_in_matmul(data):
        return jax.vmap(lambda y, w: cross_products(data.with_response(y, w)))(Y, W)
    s = data.structure
    observed = W > 0
    W = jnp.where(observed, W, 0.0)
    Y = jnp.where(observed, Y - data.offset[None, :], 0.0)
    X = data.X
    n, p = X.shape
    T = Y.shape[0]
    dtype = X.dtype

    def mm(weights, features):  # (T, n) @ (n, ...) -> (T, ...)
        return jnp.tensordot(weights, features, axes=(1, 0))

    XX = mm(W, X[:, :, None] * X[:, None, :])
    beta_shift = jax.vmap(least_squares_shift)(XX, mm(W * Y, X))
    R = jnp.where(observed, Y - beta_shift @ X.T, 0.0)
    for _ in range(REFINE_SHIFT):          # refined on the residual (crossprod.REFINE_SHIFT)
        beta_shift = beta_shift + jax.vmap(least_squares_shift)(XX, mm(W * R, X))
        R = jnp.where(observed, Y - beta_shift @ X.T, 0.0)
    Y = R
    WY = W * Y

    if s.block_term is not None:
        b = s.block_term
        lb, Sb = s.terms[b].nlevels, s.terms[b].ncols
        onehot = jax.nn.one_hot(data.refs[b], lb, dtype=dtype)                     # (n, l_b)
        zb = data.z[b]
        Dbb = mm(W, zb[:, :, None, None] * zb[:, None, :, None] * onehot[:, None, None, :])
        Cx = mm(W, zb[:, :, None, None] * X[:, None, :, None] * onehot[:, None, None, :])   # (T, S, p, l)
        Cy = mm(WY, zb[:, :, None] * onehot[:, None, :])                                  # (T, S, l)
        Cxb = jnp.concatenate([Cx, Cy[:, :, None, :]], axis=2)
    else:
        lb, Sb = 0, 0
        Dbb = jnp.zeros((T, 0, 0, 0), dtype)
        Cxb = jnp.zeros((T, 0, p + 1, 0), dtype)

    qd = s.q_dense
    if qd:
        cols, vals = _dense_columns(data)                                             # (n, m)
        Zd = jnp.zeros((n, qd), dtype).at[jnp.arange(n)[:, None], cols].add(vals)     # dense Z_d rows
        Add = mm(W, Zd[:, :, None] * Zd[:, None, :])
        Axd = jnp.concatenate([mm(W, X[:, :, None] * Zd[:, None, :]), mm(WY, Zd)[:, None, :]], axis=1)
        if lb:
            Cdb = mm(W, zb[:, :, None, None] * Zd[:, None, :, None] * onehot[:, None, None, :])
        else:
            Cdb = jnp.zeros((T, 0, qd, 0), dtype)
        Add = jax.vmap(lambda a: _transform_rows(_transform_rows(a, data, 0), data, 1))(Add)
        Axd = jax.vmap(lambda a: _transform_rows(a, data, 1))(Axd)
        Cdb = jax.vmap(lambda a: _transform_rows(a, data, 1))(Cdb)
    else:
        Add = jnp.zeros((T, 0, 0), dtype)
        Axd = jnp.zeros((T, p + 1, 0), dtype)
        Cdb = jnp.zeros((T, Sb, 0, lb), dtype)

    Xy = mm(WY, X)
    yy = jnp.sum(WY * Y, axis=1)
    Axx = jnp.concatenate([jnp.concatenate([XX, Xy[:, :, None]], axis=2),
                           jnp.concatenate([Xy, yy[:, None]], axis=1)[:, None, :]], axis=1)
    n_obs = jnp.sum(observed, axis=1).astype(dtype)
    sum_log_w = jnp.sum(jnp.where(observed, jnp.log(jnp.where(observed, W, 1.0)), 0.0), axis=1)
    return CrossProducts(Dbb, Cxb, Cdb, Add, Axd, Axx, n_obs, sum_log_w, beta_shift, s)
