"""The batch front end of the spectral path (``core.spectral``).

A batch takes the spectral path when the model's only random term is
``(1 | id)`` with a relationship matrix and one record per level, the prior
weights are all 1 and every trait has at most ``max_missing_fraction`` of its
individuals missing.  K (restricted to the levels in the data) is
eigendecomposed once on the device; the traits are then fitted in groups of
similar numbers of missing individuals, so one trait with many gaps does not
make every trait pay for them (each group is one compiled program, its
missing-index lists padded to a shape bucket).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.design import Design, bucket

MAX_MISSING_FRACTION = 0.5
CPU_CHUNK = 8


@dataclass
class SpectralLayout:
    order: np.ndarray  # data rows in the order of K's levels (one row per level)
    K: np.ndarray
    n: int


def spectral_layout(design: Design) -> SpectralLayout | None:
    """The row order of the spectral path, or None when the design does not qualify."""
    if len(design.terms) != 1:
        return None
    term = design.terms[0]
    if term.relmat is None or len(term.columns) != 1 or not np.all(term.z == 1.0):
        return None
    n_levels = len(term.factor.levels)
    codes = term.factor.codes
    if len(codes) != n_levels or len(np.unique(codes)) != n_levels:
        return None
    if not np.all(design.weights == 1.0):
        return None
    order = np.argsort(codes, kind="stable")
    return SpectralLayout(order, term.relmat.K, n_levels)


def missing_counts(W: np.ndarray) -> np.ndarray:
    """Missing individuals per trait from the (T, n) observation weights."""
    return (W <= 0).sum(axis=1)


def group_traits(m: np.ndarray, idx: np.ndarray) -> list[np.ndarray]:
    """Split traits ``idx`` (with ``m`` missing each) into at most two padding groups.

    The traits with up to the median number missing (rounded up to a shape
    bucket) are padded to that bucket, the rest to the bucket of their maximum:
    two compiled programs at most, and about half the padding of one.
    """
    if idx.size == 0:
        return []
    idx = idx[np.argsort(m[idx], kind="stable")]
    cut = bucket(int(np.median(m[idx])))
    small, large = idx[m[idx] <= cut], idx[m[idx] > cut]
    return [g for g in (small, large) if g.size]


def default_chunk_size(n: int, p: int, m: int, dtype_bytes: int, device=None) -> int:
    """Traits per compiled call.

    The vmapped optimizer runs until the slowest trait of a chunk converges, so
    on a CPU (where lanes do not run in parallel) small chunks waste the least
    work; on an accelerator a chunk is as large as a quarter of the free memory allows.
    """
    import jax

    from ..model.memory import available_bytes

    dev = device if device is not None else jax.devices()[0]
    if dev.platform == "cpu":
        return CPU_CHUNK
    return max(1, int(available_bytes(device) // 4 // bytes_per_trait(n, p, m, dtype_bytes)))


def bytes_per_trait(n: int, p: int, m: int, dtype_bytes: int) -> int:
    """Peak bytes of one trait: rotated data, the missing rows of U and their Hessian-pass copies."""
    return dtype_bytes * (4 * n * (p + 2) + 4 * m * n + 8 * m * m)


def fit_spectral(design: Design, layout: SpectralLayout, Yt: np.ndarray, W: np.ndarray, idx: np.ndarray, *,
                 reml: bool, np_dtype, options, chunk_size: int | None, device, devices=(), mesh=None):
    """Fit the traits ``idx`` (rows of ``Yt``/``W``, data order) on K's eigenbasis; per-trait outputs."""
    import jax
    import jax.numpy as jnp

    from ..core.spectral.criterion import fit_spectral_program
    from ..parallel.sharding import chunks, on_mesh, put, round_chunk

    order = layout.order
    X = design.X[order].astype(np_dtype)
    Ys = (Yt[:, order] - design.offset[order][None, :])
    Ws = (W[:, order] > 0).astype(np_dtype)
    U, d = eigen(layout.K, np_dtype, device if mesh is None else None)
    U, d, Xs = put((U, d, jnp.asarray(X)), mesh, False)
    m_all = missing_counts(Ws)
    outputs = {}
    for group in group_traits(m_all, idx):
        m_max = min(bucket(int(m_all[group].max())), layout.n)
        cs = chunk_size or default_chunk_size(layout.n, X.shape[1], m_max, np.dtype(np_dtype).itemsize, device)
        cs = round_chunk(min(cs, bucket(group.size)), devices)
        for sel, take in chunks(group, cs):
            mi, mv = _missing_index(Ws[take], m_max)
            per_trait = put((jnp.asarray(Ys[take].astype(np_dtype)), jnp.asarray(Ws[take]), jnp.asarray(mi),
                             jnp.asarray(mv), jnp.full((cs, 1), 1.0, np_dtype)), mesh, True)
            out = on_mesh(fit_spectral_program, mesh, (False, False, False) + (True,) * 5, reml=bool(reml),
                          options=options)(U, d, Xs, *per_trait)
            out = jax.tree_util.tree_map(lambda a: np.asarray(a)[:sel.size], jax.device_get(out))
            outputs[tuple(sel)] = out
    return outputs


def eigen(K: np.ndarray, np_dtype, device=None):
    """``K = U diag(d) U^T`` on the device, eigenvalues clipped at 0."""
    import jax
    import jax.numpy as jnp

    Kd = jnp.asarray(K, np_dtype) if device is None else jax.device_put(jnp.asarray(K, np_dtype), device)
    d, U = jnp.linalg.eigh(Kd)
    return U, jnp.maximum(d, 0.0)


def _missing_index(W: np.ndarray, m_max: int):
    """Per trait the indices of its missing rows, padded to ``m_max`` (and a validity mask)."""
    observed = W > 0
    index = np.argsort(observed, axis=1, kind="stable")[:, :m_max].astype(np.int32)  # missing rows first
    valid = np.arange(m_max)[None, :] < (~observed).sum(axis=1)[:, None]
    return np.where(valid, index, 0), valid
