"""The GLMM engine's fits on the host: the lanes of one model (a single fit, traits, replicates).

``glmm_layout`` / ``glmm_data`` turn a model (``fitting.model.Model`` with ``glmm`` options, read by
attribute only) into the static ``GlmmLayout`` and the arrays; ``glm_start`` is lme4's start (beta of
the GLM without random effects, by the same program with theta held at 0); ``fit_lanes`` runs the host
driver of the Newton kernel (``optim.host``) on ``programs.evaluate`` for every lane, padded to the
stack's size so that one compiled program serves every call.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ...errors import FormulaError
from ..status import CONVERGED, SEPARATION


class GlmmOutput(NamedTuple):
    """The output of a GLMM fit: the optimizer's, and the conditional modes at its optimum."""

    optim: object        # core.optim.newton.OptimResult, x = (theta, beta, log dispersion)
    u: np.ndarray        # (q,) spherical conditional modes
    eta: np.ndarray      # (n,) linear predictor at the modes
    L: np.ndarray        # Cholesky factor of H = I + J'WJ at the modes: (q / s, s, s) blocks for one term, else (q, q)
    hessian: np.ndarray  # (B, k, k) the Hessian of -2 log L at the optimum (the covariance of the estimates)


def glmm_layout(model):
    """The static ``GlmmLayout`` of the model."""
    from .families import Family
    from .layout import GlmmLayout

    design, opt = model.design, model.glmm
    for t in design.terms:
        if t.relmat is not None or t.cov not in ("us", "diag"):
            raise FormulaError(f"glmer: the term ({t.term}) has a relationship matrix or a structured covariance; "
                               "generalized models take lme4's unstructured and || terms for now")
    terms = [(len(t.columns), len(t.factor.levels), t.cov) for t in design.terms]
    return GlmmLayout.build(Family(opt.family, opt.link), terms, design.X.shape[1], opt.nagq)


def glmm_data(model, Y=None, W=None):
    """The ``GlmmData`` of the model with one lane per column of ``Y`` (default: the design's response)."""
    import jax.numpy as jnp

    from .layout import GlmmData, one_hot, slot_indices

    design, dt = model.design, model.dtype
    layout = model.prepared("glmm_layout", glmm_layout)
    Y = np.asarray(design.y if Y is None else Y, float)
    Y = Y[:, None] if Y.ndim == 1 else Y
    W = np.broadcast_to(np.asarray(design.weights, float)[:, None], Y.shape) if W is None else W
    W = np.where(np.isnan(Y), 0.0, W)
    idx = slot_indices(layout, [t.factor.codes for t in design.terms])
    z = np.concatenate([np.asarray(t.z, float) for t in design.terms], axis=1)
    return GlmmData(jnp.asarray(design.X, dt), jnp.asarray(np.nan_to_num(Y).T, dt), jnp.asarray(W.T, dt),
                    jnp.asarray(design.offset, dt), jnp.asarray(idx), jnp.asarray(z, dt),
                    one_hot(layout, [t.factor.codes for t in design.terms], dt))


def newton_options(max_iter: int):
    """The Newton kernel's options for GLMMs: the ray test of an unbounded LMM criterion is off."""
    from ..optim.newton import NewtonOptions

    return NewtonOptions(max_iter=int(max_iter), ray_min=np.inf)


def _run(model, data, x0, fixed=None, reflections=None, value_program: bool = False, max_iter: int | None = None):
    """The host driver of the Newton kernel on the lanes of ``data`` from ``x0`` (B, k)."""
    import jax.numpy as jnp

    from . import programs
    from ..optim.host import minimize_newton_host

    layout, dt = model.engine.layout(model), model.dtype

    B = x0.shape[0]
    modes = np.zeros((B, layout.q))        # each lane's last conditional mode: the next evaluation's start

    def padded(program, n_out):
        """``program`` on all B lanes (a fixed shape: one compiled program), lanes ``rows`` at ``z``, the
        others at their start; the outputs of ``rows``.  The conditional modes start from each lane's last."""
        def call(z, rows):
            full = np.array(x0, float)
            full[rows] = z
            out = program(layout, jnp.asarray(full, dt), data, jnp.asarray(modes, dt))
            if not n_out:
                return np.asarray(out)[rows]
            modes[rows] = np.asarray(out[3])[rows]
            return tuple(np.asarray(o)[rows] for o in out[:n_out])
        return call

    vgh = padded(programs.evaluate, 3)
    fun = padded(programs.value, 0) if value_program else None
    lower = np.broadcast_to(model.engine.lower(model), x0.shape)
    options = newton_options(model.max_iter if max_iter is None else max_iter)
    return minimize_newton_host(vgh, fun, x0, lower, options, reflections=reflections, fixed=fixed, dtype=dt)


START_ITER = 4   # Newton iterations of the GLM start: near its optimum, which the fit refines anyway


def glm_start(model, data) -> np.ndarray:
    """Per lane of ``data``: theta 1 / 0 (lme4's) with beta and the log dispersion of the GLM, fitted by the
    same program with theta held at 0 (where the modes are 0 and ``-2 log L`` is the GLM's deviance), for at
    most ``START_ITER`` Newton iterations."""
    structure = model.design.structure
    layout = model.engine.layout(model)
    B, t = data.y.shape[0], layout.ntheta
    x0 = np.zeros((B, layout.nparams))
    fixed = np.zeros_like(x0, bool)
    fixed[:, :t] = True
    res = _run(model, data, x0, fixed=fixed, max_iter=START_ITER)
    x = np.array(res.theta, float)
    x[:, :t] = structure.theta0()
    return x


def fit_lanes(model, data, x0: np.ndarray, reflections, value_program: bool = False):
    """Fit every lane of ``data`` from ``x0`` (B, k) by the host driver of the Newton kernel: a
    ``GlmmOutput`` with a leading lane axis."""
    import jax.numpy as jnp

    from . import programs
    from ..optim.newton import OptimResult

    res = _run(model, data, x0, reflections=reflections, value_program=value_program)
    layout = model.engine.layout(model)
    zeros = jnp.zeros((x0.shape[0], layout.q), model.dtype)
    _, _, H, u, eta, L = (np.asarray(v) for v in programs.evaluate(layout, jnp.asarray(res.theta, model.dtype), data,
                                                                  zeros))
    optim = OptimResult(*(np.asarray(v) for v in res))
    status = np.where((optim.status == CONVERGED) & separated(layout.family, eta, np.asarray(data.w)), SEPARATION,
                      optim.status).astype(np.int32)
    return GlmmOutput(optim._replace(status=status), u, eta, L, H)


SEPARATION_ETA = 30.0   # |eta| beyond it: a fitted probability within 1e-13 of 0 or 1


def separated(family, eta: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per lane (rows of ``eta``, ``w``): a binomial fit whose linear predictor reaches ``SEPARATION_ETA`` on a
    row of positive weight -- fitted probabilities numerically 0 or 1, the mark of complete or quasi-complete
    separation (a fixed effect escaping to infinity), which no optimum of a binomial GLMM has otherwise."""
    if family.name != "binomial":
        return np.zeros(eta.shape[0], bool)
    return np.any((np.abs(eta) > SEPARATION_ETA) & (w > 0), axis=1)
