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
    L: object            # mode.Factor of H = I + J'WJ at the modes (NumPy, a leading lane axis)
    hessian: np.ndarray  # (B, k, k) the Hessian of -2 log L at the optimum (the covariance of the estimates)
    beta: np.ndarray     # (B, p) the fixed effects (from x, or the joint mode for nAGQ = 0)
    beta_cov: object     # (B, p, p) their covariance for nAGQ = 0 (``joint.py``), else None (from ``hessian``)


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

    from .layout import GlmmData, slot_indices

    design, dt = model.design, model.dtype
    layout = model.prepared("glmm_layout", glmm_layout)
    Y = np.asarray(design.y if Y is None else Y, float)
    Y = Y[:, None] if Y.ndim == 1 else Y
    W = np.broadcast_to(np.asarray(design.weights, float)[:, None], Y.shape) if W is None else W
    W = np.where(np.isnan(Y), 0.0, W)
    idx = slot_indices(layout, [t.factor.codes for t in design.terms])
    z = np.concatenate([np.asarray(t.z, float) for t in design.terms], axis=1)
    return GlmmData(jnp.asarray(design.X, dt), jnp.asarray(np.nan_to_num(Y).T, dt), jnp.asarray(W.T, dt),
                    jnp.asarray(design.offset, dt), jnp.asarray(idx), jnp.asarray(z, dt))


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
    modes = np.zeros((B, layout.nmode))    # each lane's last conditional mode: the next evaluation's start

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


def glm_start(model, data) -> np.ndarray:
    """Per lane of ``data``: theta 1 / 0 (lme4's) and beta from R's ``glm.fit`` start -- ``mu`` at its
    ``mustart`` (binomial ``(w y + 0.5) / (w + 1)``, counts ``y + 0.1``, Gamma ``y``), the weighted least squares
    of ``g(mu) - offset`` on ``X`` -- on the host, with the log dispersion at 0 (NB2's r and Gamma's shape 1)."""
    from scipy.special import logit, ndtri

    layout = model.engine.layout(model)
    fam = layout.family
    X, off = np.asarray(data.X, float), np.asarray(data.offset, float)
    Y, W = np.asarray(data.y, float), np.asarray(data.w, float)
    if fam.name == "binomial":
        mu = (W * Y + 0.5) / (W + 1.0)
        link = {"logit": logit, "probit": ndtri, "cloglog": lambda m: np.log(-np.log1p(-m))}[fam.link]
        eta = link(mu)
    else:
        eta = np.log(Y + (0.1 if fam.name != "gamma" else 0.0) + (Y <= 0))
    x = np.zeros((Y.shape[0], layout.nparams))
    x[:, :layout.ntheta] = model.design.structure.theta0()
    if layout.nagq == 0:                    # beta is inside the joint mode
        return x
    sw = np.sqrt(W > 0)
    for j in range(Y.shape[0]):
        beta, *_ = np.linalg.lstsq(X * sw[j][:, None], (eta[j] - off) * sw[j], rcond=None)
        x[j, layout.ntheta:layout.ntheta + layout.nbeta] = beta
    return x


def fit_lanes(model, data, x0: np.ndarray, reflections, value_program: bool = False):
    """Fit every lane of ``data`` from ``x0`` (B, k) by the host driver of the Newton kernel: a
    ``GlmmOutput`` with a leading lane axis."""
    res = _run(model, data, x0, reflections=reflections, value_program=value_program)
    return _output(model, data, res, x0.shape[0])


def _output(model, data, res, size: int):
    """The ``GlmmOutput`` at the optimizer's points ``res.theta``: one more evaluation of each lane (in calls of
    ``size`` lanes, the last padded) for the Hessian, the modes, the linear predictor and the factor."""
    import jax
    import jax.numpy as jnp

    from . import programs
    from ..optim.lanes import map_padded
    from ..optim.newton import OptimResult

    layout, dt = model.engine.layout(model), model.dtype
    x = np.asarray(res.theta, float)
    Y, W = np.asarray(data.y), np.asarray(data.w)

    def final(take):
        lane_data = data._replace(y=jnp.asarray(Y[take]), w=jnp.asarray(W[take]))
        zeros = jnp.zeros((len(take), layout.nmode), dt)
        return jax.tree_util.tree_map(np.asarray, programs.evaluate(layout, jnp.asarray(x[take], dt), lane_data,
                                                                      zeros))

    _, _, H, v, eta, L, beta_cov = map_padded(final, x.shape[0], size)
    t, p = layout.ntheta, layout.nbeta
    beta = v[:, layout.q:] if layout.nagq == 0 else x[:, t:t + p]
    optim = OptimResult(*(np.asarray(o) for o in res))
    status = np.where((optim.status == CONVERGED) & separated(layout.family, eta, W), SEPARATION,
                      optim.status).astype(np.int32)
    return GlmmOutput(optim._replace(status=status), v[:, :layout.q], eta, L, H, beta,
                      beta_cov if layout.nagq == 0 else None)


SEPARATION_ETA = 30.0   # |eta| beyond it: a fitted probability within 1e-13 of 0 or 1


def separated(family, eta: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per lane (rows of ``eta``, ``w``): a binomial fit whose linear predictor reaches ``SEPARATION_ETA`` on a
    row of positive weight -- fitted probabilities numerically 0 or 1, the mark of complete or quasi-complete
    separation (a fixed effect escaping to infinity), which no optimum of a binomial GLMM has otherwise."""
    if family.name != "binomial":
        return np.zeros(eta.shape[0], bool)
    return np.any((np.abs(eta) > SEPARATION_ETA) & (w > 0), axis=1)
