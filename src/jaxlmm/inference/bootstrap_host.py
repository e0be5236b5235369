"""Bootstrap replicates of an lme4-type model: the host-driven Newton loop over chunks of replicates.

Replicate b's simulated response ``y*_b`` gives its own cross-products (one program for a
chunk of replicates, ``batch_cross_products``).  Each Newton iteration then evaluates,
for every replicate of the chunk at once, the profiled criterion's value, gradient and
Hessian in theta (``optimize.value_grad_hessian`` of ``deviance.profiled_deviance``)
together with the estimates at the same theta (``solution.estimates``: beta, sigma),
in one vmapped program, and the projected Newton method of ``newton_host`` -- the same
method, tolerances and statuses as every fit -- runs on the host, evaluating only the
replicates still running, in calls of ``LANES``.  The programs hold no loop and compile in
well under a second, where the vmapped while-loop program of ``core.fit.fit_batch_program``
took two; warm, sleepstudy's 1000 replicates take about 0.3 s on a 2-core CPU (the batch
program: 0.35 s).  ``bootstrap(func=...)`` (which needs a ``BatchResult``),
structured models, models fitted with an optax/optimistix optimizer and large dense
problems keep their own paths.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd


def _evaluate(theta, cp, reml: bool):
    from ..core.pls.criterion import profiled_deviance
    from ..core.optim.newton import value_grad_hessian
    from ..core.pls.solve import estimates

    import jax

    def one(t, c):
        return value_grad_hessian(partial(profiled_deviance, cp=c, reml=reml), t), estimates(t, c, reml)

    return jax.vmap(one)(theta, cp)


def _cross_products(data, Y, W):
    from ..core.pls.batch_crossprod import batch_cross_products

    return batch_cross_products(data, Y, W)


_PROGRAMS: dict = {}


def _program(name: str):
    """``name`` ("evaluate", "cross_products") jitted (on a CPU with XLA's classic emitters, as the batch
    program: the fusion emitters compile these programs three times more slowly)."""
    import jax

    from ..core.pls.programs import CPU_COMPILER_OPTIONS

    key = (name, jax.default_backend())
    if key not in _PROGRAMS:
        fn = {"evaluate": _evaluate, "cross_products": _cross_products}[name]
        opts = CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
        _PROGRAMS[key] = jax.jit(fn, static_argnames=("reml",) if name == "evaluate" else (), compiler_options=opts)
    return _PROGRAMS[key]


LANES = 128  # replicates per program call: the problems still running are evaluated in calls of this size


def bootstrap_host(fit, Y: np.ndarray, chunk_size: int | None = None) -> pd.DataFrame:
    """The replicate table (``bootstrap.replicate_statistics``) of the simulated responses ``Y`` (n, B)."""
    import jax
    import jax.numpy as jnp

    from ..core.optim.lanes import map_padded
    from ..core.optim.host import minimize_newton_host
    from ..core.optim.newton import NewtonOptions
    from ..model.design import bucket
    from ..model.memory import available_bytes, batch_bytes_per_trait
    from .replicates import replicate_statistics

    model = fit.model
    design = model.design
    structure = design.structure
    dtype = np.dtype(model.dtype)
    reml = bool(model.reml)
    B = Y.shape[1]
    fits = available_bytes(None) // 4 // max(batch_bytes_per_trait(design, dtype.itemsize), 1)
    lanes = int(chunk_size or min(LANES, max(1, fits)))
    lanes = max(1, min(lanes, bucket(B)))
    base = design.model_data(dtype, y=np.zeros(design.nobs), weights=design.weights)
    w = np.tile(design.pad_rows(np.asarray(design.weights, float)), (lanes, 1)).astype(dtype)

    def cross_products(take):
        Yc = np.stack([design.pad_rows(Y[:, j]) for j in take]).astype(dtype)
        return _program("cross_products")(base, jnp.asarray(Yc), jnp.asarray(w))

    cp_all = map_padded(cross_products, B, lanes)
    evaluate = _program("evaluate")

    def run(x, rows):
        """``evaluate`` of the replicates ``rows`` at ``x`` (their rows), in calls of ``lanes``."""
        def call(sel):
            cp = jax.tree_util.tree_map(lambda a: a[rows[sel]], cp_all)
            return evaluate(jnp.asarray(x[sel], dtype), cp, reml=reml)

        return map_padded(call, len(rows), lanes)

    def vgh(x, rows):
        return run(x, rows)[0]

    theta0 = np.maximum(np.asarray(fit.theta, float), structure.lower_bounds())
    res = minimize_newton_host(vgh, None, np.tile(theta0, (B, 1)), structure.lower_bounds(),
                               NewtonOptions(max_iter=model.max_iter), structure.reflections(), dtype=dtype)
    theta, status = np.asarray(res.theta), np.asarray(res.status)
    est = run(theta, np.arange(B))[1]
    lambdas = structure.lambdas_stacked(theta)
    table = replicate_statistics(design, pd.DataFrame(np.asarray(est.beta), columns=list(design.fixef_names)),
                                 np.asarray(est.sigma, float), lambdas)
    ok = status == 0
    table = table.loc[ok].reset_index(drop=True)
    table.attrs["failed"] = int((~ok).sum())
    return table
