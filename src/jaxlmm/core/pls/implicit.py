"""The fitted model as a pure JAX function of the data, differentiated through the optimum.

For one design, the fit maps the response ``y`` (and the prior weights ``w``, case weights ``c`` and
relationship-matrix factors ``T``; together ``p``) to the estimates.  theta-hat minimizes the profiled
criterion ``d(theta; p)`` (``pls/criterion.py``) subject to ``theta >= lower``; beta, sigma and the BLUPs
then follow from theta-hat in closed form (``pls/solve.py``).

**Implicit differentiation.**  At a minimum with free set F (the components not held at their bound)
the gradient ``g(theta, p) = d d / d theta`` vanishes on F.  Differentiating ``g_F(theta-hat(p), p) = 0``
(implicit function theorem):

    d theta_F = -H_FF^{-1} (d g_F / d p)[dp],    d theta_A = 0   on the active set A,

with ``H = d^2 d / d theta^2`` the exact Hessian at theta-hat.  This is the derivative of the
constrained optimum: a component at its bound (a variance component at 0) stays there to first order.
``pin_theta`` attaches that rule to the optimizer's result as a ``jax.custom_jvp`` whose tangent is
linear in ``dp``, so forward mode (``jvp``, ``jacfwd``), reverse mode by transposition (``vjp``,
``grad``, ``jacrev``) and ``vmap`` all work; the Newton iterations themselves are never differentiated
(they run on ``lax.stop_gradient`` of their inputs).  The closed-form estimates are differentiated by
ordinary autodiff through the solve at the pinned theta-hat.

**Case weights.**  A case weight ``c_i`` scales row i's contribution to the joint log-density of
``(y, u)``: its weighted squared residual and its share of ``log sigma^2``.  The cross-products are then
those with weights ``w c`` and the number of observations is ``n = sum_i c_i`` (over rows with
``w_i > 0``), so ``c_i = 0`` removes row i exactly while every ``c_i`` enters smoothly: the derivative
with respect to ``c_i`` at ``c = 1`` is the one-step (infinitesimal jackknife) approximation of leaving
row i out (``influence``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..linalg import factor as linalg
from .crossprod import cross_products
from .data import CrossProducts, ModelData
from .criterion import profiled_deviance
from ..optim.newton import NewtonOptions, minimize_newton, value_grad_hessian
from .solve import linear_predictor, solve
from ..status import CONVERGED


class FitInputs(NamedTuple):
    """The differentiable inputs of one fit (rows as ``ModelData``'s)."""

    y: jax.Array            # (n,)
    weights: jax.Array      # (n,) prior weights (lme4's; 0 = row absent, not differentiable there)
    case_weights: jax.Array  # (n,) case weights (1 = the row as given, 0 = the row removed)
    transforms: tuple       # per term: (l_k, l_k) factor T of its relationship matrix, or None


class FitState(NamedTuple):
    """The fit at theta-hat, a pytree of arrays: what ``jaxlmm.fit_function``'s ``f(y)`` returns.

    ``b`` holds per random-effects term (lme4 order) the BLUPs ``(levels, columns)`` in the order of
    ``ranef``; ``fitted`` the linear predictor of every row (including rows of weight 0).  ``status`` is
    the optimizer's integer code (``jaxlmm.core.status``, 0 = converged); ``status_name`` its name
    (``"converged"``, ``"max_iter"``, ...; an array of names for a ``vmap``-ped state).
    """

    theta: jax.Array
    beta: jax.Array
    sigma: jax.Array
    b: tuple
    criterion: jax.Array
    fitted: jax.Array
    converged: jax.Array
    status: jax.Array
    n_iter: jax.Array

    @property
    def status_name(self):
        """The name of ``status`` (``core.status.STATUS_NAMES``): a ``str``, or an array of them for a batch
        of states; concrete states only (inside ``jit``/``grad`` the status is a tracer without a value)."""
        from ..status import status_name

        if isinstance(self.status, jax.core.Tracer):
            raise TypeError("FitState.status_name needs a concrete status: read it outside jit/grad/vmap "
                            "(the traced status is an integer code, core.status)")
        codes = np.asarray(self.status)
        if codes.ndim == 0:
            return status_name(codes)
        return np.vectorize(status_name, otypes=[object])(codes)


def model_data(data: ModelData, inputs: FitInputs) -> ModelData:
    """``data`` with the response, the weights ``w c`` and the relationship factors of ``inputs``."""
    return dataclasses.replace(data, y=inputs.y, weights=inputs.weights * inputs.case_weights,
                               transforms=inputs.transforms)


def case_weighted_cross_products(data: ModelData, inputs: FitInputs) -> CrossProducts:
    """Cross-products with weights ``w c`` and ``n = sum c`` over rows with ``w > 0`` (module docstring)."""
    cp = cross_products(model_data(data, inputs))
    present = inputs.weights > 0
    c = jnp.where(present, inputs.case_weights, 0.0)
    log_w = jnp.log(jnp.where(present, inputs.weights, 1.0))
    return dataclasses.replace(cp, n_obs=jnp.sum(c), sum_log_w=jnp.sum(c * log_w))


def criterion(theta, inputs: FitInputs, data: ModelData, reml: bool):
    """The profiled REML criterion / ML deviance at ``theta`` as a function of the inputs."""
    return profiled_deviance(theta, case_weighted_cross_products(data, inputs), reml)


def implicit_tangent(theta, inputs: FitInputs, dinputs: FitInputs, data: ModelData, reml: bool, lower):
    """``d theta-hat`` along ``dinputs`` (module docstring): ``-H_FF^{-1} (d g_F/d p)[dp]``, 0 on the active set."""
    objective = lambda th: criterion(th, inputs, data, reml)  # noqa: E731
    _, _, H = value_grad_hessian(objective, theta)
    _, dg = jax.jvp(lambda p: jax.grad(criterion)(theta, p, data, reml), (inputs,), (dinputs,))
    return free_newton_step(theta, dg, H, lower)


def pin_theta(theta_hat, inputs: FitInputs, data: ModelData, reml: bool, lower):
    """``theta_hat`` (the optimizer's result) as a function of ``inputs`` with the implicit derivative.

    ``data`` (its arrays concrete, NumPy) and ``lower`` are constants of the design.
    """

    @jax.custom_jvp
    def pinned(theta, p):
        return theta

    @pinned.defjvp
    def pinned_jvp(primals, tangents):
        theta, p = primals
        _, dp = tangents
        theta = lax.stop_gradient(theta)
        return theta, implicit_tangent(theta, p, dp, data, reml, lower)

    return pinned(lax.stop_gradient(theta_hat), inputs)


def fit_state(inputs: FitInputs, data: ModelData, theta0, reml: bool, options: NewtonOptions = NewtonOptions()
              ) -> FitState:
    """The whole fit of one response as a pure, differentiable function of ``inputs`` (module docstring).

    ``data`` supplies the design (its ``y``/``weights``/``transforms`` are replaced by ``inputs``);
    ``theta0`` is the optimizer's start.  Pure and jittable; ``vmap`` it over responses.
    """
    lower = np.asarray(data.structure.lower_bounds(), dtype=theta0.dtype)   # a constant, never a tracer
    fixed_inputs = jax.tree_util.tree_map(lax.stop_gradient, inputs)
    objective = lambda th: criterion(th, fixed_inputs, data, reml)  # noqa: E731
    res = minimize_newton(objective, lax.stop_gradient(theta0), lower, options, data.structure.reflections())
    theta = pin_theta(res.theta, inputs, data, reml, lower)
    cp = case_weighted_cross_products(data, inputs)
    sol = solve(theta, cp, reml, inputs.transforms)
    fitted = linear_predictor(model_data(data, inputs), sol.beta, sol.b)
    converged = (res.status == CONVERGED) & jnp.isfinite(sol.criterion)
    return FitState(theta, sol.beta, sol.sigma, sol.b, sol.criterion, fitted, converged, res.status, res.n_iter)


def free_newton_step(theta, g, H, lower):
    """``-H_FF^{-1} g_F`` on the free set (components off their bound), 0 on the active set.

    By a Cholesky factor of ``H_FF`` (``linalg/factor.py``: no LAPACK call, so it may sit in any vmapped
    program): positive definite at a strict minimum; elsewhere (a saddle) the step is NaN.
    """
    free = ~(jnp.isfinite(lower) & (theta <= lower))
    k = theta.shape[0]
    H_free = jnp.where(free[:, None] & free[None, :], H, jnp.eye(k, dtype=H.dtype))
    L = linalg.cholesky(H_free)
    step = linalg.solve_upper_t(L, linalg.solve_lower(L, jnp.where(free, g, 0.0)[:, None]))[:, 0]
    return jnp.where(free, -step, 0.0)


def newton_refit(inputs: FitInputs, theta, data: ModelData, reml: bool, steps: int = 1):
    """theta and beta after ``steps`` projected Newton steps from ``theta`` on the criterion of ``inputs``.

    From theta-hat of a nearby problem (a row removed) this is the one-step approximation of its refit:
    the implicit derivative taken over the finite change, with the exact gradient and Hessian of the
    new criterion; beta then follows in closed form at the new theta.
    """
    lower = np.asarray(data.structure.lower_bounds(), dtype=theta.dtype)
    objective = lambda th: criterion(th, inputs, data, reml)  # noqa: E731
    for _ in range(steps):
        _, g, H = value_grad_hessian(objective, theta)
        theta = jnp.maximum(theta + free_newton_step(theta, g, H, lower), lower)
    sol = solve(theta, case_weighted_cross_products(data, inputs), reml, inputs.transforms)
    return theta, sol.beta
