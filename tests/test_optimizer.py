"""The optimizer: boundary fits land on 0 exactly, status codes, optax, start values."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlmm
from conftest import case_data, load_reference
from jaxlmm.core.optim.newton import CONVERGED, NONFINITE, NewtonOptions, minimize_newton

pytestmark = pytest.mark.usefixtures("x64")


@pytest.mark.parametrize("case", ["dyestuff2_singular", "shrinkage_1_singular"])
def test_singular_fits_land_on_zero_exactly(case, fits):
    fit = fits.get(case)
    assert fit.converged
    assert fit.theta[0] == 0.0
    assert fit.is_singular
    assert np.all(fit.ranef["condval"] == 0.0) and np.all(fit.ranef["condsd"] == 0.0)
    assert "boundary (singular) fit" in fit.summary()


def test_interior_optimum_after_a_boundary_visit(fits):
    """Sulfur: Newton's first step lands on theta = 0, a local maximum along theta; it must leave it."""
    fit = fits.get("sulfur_blue")
    assert fit.theta[0] == pytest.approx(0.278903804819995, rel=1e-4)


def test_quadratic_with_bounds():
    f = lambda x: jnp.sum((x - jnp.array([2.0, -1.0, 0.5])) ** 2)
    res = minimize_newton(f, jnp.array([1.0, 1.0, 1.0]), jnp.array([0.0, 0.0, -jnp.inf]))
    assert int(res.status) == CONVERGED
    np.testing.assert_allclose(res.theta, [2.0, 0.0, 0.5], atol=1e-10)
    assert float(res.theta[1]) == 0.0


@pytest.mark.parametrize("opts", [NewtonOptions(damping="lm"), NewtonOptions(damping="lm", interior=0.1)])
def test_large_model_line_search(opts):
    """The damped / interior line search of large models: the same optimum, the bound reached exactly."""
    f = lambda x: jnp.sum((x - jnp.array([2.0, -1.0, 0.5])) ** 2)
    res = minimize_newton(f, jnp.array([1.0, 1.0, 1.0]), jnp.array([0.0, 0.0, -jnp.inf]), opts)
    assert int(res.status) == CONVERGED
    np.testing.assert_allclose(res.theta, [2.0, 0.0, 0.5], atol=1e-10)
    assert float(res.theta[1]) == 0.0
    # an even function of x[0] with a poor quadratic model far from its minimum (as a variance
    # component): the interior trials keep x[0] off the bound, where the gradient vanishes
    g = lambda x: jnp.log1p((x[0] ** 2 - 0.3) ** 2) + (x[1] - 1.0) ** 2 + 0.1 * x[0] ** 2 * x[1] ** 2
    for o in (NewtonOptions(), opts):
        r = minimize_newton(g, jnp.array([2.0, 3.0]), jnp.array([0.0, -jnp.inf]), o)
        assert int(r.status) == CONVERGED
        assert float(r.theta[0]) > 0.3 and np.all(np.abs(np.asarray(r.grad)) < 1e-6)


def test_nonfinite_start_is_a_status_not_an_exception():
    res = minimize_newton(lambda x: jnp.sum(jnp.log(x - 5.0)), jnp.array([1.0]), jnp.array([0.0]))
    assert int(res.status) == NONFINITE


def test_max_iter_status():
    f = lambda x: jnp.sum(jnp.cosh(x - 3.0) * 1e3)
    res = minimize_newton(f, jnp.array([-30.0]), jnp.array([-jnp.inf]), NewtonOptions(max_iter=2))
    assert int(res.status) != CONVERGED and int(res.n_iter) == 2


def test_optax_optimizer_reaches_the_same_optimum():
    ref = load_reference("sleepstudy_slope_reml")
    fit = jaxlmm.lmer(ref["formula"], case_data(ref), optimizer=optax.adam(2e-2), max_iter=20000)
    assert fit.optimizer == "optax"
    assert fit.criterion == pytest.approx(ref["criterion"], rel=1e-6)
    np.testing.assert_allclose(fit.theta, ref["theta"], rtol=1e-2, atol=1e-3)


def test_start_values(fits):
    ref = load_reference("sleepstudy_slope_reml")
    fit = jaxlmm.lmer(ref["formula"], case_data(ref), start=ref["theta"])
    assert fit.converged and fit.n_iter <= 3
    assert fit.criterion == pytest.approx(ref["criterion"], rel=1e-9)
    with pytest.raises(ValueError, match="start must have 3 values"):
        jaxlmm.lmer(ref["formula"], case_data(ref), start=[1.0])


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_value_grad_hessian_matches_jax_hessian(k):
    """Forward-mode polarization (k <= 4) and forward-over-reverse (k > 4, or sequential) agree with jax.hessian."""
    import jax

    from jaxlmm.core.optim.newton import FORWARD_HESSIAN_MAX, value_grad_hessian

    rng = np.random.default_rng(k)
    A = jnp.asarray(rng.normal(size=(k, k)))

    def f(x):
        return jnp.log(1.0 + jnp.sum((A @ x) ** 2)) + jnp.sum(jnp.sin(x) * x[::-1]) + jnp.prod(1.0 + x ** 2)

    x = jnp.asarray(rng.normal(size=k))
    for sequential in (False, True):
        fx, g, H = value_grad_hessian(f, x, sequential)
        np.testing.assert_allclose(fx, f(x), rtol=1e-14)
        np.testing.assert_allclose(g, jax.grad(f)(x), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(H, jax.hessian(f)(x), rtol=1e-10, atol=1e-10)
        np.testing.assert_array_equal(H, H.T)
    assert (k <= FORWARD_HESSIAN_MAX) == (k <= 4)


def test_tied_loop_carries_are_exact_and_batched():
    """``tie`` changes no value, but makes a constant carry batched under vmap (one batching pass)."""
    import jax

    from jaxlmm.core.carry import tie

    out = jax.vmap(lambda r: tie(jnp.int32(7), r))(jnp.array([1.0, jnp.nan, -2.0]))
    np.testing.assert_array_equal(out, [7, 7, 7])
    assert out.dtype == jnp.int32 and out.shape == (3,)
