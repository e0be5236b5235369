"""Front end of structured covariances: ``pos(...)`` coordinates, ``dispformula`` groups, user covariances.

- ``exp(0 + pos(x, y) | g)``, ``gau(...)``, ``ou(0 + pos(t) | g)``: ``pos`` plays the role of
  glmmTMB's ``numFactor``: each distinct coordinate tuple is one column (an indicator), named
  ``pos(1,2)`` as R prints it, ordered with the first coordinate varying fastest.
- ``dispformula="~ location"``: one residual standard deviation per level of a factor (glmmTMB's
  ``dispformula``); every level needs at least two observations.
- ``covariances={"field": jaxlmm.covariance(fn, n_params, ...)}``: the term grouped by ``field``
  gets the covariance ``fn(params, coords)`` (``core/covfuns.py``).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..core.covfuns import SPATIAL, CovarianceFunction, built_in
from ..errors import DataError, FormulaError

_POS = re.compile(r"^\s*(?:0\s*\+\s*)?pos\s*\(([^()]*)\)\s*(?:\+\s*0\s*|-\s*1\s*)?$")


def is_pos_term(term) -> bool:
    """A spatial structure's term, or any term whose left side is ``0 + pos(...)``."""
    return term.cov in SPATIAL or bool(re.search(r"\bpos\s*\(", term.expr))


def pos_variables(expr: str, term) -> list[str]:
    """The variables of ``0 + pos(a, b, ...)`` (the only left side a spatial structure takes)."""
    m = _POS.match(expr)
    if m is None or not re.search(r"(^\s*0\s*\+)|(\+\s*0\s*$)|(-\s*1\s*$)", expr):
        name = term.cov if term.cov != "us" else ""
        raise FormulaError(f"{term}: {name}(...) takes coordinates as its left side, written "
                           f"{name}(0 + pos(x, y) | {term.group}) (without an intercept)")
    names = [v.strip().strip("`") for v in m.group(1).split(",") if v.strip()]
    if not names:
        raise FormulaError(f"{term}: pos() needs at least one coordinate column")
    if term.cov == "ou" and len(names) != 1:
        raise FormulaError(f"{term}: ou() is over one coordinate (times): write ou(0 + pos(t) | {term.group})")
    return names


def _r_number(v: float) -> str:
    return f"{v:g}"


def pos_design(term, frame: pd.DataFrame):
    """Indicator columns of the distinct coordinates: ``z`` (n, S), column names, coordinates (S, d)."""
    names = pos_variables(term.expr, term)
    cols = []
    for v in names:
        col = frame[v]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DataError(f"pos() needs numeric coordinates; column {v!r} in {term} is {col.dtype}")
        cols.append(col.to_numpy(dtype=float))
    pts = np.column_stack(cols)
    uniq, codes = np.unique(pts[:, ::-1], axis=0, return_inverse=True)   # first coordinate fastest
    coords = uniq[:, ::-1]
    z = np.zeros((len(pts), len(coords)))
    z[np.arange(len(pts)), codes.reshape(-1)] = 1.0
    columns = tuple("pos(" + ",".join(_r_number(c) for c in row) + ")" for row in coords)
    return z, columns, coords


def dispformula_variable(dispformula: str) -> str:
    """The factor of ``"~ location"`` (one variable)."""
    text = dispformula.strip()
    m = re.match(r"^~\s*`?([A-Za-z_.][A-Za-z0-9_.]*)`?\s*$", text)
    if m is None:
        raise FormulaError(f"dispformula {dispformula!r}: write it as '~ factor' (one residual SD per level)")
    return m.group(1)


def residual_groups(dispformula: str | None, frame: pd.DataFrame):
    """Per row the code of its residual group, the groups' names, and the column (None: one group)."""
    if dispformula is None:
        return np.zeros(len(frame), dtype=np.int64), ["Residual"], None
    var = dispformula_variable(dispformula)
    if var not in frame.columns:
        raise DataError(f"dispformula {dispformula!r} names column {var!r}, which is not in the data")
    col = frame[var]
    levels = sorted(col.unique().tolist(), key=lambda v: str(v)) if not isinstance(
        col.dtype, pd.CategoricalDtype) else [c for c in col.cat.categories if (col == c).any()]
    codes = np.array([levels.index(v) for v in col])
    counts = np.bincount(codes, minlength=len(levels))
    few = [str(levels[i]) for i in np.flatnonzero(counts < 2)]
    if few:
        raise DataError(f"dispformula {dispformula!r}: level{'s' if len(few) > 1 else ''} {', '.join(few)} of "
                        f"{var!r} {'have' if len(few) > 1 else 'has'} fewer than two observations; "
                        "its residual variance is not estimable")
    return codes, [str(v) for v in levels], var


def term_covariance(t, user: dict | None) -> CovarianceFunction:
    """The ``CovarianceFunction`` of design term ``t`` (a user's for its group, else the built-in one)."""
    if user and t.group in user:
        return user[t.group].sized(t)
    S = len(t.columns)
    return built_in(t.cov, S, t.columns, getattr(t, "coords", None))


def is_marginal(design) -> bool:
    """Whether the model needs the marginal engine (``core/marginal.py``)."""
    return bool(design.covariances) or design.dispformula is not None or any(
        t.cov in ("ar1", "cs") + SPATIAL for t in design.terms)
