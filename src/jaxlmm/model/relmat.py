"""Relationship matrices for random effects (GBLUP, pedigree, dominance kernels).

A term ``(1 | id)`` with ``relmat={"id": K}`` has random effects
``u ~ N(0, sigma^2 lambda^2 K)`` instead of ``N(0, sigma^2 lambda^2 I)`` (for a
term with S columns, ``Cov(vec u) = K kron Sigma``).  As lme4qtl does, the
model is refitted in lme4's form with the term's columns ``Z (T kron I_S)``,
where ``K = T T^T``: the spherical effects ``b* ~ N(0, sigma^2 Lambda Lambda^T)``
are then independent across levels and ``u = (T kron I_S) b*``.

``T`` is the lower Cholesky factor of K when K is positive definite (what
lme4qtl's ``relfac`` gives), else ``U diag(sqrt(d))`` from K's eigenvalues
(a genomic matrix from centred markers is singular).  The fitted model, and so
the criterion, the variance parameters and the genetic values ``u``, do not
depend on the choice of ``T``.

Levels (lme4qtl's rules): every level of the grouping factor in the data must
be a row of K (else an error naming the missing levels); levels of K without
data are left out of the fit (they change neither the likelihood nor the
estimates) and counted in the fit's messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ArgumentError, DataError
from .naming import format_level

SYMMETRY_TOL = 1e-8   # relative to max |K|
PSD_TOL = 1e-8        # smallest eigenvalue >= -PSD_TOL * largest


@dataclass(frozen=True)
class RelationshipMatrix:
    """A named, checked relationship matrix K (levels x levels)."""

    name: str
    levels: tuple[str, ...]
    K: np.ndarray

    def restrict(self, levels: list[str]) -> "RelationshipMatrix":
        """K on ``levels`` (in that order); an error names levels K does not have."""
        pos = level_positions(levels, self.levels, self.name, "its relationship matrix")
        return RelationshipMatrix(self.name, tuple(levels), self.K[np.ix_(pos, pos)])


def level_positions(levels, known, name: str, where: str) -> np.ndarray:
    """Positions in ``known`` of each of the grouping factor ``name``'s ``levels``; a ``DataError`` names
    the levels missing from ``where`` (its relationship matrix, the genotypes)."""
    index = {lv: i for i, lv in enumerate(known)}
    absent = [lv for lv in levels if lv not in index]
    if absent:
        shown = ", ".join(map(repr, absent[:5])) + (" ..." if len(absent) > 5 else "")
        raise DataError(f"{len(absent)} level{'s' if len(absent) > 1 else ''} of grouping factor {name!r} "
                        f"not in {where}: {shown}")
    return np.asarray([index[lv] for lv in levels], dtype=np.int64)


@dataclass(frozen=True)
class RelmatTerm:
    """What a fitted term keeps: K on the fitted levels, its factor T and the levels K had but the data lacked."""

    name: str
    K: np.ndarray
    factor: np.ndarray          # T with K = T T^T
    method: str                 # "cholesky" or "eigen"
    unused_levels: tuple[str, ...]
    full: RelationshipMatrix    # the matrix as given (for predictions at levels without data)


def as_relationship_matrix(value, name: str) -> RelationshipMatrix:
    """Accept a DataFrame (index and columns = level names), a ``(array, levels)`` pair, or a
    ``RelationshipMatrix``; check it is square, finite, symmetric and positive semi-definite."""
    if isinstance(value, RelationshipMatrix):
        return value
    if isinstance(value, pd.DataFrame):
        rows = [format_level(v) for v in value.index]
        cols = [format_level(v) for v in value.columns]
        if rows != cols:
            if sorted(rows) == sorted(cols) and len(set(rows)) == len(rows):
                value = value.loc[:, list(value.index)]
            else:
                raise DataError(f"relationship matrix for {name!r}: row and column names differ")
        levels, K = rows, value.to_numpy()
    elif isinstance(value, tuple) and len(value) == 2:
        K, levels = np.asarray(value[0]), [format_level(v) for v in value[1]]
    else:
        raise DataError(f"relationship matrix for {name!r} must be a DataFrame indexed and columned by level "
                        "names, or a pair (array, level_names)")
    try:
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"relationship matrix for {name!r} is not numeric") from None
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise DataError(f"relationship matrix for {name!r} must be square, got shape {K.shape}")
    if len(levels) != K.shape[0]:
        raise DataError(f"relationship matrix for {name!r} has {K.shape[0]} rows but {len(levels)} level names")
    if len(set(levels)) != len(levels):
        dup = pd.Index(levels)[pd.Index(levels).duplicated()][0]
        raise DataError(f"relationship matrix for {name!r} has the level {dup!r} twice")
    if not np.isfinite(K).all():
        raise DataError(f"relationship matrix for {name!r} has missing or infinite values")
    scale = max(float(np.max(np.abs(K))), 1e-300)
    asym = float(np.max(np.abs(K - K.T)))
    if asym > SYMMETRY_TOL * scale:
        i, j = np.unravel_index(np.argmax(np.abs(K - K.T)), K.shape)
        raise DataError(f"relationship matrix for {name!r} is not symmetric: K[{levels[i]!r}, {levels[j]!r}] = "
                        f"{K[i, j]:.6g} but K[{levels[j]!r}, {levels[i]!r}] = {K[j, i]:.6g}")
    K = 0.5 * (K + K.T)
    return RelationshipMatrix(name, tuple(levels), K)


def factorize(K: np.ndarray, name: str) -> tuple[np.ndarray, str]:
    """``T`` with ``K = T T^T``: Cholesky when K is positive definite, else from ``eigh``.

    Raises a ``DataError`` when K has an eigenvalue below ``-PSD_TOL`` times its largest.
    """
    if not np.any(K):
        raise DataError(f"relationship matrix for {name!r} is zero on the observed levels: "
                        "the term has no variance to estimate")
    try:
        return np.linalg.cholesky(K), "cholesky"
    except np.linalg.LinAlgError:
        pass
    d, U = np.linalg.eigh(K)
    if d[0] < -PSD_TOL * max(d[-1], 1e-300):
        raise DataError(f"relationship matrix for {name!r} is not positive semi-definite "
                        f"(smallest eigenvalue {d[0]:.3g}, largest {d[-1]:.3g})")
    return U * np.sqrt(np.clip(d, 0.0, None))[None, :], "eigen"


def check_identifiable(term_name: str, T: np.ndarray, codes: np.ndarray, z: np.ndarray, X: np.ndarray) -> None:
    """A relationship-matrix term must add something the fixed effects cannot: a ``DataError`` when
    every column of ``Z (T kron I)`` lies in the span of X (e.g. an all-ones K beside an intercept)."""
    if X.shape[1] == 0:
        return
    cols = np.einsum("ns,nr->nrs", z, T[codes]).reshape(len(codes), -1)
    norms = np.linalg.norm(cols, axis=0)
    cols = cols[:, norms > 1e-6 * max(norms.max(), 1e-300)]         # K's null directions add nothing
    coef, *_ = np.linalg.lstsq(X, cols, rcond=None)
    resid = np.linalg.norm(cols - X @ coef, axis=0)
    if np.all(resid <= 1e-8 * np.linalg.norm(cols, axis=0)):
        rank = np.linalg.matrix_rank(T @ T.T)
        raise DataError(f"relationship matrix for {term_name!r} (rank {rank} on the observed levels) only adds "
                        "directions the fixed effects already have (e.g. an all-ones K beside an intercept): "
                        "its variance is not identifiable")


def relmat_term(matrix: RelationshipMatrix, levels: list[str]) -> RelmatTerm:
    """The term's information for the observed ``levels`` of its grouping factor."""
    sub = matrix.restrict(levels)
    T, method = factorize(sub.K, matrix.name)
    used = set(levels)
    return RelmatTerm(matrix.name, sub.K, T, method, tuple(lv for lv in matrix.levels if lv not in used), matrix)


def relmat_argument(relmat) -> dict | None:
    """``relmat=`` as given, checked before anything reads it: None (or an empty dict) or a dict from
    grouping-factor names to matrices, ``{"id": K}``; anything else is an ``ArgumentError`` (a matrix
    alone does not say which term it belongs to)."""
    from collections.abc import Mapping

    if relmat is None:
        return None
    if not isinstance(relmat, Mapping):
        kind = type(relmat).__name__
        hint = " alone" if hasattr(relmat, "shape") or isinstance(relmat, tuple) else ""
        raise ArgumentError(f"relmat must be a dict from grouping-factor names to relationship matrices, such as "
                            f"relmat={{'id': K}}; got a {kind}{hint}, which does not say which grouping factor "
                            "it is for")
    return dict(relmat) or None


def check_relmat_names(relmat: dict, groups: list[str]) -> None:
    """Every key of ``relmat`` must name a grouping factor of the formula."""
    unknown = [k for k in relmat if k not in groups]
    if unknown:
        raise DataError(f"relmat names {', '.join(map(repr, unknown))} but the formula's grouping factors are "
                        f"{', '.join(map(repr, groups))}")
