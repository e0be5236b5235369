"""lme4's models -- unstructured and diagonal terms, relationship matrices, prior weights -- on the
profiled criterion of lme4 (theta relative to sigma; beta and sigma profiled out): two engines.

- ``DenseEngine``: small models.  The penalized system ``[L'Z'ZL + I, ...; X'X ...]`` is one dense
  matrix padded to a size bucket (``core/dense/layout.py``), its block log-determinants have closed-form
  gradients and Hessians (``core/dense/system.py``), and the host driver of the Newton kernel runs on them
  (``core/dense/programs.py``): every model of one bucket shares the same compiled programs.
- ``BlockedEngine``: larger models.  The cross-products are blocked by the first term's levels (its
  diagonal blocks), the rest dense or sparse (``core/pls/crossprod.py``, ``core/schur*.py``); the whole fit
  is one jitted program (``core/pls/programs.py``) with the in-jit driver of the Newton kernel, or an optax /
  optimistix optimizer.  With a large dense part (``large``) the Hessian is formed column by column,
  and the line search raises a Levenberg-Marquardt damping and keeps an interior floor.

Both give the same criterion; the selector (``select.py``) chooses by size and options.  The parts of
Satterthwaite's and Kenward-Roger's formulas come from each engine's own programs
(``inference/ddf.py``, ``core/pls/ddf.py``).
"""

from __future__ import annotations

import numpy as np

from .base import Engine


class _Lme4Engine(Engine):
    """What both lme4 engines share: the parameters, the batch path, the blocked programs' ddf parts."""

    def __init__(self, large: bool = False):
        self.large = bool(large)    # the blocked structure's dense part is large (core/linalg.RECURSIVE_MAX)

    def __repr__(self) -> str:
        return f"<jaxlmm engine {self.name!r}{' (large dense part)' if self.large else ''}>"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.large == self.large

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.large))

    def newton_options(self, max_iter: int, trace: bool = False):
        """The Newton kernel's options for this engine's programs (single fits and batches)."""
        from ..core.optim.newton import NewtonOptions

        options = NewtonOptions(max_iter=int(max_iter), trace=bool(trace))
        if self.large:      # a costly Hessian, cheap criterion values (core/optim/newton.py)
            options = options._replace(sequential_hessian=True, damping="lm", interior=0.1)
        return options

    def check_memory(self, model, verbose: bool) -> None:
        from ..model.memory import check_memory

        itemsize = np.dtype(model.dtype).itemsize
        check_memory(model.design, itemsize, sparse_ok=True)
        plan = model.plan
        check_memory(model.design, itemsize, need=plan.bytes_peak)
        if verbose:
            print(plan, flush=True)

    def _block_objective(self, model, theta):
        import jax.numpy as jnp

        return _jitted("block")(jnp.asarray(theta, model.dtype), model.cross_products, reml=model.reml)

    def satterthwaite_parts(self, fit):
        from ..inference.ddf import satterthwaite_block

        return satterthwaite_block(fit)

    def kenward_roger_parts(self, fit):
        from ..inference.ddf import kenward_roger_block

        return kenward_roger_block(fit if fit.reml else fit.refit_reml())

    def bootstrap(self, fit, Y, chunk_size):
        """Replicates as lanes of the host Newton loop on the blocked programs (``bootstrap_host``)."""
        model = fit.model
        if self.large or model.optimizer is not None or model.trace:
            return None
        from ..inference.bootstrap_host import bootstrap_host

        return bootstrap_host(fit, Y, chunk_size)


class DenseEngine(_Lme4Engine):
    """Small models on the dense programs shared by size bucket (module docstring)."""

    name = "dense"
    small = True

    def objective(self, model, theta):
        import jax.numpy as jnp

        layout, system = model.dense
        theta = jnp.asarray(theta, model.dtype)
        pad = jnp.zeros(theta.shape[:-1] + (layout.k_pad - layout.k,), theta.dtype)
        return _jitted("dense")(jnp.concatenate([theta, pad], axis=-1), system, reml=model.reml)

    def fit(self, model, start):
        from ..core.linalg.threads import small_blas

        with small_blas():
            return dense_fit(model, self.start(model, start)), "newton"

    def satterthwaite_parts(self, fit):
        from ..inference.ddf import satterthwaite_dense

        return satterthwaite_dense(fit)

    def kenward_roger_parts(self, fit):
        from ..inference.ddf import kenward_roger_dense

        return kenward_roger_dense(fit if fit.reml else fit.refit_reml())


class BlockedEngine(_Lme4Engine):
    """Larger models, and any model fitted with an optax/optimistix optimizer or a trace (module docstring)."""

    name = "blocked"

    def objective(self, model, theta):
        return self._block_objective(model, theta)

    def fit(self, model, start):
        import jax.numpy as jnp

        from ..core.pls.programs import fit_program, fit_program_optax, run_fit_program

        theta0 = jnp.asarray(self.start(model, start), model.dtype)
        if model.optimizer is not None:
            return (fit_program_optax(model.data, theta0, model.optimizer, reml=model.reml,
                                      options=model.first_order_options), model.optimizer_name)
        options = self.newton_options(model.max_iter, model.trace)
        program = fit_program if model.trace else run_fit_program
        return program(model.data, theta0, reml=model.reml, options=options), "newton"


def dense_fit(model, theta0: np.ndarray):
    """The dense engine's fit: the host driver of the Newton kernel on the dense programs
    (``core.dense_fit.fit_dense``), the output in the blocked engine's layout (``core.fit.FitOutput``)."""
    from ..core.dense.programs import fit_dense
    from ..core.dense.layout import derivative_rows, per_term_solution
    from ..core.pls.programs import FitOutput
    from ..core.optim.newton import NewtonOptions, OptimResult

    design, data = model.design, model.data
    structure = data.structure
    layout, system = model.dense
    transforms = [None if t.relmat is None else t.relmat.factor for t in design.terms]
    dt = np.dtype(model.dtype)
    lower = layout.pad_theta(structure.lower_bounds()).astype(dt)
    reflections = layout.pad_reflections(structure.reflections()).astype(dt)
    k = layout.k
    res, sol = fit_dense(system, derivative_rows(system.lam_index, layout.k_pad), layout.pad_theta(theta0), lower,
                         reflections, k, reml=model.reml, options=NewtonOptions(max_iter=model.max_iter))
    optim = OptimResult(res.theta[:k], res.fun, res.grad[:k], res.n_iter, res.status, res.step)
    solution = per_term_solution(sol, layout, [t.nlevels for t in structure.terms], transforms)
    eta = np.asarray(data.offset) + np.asarray(data.X) @ solution.beta
    for zk, rk, bk in zip(data.z, data.refs, solution.b):
        eta = eta + np.sum(np.asarray(zk) * bk[np.asarray(rk)], axis=1)
    return FitOutput(optim, solution, eta.astype(dt))


def _jitted(name: str):
    """The compiled objective programs (one each, shared by all models)."""
    import jax

    if name not in _JITTED:
        from ..core.dense.system import dense_deviance
        from ..core.pls.criterion import profiled_deviance

        fn = {"dense": dense_deviance, "block": profiled_deviance}[name]
        _JITTED[name] = jax.jit(fn, static_argnames="reml")
    return _JITTED[name]


_JITTED: dict = {}
