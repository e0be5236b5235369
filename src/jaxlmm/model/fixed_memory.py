"""The memory guard for the fixed-effects matrix: refuse, with the culprit named, an X that cannot fit.

A fixed-effects term expands to the product of its factors' numbers of levels
(a numeric variable counts 1), so a factor with many levels written as a
fixed effect asks for an ``n x p`` dense matrix that may exceed the free memory;
the error suggests writing it as a random effect instead.
"""

from __future__ import annotations

import pandas as pd

from .formula_grammar import compile_expression
from .model_matrix import _parsed


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
    """A ``MemoryLimitError`` naming the largest term before a dense X too large for memory is built.

    The need is ``3 * 8 n (p + 1)`` bytes (X, a copy, and the aliasing check's side of ``X^T X``);
    below 64 MiB the fit's own memory guard decides.
    """
    from ..errors import MemoryLimitError
    from .memory import available_bytes, describe_bytes

    terms = list(_parsed(compile_expression(fixed, frame.columns, "the fixed effects").text))
    columns = {str(t): _term_columns(t, frame) for t in terms}
    need = 8 * frame.shape[0] * (sum(columns.values()) + 1) * 3
    if need < 64 << 20:
        return
    free = available_bytes()
    if need > free:
        largest = max(columns, key=columns.get)
        raise MemoryLimitError(f"the fixed-effects matrix would need about {describe_bytes(need)} for "
                               f"{sum(columns.values())} columns x {frame.shape[0]} rows (term {largest!r}: "
                               f"{columns[largest]} columns) but {describe_bytes(free)} is free; a factor with "
                               "this many levels is better a random effect, e.g. (1 | g)")
