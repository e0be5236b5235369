"""Grouping factors of random-effects terms: levels as R orders them, and a level code per row.

A factor ``g`` or an interaction ``a:b`` has as its levels the combinations of
values that occur in the data, ordered lexicographically with the first
variable slowest; each variable's values are ordered as R orders a factor's
levels (a categorical's own order, numbers numerically, anything else as text),
and unused levels are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .naming import format_level


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
    """The distinct non-missing values of ``series`` in R's factor order."""
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

    A combination is the mixed-radix integer ``sum_j codes_j prod_{i>j} sizes_i``, so rows are
    sorted as integers: by a counting pass (``bincount``) when there are few possible keys, else
    by sorting the keys.  Only when the key would overflow 62 bits are the rows sorted as rows.
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
