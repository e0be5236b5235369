"""``jaxlmm.fit_function``: the fit as a pure JAX function of the response, differentiated implicitly.

Checks: the state equals ``lmer``'s fit; derivatives (jvp, grad, jacfwd, jacrev) equal central
differences of ``f`` itself (step 1e-4 of the response's SD); vmap equals separate calls; a boundary
fit's derivative keeps the bound; kernel parameters of a relationship matrix; influence against
exact leave-one-out refits; clear errors on bad input.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxlmm
from conftest import case_data, load_reference

pytestmark = pytest.mark.usefixtures("x64")

SLEEP = "sleepstudy_slope_reml"


def _function(case: str, reml: bool | None = None):
    ref = load_reference(case)
    data = case_data(ref)
    return jaxlmm.fit_function(ref["formula"], data, reml=ref["reml"] if reml is None else reml), data


@pytest.fixture(scope="module")
def sleep():
    return _function(SLEEP)[0]


def _leaves(state):
    return [np.asarray(state.theta), np.asarray(state.beta), np.asarray(state.sigma)] + \
        [np.asarray(b) for b in state.b]


def _directional(f, y, directions):
    """jvp of (theta, beta, sigma, b) along each direction: one compiled program."""
    y = jnp.asarray(y)

    def along(v):
        return jax.jvp(lambda t: _leaves_jax(f(t)), (y,), (v,))[1]

    return jax.jit(jax.vmap(along), compiler_options=f.compiler_options)(jnp.asarray(directions))


def _leaves_jax(state):
    return (state.theta, state.beta, state.sigma) + tuple(state.b)


def _check_against_differences(f, y, directions, rtol=1e-4):
    h = 1e-4 * np.std(y)
    jvps = [np.asarray(leaf) for leaf in _directional(f, y, directions)]
    for i, v in enumerate(directions):
        plus, minus = _leaves(f(y + h * v)), _leaves(f(y - h * v))
        for k, (a, b) in enumerate(zip(plus, minus)):
            fd = (a - b) / (2 * h)
            scale = max(np.max(np.abs(fd)), 1e-12)
            assert np.max(np.abs(jvps[k][i] - fd)) <= rtol * scale, (i, k, jvps[k][i], fd)


def _directions(n, count, seed=0):
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((count, n))
    out[0] = 0.0
    out[0, 3] = 1.0                              # one observation alone
    return out


# --------------------------------------------------------------------------- the state
def test_state_equals_lmer(sleep, fits):
    fit = fits.get(SLEEP)
    state = sleep(sleep.y)
    assert bool(state.converged)
    np.testing.assert_allclose(state.theta, fit.theta, atol=1e-6)
    np.testing.assert_allclose(state.beta, fit.fixef.to_numpy(), rtol=1e-6)
    assert float(state.sigma) == pytest.approx(fit.sigma, rel=1e-6)
    assert float(state.criterion) == pytest.approx(fit.criterion, rel=1e-9)
    ranef = fit.ranef_dict()["Subject"]
    np.testing.assert_allclose(state.b[0], ranef.to_numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.fitted, fit.fitted, rtol=1e-7)
    assert sleep.theta_names == fit.theta_names and sleep.fixef_names == list(fit.fixef.index)
    assert sleep.ranef_levels["Subject"] == [str(v) for v in ranef.index]


def test_derivatives_match_central_differences(sleep):
    _check_against_differences(sleep, sleep.y, _directions(sleep.nobs, 3))


@pytest.mark.slow
def test_grad_equals_the_directional_derivative(sleep):
    """``jax.grad`` (reverse mode, by transposing the implicit tangent) against the jvp."""
    y = jnp.asarray(sleep.y)

    def loss(t):
        s = sleep(t)
        return s.theta[0] + 0.1 * s.theta[2] + jnp.sum(s.b[0][:, 1]) + 0.01 * s.beta[1] + s.sigma

    g = np.asarray(jax.jit(jax.grad(loss), compiler_options=sleep.compiler_options)(y))
    v = _directions(sleep.nobs, 2, seed=3)[1]
    h = 1e-4 * np.std(sleep.y)
    fd = (float(loss(y + h * v)) - float(loss(y - h * v))) / (2 * h)
    assert float(g @ v) == pytest.approx(fd, rel=1e-4)


def test_bad_input_is_a_clear_error(sleep):
    with pytest.raises(jaxlmm.DataError, match="180 values"):
        sleep(np.ones(179))
    y = sleep.y.copy()
    y[7] = np.nan
    with pytest.raises(jaxlmm.DataError, match="missing or infinite"):
        sleep(y)
    with pytest.raises(jaxlmm.DataError, match="floating-point"):
        sleep(np.arange(180))
    with pytest.raises(jaxlmm.DataError, match="case_weights"):
        sleep(sleep.y, case_weights=np.ones(3))
    with pytest.raises(jaxlmm.DataError, match="non-negative"):
        sleep(sleep.y, case_weights=-np.ones(180))
    with pytest.raises(jaxlmm.DataError, match="relationship-matrix terms"):
        sleep(sleep.y, relmat={"Subject": np.eye(18)})
    with jax.enable_x64(False), pytest.raises(jaxlmm.JaxlmmError, match="64-bit mode"):
        jax.jit(lambda t: sleep(t).theta)(np.zeros(180, np.float32))


def test_rows_of_the_data_with_missing_values():
    """y may be given on the data's rows: the rows lmer drops are ignored (NaN allowed there only)."""
    data = jaxlmm.load_dataset("sleepstudy")
    data.loc[[4, 50], "Days"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxlmm.JaxlmmWarning)
        f = jaxlmm.fit_function("Reaction ~ Days + (1 | Subject)", data)
    assert f.nobs == 178
    full = data["Reaction"].to_numpy().copy()
    full[[4, 50]] = np.nan
    a, b, c = f(full), f(f.y), f(data["Reaction"])        # a Series on the data's rows too
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-12)
    np.testing.assert_allclose(c.theta, b.theta, rtol=1e-12)


# --------------------------------------------------------------------------- heavier checks
@pytest.mark.slow
def test_jacfwd_jacrev_grad_agree(sleep):
    y = jnp.asarray(sleep.y)
    theta = lambda t: sleep(t).theta  # noqa: E731
    J = np.asarray(jax.jit(jax.jacfwd(theta), compiler_options=sleep.compiler_options)(y))
    R = np.asarray(jax.jit(jax.jacrev(theta), compiler_options=sleep.compiler_options)(y))
    g = np.asarray(jax.jit(jax.grad(lambda t: theta(t)[1]), compiler_options=sleep.compiler_options)(y))
    assert J.shape == (3, 180)
    np.testing.assert_allclose(R, J, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(g, J[1], rtol=1e-10, atol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["penicillin_crossed", "pastes_nested", "sleepstudy_uncorr", "sleepstudy_slope_ml"])
def test_several_terms_match_central_differences(case, fits):
    f, _ = _function(case)
    fit = fits.get(case)
    state = f(f.y)
    np.testing.assert_allclose(state.theta, fit.theta, atol=1e-6)
    np.testing.assert_allclose(state.beta, fit.fixef.to_numpy(), rtol=1e-6)
    _check_against_differences(f, f.y, _directions(f.nobs, 3, seed=1))


@pytest.mark.slow
def test_vmap_equals_separate_calls(sleep):
    rng = np.random.default_rng(2)
    Y = sleep.y[None, :] + 20.0 * rng.standard_normal((3, sleep.nobs))
    batch = jax.jit(jax.vmap(sleep), compiler_options=sleep.compiler_options)(jnp.asarray(Y))
    for i in range(3):
        one = sleep(Y[i])
        np.testing.assert_allclose(batch.theta[i], one.theta, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(batch.beta[i], one.beta, rtol=1e-9)


@pytest.mark.slow
def test_boundary_fit_keeps_the_bound(fits):
    f, _ = _function("dyestuff2_singular")
    state = f(f.y)
    assert float(state.theta[0]) == 0.0
    y = jnp.asarray(f.y)
    J = np.asarray(jax.jit(jax.jacfwd(lambda t: f(t).theta), compiler_options=f.compiler_options)(y))
    assert np.all(J == 0.0)
    _check_against_differences(f, f.y, _directions(f.nobs, 2, seed=4))


@pytest.mark.slow
def test_prior_weights_match_lmer(sleep):
    data = jaxlmm.load_dataset("sleepstudy")
    w = np.random.default_rng(6).uniform(0.5, 2.0, 180)
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", data, weights=w)
    state = sleep(sleep.y, weights=w)
    np.testing.assert_allclose(state.theta, fit.theta, atol=1e-6)
    np.testing.assert_allclose(state.beta, fit.fixef.to_numpy(), rtol=1e-6)
    assert float(state.criterion) == pytest.approx(fit.criterion, rel=1e-8)


@pytest.mark.slow
def test_nan_under_jit_is_a_status_not_an_exception(sleep):
    y = sleep.y.copy()
    y[5] = np.nan
    state = jax.jit(sleep, compiler_options=sleep.compiler_options)(jnp.asarray(y))
    assert not bool(state.converged)


@pytest.mark.slow
def test_case_weight_zero_removes_the_row_exactly(sleep):
    data = jaxlmm.load_dataset("sleepstudy")
    c = np.ones(180)
    c[17] = 0.0
    state = sleep(sleep.y, case_weights=c)
    refit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", data.drop(index=17))
    np.testing.assert_allclose(state.theta, refit.theta, atol=1e-6)
    np.testing.assert_allclose(state.beta, refit.fixef.to_numpy(), rtol=1e-6)
    assert float(state.criterion) == pytest.approx(refit.criterion, rel=1e-8)


@pytest.mark.slow
def test_influence_agrees_with_leave_one_out_refits(fits):
    fit = fits.get(SLEEP)
    approx = fit.influence()
    exact = fit.influence(method="exact")
    assert list(approx.columns) == fit.theta_names + list(fit.fixef.index)
    error = (approx - exact).abs().to_numpy()
    assert np.all(error <= 0.05 * exact.abs().to_numpy() + 1e-9)
    derivative = fit.influence(method="derivative")
    # the derivative misses the leverage factor 1 / (1 - h): same sign, smaller size
    beta = derivative["Days"].to_numpy() / exact["Days"].to_numpy()
    assert np.all((beta > 0.5) & (beta < 1.0))


def _kernel_data(n_ind=40, reps=2, seed=5):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 10, n_ind))
    D = np.abs(x[:, None] - x[None, :])
    ids = [f"i{j:02d}" for j in range(n_ind)]
    g = np.linalg.cholesky(np.exp(-D / 2.0) + 1e-9 * np.eye(n_ind)) @ rng.standard_normal(n_ind)
    rows = np.repeat(np.arange(n_ind), reps)
    frame = pd.DataFrame({"id": [ids[r] for r in rows], "y": 3.0 + 2.0 * g[rows] + rng.standard_normal(len(rows))})
    return frame, D, ids


@pytest.mark.slow
def test_kernel_length_scale_derivative():
    frame, D, ids = _kernel_data()
    K = lambda ell: jnp.exp(-jnp.asarray(D) / ell)  # noqa: E731
    f = jaxlmm.fit_function("y ~ 1 + (1 | id)", frame, relmat={"id": (np.exp(-D / 1.0), ids)})
    fit = jaxlmm.lmer("y ~ 1 + (1 | id)", frame, relmat={"id": (np.exp(-D / 1.0), ids)})
    np.testing.assert_allclose(f(f.y).theta, fit.theta, atol=1e-6)
    y = jnp.asarray(f.y)

    def loss(ell):
        s = f(y, relmat={"id": K(ell)})
        return s.theta[0] + 0.01 * s.criterion + jnp.sum(s.b[0] ** 2) / 40

    g = float(jax.jit(jax.grad(loss), compiler_options=f.compiler_options)(jnp.asarray(1.5)))
    h = 1e-4
    run = jax.jit(loss, compiler_options=f.compiler_options)
    fd = (float(run(1.5 + h)) - float(run(1.5 - h))) / (2 * h)
    assert g == pytest.approx(fd, rel=1e-4)
    _check_against_differences(f, f.y, _directions(f.nobs, 2, seed=7))   # and w.r.t. the response
