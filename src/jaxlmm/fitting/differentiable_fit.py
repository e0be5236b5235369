"""``jaxlmm.fit_function``: a model's whole fit as a pure JAX function of the response.

The engine that ``engines.select`` chooses for the design says whether its fit can be one
(``Engine.supports_fit_function``); the function itself is ``model/fit_function.FitFunction``.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError, JaxlmmError
from ..model.fit_function import FitFunction


def fit_function(formula: str, data, *, reml: bool = True, weights=None, offset=None, relmat: dict | None = None,
                 start=None, max_iter: int = 100, dtype=None, REML: bool | None = None) -> FitFunction:
    """The fit of ``formula`` on ``data`` as a pure JAX function of the response: ``f(y, weights=None)``.

    The design is built as ``jaxlmm.lmer`` builds it (same arguments, same missing-value rule); the
    formula's response gives the default ``y`` (``f.y``) and the row order.  ``f(y)`` returns a
    ``jaxlmm.FitState`` (theta, beta, sigma, BLUPs ``b`` per term, criterion, fitted values,
    converged); ``jax.jacfwd``, ``jax.jacrev``, ``jax.grad`` of any function of it use the implicit
    derivative at theta-hat (``jaxlmm.core.pls.implicit``), and ``jax.vmap(f)`` fits many responses.
    At a boundary (a variance component at 0) the derivative is that of the constrained optimum:
    components at their bound stay there.  ``start`` is the optimizer's start (default lme4's).
    Transformations compile the whole fit (seconds; un-jitted ``jax.grad`` far slower): jit them once
    and reuse the jitted function (``FitFunction``'s docstring has measured times).

    >>> import jax, jaxlmm
    >>> f = jaxlmm.fit_function("Reaction ~ Days + (Days | Subject)", jaxlmm.load_dataset("sleepstudy"))
    >>> f(f.y).theta.round(4).tolist()
    [0.9667, 0.0152, 0.2309]
    """
    import jax

    from ..model.data_checks import _as_frame
    from ..model.design import build_design

    if REML is not None:
        reml = bool(REML)
    with jax.enable_x64(True):
        design = build_design(formula, data, weights=weights, offset=offset, relmat=relmat)
        if design.y is None or np.ndim(design.y) != 1:
            raise DataError("fit_function needs a formula with a response on its left side, e.g. 'y ~ x + (1 | g)'")
        from ..engines.select import select_engine    # the engine decides (the one reader of the predicates)

        if not select_engine(design).supports_fit_function:
            raise JaxlmmError("fit_function does not support structured covariances (ar1, cs, ou, exp, gau) yet; "
                              "lme4's unstructured and diagonal terms work")
        frame = _as_frame(data)
        positions = None
        if frame.index.is_unique:
            positions = (frame.index.get_indexer(design.row_index), frame.shape[0])
        return FitFunction(design, reml, dtype, start=start, max_iter=max_iter, row_positions=positions)
