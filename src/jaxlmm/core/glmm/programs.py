"""The compiled programs of the GLMM engine, for a stack of B problems (lanes).

Each lane has its own parameter vector and response (``y``, ``w``: a trait of a batch, a bootstrap
replicate, or the one response of a single fit); the design (``X``, offset, slots) is shared.  The
programs hold no optimizer loop: the host driver of the Newton kernel (``optim.host``) calls

- ``evaluate(layout, x, data)``: ``-2 log L`` per lane with its gradient and Hessian (forward mode over
  the reverse-mode gradient; the conditional mode is solved once per lane and differentiated implicitly,
  ``mode.py``), and at the same point the modes ``u``, the linear predictor and the Cholesky factor of
  ``H`` (the conditional covariances of ``u``, formed on the host): one program serves the start (the GLM,
  theta held at 0), every iteration, the line search and the estimates of a single fit;
- ``value(layout, x, data)``: ``-2 log L`` alone (the line search of a batch, where lanes are many).

On a CPU both compile with XLA's backend optimizations off (``FAST_COMPILE``): a user's first fit of a
new model pays the compile, and these small programs run fast enough without them.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ..pls.programs import CPU_COMPILER_OPTIONS
from .layout import GlmmData, GlmmLayout
from .mode import factor, gradient_and_weights, linear_predictor, mode
from .objective import objective

LANES = GlmmData(X=None, y=0, w=0, offset=None, idx=None, z=None)   # vmap axes: per-lane responses
FAST_COMPILE = {**CPU_COMPILER_OPTIONS, "xla_backend_optimization_level": 0}


def _evaluate_one(layout: GlmmLayout, x, data: GlmmData):
    f = lambda v: objective(layout, v, data)
    value_and_grad = jax.value_and_grad(f)

    def tangent(v):
        (fx, gx), (_, hv) = jax.jvp(value_and_grad, (x,), (v,))
        return fx, gx, hv

    fx, gx, H = jax.vmap(tangent, out_axes=(None, None, 0))(jnp.eye(x.shape[0], dtype=x.dtype))
    u = mode(layout, x, data, jnp.zeros(layout.q, x.dtype))
    _, info, a = gradient_and_weights(layout, x, data, u)
    return fx, gx, 0.5 * (H + H.T), u, linear_predictor(layout, x, data, u), factor(layout, info, a, data.idx).L


def _options():
    return FAST_COMPILE if jax.default_backend() == "cpu" else None


_PROGRAMS: dict = {}


def _program(name: str):
    if name not in _PROGRAMS:
        fn = {"evaluate": lambda layout, x, data: jax.vmap(lambda xi, di: _evaluate_one(layout, xi, di),
                                                         in_axes=(0, LANES))(x, data),
              "value": lambda layout, x, data: jax.vmap(lambda xi, di: objective(layout, xi, di),
                                                      in_axes=(0, LANES))(x, data)}[name]
        _PROGRAMS[name] = jax.jit(fn, static_argnums=0, compiler_options=_options())
    return _PROGRAMS[name]


def evaluate(layout: GlmmLayout, x, data: GlmmData):
    """``(f, g, H, u, eta, L)`` per lane (module docstring)."""
    return _program("evaluate")(layout, x, data)


def value(layout: GlmmLayout, x, data: GlmmData):
    """``-2 log L`` per lane."""
    return _program("value")(layout, x, data)
