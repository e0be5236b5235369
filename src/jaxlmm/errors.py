"""Exceptions and warnings raised by the front end.

Every check on user input happens before anything reaches JAX, so a user sees
one of these -- naming the column, term or value at fault -- and never a
traceback from inside a jitted function.
"""

from __future__ import annotations


class JaxlmmError(ValueError):
    """Base class of jaxlmm's input errors."""


class FormulaError(JaxlmmError):
    """The formula cannot be parsed or does not fit the data."""


class DataError(JaxlmmError):
    """The data, weights, offset or new data are unusable."""


class ArgumentError(JaxlmmError):
    """An argument of a jaxlmm function (or a command-line option) has an unusable type or value."""


class JaxlmmWarning(UserWarning):
    """Something the user should know about a fit (dropped rows or columns, singular fit...)."""


class MemoryLimitError(JaxlmmError, MemoryError):
    """A fit would need more memory than the device has free (raised before allocating)."""


def warn(message: str) -> None:
    """A ``JaxlmmWarning`` attributed to the first caller outside jaxlmm (the user's line)."""
    import os
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__))
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, JaxlmmWarning, stacklevel=level)


def count_argument(value, name: str, minimum: int = 0) -> int:
    """``value`` as an ``int`` when it is a whole number (a Python or NumPy integer, not a bool) of at
    least ``minimum``; otherwise an ``ArgumentError`` naming the argument ``name``."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a non-negative integer" if minimum == 0 else (
            "a positive integer" if minimum == 1 else f"an integer >= {minimum}")
        raise ArgumentError(f"{name} must be {kind}, got {value!r}")
    return int(value)
