"""The results API beyond the reference numbers: coef, residuals, predict, summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import jaxlmm


def test_coef_adds_blups_to_fixef(fits):
    fit = fits.get("sleepstudy_slope_reml")
    coef = fit.coef["Subject"]
    re = fit.ranef_dict()["Subject"]
    assert list(coef.columns) == ["(Intercept)", "Days"]
    np.testing.assert_allclose(coef["Days"], fit.fixef["Days"] + re["Days"])
    assert coef.index[0] == "308"


def test_residuals(fits):
    fit = fits.get("sleepstudy_slope_reml")
    r = fit.residuals()
    np.testing.assert_allclose(r, fit.response - fit.fitted)
    np.testing.assert_allclose(fit.residuals("pearson", scaled=True), r / fit.sigma)
    with pytest.raises(ValueError):
        fit.residuals("deviance-ish")


def test_predict_newdata_and_re_form(fits):
    fit = fits.get("sleepstudy_slope_reml")
    data = jaxlmm.load_dataset("sleepstudy")
    np.testing.assert_allclose(fit.predict(data), fit.fitted, rtol=1e-12)
    np.testing.assert_allclose(fit.predict(), fit.fitted)
    pop = fit.predict(data, re_form="~0")
    np.testing.assert_allclose(pop, fit.fixef["(Intercept)"] + fit.fixef["Days"] * data["Days"])
    np.testing.assert_allclose(fit.predict(data, re_form="NA"), pop)
    # only the random intercepts
    part = fit.predict(data, re_form="~ (1 | Subject)")
    b0 = fit.ranef_dict()["Subject"]["(Intercept)"]
    np.testing.assert_allclose(part, pop + b0.loc[data["Subject"].astype(str)].to_numpy())
    with pytest.raises(jaxlmm.FormulaError, match="matches no random-effects term"):
        fit.predict(data, re_form="~ (1 | nothing)")


def test_uncorrelated_terms_varcorr_and_ranef(fits):
    fit = fits.get("sleepstudy_uncorr")
    assert list(fit.varcorr["grp"]) == ["Subject", "Subject.1", "Residual"]
    assert set(fit.ranef["group"]) == {"Subject"}
    assert list(fit.coef["Subject"].columns) == ["(Intercept)", "Days"]


def test_summary_reads_like_lme4(fits):
    text = fits.get("sleepstudy_slope_reml").summary()
    for piece in ["Linear mixed model fit by REML", "Formula: Reaction ~ Days + (Days | Subject)",
                  "REML criterion at convergence: 1743.6", "Scaled residuals:", "Random effects:",
                  " Groups   Name        Variance Std.Dev. Corr", "Residual",
                  "Number of obs: 180, groups:  Subject, 18", "Fixed effects:",
                  "Estimate Std. Error    df t value Pr(>|t|)", "Correlation of Fixed Effects:", "(Intr)",
                  "-0.138"]:
        assert piece in text, piece
    assert "Estimate Std. Error t value" in fits.get("sleepstudy_slope_reml").summary(ddf=None)
    ml = fits.get("sleepstudy_slope_ml").summary()
    assert "Linear mixed model fit by maximum likelihood" in ml and "df.resid" in ml


def test_repr_and_names(fits):
    fit = fits.get("pastes_nested")
    assert fit.theta_names == ["cask:batch.(Intercept)", "batch.(Intercept)"]
    assert "pastes" not in repr(fit) and "LmerResult" in repr(fit)
    assert set(fit.coef) == {"cask:batch", "batch"}


def test_weights_and_offset_match_transformed_fit():
    """Weights w on every row equal to c: same estimates; an offset shifts the intercept."""
    data = jaxlmm.load_dataset("sleepstudy")
    base = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data)
    w = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data, weights=np.full(len(data), 4.0))
    np.testing.assert_allclose(w.fixef, base.fixef, rtol=1e-7)
    assert w.sigma == pytest.approx(2 * base.sigma, rel=1e-7)
    off = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data, offset=np.full(len(data), 100.0))
    assert off.fixef["(Intercept)"] == pytest.approx(base.fixef["(Intercept)"] - 100.0, rel=1e-7)
    np.testing.assert_allclose(off.fitted, base.fitted, rtol=1e-9)
