"""Predictions as lme4's ``predict.merMod``.

``prediction = offset + X_new beta + sum_{k in re_form} z_k,new . b_k[level]``.
``re_form=None`` uses every random-effects term, ``"~0"`` (or ``"NA"``,
``False``) none (lme4's ``re.form = NA``), and a formula such as
``"~ (1 | Subject)"`` the terms whose grouping factor it names, restricted to
the columns it names.  A level not seen in the fit is an error unless
``allow_new_levels=True``, in which case its random effects are 0 (the
population value), as in lme4.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..model.data_checks import _numeric_vector
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
        cols = _expr_columns(rt.expr)
        matched = False
        for k, t in enumerate(terms):
            if t.group == rt.group:
                idx = [j for j, c in enumerate(t.columns) if c in cols]
                if idx:
                    chosen.setdefault(k, [])
                    chosen[k] = sorted(set(chosen[k]) | set(idx))
                    matched = True
        if not matched:
            raise FormulaError(f"re_form term {rt} matches no random-effects term of the model "
                               f"({', '.join(str(t.term) for t in terms)})")
    return chosen


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
            zs.append(_model_matrix(t.z_spec, newdata, f"the random-effects term {t.term}").to_numpy(dtype=float))
            c = t.factor.lookup(newdata)
            if (c < 0).any() and not allow_new_levels:
                bad = newdata.iloc[int(np.flatnonzero(c < 0)[0])]
                level = ":".join(format_level(_scalar(bad[v])) for v in t.factor.variables)
                raise DataError(f"new level {level!r} of grouping factor {t.group!r} in newdata; "
                                "use allow_new_levels=True to predict it at the population level")
            codes.append(c)
    eta = offset + X @ beta
    for k, cols in chosen.items():
        c = codes[k]
        known = c >= 0
        contrib = np.zeros(len(eta))
        contrib[known] = np.sum(zs[k][known][:, cols] * b[k][c[known]][:, cols], axis=1)
        eta = eta + contrib
    return eta


def _check_newdata_columns(fit, newdata: pd.DataFrame, chosen) -> None:
    needed = set(fit.design.fixed_spec.required_variables) if hasattr(fit.design.fixed_spec, "required_variables") \
        else set()
    for k in chosen:
        t = fit.design.terms[k]
        needed |= set(t.factor.variables)
        needed |= set(getattr(t.z_spec, "required_variables", set()))
    missing = sorted(v for v in needed if v not in newdata.columns)
    if missing:
        raise DataError(f"newdata is missing column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(map(repr, missing))} needed for prediction")


def _scalar(x):
    return x.item() if hasattr(x, "item") else x
