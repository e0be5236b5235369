"""Checks of the data against the model, each failure a ``DataError`` that names what is wrong.

The data is a non-empty frame holding every variable of the formula; weights are
finite and non-negative, offsets finite; a single response has a non-missing,
non-constant value; and the random-effects terms pass lme4's checks of their
numbers of levels against the number of observations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError
from .formula import ParsedFormula
from .model_matrix import _response, formula_offset


def _as_frame(data) -> pd.DataFrame:
    """``data`` as a non-empty ``DataFrame`` (a dict of columns is converted)."""
    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, dict):
        frame = pd.DataFrame(data)
    else:
        raise DataError(f"data must be a pandas DataFrame (or a dict of columns), not {type(data).__name__}")
    if frame.shape[0] == 0:
        raise DataError("data has no rows")
    if not frame.columns.is_unique:
        dup = frame.columns[frame.columns.duplicated()][0]
        raise DataError(f"data has {int((frame.columns == dup).sum())} columns named {dup!r}; column names must "
                        "be unique")
    return frame


def _check_columns(needed: dict[str, str], frame: pd.DataFrame) -> None:
    """Every variable of ``needed`` (variable -> the part of the formula using it) is a column of ``frame``."""
    for var, where in needed.items():
        if var not in frame.columns:
            avail = ", ".join(map(str, list(frame.columns)[:12]))
            raise DataError(f"column {var!r} (used in {where}) not found in data; columns are: {avail}")


def _numeric_vector(values, name: str, n: int, frame: pd.DataFrame) -> np.ndarray:
    """``values`` (a column name of ``frame`` or an array) as a float vector of length ``n``."""
    if isinstance(values, str):
        if values not in frame.columns:
            raise DataError(f"{name} column {values!r} not found in data")
        values = frame[values]
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise DataError(f"{name} has length {arr.shape[0]} but data has {n} rows")
    return arr


def _weights_and_offset(parsed: ParsedFormula, frame: pd.DataFrame, weights, offset) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``frame``: the prior weights (default 1) and the total offset, ``offset`` plus the
    formula's ``offset(...)`` terms (default 0).

    NaN marks a missing value (its row is dropped later); a weight must otherwise be finite
    and ``>= 0``, and the offset finite.
    """
    n_all = frame.shape[0]
    w_all = np.ones(n_all) if weights is None else _numeric_vector(weights, "weights", n_all, frame)
    o_all = np.zeros(n_all) if offset is None else _numeric_vector(offset, "offset", n_all, frame)
    if weights is not None:
        bad = ~np.isfinite(w_all) & ~np.isnan(w_all)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"weights must be finite; row {frame.index[i]!r} has {w_all[i]}")
        if (w_all < 0).any():
            i = int(np.flatnonzero(w_all < 0)[0])
            raise DataError(f"negative weights are not allowed; row {frame.index[i]!r} has {w_all[i]}")
    if parsed.offsets:
        o_all = o_all + formula_offset(parsed, frame)
    if np.isinf(o_all).any():
        raise DataError("offset must be finite")
    return w_all, o_all


def _checked_response(parsed: ParsedFormula, frame: pd.DataFrame, weights: np.ndarray) -> np.ndarray:
    """The formula's response on the rows of ``frame``: some value non-missing, and the values
    of positive weight not all equal (a constant response has no variance to estimate)."""
    y = _response(frame, parsed.response)
    if np.isnan(y).all():
        raise DataError(f"response {parsed.response!r} has no non-missing values")
    used = y[~np.isnan(y) & (weights > 0)]
    if used.size and np.ptp(used) == 0:
        raise DataError(f"response {parsed.response.strip()!r} is constant (every used value is {used[0]:g}): "
                        "there is no variance to estimate")
    return y


def _check_levels(terms: list, n: int, rows: np.ndarray | None = None, context: str = "") -> None:
    """lme4's ``check.nlev.gtr.1``, ``check.nobs.vs.nlev`` and ``check.nobs.vs.nRE``.

    Every grouping factor has at least 2 levels; for a term without a relationship matrix,
    ``l < n`` and ``l S < n`` (``l`` levels, ``S`` columns, ``n`` observations).  Terms with a
    relationship matrix are exempt from the last two (one record per individual is the
    usual GBLUP design; K makes the effects identifiable), and so are structured terms (also from
    the first: one field of a spatial ``exp`` term is one level)
    (their few parameters are identifiable where lme4's unstructured ones are not).

    ``rows`` (a mask of the design's rows, ``n`` of them true) counts only the levels those rows have:
    ``fit_function``'s case weights that remove rows are checked as ``lmer`` checks the rows left;
    ``context`` is added to the messages.
    """
    structured = ("ar1", "cs", "ou", "exp", "gau")

    def nlevels(t) -> int:
        return len(t.factor.levels) if rows is None else len(np.unique(np.asarray(t.factor.codes)[rows]))

    for t in terms:
        nlev = nlevels(t)
        if nlev < 2 and t.term.cov not in structured:
            raise DataError(f"grouping factor {t.group!r} has only {nlev} level{context}; "
                            "grouping factors must have > 1 sampled level")
    terms = [t for t in terms if t.relmat is None and t.term.cov not in structured]
    problems = [t.group for t in terms if nlevels(t) >= n]
    if problems:
        raise DataError("number of levels of each grouping factor must be < number of observations "
                        f"(problems: {', '.join(problems)}; {n} observations{context})")
    for t in terms:
        q = nlevels(t) * len(t.columns)
        if n <= q:
            raise DataError(f"number of observations (={n}) <= number of random effects (={q}) for term "
                            f"{t.term}{context}; the random-effects parameters and the residual variance are "
                            "probably unidentifiable")


def unseen_factor_levels(spec, newdata: pd.DataFrame, what: str = "newdata") -> np.ndarray:
    """Check ``newdata``'s values of the fixed-effect factors of ``spec`` (formulaic's ``ModelSpec`` of the
    fit): a level the fit never saw is a ``DataError`` naming the factor and the level (lme4: "factor f
    has new level R"; formulaic would silently code it as the reference level).  Returns the mask of the
    rows with a missing factor value, whose prediction is NaN (lme4's ``na.pass``)."""
    import re

    missing = np.zeros(len(newdata), dtype=bool)
    for key, (kind, state) in getattr(spec, "encoder_state", {}).items():
        if not str(kind).lower().endswith("categorical") or not isinstance(state, dict):
            continue
        var = key
        if var not in newdata.columns:
            inner = re.fullmatch(r"C\(\s*`?([^,`()]+?)`?\s*(,.*)?\)", str(key))
            var = inner.group(1) if inner else None
        if var is None or var not in newdata.columns or "categories" not in state:
            continue
        levels = list(state["categories"])
        col = newdata[var]
        na = col.isna().to_numpy()
        new = ~col.isin(levels).to_numpy() & ~na
        if new.any():
            values = list(dict.fromkeys(col[new].tolist()))
            shown = ", ".join(map(repr, values[:5])) + (" ..." if len(values) > 5 else "")
            raise DataError(f"{what}: factor {var!r} has new level{'s' if len(values) > 1 else ''} {shown} "
                            f"(row {newdata.index[int(np.flatnonzero(new)[0])]!r}); the fit's levels are "
                            f"{', '.join(map(repr, levels[:10]))}{' ...' if len(levels) > 10 else ''}")
        missing |= na
    return missing
