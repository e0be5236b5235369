"""jaxlmm.Model: lme4's mkLmerDevfun as an object that fits, refits and fits many responses."""

from __future__ import annotations

import numpy as np
import pytest

import jaxlmm

pytestmark = pytest.mark.usefixtures("x64")

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep():
    return jaxlmm.load_dataset("sleepstudy")


def test_model_objective_fit_and_result_keep_one_model(sleep):
    model = jaxlmm.deviance_function(FORMULA, sleep)
    assert isinstance(model, jaxlmm.Model)
    fit = model.fit()
    assert fit.model is model and fit.design is model.design
    np.testing.assert_allclose(model.objective(fit.theta), fit.criterion, rtol=1e-12)
    np.testing.assert_allclose(model(fit.theta), fit.criterion, rtol=1e-12)
    np.testing.assert_allclose(fit.theta, jaxlmm.lmer(FORMULA, sleep).theta, rtol=1e-8)


def test_refits_go_through_the_model(sleep):
    fit = jaxlmm.lmer(FORMULA, sleep)
    ml = fit.refit_ml()
    assert ml.model.design is fit.model.design and not ml.reml
    np.testing.assert_allclose(ml.criterion, jaxlmm.lmer(FORMULA, sleep, reml=False).criterion, rtol=1e-9)
    y = fit.simulate(1, seed=3)[:, 0]
    again = fit.refit(y)
    assert again.model.design.terms == fit.design.terms
    np.testing.assert_allclose(again.response, y)


def test_fit_many_equals_separate_fits(sleep):
    fit = jaxlmm.lmer(FORMULA, sleep)
    Y = fit.simulate(3, seed=7)
    batch = fit.model.fit_many(Y, names=["a", "b", "c"])
    assert batch.model is not None and list(batch.traits) == ["a", "b", "c"]
    for j in range(3):
        single = fit.refit(Y[:, j])
        np.testing.assert_allclose(batch.fixef.iloc[j].to_numpy(), single.fixef.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(batch.trait("b").theta, fit.refit(Y[:, 1]).theta, rtol=1e-5, atol=1e-7)


def test_likelihood_ratio_test_is_anova(sleep):
    m0 = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    m1 = jaxlmm.lmer(FORMULA, sleep)
    a, b = jaxlmm.likelihood_ratio_test(m0, m1), jaxlmm.anova(m0, m1)
    np.testing.assert_allclose(a["Chisq"].to_numpy(dtype=float), b["Chisq"].to_numpy(dtype=float), equal_nan=True)
