"""ANOVA tables: type III F tests of a fit, and likelihood-ratio tests between fits.

Type III (lmerTest's ``anova(m, type = 3)``): SAS's type III hypotheses,
built as lmerTest builds them -- a general set of estimable functions of the
over-parameterized model, then Goodnight's rule (zero the columns of terms
that do not contain the tested one) and orthogonalization against the rows of
containing terms.  Each row of the table is an F test of that ``L`` with
Satterthwaite or Kenward-Roger denominator df (``inference.f_test``); the
Satterthwaite ddf of a multi-df test depends on the rows of ``L`` (not only
on their span), which is why the construction follows lmerTest exactly.

Likelihood-ratio tests (lme4's ``anova(m0, m1)``): models fitted by REML are
refitted by ML; rows sorted by the number of parameters, with
``Chisq = deviance difference``, ``Df = difference in npar``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from .._x64 import float64_scope
from .ddf import f_test, normalize_ddf


def _rank_deficient_design(fit):
    """lmerTest's ``get_rdX``: per term the full (over-parameterized) coding, plus the intercept."""
    from ..model.design import _model_matrix
    from ..model.formula_grammar import formula_context
    from ..model.naming import lme4_column_name

    design = fit.design
    spec = design.fixed_spec
    blocks, names, params = [], [], []
    has_intercept = any(str(t) == "1" for t in spec.terms)
    if has_intercept:
        blocks.append(np.ones((design.nobs, 1)))
        names.append("(Intercept)")
        params.append("(Intercept)")
    terms = [t for t in spec.terms if str(t) != "1"]
    for term in terms:
        formulaic = __import__("formulaic")
        try:
            mm = formulaic.model_matrix(f"0 + {term}", design.frame, ensure_full_rank=False, na_action="ignore",
                                        context=formula_context())
        except Exception:
            mm = _model_matrix(f"0 + {term}", design.frame, f"the term {term}")
        blocks.append(mm.to_numpy(dtype=float))
        names.extend([str(term)] * mm.shape[1])
        params.extend(lme4_column_name(c) for c in mm.columns)
    rdX = np.concatenate(blocks, axis=1)
    is_coef = np.array([params.index(c) for c in design.fixef_names])
    return rdX, np.array(names), is_coef, terms


def _general_L(rdX: np.ndarray, is_coef: np.ndarray) -> np.ndarray:
    """lmerTest's ``general_L``: a general set of estimable functions."""
    xtx = rdX.T @ rdX
    g2 = np.zeros_like(xtx)
    g2[np.ix_(is_coef, is_coef)] = np.linalg.inv(xtx[np.ix_(is_coef, is_coef)])
    g2[np.abs(g2) < 1e-10] = 0.0
    L = g2 @ xtx
    L[np.abs(L) < 1e-6] = 0.0
    return L


def _relatives(term, terms, numeric: set[str]) -> list[int]:
    """Indices of the other terms that contain ``term`` (same numeric covariates)."""
    def variables(t):
        return {str(f) for f in t.factors}

    vt = variables(term)
    out = []
    for i, other in enumerate(terms):
        if other is term:
            continue
        vo = variables(other)
        if vt <= vo and (vt & numeric) == (vo & numeric):
            out.append(i)
    return out


def _contrast_type3_sas(term, terms, names: np.ndarray, L: np.ndarray, numeric: set[str],
                        eps: float = 1e-8) -> np.ndarray:
    """lmerTest's ``contrast_type3SAS`` (Goodnight's rule 1, then orthogonalization)."""
    L = L.copy()
    term_cols = np.flatnonzero(names == str(term))
    related = _relatives(term, terms, numeric)
    contain = np.concatenate([np.flatnonzero(names == str(terms[i])) for i in related]) if related else np.array([], int)
    colnums = [c for c in range(L.shape[1]) if c not in set(term_cols) | set(contain)]
    for col in colnums:
        pivots = np.flatnonzero(np.abs(L[:, col]) > eps)
        if len(pivots):
            first = pivots[0]
            L[first] = L[first] / L[first, col]
            for other in pivots[1:]:
                L[other] = L[other] - L[other, col] * L[first]
            L[first] = 0.0
    L = L[np.abs(L).sum(axis=1) != 0]
    if L.shape[0] <= 1:
        return L
    zero_rows = np.flatnonzero(np.abs(L[:, term_cols]).sum(axis=1) == 0)
    for zr in zero_rows:
        w = L[zr].copy()
        for i in range(L.shape[0]):
            if i != zr and np.abs(L[i]).sum() != 0:
                L[i] = L[i] - (w @ L[i]) / (w @ w) * w
        L[zr] = 0.0
    L[np.abs(L) < 1e-6] = 0.0
    return L[np.abs(L).sum(axis=1) != 0]


def type3_contrasts(fit) -> dict[str, np.ndarray]:
    """Per fixed-effects term (intercept excluded) its type III contrast matrix on the fit's
    coefficients, computed as lmerTest's ``get_contrasts_type3`` (SAS's type III)."""
    design = fit.design
    if len(design.fixef_names) == 0:
        return {}
    rdX, names, is_coef, terms = _rank_deficient_design(fit)
    if np.any(rdX.sum(axis=0) == 0):
        from ..errors import warn

        warn("missing cells for some factor levels: interpret type III hypotheses with care")
    L = _general_L(rdX, is_coef)
    kinds = getattr(design.fixed_spec, "encoder_state", {})
    numeric = {v for v, (kind, _) in kinds.items() if not str(kind).lower().endswith("categorical")}
    out = {}
    for term in terms:
        Lc = _contrast_type3_sas(term, terms, names, L, numeric)[:, is_coef]
        if Lc.size and np.linalg.matrix_rank(Lc) > 0:
            out[str(term)] = Lc
    return out


def anova_type3(fit, ddf: str = "satterthwaite") -> pd.DataFrame:
    """``lmerTest::anova(m, type = 3, ddf = ...)``."""
    ddf = normalize_ddf(ddf)
    rows = {name: f_test(fit, L, ddf) for name, L in type3_contrasts(fit).items()}
    table = pd.DataFrame.from_dict(rows, orient="index",
                                   columns=["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"])
    method = {"satterthwaite": "Satterthwaite's", "kenward-roger": "Kenward-Roger's"}.get(ddf, ddf)
    table.attrs["heading"] = f"Type III Analysis of Variance Table with {method} method"
    return table


@float64_scope
def lrt(*fits, names: list[str] | None = None, refit: bool = True) -> pd.DataFrame:
    """lme4's ``anova(m0, m1, ...)``: likelihood-ratio tests, REML fits refitted by ML.

    Public as ``jaxlmm.likelihood_ratio_test`` and, by lme4's name, ``jaxlmm.anova``; a single
    model's type III table (lmerTest's ``anova(m)``) is ``fit.anova()``.
    """
    if len(fits) < 2:
        raise ValueError("anova needs at least two fitted models to compare")
    names = names or [f"m{i}" for i in range(len(fits))]
    if refit:
        fits = [f.refit_ml() if f.reml else f for f in fits]
    n = {f.nobs for f in fits}
    if len(n) > 1:
        raise ValueError(f"models were not all fitted to the same number of observations ({sorted(n)})")
    order = sorted(range(len(fits)), key=lambda i: fits[i].df_model)
    rows = []
    prev = None
    for i in order:
        f = fits[i]
        row = {"npar": f.df_model, "AIC": f.aic, "BIC": f.bic, "logLik": f.loglik, "deviance": f.deviance,
               "Chisq": np.nan, "Df": np.nan, "Pr(>Chisq)": np.nan}
        if prev is not None:
            chisq = max(prev.deviance - f.deviance, 0.0)
            df = f.df_model - prev.df_model
            row.update({"Chisq": chisq, "Df": df, "Pr(>Chisq)": special.chdtrc(df, chisq) if df > 0 else np.nan})
        rows.append(row)
        prev = f
    table = pd.DataFrame(rows, index=[names[i] for i in order])
    table.attrs["heading"] = "Data: models refitted with ML" if refit else ""
    return table
