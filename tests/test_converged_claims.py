""""Converged" is a claim about the point returned (issue S, item 2).

A first-order optimizer with a learning rate far too large climbs the criterion and throws
theta to 1e6-1e7, where the criterion flattens and the absolute gradient is tiny; no
iteration at all (``max_iter=0``) returns the start.  None of these may say converged.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
import pytest

import jaxlmm
from jaxlmm.core.optim.first_order import FirstOrderOptions, minimize_first_order
from jaxlmm.core.status import CONVERGED, CRITERION_ROSE, MAX_ITER, STATUS_NAMES

pytestmark = pytest.mark.usefixtures("x64")


@pytest.fixture(scope="module")
def sleep():
    return jaxlmm.load_dataset("sleepstudy")


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("formula", ["Reaction ~ Days + (Days | Subject)", "Reaction ~ Days + (1 | Subject)"])
def test_a_climbing_optimizer_is_not_converged(sleep, formula):
    start = _quiet(jaxlmm.lmer, formula, sleep, max_iter=0).criterion
    fit = _quiet(jaxlmm.lmer, formula, sleep, optimizer=optax.sgd(1e6), max_iter=200)
    assert fit.criterion > start            # it did climb
    assert not fit.converged
    assert fit.status == CRITERION_ROSE and STATUS_NAMES[fit.status] == "criterion_rose"
    with pytest.warns(Warning, match="higher criterion than it started"):
        jaxlmm.lmer(formula, sleep, optimizer=optax.sgd(1e6), max_iter=200)


def test_theta_run_off_to_infinity_is_not_a_stationary_point():
    """f = log(1 + theta^2): the gradient 2 theta / (1 + theta^2) is 2e-7 at theta = 1e7, far below the
    absolute tolerance, but the criterion is no flatter in log theta there than at theta = 1."""
    fun = lambda t: jnp.log1p(t[0] ** 2)  # noqa: E731  minimum at 0, the bound
    res, _ = minimize_first_order(fun, jnp.array([1e7]), jnp.array([0.0]), optax.sgd(1e-3),
                                  FirstOrderOptions(max_iter=50))
    assert int(res.status) != CONVERGED


@pytest.mark.parametrize("optimizer", [optax.lbfgs(), optx.BFGS(rtol=1e-9, atol=1e-9), None],
                         ids=["optax", "optimistix", "newton"])
def test_no_iteration_is_no_convergence(sleep, optimizer):
    fit = _quiet(jaxlmm.lmer, "Reaction ~ Days + (Days | Subject)", sleep, optimizer=optimizer, max_iter=0)
    assert not fit.converged and fit.status == MAX_ITER
    np.testing.assert_allclose(fit.theta, [1.0, 0.0, 1.0])


def test_a_climbing_batch_trait_has_a_status(sleep):
    Y = np.column_stack([sleep["Reaction"].to_numpy(), sleep["Reaction"].to_numpy() * 1.5])
    data = sleep.assign(y1=Y[:, 0], y2=Y[:, 1])
    batch = _quiet(jaxlmm.lmer, "~ Days + (1 | Subject)", data, responses=["y1", "y2"],
                   optimizer=optax.sgd(1e6), max_iter=100)
    assert list(batch.status) == ["criterion_rose", "criterion_rose"]
    assert not batch.diagnostics["converged"].any()


def test_sound_first_order_fits_still_converge(sleep):
    ref = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    for optimizer in (optax.lbfgs(), optx.BFGS(rtol=1e-10, atol=1e-10)):
        fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep, optimizer=optimizer)
        assert fit.converged
        assert fit.criterion == pytest.approx(ref.criterion, rel=1e-9)
