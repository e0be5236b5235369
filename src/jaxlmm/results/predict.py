"""Predictions as lme4's ``predict.merMod``.

``prediction = offset + X_new beta + sum_{k in re_form} z_k,new . b_k[level]``.
``re_form=None`` uses every random-effects term, ``"~0"`` (or ``"NA"``,
``False``) none (lme4's ``re.form = NA``), and a formula such as
``"~ (1 | Subject)"`` the terms whose grouping factor it names, restricted to
the columns it names (a structured term may be named with its keyword,
``"~ ar1(0 + factor(Days) | Subject)"``; a ``pos()`` term by its coordinates).
A level not seen in the fit is an error unless ``allow_new_levels=True``, in
which case its random effects are 0 (the population value), as in lme4.

A ``pos()`` term (``ou``, ``exp``, ``gau``, a user's covariance of the
coordinates) maps each row of ``newdata`` to its position: a position of the
fit is that column's BLUP, and a new position ``s0`` of a known level gets the
conditional expectation of its effect given the data (kriging),
``C(s0, S) Z^T V^-1 (y - X beta)`` with ``C`` the term's covariance function at
the estimate -- the BLUP the fit would have given a column at ``s0`` with no
observations.  An unstructured ``(0 + pos(...) | g)`` term has no covariance
beyond its columns: a new position there is an error.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..model.data_checks import _numeric_vector, unseen_factor_levels
from ..model.model_matrix import _model_matrix, formula_offset
from ..errors import DataError, FormulaError
from ..model.formula import parse_formula
from ..model.naming import format_level, lme4_column_name


def _selected_terms(fit, re_form) -> dict[int, list[int]]:
    """Term index -> columns to include."""
    terms = fit.design.terms
    if re_form is None:
        return {k: list(range(len(t.columns))) for k, t in enumerate(terms)}
    if re_form is False or (isinstance(re_form, float) and np.isnan(re_form)):
        return {}
    text = str(re_form).strip()
    if text.upper() == "NA" or text.replace(" ", "") in ("~0", "~1", "0"):
        return {}
    if not text.startswith("~"):
        raise FormulaError(f"re_form must be None, '~0' or a formula such as '~ (1 | g)', not {re_form!r}")
    parsed = parse_formula(text)
    chosen: dict[int, list[int]] = {}
    for rt in parsed.random:
        matched = False
        for k, t in enumerate(terms):
            if t.group == rt.group:
                idx = _matching_columns(t, rt)
                if idx:
                    chosen.setdefault(k, [])
                    chosen[k] = sorted(set(chosen[k]) | set(idx))
                    matched = True
        if not matched:
            raise FormulaError(f"re_form term {rt} matches no random-effects term of the model "
                               f"({', '.join(str(t.term) for t in terms)})")
    return chosen


def _matching_columns(t, rt) -> list[int]:
    """The columns of design term ``t`` that the ``re_form`` term ``rt`` (same group) names: all of them
    when it is written as the model's term (whitespace aside), else those whose names or formula terms
    its left side lists; none where it names another structure (``ar1(...)`` for a ``cs(...)`` term)."""
    from ..model.structured_terms import is_pos_term, pos_variables

    if _names_structure(rt) and rt.cov != t.term.cov:
        return []
    if re.sub(r"\s+", "", rt.expr) == re.sub(r"\s+", "", t.term.expr):
        return list(range(len(t.columns)))
    if t.coords is not None:                 # a pos() term: named by its coordinates
        if is_pos_term(rt) and pos_variables(rt.expr, rt) == pos_variables(t.term.expr, t.term):
            return list(range(len(t.columns)))
        return []
    names = _expr_columns(rt.expr)
    idx = {j for j, c in enumerate(t.columns) if c in names}
    slices = getattr(t.z_spec, "term_slices", None) or {}
    wanted = _expr_terms(rt.expr)
    for term, sl in slices.items():
        if str(term) in wanted:
            idx |= set(range(len(t.columns))[sl])
    return sorted(idx)


def _names_structure(rt) -> bool:
    return rt.cov != "us" or bool(getattr(rt, "keyword", False))


def _expr_terms(expr: str) -> set[str]:
    import formulaic

    try:
        return {str(term) for term in formulaic.Formula(expr)}
    except Exception:               # a left side formulaic does not read (pos(...)): no formula terms
        return set()


def _expr_columns(expr: str) -> set[str]:
    import formulaic

    out = set()
    for term in formulaic.Formula(expr):
        s = str(term)
        out.add("(Intercept)" if s == "1" else lme4_column_name(s))
    return out


def predict(fit, newdata=None, *, re_form=None, allow_new_levels: bool = False) -> np.ndarray:
    design = fit.design
    beta = fit.fixef.to_numpy()
    chosen = _selected_terms(fit, re_form)
    b = [fit._b(k) for k in range(len(design.terms))]
    no_factor = None
    if newdata is None:
        if re_form is None:
            return fit.fitted.copy()
        X, offset = design.X, design.offset
        zs = [t.z for t in design.terms]
        codes = [t.factor.codes for t in design.terms]
    else:
        if not isinstance(newdata, pd.DataFrame):
            newdata = pd.DataFrame(newdata)
        _check_newdata_columns(fit, newdata, chosen)
        no_factor = unseen_factor_levels(design.fixed_spec, newdata)
        mm = _model_matrix(design.fixed_spec, newdata, "the fixed effects for newdata")
        names = [lme4_column_name(c) for c in mm.columns]
        X = mm.to_numpy(dtype=float)[:, [names.index(n) for n in design.fixef_names]]
        offset = np.zeros(len(newdata))
        if isinstance(fit._offset_arg, str):
            offset = _numeric_vector(fit._offset_arg, "offset", len(newdata), newdata)
        offset = offset + formula_offset(design.formula, newdata)
        zs, codes = [], []
        for k, t in enumerate(design.terms):
            if k not in chosen:
                zs.append(None)
                codes.append(None)
                continue
            c = t.factor.lookup(newdata)
            if (c < 0).any() and not allow_new_levels:
                bad = newdata.iloc[int(np.flatnonzero(c < 0)[0])]
                level = ":".join(format_level(_scalar(bad[v])) for v in t.factor.variables)
                raise DataError(f"new level {level!r} of grouping factor {t.group!r} in newdata; "
                                "use allow_new_levels=True to predict it at the population level")
            codes.append(c)
            if t.coords is None:
                zs.append(_model_matrix(t.z_spec, newdata, f"the random-effects term {t.term}").to_numpy(dtype=float))
                continue
            z, b[k], chosen[k] = _positions(fit, k, newdata, c, chosen[k])
            zs.append(z)
    eta = offset + X @ beta
    for k, cols in chosen.items():
        c = codes[k]
        known = c >= 0
        contrib = np.zeros(len(eta))
        contrib[known] = np.sum(zs[k][known][:, cols] * b[k][c[known]][:, cols], axis=1)
        eta = eta + contrib
    if no_factor is not None:
        eta[no_factor] = np.nan          # a missing factor value: NA, as lme4's na.pass
    return eta


def _positions(fit, k: int, newdata: pd.DataFrame, codes: np.ndarray, cols: list[int]):
    """A ``pos()`` term on ``newdata``: indicators of its positions (n, S + S_new), the BLUPs of every
    level at the fit's positions and at the new ones (levels, S + S_new), and the columns to use."""
    from ..model.structured_terms import match_positions, pos_points

    t = fit.design.terms[k]
    pts = pos_points(t.term, newdata)
    if not np.all(np.isfinite(pts)):
        raise DataError(f"newdata has missing or infinite coordinates of {t.term} (row "
                        f"{newdata.index[int(np.flatnonzero(~np.all(np.isfinite(pts), axis=1))[0])]!r})")
    where = match_positions(t.coords, pts)
    S = len(t.columns)
    b = fit._b(k)
    need = (where < 0) & (codes >= 0)          # new positions of known levels
    if need.any() and fit.kind != "structured":      # only a structured fit has a covariance to krige with
        first = pts[np.flatnonzero(need)[0]]
        raise DataError(f"newdata has a position the fit did not see, pos({', '.join(f'{v:g}' for v in first)}), "
                        f"of the unstructured term {t.term}: its covariance is over the fitted positions only. "
                        "Predict there with re_form excluding the term, or give the term a covariance function "
                        "of the coordinates (exp, gau, ou, or covariances={...}) to krige it")
    if need.any() and len(cols) == S:
        new, inverse = np.unique(pts[need], axis=0, return_inverse=True)
        b = np.concatenate([b, fit._krige(k, new)], axis=1)
        where = where.copy()
        where[np.flatnonzero(need)] = S + inverse.reshape(-1)
        cols = list(cols) + list(range(S, S + len(new)))
    elif need.any():
        raise DataError(f"newdata has positions of {t.term} that the fit did not see, and re_form names only "
                        "some of its columns: the BLUP at a new position uses the whole term")
    z = np.zeros((len(pts), b.shape[1]))
    rows = np.flatnonzero(where >= 0)
    z[rows, where[rows]] = 1.0
    return z, b, cols


def _check_newdata_columns(fit, newdata: pd.DataFrame, chosen) -> None:
    needed = set(fit.design.fixed_spec.required_variables) if hasattr(fit.design.fixed_spec, "required_variables") \
        else set()
    for k in chosen:
        t = fit.design.terms[k]
        needed |= set(t.factor.variables)
        needed |= set(getattr(t.z_spec, "required_variables", set()))
        if t.coords is not None:
            from ..model.structured_terms import pos_variables

            needed |= set(pos_variables(t.term.expr, t.term))
    missing = sorted(v for v in needed if v not in newdata.columns)
    if missing:
        raise DataError(f"newdata is missing column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(map(repr, missing))} needed for prediction")


def _scalar(x):
    return x.item() if hasattr(x, "item") else x
