"""``Model``: a linear mixed model built from a formula and data, before and across its fits.

lme4's pipeline is ``lFormula -> mkLmerDevfun -> optimizeLmer -> mkMerMod``;
a ``Model`` is the second stage made an object that the others hang from:

- it holds the ``Design`` (``lFormula``'s output: arrays and names), the
  options, and the engine that fits it (``engines/``: chosen once, by
  ``select_engine``), with what the engine prepares from the data (the
  core's ``ModelData``, the small-model ``DenseSystem``, the blocked
  ``CrossProducts`` or the marginal model, each formed on first use) and the
  factorization plan;
- ``model.objective`` (also ``model(theta)``) is the profiled REML criterion or
  ML deviance as a pure JAX function of theta (``mkLmerDevfun``);
- ``model.fit()`` optimizes it and returns an ``LmerResult`` (``optimizeLmer``
  + ``mkMerMod``); ``model.fit_many(Y)`` fits many responses (``BatchResult``).

Results keep their model (``fit.model``): refits, profiles, the bootstrap,
Kenward-Roger and predictions reach the data and the compiled programs through
it instead of rebuilding them.  The compiled programs themselves are shared
module-level objects (``core/dense/programs.py``, ``core/pls/programs.py``), keyed by shape,
so that every model of one size bucket runs the same program.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import errors
from .._x64 import float64_scope, working_dtype
from ..model.design import Design


def _cross_products_program(small: bool):
    """``crossprod.cross_products`` jitted; for a small model (the dense path's, which needs the blocked
    cross-products only for a profile) with ``dense_fit``'s quick-compile options: it runs once, on
    a few hundred rows."""
    import jax

    if small not in _CROSS_PRODUCTS:
        from ..core.pls.crossprod import cross_products
        from ..core.dense.programs import OPTIONS, compiler_options

        _CROSS_PRODUCTS[small] = jax.jit(cross_products,
                                         compiler_options=OPTIONS[compiler_options(1)] if small else None)
    return _CROSS_PRODUCTS[small]


_CROSS_PRODUCTS: dict = {}


def dense_model(design: Design, dtype):
    """The small-model layout and padded ``DenseSystem`` of ``design`` (``core/dense/layout.py``)."""
    from ..core.dense.layout import DenseLayout, dense_system

    layout = DenseLayout.build([(len(t.factor.levels), len(t.columns), t.cov) for t in design.terms],
                               design.X.shape[1])
    transforms = [None if t.relmat is None else t.relmat.factor for t in design.terms]
    system = dense_system(design.X, design.y, design.weights, design.offset, [t.factor.codes for t in design.terms],
                          [t.z for t in design.terms], transforms, layout, dtype)
    return layout, system


class Model:
    """A linear mixed model of one formula and data (module docstring).

    ``model(theta)`` / ``model.objective(theta)`` is a pure JAX function:
    ``jax.grad``, ``jax.hessian``, ``jax.jit`` and ``jax.vmap`` all work.
    Each evaluation costs one Cholesky factorization: of the dense penalized
    system for small models (``core/dense/system.py``, a program shared by every model
    of one size bucket), else blocked.  ``theta0`` and ``lower`` are lme4's
    start and bounds; ``data`` is the row-level ``ModelData`` (``jaxlmm.core``).

    Precision: a float64 model (the default) needs JAX's 64-bit mode in the
    program that transforms its objective.  Called directly with numbers it
    computes in float64 whatever the caller's setting; inside
    ``jax.grad``/``jit``/``vmap`` with 64-bit mode off it raises a
    ``JaxlmmError`` saying how to turn it on, instead of silently computing in
    float32.  ``dtype="float32"`` builds a float32 model that works in either mode.
    """

    def __init__(self, design: Design, reml: bool = True, dtype=None, *, max_iter: int = 100, optimizer=None,
                 offset_arg=None, data_name: str | None = None, trace: bool = False, glmm=None,
                 multivariate=None):
        self.design = design
        self.glmm = glmm            # ``engines.glmm_engine.GlmmOptions`` (family, link, nAGQ) of a GLMM, else None
        self.multivariate = multivariate    # ``engines.multivariate_engine.MultivariateOptions``, else None
        self.reml = bool(reml)
        self.dtype = working_dtype(dtype)
        self.requested_dtype = dtype
        self.max_iter, self.optimizer = errors.count_argument(max_iter, "max_iter"), optimizer
        if optimizer is not None:
            from ..core.optim.first_order import optimizer_kind

            optimizer_kind(optimizer)  # a clear error for an object that is not an optimizer
        self.trace = bool(trace)
        self.offset_arg, self.data_name = offset_arg, data_name
        from ..engines import select_engine

        self.engine = select_engine(design, optimizer=optimizer, trace=self.trace, glmm=glmm,
                                    multivariate=multivariate)
        self._data = self._cross_products = self._dense = self._plan = None
        self._marginal = self._marginal_fn = None
        self._prepared: dict = {}

    def prepared(self, key: str, build):
        """What an engine prepares from the data once (``build(self)``), kept on the model under ``key``."""
        if key not in self._prepared:
            self._prepared[key] = build(self)
        return self._prepared[key]

    # ----------------------------------------------------------------- the model's arrays
    def for_design(self, design: Design, **changes) -> "Model":
        """A model of the same kind (precision, options) on another design."""
        options = dict(reml=self.reml, dtype=self.requested_dtype, max_iter=self.max_iter,
                       optimizer=self.optimizer, offset_arg=self.offset_arg, data_name=self.data_name,
                       trace=self.trace, glmm=self.glmm, multivariate=self.multivariate)
        options.update(changes)
        return Model(design, **options)

    @property
    def optimizer_name(self) -> str:
        """``"newton"`` (the default), ``"optax"`` or ``"optimistix"``."""
        from ..core.optim.first_order import optimizer_kind

        return "newton" if self.optimizer is None else optimizer_kind(self.optimizer)

    @property
    def first_order_options(self):
        """``core.optimizers.FirstOrderOptions`` of an optax/optimistix fit: ``max_iter`` (the default 100,
        meant for Newton, becomes the first-order default, 10000), the trace."""
        from ..core.optim.first_order import FirstOrderOptions

        default = FirstOrderOptions()
        return default._replace(max_iter=self.max_iter if self.max_iter != 100 else default.max_iter, trace=self.trace)

    @property
    def data(self):
        """The core's row-level ``ModelData``."""
        if self._data is None:
            import jax

            with jax.enable_x64(True):
                self._data = self.design.model_data(self.dtype)
        return self._data

    @property
    def marginal(self):
        """The ``core.marginal.MarginalModel`` of a structured model."""
        if self._marginal is None:
            from ..model.marginal_design import marginal_model

            self._marginal = marginal_model(self.design)
        return self._marginal

    @property
    def dense(self):
        """``(DenseLayout, DenseSystem)`` of a small model, else None."""
        if self._dense is None and self.engine.small:
            self._dense = dense_model(self.design, self.dtype)
        return self._dense

    @property
    def cross_products(self):
        """The blocked path's ``CrossProducts`` (formed on first use: small models use the dense system)."""
        if self._cross_products is None:
            import jax

            with jax.enable_x64(True):
                self._cross_products = _cross_products_program(self.engine.small)(self.data)
        return self._cross_products

    @property
    def plan(self):
        """The factorization plan (``jaxlmm.model.plan.FactorizationPlan``)."""
        if self._plan is None:
            from ..model.plan import factorization_plan

            self._plan = factorization_plan(self.design, self.data, np.dtype(self.dtype).itemsize)
        return self._plan

    @property
    def theta0(self) -> np.ndarray:
        """The fit's default start (lme4's; a structured model: each structure's, ``model.marginal_design.start_values``)."""
        return self.engine.theta0(self)

    @property
    def lower(self) -> np.ndarray:
        return self.engine.lower(self)

    @property
    def theta_names(self) -> list[str]:
        return self.engine.theta_names(self)

    # ----------------------------------------------------------------- the objective
    def _needs_scope(self, theta) -> bool:
        """Whether this call must enter a 64-bit scope of its own (a concrete call with x64 off).

        Under the caller's transformation with x64 off it raises instead (class docstring).
        """
        import jax

        if self.dtype is not jax.numpy.float64 or jax.config.jax_enable_x64:
            return False
        if isinstance(theta, jax.core.Tracer):
            raise errors.JaxlmmError(
                "this deviance function computes in float64, but JAX's 64-bit mode is off in the program "
                "transforming it (jit/grad/vmap/...): turn it on with jax.config.update('jax_enable_x64', True) "
                "at the start of your program, or run the transformation inside `with jax.enable_x64(True):`; "
                "or build the function with dtype='float32'")
        return True

    def objective(self, theta):
        """The criterion at ``theta`` (pure JAX): the profiled REML criterion (``reml``) or ML deviance.

        For a structured model (the marginal engine) ``theta`` is every parameter of ``StructuredResult``:
        the terms' own parameters, then the residual's (``core/marginal/jax_criterion.py``)."""
        import jax

        if not self._needs_scope(theta):
            return self.engine.objective(self, theta)
        with jax.enable_x64(True):
            return np.asarray(self.engine.objective(self, theta))

    __call__ = objective

    def marginal_criterion(self, phi):
        """The marginal engine's criterion as a JAX function of all its parameters (built on first use)."""
        import jax

        from ..core.marginal.jax_criterion import marginal_criterion

        if self._marginal_fn is None:
            y = np.asarray(self.design.y, float) - np.asarray(self.design.offset, float)
            rows = np.flatnonzero((np.asarray(self.design.weights) > 0) & np.isfinite(y))
            with jax.enable_x64(True):
                self._marginal_fn = marginal_criterion(self.marginal, y[rows], rows, self.reml)
        return self._marginal_fn(phi)

    def solve(self, theta):
        """beta, BLUPs, sigma, ... at ``theta`` (``jaxlmm.core.pls.solve.Solution``), differentiable in theta."""
        import jax
        import jax.numpy as jnp

        from ..core.pls.solve import solve

        if not self._needs_scope(theta):
            return solve(jnp.asarray(theta, self.dtype), self.cross_products, self.reml, self.data.transforms)
        with jax.enable_x64(True):
            out = solve(jnp.asarray(theta, self.dtype), self.cross_products, self.reml, self.data.transforms)
            return jax.tree_util.tree_map(np.asarray, out)

    # ----------------------------------------------------------------- fitting
    @float64_scope
    def fit(self, *, reml: bool | None = None, start=None, warn: bool = True, verbose: bool = False):
        """Minimize the objective and build the ``LmerResult`` (lme4's ``optimizeLmer`` + ``mkMerMod``).

        ``reml`` (default the model's) fits the same model by REML or ML; ``start`` is theta to start from.
        """
        from .single import fit_model

        model = self if reml is None or bool(reml) == self.reml else self.sibling(reml=bool(reml))
        return fit_model(model, start=start, warn=warn, verbose=verbose)

    def sibling(self, **changes) -> "Model":
        """The same model with other options (``reml``, ``dtype``, ...), sharing the arrays already formed."""
        other = self.for_design(self.design, **changes)
        if other.dtype == self.dtype:       # the arrays depend on the data and the precision only
            other._data, other._cross_products, other._dense, other._plan = (
                self._data, self._cross_products, self._dense, self._plan)
        return other

    @float64_scope
    def fit_many(self, Y=None, names=None, *, start=None, chunk_size: int | None = None,
                 progress: bool | None = None, device=None, devices=None, spectral: bool | None = None):
        """Fit the model to every column of ``Y`` (rows as the design's, NaN = missing): a ``BatchResult``.

        Default ``Y``: the design's own responses (a design built with ``responses=``).
        ``start``: theta to start every response from (a bootstrap starts from the fit's).
        """
        design = self.design
        if Y is not None:
            Y = np.asarray(Y, dtype=float)
            design = replace(design, y=Y)
        model = self if Y is None else self.for_design(design)
        Y = np.asarray(model.design.y, dtype=float)
        Y = Y[:, None] if Y.ndim == 1 else Y
        names = [f"trait{i}" for i in range(Y.shape[1])] if names is None else list(names)
        return model.engine.fit_many(model, names, Y, start=start, chunk_size=chunk_size, progress=progress,
                                     device=device, devices=devices, spectral=spectral)
