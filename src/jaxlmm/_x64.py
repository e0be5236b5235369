"""jaxlmm computes in float64 without changing the caller's JAX configuration.

JAX's 64-bit mode is a process-wide setting; turning it on at import would
change every other JAX program in the process (``jnp.ones(2)`` would become
float64 in the user's own code).  Instead each public entry point runs inside
``jax.enable_x64(True)``, a context manager that sets the mode for the current
thread only and restores it on exit: jaxlmm's programs are traced, compiled
and run in float64 (``dtype="float32"`` passes float32 arrays explicitly), and
results leave as NumPy arrays, so nothing of the scope leaks out.

``float64_scope`` wraps a function; ``float64_methods`` wraps every public
method and property of a class (results compute lazily, e.g. ``fit.confint()``).
"""

from __future__ import annotations

import functools
import threading
from functools import cached_property


_depth = threading.local()


def float64_scope(fn):
    """Run ``fn`` with JAX's 64-bit mode on for the call (and restored afterwards).

    The outermost such call of a thread first checks the process's budget of compiled programs
    (``_program_budget``): a long session never runs out of memory maps."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import jax

        depth = getattr(_depth, "n", 0)
        if depth == 0:
            from . import _program_budget as program_budget

            program_budget.maybe_release()
        _depth.n = depth + 1
        try:
            with jax.enable_x64(True):
                return fn(*args, **kwargs)
        finally:
            _depth.n = depth

    wrapper.__float64_scope__ = True
    return wrapper


def _wrap(attr):
    if isinstance(attr, cached_property):
        wrapped = cached_property(float64_scope(attr.func))
        return wrapped
    if isinstance(attr, property):
        return property(float64_scope(attr.fget) if attr.fget else None, attr.fset, attr.fdel, attr.__doc__)
    if isinstance(attr, (staticmethod, classmethod)):
        return type(attr)(float64_scope(attr.__func__))
    if callable(attr) and not getattr(attr, "__float64_scope__", False):
        return float64_scope(attr)
    return attr


def float64_methods(cls):
    """Class decorator: every public method and property (and ``__call__``, ``__repr__``) in float64."""
    for name, attr in list(vars(cls).items()):
        if name.startswith("_") and name not in ("__call__", "__repr__", "__str__"):
            continue
        wrapped = _wrap(attr)
        if wrapped is not attr:
            setattr(cls, name, wrapped)
            if isinstance(wrapped, cached_property):
                wrapped.__set_name__(cls, name)
    return cls


def working_dtype(dtype):
    """The JAX scalar type a fit computes in: float64 (``None``, the default) or float32."""
    import jax.numpy as jnp

    if dtype is None:
        return jnp.float64
    dt = jnp.dtype(dtype)
    if dt not in (jnp.dtype(jnp.float64), jnp.dtype(jnp.float32)):
        raise ValueError(f"dtype must be float64 or float32, not {dt}")
    return dt.type
