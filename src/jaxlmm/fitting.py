"""``lmer``: lme4's pipeline ``lFormula -> mkLmerDevfun -> optimizeLmer -> mkMerMod``.

- ``build_design`` (``lFormula``): formula + data -> arrays and names;
- ``deviance_function`` (``mkLmerDevfun``): the profiled criterion as a pure,
  differentiable JAX function of theta;
- ``fit_program`` (``optimizeLmer`` and the estimates): one jitted program;
- ``LmerResult`` (``mkMerMod``): the fitted model.
"""

from __future__ import annotations


import numpy as np

from ._x64 import float64_scope
from .model.design import Design, build_design
from . import errors


def _dtype(dtype):
    import jax.numpy as jnp

    if dtype is None:
        return jnp.float64
    dt = jnp.dtype(dtype)
    if dt not in (jnp.dtype(jnp.float64), jnp.dtype(jnp.float32)):
        raise ValueError(f"dtype must be float64 or float32, not {dt}")
    return dt.type


def _jitted(name: str):
    """The compiled objective programs of ``DevianceFunction`` (one each, shared by all instances)."""
    import jax

    if name not in _JITTED:
        from .core.dense import dense_deviance
        from .core.deviance import profiled_deviance

        fn = {"dense": dense_deviance, "block": profiled_deviance}[name]
        _JITTED[name] = jax.jit(fn, static_argnames="reml")
    return _JITTED[name]


_JITTED: dict = {}


class DevianceFunction:
    """The profiled REML criterion / ML deviance of a model as a function of theta.

    ``f(theta)`` is a pure JAX function: ``jax.grad(f)``, ``jax.hessian(f)``,
    ``jax.jit(f)`` and ``jax.vmap(f)`` all work.  The cross-products of the data
    are computed once, so each evaluation costs one Cholesky factorization:
    of the dense penalized system for small models (``core/dense.py``, a
    program shared by every model of one size bucket), else blocked.
    ``f.theta0`` and ``f.lower`` are lme4's start and bounds; ``f.data`` is the
    row-level ``ModelData`` (see ``jaxlmm.core``).

    Precision: a float64 function (the default) needs JAX's 64-bit mode in the
    program that transforms it.  Called directly with numbers it computes in
    float64 whatever the caller's setting; inside ``jax.grad``/``jit``/``vmap``
    with 64-bit mode off it raises a ``JaxlmmError`` saying how to turn it on
    (``jax.config.update("jax_enable_x64", True)``, or ``with jax.enable_x64(True):``
    around the transformation), instead of silently computing in float32.
    ``dtype="float32"`` builds a float32 function that works in either mode.
    """

    def __init__(self, design: Design, reml: bool = True, dtype=None):
        import jax

        self.design = design
        self.reml = bool(reml)
        self.dtype = _dtype(dtype)
        with jax.enable_x64(True):
            self.data = design.model_data(self.dtype)
        self._cross_products = None if _dense_eligible(design) else self._blocked_cross_products()
        self._layout, self._system = dense_model(design, self.dtype) if _dense_eligible(design) else (None, None)

    def _blocked_cross_products(self):
        import jax

        from .core.crossprod import cross_products

        with jax.enable_x64(True):
            return jax.jit(cross_products)(self.data)

    @property
    def cross_products(self):
        """The blocked path's ``CrossProducts`` (formed on first use: small models evaluate the dense system)."""
        if self._cross_products is None:
            self._cross_products = self._blocked_cross_products()
        return self._cross_products

    @property
    def theta0(self) -> np.ndarray:
        return self.design.structure.theta0()

    @property
    def lower(self) -> np.ndarray:
        return self.design.structure.lower_bounds()

    @property
    def theta_names(self) -> list[str]:
        from .model.naming import theta_names

        return [n for t in self.design.terms for n in theta_names(t.group, t.columns)]

    def _evaluate(self, theta):
        import jax.numpy as jnp

        theta = jnp.asarray(theta, self.dtype)
        if self._layout is None:
            return _jitted("block")(theta, self.cross_products, reml=self.reml)
        pad = jnp.zeros(theta.shape[:-1] + (self._layout.k_pad - self._layout.k,), theta.dtype)
        return _jitted("dense")(jnp.concatenate([theta, pad], axis=-1), self._system, reml=self.reml)

    def _needs_scope(self, theta) -> bool:
        """Whether this call must enter a 64-bit scope of its own (a concrete call with x64 off).

        Under the caller's transformation with x64 off it raises instead (class docstring).
        """
        import jax

        if self.dtype is not jax.numpy.float64 or jax.config.jax_enable_x64:
            return False
        if isinstance(theta, jax.core.Tracer):
            from .errors import JaxlmmError

            raise JaxlmmError(
                "this deviance function computes in float64, but JAX's 64-bit mode is off in the program "
                "transforming it (jit/grad/vmap/...): turn it on with jax.config.update('jax_enable_x64', True) "
                "at the start of your program, or run the transformation inside `with jax.enable_x64(True):`; "
                "or build the function with dtype='float32'")
        return True

    def __call__(self, theta):
        import jax

        if not self._needs_scope(theta):
            return self._evaluate(theta)
        with jax.enable_x64(True):
            return np.asarray(self._evaluate(theta))

    def solve(self, theta):
        """beta, BLUPs, sigma, ... at ``theta`` (``jaxlmm.core.solution.Solution``), differentiable in theta."""
        import jax
        import jax.numpy as jnp

        from .core.solution import solve

        if not self._needs_scope(theta):
            return solve(jnp.asarray(theta, self.dtype), self.cross_products, self.reml, self.data.transforms)
        with jax.enable_x64(True):
            out = solve(jnp.asarray(theta, self.dtype), self.cross_products, self.reml, self.data.transforms)
            return jax.tree_util.tree_map(np.asarray, out)


@float64_scope
def deviance_function(formula: str, data, *, reml: bool = True, weights=None, offset=None,
                      dtype=None, relmat=None) -> DevianceFunction:
    """lme4's ``mkLmerDevfun``: the model's profiled criterion as a JAX function of theta."""
    return DevianceFunction(build_design(formula, data, weights=weights, offset=offset, relmat=relmat), reml, dtype)


@float64_scope
def lmer(formula: str, data, *, reml: bool = True, weights=None, offset=None, start=None,
         optimizer=None, max_iter: int = 100, dtype=None, data_name: str | None = None,
         responses=None, chunk_size: int | None = None, progress: bool | None = None, device=None,
         relmat: dict | None = None, spectral: bool | None = None, devices=None, verbose: bool = False,
         REML: bool | None = None):
    """Fit a linear mixed model by REML (default) or ML, as ``lme4::lmer``; or many traits at once.

    Parameters
    ----------
    formula : str
        lme4 formula, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : pandas.DataFrame
        Columns used by the formula.  Rows with missing values in used columns
        are removed (the count is in ``fit.messages``).  Make a numeric column
        a factor with ``df[col].astype("category")``.
    reml : bool
        REML (True) or maximum likelihood (False); ``REML=`` (lme4's spelling) is accepted too.
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
    responses : DataFrame, array (rows x traits) or list of column names, optional
        Fit the model to every trait in one vmapped, jitted call and return a
        ``BatchResult``.  NaN marks a missing value of one trait only.  The
        formula's left side may then be omitted (``"~ x + (1 | g)"``).
    chunk_size : int, optional
        Traits per compiled call (default: all that fit in a quarter of the free memory).
    progress : bool, optional
        Progress bar over chunks (default: when standard error is a terminal).
    device : jax.Device, optional
        Where to compute (default: JAX's default device, a GPU when JAX sees one).
    devices : list of jax.Device, optional
        For a batch: shard the traits over these devices (default: all local
        devices of JAX's default backend; see ``jaxlmm.sharding``).
    relmat : dict, optional
        Relationship matrices by grouping factor, ``{"id": K}``: the term's random
        effects have covariance ``sigma^2 lambda^2 K`` (GBLUP; see ``jaxlmm.relmat``
        and ``jaxlmm.grm``).  K is a DataFrame indexed and columned by level names
        or a pair ``(array, level_names)``.  A batch whose only random term is one
        such term with one record per level is fitted on K's eigenbasis
        (``core.spectral``).
    spectral : bool, optional
        For a batch: force (True) or forbid (False) the spectral path; default
        automatic (``diagnostics["path"]`` says which path fitted each trait).
    verbose : bool
        Print the factorization plan (block term, dense part, sparse or dense
        cross block, predicted work and memory; ``jaxlmm.plan``) before a single
        fit, and the iterations and time after it.

    Examples
    --------
    >>> import jaxlmm
    >>> fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", jaxlmm.load_dataset("sleepstudy"))
    >>> round(fit.criterion, 3)
    1743.628
    >>> fit.fixef.round(4).to_dict()
    {'(Intercept)': 251.4051, 'Days': 10.4673}
    """
    if REML is not None:
        reml = bool(REML)
    if responses is not None:
        from .batch import fit_batch

        if optimizer is not None or start is not None:
            raise ValueError("optimizer= and start= are for single fits; a batch uses the Newton optimizer")
        return fit_batch(formula, data, responses, reml=reml, weights=weights, offset=offset,
                         chunk_size=chunk_size, progress=progress, device=device, dtype=dtype,
                         max_iter=max_iter, data_name=data_name, relmat=relmat, spectral=spectral,
                         devices=devices)
    design = build_design(formula, data, weights=weights, offset=offset, relmat=relmat)
    import jax

    ctx = jax.default_device(device) if device is not None else _NullContext()
    with ctx:
        fit = lmer_design(design, reml=reml, start=start, optimizer=optimizer, max_iter=max_iter, dtype=dtype,
                          data_name=data_name, verbose=verbose)
    fit._offset_arg = offset
    return fit


def _dense_eligible(design: Design) -> bool:
    """Small models go through the dense program shared by all structures (``core/dense.py``)."""
    from .core.dense_layout import fits_dense

    q = sum(len(t.factor.levels) * len(t.columns) for t in design.terms)
    return fits_dense(q, design.X.shape[1])


def dense_model(design: Design, dtype):
    """The small-model layout and padded ``DenseSystem`` of ``design`` (``core/dense_layout.py``)."""
    from .core.dense_layout import DenseLayout, dense_system

    layout = DenseLayout.build([(len(t.factor.levels), len(t.columns)) for t in design.terms], design.X.shape[1])
    transforms = [None if t.relmat is None else t.relmat.factor for t in design.terms]
    system = dense_system(design.X, design.y, design.weights, design.offset, [t.factor.codes for t in design.terms],
                          [t.z for t in design.terms], transforms, layout, dtype)
    return layout, system


def _dense_fit(design: Design, model_data, theta0: np.ndarray, reml: bool, max_iter: int, dtype):
    """Fit with ``core.dense_fit.fit_dense``; the output in the block path's layout."""
    from .core.dense_fit import fit_dense
    from .core.dense_layout import derivative_rows, per_term_solution
    from .core.fit import FitOutput
    from .core.optimize import NewtonOptions, OptimResult

    structure = model_data.structure
    layout, system = dense_model(design, dtype)
    transforms = [None if t.relmat is None else t.relmat.factor for t in design.terms]
    dt = np.dtype(dtype)
    lower = layout.pad_theta(structure.lower_bounds()).astype(dt)
    reflections = layout.pad_reflections(structure.reflections()).astype(dt)
    k = layout.k
    res, sol = fit_dense(system, derivative_rows(system.lam_index, layout.k_pad), layout.pad_theta(theta0), lower,
                         reflections, k, reml=reml, options=NewtonOptions(max_iter=max_iter))
    optim = OptimResult(res.theta[:k], res.fun, res.grad[:k], res.n_iter, res.status, res.step)
    solution = per_term_solution(sol, layout, [t.nlevels for t in structure.terms], transforms)
    eta = np.asarray(model_data.offset) + np.asarray(model_data.X) @ solution.beta
    for zk, rk, bk in zip(model_data.z, model_data.refs, solution.b):
        eta = eta + np.sum(np.asarray(zk) * bk[np.asarray(rk)], axis=1)
    return FitOutput(optim, solution, eta.astype(dt)), (layout, system)


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@float64_scope
def lmer_design(design: Design, *, reml: bool = True, start=None, optimizer=None, max_iter: int = 100,
                dtype=None, data_name: str | None = None, warn: bool = True, verbose: bool = False):
    """Fit a built ``Design`` (lme4's ``optimizeLmer`` + ``mkMerMod``)."""
    import time

    import jax.numpy as jnp

    from .core.fit import fit_program_optax, run_fit_program
    from .core.optimize import NewtonOptions
    from .results.lmer_result import LmerResult

    dt = _dtype(dtype)
    from .model.memory import check_memory

    from .model.plan import factorization_plan

    itemsize = np.dtype(dt).itemsize
    check_memory(design, itemsize, sparse_ok=True)
    model_data = design.model_data(dt)
    plan = factorization_plan(design, model_data, itemsize)
    check_memory(design, itemsize, need=plan.bytes_peak)
    if verbose:
        print(plan, flush=True)
    started = time.perf_counter()
    theta0 = design.structure.theta0() if start is None else np.asarray(start, dtype=float)
    if theta0.shape != (design.structure.ntheta,):
        raise ValueError(f"start must have {design.structure.ntheta} values (one per theta), got {theta0.shape}")
    theta0 = jnp.asarray(np.maximum(theta0, design.structure.lower_bounds()), dt)
    dense = None
    if optimizer is None and _dense_eligible(design):
        output, dense = _dense_fit(design, model_data, np.asarray(theta0), bool(reml), int(max_iter), dt)
        name = "newton"
    elif optimizer is None:
        output = run_fit_program(model_data, theta0, reml=bool(reml), options=NewtonOptions(max_iter=int(max_iter)))
        name = "newton"
    else:
        opts = (("max_iter", int(max_iter) if max_iter != 100 else 20000),)
        output = fit_program_optax(model_data, theta0, optimizer, reml=bool(reml), options=opts)
        name = "optax"
    fit = LmerResult(design, model_data, output, reml=reml, data_name=data_name, optimizer=name,
                     fit_options=dict(dtype=dtype, max_iter=max_iter, optimizer=optimizer))
    fit._offset_arg = None
    fit._dense = dense
    fit.plan = plan
    if verbose:
        print(f"{name} optimizer: {fit.n_iter} iterations, {'converged' if fit.converged else 'NOT converged'}, "
              f"criterion {fit.criterion:.6f}, {time.perf_counter() - started:.2f} s", flush=True)
    if warn:
        for msg in fit.messages:
            if msg.startswith("optimizer") or msg.startswith("boundary"):
                errors.warn(msg)
    return fit
