"""t and F tests of fixed-effect contrasts with Satterthwaite or Kenward-Roger df.

For a contrast ``L beta`` (lmerTest's ``contest1D`` / ``contestMD``):

- Satterthwaite: ``var = L V L^T`` with ``V = Cov(beta-hat)``; with ``g_i =
  L (dV/dvarpar_i) L^T`` and ``A`` the covariance of (theta, sigma) from the
  exact Hessian of the deviance, ``df = 2 var^2 / (g^T A g)``.  For q > 1 rows
  the F statistic and its denominator df follow lmerTest: eigen-decompose
  ``L V L^T``, one t statistic per direction, ``ddf`` from their df.
- Kenward-Roger: the adjusted covariance ``PhiA`` (pbkrtest's ``vcovAdj``)
  for the SEs, pbkrtest's ``Lb_ddf`` / ``.KR_adjust`` for df and the F scaling.
- ``"residual"``: Wald SEs and ``n - p`` df; ``"asymptotic"``: Wald, normal.

All derivatives are exact (autodiff of the deviance machinery; see
``core/pls/ddf.py``) and never form an n x n matrix, so they cost about as
much as a few deviance evaluations at any n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from .._x64 import float64_scope
from ..core.params.structure import theta_positions
from ..errors import JaxlmmError

DDF_METHODS = ("satterthwaite", "kenward-roger", "residual", "asymptotic")


def normalize_ddf(ddf: str) -> str:
    key = str(ddf).lower().replace("_", "-").replace(" ", "-")
    aliases = {"kr": "kenward-roger", "kenward-roger": "kenward-roger", "satterthwaite": "satterthwaite",
               "satt": "satterthwaite", "residual": "residual", "lme4": "residual", "asymptotic": "asymptotic",
               "wald": "asymptotic", "normal": "asymptotic"}
    if key not in aliases:
        raise ValueError(f"ddf must be one of {', '.join(DDF_METHODS)}, not {ddf!r}")
    return aliases[key]


@dataclass
class SatterthwaiteParts:
    A: np.ndarray      # (m, m) covariance of (theta, sigma)
    J: np.ndarray      # (m, p, p) derivatives of Cov(beta) w.r.t. (theta, sigma)
    V: np.ndarray      # (p, p) Cov(beta)


@dataclass
class KenwardRogerParts:
    Phi: np.ndarray    # (p, p) Cov(beta)
    PhiA: np.ndarray   # (p, p) adjusted Cov(beta)
    P: np.ndarray      # (g, p, p) dM/dgamma
    W: np.ndarray      # (g, g) 2 IE2^{-1}


def _dense_varpar_index(layout) -> list[int]:
    """Positions of the real (theta, sigma) in the padded ones of the dense programs."""
    return list(range(layout.k)) + [layout.k_pad]


def _dense_active(layout) -> np.ndarray:
    active = np.zeros(layout.k_pad + 1, bool)
    active[_dense_varpar_index(layout)] = True
    return active


def satterthwaite_dense(fit) -> SatterthwaiteParts:
    """The dense engine's Satterthwaite parts (``core/dense/ddf.py``)."""
    import jax

    from ..core.dense.ddf import satterthwaite_program

    layout, system = fit.model.dense
    varpar = np.append(layout.pad_theta(fit.theta), fit.sigma).astype(system.A.dtype)
    A, J, V = jax.device_get(satterthwaite_program(system, varpar, _dense_active(layout), np.asarray(fit.reml)))
    idx, p = _dense_varpar_index(layout), layout.p
    return SatterthwaiteParts(np.asarray(A)[np.ix_(idx, idx)], np.asarray(J)[idx][:, :p, :p], np.asarray(V)[:p, :p])


def kenward_roger_dense(fit) -> KenwardRogerParts:
    """The dense engine's Kenward-Roger parts of a REML ``fit`` (``core/dense/ddf.py``)."""
    import jax

    from ..core.dense.ddf import kenward_roger_program

    layout, system = fit.model.dense
    gamma = np.zeros(layout.k_pad + 1)
    for t, lam in zip(layout.terms, fit.design.structure.lambdas_numpy(fit.theta)):
        cov = fit.sigma ** 2 * lam @ lam.T
        rows, cols = theta_positions(t)                           # theta's layout: lme4's order
        gamma[t.theta_offset:t.theta_offset + len(rows)] = cov[rows, cols]
    gamma[-1] = fit.sigma ** 2
    cov_index = layout.cov_index()
    fixed_mask = np.arange(layout.p_pad) < layout.p
    out = jax.device_get(kenward_roger_program(system, gamma.astype(system.A.dtype), cov_index,
                                               _dense_active(layout), fixed_mask))
    Phi, PhiA, P, W = (np.asarray(x) for x in out)
    idx, p = _dense_varpar_index(layout), layout.p
    return KenwardRogerParts(Phi[:p, :p], PhiA[:p, :p], P[idx][:, :p, :p], W[np.ix_(idx, idx)])


def satterthwaite_block(fit) -> SatterthwaiteParts:
    """The blocked engine's Satterthwaite parts (``core/pls/ddf.py``)."""
    import jax
    import jax.numpy as jnp

    from ..core.pls.ddf import satterthwaite_program

    A, J, V, _ = satterthwaite_program(fit.cross_products, jnp.asarray(fit.theta), jnp.asarray(fit.sigma),
                                       reml=fit.reml)
    return SatterthwaiteParts(*(np.asarray(x) for x in jax.device_get((A, J, V))))


def kenward_roger_block(fit) -> KenwardRogerParts:
    """The blocked engine's Kenward-Roger parts of a REML ``fit`` (``core/pls/ddf.py``)."""
    import jax
    import jax.numpy as jnp

    from ..core.pls.ddf import kenward_roger_program

    Phi, PhiA, P, W, _ = kenward_roger_program(fit.cross_products, jnp.asarray(fit.theta), jnp.asarray(fit.sigma))
    return KenwardRogerParts(*(np.asarray(x) for x in jax.device_get((Phi, PhiA, P, W))))


def satterthwaite_parts(fit) -> SatterthwaiteParts:
    """lmerTest's ingredients of ``fit``, from its model's engine (cached on the result)."""
    cached = fit.__dict__.get("_satterthwaite")
    if cached is None:
        cached = fit.__dict__["_satterthwaite"] = fit.model.engine.satterthwaite_parts(fit)
    return cached


def kenward_roger_parts(fit) -> KenwardRogerParts:
    """pbkrtest's ingredients of ``fit``, from its model's engine (cached on the result)."""
    cached = fit.__dict__.get("_kenward_roger")
    if cached is None:
        cached = fit.__dict__["_kenward_roger"] = fit.model.engine.kenward_roger_parts(fit)
    return cached


# ------------------------------------------------------------------ 1-D
def satterthwaite_df(parts: SatterthwaiteParts, L: np.ndarray) -> np.ndarray:
    """df of each row of ``L`` (k, p)."""
    L = np.atleast_2d(L)
    var = np.einsum("kp,pq,kq->k", L, parts.V, L)
    g = np.einsum("kp,mpq,kq->km", L, parts.J, L)
    denom = np.einsum("km,mn,kn->k", g, parts.A, g)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.0 * var ** 2 / denom


def _kr_adjust(parts: KenwardRogerParts, L: np.ndarray) -> dict:
    """pbkrtest's ``.KR_adjust`` / ``Lb_ddf`` for the rows of ``L`` (q, p)."""
    L = np.atleast_2d(L)
    Phi = parts.Phi
    q = np.linalg.matrix_rank(L)
    Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
    ThetaPhi = Theta @ Phi
    U = [ThetaPhi @ P @ Phi for P in parts.P]
    A1 = A2 = 0.0
    n = len(U)
    for i in range(n):
        for j in range(i, n):
            e = 1.0 if i == j else 2.0
            A1 += e * parts.W[i, j] * np.trace(U[i]) * np.trace(U[j])
            A2 += e * parts.W[i, j] * np.sum(U[i] * U[j].T)
    B = (A1 + 6 * A2) / (2 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    c1 = g / (3 * q + 2 * (1 - g))
    c2 = (q - g) / (3 * q + 2 * (1 - g))
    c3 = (q + 2 - g) / (3 * q + 2 * (1 - g))
    V0 = 1 + c1 * B
    V1 = 1 - c2 * B
    V2 = 1 - c3 * B
    V0 = 0.0 if abs(V0) < 1e-10 else V0
    ratio = (1 - A2 / q) / V1 if abs(V1) > 1e-300 else 0.0
    rho = (1.0 / q) * ratio ** 2 * V0 / V2
    df2 = 4 + (q + 2) / (q * rho - 1)
    scaling = 1.0 if abs(df2 - 2) < 1e-2 else df2 * (1 - A2 / q) / (df2 - 2)
    return {"q": int(q), "ddf": float(df2), "F_scaling": float(scaling)}


def kenward_roger_df(parts: KenwardRogerParts, L: np.ndarray) -> np.ndarray:
    """KR df of each row of ``L`` (pbkrtest's ``Lb_ddf``)."""
    return np.array([_kr_adjust(parts, row[None, :])["ddf"] for row in np.atleast_2d(L)])


def contrast_rows(fit, L: np.ndarray, ddf: str = "satterthwaite") -> pd.DataFrame:
    """t tests of each row of ``L``: Estimate, Std. Error, df, t value, Pr(>|t|)."""
    ddf = normalize_ddf(ddf)
    L = np.atleast_2d(np.asarray(L, dtype=float))
    if L.shape[1] != len(fit.fixef_names):
        raise ValueError(f"contrast has {L.shape[1]} columns; the model has {len(fit.fixef_names)} fixed effects")
    beta = fit.fixef.to_numpy()
    est = L @ beta
    if ddf == "kenward-roger":
        parts = kenward_roger_parts(fit)
        se = np.sqrt(np.einsum("kp,pq,kq->k", L, parts.PhiA, L))
        df = kenward_roger_df(parts, L)
    else:
        V = fit.vcov.to_numpy()
        se = np.sqrt(np.einsum("kp,pq,kq->k", L, V, L))
        if ddf == "satterthwaite":
            df = satterthwaite_df(satterthwaite_parts(fit), L)
        elif ddf == "residual":
            df = np.full(len(est), float(fit.nobs - len(beta)))
        else:
            df = np.full(len(est), np.inf)
    t = est / se
    p = 2 * special.stdtr(df, -np.abs(t))  # Student t upper tail, both sides
    return pd.DataFrame({"Estimate": est, "Std. Error": se, "df": df, "t value": t, "Pr(>|t|)": p})


@float64_scope
def coef_table(fit, ddf: str = "satterthwaite") -> pd.DataFrame:
    """lmerTest's ``summary(m, ddf=...)$coefficients``."""
    table = contrast_rows(fit, np.eye(len(fit.fixef_names)), ddf)
    table.index = fit.fixef_names
    if normalize_ddf(ddf) == "asymptotic":
        table = table.drop(columns="df").rename(columns={"t value": "z value", "Pr(>|t|)": "Pr(>|z|)"})
    return table


# ------------------------------------------------------------------ F tests
def _fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's ``get_Fstat_ddf``: denominator df of an F from q t-statistics' df."""
    nu = np.asarray(nu, dtype=float)
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = np.sum(nu / (nu - 2))
    return float(2 * E / (E - nu.size))


def f_test(fit, L: np.ndarray, ddf: str = "satterthwaite", eps: float = np.sqrt(np.finfo(float).eps)) -> dict:
    """lmerTest's ``contestMD``: Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F) for ``L beta = 0``."""
    ddf = normalize_ddf(ddf)
    L = np.atleast_2d(np.asarray(L, dtype=float))
    beta = fit.fixef.to_numpy()
    sigma2 = fit.sigma ** 2
    if ddf == "kenward-roger":
        parts = kenward_roger_parts(fit)
        adj = _kr_adjust(parts, L)
        q = adj["q"]
        Lb = L @ beta
        F_unscaled = float(Lb @ np.linalg.solve(L @ parts.PhiA @ L.T, Lb)) / q
        F = F_unscaled * adj["F_scaling"]
        return _f_row(F, q, adj["ddf"], F_unscaled * sigma2)
    V = fit.vcov.to_numpy()
    VL = L @ V @ L.T
    d, P = np.linalg.eigh(VL)
    order = np.argsort(d)[::-1]
    d, P = d[order], P[:, order]
    tol = max(eps * d[0], 0.0)
    q = int(np.sum(d > tol))
    PtL = (P.T @ L)[:q]
    t2 = (PtL @ beta) ** 2 / d[:q]
    F = float(np.sum(t2) / q)
    if ddf == "satterthwaite":
        nu = satterthwaite_df(satterthwaite_parts(fit), PtL)
        den = _fstat_ddf(nu)
    elif ddf == "residual":
        den = float(fit.nobs - len(beta))
    else:
        den = np.inf
    return _f_row(F, q, den, F * sigma2)


def _f_row(F: float, q: int, den: float, mean_sq: float) -> dict:
    p = special.fdtrc(q, den, F) if np.isfinite(den) else special.chdtrc(q, F * q)
    return {"Sum Sq": mean_sq * q, "Mean Sq": mean_sq, "NumDF": q, "DenDF": den, "F value": F, "Pr(>F)": p}


def contest(fit, L, ddf: str = "satterthwaite", joint: bool = True) -> pd.DataFrame:
    """Test ``L beta = 0``: one F test (``joint=True``) or a t test per row."""
    L = np.atleast_2d(np.asarray(L, dtype=float))
    if L.shape[1] != len(fit.fixef_names):
        raise ValueError(f"L has {L.shape[1]} columns; the model has {len(fit.fixef_names)} fixed effects "
                         f"({', '.join(fit.fixef_names)})")
    if joint:
        return pd.DataFrame([f_test(fit, L, ddf)])
    return contrast_rows(fit, L, ddf)
