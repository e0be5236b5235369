"""The exposed objective: autodiff gradients, jit == no-jit, and the optimum."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlmm
from conftest import case_data, load_reference

pytestmark = pytest.mark.usefixtures("x64")


@pytest.fixture(scope="module")
def sleep_objective():
    ref = load_reference("sleepstudy_slope_reml")
    return jaxlmm.deviance_function(ref["formula"], case_data(ref)), ref


def central_difference(f, x, h=1e-4):
    out = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        out[i] = (f(x + e) - f(x - e)) / (2 * h)
    return out


@pytest.mark.parametrize("theta", [[1.0, 0.0, 1.0], [0.5, -0.2, 0.3], [0.96, 0.015, 0.23]])
def test_grad_matches_central_differences(sleep_objective, theta):
    f, _ = sleep_objective
    x = np.asarray(theta)
    g = np.asarray(jax.grad(f)(jnp.asarray(x)))
    fd = central_difference(lambda t: float(f(t)), x)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=2e-5)


def test_hessian_matches_differences_of_grad(sleep_objective):
    f, ref = sleep_objective
    x = np.asarray(ref["theta"])
    H = np.asarray(jax.hessian(f)(jnp.asarray(x)))
    grad = jax.grad(f)
    fd = np.stack([central_difference(lambda t: float(grad(jnp.asarray(t))[i]), x) for i in range(3)])
    np.testing.assert_allclose(H, fd, rtol=1e-4, atol=1e-4)
    assert np.all(np.linalg.eigvalsh(H) > 0)


def test_value_and_gradient_at_the_optimum(sleep_objective, fits):
    f, ref = sleep_objective
    fit = fits.get("sleepstudy_slope_reml")
    assert float(f(fit.theta)) == pytest.approx(ref["criterion"], rel=1e-9)
    g = np.asarray(jax.grad(f)(jnp.asarray(fit.theta)))
    assert np.max(np.abs(g)) < 1e-6
    np.testing.assert_allclose(fit.grad, g, atol=1e-7)


def test_jit_equals_no_jit(sleep_objective):
    f, ref = sleep_objective
    x = jnp.asarray(ref["theta"])
    with jax.disable_jit():
        eager = float(f(x))
    assert float(jax.jit(f)(x)) == pytest.approx(eager, rel=1e-12)


def test_vmap_over_theta_equals_loop(sleep_objective):
    f, _ = sleep_objective
    thetas = jnp.asarray([[1.0, 0.0, 1.0], [0.5, 0.1, 0.2], [2.0, -0.3, 0.7]])
    np.testing.assert_allclose(jax.vmap(f)(thetas), [float(f(t)) for t in thetas], rtol=1e-12)


def test_core_deviance_of_model_data(sleep_objective):
    """``jaxlmm.core.pls.criterion(theta, data)`` (row-level, pure) equals the cross-product path."""
    from jaxlmm.core import deviance

    f, ref = sleep_objective
    x = jnp.asarray(ref["theta"])
    assert float(deviance(x, f.data, reml=True)) == pytest.approx(float(f(x)), rel=1e-12)
    g_rows = jax.grad(deviance)(x, f.data)
    np.testing.assert_allclose(g_rows, jax.grad(f)(x), rtol=1e-8, atol=1e-10)


def test_blups_are_differentiable_in_theta(sleep_objective):
    f, ref = sleep_objective
    x = jnp.asarray(ref["theta"])
    jac = jax.jacfwd(lambda t: f.solve(t).b[0][:18])(x)
    assert jac.shape == (18, 2, 3) and np.all(np.isfinite(jac))


def test_ml_objective_matches_reference():
    ref = load_reference("sleepstudy_slope_ml")
    f = jaxlmm.deviance_function(ref["formula"], case_data(ref), reml=False)
    assert float(f(ref["theta"])) == pytest.approx(ref["criterion"], rel=1e-8)


def test_core_imports_without_pandas():
    code = ("import sys; import jaxlmm.core; "
            "bad = [m for m in ('pandas', 'formulaic') if m in sys.modules]; "
            "assert not bad, bad; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_float32_fit_is_close():
    ref = load_reference("sleepstudy_slope_reml")
    fit = jaxlmm.lmer(ref["formula"], case_data(ref), dtype="float32")
    assert fit.criterion == pytest.approx(ref["criterion"], rel=1e-5)
    np.testing.assert_allclose(fit.fixef, list(ref["beta"].values()), rtol=1e-4)
