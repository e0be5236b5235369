"""Inference against lmerTest / pbkrtest / emmeans / lme4 (tests/reference), each within 1e-3 relative."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from conftest import CASES, case_data, load_reference

pytestmark = pytest.mark.usefixtures("x64")

INFERENCE_CASES = [c for c in CASES if c != "insteval"]
KR_CASES = [c for c in INFERENCE_CASES if "kenward_roger" in load_reference(c)]
ANOVA_CASES = [c for c in INFERENCE_CASES if load_reference(c).get("anova_satterthwaite")]
EMM_CASES = [c for c in INFERENCE_CASES if load_reference(c).get("emmeans_kr")]
PROFILE_FAST = ["sleepstudy_slope_reml", "dyestuff", "clusters", "shrinkage_2", "shrinkage_3"]
PROFILE_SLOW = [c for c in INFERENCE_CASES if "confint_profile" in load_reference(c) and c not in PROFILE_FAST]
RTOL = 1e-3


def close(actual, expected, rtol=RTOL, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=rtol, atol=atol)


def close_p(actual, expected):
    """p-values: 1e-3 relative on the log scale.  Far in the tail a p-value moves by more than its df's
    relative error (penicillin: df within 1e-4 of lmerTest's finite-difference df, p = 3.6e-7 within
    1.2e-3), so the comparison is on log p, which carries the df and t tolerances one to one."""
    close(np.log(np.asarray(actual, float)), np.log(np.asarray(expected, float)))


@pytest.mark.parametrize("case", INFERENCE_CASES)
def test_satterthwaite(case, fits):
    ref = load_reference(case)
    table = fits.get(case).coef_table("satterthwaite")
    sat = ref["satterthwaite"]
    close(table["df"], list(sat["df"].values()))
    close(table["t value"], list(sat["t"].values()))
    close_p(table["Pr(>|t|)"], list(sat["p"].values()))


@pytest.mark.parametrize("case", KR_CASES)
def test_kenward_roger(case, fits):
    ref = load_reference(case)
    table = fits.get(case).coef_table("kenward-roger")
    kr = ref["kenward_roger"]
    close(table["Std. Error"], list(kr["se"].values()))
    close(table["df"], list(kr["df"].values()))
    close(table["t value"], list(kr["t"].values()))
    close_p(table["Pr(>|t|)"], list(kr["p"].values()))


ANOVA_PARAMS = [(c, m, k) for c in ANOVA_CASES
                for m, k in [("satterthwaite", "anova_satterthwaite"), ("kenward-roger", "anova_kr")]
                if load_reference(c).get(k)]


@pytest.mark.parametrize("case, method, key", ANOVA_PARAMS)
def test_type3_anova(case, method, key, fits):
    ref = load_reference(case)
    expected = pd.DataFrame(ref[key]).set_index("term")
    table = fits.get(case).anova(type=3, ddf=method)
    assert list(table.index) == list(expected.index)
    for col in ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value"]:
        close(table[col], expected[col])
    close_p(table["Pr(>F)"], expected["Pr(>F)"])


@pytest.mark.parametrize("case", EMM_CASES)
def test_emmeans_and_pairs(case, fits):
    ref = load_reference(case)
    fit = fits.get(case)
    spec = [c for c in ref["emmeans_kr"][0] if c not in ("emmean", "SE", "df", "lower.CL", "upper.CL")][0]
    for ddf, key in [("kenward-roger", "emmeans_kr"), ("satterthwaite", "emmeans_satterthwaite")]:
        emm = jaxlmm.emmeans(fit, spec, ddf=ddf)
        expected = pd.DataFrame(ref[key])
        assert list(emm.table[spec]) == list(expected[spec].astype(str))
        for col in ["emmean", "SE", "df", "lower.CL", "upper.CL"]:
            close(emm.table[col], expected[col])
    pairs = jaxlmm.pairs(jaxlmm.emmeans(fit, spec, ddf="kenward-roger"), adjust="none")
    expected = pd.DataFrame(ref["pairs_kr"])
    assert list(pairs["contrast"]) == list(expected["contrast"])
    for col in ["estimate", "SE", "df", "t.ratio"]:
        close(pairs[col], expected[col])
    close_p(pairs["p.value"], expected["p.value"])


def test_pairs_adjustments(fits):
    emm = jaxlmm.emmeans(fits.get("sulfur_blue"), "location", ddf="kenward-roger")
    raw = jaxlmm.pairs(emm, adjust="none")["p.value"].to_numpy()
    bonf = jaxlmm.pairs(emm, adjust="bonferroni")["p.value"].to_numpy()
    tukey = jaxlmm.pairs(emm, adjust="tukey")["p.value"].to_numpy()
    close(bonf, np.minimum(1, 3 * raw), rtol=1e-12)
    assert np.all(tukey >= raw) and np.all(tukey <= bonf + 1e-12)


def test_sulfur_trial_numbers(fits):
    """The issue's numbers: BLUEs 846.06 / 1356.50 / 1123.10, KR SEs 151 / 128 / 151, df 11.30 / 8.88 / 11.30."""
    fit = fits.get("sulfur_blue")
    table = fit.coef_table("kenward-roger")
    np.testing.assert_allclose(table["Estimate"], [846.06, 1356.50, 1123.10], atol=0.01)
    np.testing.assert_allclose(table["Std. Error"], [151, 128, 151], atol=0.5)
    np.testing.assert_allclose(table["df"], [11.30, 8.88, 11.30], atol=0.005)


@pytest.mark.parametrize("case", INFERENCE_CASES)
def test_wald_confint(case, fits):
    ref = {k: np.atleast_1d(v).tolist() for k, v in load_reference(case)["confint_wald"].items()}
    ci = fits.get(case).confint("wald")
    assert list(ci.index) == ref["param"]
    close(ci.iloc[:, 0], ref["lower"])
    close(ci.iloc[:, 1], ref["upper"])


def _check_profile(case, fits):
    ref = load_reference(case)["confint_profile"]
    ci = fits.get(case).confint("profile")
    assert list(ci.index) == ref["param"]
    for col, key in [(0, "lower"), (1, "upper")]:
        ours, theirs = ci.iloc[:, col].to_numpy(), np.asarray(ref[key], float)
        near_zero = np.abs(theirs) < 1e-2
        np.testing.assert_allclose(ours[~near_zero], theirs[~near_zero], rtol=RTOL)
        np.testing.assert_allclose(ours[near_zero], theirs[near_zero], atol=1e-3)


@pytest.mark.parametrize("case", PROFILE_FAST)
def test_profile_confint(case, fits):
    _check_profile(case, fits)


@pytest.mark.slow
@pytest.mark.parametrize("case", PROFILE_SLOW)
def test_profile_confint_slow(case, fits):
    _check_profile(case, fits)


def test_profile_frame(fits):
    prof = fits.get("dyestuff").profile()
    frame = prof.frame
    assert list(frame.columns) == ["param", "value", "zeta"]
    sub = frame[frame["param"] == "sigma"].sort_values("value")
    assert np.all(np.diff(sub["zeta"]) > 0) and (sub["zeta"] == 0).sum() == 1


def test_likelihood_ratio_test():
    ref = load_reference("sleepstudy_slope_reml")
    data = case_data(ref)
    m1 = jaxlmm.lmer(ref["formula"], data)
    m0 = jaxlmm.lmer(ref["lrt"]["null_formula"], data)
    table = jaxlmm.anova(m0, m1)
    expected = pd.DataFrame(ref["lrt"]["table"]).set_index("model")
    assert list(table.index) == ["m0", "m1"]
    for col in ["npar", "AIC", "BIC", "logLik", "deviance"]:
        close(table[col], expected[col], rtol=1e-6)
    close(table.loc["m1", ["Chisq", "Df", "Pr(>Chisq)"]], expected.loc["m1", ["Chisq", "Df", "Pr(>Chisq)"]])


@pytest.mark.parametrize("case", ["sleepstudy_slope_reml", "clusters"])
@pytest.mark.parametrize("use_u", [False, True])
def test_bootstrap_sd_within_monte_carlo_error(case, use_u, fits):
    """The SD of a normal sample of size m has relative SE ~ 1/sqrt(2(m-1)); R used m = 500 and we use
    N = 2000, so the ratio of the two SDs has relative SE s = sqrt(1/998 + 1/3998) = 0.035.  The
    tolerance is 4 s = 0.14 (a 4-sigma band, so a correct implementation fails about 1 time in 16,000)."""
    ref = load_reference(case)["boot_sd"]
    fit = fits.get(case)
    reps = fit.bootstrap(2000, seed=11, use_u=use_u, progress=False)
    expected = pd.Series(ref["use_u_true" if use_u else "use_u_false"])
    s = np.sqrt(1 / (2 * (ref["nsim"] - 1)) + 1 / (2 * (2000 - 1)))
    ratio = reps[list(expected.index)].std() / expected
    assert np.all(np.abs(ratio - 1) < 4 * s), ratio
    assert reps.attrs["failed"] == 0


@pytest.mark.parametrize("case", ["sleepstudy_slope_reml", "penicillin_crossed", "dyestuff2_singular"])
def test_bootstrap_host_loop_equals_batch_path(case, fits):
    """The default bootstrap (host Newton loop over chunks of replicates) and the batch path (taken
    with ``func=``) fit the same replicates to the same estimates."""
    from jaxlmm.inference.bootstrap import replicate_table

    fit = fits.get(case)
    ours = fit.bootstrap(300, seed=5, progress=False)
    batch = fit.bootstrap(300, seed=5, func=replicate_table, progress=False)
    assert ours.attrs["failed"] == batch.attrs["failed"] == 0
    assert list(ours.columns) == list(batch.columns)
    np.testing.assert_allclose(ours.to_numpy(), batch.to_numpy(), rtol=1e-5, atol=1e-5)


def test_simulate_shapes_and_means(fits):
    fit = fits.get("sleepstudy_slope_reml")
    sims = fit.simulate(400, seed=3)
    assert sims.shape == (fit.nobs, 400)
    pop = fit.predict(re_form="~0")
    assert np.abs(sims.mean(axis=1) - pop).max() < 6 * np.sqrt(fit.sigma ** 2 + 700) / np.sqrt(400) * 1.5
    cond = fit.simulate(400, seed=3, use_u=True)
    assert np.abs(cond.mean(axis=1) - fit.fitted).max() < 6 * fit.sigma / np.sqrt(400)


def test_contest(fits):
    fit = fits.get("sulfur_blue")
    L = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    one = fit.contest(L[:1], ddf="kenward-roger", joint=False)
    pairs = jaxlmm.pairs(jaxlmm.emmeans(fit, "location"), adjust="none")
    close(one["Estimate"], pairs["estimate"][:1], rtol=1e-10)
    close(one["df"], pairs["df"][:1], rtol=1e-8)
    joint = fit.contest(L, ddf="satterthwaite")
    assert joint["NumDF"].iloc[0] == 2 and joint["F value"].iloc[0] > 0
    with pytest.raises(ValueError, match="3 fixed effects"):
        fit.contest(np.ones((1, 2)))


def test_summary_shows_satterthwaite_table(fits):
    text = fits.get("sleepstudy_slope_reml").summary()
    assert "t-tests use Satterthwaite's method" in text and "Pr(>|t|)" in text and " df " in text


def test_satterthwaite_derivatives_match_finite_differences(fits):
    """The exact Hessian and Jacobian behind Satterthwaite's df against central differences."""
    import jax.numpy as jnp

    from jaxlmm.core.pls.varpar import deviance_varpar, vcov_beta_varpar
    from jaxlmm.inference.ddf import satterthwaite_parts

    fit = fits.get("sleepstudy_slope_reml")
    cp = fit.cross_products
    vp = np.concatenate([fit.theta, [fit.sigma]])
    parts = satterthwaite_parts(fit)
    h = 1e-5
    m = vp.size
    J_fd = np.stack([(np.asarray(vcov_beta_varpar(jnp.asarray(vp + h * e), cp))
                      - np.asarray(vcov_beta_varpar(jnp.asarray(vp - h * e), cp))) / (2 * h) for e in np.eye(m)])
    np.testing.assert_allclose(parts.J, J_fd, rtol=1e-5, atol=1e-6 * np.abs(J_fd).max())

    def dev(x):
        return float(deviance_varpar(jnp.asarray(x), cp, True))

    H_fd = np.zeros((m, m))
    h = 1e-4
    for i in range(m):
        for j in range(m):
            ei, ej = np.eye(m)[i] * h, np.eye(m)[j] * h
            H_fd[i, j] = (dev(vp + ei + ej) - dev(vp + ei - ej) - dev(vp - ei + ej) + dev(vp - ei - ej)) / (4 * h * h)
    A_fd = 2 * np.linalg.inv(H_fd)
    np.testing.assert_allclose(parts.A, A_fd, rtol=1e-3)


@pytest.mark.slow   # long on 2 cores; CI runs it with the slow tests
def test_kr_and_satterthwaite_at_n_20000():
    """N = 20,000 rows: no n x n matrix is formed (both use the blocked factorization's derivatives)."""
    rng = np.random.default_rng(5)
    n, groups = 20_000, 400
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    trt = rng.integers(0, 3, n)
    y = 1 + 0.5 * x + 0.3 * trt + rng.normal(0, 1, groups)[g] + rng.normal(0, 0.5, groups)[g] * x \
        + rng.normal(0, 1, n)
    data = pd.DataFrame({"y": y, "x": x, "g": g, "trt": pd.Categorical(trt)})
    fit = jaxlmm.lmer("y ~ x + trt + (1 + x | g)", data)
    sat = fit.coef_table("satterthwaite")
    kr = fit.coef_table("kenward-roger")
    assert np.all(np.isfinite(sat["df"])) and np.all(np.isfinite(kr["df"]))
    assert sat.loc["x", "df"] == pytest.approx(kr.loc["x", "df"], rel=0.05)
    assert 300 < sat.loc["x", "df"] < 450
    anova = fit.anova(ddf="kenward-roger")
    assert list(anova.index) == ["x", "trt"]
