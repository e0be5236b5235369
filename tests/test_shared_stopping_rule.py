"""Issue O: one definition of the bounds and the projected-gradient stopping rule (``core/optim/kernel.py``),
shared by the Newton drivers and the optax/optimistix path; and ``fit_function`` asks the selected engine
whether it can build a model's fit."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
import pytest

import jaxlmm
from jaxlmm.core.optim import first_order, kernel
from jaxlmm.core.optim.first_order import FirstOrderOptions, minimize_first_order
from jaxlmm.core.status import CONVERGED

pytestmark = pytest.mark.usefixtures("x64")

INF = np.inf
# one component of each kind: on its lower bound pushed out, near its lower bound, on its upper bound pushed
# out, near its upper bound, unbounded
THETA = np.array([0.0, 0.5, 1.0, 2.0, 3.0])
GRAD = np.array([1.0, 2.0, -1.0, -0.5, 0.3])
LOWER = np.array([0.0, 0.0, 0.0, -INF, -INF])
UPPER = np.array([INF, INF, 1.0, 2.2, INF])
PG = np.array([0.0, 0.5, 0.0, -0.2, 0.3])


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_projected_gradient_with_lower_and_upper_bounds(xp):
    pg = np.asarray(kernel.projected_gradient(xp, xp.asarray(THETA), xp.asarray(GRAD), xp.asarray(LOWER),
                                              xp.asarray(UPPER)))
    np.testing.assert_allclose(pg, PG, atol=1e-15)
    np.testing.assert_allclose(pg, THETA - np.clip(THETA - GRAD, LOWER, UPPER), atol=1e-15)
    args = (xp.asarray(THETA), xp.asarray(GRAD), xp.asarray(LOWER), xp.asarray(UPPER))
    # scaled: |pg| max(1, |theta|) = [0, 0.5, 0, 0.4, 0.9]; unscaled: max |pg| = 0.5
    assert float(kernel.projected_gradient_norm(xp, *args)) == pytest.approx(0.9)
    assert float(kernel.projected_gradient_norm(xp, *args, scaled=False)) == pytest.approx(0.5)
    # pg_norm <= factor gtol (1 + |f|), f = -1
    assert bool(kernel.gradient_converged(xp, xp.asarray(-1.0), 0.9, gtol=0.5))
    assert not bool(kernel.gradient_converged(xp, xp.asarray(-1.0), 0.9, gtol=0.4))
    assert bool(kernel.gradient_converged(xp, xp.asarray(-1.0), 0.9, gtol=0.05, factor=10.0))


def test_projected_gradient_of_a_stack_and_without_bounds_is_the_gradient():
    stack = [np.stack([a, a[::-1]]) for a in (THETA, GRAD, LOWER, UPPER)]
    norms = kernel.projected_gradient_norm(np, *stack)
    assert norms.shape == (2,)
    assert norms[0] == pytest.approx(0.9)
    assert norms[1] == pytest.approx(kernel.projected_gradient_norm(np, *[a[::-1] for a in (THETA, GRAD, LOWER,
                                                                                             UPPER)]))
    g = np.array([1e-10, -3.0, 7.0])
    free = kernel.projected_gradient(np, np.array([1e3, -2.0, 0.1]), g, np.full(3, -INF), np.full(3, INF))
    np.testing.assert_array_equal(free, g)  # exactly g where no bound is near


def test_mirror_reflects_at_both_bounds():
    y = jnp.array([-0.5, 0.5, 2.5, 4.5, 5.0, -1.0, 3.0])
    lower = jnp.array([0.0, 0.0, 0.0, 0.0, -INF, 0.0, -INF])
    upper = jnp.array([2.0, 2.0, 2.0, 2.0, 2.0, INF, INF])
    theta, sign = first_order.mirror(y, lower, upper)
    np.testing.assert_allclose(theta, [0.5, 0.5, 1.5, 0.5, -1.0, 1.0, 3.0])
    np.testing.assert_array_equal(sign, [-1, 1, -1, 1, -1, -1, 1])
    only_lower, sign_lower = first_order.mirror(y, lower)
    np.testing.assert_allclose(only_lower, [0.5, 0.5, 2.5, 4.5, 5.0, 1.0, 3.0])
    np.testing.assert_array_equal(sign_lower, [-1, 1, 1, 1, 1, -1, 1])


def beyond_the_upper_bound(x):
    """Minimum at (3, -1); the box below holds x[0] in [0, 2]: the optimum is on the upper bound."""
    return (x[0] - 3.0) ** 2 + 2.0 * (x[1] + 1.0) ** 2


@pytest.mark.parametrize("solver", [optax.adam(5e-2), optx.BFGS(rtol=1e-10, atol=1e-10)], ids=["adam", "bfgs"])
def test_first_order_stops_on_an_upper_bound(solver):
    lower, upper = jnp.array([0.0, -INF]), jnp.array([2.0, INF])
    res, trace = minimize_first_order(beyond_the_upper_bound, jnp.array([1.0, 0.0]), lower, solver,
                                      FirstOrderOptions(max_iter=3000, trace=True), upper=upper)
    assert int(res.status) == CONVERGED
    assert float(res.theta[0]) == 2.0  # on the bound exactly (projected, or snapped there)
    np.testing.assert_allclose(res.theta[1], -1.0, atol=1e-5)
    # the reported stopping quantity is the shared one, and it passed the shared test
    expected = kernel.projected_gradient_norm(jnp, res.theta, res.grad, lower, upper)
    assert float(res.step) == float(expected)
    assert bool(kernel.gradient_converged(jnp, res.fun, res.step, FirstOrderOptions().gtol, factor=10.0))
    n = int(res.n_iter)
    np.testing.assert_array_equal(trace.theta[n], res.theta)
    assert float(trace.grad_norm[n]) == float(kernel.projected_gradient_norm(jnp, res.theta, res.grad, lower, upper,
                                                                             scaled=False))
    assert float(res.grad[0]) < 0  # pushing outwards: the unconstrained minimum is beyond the bound


def test_an_optax_fit_of_sleepstudy_still_converges():
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", jaxlmm.load_dataset("sleepstudy"),
                      optimizer=optax.lbfgs())
    assert fit.optimizer == "optax"
    assert fit.converged
    np.testing.assert_allclose(fit.theta, [0.96673, 0.015169, 0.23091], rtol=1e-4)


def test_fit_function_asks_the_engine():
    from jaxlmm.engines import MarginalEngine, select_engine
    from jaxlmm.engines.glmm_engine import GlmmEngine
    from jaxlmm.model.design import build_design

    assert not MarginalEngine.supports_fit_function and not GlmmEngine.supports_fit_function
    sleep = jaxlmm.load_dataset("sleepstudy")
    assert select_engine(build_design("Reaction ~ Days + (Days | Subject)", sleep)).supports_fit_function
    with pytest.raises(jaxlmm.JaxlmmError, match="fit_function does not support structured covariances"):
        jaxlmm.fit_function("Reaction ~ Days + ar1(0 + factor(Days) | Subject)", sleep)
