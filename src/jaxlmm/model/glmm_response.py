"""The response of a GLMM as lme4 writes it, checked against its family.

- binomial: a 0/1 numeric or boolean column, a two-level factor (the first level, in R's order, is
  failure: 0), ``cbind(successes, failures)`` (trials = their sum), or a proportion with ``weights=``
  the trials; the core sees the proportion ``y`` and the trials ``w`` (``core/glmm/families.py``);
- Poisson and negative binomial: non-negative integer counts;
- Gamma: positive values.

Every failure is a ``DataError`` naming the column or expression and the offending value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError, FormulaError
from .formula import _split_top
from .model_matrix import _response

RESPONSE_COLUMN = "jaxlmm_glmm_response"


def _values(frame: pd.DataFrame, expr: str) -> np.ndarray:
    """A numeric column or expression of ``frame`` (an expression is evaluated as ``I(expr)``)."""
    name = expr.strip().strip("`")
    if name in frame.columns:
        return _response(frame, name)
    return _response(frame, f"I({expr.strip()})")


def _cbind_parts(lhs: str) -> list[str] | None:
    text = lhs.strip()
    if not (text.startswith("cbind(") and text.endswith(")")):
        return None
    parts = [p for _, p in _split_top(text[len("cbind("):-1], ",")]
    if len(parts) != 2:
        raise FormulaError(f"cbind() in the response {lhs!r} needs exactly two arguments: cbind(successes, failures)")
    return parts


def _two_level(frame: pd.DataFrame, name: str) -> np.ndarray:
    """0/1 of a factor, string or boolean column: 0 for the first level (R's order), 1 for the other."""
    col = frame[name]
    if pd.api.types.is_bool_dtype(col):
        return col.astype(float).to_numpy()
    levels = list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) else sorted(col.dropna().unique())
    if len(levels) != 2:
        raise DataError(f"binomial response {name!r} has {len(levels)} levels {levels[:5]}; it needs 2 "
                        "(or 0/1 values, cbind(successes, failures), or proportions with weights=)")
    return np.where(col.isna(), np.nan, (col == levels[1]).astype(float)).astype(float)


def glmm_response(lhs: str, frame: pd.DataFrame, family: str, weights) -> tuple[np.ndarray, np.ndarray | None]:
    """``(y, trials)`` of the response ``lhs`` on ``frame`` (module docstring); ``trials`` None but for the
    binomial (where it becomes the prior weights).  NaN marks a missing value."""
    parts = _cbind_parts(lhs)
    if parts is not None and family != "binomial":
        raise FormulaError(f"cbind(successes, failures) is a binomial response; family {family!r} takes one column")
    if parts is not None:
        if weights is not None:
            raise DataError("weights= with a cbind(successes, failures) response: the trials are the sum of the two")
        s, f = (_values(frame, p) for p in parts)
        for v, p in zip((s, f), parts):
            _check_counts(v, p, "cbind() argument")
        trials = s + f
        y = np.where(trials > 0, s / np.where(trials > 0, trials, 1.0), 0.0)
        return np.where(np.isnan(trials), np.nan, y), trials
    name = lhs.strip().strip("`")
    if family == "binomial" and name in frame.columns and not pd.api.types.is_numeric_dtype(frame[name]):
        y = _two_level(frame, name)
    elif family == "binomial" and name in frame.columns and pd.api.types.is_bool_dtype(frame[name]):
        y = _two_level(frame, name)
    else:
        y = _values(frame, lhs)
    ok = y[~np.isnan(y)]
    if family == "binomial":
        return _binomial(y, ok, lhs, weights)
    if family in ("poisson", "negative_binomial"):
        _check_counts(y, lhs, f"{family} response")
    elif family == "gamma" and ok.size and ok.min() <= 0:
        raise DataError(f"Gamma response {lhs!r} must be positive; it has the value {ok.min():g}")
    return y, None


def _binomial(y, ok, lhs, weights):
    if ok.size and (ok.min() < 0 or ok.max() > 1):
        bad = ok[(ok < 0) | (ok > 1)][0]
        raise DataError(f"binomial response {lhs!r} has the value {bad:g}: use 0/1 values, a two-level factor, "
                        "cbind(successes, failures), or proportions in [0, 1] with weights= (the trials)")
    if weights is None and ok.size and np.any((ok != 0) & (ok != 1)):
        raise DataError(f"binomial response {lhs!r} has proportions (e.g. {ok[(ok != 0) & (ok != 1)][0]:g}) "
                        "but no weights=: give the number of trials per row as weights=, or write "
                        "cbind(successes, failures)")
    return y, None


def _check_counts(v, what, kind):
    ok = v[~np.isnan(v)]
    bad = ok[(ok < 0) | (ok != np.round(ok))]
    if bad.size:
        raise DataError(f"{kind} {what!r} must be non-negative integer counts; it has the value {bad[0]:g}")
