"""``FitFunction``: a design's whole fit as a pure JAX function ``f(y, weights=None)`` (``core/pls/implicit.py``).

The design (formula, data, missing-row rule, levels, relationship matrices) is fixed when the function
is built, on the host; ``f`` then maps the response vector to a ``FitState`` (theta, beta, sigma, BLUPs,
criterion, fitted values, convergence) inside JAX, and derivatives of any function of the state come
from the implicit function theorem at theta-hat.

Rows: ``y`` has one value per row the fit keeps (the rows of ``data`` after ``lmer``'s missing-value
rule, in data order) or one per row of ``data`` (then the dropped rows' values are ignored, NaN allowed
there).  ``weights`` are lme4's prior weights; ``case_weights`` scale each row's share of the likelihood
(0 removes it exactly; the smooth path from 1 to 0 is what ``influence`` differentiates).
``relmat={"id": K}`` replaces a relationship matrix by ``K`` given as a JAX array on the levels of the
matrix passed when building (e.g. ``K(l) = exp(-D / l)``): its factor ``T = chol(K)`` is then formed in
JAX, so derivatives with respect to the kernel's parameters flow through it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import DataError, JaxlmmError, count_argument


def _is_traced(values) -> bool:
    import jax

    return any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(values))


class FitFunction:
    """``f(y, weights=None, *, case_weights=None, relmat=None) -> FitState`` for one design (module docstring).

    Called with concrete arrays it runs one compiled program (float64, whatever the caller's JAX
    setting) and returns NumPy arrays; inside ``jax.jit``/``grad``/``jacfwd``/``vmap`` it is the pure
    function, which needs JAX's 64-bit mode on for a float64 model.  Jit the transformed function
    with ``jax.jit(g, compiler_options=f.compiler_options)`` for the fastest compile on a CPU.

    **Compile time.**  ``f(y)`` with concrete arrays compiles one program per ``FitFunction`` on its
    first call and reuses it.  A transformation (``jax.grad``, ``jacfwd``, ``jacrev``, ``vmap``) of a
    function of ``f`` traces the whole fit again -- the Newton optimizer's loop, the closed-form
    solve and the implicit derivative with the exact Hessian of the criterion -- and XLA compiles that
    as a new, larger program.  Measured on sleepstudy (``Reaction ~ Days + (Days | Subject)``, 180
    rows) on a shared 2-core CPU machine under a load of 3 to 6 (two runs; the spread is the load),
    ``g = lambda y: f(y).theta.sum()``:

    * ``f(f.y)``, first call: 1.8-2.6 s (later calls 1-2 ms);
    * ``gj = jax.jit(jax.grad(g), compiler_options=f.compiler_options)``, first call: 3-5 s (tracing
      1.1-1.4 s, XLA compiling 3.4-3.8 s); later calls of the same ``gj`` with a new ``y``: 0.03-0.07 s;
    * the same without ``compiler_options``: 8 s to the first result;
    * un-jitted ``jax.grad(g)(y)``: 20-31 s the first time and about 4 s on *every* later call (it
      traces anew on each call and dispatches its pieces one by one) -- the slowest way, most likely
      the 40 s that was reported (not reproduced exactly here);
    * ``jax.jit(jax.jacfwd(lambda y: f(y).theta), compiler_options=f.compiler_options)``: 4-6 s.

    To keep it small: wrap the transformation in ``jax.jit`` **once** (with ``f.compiler_options``)
    and call that same object for every new ``y`` -- a new ``jax.jit(jax.grad(...))`` (say, inside a
    loop) compiles again (3-4 s each time); ``jax.vmap`` over many responses instead of a Python loop;
    ``jaxlmm.enable_compilation_cache()`` (JAX's process-wide persistent cache) keeps compiled
    programs for later processes.  Models with a dense part (``(1 | batch/cask)``) or more random
    effects compile longer.
    """

    def __init__(self, design, reml: bool = True, dtype=None, start=None, max_iter: int = 100, row_positions=None):
        from .._x64 import working_dtype
        from ..core.pls.programs import CPU_COMPILER_OPTIONS
        from ..core.optim.newton import NewtonOptions

        self.design = dataclasses.replace(design, pad=False)   # exact shapes: BLUPs per level as ranef
        self.reml = bool(reml)
        self.dtype = working_dtype(dtype)
        self.data = self.design.model_data(self.dtype)
        if self.data.sparse is not None:
            raise JaxlmmError("fit_function does not support designs whose cross block is stored sparse "
                              "(large crossed designs) yet")
        theta0 = self.design.structure.theta0() if start is None else np.asarray(start, float)
        if theta0.shape != (self.design.structure.ntheta,):
            raise DataError(f"start must have {self.design.structure.ntheta} values, got shape {theta0.shape}")
        self.theta0 = theta0.astype(self.dtype)
        self.options = NewtonOptions(max_iter=count_argument(max_iter, "max_iter"))
        self.row_positions = row_positions       # (positions of the kept rows, rows of data), or None
        self.compiler_options = CPU_COMPILER_OPTIONS
        self._compiled = None

    # ----------------------------------------------------------------- names
    @property
    def y(self) -> np.ndarray:
        """The formula's response on the rows of the fit (the default data of ``f``)."""
        return np.asarray(self.design.y, float)

    @property
    def nobs(self) -> int:
        return self.design.nobs

    @property
    def theta_names(self) -> list[str]:
        from .naming import theta_names

        return [n for t in self.design.terms for n in theta_names(t.group, t.columns, t.cov)]

    @property
    def fixef_names(self) -> list[str]:
        return list(self.design.fixef_names)

    @property
    def ranef_levels(self) -> dict[str, list[str]]:
        """The levels of each term's BLUPs ``b[k]`` (rows), by grouping factor."""
        return {t.group: list(t.factor.levels) for t in self.design.terms}

    def relmat_levels(self, group: str) -> tuple[str, ...]:
        """The levels on which ``relmat={group: K}`` takes K (those of the matrix given when building)."""
        return self._relmat_term(group)[1].relmat.full.levels

    # ----------------------------------------------------------------- the function
    def __call__(self, y, weights=None, *, case_weights=None, relmat=None):
        import jax

        from ..core.pls.implicit import fit_state

        traced = _is_traced((y, weights, case_weights, relmat))
        if traced and self.dtype is jax.numpy.float64 and not jax.config.jax_enable_x64:
            raise JaxlmmError("this fit function computes in float64, but JAX's 64-bit mode is off in the program "
                              "transforming it: turn it on with jax.config.update('jax_enable_x64', True) or run "
                              "the transformation inside `with jax.enable_x64(True):`")
        if traced:
            return fit_state(self.inputs(y, weights, case_weights, relmat), self.data, self.theta0, self.reml,
                             self.options)
        with jax.enable_x64(True):
            if self._compiled is None:
                run = lambda inputs: fit_state(inputs, self.data, self.theta0, self.reml, self.options)  # noqa: E731
                self._compiled = jax.jit(run, compiler_options=self.compiler_options)
            out = self._compiled(self.inputs(y, weights, case_weights, relmat))
            return jax.tree_util.tree_map(np.asarray, out)

    # ----------------------------------------------------------------- checked inputs
    def _vector(self, values, what: str, nonnegative: bool = False):
        """``values`` as a float vector of the kept rows: an error naming ``what`` on a bad length or dtype,
        and (concrete values only) on a missing, infinite or (``nonnegative``) negative value."""
        import jax.numpy as jnp

        import jax

        v = values if isinstance(values, (jax.Array, jax.core.Tracer)) else np.asarray(values)
        if not jnp.issubdtype(v.dtype, jnp.floating):
            raise DataError(f"{what} must be a floating-point array (e.g. float64), got dtype {v.dtype}: "
                            "derivatives with respect to integers are not defined")
        n_data = None if self.row_positions is None else self.row_positions[1]
        if v.ndim != 1 or v.shape[0] not in (self.nobs, n_data):
            allowed = f"{self.nobs}" + ("" if n_data in (None, self.nobs) else f" (or {n_data}, the rows of data)")
            raise DataError(f"{what} must be a vector of {allowed} values, one per row of the fit; got shape {v.shape}")
        if v.shape[0] != self.nobs:
            v = v[self.row_positions[0]]
        if not _is_traced(v):
            values = np.asarray(v)
            if not np.all(np.isfinite(values)):
                bad = np.flatnonzero(~np.isfinite(values))
                raise DataError(f"{what} has {len(bad)} missing or infinite value(s) in rows the fit keeps "
                                f"(first at kept row {bad[0]}); give rows to leave out case weight 0")
            if nonnegative and np.any(values < 0):
                raise DataError(f"{what} must be non-negative; kept row {int(np.argmax(values < 0))} is "
                                f"{values[values < 0][0]}")
        return jnp.asarray(v, self.dtype)

    def inputs(self, y, weights=None, case_weights=None, relmat=None):
        """The checked ``core.implicit.FitInputs`` of a call ``f(y, weights, ...)``."""
        import jax.numpy as jnp

        from ..core.pls.implicit import FitInputs

        y = self._vector(y, "y")
        w = (jnp.asarray(self.design.weights, self.dtype) if weights is None
             else self._vector(weights, "weights", nonnegative=True))
        c = (jnp.ones(self.nobs, self.dtype) if case_weights is None
             else self._vector(case_weights, "case_weights", nonnegative=True))
        if not _is_traced((w, c)):
            self._check_rows_left(np.asarray(w) * np.asarray(c) > 0)
        return FitInputs(y, w, c, self._transforms(relmat))

    def _check_rows_left(self, kept: np.ndarray) -> None:
        """Weights or case weights that remove rows (0) must leave a model ``lmer`` would fit on those rows:
        lme4's checks of the levels (shared with ``lmer``: ``data_checks._check_levels``), and fixed effects
        that keep full rank (``lmer`` would drop an aliased column; this function's shape is fixed)."""
        if kept.all():
            return
        from .aliasing import aliased_columns
        from .data_checks import _check_levels

        context = " on the rows the weights and case weights keep"
        n = int(kept.sum())
        if n == 0:
            raise DataError("the weights and case weights remove every row")
        _check_levels(self.design.terms, n, kept, context)
        X = np.asarray(self.design.X)[kept]
        if X.shape[1]:
            aliased = aliased_columns(X)
            if aliased.any():
                names = [nm for nm, a in zip(self.design.fixef_names, aliased) if a]
                raise DataError(f"the fixed-effects matrix{context} is rank deficient (column"
                                f"{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}); lmer on those "
                                "rows would drop them, but a fit function's coefficients are fixed when it is built")

    def _relmat_term(self, group: str):
        for k, t in enumerate(self.design.terms):
            if t.group == group and t.relmat is not None:
                return k, t
        names = [t.group for t in self.design.terms if t.relmat is not None]
        raise DataError(f"relmat names {group!r} but the model's relationship-matrix terms are "
                        f"{', '.join(map(repr, names)) or 'none'}")

    def _transforms(self, relmat):
        import jax.numpy as jnp

        from .relmat import relmat_argument

        transforms = list(self.data.transforms)
        for group, K in (relmat_argument(relmat) or {}).items():
            k, t = self._relmat_term(group)
            full = t.relmat.full.levels
            index = {lv: i for i, lv in enumerate(full)}
            pos = np.asarray([index[lv] for lv in t.factor.levels])
            K = jnp.asarray(K, self.dtype) if hasattr(K, "shape") else jnp.asarray(np.asarray(K), self.dtype)
            if K.shape != (len(full), len(full)):
                raise DataError(f"relationship matrix for {group!r} must be {len(full)} x {len(full)} (the levels "
                                f"of the matrix given when building), got shape {K.shape}")
            transforms[k] = jnp.linalg.cholesky(K[pos][:, pos])
        return tuple(transforms)
