"""The optimizer's path as fixed-size arrays, carried through ``lax.while_loop`` (and ``vmap``).

Row ``i`` holds the iterate after ``i`` accepted steps (row 0: the start): theta, the
criterion ``f``, the largest component of the projected gradient

    pg = theta - clip(theta - grad f, lower, upper)

(the quantity every optimizer's stopping rule looks at; defined once, for the Newton drivers and the
first-order path alike: ``kernel.projected_gradient`` and ``kernel.projected_gradient_norm``) and the
step ``max_i |theta_i - theta_i^prev|`` that led to it (row 0: NaN).  A loop of at most ``max_iter`` iterations
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

