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
``K_t = U diag(d) U^T`` and the rotated columns ``r_a = U^T a``,
``H = I + lambda diag(d)`` and the Gram matrix of ``Q = [W, x, y]``

    M(lambda) = Q^T U H^{-1} U^T Q = sum_i r_i r_i^T / (1 + lambda d_i),

whose Cholesky factor ``[[R_W, 0, 0], [., a, 0], [., b, c]]`` gives (GEMMA's
``P_xx = a^2``, ``P_xy = a b``, ``P_yy = b^2 + c^2`` after projecting out W,
``Px_yy = c^2`` after W and x):

    REML log-lik = k_R - 1/2 sum_i log(1 + lambda d_i) - 1/2 log det(X^T V^{-1} X) - df_R/2 log Px_yy
    ML log-lik   = k_M - 1/2 sum_i log(1 + lambda d_i) - n_O/2 log Px_yy,
    k_R = df_R/2 (log df_R - log 2 pi - 1),  k_M = n_O/2 (log n_O - log 2 pi - 1),

``X = [W, x]`` and ``df_R = n_O - c - 1`` (``n_O - c`` and ``X = W`` for the null
model without x).  lambda maximizes these on ``log lambda in [log 1e-5, log 1e5]``
(GEMMA's range): the derivative is evaluated on GEMMA's grid of ten intervals,
the interval with a sign change (+ to -) whose ends have the largest
log-likelihood is searched by Newton's method safeguarded by the secant step
inside the shrinking bracket (started at the secant point; 4-5 steps to 1e-8), and the
optimum is compared with both ends of the range.  The search runs on a Chebyshev
expansion of the log-likelihood in ``log lambda`` (``scan_expansion.py``); the
statistics are then computed from the exact weights at the optimum.  Then, with ``df = n_O - c - 1``:

    beta = b / a,   se = c / (a sqrt(df)),                    (at the REML lambda of the alternative)
    Wald  F = (beta / se)^2 ~ F(1, df)
    score F = n_O b^2 / (b^2 + c^2) ~ F(1, df)                (at the null model's REML lambda)
    LRT   chi2 = 2 (ML log-lik(H1) - ML log-lik(H0)) ~ chi2(1) (each at its own ML lambda)

(``mode="null"`` keeps lambda at the null model's REML value for beta, se and
Wald, and the null's ML lambda for the LRT: EMMAX/P3D.)  Missing genotypes of
an observed individual are set to the marker's mean over the trait's observed
individuals, as GEMMA does.  Markers are processed in chunks of a static size,
traits vmapped; the p-values are computed on the host from these statistics.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

import numpy as np

from . import linalg
from .scan_expansion import Expansion, evaluate, gram_coefficients, weight_coefficients, with_derivatives
from .status import CONVERGED as SNP_OK
from .status import MONOMORPHIC as SNP_MONOMORPHIC
from .status import NO_GENOTYPES as SNP_NO_GENOTYPES

LAMBDA_MIN = 1e-5
LAMBDA_MAX = 1e5
N_REGION = 10
NEWTON_ITER = 50
NEWTON_TOL = 1e-8


class TraitBasis(NamedTuple):
    """One trait's eigenbasis and null model (a leading trait axis when batched)."""

    U: jnp.ndarray           # (n, n) eigenvectors of D_O K D_O
    d: jnp.ndarray           # (n,) its eigenvalues (0 on the missing rows' directions)
    Rb: jnp.ndarray          # (n, c + 1) U^T [W, y], zero on missing rows before rotating
    observed: jnp.ndarray    # (n,) 1.0 where the trait is observed
    n_obs: jnp.ndarray       # ()
    lambda_reml: jnp.ndarray  # () null model's REML lambda
    lambda_ml: jnp.ndarray   # () null model's ML lambda
    loglik_ml: jnp.ndarray   # () null model's ML log-likelihood
    beta0: jnp.ndarray       # (c,) null model's GLS coefficients at lambda_reml


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
    status: jnp.ndarray


def _constants(n, df, reml: bool):
    m = df if reml else n
    return 0.5 * m * (jnp.log(m) - jnp.log(2.0 * jnp.pi) - 1.0)


def _weights(t, d):
    """``w_i = 1 / (1 + e^t d_i)`` (n, S) and ``sum_i log(1 + e^t d_i)`` (S,) at ``t`` (S,)."""
    lam_d = jnp.exp(t)[None, :] * d[:, None]
    return 1.0 / (1.0 + lam_d), jnp.sum(jnp.log1p(lam_d), axis=0)


def _gram(w, Rb, rx):
    """``sum_i w_i q_i q_i^T`` (S, k, k) of the columns ``[W, x, y]`` (``[W, y]`` when ``rx`` is None)."""
    c1 = Rb.shape[1]
    pairs = (Rb[:, :, None] * Rb[:, None, :]).reshape(Rb.shape[0], c1 * c1)
    Mbb = (pairs.T @ w).T.reshape(-1, c1, c1)                               # (S, c+1, c+1)
    if rx is None:
        return Mbb
    rxw = rx * w
    Mxb = rxw.T @ Rb                                                        # (S, c+1)
    Mxx = jnp.sum(rx * rxw, axis=0)                                         # (S,)
    c = c1 - 1
    col_w = jnp.concatenate([Mbb[:, :c, :c], Mxb[:, None, :c], Mbb[:, c:, :c]], axis=1)   # rows W, x, y
    col_x = jnp.concatenate([Mxb[:, :c], Mxx[:, None], Mxb[:, c:]], axis=1)[:, :, None]
    col_y = jnp.concatenate([Mbb[:, :c, c:], Mxb[:, None, c:], Mbb[:, c:, c:]], axis=1)
    return jnp.concatenate([col_w, col_x, col_y], axis=2)


def _loglik_from_gram(M, logdet_h, n_obs, reml: bool):
    """REML or ML log-likelihood (GEMMA's) from ``M`` (S, k, k) whose last column is y."""
    L = linalg.cholesky(M)
    k = M.shape[-1]
    diag = linalg.diag(L)
    px_yy = diag[:, k - 1] ** 2
    df = n_obs - (k - 1)
    if reml:
        logdet_x = 2.0 * jnp.sum(jnp.log(diag[:, :k - 1]), axis=1)
        return _constants(n_obs, df, True) - 0.5 * logdet_h - 0.5 * logdet_x - 0.5 * df * jnp.log(px_yy)
    return _constants(n_obs, df, False) - 0.5 * logdet_h - 0.5 * n_obs * jnp.log(px_yy)


def loglik(t, d, Rb, rx, n_obs, reml: bool):
    """Log-likelihood of each lane (marker) at ``log lambda = t`` (S,) from the exact weights;
    ``rx`` None for the null model."""
    w, logdet_h = _weights(t, d)
    return _loglik_from_gram(_gram(w, Rb, rx), logdet_h, n_obs, reml)


def expansion(d, Rb, rx) -> Expansion:
    """The Chebyshev expansion (``scan_expansion.py``) of the Gram matrices on GEMMA's lambda range."""
    lo, hi = float(np.log(LAMBDA_MIN)), float(np.log(LAMBDA_MAX))
    Wc, ld = weight_coefficients(d, lo, hi)
    return Expansion(gram_coefficients(Wc, Rb, rx), ld, lo, hi)


def expanded_loglik(exp: Expansion, n_obs, reml: bool):
    """``f(t, order=k)``: the log-likelihood and its first k derivatives from the expansion, for the
    search of lambda (REML and ML share one expansion)."""

    def value(t):
        M, logdet_h = evaluate(t, exp)
        return _loglik_from_gram(M, logdet_h, n_obs, reml)

    return lambda t, order=0: with_derivatives(value, t, order)


def maximize_log_lambda(f, n_lanes: int, dtype):
    """GEMMA's search for the maximum over ``log lambda`` in ``[log 1e-5, log 1e5]``, per lane.

    ``f(t, order=k)`` gives the log-likelihood and its first ``order`` derivatives.  Returns ``(t, f(t))``.
    """
    lo, hi = jnp.log(LAMBDA_MIN), jnp.log(LAMBDA_MAX)
    grid = jnp.linspace(lo, hi, N_REGION + 1, dtype=dtype)
    ones = jnp.ones((n_lanes,), dtype)
    vals, ders = jax.lax.map(lambda s: f(s * ones, order=1), grid)                # (G, S)
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
        t, a, b, ga, gb, it, _ = carry
        _, g, h = f(t, order=2)
        up = g > 0
        a, ga = jnp.where(up, t, a), jnp.where(up, g, ga)
        b, gb = jnp.where(up, b, t), jnp.where(up, gb, g)
        newton = t - g / jnp.where(h < 0, h, -1.0)
        inside = (h < 0) & (newton > a) & (newton < b)
        t_new = jnp.where(inside, newton, secant(a, b, ga, gb))
        moved = jnp.max(jnp.where(found & jnp.isfinite(t_new), jnp.abs(t_new - t), 0.0))
        return t_new, a, b, ga, gb, it + 1, moved

    def running(carry):
        return (carry[5] < NEWTON_ITER) & (carry[6] > NEWTON_TOL)

    t0 = secant(a0, b0, ga0, gb0)
    t, *_ = jax.lax.while_loop(running, step, (t0, a0, b0, ga0, gb0, 0, jnp.asarray(jnp.inf, dtype)))
    ft = jnp.where(found, f(t, order=0), -jnp.inf)
    ends = jnp.where(vals[0] >= vals[-1], lo, hi)
    f_ends = jnp.maximum(vals[0], vals[-1])
    best_end = f_ends > ft
    return jnp.where(best_end, ends, t), jnp.where(best_end, f_ends, ft)


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


def trait_basis(K, W, y, observed, center: bool = True) -> TraitBasis:
    """One trait's ``TraitBasis``: ``K`` (n, n), covariates ``W`` (n, c), ``y`` (n,) with 0 where missing,
    ``observed`` (n,) 0/1; K double-centred on the observed individuals when ``center``."""
    d, U = jnp.linalg.eigh(observed_relmat(K, observed, center))
    return basis_from_eigen(U, d, W, y, observed)


def host_eigen(K: np.ndarray, observed: np.ndarray, center: bool = True):
    """``(U, d)`` of ``observed_relmat`` by LAPACK on the host (NumPy): on a CPU several times faster
    than XLA's eigendecomposition."""
    d, U = np.linalg.eigh(observed_relmat(K, observed, center))
    return U, d


def basis_from_eigen(U, d, W, y, observed) -> TraitBasis:
    """``TraitBasis`` from the eigenpairs of ``observed_relmat``: the rotated ``[W, y]`` and the null model."""
    d = jnp.maximum(d, 0.0)
    Rb = U.T @ (jnp.concatenate([W, y[:, None]], axis=1) * observed[:, None])
    n_obs = jnp.sum(observed)
    exp = expansion(d, Rb, None)
    t_reml, _ = maximize_log_lambda(expanded_loglik(exp, n_obs, True), 1, d.dtype)
    t_ml, _ = maximize_log_lambda(expanded_loglik(exp, n_obs, False), 1, d.dtype)
    ll_ml = loglik(t_ml, d, Rb, None, n_obs, False)
    M = _gram(_weights(t_reml, d)[0], Rb, None)
    c = W.shape[1]
    beta0 = jnp.linalg.solve(M[0, :c, :c], M[0, :c, c])
    return TraitBasis(U, d, Rb, observed, n_obs, jnp.exp(t_reml[0]), jnp.exp(t_ml[0]), ll_ml[0], beta0)


class Markers(NamedTuple):
    """A chunk of markers on one trait's individuals: rotated dosages and per-marker facts."""

    rx: jnp.ndarray       # (n, S) U^T x
    af: jnp.ndarray       # (S,) frequency of allele1 on the observed individuals
    n_miss: jnp.ndarray   # (S,) missing genotypes among them
    status: jnp.ndarray   # (S,) SNP_OK, SNP_MONOMORPHIC or SNP_NO_GENOTYPES


def _impute(G, observed, xp):
    """Dosages on the observed rows, missing values set to the marker's observed mean (``xp``: numpy or
    jax.numpy): ``(x, af, n_miss, status)``."""
    obs = observed[:, None] > 0
    known = obs & ~xp.isnan(G)
    count = xp.sum(known, axis=0)
    mean = xp.sum(xp.where(known, G, 0.0), axis=0) / xp.maximum(count, 1)
    x = xp.where(known, G, mean[None, :]) * observed[:, None]
    spread = xp.max(xp.where(known, G, -xp.inf), axis=0) - xp.min(xp.where(known, G, xp.inf), axis=0)
    status = xp.where(count == 0, SNP_NO_GENOTYPES, xp.where(spread > 0, SNP_OK, SNP_MONOMORPHIC))
    return x, mean / 2.0, xp.sum(obs & xp.isnan(G), axis=0), status


def impute_and_rotate(G, basis: TraitBasis) -> Markers:
    """Markers ``G`` (n, S; NaN = missing) imputed on one trait's observed rows and rotated (in the program)."""
    x, af, n_miss, status = _impute(G, basis.observed, jnp)
    return Markers(basis.U.T @ x, af, n_miss, status)


def host_impute_and_rotate(G: np.ndarray, U: np.ndarray, observed: np.ndarray) -> Markers:
    """``impute_and_rotate`` by NumPy on the host: on a CPU, BLAS's matrix product is several times
    faster than XLA's for the rotation ``U^T x``."""
    x, af, n_miss, status = _impute(G, observed, np)
    return Markers(U.T @ x, af, n_miss, status)


def _tests_at(t, basis: TraitBasis, rx):
    """beta, se, the Wald F and the score F at ``log lambda = t`` (S,)."""
    M = _gram(_weights(t, basis.d)[0], basis.Rb, rx)
    L = linalg.cholesky(M)
    k = M.shape[-1]
    a, b, c = L[:, k - 2, k - 2], L[:, k - 1, k - 2], L[:, k - 1, k - 1]
    df = basis.n_obs - (k - 2) - 1
    beta = b / a
    se = c / (a * jnp.sqrt(df))
    return beta, se, (beta / se) ** 2, basis.n_obs * b ** 2 / (b ** 2 + c ** 2)


def scan_one(basis: TraitBasis, G, mode: str, lrt: bool) -> ScanStats:
    """One trait's statistics for the markers ``G`` (n, S)."""
    return scan_markers(basis, impute_and_rotate(G, basis), mode, lrt)


def scan_markers(basis: TraitBasis, markers: Markers, mode: str, lrt: bool) -> ScanStats:
    """One trait's statistics for a chunk of imputed and rotated markers."""
    rx, af, n_miss, status = markers
    S = rx.shape[1]
    dtype = basis.d.dtype
    t_null = jnp.full((S,), jnp.log(basis.lambda_reml), dtype)
    _, _, _, f_score = _tests_at(jnp.full((S,), jnp.log(basis.lambda_ml), dtype), basis, rx)
    exp = expansion(basis.d, basis.Rb, rx) if mode == "exact" else None
    if mode == "exact":
        t_alt, _ = maximize_log_lambda(expanded_loglik(exp, basis.n_obs, True), S, dtype)
    else:
        t_alt = t_null
    beta, se, f_wald, _ = _tests_at(t_alt, basis, rx)
    chi2 = jnp.full((S,), jnp.nan, dtype)
    if lrt:
        if mode == "exact":
            t_ml, _ = maximize_log_lambda(expanded_loglik(exp, basis.n_obs, False), S, dtype)
        else:
            t_ml = jnp.full((S,), jnp.log(basis.lambda_ml), dtype)
        ll1 = loglik(t_ml, basis.d, basis.Rb, rx, basis.n_obs, False)
        chi2 = jnp.maximum(2.0 * (ll1 - basis.loglik_ml), 0.0)
    ok = status == SNP_OK
    nan = jnp.nan

    def keep(v):
        return jnp.where(ok, v, nan)

    return ScanStats(keep(beta), keep(se), keep(jnp.exp(t_alt)), keep(f_wald), keep(f_score), keep(chi2),
                     jnp.where(status == SNP_NO_GENOTYPES, nan, af), n_miss, status)


@partial(jax.jit, static_argnames=("center",))
def trait_basis_program(K, W, Y, observed, center: bool = True) -> TraitBasis:
    """``trait_basis`` for T traits: ``Y`` and ``observed`` (T, n)."""
    if Y.shape[0] == 1:  # one trait (a CPU's chunk): no batch dimension in the products
        return _lead(trait_basis(K, W, Y[0], observed[0], center))
    return jax.vmap(trait_basis, in_axes=(None, None, 0, 0, None))(K, W, Y, observed, center)


@jax.jit
def basis_from_eigen_program(U, d, W, Y, observed) -> TraitBasis:
    """``basis_from_eigen`` for T traits: ``U`` (T, n, n), ``d``, ``Y`` and ``observed`` (T, n)."""
    if Y.shape[0] == 1:
        return _lead(basis_from_eigen(U[0], d[0], W, Y[0], observed[0]))
    return jax.vmap(basis_from_eigen, in_axes=(0, 0, None, 0, 0))(U, d, W, Y, observed)


@partial(jax.jit, static_argnames=("mode", "lrt"))
def scan_chunk_program(basis: TraitBasis, G, mode: str = "exact", lrt: bool = True) -> ScanStats:
    """``scan_one`` for a chunk of traits (leading axis of ``basis``) and markers ``G`` (n, S)."""
    if basis.d.shape[0] == 1:
        return _lead(scan_one(jax.tree_util.tree_map(lambda a: a[0], basis), G, mode, lrt))
    return jax.vmap(scan_one, in_axes=(0, None, None, None))(basis, G, mode, lrt)


@partial(jax.jit, static_argnames=("mode", "lrt"))
def scan_rotated_program(basis: TraitBasis, markers: Markers, mode: str = "exact", lrt: bool = True) -> ScanStats:
    """``scan_markers`` for a chunk of traits, each with its own rotated markers (leading trait axis)."""
    if basis.d.shape[0] == 1:
        first = partial(jax.tree_util.tree_map, lambda a: a[0])
        return _lead(scan_markers(first(basis), first(markers), mode, lrt))
    return jax.vmap(scan_markers, in_axes=(0, 0, None, None))(basis, markers, mode, lrt)


def _lead(tree):
    """``tree`` with a leading trait axis of length 1."""
    return jax.tree_util.tree_map(lambda a: a[None], tree)
