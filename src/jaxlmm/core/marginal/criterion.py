"""Models with structured covariances or heteroscedastic residuals, by their marginal covariance.

With absolute (not sigma-relative) variance parameters ``phi``,

    V(phi) = sum_t (z_t C_t(phi_t) z_t^T) o G_t + diag(r_i(psi) / w_i),

where term t has per-row covariates ``z_t`` (n, S_t), one level's covariance
``C_t`` (``params/covfuns.py``) and ``G_t[i, j] = K_t[c_i, c_j]`` (``K_t = I``: 1 when rows
i and j share the term's level), and row i has residual variance ``r_i(psi)``
(``marginal/residual.py``: ``s^2`` without ``dispformula``, glmmTMB's log-linear
``exp(x_i^T delta)`` with one).  The REML criterion is

    (n - p) log 2 pi + log|V| + log|X^T V^-1 X| + y^T P y,
    P = V^-1 - V^-1 X (X^T V^-1 X)^-1 X^T V^-1,

(the ML deviance: ``n log 2 pi + log|V| + y^T P y``), lme4's REML criterion at the
profiled sigma when the model has one.  Its derivatives are closed form, with
``M = P`` (REML) or ``V^-1`` (ML) and ``V_j = dV/dphi_j``:

    d/dphi_j       = tr(M V_j) - y^T P V_j P y
    d2/dphi_j phi_l = tr(M V_jl) - tr(M V_j M V_l) + 2 y^T P V_j P V_l P y - y^T P V_jl P y,

so one Newton loop (``newton_host``) serves every structure, and a parameter may
sit on its bound 0: a structured term can absorb all residual variance (``s -> 0``)
and ``V`` stays positive definite.  The work is dense in n (n^3 per evaluation),
for models up to a few thousand rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import linalg

from ..likelihood.criteria import marginal_criterion
from ..params.covfuns import CovarianceFunction
from .residual import ResidualVariance



@dataclass(frozen=True, eq=False)
class MarginalTerm:
    """One random-effects term: covariates ``z`` (n, S), level codes (n,), ``K`` (levels x levels) or None."""

    z: np.ndarray
    codes: np.ndarray
    nlevels: int
    cov: CovarianceFunction
    K: np.ndarray | None = None

    def pattern(self, rows=None) -> np.ndarray:
        """``G`` on ``rows``: ``K[c_i, c_j]``, or 1 where rows share a level."""
        c = self.codes if rows is None else self.codes[rows]
        if self.K is None:
            return (c[:, None] == c[None, :]).astype(float)
        return self.K[np.ix_(c, c)]


@dataclass(frozen=True, eq=False)
class MarginalModel:
    """Fixed effects ``X`` (n, p), prior weights ``w``, terms, the residual variance model."""

    X: np.ndarray
    w: np.ndarray
    terms: tuple[MarginalTerm, ...]
    residual: ResidualVariance
    cache: dict = field(default_factory=dict, repr=False)   # rows -> block layout (marginal/blocks.py)

    @property
    def offsets(self) -> list[int]:
        out, total = [], 0
        for t in self.terms:
            out.append(total)
            total += t.cov.n_params
        return out + [total]

    @property
    def n_resid(self) -> int:
        """The number of residual parameters (the last of ``phi``)."""
        return self.residual.n_params

    @property
    def resid_codes(self) -> np.ndarray:
        """Each row's residual level (rows of one level share a residual variance)."""
        return self.residual.codes

    @property
    def n_params(self) -> int:
        return self.offsets[-1] + self.n_resid

    def lower(self) -> np.ndarray:
        return np.concatenate([t.cov.lower for t in self.terms] + [self.residual.lower()])

    def upper(self) -> np.ndarray:
        return np.concatenate([np.full(t.cov.n_params, np.inf) if t.cov.upper is None else t.cov.upper
                               for t in self.terms] + [self.residual.upper()])

    def start(self, scale: float) -> np.ndarray:
        """Each structure's start, its standard deviations multiplied by ``scale``; residual SDs ``scale``."""
        out = []
        for t in self.terms:
            s = np.array(t.cov.start, float)
            s[list(t.cov.scales)] *= scale
            out.append(s)
        return np.concatenate(out + [self.residual.start(scale)])


class Derivatives(NamedTuple):
    V: np.ndarray
    first: list          # per parameter: ("full", (n, n)) or ("diag", (n,))
    second: dict         # (j, l), j <= l -> ("full", (n, n)) or ("diag", (n,))


def covariance(model: MarginalModel, phi: np.ndarray, rows: np.ndarray, second: bool = True) -> Derivatives:
    """``V`` on ``rows`` and its first (and second) derivatives in ``phi``."""
    n = len(rows)
    inv_w = 1.0 / model.w[rows]
    base = model.offsets[-1]
    r, dr, d2r = model.residual.jets(phi[None, base:], model.residual.covariates(rows), (n,))
    V = np.diag(r[0] * inv_w)
    first, hess = [], {}
    for t, off in zip(model.terms, model.offsets):
        z, G = t.z[rows], t.pattern(rows)
        C, dC, d2C = t.cov.derivatives(phi[off:off + t.cov.n_params])
        V += (z @ C @ z.T) * G
        for a in range(t.cov.n_params):
            first.append(("full", (z @ dC[a] @ z.T) * G))
            if second:
                for b in range(a, t.cov.n_params):
                    if np.any(d2C[a, b]):
                        hess[(off + a, off + b)] = ("full", (z @ d2C[a, b] @ z.T) * G)
    first.extend(("diag", d[0] * inv_w) for d in dr)
    for (a, b), d in d2r.items():
        hess[(base + a, base + b)] = ("diag", d[0] * inv_w)
    return Derivatives(V, first, hess)


class Evaluation(NamedTuple):
    value: float
    grad: np.ndarray
    hess: np.ndarray


def _trace(M, D):
    kind, A = D
    return float(np.einsum("ii,i->", M, A)) if kind == "diag" else float(np.einsum("ij,ji->", M, A))


def _times(M, D):
    """``M D``."""
    kind, A = D
    return M * A[None, :] if kind == "diag" else M @ A


def _apply(D, v):
    kind, A = D
    return A * v if kind == "diag" else A @ v


class Factored(NamedTuple):
    value: float
    Vi: np.ndarray
    P: np.ndarray
    Py: np.ndarray
    beta: np.ndarray
    vcov_beta: np.ndarray
    logdet_V: float
    logdet_Q: float


def factor(V: np.ndarray, X: np.ndarray, y: np.ndarray, reml: bool) -> Factored | None:
    """The criterion and the matrices its derivatives need, or None where ``V`` is not positive definite."""
    try:
        cV = linalg.cho_factor(V, lower=True, check_finite=False)
        Vi = linalg.cho_solve(cV, np.eye(V.shape[0]), check_finite=False)
        ViX = Vi @ X
        cQ = linalg.cho_factor(X.T @ ViX, lower=True, check_finite=False)
    except (linalg.LinAlgError, ValueError):
        return None
    Qi = linalg.cho_solve(cQ, np.eye(X.shape[1]), check_finite=False)
    P = Vi - ViX @ Qi @ ViX.T
    Py = P @ y
    beta = Qi @ (ViX.T @ y)
    ld_V = 2.0 * float(np.sum(np.log(np.diagonal(cV[0]))))
    ld_Q = 2.0 * float(np.sum(np.log(np.diagonal(cQ[0]))))
    n, p = X.shape
    quad = float(y @ Py)
    value = marginal_criterion(ld_V, ld_Q, quad, n, p, reml)
    if not np.isfinite(value):
        return None
    return Factored(value, Vi, P, Py, beta, Qi, ld_V, ld_Q)


class Extras(NamedTuple):
    value: float
    grad: np.ndarray
    hess: np.ndarray
    beta: np.ndarray
    vcov_beta: np.ndarray
    beta_jacobian: np.ndarray


def evaluate(model: MarginalModel, phi: np.ndarray, y: np.ndarray, rows: np.ndarray, reml: bool,
             extras: bool = False) -> Evaluation:
    """The criterion with its closed-form gradient and Hessian (module docstring); inf where V is singular.

    Computed block by block over the diagonal blocks of ``V`` (``marginal/blocks.py``)."""
    from .blocks import BlockLayout, block_terms, evaluate_blocks, row_blocks

    key = rows.tobytes()
    if key not in model.cache:
        if len(model.cache) > 64:
            model.cache.clear()
        layout = BlockLayout(row_blocks(model, rows))
        model.cache[key] = (layout, block_terms(model, rows, layout))
    out = evaluate_blocks(model, phi, y, rows, reml, *model.cache[key], extras=extras)
    return Extras(*out) if extras else Evaluation(*out)


def evaluate_dense(model: MarginalModel, phi: np.ndarray, y: np.ndarray, rows: np.ndarray, reml: bool) -> Evaluation:
    """``evaluate`` with ``V`` as one dense matrix (the reference the block version is tested against)."""
    k = model.n_params
    d = covariance(model, phi, rows)
    f = factor(d.V, model.X[rows], y, reml)
    if f is None:
        return Evaluation(np.inf, np.zeros(k), np.eye(k))
    M = f.P if reml else f.Vi
    MV = [_times(M, Dj) for Dj in d.first]
    u = [_apply(Dj, f.Py) for Dj in d.first]                  # V_j P y
    Pu = [f.P @ uj for uj in u]
    grad = np.array([_trace(M, Dj) - f.Py @ uj for Dj, uj in zip(d.first, u)])
    H = np.empty((k, k))
    for j in range(k):
        for l in range(j, k):
            H[j, l] = -float(np.einsum("ij,ji->", MV[j], MV[l])) + 2.0 * float(u[j] @ Pu[l])
            if (j, l) in d.second:
                Djl = d.second[(j, l)]
                H[j, l] += _trace(M, Djl) - float(f.Py @ _apply(Djl, f.Py))
            H[l, j] = H[j, l]
    return Evaluation(f.value, grad, H)
