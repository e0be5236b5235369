"""From a formula and a data frame to the arrays of the JAX core (lme4's ``lFormula``).

Steps, each with its own clear error:

1. parse the formula (``formula.py``) and check every variable is a column
   (``data_checks.py``);
2. drop rows with a missing value in any used column, the count kept
   (``missing_rows.py``);
3. fixed effects: formulaic's model matrix with treatment contrasts
   (``model_matrix.py``), columns renamed as lme4 names them, aliased columns
   dropped (``aliasing.py``: R's pivoting QR rule, a column whose residual on
   the earlier columns is below ``1e-7`` of its norm), after a check that the
   matrix fits in memory (``fixed_memory.py``);
4. random effects: per term the per-row model matrix ``z`` (formulaic, on the
   term's left side), the grouping factor's level codes (``grouping.py``:
   levels sorted as R sorts them, unused ones dropped; interactions ``a:b``
   ordered with ``a`` slowest), and lme4's checks on the number of levels;
5. terms ordered as lme4's ``mkReTrms`` does: if the numbers of levels are not
   already non-increasing, by ``rev(order(nlevels))``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .aliasing import aliased_columns
from ..core.params.structure import ReStructure, TermSpec
from .data_checks import (_as_frame, _check_columns, _check_levels, _checked_response, _numeric_vector,
                          _weights_and_offset)
from ..errors import ArgumentError, DataError, FormulaError, warn
from .fixed_memory import _check_fixed_effects_memory
from .formula import ParsedFormula, RandomTerm, parse_formula
from .grouping import GroupingFactor, grouping_factor
from .missing_rows import _kept_rows
from .model_matrix import _compiled, _model_matrix, formula_offset
from .naming import lme4_column_name
from .structured_terms import checked_covariances, is_pos_term, pos_design, pos_variables, residual_groups

# Part of this module's interface (predict.py, fitting/responses.py, anova_tables.py, marginal_means.py and
# the tests import them from here): aliased_columns, formula_offset, GroupingFactor,
# grouping_factor, _as_frame, _model_matrix, _numeric_vector.


@dataclass
class TermDesign:
    """Front-end information of one random-effects term (lme4 order)."""

    term: RandomTerm
    columns: tuple[str, ...]
    factor: GroupingFactor
    z_spec: object  # formulaic ModelSpec of the term's left side
    z: np.ndarray
    relmat: object = None  # relmat.RelmatTerm of a term with a relationship matrix, else None
    coords: np.ndarray | None = None  # the columns' coordinates of a pos() term (exp, gau, ou)

    @property
    def group(self) -> str:
        return self.factor.name

    @property
    def spec(self) -> TermSpec:
        return TermSpec(len(self.factor.levels), len(self.columns), self.relmat is not None, self.term.cov)

    @property
    def cov(self) -> str:
        """The term's covariance structure (``core.structure.theta_positions``): "us" or "diag"."""
        return self.term.cov


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
    dispformula: str | None = None     # one residual SD per level of a factor (structured_terms.py)
    resid_codes: np.ndarray | None = None
    resid_levels: list[str] | None = None
    covariances: dict | None = None    # group -> jaxlmm.covariance(...) written by the user

    def subset_rows(self, keep: np.ndarray, y: np.ndarray, response_name: str | None = None) -> "Design":
        """The design of the rows ``keep`` with the single response ``y`` (levels re-derived)."""
        sub = build_design(self.formula.text, self.frame.loc[keep], weights=self.weights[keep],
                           offset=self.offset[keep], responses=np.asarray(y, dtype=float), relmat=self.relmat,
                           dispformula=self.dispformula, covariances=self.covariances)
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
            specs.append(TermSpec(nl, s.ncols, s.transformed, s.kind))
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
        from ..core.pls.data import ModelData

        dtype = np.dtype(dtype)
        y = self.y if y is None else y
        w = self.weights if weights is None else weights
        from ..core.pls.sparse import build_pattern

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


def build_design(formula: str, data, *, weights=None, offset=None, responses=None,
                 check_levels: bool = True, relmat: dict | None = None, dispformula: str | None = None,
                 covariances: dict | None = None) -> Design:
    """Parse ``formula`` against ``data`` into a ``Design`` (lme4's ``lFormula``).

    ``responses`` (n, T) replaces the formula's response by T traits (NaN =
    missing, kept as per-trait masks rather than dropped rows).  ``relmat``
    maps grouping factors to relationship matrices (``relmat.py``); ``dispformula`` and
    ``covariances`` are glmmTMB's residual groups and user-written covariances (``structured_terms.py``).
    """
    parsed = parse_formula(formula)
    frame = _as_frame(data)
    covariances = checked_covariances(covariances)
    relmat, dispformula = _checked_arguments(relmat, dispformula)
    if not parsed.random:
        raise FormulaError(f"no random-effects terms in formula {formula!r}; add one such as (1 | group)")
    single = responses is None
    needed = _used_variables(parsed, frame, formula, single)
    if dispformula is not None:
        from .structured_terms import dispformula_variables

        for v in dispformula_variables(dispformula, frame):
            needed.setdefault(v, f"dispformula {dispformula!r}")
    _check_columns(needed, frame)
    w_all, o_all = _weights_and_offset(parsed, frame, weights, offset)
    if single:
        resp = parsed.response.strip().strip("`")
        if resp in frame.columns and frame[resp].isna().all():
            raise DataError(f"response {resp!r} has no non-missing values")
    else:
        Y = np.asarray(responses, dtype=np.float64)
        if Y.shape[0] != frame.shape[0]:
            raise DataError(f"responses have {Y.shape[0]} rows but data has {frame.shape[0]}")

    keep = _kept_rows(parsed, frame, needed, w_all, o_all, weights is not None, single)
    frame_kept = frame.loc[keep]
    n_dropped = int((~keep).sum())
    messages = []
    if n_dropped:
        messages.append(f"{n_dropped} row{'s' if n_dropped > 1 else ''} with missing values removed"
                        + _missing_weight_offset(w_all, o_all))
    if single:
        y, response_name = _checked_response(parsed, frame_kept, w_all[keep]), parsed.response.strip()
    else:
        y, response_name = Y[keep], parsed.response.strip() if parsed.response else None

    X, fixef_names, dropped, fixed_spec = _fixed_effects(parsed.fixed, frame_kept)
    if dropped:
        msg = _rank_deficiency_message(dropped)
        messages.append(msg)
        warn(msg)
    terms = _random_terms(parsed, frame_kept)
    if relmat:
        relmat, unused = _attach_relationship_matrices(terms, relmat, X)
        messages.extend(unused)
    terms = _lme4_term_order(terms)
    if check_levels:
        _check_levels([t for t in terms if not (covariances and t.group in covariances)], X.shape[0])
    if covariances:
        _check_user_covariances(covariances, terms)
    resid_codes, resid_levels, _ = residual_groups(dispformula, frame_kept)
    return Design(parsed, response_name, y, X, fixef_names, dropped, fixed_spec, terms,
                  w_all[keep], o_all[keep], frame.index[keep], n_dropped, messages, frame=frame_kept,
                  relmat=relmat or None, dispformula=dispformula, resid_codes=resid_codes,
                  resid_levels=resid_levels, covariances=dict(covariances) if covariances else None)


def _checked_arguments(relmat, dispformula):
    """``relmat`` and ``dispformula`` as given, checked at the entry (an ``ArgumentError`` naming the argument)."""
    from .relmat import relmat_argument

    if dispformula is not None and not isinstance(dispformula, str):
        raise ArgumentError(f"dispformula must be a string, a one-sided formula such as '~ location'; got a "
                            f"{type(dispformula).__name__} ({dispformula!r})")
    return relmat_argument(relmat), dispformula


def _missing_weight_offset(weights: np.ndarray, offset: np.ndarray) -> str:
    """`` (k with a missing weight, m with a missing offset)`` for the rows dropped for those (lme4's
    ``na.action`` drops them as it drops a missing value of any model variable); empty if none."""
    counts = [(int(np.isnan(weights).sum()), "weight"), (int(np.isnan(offset).sum()), "offset")]
    parts = [f"{k} with a missing {what}" for k, what in counts if k]
    return f" ({', '.join(parts)})" if parts else ""


def _check_user_covariances(covariances: dict, terms: list[TermDesign]) -> None:
    from ..core.params.covfuns import UserCovariance
    from .structured_terms import check_user_covariance

    for group, cov in covariances.items():
        if not isinstance(cov, UserCovariance):
            raise DataError(f"covariances[{group!r}] must be made by jaxlmm.covariance(fn, n_params, ...), "
                            f"got {type(cov).__name__}")
        check_user_covariance(group, terms, cov)


def _used_variables(parsed: ParsedFormula, frame: pd.DataFrame, formula: str, single: bool) -> dict[str, str]:
    """Every variable the model uses -> the part of the formula that first uses it.

    The response counts only for a single fit (``single``); a formula without one is then an error.
    """
    needed: dict[str, str] = {}
    if single:
        if parsed.response is None:
            raise FormulaError(f"formula {formula!r} has no response on the left of '~'")
        resp = parsed.response.strip().strip("`")
        needed.update({v: "the response" for v in ([resp] if resp in frame.columns
                                                     else _compiled(parsed.response, frame, "the response").variables)})
    for v in _compiled(parsed.fixed, frame, f"the fixed effects '{parsed.fixed}'").variables:
        needed.setdefault(v, f"the fixed effects '{parsed.fixed}'")
    for term in parsed.random:
        variables = (pos_variables(term.expr, term) if is_pos_term(term)
                     else _compiled(term.expr, frame, f"the random-effects term {term}").variables)
        for v in variables:
            needed.setdefault(v, f"the random-effects term {term}")
        for v in term.group_vars:
            needed.setdefault(v, f"the grouping factor of {term}")
    for expr in parsed.offsets:
        for v in _compiled(expr, frame, f"offset({expr})").variables:
            needed.setdefault(v, f"offset({expr})")
    return needed


def _fixed_effects(fixed: str, frame: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str], object]:
    """The fixed-effects matrix ``X`` of full column rank, its lme4 column names, the names of the
    aliased columns left out, and formulaic's ``ModelSpec`` (to rebuild ``X`` on new data)."""
    _check_fixed_effects_memory(fixed, frame)
    mm = _model_matrix(fixed, frame, f"the fixed effects '{fixed}'")
    X_full = mm.to_numpy(dtype=np.float64)
    names_full = [lme4_column_name(c) for c in mm.columns]
    aliased = aliased_columns(X_full) if X_full.shape[1] else np.zeros(0, bool)
    dropped = [nm for nm, a in zip(names_full, aliased) if a]
    fixef_names = [nm for nm, a in zip(names_full, aliased) if not a]
    return X_full[:, ~aliased], fixef_names, dropped, mm.model_spec


def _rank_deficiency_message(dropped: list[str]) -> str:
    """lme4's message for a rank-deficient fixed-effects matrix whose columns ``dropped`` are left out."""
    s = "s" if len(dropped) > 1 else ""
    return (f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{s} / coefficient{s}: " + ", ".join(dropped))


def _random_terms(parsed: ParsedFormula, frame: pd.DataFrame) -> list[TermDesign]:
    """Per random-effects term, in the formula's order: its model matrix ``z`` and grouping factor."""
    terms = []
    for term in parsed.random:
        if is_pos_term(term):
            factor = grouping_factor(frame, term.group_vars)
            z, columns, coords = pos_design(term, frame)
            terms.append(TermDesign(term, columns, factor, None, z, coords=coords))
            continue
        zmm = _model_matrix(term.expr, frame, f"the random-effects term {term}")
        if zmm.shape[1] == 0:
            raise FormulaError(f"random-effects term {term} has no columns")
        factor = grouping_factor(frame, term.group_vars)
        z = zmm.to_numpy(dtype=np.float64)
        if term.cov in ("ar1", "cs"):
            _check_indicator_columns(term, z)
        terms.append(TermDesign(term, tuple(lme4_column_name(c) for c in zmm.columns), factor,
                                zmm.model_spec, z))
    return terms


def _attach_relationship_matrices(terms: list[TermDesign], relmat: dict, X: np.ndarray) -> tuple[dict, list[str]]:
    """Set ``relmat`` of each term whose grouping factor has a relationship matrix ``K`` (on the
    term's levels), after checking the model stays identifiable.

    Returns the matrices as ``RelationshipMatrix`` by grouping factor, and a message per term
    whose ``K`` has levels absent from the data (those are left out of the fit).
    """
    from .relmat import as_relationship_matrix, check_identifiable, check_relmat_names, relmat_term

    relmat = {str(k): as_relationship_matrix(v, str(k)) for k, v in relmat.items()}
    check_relmat_names(relmat, [t.group for t in terms])
    messages = []
    for t in terms:
        if t.group in relmat:
            t.relmat = relmat_term(relmat[t.group], t.factor.levels)
            check_identifiable(t.group, t.relmat.factor, t.factor.codes, t.z, X)
            if t.relmat.unused_levels:
                k = len(t.relmat.unused_levels)
                messages.append(f"{k} level{'s' if k > 1 else ''} of the relationship matrix for {t.group!r} "
                                "not in the data (left out of the fit)")
    return relmat, messages


def _lme4_term_order(terms: list[TermDesign]) -> list[TermDesign]:
    """The terms in ``mkReTrms``' order: as written if their numbers of levels never increase,
    else by ``rev(order(nlevels))``."""
    nl = [len(t.factor.levels) for t in terms]
    if any(np.diff(nl) > 0):
        return [terms[i] for i in _r_rev_order(nl)]
    return terms


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


def heritability_term(design: Design) -> int | None:
    """Index of the first relationship-matrix term when every term is scalar (else None: no h2)."""
    if any(len(t.columns) != 1 for t in design.terms):
        return None
    for k, t in enumerate(design.terms):
        if t.relmat is not None:
            return k
    return None


def _check_indicator_columns(term, z: np.ndarray) -> None:
    """``ar1`` and ``cs`` are over the levels of a factor: one 0/1 column per level, one 1 per row."""
    if z.shape[1] < 2 or not np.all((z == 0) | (z == 1)) or not np.all(z.sum(axis=1) == 1):
        raise FormulaError(f"{term}: {term.cov}() is a covariance over the levels of a factor; write it as "
                           f"{term.cov}(0 + factor(x) | {term.group}) with x a column of at least two levels")
