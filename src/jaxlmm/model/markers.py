"""Genomic relationship matrices (GRM) from marker dosages, matching GEMMA 0.98.5.

``X`` is the n x m matrix of dosages (0/1/2 copies of the counted allele, NaN
for missing, non-integer mean dosages allowed). For each marker ``j``

* ``mu_j`` = mean of the non-missing entries of column j, ``p_j = mu_j / 2``;
* missing entries are replaced by ``mu_j`` and the column is centred:
  ``z_j = x_j - mu_j`` (so an imputed entry is exactly 0);

and, with ``m`` the number of markers used (after any filtering),

* ``"vanraden"`` (default): ``K = Z Z' / m`` -- VanRaden's centring with
  GEMMA's divisor ``m``; identical to GEMMA ``-gk 1`` (centred relatedness);
* ``"standardized"``: ``K = (1/m) sum_j z_j z_j' / v_j`` with
  ``v_j = mean(z_j**2)`` over all n individuals (imputed zeros included,
  divisor n); identical to GEMMA ``-gk 2``;
* ``"vanraden2008"``: ``K = Z Z' / (2 sum_j p_j (1 - p_j))`` -- VanRaden
  (2008) method 1 scale, i.e. ``"vanraden"`` times ``m / (2 sum_j p_j (1 - p_j))``.

Pure numpy, float64; markers are processed in chunks of columns so no n x m
float64 copy of the whole matrix is made.
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from .._x64 import float64_scope
from ..errors import DataError, warn

METHODS = ("vanraden", "standardized", "vanraden2008")
_CHUNK = 10_000  # markers per block


@float64_scope
def grm(markers, method: str = "vanraden", *, min_maf: float | None = None,
        max_missing: float | None = None):
    """Genomic relationship matrix of the individuals (rows) of ``markers``.

    Parameters
    ----------
    markers
        Individuals x markers dosages in [0, 2], NaN for missing: a pandas
        DataFrame (index = individual names) or a 2-D array.
    method
        ``"vanraden"`` (default, ``Z Z' / m``; equals GEMMA ``-gk 1``),
        ``"standardized"`` (``(1/m) sum_j z_j z_j' / v_j``; equals GEMMA ``-gk 2``)
        or ``"vanraden2008"`` (``Z Z' / (2 sum_j p_j (1 - p_j))``), where
        ``z_j`` is marker j centred at its non-missing mean ``mu_j`` with
        missing entries imputed by ``mu_j``, ``p_j = mu_j / 2``,
        ``v_j = mean(z_j**2)`` over all individuals and ``m`` the number of
        markers used. "vanraden" uses VanRaden's centring with GEMMA's divisor m.
    min_maf
        Drop markers whose minor-allele frequency ``min(p_j, 1 - p_j)`` is
        below this. Off (None) by default.
    max_missing
        Drop markers whose fraction of missing values exceeds this. Off by
        default. ``min_maf=0.01, max_missing=0.05`` reproduces GEMMA's default
        SNP filters.

    Returns
    -------
    The n x n matrix: a DataFrame indexed and columned by the individual names
    when ``markers`` is a DataFrame, otherwise a numpy array.

    For ``"standardized"``, monomorphic markers (``v_j = 0``) are dropped with
    a :class:`~jaxlmm.errors.JaxlmmWarning` (and not counted in ``m``).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0, 1, 2], [1, 1, 0], [2, np.nan, 1]])
    >>> grm(X)  # mu = (1, 1, 1); Z = [[-1, 0, 1], [0, 0, -1], [1, 0, 0]]; K = Z Z' / 3
    array([[ 0.66666667, -0.33333333, -0.33333333],
           [-0.33333333,  0.33333333,  0.        ],
           [-0.33333333,  0.        ,  0.33333333]])
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, not {method!r}")
    if min_maf is not None and not 0 <= min_maf <= 0.5:
        raise ValueError(f"min_maf must be between 0 and 0.5, not {min_maf!r}")
    if max_missing is not None and not 0 <= max_missing <= 1:
        raise ValueError(f"max_missing must be between 0 and 1, not {max_missing!r}")

    block, ids, names, (n, m_in) = _as_blocks(markers)
    if n == 0:
        raise DataError("markers has no individuals (rows)")
    if m_in == 0:
        raise DataError("markers has no markers (columns)")

    # pass 1: per-marker count, sum, min and max of the non-missing values
    count, total = np.zeros(m_in), np.zeros(m_in)
    lo, hi = np.full(m_in, np.inf), np.full(m_in, -np.inf)
    for j0 in range(0, m_in, _CHUNK):
        x = block(slice(j0, j0 + _CHUNK))
        ok = ~np.isnan(x)
        bad = ok & ~((x >= 0) & (x <= 2))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise DataError(f"individual {_label(ids, i, 'row')}, marker {_label(names, j0 + j, 'column')}: "
                            f"dosage {x[i, j]:g} is outside [0, 2] (use NaN for missing)")
        count[j0:j0 + x.shape[1]] = ok.sum(axis=0)
        total[j0:j0 + x.shape[1]] = np.where(ok, x, 0.0).sum(axis=0)
        lo[j0:j0 + x.shape[1]] = np.where(ok, x, np.inf).min(axis=0)
        hi[j0:j0 + x.shape[1]] = np.where(ok, x, -np.inf).max(axis=0)

    keep = np.ones(m_in, dtype=bool)
    if max_missing is not None:
        keep &= (n - count) / n <= max_missing
    empty = keep & (count == 0)
    if empty.any():
        raise DataError(f"marker {_label(names, np.flatnonzero(empty)[0], 'column')} has only missing values")
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.where(lo == hi, lo, total / count)  # exact mean for monomorphic markers -> z = 0
    p = mu / 2
    if min_maf is not None:
        keep &= np.minimum(p, 1 - p) >= min_maf
    if method == "standardized":
        flat = keep & (lo == hi)
        if flat.any():
            shown = ", ".join(_label(names, j, "column") for j in np.flatnonzero(flat)[:5])
            warn(f"dropped {flat.sum()} monomorphic marker(s) with zero variance ({shown}"
                 f"{', ...' if flat.sum() > 5 else ''}) from the standardized GRM")
            keep &= ~flat
    used = np.flatnonzero(keep)
    if used.size == 0:
        raise DataError(f"no markers left after filtering (min_maf={min_maf}, max_missing={max_missing}, "
                        f"{m_in} markers given)")

    # pass 2: accumulate Z Z' (scaled per marker for "standardized") over blocks of used markers
    K = np.zeros((n, n))
    for c0 in range(0, used.size, _CHUNK):
        cols = used[c0:c0 + _CHUNK]
        z = block(cols) - mu[cols]
        z[np.isnan(z)] = 0.0
        if method == "standardized":
            z /= np.sqrt((z * z).sum(axis=0) / n)
        K += z @ z.T
    if method == "vanraden2008":
        denom = 2 * np.sum(p[used] * (1 - p[used]))
        if denom == 0:
            raise DataError("every marker used has allele frequency p = 0 or 1: 2 sum p(1-p) = 0")
    else:
        denom = used.size
    K = (K + K.T) / (2 * denom)
    if isinstance(markers, pd.DataFrame):
        return pd.DataFrame(K, index=markers.index.copy(), columns=markers.index.copy())
    return K


def _as_blocks(markers):
    """Validate ``markers``; return (columns -> float64 block, row names, column names, shape).

    The names are None for arrays (positions are reported instead).
    """
    if isinstance(markers, pd.DataFrame):
        for name, dtype in markers.dtypes.items():
            if not pd.api.types.is_numeric_dtype(dtype):
                raise DataError(f"marker column {name!r} is not numeric (dtype {dtype}); "
                                "dosages must be numbers in [0, 2] with NaN for missing")
        return (lambda cols: markers.iloc[:, cols].to_numpy(dtype=np.float64, na_value=np.nan),
                list(markers.index), list(markers.columns), markers.shape)
    arr = np.asarray(markers)
    if arr.ndim != 2:
        raise DataError(f"markers must be a 2-D individuals x markers matrix, got {arr.ndim}-D "
                        f"with shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        for j in range(arr.shape[1]):
            try:
                arr[:, j].astype(np.float64)
            except (TypeError, ValueError):
                raise DataError(f"marker column {j} is not numeric (dtype {arr.dtype}); dosages must be "
                                "numbers in [0, 2] with NaN for missing") from None
        if arr.dtype.kind != "O":  # strings that happen to parse as numbers are still not dosages
            raise DataError(f"markers are not numeric (dtype {arr.dtype})")
        arr = arr.astype(np.float64)
    return (lambda cols: np.asarray(arr[:, cols], dtype=np.float64), None, None, arr.shape)


def _label(names, k, kind):
    """``'name'`` for DataFrame labels, ``row 3`` / ``column 7`` for array positions."""
    return f"{kind} {k}" if names is None else repr(names[k])
