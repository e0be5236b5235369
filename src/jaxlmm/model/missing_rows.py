"""Which rows a fit keeps: lme4's ``na.omit`` of the model frame.

A row is dropped when a variable the model uses is missing, its weight or
offset is NaN, its weight is 0 (when weights are given), or the value of a
transformed expression (``log(x)``, a response expression) is NaN.  An
infinite value is not missing but an error naming the column and the row.
For a batch of responses the response is not a used variable: its missing
values are per-trait masks instead.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..errors import DataError
from .formula import ParsedFormula
from .formula_grammar import compile_expression, tokenize
from .model_matrix import _model_matrix
from .naming import lme4_column_name


def _check_finite(values: np.ndarray, columns: list, rows: pd.Index, what: str) -> np.ndarray:
    """NaN rows of ``values`` (n, m) as a mask; an infinite value is a ``DataError`` naming its column and row."""
    inf = np.isinf(values)
    if inf.any():
        i = int(np.flatnonzero(inf.any(axis=1))[0])
        j = int(np.flatnonzero(inf[i])[0])
        raise DataError(f"column {lme4_column_name(str(columns[j]))!r} of {what} is {values[i, j]} in row "
                        f"{rows[i]!r} (first of {int(inf.any(axis=1).sum())}); infinite values cannot be fitted")
    return np.isnan(values).any(axis=1)


def _has_call(expr: str) -> bool:
    """Whether ``expr`` applies a function (a name followed by ``(``)."""
    tokens = tokenize(expr)
    return any(a.kind == "name" and b.text == "(" for a, b in zip(tokens, tokens[1:]))


def _pos_columns(expr: str) -> str:
    """``0 + pos(x, y)`` -> ``0 + x + y`` (the coordinates' missing values drop rows like any column's)."""
    inside = expr[expr.index("pos") + 3:].strip()[1:-1] if "pos" in expr else expr
    return "0 + " + " + ".join(v.strip() for v in inside.split(",") if v.strip())


def _missing_after_transforms(parsed: ParsedFormula, frame: pd.DataFrame, single: bool) -> np.ndarray:
    """Rows whose transformed values are NaN (dropped, as lme4's ``na.omit`` of the model frame);
    an infinite value (``log(0)``, an Inf in a column) is an error naming the term and the row."""
    missing = np.zeros(frame.shape[0], dtype=bool)
    parts = [(_pos_columns(t.expr) if re.search(r"\bpos\s*\(", t.expr) else t.expr, f"the random-effects term {t}")
             for t in parsed.random]
    parts.append((parsed.fixed, "the fixed effects"))
    parts += [(f"0 + I({e})", f"offset({e})") for e in parsed.offsets]
    if single and parsed.response is not None:
        parts.append((f"0 + {parsed.response}", f"the response {parsed.response.strip()!r}"))
    with np.errstate(all="ignore"):
        for expr, what in parts:
            if _has_call(expr) or expr.startswith("0 + "):
                mm = _model_matrix(expr, frame, what)
                values, columns = mm.to_numpy(dtype=np.float64), list(mm.columns)
            else:
                columns = [v for v in compile_expression(expr, frame.columns, what).variables
                           if pd.api.types.is_numeric_dtype(frame[v]) and not pd.api.types.is_bool_dtype(frame[v])]
                values = frame[columns].to_numpy(dtype=np.float64).reshape(frame.shape[0], -1)
            missing |= _check_finite(values, columns, frame.index, what)
    return missing


def _kept_rows(parsed: ParsedFormula, frame: pd.DataFrame, needed: dict[str, str], weights: np.ndarray,
               offset: np.ndarray, zero_weight_missing: bool, single: bool) -> np.ndarray:
    """The mask of the rows of ``frame`` the fit keeps (module docstring); a ``DataError`` if none.

    ``needed``: the variables the model uses; ``zero_weight_missing``: whether a weight of 0
    drops its row (given weights); ``single``: whether the formula's response is fitted.
    """
    used = frame[list(needed)]
    keep = ~(used.isna().any(axis=1).to_numpy() | np.isnan(weights) | np.isnan(offset))
    if zero_weight_missing:
        keep &= weights != 0
    if keep.any():
        keep[np.flatnonzero(keep)[_missing_after_transforms(parsed, frame.loc[keep], single)]] = False
    if not keep.any():
        raise DataError("no rows left after removing rows with missing values in the used columns "
                        f"({', '.join(needed)})")
    return keep
