"""The multivariate engine's compiled programs and its fit by the host driver of the Newton kernel.

``evaluate`` gives the criterion, its gradient and Hessian (exact, by autodiff through the d x d
factorizations and ``J``'s); ``estimates_program`` the fixed effects, their covariance and ``P r*``;
``parameter_jacobian`` the derivatives of ``vech(Sigma_g), vech(Sigma_e)`` (for the SEs by the delta
method).  ``fit`` minimises the criterion from ``x0`` with the kernel's bounds and reflections.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..optim.newton import NewtonOptions, value_grad_hessian
from .criterion import Spec, criterion, estimates


@partial(jax.jit, static_argnames=("spec",))
def _evaluate(params, data, spec: Spec, reml):
    return value_grad_hessian(lambda x: criterion(x, data, spec, reml), params, sequential=True)


def evaluate(params, data, spec: Spec, reml: bool):
    """``(f, g, H)`` of the criterion at ``params``; the Hessian's columns one by one (``J``'s factor may be a
    LAPACK call, which must get no batch axis: ``linalg/factor.py``).  ``reml`` is traced: the REML and the ML
    fit of one model share the compiled program."""
    return _evaluate(params, data, spec, jnp.asarray(bool(reml)))


@partial(jax.jit, static_argnames=("spec",))
def estimates_program(params, data, spec: Spec):
    return estimates(params, data, spec)


def vech(S):
    """The lower triangle of ``S``, column by column."""
    d = S.shape[0]
    rows, cols = np.tril_indices(d)
    order = np.lexsort((rows, cols))
    return S[rows[order], cols[order]]


@partial(jax.jit, static_argnames=("spec",))
def parameter_jacobian(params, spec: Spec):
    """``d (vech Sigma_g, vech Sigma_e) / d params``."""
    def both(x):
        Sg, Se = spec.matrices(x)
        return jnp.concatenate([vech(Sg), vech(Se)])

    return jax.jacfwd(both)(params)


def fit(data, spec: Spec, reml: bool, x0: np.ndarray, lower: np.ndarray, reflections: np.ndarray,
        max_iter: int, dtype):
    """The host driver of the Newton kernel from ``x0`` (k,): an ``OptimResult`` with one lane."""
    from ..optim.host import minimize_newton_host

    def vgh(z, rows):
        out = [evaluate(jnp.asarray(zi, dtype), data, spec, reml) for zi in np.asarray(z)]
        return tuple(np.stack([np.asarray(o[i]) for o in out]) for i in range(3))


    options = NewtonOptions(max_iter=int(max_iter), ray_min=np.inf)
    return minimize_newton_host(vgh, None, np.asarray(x0, float)[None], lower[None], options,
                                reflections=reflections[None], dtype=dtype)
