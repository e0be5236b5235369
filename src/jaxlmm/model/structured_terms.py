"""Front end of structured covariances: ``pos(...)`` coordinates, ``dispformula`` groups, user covariances.

- ``exp(0 + pos(x, y) | g)``, ``gau(...)``, ``ou(0 + pos(t) | g)``: ``pos`` plays the role of
  glmmTMB's ``numFactor``: each distinct coordinate tuple is one column (an indicator), named
  ``pos(1,2)`` as R prints it, ordered with the first coordinate varying fastest.
- ``dispformula="~ location"``, ``"~ Days"``, ...: glmmTMB's dispersion model, the log of each row's
  residual variance linear in the dispformula's model matrix (a factor: one variance per level, every
  level with at least two observations; a numeric column: a log-linear trend).
- ``covariances={"field": jaxlmm.covariance(fn, n_params, ...)}``: the one term grouped by ``field``,
  written without a structure keyword, gets the covariance ``fn(params, coords)`` (``core/params/covfuns.py``);
  a term that names a built-in structure keeps it and the entry is an error.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..core.params.covfuns import SPATIAL, CovarianceFunction, built_in
from ..core.marginal.residual import ResidualVariance
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


def pos_points(term, frame: pd.DataFrame) -> np.ndarray:
    """The coordinates ``pos(a, b, ...)`` of each row of ``frame`` (n, d)."""
    names = pos_variables(term.expr, term)
    cols = []
    for v in names:
        col = frame[v]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DataError(f"pos() needs numeric coordinates; column {v!r} in {term} is {col.dtype}")
        cols.append(col.to_numpy(dtype=float))
    return np.column_stack(cols)


def match_positions(coords: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Per row of ``pts`` its column among ``coords`` (the fit's distinct coordinates), -1 for a new one."""
    index = {tuple(row): i for i, row in enumerate(np.asarray(coords, float).tolist())}
    return np.array([index.get(tuple(row), -1) for row in np.asarray(pts, float).tolist()], dtype=np.int64)


def pos_design(term, frame: pd.DataFrame):
    """Indicator columns of the distinct coordinates: ``z`` (n, S), column names, coordinates (S, d)."""
    pts = pos_points(term, frame)
    uniq, codes = np.unique(pts[:, ::-1], axis=0, return_inverse=True)   # first coordinate fastest
    coords = uniq[:, ::-1]
    z = np.zeros((len(pts), len(coords)))
    z[np.arange(len(pts)), codes.reshape(-1)] = 1.0
    columns = tuple("pos(" + ",".join(_r_number(c) for c in row) + ")" for row in coords)
    return z, columns, coords


def dispformula_rhs(dispformula: str) -> str:
    """The right-hand side of ``"~ x"`` (a one-sided formula)."""
    text = dispformula.strip() if isinstance(dispformula, str) else ""
    m = re.match(r"^~(.*)$", text, re.S)
    if m is None or not m.group(1).strip() or "~" in m.group(1) or "|" in m.group(1):
        raise FormulaError(f"dispformula {dispformula!r}: write it as a one-sided formula of fixed effects, "
                           "such as '~ location' (one residual variance per level) or '~ x' (log-linear in x)")
    return m.group(1).strip()


def dispformula_variables(dispformula: str, frame: pd.DataFrame) -> list[str]:
    """The data's columns that ``dispformula`` uses."""
    from .model_matrix import _compiled

    return list(_compiled(dispformula_rhs(dispformula), frame, f"dispformula {dispformula!r}").variables)


def _levels(col: pd.Series) -> list:
    """A column's levels: a categorical's categories that occur, numbers in order, else sorted by text."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return [c for c in col.cat.categories if (col == c).any()]
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return sorted(col.unique().tolist())
    return sorted(col.unique().tolist(), key=lambda v: str(v))


def _level_name(v) -> str:
    return _r_number(v) if isinstance(v, (float, np.floating)) else str(v)


def residual_groups(dispformula: str | None, frame: pd.DataFrame):
    """Per row the code of its residual level, the levels' names, and the dispformula's variables.

    A level is one combination of the values of the dispformula's variables (its rows share a
    residual variance); without ``dispformula`` every row is in the level ``Residual``.  Each level
    of a factor the dispformula uses needs two observations.
    """
    if dispformula is None:
        return np.zeros(len(frame), dtype=np.int64), ["Residual"], []
    variables = dispformula_variables(dispformula, frame)
    missing = [v for v in variables if v not in frame.columns]
    if missing:
        raise DataError(f"dispformula {dispformula!r} names column {missing[0]!r}, which is not in the data")
    if not variables:
        return np.zeros(len(frame), dtype=np.int64), ["Residual"], []
    per_var, names = [], []
    for var in variables:
        col = frame[var]
        levels = _levels(col)
        index = {v: i for i, v in enumerate(levels)}
        codes = np.array([index[v] for v in col], dtype=np.int64)
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) \
            and not isinstance(col.dtype, pd.CategoricalDtype)
        if not numeric:
            counts = np.bincount(codes, minlength=len(levels))
            few = [str(levels[i]) for i in np.flatnonzero(counts < 2)]
            if few:
                raise DataError(f"dispformula {dispformula!r}: level{'s' if len(few) > 1 else ''} {', '.join(few)} "
                                f"of {var!r} {'have' if len(few) > 1 else 'has'} fewer than two observations; "
                                "its residual variance is not estimable")
        per_var.append(codes)
        names.append([_level_name(v) for v in levels])
    combos, codes = np.unique(np.column_stack(per_var), axis=0, return_inverse=True)
    level_names = [":".join(names[k][c] for k, c in enumerate(row)) for row in combos]
    return codes.reshape(-1).astype(np.int64), level_names, variables


def residual_model(dispformula: str | None, frame: pd.DataFrame, codes: np.ndarray, levels) -> ResidualVariance:
    """The residual variance model (``core/marginal/residual.py``) of ``dispformula`` on ``frame``'s rows.

    glmmTMB's dispersion model: the log of row i's residual variance is ``x_i^T delta`` with ``x_i``
    the row of the dispformula's model matrix (R's treatment contrasts; aliased columns left out, as
    for the fixed effects); ``codes``/``levels`` from ``residual_groups``.
    """
    if dispformula is None:
        return ResidualVariance.single_sd(len(frame))
    from .aliasing import aliased_columns
    from .model_matrix import _model_matrix
    from .naming import lme4_column_name

    mm = _model_matrix(dispformula_rhs(dispformula), frame, f"dispformula {dispformula!r}")
    Xd = mm.to_numpy(dtype=np.float64)
    if Xd.shape[1] == 0:
        raise FormulaError(f"dispformula {dispformula!r} has no columns (write '~ 1' for one residual variance)")
    if not np.all(np.isfinite(Xd)):
        raise DataError(f"dispformula {dispformula!r} is not finite on every row")
    keep = ~aliased_columns(Xd)
    names = [f"dispersion.{lme4_column_name(c)}" for c, k in zip(mm.columns, keep) if k]
    Xd = Xd[:, keep]
    codes = np.asarray(codes, dtype=np.int64)
    first = np.array([np.flatnonzero(codes == r)[0] for r in range(len(levels))])
    level_X = Xd[first]
    if not np.allclose(Xd, level_X[codes], rtol=1e-12, atol=0.0):
        raise FormulaError(f"dispformula {dispformula!r}: its model matrix is not a function of the values of "
                           "its variables")
    return ResidualVariance(Xd, codes, level_X, tuple(names), tuple(str(v) for v in levels))


def _names_structure(t) -> bool:
    """Whether design term ``t`` was written with a structure keyword (``us(...)``, ``gau(...)``, ...)."""
    return t.cov != "us" or bool(getattr(t.term, "keyword", False))


def checked_covariances(covariances):
    """``covariances=`` as given: None, or a dict from grouping-factor names to ``jaxlmm.covariance(...)``
    objects (checked before anything else reads it)."""
    from collections.abc import Mapping

    from ..core.params.covfuns import UserCovariance

    if covariances is None:
        return None
    if not isinstance(covariances, Mapping):
        raise DataError(f"covariances must be a dict from grouping-factor names to jaxlmm.covariance(...) objects, "
                        f"such as {{'field': cov}}; got {type(covariances).__name__}")
    for group, cov in covariances.items():
        if not isinstance(group, str):
            raise DataError(f"covariances: a key must be the name of a grouping factor (a string such as 'field'), "
                            f"got {group!r} ({type(group).__name__})")
        if not isinstance(cov, UserCovariance):
            raise DataError(f"covariances[{group!r}] must be made by jaxlmm.covariance(fn, n_params, ...), "
                            f"got {type(cov).__name__}")
    return dict(covariances)


def level_checked_terms(design) -> list:
    """The terms lme4's checks on the number of levels apply to (``data_checks._check_levels``): not the
    structured terms (ar1, cs, ou, exp, gau; a spatial term's one field is one level) nor a term given
    a user's covariance, whose few parameters are identifiable where lme4's unstructured ones are not."""
    user = design.covariances or {}
    return [t for t in design.terms if t.term.cov not in STRUCTURED_KINDS and t.group not in user]


STRUCTURED_KINDS = ("ar1", "cs") + SPATIAL


def check_user_covariance(group: str, terms, cov) -> None:
    """``covariances={group: cov}`` attaches ``cov`` to the one term grouped by ``group``, and only to a
    term written without a structure keyword (``(x | g)``, ``(0 + pos(x, y) | g)``): a term that names
    a built-in structure (``us``, ``diag``, ``ar1``, ``cs``, ``ou``, ``exp``, ``gau``) asks for that one,
    and a user covariance never replaces it."""
    matching = [t for t in terms if t.group == group]
    if len(matching) != 1:
        raise FormulaError(f"covariances[{group!r}]: the formula has {len(matching)} random-effects terms "
                           f"grouped by {group!r}; it needs exactly one")
    (t,) = matching
    if _names_structure(t):
        user = getattr(cov, "name", "user")
        raise FormulaError(f"covariances[{group!r}]: the term {t.cov}({t.term.expr} | {group}) of group "
                           f"{group!r} asks for the built-in structure {t.cov}(), and covariances= gives it the "
                           f"covariance {user!r} as well; write the term without {t.cov}(...) to use "
                           f"{user!r}, or drop covariances[{group!r}] to keep {t.cov}()")


def term_covariance(t, user: dict | None) -> CovarianceFunction:
    """The ``CovarianceFunction`` of design term ``t`` (a user's for its group, else the built-in one)."""
    if user and t.group in user:
        if _names_structure(t):
            raise FormulaError(f"covariances[{t.group!r}] would replace the built-in structure {t.cov}() of "
                               f"the term {t.cov}({t.term.expr} | {t.group})")
        return user[t.group].sized(t, t.group)
    S = len(t.columns)
    return built_in(t.cov, S, t.columns, getattr(t, "coords", None))


def is_marginal(design) -> bool:
    """Whether the model needs the marginal engine (``core/marginal/criterion.py``)."""
    return bool(design.covariances) or design.dispformula is not None or any(
        t.cov in ("ar1", "cs") + SPATIAL for t in design.terms)
