"""The scan's n-long work: K restricted to a trait's individuals, the rotation ``U^T x`` and the
coefficients of the Gram series in the weight basis (``core/spectral/scan.py`` states the mathematics).

On a CPU these run on the host in LAPACK and BLAS (``host_*``, ``HostChunk``: several times faster
than XLA's there); on accelerators the same functions (``xp=jnp``) run inside ``spectral/scan.py``'s programs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..status import CONVERGED as SNP_OK
from ..status import MONOMORPHIC as SNP_MONOMORPHIC
from ..status import NO_GENOTYPES as SNP_NO_GENOTYPES


class MarkerMoments(NamedTuple):
    """A chunk of markers on one trait: their Gram coefficients in the weight basis and per-marker facts."""

    xx: jnp.ndarray          # (r, S)  sum_i C_ij r_xi^2
    xb: jnp.ndarray          # (c + 1, r, S)  sum_i C_ij r_xi r_bi for b in [W, y]
    af: jnp.ndarray          # (S,) frequency of allele1 on the observed individuals
    n_miss: jnp.ndarray      # (S,) missing genotypes among them
    status: jnp.ndarray      # (S,) SNP_OK, SNP_MONOMORPHIC or SNP_NO_GENOTYPES


def observed_relmat(K, observed, center: bool):
    """``D_O K D_O``, double-centred on the observed individuals when ``center`` (GEMMA centres K:
    ``P K_OO P`` with ``P = I - 1 1^T / n_O``; REML, beta, se and the Wald test do not change with an
    intercept in the model, the ML likelihood and so the LRT and score tests do)."""
    Kt = K * observed[:, None] * observed[None, :]
    if not center:
        return Kt
    n_obs = observed.sum()
    r = Kt @ observed / n_obs
    g = observed @ r / n_obs
    return Kt - r[:, None] * observed[None, :] - observed[:, None] * r[None, :] + g * (observed[:, None] * observed[None, :])


def host_eigen(K: np.ndarray, rows: np.ndarray, center: bool = True):
    """``(U, d)`` of ``K_OO`` (the observed ``rows``; double-centred when ``center``) by LAPACK on the host:
    on a CPU several times faster than XLA's eigendecomposition.  The host path works with n_O
    eigenpairs (``observed_relmat``'s without its zeros)."""
    Ko = np.take(np.take(K, rows, axis=0), rows, axis=1)
    if center:
        mean = Ko.mean(axis=0)
        Ko -= mean[None, :]
        Ko -= mean[:, None]
        Ko += mean.mean()
    d, U = np.linalg.eigh(Ko)
    return U, d


def trait_pieces(U, coef, W, y, observed, xp=jnp):
    """``Rb = U^T [W, y]`` (zero on missing rows first; n, c + 1) and the coefficients of its Gram matrix
    in the weight basis, ``gram_b[a, b, j] = sum_i C_ij Rb_ia Rb_ib`` (c + 1, c + 1, r).  ``observed`` None:
    every row of ``W`` and ``y`` is observed."""
    Q = xp.concatenate([W, y[:, None]], axis=1)
    Rb = U.T @ (Q if observed is None else Q * observed[:, None])
    gram_b = xp.einsum("ia,ib,ij->abj", Rb, Rb, coef)
    return Rb, gram_b


def marker_moments(rx, Rb, coef, xp=jnp):
    """``(xx, xb)`` of ``MarkerMoments`` for rotated markers ``rx`` (n, S): one matrix product each (on
    the host ``rx`` is squared in place after ``xb``: it is not used again)."""
    n, r = coef.shape
    xb = (Rb.T[:, None, :] * coef.T[None, :, :]).reshape(-1, n) @ rx
    if xp is np:
        np.multiply(rx, rx, out=rx)
        xx = coef.T @ rx
    else:
        xx = coef.T @ (rx * rx)
    return xx, xb.reshape(Rb.shape[1], r, rx.shape[1])


def impute(G, observed, xp=jnp):
    """Dosages on the observed rows, missing values set to the marker's observed mean:
    ``(x, af, n_miss, status)``."""
    obs = observed[:, None] > 0
    known = obs & ~xp.isnan(G)
    count = xp.sum(known, axis=0)
    mean = xp.sum(xp.where(known, G, 0.0), axis=0) / xp.maximum(count, 1)
    x = xp.where(known, G, mean[None, :]) * observed[:, None]
    spread = xp.max(xp.where(known, G, -xp.inf), axis=0) - xp.min(xp.where(known, G, xp.inf), axis=0)
    status = xp.where(count == 0, SNP_NO_GENOTYPES, xp.where(spread > 0, SNP_OK, SNP_MONOMORPHIC))
    return x, mean / 2.0, xp.sum(obs & xp.isnan(G), axis=0), status


class HostChunk:
    """A chunk of markers prepared once on the host for every trait: dosages with missing values as 0,
    the missing mask (None when complete), and each trait's count, sum and sum of squares of the
    known dosages of its observed individuals (``observed``: traits x individuals, 0/1) -- three
    matrix products for all traits at once."""

    def __init__(self, G: np.ndarray, observed: np.ndarray):
        missing = np.isnan(G)
        self.any_missing = bool(missing.any())
        self.G0 = np.where(missing, 0.0, G) if self.any_missing else G
        self.known = (~missing).astype(G.dtype) if self.any_missing else None
        O = np.asarray(observed, dtype=G.dtype)
        self.count = O @ self.known if self.any_missing else np.repeat(O.sum(axis=1)[:, None], G.shape[1], 1)
        self.s1, self.s2 = O @ self.G0, O @ (self.G0 * self.G0)

    def impute(self, trait: int, rows: np.ndarray):
        """``impute`` for one trait (its row of ``observed``, its observed ``rows``): ``x`` on every row
        (the rotation's factor is zero on the others), its mean, the missing count and the status; the
        exact spread is checked only where the variance is ~0."""
        G0, n = self.G0, rows.size
        count, s1, s2 = self.count[trait], self.s1[trait], self.s2[trait]
        mean = s1 / np.maximum(count, 1)
        x = G0 + (1.0 - self.known) * mean[None, :] if self.any_missing else G0
        var = s2 - count * mean * mean
        status = np.where(count == 0, SNP_NO_GENOTYPES, SNP_OK)
        near = np.flatnonzero((count > 0) & (var <= 1e-9 * (s2 + 1.0)))
        if near.size:
            sub = G0[rows][:, near]
            known = np.ones(sub.shape, bool) if not self.any_missing else self.known[rows][:, near] > 0
            spread = np.max(np.where(known, sub, -np.inf), axis=0) - np.min(np.where(known, sub, np.inf), axis=0)
            status[near[spread <= 0]] = SNP_MONOMORPHIC
        n_miss = (n - count).astype(np.int64) if self.any_missing else np.zeros(G0.shape[1], np.int64)
        return x, mean / 2.0, n_miss, status


def host_moments(chunk: HostChunk, trait: int, U_rows: np.ndarray, rows: np.ndarray, Rb: np.ndarray,
                 coef: np.ndarray, width: int) -> MarkerMoments:
    """``MarkerMoments`` of a chunk for one trait on the host (BLAS), padded to ``width`` markers with
    monomorphic ones.  ``U_rows`` (n x n_O) holds the eigenvectors of ``K_OO`` in the observed ``rows``
    and zeros elsewhere, so ``U_rows^T x`` rotates the observed dosages without gathering them;
    ``Rb`` and ``coef`` are on the n_O eigenpairs."""
    x, af, n_miss, status = chunk.impute(trait, rows)
    xx, xb = marker_moments(U_rows.T @ x, Rb, coef, np)
    pad = width - x.shape[1]
    if pad:
        xx = np.pad(xx, ((0, 0), (0, pad)))
        xb = np.pad(xb, ((0, 0), (0, 0), (0, pad)))
        af, n_miss = np.pad(af, (0, pad)), np.pad(n_miss, (0, pad))
        status = np.pad(status, (0, pad), constant_values=SNP_MONOMORPHIC)
    return MarkerMoments(xx, xb, af, n_miss, status)
