"""The optimizer's path as fixed-size arrays, carried through ``lax.while_loop`` (and ``vmap``).

Row ``i`` holds the iterate after ``i`` accepted steps (row 0: the start): theta, the
criterion ``f``, the largest component of the projected gradient

    pg = theta - max(theta - grad f, lower),  i.e.  pg_i = min(df/dtheta_i, theta_i - lower_i) where
    df/dtheta_i > 0 and theta_i is bounded, else df/dtheta_i,

(the quantity every optimizer's stopping rule looks at) and the step ``max_i |theta_i -
theta_i^prev|`` that led to it (row 0: NaN).  A loop of at most ``max_iter`` iterations
fills at most ``max_iter + 1`` rows; rows after the last iterate stay NaN, so a batch of
traits stacks its traces as one array.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class Trace(NamedTuple):
    theta: jnp.ndarray      # (rows, k)
    criterion: jnp.ndarray  # (rows,)
    grad_norm: jnp.ndarray  # (rows,) max |projected gradient|
    step: jnp.ndarray       # (rows,) max |theta - previous theta| (row 0: NaN)

    @staticmethod
    def empty(rows: int, k: int, dtype) -> "Trace":
        nan = jnp.full((rows,), jnp.nan, dtype)
        return Trace(jnp.full((rows, k), jnp.nan, dtype), nan, nan, nan)

    def record(self, i, theta, f, grad_norm, step) -> "Trace":
        """Row ``i`` set (an index past the end is dropped)."""
        return Trace(self.theta.at[i].set(theta, mode="drop"), self.criterion.at[i].set(f, mode="drop"),
                     self.grad_norm.at[i].set(grad_norm, mode="drop"), self.step.at[i].set(step, mode="drop"))


def projected_gradient(theta, g, lower):
    """``pg`` of the module docstring: 0 at a bound the gradient pushes against, and small near it
    (an iterate that approaches such a bound, as a first-order method's does, converges)."""
    bounded = jnp.isfinite(lower)
    gap = theta - jnp.where(bounded, lower, 0.0)
    return jnp.where(bounded & (g > 0), jnp.minimum(g, jnp.maximum(gap, 0.0)), g)
