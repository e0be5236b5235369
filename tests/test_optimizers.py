"""optimizer=: any optax transformation or optimistix minimiser, one bound handling, one stopping rule, traces.

Fast tests use small problems (core-level quadratics, Dyestuff); the parity of L-BFGS and BFGS with
the default Newton optimizer on every shared reference fit is ``slow``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
import pandas as pd
import pytest

import jaxlmm
from conftest import FAST_CASES, case_data, load_reference
from jaxlmm.core.optim.first_order import FirstOrderOptions, minimize_first_order
from jaxlmm.core.status import CONVERGED, NONFINITE_STEP

pytestmark = pytest.mark.usefixtures("x64")

TARGET = jnp.array([2.0, -1.0, 0.5])
LOWER = jnp.array([0.0, 0.0, -jnp.inf])


def quadratic(x):
    return jnp.sum((x - TARGET) ** 2 * jnp.array([1.0, 3.0, 0.5]))


def even_with_interior_minimum(x):
    """Even in x[0] (a scalar variance component): stationary at 0, where it is a maximum along x[0]."""
    return (x[0] ** 2 - 0.3) ** 2 + (x[1] - 1.0) ** 2 + 0.1 * x[0] ** 2 * x[1] ** 2


SOLVERS = {"lbfgs": optax.lbfgs(), "adam": optax.adam(5e-2), "bfgs": optx.BFGS(rtol=1e-10, atol=1e-10),
           "ncg": optx.NonlinearCG(rtol=1e-10, atol=1e-10)}


@pytest.mark.parametrize("name", ["lbfgs", "adam", "bfgs"])
def test_bounds_and_stopping_rule_on_a_quadratic(name):
    """The bound at 0 with the gradient pushing outwards: every solver stops on it exactly."""
    res, trace = minimize_first_order(quadratic, jnp.ones(3), LOWER, SOLVERS[name],
                                      FirstOrderOptions(max_iter=3000, trace=True))
    assert int(res.status) == CONVERGED
    np.testing.assert_allclose(res.theta, [2.0, 0.0, 0.5], atol=1e-6)
    assert float(res.theta[1]) == 0.0
    n = int(res.n_iter)
    assert trace.criterion.shape == (3001,) and trace.theta.shape == (3001, 3)
    assert np.all(np.isfinite(trace.criterion[:n + 1])) and np.all(np.isnan(trace.criterion[n + 1:]))
    np.testing.assert_array_equal(trace.theta[n], res.theta)


@pytest.mark.parametrize("name", ["lbfgs", "bfgs", "ncg"])
def test_a_maximum_on_the_bound_is_left(name):
    """From (0, 3) the gradient along x[0] vanishes; the probe inside the bound finds the way down."""
    res, _ = minimize_first_order(even_with_interior_minimum, jnp.array([0.0, 3.0]), jnp.array([0.0, -jnp.inf]),
                                  SOLVERS[name])
    assert int(res.status) == CONVERGED
    assert float(res.theta[0]) > 0.3 and float(res.fun) < 0.03  # on the bound at best 0.09


def covariance_misfit(t):
    """A 2 x 2 term: lambda = [[a, 0], [b, c]], the misfit of lambda lambda^T; flipping (a, b) leaves it unchanged."""
    a, b, c = t
    S = jnp.array([[a * a, a * b], [a * b, b * b + c * c]])
    return jnp.sum((S - jnp.array([[1.0, 0.5], [0.5, 1.25]])) ** 2)


@pytest.mark.parametrize("name", ["lbfgs", "bfgs"])
def test_a_bound_that_is_a_minimum_from_one_side_only(name):
    """At (0, -0.5, 1) the gradient along a points out of the bound (a stationary point of the bounded
    problem); the reflected point (0, 0.5, 1) has the same criterion and a way down: found through the
    structure's reflections, as the Newton optimizer does (traits_1k had such traits)."""
    R = np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0]])
    res, _ = minimize_first_order(covariance_misfit, jnp.array([0.0, -0.5, 1.0]), jnp.array([0.0, -jnp.inf, 0.0]),
                                  SOLVERS[name], reflections=R)
    assert int(res.status) == CONVERGED and float(res.fun) < 1e-12
    np.testing.assert_allclose(res.theta, [1.0, 0.5, 1.0], atol=1e-6)


def test_a_nan_schedule_is_a_status_not_a_nan():
    res, trace = minimize_first_order(quadratic, jnp.ones(3), LOWER, optax.adam(lambda count: jnp.nan),
                                      FirstOrderOptions(trace=True, max_iter=50))
    assert int(res.status) == NONFINITE_STEP
    assert np.all(np.isfinite(res.theta)) and np.isfinite(float(res.fun))


@pytest.mark.parametrize("bad, words", [("adam", "got str"), (optax.adam, "built by calling it"),
                                        (object(), "optax GradientTransformation")])
def test_not_an_optimizer_is_a_clear_error(bad, words):
    with pytest.raises(jaxlmm.JaxlmmError, match=words):
        jaxlmm.lmer("Yield ~ 1 + (1 | Batch)", jaxlmm.load_dataset("dyestuff"), optimizer=bad)


@pytest.fixture(scope="module")
def dyestuff():
    ref = load_reference("dyestuff")
    data = case_data(ref)
    with jax.enable_x64(True):
        newton = jaxlmm.lmer(ref["formula"], data)
        lbfgs = jaxlmm.lmer(ref["formula"], data, optimizer=optax.lbfgs(), trace=True)
    return ref, data, newton, lbfgs


def test_lbfgs_single_fit_and_its_trace(dyestuff):
    ref, _, newton, fit = dyestuff
    assert fit.converged and fit.optimizer == "optax"
    assert fit.criterion == pytest.approx(newton.criterion, rel=1e-8)
    assert fit.criterion == pytest.approx(ref["criterion"], rel=1e-8)
    tr = fit.optimizer_trace
    assert list(tr.columns[:6]) == ["optimizer", "iteration", "criterion", "grad_norm", "step", "Batch.(Intercept)"]
    assert len(tr) == fit.n_iter + 1 and tr["iteration"].tolist() == list(range(fit.n_iter + 1))
    assert tr["criterion"].iloc[-1] == pytest.approx(fit.criterion, rel=1e-12)
    assert tr["Batch.(Intercept)"].iloc[-1] == fit.theta[0]
    assert tr["criterion"].iloc[-1] <= tr["criterion"].iloc[0]
    with pytest.raises(ValueError, match="trace=True"):
        newton.optimizer_trace


def test_convergence_plot_of_paths(dyestuff):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    _, _, _, fit = dyestuff
    fig = jaxlmm.plot.convergence({"L-BFGS": fit, "again": fit.optimizer_trace})
    assert len(fig.axes) == 4 and fig.axes[0].get_yscale() == "log"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_batch_with_lbfgs_equals_the_per_trait_fits(dyestuff):
    """Three responses (one with a missing value, one singular: Dyestuff2's) through one vmapped program:
    trait a equals the single L-BFGS fit of the same data, b and c the per-trait (Newton) fits."""
    ref, data, _, single = dyestuff
    rng = np.random.default_rng(1)
    Y = pd.DataFrame({"a": data["Yield"], "b": data["Yield"] + rng.normal(0, 40, len(data)),
                      "c": jaxlmm.load_dataset("dyestuff2")["Yield"].to_numpy()})
    Y.loc[3, "b"] = np.nan
    batch = jaxlmm.lmer("~ 1 + (1 | Batch)", data, responses=Y, optimizer=optax.lbfgs(), trace=True)
    assert batch.status.tolist() == ["converged"] * 3
    assert batch.criterion["a"] == pytest.approx(single.criterion, rel=1e-12)
    assert batch.theta.loc["a"].iloc[0] == pytest.approx(single.theta[0], rel=1e-9)
    for name in ("b", "c"):
        rows = data.assign(y=Y[name]).dropna(subset=["y"])
        with pytest.warns(jaxlmm.JaxlmmWarning) if name == "c" else _nothing():
            one = jaxlmm.lmer("y ~ 1 + (1 | Batch)", rows)
        assert batch.criterion[name] == pytest.approx(one.criterion, rel=1e-8)
        np.testing.assert_allclose(batch.theta.loc[name], one.theta, rtol=1e-5, atol=1e-6)
    assert batch.theta.loc["c"].iloc[0] == 0.0
    tr = batch.optimizer_trace
    assert set(tr["trait"]) == {"a", "b", "c"}
    assert (tr.groupby("trait")["iteration"].max() == batch.n_iter).all()
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    fig = jaxlmm.plot.convergence(batch, paths=True)
    assert len(fig.axes) == 4
    plt.close(fig)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("case", FAST_CASES)
@pytest.mark.parametrize("name", ["lbfgs", "bfgs"])
def test_lbfgs_and_bfgs_reach_newtons_criterion_on_every_reference_fit(case, name, fits):
    ref = load_reference(case)
    newton = fits.get(case)
    opt = optax.lbfgs() if name == "lbfgs" else optx.BFGS(rtol=1e-10, atol=1e-10)
    fit = jaxlmm.lmer(ref["formula"], case_data(ref), reml=ref["reml"], optimizer=opt)
    assert fit.converged, fit.optimizer_message
    assert fit.criterion == pytest.approx(newton.criterion, rel=1e-8)
    # singular fits: theta lands on 0 exactly where Newton's does
    np.testing.assert_array_equal(fit.theta == 0.0, newton.theta == 0.0)


@pytest.mark.slow
def test_newton_trace_and_a_nan_schedule_in_a_batch():
    ref = load_reference("sleepstudy_slope_reml")
    data = case_data(ref)
    fit = jaxlmm.lmer(ref["formula"], data, trace=True)
    tr = fit.optimizer_trace
    assert fit.optimizer == "newton" and len(tr) == fit.n_iter
    assert fit.criterion == pytest.approx(ref["criterion"], rel=1e-10)
    Y = pd.DataFrame({"a": data["Reaction"], "b": data["Reaction"] * 2.0})
    batch = jaxlmm.lmer("~ Days + (Days | Subject)", data, responses=Y, optimizer=optax.sgd(lambda c: jnp.nan))
    assert batch.status.tolist() == ["nonfinite_step"] * 2
    assert np.all(np.isfinite(batch.theta.to_numpy()))
    traced = jaxlmm.lmer("~ Days + (Days | Subject)", data, responses=Y, trace=True)
    paths = traced.optimizer_trace
    assert (paths.groupby("trait")["iteration"].max() + 1 == traced.n_iter).all()
    assert paths[paths.trait == "a"]["criterion"].iloc[-1] == pytest.approx(ref["criterion"], rel=1e-10)
