"""Association scans: every marker x every trait, GEMMA's ``-lmm 4`` statistics on K's eigenbasis.

Model of trait t on its observed individuals O (covariates W, n_O x c; marker x):

    y_O = W_O alpha + x_O beta + u_O + e,   u ~ N(0, sigma_g^2 K_OO),   e ~ N(0, sigma_e^2 I),

with ``lambda = sigma_g^2 / sigma_e^2``.  As GEMMA does, each trait's individuals
with a missing value are dropped and K is restricted to the rest -- exactly,
with one static shape for every trait: ``K_t = D_O K D_O`` (``D_O`` the 0/1
diagonal of observed rows; double-centred on the observed rows, as GEMMA centres
K, unless ``center=False``) has the eigenvalues of ``K_OO`` and a zero for each
missing row, and every data column is zero on the missing rows, so the sums
below over all n eigenpairs equal those over K_OO's.  With
``K_t = U diag(d) U^T``, the rotated columns ``r_a = U^T a`` and the weights
``w_i(t) = 1 / (1 + e^t d_i)`` (``t = log lambda``), the Gram matrix of ``Q = [W, x, y]``

    M(t) = Q^T U H^{-1} U^T Q = sum_i w_i(t) r_i r_i^T,      H = I + lambda diag(d),

has the Cholesky factor ``[[R_W, 0, 0], [., a, 0], [., b, c]]`` that gives (GEMMA's
``P_xx = a^2``, ``P_xy = a b``, ``P_yy = b^2 + c^2`` after projecting out W,
``Px_yy = c^2`` after W and x):

    REML log-lik = k_R - 1/2 L(t) - 1/2 log det(X^T V^{-1} X) - df_R/2 log Px_yy
    ML log-lik   = k_M - 1/2 L(t) - n_O/2 log Px_yy,      L(t) = sum_i log(1 + e^t d_i),
    k_R = df_R/2 (log df_R - log 2 pi - 1),  k_M = n_O/2 (log n_O - log 2 pi - 1),

``X = [W, x]`` and ``df_R = n_O - c - 1`` (``n_O - c`` and ``X = W`` for the null
model without x).  Every entry of M and L is an n-long sum of the weights; the
interpolative basis of ``spectral/scan_basis.py`` makes each an r-long one (r ~ 20):
``M(t) = sum_j w_{J_j}(t) M_j`` with the coefficient matrices ``M_j`` computed once
per marker chunk by matrix products, so the likelihood and its exact first and
second derivatives in t cost O(r k^2) per marker.

lambda maximizes these on ``log lambda in [log 1e-5, log 1e5]`` (GEMMA's range, for K
divided by ``association.relmat_scale`` -- its mean centred diagonal -- so that the range, and
the results, do not depend on the scale of K; a reported lambda at an end of the range gets
the status ``lambda_at_lower_bound`` or ``lambda_at_upper_bound`` instead of ``converged``):
the derivative is evaluated on GEMMA's grid of ten intervals, the interval with
a sign change (+ to -) whose ends have the largest log-likelihood is searched by
Newton's method safeguarded by the secant step inside the shrinking bracket
(started at the secant point; 3-4 steps to 1e-8: a marker stops after a Newton step shorter than
1e-4, which leaves an error of order 1e-8), and the optimum is compared
with both ends of the range.  Then, with ``df = n_O - c - 1``:

    beta = b / a,   se = c / (a sqrt(df)),                    (at the REML lambda of the alternative)
    Wald  F = (beta / se)^2 ~ F(1, df)
    score F = n_O b^2 / (b^2 + c^2) ~ F(1, df)                (at the null model's ML lambda)
    LRT   chi2 = 2 (ML log-lik(H1) - ML log-lik(H0)) ~ chi2(1) (each at its own ML lambda)

(``mode="null"`` keeps lambda at the null model's REML value for beta, se and
Wald, and the null's ML lambda for the LRT: EMMAX/P3D.)  Missing genotypes of
an observed individual are set to the marker's mean over the trait's observed
individuals, as GEMMA does.

On a CPU the eigendecomposition, the rotation ``U^T x`` and the coefficient
products run in LAPACK/BLAS on the host (``host_*``; several times faster there
than XLA's) and the compiled program -- whose shapes do not involve n -- does the
search; on accelerators ``trait_eigen``, ``traits_pieces`` and ``scan_chunk`` do it all.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..likelihood.criteria import profiled_criterion
from .scan_data import MarkerMoments, impute, marker_moments, observed_relmat, trait_pieces
from ..status import CONVERGED as SNP_OK
from ..status import LAMBDA_AT_LOWER_BOUND, LAMBDA_AT_UPPER_BOUND
from ..status import NO_GENOTYPES as SNP_NO_GENOTYPES

LAMBDA_MIN = 1e-5
LAMBDA_MAX = 1e5
LOG_RANGE = (float(np.log(LAMBDA_MIN)), float(np.log(LAMBDA_MAX)))
N_REGION = 10
NEWTON_ITER = 50
NEWTON_TOL = 1e-8
NEWTON_QUAD = 1e-4
EDGE_TOL = 1e-9          # a log lambda this close to an end of LOG_RANGE is at that end


class TraitSeries(NamedTuple):
    """One trait's marker-free pieces, as series in its weight basis (a leading trait axis when batched)."""

    poles: jnp.ndarray       # (r,) the basis's eigenvalues p_j
    cbar: jnp.ndarray        # (r,) column sums of the basis coefficients
    logdet0: jnp.ndarray     # () L(0) = sum_i log(1 + d_i)
    n_eig: jnp.ndarray       # () n, the number of eigenpairs
    gram_b: jnp.ndarray      # (c + 1, c + 1, r) coefficients of [W, y]^T V^{-1} [W, y]
    n_obs: jnp.ndarray       # () observed individuals


class NullModel(NamedTuple):
    """The null model (no marker) of one trait."""

    lambda_reml: jnp.ndarray
    lambda_ml: jnp.ndarray
    loglik_ml: jnp.ndarray
    beta0: jnp.ndarray       # (c,) GLS coefficients at lambda_reml


class ScanStats(NamedTuple):
    """Per trait and marker: the tests' statistics (p-values come from them on the host)."""

    beta: jnp.ndarray
    se: jnp.ndarray
    lambda_reml: jnp.ndarray
    f_wald: jnp.ndarray
    f_score: jnp.ndarray
    chi2_lrt: jnp.ndarray
    af: jnp.ndarray
    n_miss: jnp.ndarray
    status: jnp.ndarray      # status.CONVERGED, a marker's status, or the reported lambda at an end of the range


# ---------------------------------------------------------------- the likelihood as a series in the basis

def packed_index(k: int) -> np.ndarray:
    """Positions (k, k) of a symmetric k x k matrix's entries in its packed lower triangle."""
    rows, cols = np.tril_indices(k)
    idx = np.zeros((k, k), dtype=np.int32)
    idx[rows, cols] = idx[cols, rows] = np.arange(rows.size)
    return idx


def _cholesky_packed(M, k: int) -> list:
    """Lower Cholesky factor, as nested lists of (..., S) arrays ``L[i][j]``, of the symmetric matrices whose
    packed lower triangles are ``M`` (..., P, S): unrolled, every operation along vectors of markers."""
    idx = packed_index(k)
    L = [[None] * k for _ in range(k)]
    for j in range(k):
        d = M[..., idx[j, j], :]
        for m in range(j):
            d = d - L[j][m] ** 2
        L[j][j] = jnp.sqrt(d)
        for i in range(j + 1, k):
            v = M[..., idx[i, j], :]
            for m in range(j):
                v = v - L[i][m] * L[j][m]
            L[i][j] = v / L[j][j]
    return L


def _series(t, trait: TraitSeries, coef, k: int, order: int):
    """``M(t)`` (..., P, S), packed, from its packed coefficients ``coef`` (P, r, S; the lower triangle's entries,
    markers last so that the sums over the basis run along vectors of markers) and ``L(t)`` (..., S), with
    their first ``order`` derivatives in t: a list ``[(M, L), (M', L'), (M'', L'')]``.  ``t`` is (S,), one
    value per marker, or (G, 1), values shared by every marker (a grid: the sums are then one matrix
    product)."""
    shared = t.shape[-1] == 1 and coef.shape[-1] != 1
    tv = t[..., 0] if shared else t
    ep = jnp.exp(tv)[..., None] * trait.poles if shared else jnp.exp(t)[..., None, :] * trait.poles[:, None]
    w = 1.0 / (1.0 + ep)
    ws = [w]
    if order >= 1:
        ws.append(-w * (1.0 - w))
    if order >= 2:
        ws.append(w * (1.0 - w) * (1.0 - 2.0 * w))
    W = jnp.stack(ws)                                                        # (o, G, r) or (o, r, S)
    if shared:
        grams = jnp.einsum("ogj,pjs->ogps", W, coef)
        sums = W @ trait.cbar                                                # (o, G)
        logs = jnp.sum(trait.cbar * (jnp.log1p(ep) - jnp.log1p(trait.poles)), axis=-1)[..., None]
        sums = sums[..., None]
    else:
        grams = jnp.sum(coef * W[..., None, :, :], axis=-2)                   # (o, ..., P, S)
        sums = jnp.sum(trait.cbar[:, None] * W, axis=-2)                     # (o, S)
        logs = jnp.sum(trait.cbar[:, None] * (jnp.log1p(ep) - jnp.log1p(trait.poles)[:, None]), axis=-2)
    cb = jnp.sum(trait.cbar)
    L = trait.logdet0 + (trait.n_eig - cb) * t + logs
    out = [(grams[0], L)]
    if order >= 1:
        out.append((grams[1], trait.n_eig - sums[0]))
    if order >= 2:
        out.append((grams[2], -sums[1]))
    return out


def _loglik_from_gram(M, logdet_h, n_obs, k: int, reml: bool):
    """REML or ML log-likelihood (GEMMA's) from the packed Gram matrices ``M`` (..., P, S) of k columns, the
    last one y."""
    L = _cholesky_packed(M, k)
    px_yy = L[k - 1][k - 1] ** 2
    logdet_x = 2.0 * sum(jnp.log(L[i][i]) for i in range(k - 1)) if reml else 0.0
    return -0.5 * profiled_criterion(logdet_h, logdet_x, px_yy, n_obs, k - 1, reml)


def series_loglik(trait: TraitSeries, coef, k: int, reml: bool):
    """``f(t, order=k)``: the log-likelihood at ``t`` (..., S) and its first k (0-2) derivatives, exact in
    the basis: ``f = g(M(t), L(t))``, ``f' = Dg[M', L']`` and ``f'' = D^2 g[(M', L'), (M', L')] + Dg[M'', L'']``
    (by forward differentiation of ``g`` along ``M + e M' + e^2/2 M''``)."""

    def g(M, L):
        return _loglik_from_gram(M, L, trait.n_obs, k, reml)

    def f(t, order=0):
        parts = _series(t, trait, coef, k, order)
        if order == 0:
            return g(*parts[0])
        if order == 1:
            return jax.jvp(g, parts[0], parts[1])
        (M0, L0), (M1, L1), (M2, L2) = parts

        def along(e):
            e2 = 0.5 * e * e
            return g(M0 + e[..., None, :] * M1 + e2[..., None, :] * M2, L0 + e * L1 + e2 * L2)

        zero, one = jnp.zeros_like(t), jnp.ones_like(t)
        (v, d1), (_, d2) = jax.jvp(lambda e: jax.jvp(along, (e,), (one,)), (zero,), (one,))
        return v, d1, d2

    return f


def hermite_start(a, b, fa, fb, ga, gb, fallback):
    """The maximizer on ``[a, b]`` of the cubic with values ``fa, fb`` and slopes ``ga > 0 >= gb`` at the
    ends (the cubic interpolation step of line searches, Nocedal and Wright eq. 3.59, for -f); ``fallback``
    where the cubic has no turning point inside."""
    d1 = (3.0 * (fa - fb) / (a - b)) - ga - gb
    disc = d1 * d1 - ga * gb
    d2 = jnp.sqrt(jnp.maximum(disc, 0.0))
    den = ga - gb + 2.0 * d2
    t = b - (b - a) * (d2 - gb - d1) / jnp.where(den != 0, den, 1.0)
    ok = (disc >= 0) & (den != 0) & jnp.isfinite(t) & (t >= a) & (t <= b)
    return jnp.where(ok, t, fallback)


def maximize_log_lambda(f, n_lanes: int, dtype):
    """GEMMA's search for the maximum over ``log lambda`` in ``[log 1e-5, log 1e5]``, per lane.

    ``f(t, order=k)`` gives the log-likelihood and its first ``order`` derivatives.  Returns ``(t, f(t))``.
    """
    lo, hi = LOG_RANGE
    grid = jnp.linspace(lo, hi, N_REGION + 1, dtype=dtype)
    vals, ders = f(grid[:, None], order=1)                                  # (G, S)
    rising = (ders[:-1] > 0) & (ders[1:] <= 0)
    height = jnp.where(rising, jnp.maximum(vals[:-1], vals[1:]), -jnp.inf)
    j = jnp.argmax(height, axis=0)
    found = jnp.any(rising, axis=0)
    a0, b0 = grid[j], grid[j + 1]
    ga0 = jnp.take_along_axis(ders, j[None, :], axis=0)[0]
    gb0 = jnp.take_along_axis(ders, j[None, :] + 1, axis=0)[0]

    def secant(a, b, ga, gb):
        return jnp.clip(a + (b - a) * ga / jnp.where(ga - gb > 0, ga - gb, 1.0), a, b)

    def step(carry):
        t, a, b, ga, gb, it, done = carry
        _, g, h = f(t, order=2)
        up = g > 0
        a, ga = jnp.where(up, t, a), jnp.where(up, g, ga)
        b, gb = jnp.where(up, b, t), jnp.where(up, gb, g)
        newton = t - g / jnp.where(h < 0, h, -1.0)
        inside = (h < 0) & (newton >= a) & (newton <= b)
        t_new = jnp.where(inside, newton, secant(a, b, ga, gb))
        step = jnp.abs(t_new - t)
        # a Newton step of size e leaves an error of order e^2 (quadratic convergence): below NEWTON_QUAD
        # the lane is done with this step; a secant or clipped step must itself be below NEWTON_TOL
        settled = ~jnp.isfinite(t_new) | (step <= NEWTON_TOL) | (inside & (step <= NEWTON_QUAD))
        return jnp.where(done, t, t_new), a, b, ga, gb, it + 1, done | settled

    def running(carry):
        return (carry[5] < NEWTON_ITER) & ~jnp.all(carry[6])

    fa0 = jnp.take_along_axis(vals, j[None, :], axis=0)[0]
    fb0 = jnp.take_along_axis(vals, j[None, :] + 1, axis=0)[0]
    t0 = hermite_start(a0, b0, fa0, fb0, ga0, gb0, secant(a0, b0, ga0, gb0))
    t, *_ = jax.lax.while_loop(running, step, (t0, a0, b0, ga0, gb0, 0, ~found))
    ft = jnp.where(found, f(t, order=0), -jnp.inf)
    ends = jnp.where(vals[0] >= vals[-1], lo, hi)
    f_ends = jnp.maximum(vals[0], vals[-1])
    best_end = f_ends > ft
    return jnp.where(best_end, ends, t), jnp.where(best_end, f_ends, ft)


# ---------------------------------------------------------------- null model and markers

def null_model(trait: TraitSeries) -> NullModel:
    """REML and ML fits of the model without a marker (its Gram series is ``gram_b``)."""
    k = trait.gram_b.shape[0]
    rows, cols = np.tril_indices(k)
    coef = trait.gram_b[rows, cols][..., None]                              # (P, r, 1)
    dtype = trait.poles.dtype
    t_reml, _ = maximize_log_lambda(series_loglik(trait, coef, k, True), 1, dtype)
    t_ml, ll_ml = maximize_log_lambda(series_loglik(trait, coef, k, False), 1, dtype)
    M = _series(t_reml, trait, coef, k, 0)[0][0][:, 0][packed_index(k)]
    c = k - 1
    beta0 = jnp.linalg.solve(M[:c, :c], M[:c, c])
    return NullModel(jnp.exp(t_reml[0]), jnp.exp(t_ml[0]), ll_ml[0], beta0)


def marker_gram(trait: TraitSeries, moments: MarkerMoments):
    """Packed coefficients (P, r, S) of the Gram matrix of ``[W, x, y]`` (k = c + 2 columns, P = k (k + 1) / 2
    entries of its lower triangle, ``np.tril_indices`` order) for each marker of the chunk."""
    Mbb, Mxb, Mxx = trait.gram_b, moments.xb, moments.xx
    c, S = Mbb.shape[0] - 1, Mxx.shape[-1]
    col = list(range(c)) + [None, c]            # the columns W_1..W_c, x, y as rows of gram_b / xb

    def entry(i, j):
        a, b = col[i], col[j]
        if a is None and b is None:
            return Mxx
        if a is None or b is None:
            return Mxb[b if a is None else a]
        return jnp.broadcast_to(Mbb[a, b][:, None], (Mbb.shape[-1], S))

    return jnp.stack([entry(i, j) for i, j in zip(*np.tril_indices(c + 2))])


def _tests_at(t, trait: TraitSeries, coef, k: int):
    """beta, se, the Wald F and the score F at ``log lambda = t`` (S,)."""
    L = _cholesky_packed(_series(t, trait, coef, k, 0)[0][0], k)
    a, b, c = L[k - 2][k - 2], L[k - 1][k - 2], L[k - 1][k - 1]
    df = trait.n_obs - (k - 2) - 1
    beta = b / a
    se = c / (a * jnp.sqrt(df))
    return beta, se, (beta / se) ** 2, trait.n_obs * b ** 2 / (b ** 2 + c ** 2)


def scan_markers(trait: TraitSeries, null: NullModel, moments: MarkerMoments, mode: str, lrt: bool) -> ScanStats:
    """One trait's statistics for a chunk of markers."""
    coef = marker_gram(trait, moments)
    S, k = coef.shape[-1], trait.gram_b.shape[0] + 1
    dtype = coef.dtype
    t_null = jnp.full((S,), jnp.log(null.lambda_reml), dtype)
    t_null_ml = jnp.full((S,), jnp.log(null.lambda_ml), dtype)
    _, _, _, f_score = _tests_at(t_null_ml, trait, coef, k)
    if mode == "exact":
        t_alt, _ = maximize_log_lambda(series_loglik(trait, coef, k, True), S, dtype)
    else:
        t_alt = t_null
    beta, se, f_wald, _ = _tests_at(t_alt, trait, coef, k)
    chi2 = jnp.full((S,), jnp.nan, dtype)
    if lrt:
        ml = series_loglik(trait, coef, k, False)
        if mode == "exact":
            _, ll1 = maximize_log_lambda(ml, S, dtype)
        else:
            ll1 = ml(t_null_ml)
        chi2 = jnp.maximum(2.0 * (ll1 - null.loglik_ml), 0.0)
    ok = moments.status == SNP_OK
    # the reported (REML) lambda at an end of the search range is no interior optimum: the status says which
    # end.  The ML lambdas of the LRT and score tests are not flagged: with K centred (rank n - 1) the ML
    # likelihood grows without bound as the residual variance goes to 0, so they always end at the upper
    # end (as GEMMA's l_mle = 1e5), and those tests take that limit by design
    status = jnp.where(ok & _at_edge(t_alt, 1), LAMBDA_AT_UPPER_BOUND,
                       jnp.where(ok & _at_edge(t_alt, 0), LAMBDA_AT_LOWER_BOUND, moments.status))

    def keep(v):
        return jnp.where(ok, v, jnp.nan)

    return ScanStats(keep(beta), keep(se), keep(jnp.exp(t_alt)), keep(f_wald), keep(f_score), keep(chi2),
                     jnp.where(moments.status == SNP_NO_GENOTYPES, jnp.nan, moments.af), moments.n_miss,
                     status.astype(moments.status.dtype))


def _at_edge(t, end: int):
    """Whether ``log lambda = t`` is at the lower (``end`` 0) or upper (1) end of ``LOG_RANGE``."""
    return t <= LOG_RANGE[0] + EDGE_TOL if end == 0 else t >= LOG_RANGE[1] - EDGE_TOL


# ---------------------------------------------------------------- compiled programs (leading trait axis)

def _lead(tree):
    """``tree`` with a leading trait axis of length 1."""
    return jax.tree_util.tree_map(lambda a: a[None], tree)


def _first(tree):
    return jax.tree_util.tree_map(lambda a: a[0], tree)


def _per_trait(fn, n_traits: int, *args):
    """``fn`` over the leading trait axis of every argument: a plain call for one trait (no batch
    dimension in the products), else ``vmap``."""
    if n_traits == 1:
        return _lead(fn(*map(_first, args)))
    return jax.vmap(fn)(*args)


# The device path's three steps are plain functions of a chunk of traits (leading axis); gwas/association.py
# compiles them with ``sharding.on_mesh``: one program each, run per device on a mesh.
EIGEN_SPLIT = (False, True)                      # which arguments have the trait axis
PIECES_SPLIT = (True, True, False, True, True)
CHUNK_SPLIT = (True,) * 6 + (False,)


def trait_eigen(K, observed, center: bool = True):
    """``(U, d)`` of ``observed_relmat`` for T traits (``observed`` (T, n)), one trait after another
    (``lax.map``): one LAPACK or cuSOLVER call per trait, never a batched call that fans out on the
    thread pool of XLA's CPU devices (see ``core.per_device``)."""
    def one(o):
        d, U = jnp.linalg.eigh(observed_relmat(K, o, center))
        return U, d

    return jax.lax.map(one, observed)


def traits_pieces(U, coef, W, Y, observed):
    """``trait_pieces`` for T traits (``U`` (T, n, n), ``coef`` (T, n, r), ``Y`` and ``observed`` (T, n))."""
    return jax.vmap(trait_pieces, in_axes=(0, 0, None, 0, 0))(U, coef, W, Y, observed)


@jax.jit
def null_program(trait: TraitSeries) -> NullModel:
    """``null_model`` for T traits (leading axis of ``trait``)."""
    return _per_trait(null_model, trait.poles.shape[0], trait)


@partial(jax.jit, static_argnames=("mode", "lrt"))
def scan_moments_program(trait: TraitSeries, null: NullModel, moments: MarkerMoments, mode: str = "exact",
                         lrt: bool = True) -> ScanStats:
    """``scan_markers`` for a chunk of traits, each with its markers' moments (leading trait axis)."""
    return _per_trait(lambda a, b, m: scan_markers(a, b, m, mode, lrt), trait.poles.shape[0], trait, null, moments)


def scan_chunk(U, coef, Rb, observed, trait: TraitSeries, null: NullModel, G, mode: str = "exact",
               lrt: bool = True) -> ScanStats:
    """Imputation, rotation, moments and ``scan_markers`` for a chunk of traits (leading axis) and
    markers ``G`` (n, S; NaN = missing)."""
    def one(U, coef, Rb, observed, trait, null):
        x, af, n_miss, status = impute(G, observed)
        xx, xb = marker_moments(U.T @ x, Rb, coef)
        return scan_markers(trait, null, MarkerMoments(xx, xb, af, n_miss, status), mode, lrt)

    return _per_trait(one, U.shape[0], U, coef, Rb, observed, trait, null)
