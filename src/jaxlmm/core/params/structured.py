"""Covariance structures whose factor is not linear in its parameters: ``ar1`` and ``cs`` (glmmTMB's).

A term's relative covariance (``C = Sigma / sigma^2``, sigma profiled out) is a
function of a few parameters, and its factor ``lambda = chol(C)`` is written
in closed form or by a small unrolled Cholesky, in ``jax.numpy`` (the blocked
path differentiates it with the rest of the deviance) or NumPy (results):

- ``ar1`` over the S levels of a factor: ``C_ij = tau^2 rho^|i-j|`` with
  parameters ``(tau >= 0, a)``, ``rho = tanh(a)``; its Cholesky factor is
  ``lambda_i0 = tau rho^i``, ``lambda_ij = tau rho^(i-j) sqrt(1 - rho^2)`` (j >= 1).
- ``cs`` (heterogeneous compound symmetry): ``C = D R D`` with ``D = diag(s)``
  (``s_i >= 0``) and ``R = (1 - rho) I + rho 1 1^T``, parameters ``(s_1..s_S, a)``,
  ``rho = lo + (1 - lo) / (1 + e^-a)``, ``lo = -1 / (S - 1)``: every ``a`` gives a
  positive-definite ``R``.  ``lambda = D chol(R)``.
"""

from __future__ import annotations

import numpy as np

STRUCTURED = ("ar1", "cs", "ou", "exp", "gau")  # the last three: marginal path only (params/covfuns.py)


def n_parameters(kind: str, S: int) -> int:
    return S + 1 if kind == "cs" else 2


def lower_bounds(kind: str, S: int) -> np.ndarray:
    """0 for the scale parameters, -inf for the correlation's ``a``."""
    return np.r_[np.zeros(n_parameters(kind, S) - 1), -np.inf]


def start(kind: str, S: int) -> np.ndarray:
    """Scales 1 and correlation 0."""
    if kind == "ar1":
        return np.array([1.0, 0.0])
    lo = -1.0 / max(S - 1, 1)
    return np.r_[np.ones(S), np.log(-lo / 1.0)]          # sigmoid(a) = -lo / (1 - lo): rho = 0


def correlation(kind: str, a, S: int, xp=np):
    if kind == "ar1":
        return xp.tanh(a)
    lo = -1.0 / max(S - 1, 1)
    return lo + (1.0 - lo) / (1.0 + xp.exp(-a))


def factor(kind: str, params, S: int, xp=np):
    """``lambda = chol(C(params))`` (S x S, lower triangular)."""
    if kind not in ("ar1", "cs"):
        raise NotImplementedError(f"{kind}() terms are fitted by their marginal covariance (core/marginal/criterion.py)")
    rho = correlation(kind, params[-1], S, xp)
    if kind == "ar1":
        tau = params[0]
        i = np.arange(S)[:, None]
        j = np.arange(S)[None, :]
        # rho^0 .. rho^(S-1) by repeated products (a power with exponent 0 has a NaN derivative at rho = 0)
        powers = xp.cumprod(xp.concatenate([xp.ones(1) + 0.0 * rho, xp.zeros(S - 1) + rho]))
        scale = xp.where(j == 0, 1.0, xp.sqrt(1.0 - rho * rho))
        return xp.where(i >= j, tau * powers[np.maximum(i - j, 0)] * scale, 0.0)
    # compound symmetry: chol(R) row by row (R has unit diagonal and rho elsewhere)
    L = [[None] * S for _ in range(S)]
    for jj in range(S):
        d = 1.0 - sum(L[jj][k] ** 2 for k in range(jj))
        L[jj][jj] = xp.sqrt(d)
        for ii in range(jj + 1, S):
            L[ii][jj] = (rho - sum(L[ii][k] * L[jj][k] for k in range(jj))) / L[jj][jj]
    zero = 0.0 * rho
    R = xp.stack([xp.stack([L[ii][jj] if ii >= jj else zero for jj in range(S)]) for ii in range(S)])
    return params[:S][:, None] * R


def parameter_names(kind: str, columns: tuple[str, ...]) -> list[str]:
    """Names of the term's parameters relative to sigma (the term's theta)."""
    if kind == "ar1":
        return ["sd", "ar1.a"]
    return [f"sd.{c}" for c in columns] + ["cs.a"]
