"""Issue S item 3, structured part: no silently wrong numbers.

1. A ``covariances=`` entry attaches only to a term written without a structure keyword; one that
   would replace a built-in structure (``gau(...)``, ``us(...)``, ...) is an error naming both.
2. ``dispformula`` is glmmTMB's log-linear dispersion model: ``log r_i = x_i^T delta`` with ``x_i`` the
   row of its model matrix (a numeric column is a log-linear trend, not a factor).  References:
   glmmTMB 1.1.5, tests/reference/structured/dispersion/disp_refs.R.
"""

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
DISPERSION = ["sleep_disp_days", "sleep_disp_days_intercept", "sleep_disp_factor_days_intercept",
              "sleep_disp_days_ml", "chick_disp_diet_by_time"]


def user_gau(p, coords):
    """glmmTMB's gau written by a user: tau^2 exp(-d^2 / l^2), p = (tau, log l)."""
    diff = coords[:, None, :] - coords[None, :, :]
    return p[0] ** 2 * jnp.exp(-jnp.sum(diff * diff, axis=-1) * jnp.exp(-2.0 * p[1]))


def user_exp(p, coords):
    diff = coords[:, None, :] - coords[None, :, :]
    d = jnp.sqrt(jnp.sum(diff * diff, axis=-1) + 1e-300) * jnp.exp(-p[1])
    return p[0] ** 2 * jnp.exp(-d)


def _cov(fn, name):
    return jaxlmm.covariance(fn, 2, lower=[0.0, -np.inf], start=[1.0, 1.0], scales=[0], names=["sd", "log_range"],
                             name=name)


@pytest.fixture(scope="module")
def field():
    return _structured_case("field_gau", "extra")


@pytest.fixture(scope="module")
def sleep():
    return jaxlmm.load_dataset("sleepstudy")


# ------------------------------------------------------------------ 1. covariances= never replaces a structure
@pytest.mark.parametrize("term", ["gau(0 + pos(x, y) | field)", "exp(0 + pos(x, y) | field)",
                                  "us(0 + pos(x, y) | field)", "diag(0 + pos(x, y) | field)"])
def test_user_covariance_on_a_built_in_structure_is_an_error(field, term):
    """Before: ``gau(...)`` with covariances={"field": my_exp} was fitted as my_exp (criterion 334.667, not
    glmmTMB's gau 334.395).  Now an error naming the group and both structures, before any fitting."""
    _, data = field
    formula = f"yield ~ 0 + variety + (1 | block) + {term}"
    keyword = term.split("(")[0]
    with pytest.raises(FormulaError, match=rf"covariances\['field'\].*{keyword}\(0 \+ pos\(x, y\) \| field\).*"
                                           rf"built-in structure {keyword}\(\).*'my_exp'"):
        jaxlmm.build_design(formula, data, covariances={"field": _cov(user_exp, "my_exp")})
    with pytest.raises(FormulaError, match="my_exp"):
        jaxlmm.lmer(formula, data, covariances={"field": _cov(user_exp, "my_exp")})


def test_user_covariance_on_ar1_and_cs_terms_is_an_error(sleep):
    cov = jaxlmm.covariance(lambda p, c: p[0] ** 2 * jnp.eye(c.shape[0]), 1, lower=[0.0], name="iid")
    for term in ("ar1(0 + factor(Days) | Subject)", "cs(0 + factor(Days) | Subject)"):
        with pytest.raises(FormulaError, match=r"covariances\['Subject'\].*(ar1|cs)\(\).*'iid'"):
            jaxlmm.lmer(f"Reaction ~ Days + {term}", sleep, covariances={"Subject": cov})
    # a plain term asks for the user's covariance: it is fitted (iid effects of the ten days).  With one
    # observation per subject and day they are confounded with the residual: the criterion is flat along
    # (scale, sigma), and the fit says so (issue U)
    fit = jaxlmm.lmer("Reaction ~ Days + (0 + factor(Days) | Subject)", sleep, covariances={"Subject": cov})
    assert str(fit.status) == "not_identified" and fit.model.marginal.terms[0].cov.name == "iid"


def test_user_covariance_attaches_to_the_plain_term_that_asks_for_it(field):
    """Written without a keyword the term gets the user's covariance: a user-written gau equals the
    built-in gau (and glmmTMB's fit), a user-written exp does not."""
    ref, data = field
    built_in = jaxlmm.lmer(ref["formula"], data)
    check_against_glmmtmb(built_in, ref)
    plain = "yield ~ 0 + variety + (1 | block) + (0 + pos(x, y) | field)"
    user = jaxlmm.lmer(plain, data, covariances={"field": _cov(user_gau, "my_gau")})
    assert user.converged and [t.cov.name for t in user.model.marginal.terms] == ["us", "my_gau"]
    np.testing.assert_allclose(user.criterion, built_in.criterion, rtol=1e-8)
    np.testing.assert_allclose(user.fixef, built_in.fixef, rtol=1e-5)
    np.testing.assert_allclose(user.term_covariances[1], built_in.term_covariances[1], rtol=1e-4,
                               atol=1e-6 * np.max(built_in.term_covariances[1]))
    other = jaxlmm.lmer(plain, data, covariances={"field": _cov(user_exp, "my_exp")})
    assert abs(other.criterion - ref["criterion"]) > 0.1


# ------------------------------------------------------------------ 2. dispformula is log-linear (glmmTMB's)
def _dispersion_case(case):
    ref = json.loads((STRUCTURED / "dispersion" / f"{case}.json").read_text())
    data = pd.read_csv(STRUCTURED / "data" / ref["data"])
    for f in ref["factors"]:
        data[f] = data[f].astype(str).astype("category")
    return ref, data


@pytest.mark.parametrize("case", DISPERSION)
def test_dispformula_matches_glmmtmb(case):
    """Criterion, beta and SEs, dispersion coefficients and their SEs, every row's residual SD and the
    term covariances against glmmTMB 1.1.5.  sleep_disp_days_intercept is ``Reaction ~ Days + (1 | Subject)``
    with ``~ Days``: 1776.522 (glmmTMB), where the factor reading gave 1755.589 (glmmTMB's ``~ factor(Days)``,
    sleep_disp_factor_days_intercept)."""
    ref, data = _dispersion_case(case)
    fit = jaxlmm.lmer(ref["formula"], data, dispformula=ref["dispformula"], reml=ref["reml"])
    assert fit.converged and fit.reml == ref["reml"]
    np.testing.assert_allclose(fit.criterion, ref["criterion"], rtol=1e-9)
    np.testing.assert_allclose(fit.fixef[list(ref["beta"])], list(ref["beta"].values()), rtol=1e-5)
    np.testing.assert_allclose(fit.se[list(ref["se"])], list(ref["se"].values()), rtol=1e-4)
    names = [f"dispersion.{k}" for k in ref["dispersion"]]
    assert list(fit.dispersion.index) == names
    assert fit.model.theta_names[-len(names):] == names
    np.testing.assert_allclose(fit.dispersion.to_numpy(), list(ref["dispersion"].values()), rtol=0, atol=1e-4)
    cp = fit.covariance_parameters.set_index("parameter")
    assert list(cp.loc[names, "structure"]) == ["dispersion"] * len(names)
    np.testing.assert_allclose(cp.loc[names, "se"], list(ref["dispersion_se"].values()), rtol=1e-3)
    row_sd = fit.residual_sd.to_numpy()[np.asarray(fit.design.resid_codes)]
    np.testing.assert_allclose(row_sd, ref["row_residual_sd"], rtol=1e-4)
    for cov, term in zip(fit.term_covariances, ref["terms"]):
        np.testing.assert_allclose(cov, term["cov"], rtol=0, atol=1e-4 * np.max(np.abs(term["cov"])))


def test_numeric_dispformula_is_a_trend_not_a_factor(sleep):
    """``~ Days``: two dispersion coefficients and a residual SD per distinct Days, log-linear in Days."""
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep, dispformula="~ Days")
    assert len(fit.dispersion) == 2 and list(fit.residual_sd.index) == [str(d) for d in range(10)]
    log_var = 2.0 * np.log(fit.residual_sd.to_numpy())
    np.testing.assert_allclose(np.diff(log_var), fit.dispersion["dispersion.Days"], rtol=1e-10)
    factor = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep, dispformula="~ factor(Days)")
    assert len(factor.dispersion) == 10 and factor.criterion < fit.criterion - 10.0   # nested, and distinct
    assert list(factor.residual_sd.index) == list(fit.residual_sd.index)
    # a continuous column with one row per value is a trend too (no "two observations per level" rule)
    data = sleep.assign(x=np.random.default_rng(0).normal(size=len(sleep)))
    cont = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", data, dispformula="~ x")
    assert cont.converged and len(cont.dispersion) == 2 and len(cont.residual_sd) == len(sleep)


def test_intercept_only_dispformula_is_the_model_without_one(sleep):
    plain = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep, reml=False)
    one = jaxlmm.lmer("Reaction ~ Days + ar1(0 + factor(Days) | Subject)", sleep, dispformula="~ 1", reml=False)
    ar1 = jaxlmm.lmer("Reaction ~ Days + ar1(0 + factor(Days) | Subject)", sleep, reml=False)
    np.testing.assert_allclose(one.criterion, ar1.criterion, rtol=1e-9)
    np.testing.assert_allclose(np.exp(0.5 * one.dispersion.iloc[0]), ar1.sigma, rtol=1e-4)
    assert list(ar1.dispersion.index) == ["residual_sd.Residual"] and plain.converged


def test_factor_dispformula_is_unchanged():
    """A factor's dispformula is the special case of treatment contrasts: the same fit as before the
    log-linear model (glmmTMB's sulfur_hetres as in test_structures; Kenward-Roger's df as measured
    before the change, where the residual parameters were one SD per level)."""
    ref, data = _structured_case("sulfur_hetres")
    fit = jaxlmm.lmer(ref["formula"], data, dispformula="~ location")
    check_against_glmmtmb(fit, ref)
    assert list(fit.dispersion.index) == ["dispersion.(Intercept)", "dispersion.locationGranada",
                                          "dispersion.locationLeon"]
    assert list(fit.residual_sd.index) == ["Cordoba", "Granada", "Leon"]
    cp = fit.covariance_parameters.set_index("parameter")
    levels = ["variance.Cordoba", "variance.Granada", "variance.Leon"]
    np.testing.assert_allclose(cp.loc[levels, "estimate"], fit.residual_sd.to_numpy() ** 2, rtol=1e-12)
    # the levels' variances and their Wald SEs as before (then from the SD per level, now by the delta method)
    np.testing.assert_allclose(cp.loc[levels, "estimate"], [324665.53787877, 208783.33333333, 100333.86785400],
                               rtol=1e-6)
    np.testing.assert_allclose(cp.loc[levels, "se"], [138437.85050346, 76236.89419852, 42782.50499447], rtol=1e-6)
    kr = fit.coef_table(ddf="kenward-roger")
    np.testing.assert_allclose(kr["df"], [11.0, 15.0, 11.0], rtol=1e-6)
    np.testing.assert_allclose(kr["Std. Error"], [164.48544461, 114.23203725, 91.43935506], rtol=1e-6)


def test_log_linear_derivatives_on_every_path(sleep):
    """The residual model's first and second derivatives: closed form (block and dense) against finite
    differences, lanes against one evaluation, and the JAX objective's value and gradient."""
    import jax

    from jaxlmm.core.marginal.criterion import evaluate, evaluate_dense
    from jaxlmm.core.marginal.blocks import BlockLayout, block_terms, row_blocks
    from jaxlmm.core.marginal.lanes import evaluate_lanes

    data = sleep.assign(grp=np.where(sleep["Subject"].astype(int) % 2 == 0, "a", "b"))
    model = jaxlmm.Model(jaxlmm.build_design("Reaction ~ Days + (Days | Subject)", data, dispformula="~ grp * Days"))
    mm, y = model.marginal, np.asarray(model.design.y, float)
    assert mm.n_resid == 4 and not mm.residual.linear_in_levels
    phi = np.array([25.0, 1.0, 6.0, 5.5, 0.3, 0.1, -0.05])
    for rows in (np.arange(len(y)), np.arange(len(y))[::3]):
        for reml in (True, False):
            e, d = evaluate(mm, phi, y[rows], rows, reml), evaluate_dense(mm, phi, y[rows], rows, reml)
            np.testing.assert_allclose(e.value, d.value, rtol=1e-12)
            np.testing.assert_allclose(e.grad, d.grad, rtol=1e-9, atol=1e-9 * np.max(np.abs(d.grad)))
            np.testing.assert_allclose(e.hess, d.hess, rtol=1e-9, atol=1e-9 * np.max(np.abs(d.hess)))
    rows = np.arange(len(y))
    e = evaluate(mm, phi, y, rows, True)
    h = 1e-6
    for j in range(4, 7):
        step = np.zeros(len(phi))
        step[j] = h
        up, down = evaluate(mm, phi + step, y, rows, True), evaluate(mm, phi - step, y, rows, True)
        np.testing.assert_allclose(e.grad[j], (up.value - down.value) / (2 * h), rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(e.hess[:, j], (up.grad - down.grad) / (2 * h), rtol=1e-5, atol=1e-4)
    layout = BlockLayout(row_blocks(mm, rows))
    phis = np.stack([phi, phi * 1.05])
    v, g, H, _ = evaluate_lanes(mm, phis, np.column_stack([y, y[::-1]]), rows, True, layout,
                                block_terms(mm, rows, layout))
    for b, yy in enumerate((y, y[::-1])):
        eb = evaluate(mm, phis[b], yy, rows, True)
        np.testing.assert_allclose([v[b], *g[b]], [eb.value, *eb.grad], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(H[b], eb.hess, rtol=1e-10, atol=1e-10 * np.max(np.abs(eb.hess)))
    with jax.enable_x64(True):
        np.testing.assert_allclose(float(model.objective(phi)), e.value, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(jax.grad(model.objective)(jnp.asarray(phi))), e.grad, rtol=1e-7,
                                   atol=1e-7)


def test_numeric_dispformula_in_inference_batch_and_bootstrap(sleep):
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep, dispformula="~ Days")
    for ddf in ("satterthwaite", "kenward-roger"):
        table = fit.coef_table(ddf=ddf)
        assert np.all(np.isfinite(table["df"])) and np.all(table["df"] > 1)
    assert "dispersion.Days" in fit.summary() and "Residual ... (2 more levels)" in fit.summary()
    assert list(fit.varcorr["grp"]).count("Residual") == 10
    rng = np.random.default_rng(2)
    Y = np.column_stack([sleep["Reaction"].to_numpy(), sleep["Reaction"].to_numpy() + rng.normal(0, 5, len(sleep))])
    batch = jaxlmm.lmer("~ Days + (Days | Subject)", sleep, responses=Y, dispformula="~ Days")
    assert list(batch.diagnostics["converged"]) == [True, True]
    np.testing.assert_allclose(batch.criterion.iloc[0], fit.criterion, rtol=1e-10)
    np.testing.assert_allclose(batch.dispersion.iloc[0], fit.dispersion, rtol=1e-5)
    np.testing.assert_allclose(batch.residual_sd.iloc[0], fit.residual_sd, rtol=1e-5)
    table = fit.bootstrap(nsim=3, seed=1)
    assert [c for c in table.columns if c.startswith("sigma")] == [f"sigma_{d}" for d in range(10)]
    assert np.all(np.isfinite(table.to_numpy()))


@pytest.mark.parametrize("dispformula, error, message", [
    ("Reaction ~ Days", FormulaError, "one-sided formula"),
    ("~ Days | Subject", FormulaError, "one-sided formula"),
    ("~ 0", FormulaError, "has no columns"),
    ("~ log(Days)", DataError, "not finite"),
    ("~ nothere", DataError, "nothere"),
])
def test_dispformula_bad_input(sleep, dispformula, error, message):
    with pytest.raises(error, match=message):
        jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", sleep, dispformula=dispformula)
