"""Model matrices of formula expressions on a data frame (formulaic), with jaxlmm's errors.

Every expression is first checked against the formula grammar and the data's
columns (``formula_grammar.compile_expression``) and rewritten for formulaic;
a failure of formulaic becomes a ``FormulaError`` naming the part of the
formula, and running out of memory a ``MemoryLimitError``.
"""

from __future__ import annotations

import functools
import re

import formulaic
import numpy as np
import pandas as pd

from ..errors import DataError, FormulaError, JaxlmmError
from .formula import ParsedFormula
from .formula_grammar import Expression, compile_expression, formula_context

_ANSI = re.compile(r"\x1b\[[0-9;]*m|⧛|⧚")


def _clean_message(exc: Exception) -> str:
    """The first line of ``exc``'s message without terminal colour codes and formulaic's markers."""
    return _ANSI.sub("", str(exc)).strip().splitlines()[0]


@functools.lru_cache(maxsize=256)
def _parsed(text: str):
    """formulaic's parse of ``text`` (cached: parsing costs more than a small model matrix)."""
    return formulaic.Formula(text)


def _compiled(text: str, frame: pd.DataFrame, what: str) -> Expression:
    """``text`` checked against the formula grammar and the data's columns, rewritten for formulaic."""
    return compile_expression(text, frame.columns, what)


def _model_matrix(spec_or_formula, frame: pd.DataFrame, what: str):
    """formulaic's model matrix of an expression (a string) or of a fitted ``ModelSpec`` on ``frame``.

    Missing values are kept as NaN (rows are dropped by the caller); ``what`` names the part of
    the formula in error messages.
    """
    try:
        if isinstance(spec_or_formula, str):
            text = compile_expression(spec_or_formula, frame.columns, what).text
            return formulaic.model_matrix(_parsed(text), frame, na_action="ignore", context=formula_context())
        return spec_or_formula.get_model_matrix(frame, na_action="ignore", context=formula_context())
    except JaxlmmError:
        raise
    except MemoryError:
        from ..errors import MemoryLimitError

        raise MemoryLimitError(f"not enough memory to build the model matrix of {what} "
                               f"({frame.shape[0]} rows)") from None
    except Exception as exc:
        raise FormulaError(f"cannot build the model matrix of {what}: {_clean_message(exc)}") from None


def formula_offset(parsed: ParsedFormula, frame: pd.DataFrame) -> np.ndarray:
    """The sum of the formula's ``offset(expr)`` terms on the rows of ``frame``."""
    total = np.zeros(frame.shape[0])
    for expr in parsed.offsets:
        mm = _model_matrix(f"0 + I({expr})", frame, f"offset({expr})")
        total = total + mm.to_numpy(dtype=np.float64)[:, 0]
    return total


def _response(frame: pd.DataFrame, lhs: str) -> np.ndarray:
    """The response: the numeric column ``lhs``, or the single column of the expression ``lhs``."""
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
