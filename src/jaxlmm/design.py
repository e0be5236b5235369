"""From a formula and a data frame to the arrays of the JAX core (lme4's ``lFormula``).

Steps, each with its own clear error:

1. parse the formula (``formula.py``) and check every variable is a column;
2. drop rows with a missing value in any used column (the count is kept);
3. fixed effects: formulaic's model matrix with treatment contrasts, columns
   renamed as lme4 names them, aliased columns dropped (R's pivoting QR rule:
   a column whose residual on the earlier columns is below ``1e-7`` of its norm);
4. random effects: per term the per-row model matrix ``z`` (formulaic, on the
   term's left side), the grouping factor's level codes (levels sorted as R
   sorts them, unused ones dropped; interactions ``a:b`` ordered with ``a``
   slowest), and lme4's checks on the number of levels;
5. terms ordered as lme4's ``mkReTrms`` does: if the numbers of levels are not
   already non-increasing, by ``rev(order(nlevels))``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field

import formulaic
import numpy as np
import pandas as pd

from .core.structure import ReStructure, TermSpec
from .errors import DataError, FormulaError, JaxlmmError, warn
from .formula import ParsedFormula, RandomTerm, parse_formula
from .formula_grammar import Expression, compile_expression, formula_context, tokenize
from .naming import format_level, lme4_column_name

_ANSI = re.compile(r"\x1b\[[0-9;]*m|⧛|⧚")


def _formulaic():
    return formulaic


def _clean_message(exc: Exception) -> str:
    return _ANSI.sub("", str(exc)).strip().splitlines()[0]


@dataclass
class GroupingFactor:
    """Levels of a (possibly interaction) grouping factor and a code per row."""

    name: str
    variables: tuple[str, ...]
    levels: list[str]
    codes: np.ndarray
    level_values: list[tuple]  # per level, the tuple of variable values

    def lookup(self, frame: pd.DataFrame) -> np.ndarray:
        """Codes of the rows of ``frame``; -1 for a level not seen in the fit."""
        index = {v: i for i, v in enumerate(self.level_values)}
        keys = zip(*(frame[v].tolist() for v in self.variables))
        return np.asarray([index.get(tuple(_level_key(x) for x in key), -1) for key in keys], dtype=np.int64)


def _level_key(x):
    return format_level(x.item() if hasattr(x, "item") else x)


def _sorted_levels(series: pd.Series) -> list:
    if isinstance(series.dtype, pd.CategoricalDtype):
        present = set(series.dropna().unique())
        return [c for c in series.cat.categories if c in present]
    values = series.dropna().unique()
    try:
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            return sorted(values.tolist())
        return sorted(values.tolist(), key=str)
    except TypeError:
        return sorted(values.tolist(), key=str)


def _observed_combinations(codes: list[np.ndarray], sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The observed rows of ``codes`` (one array per variable), sorted lexicographically (first
    variable slowest), and each row's index among them.

    The combination is one mixed-radix integer key; with few possible keys the sort is a
    counting pass (``bincount``), else a sort of the 1-d keys (``np.unique(..., axis=0)`` is
    several times slower on InstEval's 73,421 rows).
    """
    radix = [int(np.prod(sizes[j + 1:], dtype=np.float64)) for j in range(len(sizes))]
    total = float(np.prod(sizes, dtype=np.float64))
    if total >= 2.0 ** 62:
        unique, inverse = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
        return unique, inverse.reshape(-1)
    key = sum(c.astype(np.int64) * r for c, r in zip(codes, radix))
    if total <= max(4 * key.size, 1 << 20):
        present = np.bincount(key, minlength=int(total)) > 0
        keys = np.flatnonzero(present)
        inverse = (np.cumsum(present) - 1)[key]
    else:
        keys, inverse = np.unique(key, return_inverse=True)
    unique = np.stack([(keys // r) % n for r, n in zip(radix, sizes)], axis=1)
    return unique, inverse.reshape(-1)


def grouping_factor(frame: pd.DataFrame, variables: tuple[str, ...]) -> GroupingFactor:
    """Interaction of ``variables`` with the observed combinations as levels."""
    per_var_codes, per_var_levels = [], []
    for v in variables:
        series = frame[v]
        if isinstance(series.dtype, pd.CategoricalDtype):
            series = series.cat.remove_unused_categories()
            levels, codes = list(series.cat.categories), series.cat.codes.to_numpy()
        else:
            levels = _sorted_levels(series)
            codes = pd.Categorical(series, categories=levels).codes
        per_var_codes.append(codes.astype(np.int64))
        per_var_levels.append(levels)
    unique, codes = _observed_combinations(per_var_codes, [len(v) for v in per_var_levels])
    level_values = [tuple(format_level(per_var_levels[j][c]) for j, c in enumerate(row)) for row in unique]
    labels = [":".join(v) for v in level_values]
    return GroupingFactor(":".join(variables), variables, labels, codes.reshape(-1).astype(np.int64), level_values)


@dataclass
class TermDesign:
    """Front-end information of one random-effects term (lme4 order)."""

    term: RandomTerm
    columns: tuple[str, ...]
    factor: GroupingFactor
    z_spec: object  # formulaic ModelSpec of the term's left side
    z: np.ndarray
    relmat: object = None  # relationship-matrix information (issue D)

    @property
    def group(self) -> str:
        return self.factor.name

    @property
    def spec(self) -> TermSpec:
        return TermSpec(len(self.factor.levels), len(self.columns), self.relmat is not None)


@dataclass
class Design:
    """Everything ``lmer`` needs: arrays for the core plus names for the results."""

    formula: ParsedFormula
    response_name: str | None
    y: np.ndarray                      # (n,) or (n, T) for a batch (NaN = missing)
    X: np.ndarray                      # (n, p), aliased columns removed
    fixef_names: list[str]
    dropped_fixef: list[str]
    fixed_spec: object
    terms: list[TermDesign]
    weights: np.ndarray
    offset: np.ndarray
    row_index: pd.Index                # rows of the original data kept
    n_dropped: int
    messages: list[str] = field(default_factory=list)
    pad: bool = True
    frame: pd.DataFrame | None = None  # the rows of the data that were kept
    relmat: dict | None = None         # grouping factor -> RelationshipMatrix (as given)

    def subset_rows(self, keep: np.ndarray, y: np.ndarray, response_name: str | None = None) -> "Design":
        """The design of the rows ``keep`` with the single response ``y`` (levels re-derived)."""
        sub = build_design(self.formula.text, self.frame.loc[keep], weights=self.weights[keep],
                           offset=self.offset[keep], responses=np.asarray(y, dtype=float), relmat=self.relmat)
        sub.response_name = response_name
        return sub

    def with_response(self, y: np.ndarray) -> "Design":
        """The same design with another response vector (NaN = missing, zero weight)."""
        y = np.asarray(y, dtype=float).reshape(-1)
        if y.shape[0] != self.nobs:
            raise DataError(f"new response has {y.shape[0]} values but the model has {self.nobs} rows")
        return dataclasses.replace(self, y=y)

    @property
    def structure(self) -> ReStructure:
        """The core's structure, with the numbers of levels padded to shape buckets."""
        specs = []
        for t in self.terms:
            s = t.spec
            nl = bucket(s.nlevels) if self.pad and not s.transformed else s.nlevels
            specs.append(TermSpec(nl, s.ncols, s.transformed))
        return ReStructure.build(tuple(specs))

    @property
    def nobs(self) -> int:
        return self.X.shape[0]

    @property
    def n_padded(self) -> int:
        return bucket(self.nobs) if self.pad else self.nobs

    def pad_rows(self, values: np.ndarray, fill=0.0) -> np.ndarray:
        """``values`` (n, ...) padded with ``fill`` to the bucketed number of rows."""
        values = np.asarray(values)
        extra = self.n_padded - values.shape[0]
        if extra == 0:
            return values
        pad = np.full((extra,) + values.shape[1:], fill, dtype=values.dtype)
        return np.concatenate([values, pad], axis=0)

    def model_data(self, dtype=np.float64, y=None, weights=None):
        """The core's ``ModelData`` (one response) built from this design.

        Rows and levels are padded to shape buckets (``bucket``): padded rows
        have weight 0 and padded levels no rows, so they change nothing in the
        fit, but models of similar size share one compiled program.
        """
        from .core.data import ModelData

        dtype = np.dtype(dtype)
        y = self.y if y is None else y
        w = self.weights if weights is None else weights
        from .core.sparse import build_pattern

        refs = tuple(self.pad_rows(t.factor.codes).astype(np.int32) for t in self.terms)
        transforms = tuple(None if t.relmat is None else np.asarray(t.relmat.factor, dtype) for t in self.terms)
        structure = self.structure
        # numpy leaves: a jitted program transfers them in one go
        return ModelData(
            X=self.pad_rows(self.X).astype(dtype),
            y=self.pad_rows(np.nan_to_num(np.asarray(y, float))).astype(dtype),
            weights=self.pad_rows(np.where(np.isnan(y), 0.0, w) if np.ndim(y) == 1 else w).astype(dtype),
            offset=self.pad_rows(self.offset).astype(dtype),
            refs=refs,
            z=tuple(self.pad_rows(t.z).astype(dtype) for t in self.terms),
            transforms=transforms,
            structure=structure,
            sparse=build_pattern(structure, refs, self.X.shape[1], transforms),
        )


# --------------------------------------------------------------------------- helpers
def _as_frame(data) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, dict):
        frame = pd.DataFrame(data)
    else:
        raise DataError(f"data must be a pandas DataFrame (or a dict of columns), not {type(data).__name__}")
    if frame.shape[0] == 0:
        raise DataError("data has no rows")
    return frame


@functools.lru_cache(maxsize=256)
def _parsed(text: str):
    """formulaic's parse of ``text`` (cached: parsing costs more than a small model matrix)."""
    return _formulaic().Formula(text)


def _compiled(text: str, frame: pd.DataFrame, what: str) -> Expression:
    """``text`` checked against the formula grammar and the data's columns, rewritten for formulaic."""
    return compile_expression(text, frame.columns, what)


def _check_columns(needed: dict[str, str], frame: pd.DataFrame) -> None:
    for var, where in needed.items():
        if var not in frame.columns:
            avail = ", ".join(map(str, list(frame.columns)[:12]))
            raise DataError(f"column {var!r} (used in {where}) not found in data; columns are: {avail}")


def _model_matrix(spec_or_formula, frame: pd.DataFrame, what: str):
    formulaic = _formulaic()
    try:
        if isinstance(spec_or_formula, str):
            text = compile_expression(spec_or_formula, frame.columns, what).text
            return formulaic.model_matrix(_parsed(text), frame, na_action="ignore", context=formula_context())
        return spec_or_formula.get_model_matrix(frame, na_action="ignore", context=formula_context())
    except JaxlmmError:
        raise
    except MemoryError:
        from .errors import MemoryLimitError

        raise MemoryLimitError(f"not enough memory to build the model matrix of {what} "
                               f"({frame.shape[0]} rows)") from None
    except Exception as exc:
        raise FormulaError(f"cannot build the model matrix of {what}: {_clean_message(exc)}") from None


def aliased_columns(X: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """Columns linearly dependent on earlier ones (R's ``qr(X, tol = 1e-7)`` rule).

    Column j is aliased when its residual on the earlier kept columns is at most
    ``tol`` times its norm.  The residuals come from a Cholesky factor of ``X^T X``
    grown column by column over the kept columns (one BLAS product, then ``O(p^2)``
    per column): ``|r_j|^2 = x_j^T x_j - |L^{-1} X_K^T x_j|^2``.  That difference
    cancels where the residual is tiny, so a column whose relative residual is
    below ``1e-5`` by it is decided again exactly, by least squares on the rows.
    """
    from scipy.linalg import solve_triangular

    X = np.asarray(X, dtype=float)
    p = X.shape[1]
    G = X.T @ X
    norms2 = np.diag(G).copy()
    aliased = np.zeros(p, dtype=bool)
    L = np.zeros((p, p))
    kept: list[int] = []
    for j in range(p):
        if norms2[j] == 0:
            aliased[j] = True
            continue
        k = len(kept)
        r = solve_triangular(L[:k, :k], G[kept, j], lower=True, check_finite=False) if k else np.zeros(0)
        resid2 = norms2[j] - r @ r
        if resid2 <= 1e-10 * norms2[j]:
            if k:
                coef, *_ = np.linalg.lstsq(X[:, kept], X[:, j], rcond=None)
                exact = X[:, j] - X[:, kept] @ coef
            else:
                exact = X[:, j]
            resid2 = float(exact @ exact)
        if resid2 <= tol * tol * norms2[j]:
            aliased[j] = True
            continue
        L[k, :k] = r
        L[k, k] = np.sqrt(resid2)
        kept.append(j)
    return aliased


def _numeric_vector(values, name: str, n: int, frame: pd.DataFrame) -> np.ndarray:
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
    tokens = tokenize(expr)
    return any(a.kind == "name" and b.text == "(" for a, b in zip(tokens, tokens[1:]))


def _missing_after_transforms(parsed: ParsedFormula, frame: pd.DataFrame, single: bool) -> np.ndarray:
    """Rows whose transformed values are NaN (dropped, as lme4's ``na.omit`` of the model frame);
    an infinite value (``log(0)``, an Inf in a column) is an error naming the term and the row."""
    missing = np.zeros(frame.shape[0], dtype=bool)
    parts = [(t.expr, f"the random-effects term {t}") for t in parsed.random]
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


def _term_columns(term, frame: pd.DataFrame) -> int:
    """Columns a fixed-effects term expands to, from its factors' levels (numeric factors count 1)."""
    count = 1
    for factor in term.factors:
        expr = str(factor.expr)
        for wrapper in ("C(", "factor("):
            if expr.startswith(wrapper) and expr.endswith(")"):
                expr = expr[len(wrapper):-1]
        name = expr.strip("`")
        if name in frame.columns and not (pd.api.types.is_numeric_dtype(frame[name])
                                          and not isinstance(frame[name].dtype, pd.CategoricalDtype)):
            count *= max(int(frame[name].nunique()), 1)
        elif str(factor.expr) != expr:               # C(x) / factor(x) of a numeric column
            count *= max(int(frame[name].nunique()), 1) if name in frame.columns else 1
    return count


def _check_fixed_effects_memory(fixed: str, frame: pd.DataFrame) -> None:
    """A ``MemoryLimitError`` naming the largest term before a dense X too large for memory is built."""
    from .errors import MemoryLimitError
    from .memory import available_bytes, describe_bytes

    terms = list(_parsed(compile_expression(fixed, frame.columns, "the fixed effects").text))
    columns = {str(t): _term_columns(t, frame) for t in terms}
    need = 8 * frame.shape[0] * (sum(columns.values()) + 1) * 3      # X, a copy, the aliasing check's X^T X side
    if need < 64 << 20:                                              # small: the fit's own guard has the say
        return
    free = available_bytes()
    if need > free:
        largest = max(columns, key=columns.get)
        raise MemoryLimitError(f"the fixed-effects matrix would need about {describe_bytes(need)} for "
                               f"{sum(columns.values())} columns x {frame.shape[0]} rows (term {largest!r}: "
                               f"{columns[largest]} columns) but {describe_bytes(free)} is free; a factor with "
                               "this many levels is better a random effect, e.g. (1 | g)")


def formula_offset(parsed: ParsedFormula, frame: pd.DataFrame) -> np.ndarray:
    """The sum of the formula's ``offset(expr)`` terms on the rows of ``frame``."""
    total = np.zeros(frame.shape[0])
    for expr in parsed.offsets:
        mm = _model_matrix(f"0 + I({expr})", frame, f"offset({expr})")
        total = total + mm.to_numpy(dtype=np.float64)[:, 0]
    return total


def _response(frame: pd.DataFrame, lhs: str) -> np.ndarray:
    name = lhs.strip().strip("`")
    if name in frame.columns:
        col = frame[name]
        if not (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)):
            raise DataError(f"response {name!r} is not numeric (dtype {col.dtype})")
        return col.to_numpy(dtype=np.float64)
    mm = _model_matrix(f"0 + {lhs}", frame, f"the response {lhs!r}")
    if mm.shape[1] != 1:
        raise DataError(f"response {lhs!r} is not a single numeric column")
    return mm.to_numpy(dtype=np.float64)[:, 0]


# --------------------------------------------------------------------------- main
def build_design(formula: str, data, *, weights=None, offset=None, responses=None,
                 check_levels: bool = True, relmat: dict | None = None) -> Design:
    """Parse ``formula`` against ``data`` into a ``Design`` (lme4's ``lFormula``).

    ``responses`` (n, T) replaces the formula's response by T traits (NaN =
    missing, kept as per-trait masks rather than dropped rows).  ``relmat``
    maps grouping factors to relationship matrices (``relmat.py``).
    """
    parsed = parse_formula(formula)
    frame = _as_frame(data)
    if not parsed.random:
        raise FormulaError(f"no random-effects terms in formula {formula!r}; add one such as (1 | group)")

    needed: dict[str, str] = {}
    if responses is None:
        if parsed.response is None:
            raise FormulaError(f"formula {formula!r} has no response on the left of '~'")
        resp = parsed.response.strip().strip("`")
        needed.update({v: "the response" for v in ([resp] if resp in frame.columns
                                                     else _compiled(parsed.response, frame, "the response").variables)})
    for v in _compiled(parsed.fixed, frame, f"the fixed effects '{parsed.fixed}'").variables:
        needed.setdefault(v, f"the fixed effects '{parsed.fixed}'")
    for term in parsed.random:
        for v in _compiled(term.expr, frame, f"the random-effects term {term}").variables:
            needed.setdefault(v, f"the random-effects term {term}")
        for v in term.group_vars:
            needed.setdefault(v, f"the grouping factor of {term}")
    for expr in parsed.offsets:
        for v in _compiled(expr, frame, f"offset({expr})").variables:
            needed.setdefault(v, f"offset({expr})")
    _check_columns(needed, frame)

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

    if responses is None and resp in frame.columns and frame[resp].isna().all():
        raise DataError(f"response {resp!r} has no non-missing values")

    # rows with a missing value in a used column (the response only for a single fit)
    used = frame[list(needed)]
    missing = used.isna().any(axis=1).to_numpy() | np.isnan(w_all) | np.isnan(o_all)
    if weights is not None:
        missing |= w_all == 0
    keep = ~missing
    if responses is not None:
        Y = np.asarray(responses, dtype=np.float64)
        if Y.shape[0] != n_all:
            raise DataError(f"responses have {Y.shape[0]} rows but data has {n_all}")
    if keep.any():
        keep[np.flatnonzero(keep)[_missing_after_transforms(parsed, frame.loc[keep], responses is None)]] = False
        missing = ~keep
    if not keep.any():
        raise DataError("no rows left after removing rows with missing values in the used columns "
                        f"({', '.join(needed)})")
    frame_kept = frame.loc[keep]
    n_dropped = int(missing.sum())
    messages = []
    if n_dropped:
        messages.append(f"{n_dropped} row{'s' if n_dropped > 1 else ''} with missing values removed")

    if responses is None:
        y = _response(frame_kept, parsed.response)
        if np.isnan(y).all():
            raise DataError(f"response {parsed.response!r} has no non-missing values")
        used = y[~np.isnan(y) & (w_all[keep] > 0)]
        if used.size and np.ptp(used) == 0:
            raise DataError(f"response {parsed.response.strip()!r} is constant (every used value is {used[0]:g}): "
                            "there is no variance to estimate")
        response_name = parsed.response.strip()
    else:
        y = Y[keep]
        response_name = parsed.response.strip() if parsed.response else None

    # fixed effects
    _check_fixed_effects_memory(parsed.fixed, frame_kept)
    mm = _model_matrix(parsed.fixed, frame_kept, f"the fixed effects '{parsed.fixed}'")
    X_full = mm.to_numpy(dtype=np.float64)
    names_full = [lme4_column_name(c) for c in mm.columns]
    aliased = aliased_columns(X_full) if X_full.shape[1] else np.zeros(0, bool)
    dropped = [nm for nm, a in zip(names_full, aliased) if a]
    if dropped:
        msg = (f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
               f"column{'s' if len(dropped) > 1 else ''} / coefficient{'s' if len(dropped) > 1 else ''}: "
               + ", ".join(dropped))
        messages.append(msg)
        warn(msg)
    X = X_full[:, ~aliased]
    fixef_names = [nm for nm, a in zip(names_full, aliased) if not a]

    # random effects
    terms = []
    for term in parsed.random:
        zmm = _model_matrix(term.expr, frame_kept, f"the random-effects term {term}")
        if zmm.shape[1] == 0:
            raise FormulaError(f"random-effects term {term} has no columns")
        factor = grouping_factor(frame_kept, term.group_vars)
        terms.append(TermDesign(term, tuple(lme4_column_name(c) for c in zmm.columns), factor,
                                zmm.model_spec, zmm.to_numpy(dtype=np.float64)))
    if relmat:
        from .relmat import as_relationship_matrix, check_identifiable, check_relmat_names, relmat_term

        relmat = {str(k): as_relationship_matrix(v, str(k)) for k, v in relmat.items()}
        check_relmat_names(relmat, [t.group for t in terms])
        for t in terms:
            if t.group in relmat:
                t.relmat = relmat_term(relmat[t.group], t.factor.levels)
                check_identifiable(t.group, t.relmat.factor, t.factor.codes, t.z, X)
                if t.relmat.unused_levels:
                    k = len(t.relmat.unused_levels)
                    messages.append(f"{k} level{'s' if k > 1 else ''} of the relationship matrix for {t.group!r} "
                                    "not in the data (left out of the fit)")
    nl = [len(t.factor.levels) for t in terms]
    if any(np.diff(nl) > 0):
        order = _r_rev_order(nl)
        terms = [terms[i] for i in order]

    n = X.shape[0]
    if check_levels:
        _check_levels(terms, n if responses is None else n)
    return Design(parsed, response_name, y, X, fixef_names, dropped, mm.model_spec, terms,
                  w_all[keep], o_all[keep], frame.index[keep], n_dropped, messages, frame=frame_kept,
                  relmat=relmat or None)


def bucket(size: int) -> int:
    """Round ``size`` up to a shape bucket: a multiple of 8 up to 64, then 8 steps per octave.

    At most 12.5% padding above 64, and every size in a bucket shares one
    compiled program.
    """
    if size <= 64:
        return max(8, -(-size // 8) * 8)
    step = 1 << (size.bit_length() - 4)
    return -(-size // step) * step


def _r_rev_order(values: list[int]) -> list[int]:
    """R's ``rev(order(values))``: decreasing, ties in reverse order of appearance."""
    return list(reversed(sorted(range(len(values)), key=lambda i: values[i])))


def _check_levels(terms: list[TermDesign], n: int) -> None:
    """lme4's ``check.nlev.gtr.1``, ``check.nobs.vs.nlev`` and ``check.nobs.vs.nRE``.

    Terms with a relationship matrix are exempt from the last two (one record
    per individual is the usual GBLUP design; K makes the effects identifiable).
    """
    for t in terms:
        nlev = len(t.factor.levels)
        if nlev < 2:
            raise DataError(f"grouping factor {t.group!r} has only {nlev} level; "
                            "grouping factors must have > 1 sampled level")
    terms = [t for t in terms if t.relmat is None]
    problems = [t.group for t in terms if len(t.factor.levels) >= n]
    if problems:
        raise DataError("number of levels of each grouping factor must be < number of observations "
                        f"(problems: {', '.join(problems)}; {n} observations)")
    for t in terms:
        q = len(t.factor.levels) * len(t.columns)
        if n <= q:
            raise DataError(f"number of observations (={n}) <= number of random effects (={q}) for term "
                            f"{t.term}; the random-effects parameters and the residual variance are "
                            "probably unidentifiable")
