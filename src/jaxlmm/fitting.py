"""``lmer``: lme4's pipeline ``lFormula -> mkLmerDevfun -> optimizeLmer -> mkMerMod``.

- ``build_design`` (``lFormula``): formula + data -> arrays and names;
- ``deviance_function`` (``mkLmerDevfun``): the profiled criterion as a pure,
  differentiable JAX function of theta;
- ``fit_program`` (``optimizeLmer`` and the estimates): one jitted program;
- ``LmerResult`` (``mkMerMod``): the fitted model.
"""

from __future__ import annotations

import warnings

import numpy as np

from .design import Design, build_design
from .errors import JaxlmmWarning


def _dtype(dtype):
    import jax.numpy as jnp

    if dtype is None:
        return jnp.float64
    dt = jnp.dtype(dtype)
    if dt not in (jnp.dtype(jnp.float64), jnp.dtype(jnp.float32)):
        raise ValueError(f"dtype must be float64 or float32, not {dt}")
    return dt.type


class DevianceFunction:
    """The profiled REML criterion / ML deviance of a model as a function of theta.

    ``f(theta)`` is a pure JAX function: ``jax.grad(f)``, ``jax.hessian(f)``,
    ``jax.jit(f)`` and ``jax.vmap(f)`` all work.  The cross-products of the data
    are computed once, so each evaluation costs no more than one blocked
    Cholesky factorization.  ``f.theta0`` and ``f.lower`` are lme4's start and
    bounds; ``f.data`` is the row-level ``ModelData`` (see ``jaxlmm.core``).
    """

    def __init__(self, design: Design, reml: bool = True, dtype=None):
        from .core.crossprod import cross_products

        self.design = design
        self.reml = bool(reml)
        self.dtype = _dtype(dtype)
        self.data = design.model_data(self.dtype)
        self.cross_products = cross_products(self.data)

    @property
    def theta0(self) -> np.ndarray:
        return self.design.structure.theta0()

    @property
    def lower(self) -> np.ndarray:
        return self.design.structure.lower_bounds()

    @property
    def theta_names(self) -> list[str]:
        from .naming import theta_names

        return [n for t in self.design.terms for n in theta_names(t.group, t.columns)]

    def __call__(self, theta):
        import jax.numpy as jnp

        from .core.deviance import profiled_deviance

        return profiled_deviance(jnp.asarray(theta, self.dtype), self.cross_products, self.reml)

    def solve(self, theta):
        """beta, BLUPs, sigma, ... at ``theta`` (``jaxlmm.core.solution.Solution``), differentiable in theta."""
        import jax.numpy as jnp

        from .core.solution import solve

        return solve(jnp.asarray(theta, self.dtype), self.cross_products, self.reml)


def deviance_function(formula: str, data, *, reml: bool = True, weights=None, offset=None,
                      dtype=None) -> DevianceFunction:
    """lme4's ``mkLmerDevfun``: the model's profiled criterion as a JAX function of theta."""
    return DevianceFunction(build_design(formula, data, weights=weights, offset=offset), reml, dtype)


def lmer(formula: str, data, *, reml: bool = True, weights=None, offset=None, start=None,
         optimizer=None, max_iter: int = 100, dtype=None, data_name: str | None = None):
    """Fit a linear mixed model by REML (default) or ML, as ``lme4::lmer``.

    Parameters
    ----------
    formula : str
        lme4 formula, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : pandas.DataFrame
        Columns used by the formula.  Rows with missing values in used columns
        are removed (the count is in ``fit.messages``).  Make a numeric column
        a factor with ``df[col].astype("category")``.
    reml : bool
        REML (True) or maximum likelihood (False).
    weights, offset : array-like or column name, optional
        Prior weights (non-negative, finite) and an offset of the linear predictor.
    start : array-like, optional
        Starting theta (default lme4's: 1 on the diagonal, 0 off it).
    optimizer : optax.GradientTransformation, optional
        Use this first-order optimizer instead of the default projected Newton
        method (exact gradient and Hessian).
    max_iter : int
        Iteration limit of the optimizer.
    dtype : float64 (default) or float32.

    Examples
    --------
    >>> import jaxlmm
    >>> fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", jaxlmm.load_dataset("sleepstudy"))
    >>> round(fit.criterion, 3)
    1743.628
    >>> fit.fixef.round(4).to_dict()
    {'(Intercept)': 251.4051, 'Days': 10.4673}
    """
    import jax.numpy as jnp

    from .core.fit import fit_program, fit_program_optax
    from .core.optimize import NewtonOptions
    from .result import LmerResult

    dt = _dtype(dtype)
    design = build_design(formula, data, weights=weights, offset=offset)
    model_data = design.model_data(dt)
    theta0 = design.structure.theta0() if start is None else np.asarray(start, dtype=float)
    if theta0.shape != (design.structure.ntheta,):
        raise ValueError(f"start must have {design.structure.ntheta} values (one per theta), got {theta0.shape}")
    theta0 = jnp.asarray(np.maximum(theta0, design.structure.lower_bounds()), dt)
    if optimizer is None:
        output = fit_program(model_data, theta0, reml=bool(reml), options=NewtonOptions(max_iter=int(max_iter)))
        name = "newton"
    else:
        opts = (("max_iter", int(max_iter) if max_iter != 100 else 20000),)
        output = fit_program_optax(model_data, theta0, optimizer, reml=bool(reml), options=opts)
        name = "optax"
    fit = LmerResult(design, model_data, output, reml=reml, data_name=data_name, optimizer=name)
    fit._offset_arg = offset
    for msg in fit.messages:
        if msg.startswith("optimizer") or msg.startswith("boundary"):
            warnings.warn(msg, JaxlmmWarning, stacklevel=2)
    return fit
