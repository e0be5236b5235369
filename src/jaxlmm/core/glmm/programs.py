"""The compiled programs of the GLMM engine, for a stack of B problems (lanes).

Each lane has its own parameter vector and response (``y``, ``w``: a trait of a batch, a bootstrap
replicate, or the one response of a single fit); the design (``X``, offset, slots) is shared.  The
programs hold no optimizer loop: the host driver of the Newton kernel (``optim.host``) calls

- ``evaluate(layout, x, data)``: ``-2 log L`` per lane with its gradient and Hessian (forward mode over
  the reverse-mode gradient; the conditional mode is solved once per lane and differentiated implicitly,
  ``mode.py``), and at the same point the modes ``u``, the linear predictor and the blocked Cholesky factor
  of ``H`` (``mode.Factor``) (the conditional covariances of ``u``, formed on the host): one program serves the start (the GLM,
  theta held at 0), every iteration, the line search and the estimates of a single fit;
- ``value(layout, x, data)``: ``-2 log L`` alone (the line search of a batch, where lanes are many).

On a CPU, programs of a few lanes compile with XLA's backend optimizations off (``FAST_COMPILE``): a
user's first fit of a new model pays the compile, and one lane runs fast enough without them; a batch
keeps them (its run time is many lanes').
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..pls.programs import CPU_COMPILER_OPTIONS
from .layout import GlmmData, GlmmLayout
from .joint import beta_covariance, joint_objective, joint_objective_and_state
from .objective import objective, objective_and_state

LANES = GlmmData(X=None, y=0, w=0, offset=None, idx=None, z=None)   # vmap axes: per-lane responses
FAST_COMPILE = {**CPU_COMPILER_OPTIONS, "xla_backend_optimization_level": 0}


def _evaluate_one(layout: GlmmLayout, x, data: GlmmData, u0):
    state_fn = joint_objective_and_state if layout.nagq == 0 else objective_and_state
    value_and_grad = jax.value_and_grad(lambda v: state_fn(layout, v, data, u0), has_aux=True)

    def tangent(t):
        ((fx, state), gx), (_, hv) = jax.jvp(value_and_grad, (x,), (t,))
        return fx, state, gx, hv

    # the mode, the linear predictor and the factor come with the objective's own evaluation (no second solve)
    fx, (v, eta, F), gx, H = jax.vmap(tangent, out_axes=(None, None, None, 0))(jnp.eye(x.shape[0], dtype=x.dtype))
    if layout.nagq == 0:
        beta_cov = beta_covariance(layout, x, data, v)
    else:
        beta_cov = jnp.zeros((layout.nbeta, layout.nbeta), x.dtype)
    return fx, gx, 0.5 * (H + H.T), v, eta, F, beta_cov


def _value_one(layout: GlmmLayout, x, data: GlmmData, u0):
    return joint_objective(layout, x, data, u0) if layout.nagq == 0 else objective(layout, x, data, u0)


def _options(lanes: int):
    """``FAST_COMPILE`` for a few lanes on a CPU (compile time dominates), XLA's optimizations for batches."""
    if jax.default_backend() != "cpu":
        return None
    return FAST_COMPILE if lanes <= FAST_MAX_LANES else CPU_COMPILER_OPTIONS


FAST_MAX_LANES = 8
_PROGRAMS: dict = {}


def _program(name: str, lanes: int):
    key = (name, lanes <= FAST_MAX_LANES)
    if key not in _PROGRAMS:
        fn = {"evaluate": lambda layout, x, data, u0: jax.vmap(lambda xi, di, ui: _evaluate_one(layout, xi, di, ui),
                                                             in_axes=(0, LANES, 0))(x, data, u0),
              "value": lambda layout, x, data, u0: jax.vmap(lambda xi, di, ui: _value_one(layout, xi, di, ui),
                                                          in_axes=(0, LANES, 0))(x, data, u0)}[name]
        _PROGRAMS[key] = jax.jit(fn, static_argnums=0, compiler_options=_options(lanes))
    return _PROGRAMS[key]


def evaluate(layout: GlmmLayout, x, data: GlmmData, u0=None):
    """``(f, g, H, v, eta, F, beta_cov)`` per lane (module docstring): ``v`` the mode (``u``; ``(u, beta)`` for
    ``nagq = 0``, whose ``beta_cov`` is the covariance of beta, else zeros); ``u0`` (B, nmode): where each lane's
    mode starts (default 0; the result does not depend on it beyond the mode's tolerance)."""
    u0 = jnp.zeros((x.shape[0], layout.nmode), x.dtype) if u0 is None else u0
    return _program("evaluate", x.shape[0])(layout, x, data, u0)


def value(layout: GlmmLayout, x, data: GlmmData, u0=None):
    """``-2 log L`` per lane."""
    u0 = jnp.zeros((x.shape[0], layout.nmode), x.dtype) if u0 is None else u0
    return _program("value", x.shape[0])(layout, x, data, u0)
