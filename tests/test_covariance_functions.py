"""Issue J, second part: gau(), user-written covariances, the sigma -> 0 boundary, results, bad input."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

import jax.numpy as jnp

import jaxlmm
from jaxlmm import DataError, FormulaError
from test_structures import _structured_case, check_against_glmmtmb

pytestmark = pytest.mark.usefixtures("x64")

STRUCTURED = pathlib.Path(__file__).parent / "reference" / "structured"


def user_ar1(p, coords):
    """A homogeneous AR(1) over the term's columns, written as a user would."""
    lag = jnp.abs(coords[:, None, 0] - coords[None, :, 0])
    return p[0] ** 2 * jnp.tanh(p[1]) ** lag


def matern32(p, coords):
    """Matern covariance with smoothness 3/2: tau^2 (1 + sqrt(3) d / l) exp(-sqrt(3) d / l)."""
    diff = coords[:, None, :] - coords[None, :, :]
    d = jnp.sqrt(jnp.sum(diff * diff, axis=-1) + 1e-300) * jnp.sqrt(3.0) * jnp.exp(-p[1])
    return p[0] ** 2 * (1.0 + d) * jnp.exp(-d)


@pytest.fixture(scope="module")
def machines():
    return _structured_case("machines_cs")[1]


def test_gau_matches_glmmtmb():
    ref, data = _structured_case("field_gau", "extra")
    check_against_glmmtmb(jaxlmm.lmer(ref["formula"], data), ref)


def test_user_ar1_equals_built_in_ar1():
    _, data = _structured_case("sleep_ar1_boundary", "heldout")
    formula = "Reaction ~ Days + ar1(0 + factor(Days) | Subject)"
    built_in = jaxlmm.lmer(formula, data)
    cov = jaxlmm.covariance(user_ar1, 2, lower=[0.0, -8.0], upper=[np.inf, 8.0], start=[1.0, 0.55], scales=[0],
                            names=["sd", "a"])
    user = jaxlmm.lmer("Reaction ~ Days + (0 + factor(Days) | Subject)", data, covariances={"Subject": cov})
    assert user.converged and built_in.converged
    np.testing.assert_allclose(user.criterion, built_in.criterion, rtol=1e-9)
    np.testing.assert_allclose(user.theta, built_in.theta, rtol=1e-6)
    np.testing.assert_allclose(user.fixef, built_in.fixef, rtol=1e-6)
    np.testing.assert_allclose(user.term_covariances[0], built_in.term_covariances[0], rtol=1e-6)


def test_user_covariance_gradient_and_hessian_equal_finite_differences():
    from jaxlmm.core.marginal.criterion import evaluate

    _, data = _structured_case("field_exp")
    cov = jaxlmm.covariance(matern32, 2, lower=[0.0, -np.inf], start=[1.0, 1.0], scales=[0], names=["sd", "log_range"])
    model = jaxlmm.Model(jaxlmm.build_design("yield ~ 0 + variety + (1 | block) + (0 + pos(x, y) | field)", data,
                                             covariances={"field": cov}))
    mm, y = model.marginal, np.asarray(model.design.y, float)
    rows = np.arange(len(y))
    phi = np.array([0.8, 1.7, 0.9, 0.6])
    e = evaluate(mm, phi, y, rows, True)
    h = 1e-5
    for j in range(len(phi)):
        step = np.zeros(len(phi))
        step[j] = h
        up, down = evaluate(mm, phi + step, y, rows, True), evaluate(mm, phi - step, y, rows, True)
        np.testing.assert_allclose(e.grad[j], (up.value - down.value) / (2 * h), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(e.hess[:, j], (up.grad - down.grad) / (2 * h), rtol=1e-4, atol=1e-5)
    fit = jaxlmm.lmer("yield ~ 0 + variety + (1 | block) + (0 + pos(x, y) | field)", data,
                      covariances={"field": cov})
    assert fit.converged and np.all(np.isfinite(fit.se))
    assert list(fit.covariance_parameters["parameter"][-3:]) == ["sd", "log_range", "variance"]


def test_residual_variance_at_its_boundary_is_reached_and_reported():
    """Data with no residual noise: the AR(1) term absorbs all of it (sigma -> 0) and the fit says so."""
    rng = np.random.default_rng(5)
    n_sub, n_t, rho = 60, 10, 0.8
    e = np.zeros((n_sub, n_t))
    e[:, 0] = rng.normal(size=n_sub)
    for t in range(1, n_t):
        e[:, t] = rho * e[:, t - 1] + np.sqrt(1 - rho ** 2) * rng.normal(size=n_sub)
    data = pd.DataFrame({"g": np.repeat([f"s{i:02d}" for i in range(n_sub)], n_t), "t": np.tile(np.arange(n_t), n_sub),
                         "y": 3.0 + 2.0 * e.reshape(-1)})
    with pytest.warns(jaxlmm.JaxlmmWarning, match="boundary"):
        fit = jaxlmm.lmer("y ~ 1 + ar1(0 + factor(t) | g)", data)
    assert fit.converged
    assert fit.residual_sd.iloc[0] < 1e-4
    assert any(m.startswith("boundary (residual variance)") for m in fit.messages)
    cp = fit.covariance_parameters.set_index("parameter")
    assert abs(cp.loc["rho", "estimate"] - rho) < 0.15 and np.isnan(fit.covariance_parameters["se"].iloc[-1])


def test_sleepstudy_ar1_reaches_a_lower_optimum_than_glmmtmb():
    """glmmTMB stops at sigma = 0.009 (criterion 1739.21); the criterion is lower inside (1734.19 at
    sigma = 15.1): our criterion at glmmTMB's estimate equals glmmTMB's, and the fit goes below it."""
    from jaxlmm.core.marginal.criterion import evaluate

    ref, data = _structured_case("sleep_ar1_boundary", "heldout")
    fit = jaxlmm.lmer(ref["formula"], data)
    C = np.asarray(ref["terms"][0]["cov"])
    tau = np.sqrt(C[0, 0])
    phi = np.array([tau, np.arctanh(C[1, 0] / C[0, 0]), ref["sigma"]])
    mm = fit.model.marginal
    y = np.asarray(fit.design.y, float)
    at_glmmtmb = evaluate(mm, phi, y, np.arange(len(y)), True).value
    np.testing.assert_allclose(at_glmmtmb, ref["criterion"], rtol=1e-6)
    assert fit.converged and fit.criterion < ref["criterion"] - 1.0


def test_results_of_a_structured_fit(machines):
    fit = jaxlmm.lmer("score ~ Machine + cs(0 + Machine | Worker)", machines)
    vc = fit.varcorr
    assert list(vc.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    assert len(vc) == 3 + 3 + 1 and list(vc["grp"]) == ["Worker"] * 6 + ["Residual"]
    cp = fit.covariance_parameters
    assert list(cp.columns) == ["grp", "structure", "parameter", "estimate", "se"]
    assert list(cp["parameter"]) == ["var.MachineA", "var.MachineB", "var.MachineC", "rho", "variance"]
    assert np.all(np.isfinite(cp["se"])) and np.all(cp["se"] > 0)
    C = fit.term_covariances[0]
    np.testing.assert_allclose(cp["estimate"][:3], np.diag(C), rtol=1e-10)
    text = fit.summary()
    assert "Covariance parameters (Wald SEs):" in text and "Worker cs rho" in text
    sat = fit.coef_table(ddf="satterthwaite")
    assert np.all(np.isfinite(sat["df"])) and np.all(sat["df"] > 1)
    assert set(fit.confint(method="wald").columns) == {"2.5 %", "97.5 %"}


def test_heteroscedastic_residuals_in_inference():
    ref, data = _structured_case("sulfur_hetres")
    fit = jaxlmm.lmer(ref["formula"], data, dispformula="~ location")
    assert list(fit.residual_sd.index) == ["Cordoba", "Granada", "Leon"]
    sat = fit.coef_table(ddf="satterthwaite")
    # the block variance is at 0: each location's mean is a one-sample mean with its own variance
    np.testing.assert_allclose(sat["df"].to_numpy(), [11.0, 15.0, 11.0], rtol=1e-4)
    emm = jaxlmm.emmeans(fit, "location")
    np.testing.assert_allclose(emm.table["SE"].to_numpy() if hasattr(emm, "table") else emm["SE"].to_numpy(),
                               fit.se.to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("formula, kwargs, error, message", [
    ("Reaction ~ Days + exp(0 + pos(Subject) | Subject)", {}, DataError, "pos\\(\\) needs numeric coordinates"),
    ("Reaction ~ Days + exp(pos(Days) | Subject)", {}, FormulaError, "without an intercept"),
    ("Reaction ~ Days + ou(0 + pos(Days, Reaction) | Subject)", {}, FormulaError, "ou\\(\\) is over one coordinate"),
    ("Reaction ~ Days + (1 | Subject)", {"dispformula": "~ nothere"}, DataError, "nothere"),
    ("Reaction ~ Days + (1 | Subject)", {"dispformula": "Reaction ~ Days"}, FormulaError, "one-sided formula"),
    ("Reaction ~ Days + (1 | Subject)", {"covariances": {"Subject": lambda p, c: p}}, DataError,
     "jaxlmm.covariance"),
    ("Reaction ~ Days + (1 | Subject)", {"covariances": {"Days": None}}, DataError, "jaxlmm.covariance"),
])
def test_structured_bad_input(formula, kwargs, error, message):
    data = jaxlmm.load_dataset("sleepstudy")
    with pytest.raises(error, match=message):
        jaxlmm.lmer(formula, data, **kwargs)


def test_dispformula_level_with_one_observation():
    data = jaxlmm.load_dataset("sleepstudy").copy()
    data["site"] = np.where(np.arange(len(data)) == 0, "lonely", "many")
    with pytest.raises(DataError, match="lonely.*fewer than two observations"):
        jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data, dispformula="~ site")


def test_covariance_constructor_checks():
    with pytest.raises(DataError, match="must be a function"):
        jaxlmm.covariance(3, 2)
    with pytest.raises(DataError, match="expected 2 values"):
        jaxlmm.covariance(user_ar1, 2, lower=[0.0])
    assert json.loads(json.dumps(list(jaxlmm.covariance(user_ar1, 2).names))) == ["p1", "p2"]


@pytest.mark.parametrize("case, folder", [("repeated_ar1", ""), ("sulfur_hetres", ""), ("machines_cs", "")])
def test_block_evaluation_equals_the_dense_one(case, folder):
    """V block-diagonal over subjects (marginal_blocks.py) gives the dense formulas' numbers."""
    from jaxlmm.core.marginal.criterion import evaluate, evaluate_dense
    from jaxlmm.model.marginal_design import start_values

    ref, data = _structured_case(case, folder)
    model = jaxlmm.Model(jaxlmm.build_design(ref["formula"], data, dispformula=ref.get("dispformula")))
    mm, y = model.marginal, np.asarray(model.design.y, float)
    rows = np.arange(len(y))[::2] if case == "repeated_ar1" else np.arange(len(y))   # a subset of rows too
    phi = start_values(model, None) * (1.0 + 0.2 * np.random.default_rng(0).random(mm.n_params))
    for reml in (True, False):
        a, b = evaluate(mm, phi, y[rows], rows, reml), evaluate_dense(mm, phi, y[rows], rows, reml)
        np.testing.assert_allclose(a.value, b.value, rtol=1e-12)
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-9, atol=1e-9 * np.max(np.abs(b.grad)))
        np.testing.assert_allclose(a.hess, b.hess, rtol=1e-9, atol=1e-9 * np.max(np.abs(b.hess)))


def test_structured_batch_equals_single_fits(machines):
    """Many responses of a cs() model (one with a missing value) equal separate fits of each."""
    rng = np.random.default_rng(1)
    Y = np.column_stack([machines["score"].to_numpy() + rng.normal(0, 1, len(machines)) * (i > 0) for i in range(3)])
    Y[3, 2] = np.nan
    batch = jaxlmm.lmer("~ Machine + cs(0 + Machine | Worker)", machines, responses=Y)
    assert list(batch.diagnostics["converged"]) == [True] * 3
    assert list(batch.diagnostics["n_obs"]) == [54, 54, 53]
    for i in range(3):
        keep = np.isfinite(Y[:, i])
        data = machines.loc[keep].assign(y=Y[keep, i])
        single = jaxlmm.lmer("y ~ Machine + cs(0 + Machine | Worker)", data)
        np.testing.assert_allclose(batch.criterion.iloc[i], single.criterion, rtol=1e-10)
        np.testing.assert_allclose(batch.theta.iloc[i], single.theta, rtol=1e-5)
        np.testing.assert_allclose(batch.fixef.iloc[i], single.fixef, rtol=1e-7)
        np.testing.assert_allclose(batch.se.iloc[i], single.se, rtol=1e-5)
    np.testing.assert_allclose(batch.trait(2).criterion, batch.criterion.iloc[2], rtol=1e-10)


def test_the_worked_examples_in_docs_run():
    """Every ```python block of docs/covariances.md runs (from the repository root)."""
    import os
    import re
    import warnings

    root = pathlib.Path(__file__).parent.parent
    blocks = re.findall(r"```python\n(.*?)```", (root / "docs" / "covariances.md").read_text(), re.S)
    assert len(blocks) == 2
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for code in blocks:
                exec(compile(code.replace("print(", "str("), "docs/covariances.md", "exec"), {})
    finally:
        os.chdir(cwd)


def test_fit_function_of_a_structured_model_says_not_yet(machines):
    with pytest.raises(jaxlmm.JaxlmmError, match="structured covariances"):
        jaxlmm.fit_function("score ~ Machine + cs(0 + Machine | Worker)", machines)


@pytest.mark.slow   # long on 2 cores; CI runs it with the slow tests
def test_objective_of_a_structured_model_is_pure_jax(machines):
    """``Model.objective`` of a structured model: its criterion as a JAX function of every parameter;
    autodiff equals the closed-form derivatives the fit uses."""
    import jax

    from jaxlmm.core.marginal.criterion import evaluate

    fit = jaxlmm.lmer("score ~ Machine + cs(0 + Machine | Worker)", machines)
    model = fit.model
    phi = fit.parameters.to_numpy() * 1.1
    np.testing.assert_allclose(float(model.objective(fit.parameters.to_numpy())), fit.criterion, rtol=1e-10)
    with jax.enable_x64(True):
        g = np.asarray(jax.grad(model.objective)(jnp.asarray(phi)))
        H = np.asarray(jax.jit(jax.hessian(model.objective))(jnp.asarray(phi)))
    y = np.asarray(model.design.y, float)
    e = evaluate(model.marginal, phi, y, np.arange(len(y)), True)
    np.testing.assert_allclose(g, e.grad, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(H, e.hess, rtol=1e-7, atol=1e-7)


def test_marginal_kenward_roger_and_satterthwaite_equal_pbkrtest_and_lmertest(machines):
    """A random intercept written as a user covariance linear in its variance goes through the marginal
    engine; its Kenward-Roger and Satterthwaite tables equal those of lme4's model (pbkrtest, lmerTest)."""
    plain = jaxlmm.lmer("score ~ Machine + (1 | Worker)", machines)
    var = jaxlmm.covariance(lambda p, c: p[0] * jnp.ones((1, 1)), 1, lower=[0.0], start=[10.0], names=["variance"])
    user = jaxlmm.lmer("score ~ Machine + (1 | Worker)", machines, covariances={"Worker": var})
    assert isinstance(user, jaxlmm.StructuredResult)
    np.testing.assert_allclose(user.criterion, plain.criterion, rtol=1e-10)
    for ddf in ("kenward-roger", "satterthwaite"):
        a, b = plain.coef_table(ddf=ddf), user.coef_table(ddf=ddf)
        np.testing.assert_allclose(b["df"], a["df"], rtol=1e-5)
        if ddf == "kenward-roger":
            np.testing.assert_allclose(b["Std. Error"], a["Std. Error"], rtol=1e-6)
    structured = jaxlmm.lmer("score ~ Machine + cs(0 + Machine | Worker)", machines).coef_table(ddf="kenward-roger")
    assert np.all(np.isfinite(structured["df"])) and np.all(structured["df"] > 1)


def test_ml_fit_matches_glmmtmb():
    """REML = FALSE (tests/reference/structured/ml/ml_refs.R)."""
    ref, data = _structured_case("machines_cs_ml", "ml")
    fit = jaxlmm.lmer(ref["formula"], data, reml=False)
    assert fit.converged and not fit.reml
    np.testing.assert_allclose(fit.criterion, ref["criterion"], rtol=1e-8)
    np.testing.assert_allclose(fit.fixef[list(ref["beta"])], list(ref["beta"].values()), rtol=1e-6)
    np.testing.assert_allclose(fit.sigma, ref["sigma"], rtol=1e-4)


def test_bootstrap_of_a_structured_model(machines):
    """Replicates as lanes of one Newton loop (core/marginal/lanes.py): equal to refitting each replicate."""
    from jaxlmm.core.marginal.criterion import evaluate
    from jaxlmm.core.marginal.blocks import BlockLayout, block_terms, row_blocks
    from jaxlmm.core.marginal.lanes import evaluate_lanes
    from jaxlmm.inference.bootstrap import simulate

    fit = jaxlmm.lmer("score ~ Machine + cs(0 + Machine | Worker)", machines)
    table = fit.bootstrap(nsim=6, seed=3)
    assert list(table.columns[:3]) == list(fit.fixef_names) and table.columns[-1] == "sigma"
    Y = simulate(fit, 6, 3, False)
    for i in (0, 5):
        data = machines.assign(y=Y[:, i])
        single = jaxlmm.lmer("y ~ Machine + cs(0 + Machine | Worker)", data)
        np.testing.assert_allclose(table.loc[i, list(fit.fixef_names)], single.fixef, rtol=1e-7)
        np.testing.assert_allclose(table.loc[i, "sigma"], single.sigma, rtol=1e-5)
    mm, rows = fit.model.marginal, np.arange(fit.nobs)
    layout = BlockLayout(row_blocks(mm, rows))
    phis = np.tile(fit.parameters.to_numpy(), (2, 1)) * [[1.0], [1.1]]
    v, g, H, _ = evaluate_lanes(mm, phis, Y[:, :2], rows, True, layout, block_terms(mm, rows, layout))
    for b in range(2):
        e = evaluate(mm, phis[b], Y[:, b], rows, True)
        np.testing.assert_allclose([v[b], *g[b]], [e.value, *e.grad], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(H[b], e.hess, rtol=1e-10, atol=1e-10 * np.max(np.abs(e.hess)))
    ci = fit.confint(method="boot", nsim=20, seed=1)
    assert np.all(np.isfinite(ci.to_numpy()))
