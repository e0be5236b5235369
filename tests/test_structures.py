"""Covariance structures of random-effects terms (issue J, first part): glmmTMB's us() and diag()."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import jaxlmm
from jaxlmm import FormulaError

pytestmark = pytest.mark.usefixtures("x64")

STRUCTURED = pathlib.Path(__file__).parent / "reference" / "structured"


@pytest.fixture(scope="module")
def sleep():
    return jaxlmm.load_dataset("sleepstudy")


def test_diag_matches_glmmtmb(sleep):
    """glmmTMB 1.1.5 REML fit of sleep_diag (tests/reference/structured, made by structured_refs.R)."""
    ref = json.loads((STRUCTURED / "sleep_diag.json").read_text())
    fit = jaxlmm.lmer(ref["formula"], sleep)
    np.testing.assert_allclose(fit.criterion, ref["criterion"], rtol=1e-6)
    np.testing.assert_allclose(fit.fixef.to_numpy(), list(ref["beta"].values()), rtol=1e-3)
    np.testing.assert_allclose(fit.se.to_numpy(), list(ref["se"].values()), rtol=1e-3)
    np.testing.assert_allclose(fit.sigma, ref["sigma"], rtol=2e-3)
    (term,) = ref["terms"]
    lam = fit.lambdas[0]
    np.testing.assert_allclose(fit.sigma ** 2 * lam @ lam.T, term["cov"], rtol=2e-3, atol=1e-8)
    assert fit.theta_names == ["Subject.(Intercept)", "Subject.Days"]
    v = fit.varcorr
    assert list(v["var2"]) == ["", "", "Days", ""] and v["vcov"].iloc[2] == 0.0


def test_us_is_lme4s_term_and_diag_is_double_bar_for_covariates(sleep):
    plain = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    us = jaxlmm.lmer("Reaction ~ Days + us(Days | Subject)", sleep)
    np.testing.assert_allclose(us.theta, plain.theta, rtol=1e-6)
    np.testing.assert_allclose(us.criterion, plain.criterion, rtol=1e-10)
    diag = jaxlmm.lmer("Reaction ~ Days + diag(Days | Subject)", sleep, reml=False)
    bars = jaxlmm.lmer("Reaction ~ Days + (Days || Subject)", sleep, reml=False)
    np.testing.assert_allclose(diag.theta, bars.theta, rtol=1e-6)
    np.testing.assert_allclose(diag.criterion, bars.criterion, rtol=1e-10)


def test_diag_in_a_batch_and_in_inference(sleep):
    single = jaxlmm.lmer("Reaction ~ Days + diag(Days | Subject)", sleep)
    batch = jaxlmm.lmer("~ Days + diag(Days | Subject)", sleep, responses=["Reaction"])
    np.testing.assert_allclose(batch.theta.to_numpy()[0], single.theta, rtol=1e-5)
    ci = single.confint(method="profile")
    assert list(ci.index[:3]) == ["sd_(Intercept)|Subject", "sd_Days|Subject", "sigma"]
    assert np.all(np.isfinite(ci.to_numpy()))
    kr = single.coef_table(ddf="kenward-roger")
    assert np.all(kr["df"] > 1)


@pytest.mark.parametrize("formula, message", [
    ("Reaction ~ Days + diag(Days || Subject)", "'||' cannot be used inside diag"),
    ("Reaction ~ diag(Days) + (1 | Subject)", "needs a random-effects term inside"),
    ("Reaction ~ Days + toep(Days | Subject)", "function 'toep' is not allowed"),
])
def test_structure_errors(sleep, formula, message):
    with pytest.raises(FormulaError, match=message):
        jaxlmm.lmer(formula, sleep)


def _structured_case(case):
    import pandas as pd

    ref = json.loads((STRUCTURED / f"{case}.json").read_text())
    data = pd.read_csv(STRUCTURED / "data" / ref["data"])
    for f in ref["factors"] if isinstance(ref["factors"], list) else [ref["factors"]]:
        data[f] = data[f].astype(str).astype("category")
    return ref, data


@pytest.mark.parametrize("case", ["machines_cs", pytest.param("repeated_ar1", marks=pytest.mark.slow)])
def test_ar1_and_cs_match_glmmtmb(case):
    """glmmTMB 1.1.5 REML fits: criterion, beta, implied covariances and sigma.

    Standard errors are lme4's (X'V^-1X)^-1 at the estimate; glmmTMB's sdreport adds the
    uncertainty of the covariance parameters, which is 0 in the balanced machines design
    (beta-hat does not depend on theta there) and up to 0.4% of the SE on repeated_ar1.
    """
    ref, data = _structured_case(case)
    fit = jaxlmm.lmer(ref["formula"], data)
    assert fit.converged
    np.testing.assert_allclose(fit.criterion, ref["criterion"], rtol=1e-8)
    np.testing.assert_allclose(fit.fixef.to_numpy(), list(ref["beta"].values()), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fit.sigma, ref["sigma"], rtol=1e-6)
    for lam, term in zip(fit.lambdas, ref["terms"]):
        np.testing.assert_allclose(fit.sigma ** 2 * lam @ lam.T, term["cov"], rtol=2e-5, atol=1e-6)
    se_tol = 1e-5 if case == "machines_cs" else 5e-3
    np.testing.assert_allclose(fit.se.to_numpy(), list(ref["se"].values()), rtol=se_tol)
    assert "z-tests" in fit.summary()


def test_structured_inference_not_yet_supported_says_so():
    ref, data = _structured_case("machines_cs")
    fit = jaxlmm.lmer(ref["formula"], data)
    with pytest.raises(jaxlmm.JaxlmmError, match="not supported yet"):
        fit.confint(method="profile")
    with pytest.raises(jaxlmm.JaxlmmError, match="not supported yet"):
        fit.coef_table(ddf="kenward-roger")


def test_ar1_needs_a_factor():
    _, data = _structured_case("repeated_ar1")
    with pytest.raises(FormulaError, match=r"ar1\(\) is a covariance over the levels of a factor"):
        jaxlmm.lmer("y ~ visit + ar1(0 + visit | subject)", data)
