"""Issue S items 4 and 5: results of structured fits, and user covariances checked before they are used.

4. ``predict`` of ``pos()`` terms (kriging at new positions), ``re_form`` naming structured terms,
   residuals by each row's own residual SD, ``covariance_parameters``/``residual_sd`` on every fit,
   the structured batch's per-trait checks and ``BatchResult`` accessors (and the command line),
   the summary's header, and the bootstrap's columns of an ``exp`` fit.
5. ``jaxlmm.covariance`` checks its arguments; ``fn`` is checked at the fit's start (shape, finite,
   symmetric, positive semi-definite, finite derivatives) and at the estimate; ``covariances=`` must
   be a dict of such objects.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import jax.numpy as jnp

import jaxlmm
from jaxlmm import DataError, FormulaError, JaxlmmError
from test_structures import _structured_case

pytestmark = pytest.mark.usefixtures("x64")


def user_exp(p, coords):
    """glmmTMB's exp written by a user: tau^2 exp(-d / l), p = (tau, log l)."""
    diff = coords[:, None, :] - coords[None, :, :]
    d = jnp.sqrt(jnp.sum(diff * diff, axis=-1) + 1e-300) * jnp.exp(-p[1])
    return p[0] ** 2 * jnp.exp(-d)


def _user_exp_cov():
    return jaxlmm.covariance(user_exp, 2, lower=[0.0, -np.inf], start=[1.0, 1.0], scales=[0],
                             names=["sd", "log_range"], name="my_exp")


@pytest.fixture(scope="module")
def field_exp():
    ref, data = _structured_case("field_exp")
    return jaxlmm.lmer(ref["formula"], data), data


@pytest.fixture(scope="module")
def sleep():
    return jaxlmm.load_dataset("sleepstudy")


@pytest.fixture(scope="module")
def machines():
    return _structured_case("machines_cs")[1]


# ------------------------------------------------------------------ 4. predict and re_form
def _pos_fit(kind):
    if kind == "exp":
        ref, data = _structured_case("field_exp")
    elif kind == "gau":
        ref, data = _structured_case("field_gau", "extra")
    elif kind == "ou":
        ref, data = _structured_case("bodyweight_ou", "heldout")
    else:
        _, data = _structured_case("field_exp")
        return jaxlmm.lmer("yield ~ 0 + variety + (1 | block) + (0 + pos(x, y) | field)", data,
                           covariances={"field": _user_exp_cov()}), data
    return jaxlmm.lmer(ref["formula"], data), data


@pytest.mark.parametrize("kind", ["exp", "gau", "ou", "user"])
def test_predict_of_pos_terms_on_training_rows_equals_fitted(kind):
    """Before: predict(newdata) failed for every pos() term (no model matrix for pos(...))."""
    fit, data = _pos_fit(kind)
    assert isinstance(fit, jaxlmm.StructuredResult) and fit.converged
    scale = np.max(np.abs(fit.fitted))
    np.testing.assert_allclose(fit.predict(data), fit.fitted, rtol=0, atol=1e-10 * scale)
    population = fit.design.X @ fit.fixef.to_numpy()
    np.testing.assert_allclose(fit.predict(data, re_form="~0"), population, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(fit.predict(data.iloc[:0].assign()), np.zeros(0))   # no rows, no error


def test_blup_at_a_new_position_is_the_conditional_expectation(field_exp):
    """A new position of a known level: E[b(s0) | y] = Cov(b(s0), y) V^-1 (y - X beta) at the estimate,
    computed here from the covariance parameters alone (V built densely)."""
    fit, data = field_exp
    new = data.iloc[[0, 5, 40]].copy()
    new["x"] = new["x"] + np.array([0.5, 0.25, 3.7])
    new["y"] = new["y"] + np.array([0.0, 0.5, -0.3])
    cp = fit.covariance_parameters.set_index(["grp", "parameter"])["estimate"]
    tau2, ell = cp[("field", "variance")], cp[("field", "range")]
    block_var, resid_var = cp[("block", "var.(Intercept)")], cp[("Residual", "variance")]
    pts = data[["x", "y"]].to_numpy(float)
    blocks = data["block"].to_numpy()

    def kernel(a, b):
        return tau2 * np.exp(-np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)) / ell)

    V = kernel(pts, pts) + block_var * (blocks[:, None] == blocks[None, :]) + resid_var * np.eye(len(data))
    X, y = fit.design.X, np.asarray(fit.design.y, float)
    r = np.linalg.solve(V, y - X @ fit.fixef.to_numpy())
    block_blup = fit.ranef_dict()["block"]["(Intercept)"]
    expected = (fit.predict(new, re_form="~0") + block_blup[new["block"].astype(str)].to_numpy()
                + kernel(new[["x", "y"]].to_numpy(float), pts) @ r)
    np.testing.assert_allclose(fit.predict(new), expected, rtol=1e-9)
    # the same given the BLUPs at the fitted positions: C(s0, S) C^-1 b(S)
    t = fit.design.terms[1]
    b = fit.ranef_dict()["field"].to_numpy()[0]
    given_blups = kernel(new[["x", "y"]].to_numpy(float), t.coords) @ np.linalg.solve(kernel(t.coords, t.coords), b)
    np.testing.assert_allclose(fit.predict(new) - fit.predict(new, re_form="~ (1 | block)"), given_blups, rtol=1e-6)
    # a user-written exp gives the built-in's fit and so its kriged predictions
    user, _ = _pos_fit("user")
    np.testing.assert_allclose(user.predict(new), fit.predict(new), rtol=1e-6)
    # a new level is the population value with allow_new_levels, as in lme4
    other = new.assign(field=pd.Categorical(["elsewhere"] * 3))
    with pytest.raises(DataError, match="new level 'elsewhere'"):
        fit.predict(other)
    np.testing.assert_allclose(fit.predict(other, allow_new_levels=True),
                               fit.predict(new, re_form="~ (1 | block)"), rtol=1e-12)


def test_new_position_of_an_unstructured_pos_term_is_an_error():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(30), 4)
    t = np.tile([0.0, 0.0, 1.0, 1.0], 30)
    data = pd.DataFrame({"g": [f"g{i}" for i in g], "t": t,
                         "y": rng.normal(size=120) + np.repeat(rng.normal(size=30), 4)})
    fit = jaxlmm.lmer("y ~ 1 + (0 + pos(t) | g)", data)
    np.testing.assert_allclose(fit.predict(data), fit.fitted, rtol=1e-10)
    with pytest.raises(DataError, match=r"position the fit did not see, pos\(0.5\).*unstructured"):
        fit.predict(data.iloc[:2].assign(t=0.5))


def test_re_form_names_structured_terms(sleep, machines):
    """Before: re_form="~ar1(0 + factor(Days) | Subject)" matched no term."""
    ar1 = jaxlmm.lmer("Reaction ~ Days + ar1(0 + factor(Days) | Subject)", sleep)
    for re_form in ("~ ar1(0 + factor(Days) | Subject)", "~ar1(0+factor(Days)|Subject)",
                    "~ (0 + factor(Days) | Subject)"):
        np.testing.assert_allclose(ar1.predict(sleep, re_form=re_form), ar1.fitted, rtol=1e-12)
    with pytest.raises(FormulaError, match="matches no random-effects term"):
        ar1.predict(sleep, re_form="~ cs(0 + factor(Days) | Subject)")
    cs = jaxlmm.lmer("score ~ Machine + cs(0 + Machine | Worker)", machines)
    np.testing.assert_allclose(cs.predict(machines, re_form="~ cs(0 + Machine | Worker)"), cs.fitted, rtol=1e-12)
    # two terms of one group: re_form picks one of them
    both = jaxlmm.lmer("Reaction ~ Days + (1 | Subject) + ar1(0 + factor(Days) | Subject)", sleep)
    k = [str(t.term) for t in both.design.terms].index("ar1(0 + factor(Days) | Subject)")
    t = both.design.terms[k]
    ar1_part = np.sum(t.z * both._b(k)[t.factor.codes], axis=1)
    np.testing.assert_allclose(both.predict(sleep, re_form="~ ar1(0 + factor(Days) | Subject)"),
                               both.predict(sleep, re_form="~0") + ar1_part, rtol=1e-12)
    np.testing.assert_allclose(both.predict(sleep, re_form="~ (1 | Subject) + ar1(0 + factor(Days) | Subject)"),
                               both.fitted, rtol=1e-12)


# ------------------------------------------------------------------ 4. residuals
def test_dispformula_residuals_use_each_rows_own_sd():
    """Before: scaled residuals were divided by a pooled sigma, and type="pearson" returned y - fitted."""
    ref, data = _structured_case("sulfur_hetres")
    fit = jaxlmm.lmer(ref["formula"], data, dispformula="~ location")
    raw = fit.residuals()
    np.testing.assert_allclose(raw, fit.response - fit.fitted, rtol=1e-14)
    sd = fit.residual_sd[data["location"].astype(str)].to_numpy()
    assert len(set(np.round(sd, 6))) == 3
    np.testing.assert_allclose(fit.residuals("pearson"), raw / sd, rtol=1e-12)
    np.testing.assert_allclose(fit.residuals(scaled=True), raw / sd, rtol=1e-12)
    np.testing.assert_allclose(fit.residuals("pearson", scaled=True), raw / sd, rtol=1e-12)
    q = np.quantile(raw / sd, [0, 1])
    assert f"{q[0]:.4f}" in fit.summary() and f"{q[1]:.4f}" in fit.summary()
    # one residual SD: Pearson residuals are glmmTMB's, (y - fitted) / sigma
    cs = jaxlmm.lmer("score ~ Machine + cs(0 + Machine | Worker)", _structured_case("machines_cs")[1])
    np.testing.assert_allclose(cs.residuals("pearson"), cs.residuals() / cs.sigma, rtol=1e-12)
    with pytest.raises(ValueError, match="type must be"):
        cs.residuals("deviance")


def test_scaled_residuals_at_the_residual_bound_are_an_error_not_nan():
    """A residual SD at its bound 0: scaled residuals 0/0 were NaN; now an error naming the bound, and
    the summary prints that line instead of NaN quantiles."""
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
    assert fit.residual_sd.iloc[0] < 1e-4
    assert np.all(np.isfinite(fit.residuals()))
    for kwargs in ({"scaled": True}, {"type": "pearson"}):
        with pytest.raises(JaxlmmError, match="not defined: the residual SD of the model is at its bound 0"):
            fit.residuals(**kwargs)
    text = fit.summary()
    assert "Scaled residuals: scaled and Pearson residuals are not defined" in text and "nan" not in text.lower()


# ------------------------------------------------------------------ 4. covariance_parameters, residual_sd
def test_covariance_parameters_and_residual_sd_of_us_and_diag_fits(sleep):
    """Before: AttributeError on us()/diag() fits (fitted by lme4's engine)."""
    ref, data = _structured_case("sleep_diag")
    diag = jaxlmm.lmer(ref["formula"], data)
    assert not isinstance(diag, jaxlmm.StructuredResult)
    cp = diag.covariance_parameters
    assert list(cp.columns) == ["grp", "structure", "parameter", "estimate", "se"]
    assert list(cp["parameter"]) == ["var.(Intercept)", "var.Days", "variance"]
    np.testing.assert_allclose(cp["estimate"][:2], np.diag(ref["terms"][0]["cov"]), rtol=2e-3)
    np.testing.assert_allclose(cp["estimate"].iloc[2], ref["sigma"] ** 2, rtol=4e-3)
    assert np.all(np.isfinite(cp["se"])) and np.all(cp["se"] > 0)
    assert list(diag.residual_sd.index) == ["Residual"] and diag.residual_sd.iloc[0] == diag.sigma
    # the SEs are those of the same model fitted by the marginal engine (an intercept-only dispformula)
    us = jaxlmm.lmer("Reaction ~ Days + us(Days | Subject)", sleep)
    marginal = jaxlmm.lmer("Reaction ~ Days + us(Days | Subject)", sleep, dispformula="~ 1")
    assert isinstance(marginal, jaxlmm.StructuredResult)
    a, b = us.covariance_parameters.iloc[:3], marginal.covariance_parameters.iloc[:3]
    assert list(a["parameter"]) == list(b["parameter"]) == ["var.(Intercept)", "var.Days", "cor.Days.(Intercept)"]
    np.testing.assert_allclose(a["estimate"], b["estimate"], rtol=1e-5)
    np.testing.assert_allclose(a["se"], b["se"], rtol=1e-3)
    np.testing.assert_allclose(us.covariance_parameters["estimate"].iloc[3], us.sigma ** 2, rtol=1e-12)
    # lme4's summary is unchanged: no covariance-parameter block, lme4's header
    text = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep).summary()
    assert "Covariance parameters" not in text and "['lmerModLmerTest']" in text.splitlines()[0]


# ------------------------------------------------------------------ 4. the structured batch
def test_structured_batch_checks_each_trait_as_the_general_batch(sleep):
    """Before: a constant response was line_search_failed; now the general batch's trait_checks run."""
    y = sleep["Reaction"].to_numpy()
    few = np.full(len(y), np.nan)
    few[:2] = [1.0, 2.0]
    Y = np.column_stack([y, np.full(len(y), 3.0), few])
    batch = jaxlmm.lmer("~ Days + ar1(0 + factor(Days) | Subject)", sleep, responses=Y)
    d = batch.diagnostics
    assert list(d["status"]) == ["converged", "constant_response", "too_few_observations"]
    assert list(d["path"]) == ["marginal", "none", "none"]
    assert np.all(np.isnan(batch.fixef.iloc[1:].to_numpy())) and np.all(np.isnan(batch.sigma.iloc[1:]))
    assert batch.summary() == "3 traits; 1 converged; 0 singular; failed: 1 constant_response, 1 too_few_observations"
    with pytest.raises(ValueError, match="was not fitted: constant_response"):
        batch.trait(1)
    # a spatial term over one field (one level) is not an lme4 level check's failure
    fit, data = _pos_fit("exp")
    rng = np.random.default_rng(0)
    Yf = np.column_stack([data["yield"], data["yield"] + rng.normal(0, 0.3, len(data))])
    fb = jaxlmm.lmer("~ 0 + variety + (1 | block) + exp(0 + pos(x, y) | field)", data, responses=Yf)
    assert list(fb.status) == ["converged", "converged"]
    np.testing.assert_allclose(fb.criterion.iloc[0], fit.criterion, rtol=1e-9)


def test_structured_batch_answers_batch_results_questions(sleep):
    """to_frame, varcorr, sigma (missing before) and the rest of BatchResult's accessors, with its meaning."""
    rng = np.random.default_rng(2)
    Y = np.column_stack([sleep["Reaction"].to_numpy(), sleep["Reaction"].to_numpy() + rng.normal(0, 5, len(sleep))])
    plain = jaxlmm.lmer("~ Days + (Days | Subject)", sleep, responses=Y)
    batch = jaxlmm.lmer("~ Days + ar1(0 + factor(Days) | Subject)", sleep, responses=Y, dispformula="~ Days")
    for name in ("fixef", "se", "theta", "sigma", "criterion", "loglik", "nobs", "n_iter", "grad_norm",
                 "converged", "status", "is_singular", "varcorr", "variance_components", "diagnostics",
                 "n_traits", "traits", "theta_names", "fixef_names", "reml"):
        assert hasattr(plain, name) and hasattr(batch, name), name
    assert list(batch.diagnostics.columns.drop("n_obs")) == list(plain.diagnostics.columns)
    frame, frame_plain = batch.to_frame(), plain.to_frame()
    assert list(frame.columns[:len(plain.diagnostics.columns) + 1]) == list(frame_plain.columns[:10])
    assert {f"theta_{n}" for n in batch.theta_names} <= set(frame.columns)
    assert {"fixef_Days", "se_Days", "residual_sd_0", "residual_sd_9"} <= set(frame.columns)
    assert list(batch.varcorr.columns) == list(plain.varcorr.columns) == ["trait", "grp", "var1", "var2", "vcov",
                                                                           "sdcor"]
    for i in range(2):
        single = batch.trait(i)
        np.testing.assert_allclose(batch.sigma.iloc[i], single.sigma, rtol=1e-6)
        np.testing.assert_allclose(batch.vcov(i).to_numpy(), single.vcov.to_numpy(), rtol=1e-5)
        vc = batch.varcorr[batch.varcorr["trait"] == batch.traits[i]].drop(columns="trait").reset_index(drop=True)
        want = single.varcorr
        assert list(vc["grp"]) == list(want["grp"]) and list(vc["var1"]) == list(want["var1"])
        np.testing.assert_allclose(vc["vcov"], want["vcov"], rtol=1e-5)
        np.testing.assert_allclose(vc["sdcor"], want["sdcor"], rtol=1e-5)
    assert repr(batch).startswith("<StructuredBatchResult REML: ~ Days + ar1(0 + factor(Days) | Subject) | 2 traits")


def test_command_line_writes_a_structured_batch(sleep, tmp_path):
    """Before: `jaxlmm fit ... ar1(...) --responses ... --out` crashed (no to_frame / varcorr)."""
    from jaxlmm.cli.main import main

    data = sleep.assign(r2=sleep["Reaction"] + np.random.default_rng(0).normal(0, 5, len(sleep)))
    data.to_csv(tmp_path / "sleep.csv", index=False)
    out = tmp_path / "out"
    rc = main(["fit", str(tmp_path / "sleep.csv"), "~ Days + ar1(0 + factor(Days) | Subject)",
               "--responses", "Reaction,r2", "--out", str(out), "--no-cache"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["results.csv", "fixef.csv", "se.csv", "theta.csv",
                                                            "diagnostics.csv", "varcorr.csv"])
    results = pd.read_csv(out / "results.csv", index_col=0)
    assert list(results.index) == ["Reaction", "r2"] and list(results["status"]) == ["converged"] * 2
    single = jaxlmm.lmer("Reaction ~ Days + ar1(0 + factor(Days) | Subject)", sleep)
    np.testing.assert_allclose(results.loc["Reaction", "criterion"], single.criterion, rtol=1e-8)
    np.testing.assert_allclose(results.loc["Reaction", "sigma"], single.sigma, rtol=1e-5)
    assert set(pd.read_csv(out / "varcorr.csv")["trait"]) == {"Reaction", "r2"}


# ------------------------------------------------------------------ 4. summary header, bootstrap
def test_summary_header_of_a_structured_fit(machines):
    """Before: "... z-tests ['lmerModLmerTest']" (lmerTest's class for a model lmerTest does not fit)."""
    fit = jaxlmm.lmer("score ~ Machine + cs(0 + Machine | Worker)", machines)
    first = fit.summary().splitlines()[0]
    assert first == "Linear mixed model fit by REML. z-tests [structured covariances: cs(Worker); one residual SD]"
    assert "lmerMod" not in fit.summary(ddf="satterthwaite") and "lmerMod" not in fit.summary(ddf=None)
    assert fit.summary(ddf="satterthwaite").splitlines()[0].startswith(
        "Linear mixed model fit by REML. t-tests use Satterthwaite's method [structured covariances: cs(Worker)")
    ref, data = _structured_case("sulfur_hetres")
    hetres = jaxlmm.lmer(ref["formula"], data, dispformula="~ location").summary().splitlines()
    assert hetres[0].endswith("[structured covariances: us(block); dispformula ~ location]")
    assert hetres[2] == "Dispersion: ~ location"


def test_bootstrap_of_an_exp_fit_reports_its_covariance_parameters(field_exp):
    """Before: one column per pair of the 90 positions (4,000+ columns); now one per covariance parameter."""
    from jaxlmm.inference.bootstrap import simulate

    fit, data = field_exp
    table = fit.bootstrap(nsim=3, seed=7)
    assert list(table.columns) == list(fit.fixef_names) + ["sd_(Intercept)|block", "variance|field", "range|field",
                                                           "sigma"]
    assert table.attrs["failed"] == 0
    Y = simulate(fit, 3, 7, False)
    for i in range(3):
        single = fit.refit(Y[:, i])               # from the fit's estimate, as the replicates start
        assert single.converged
        cp = single.covariance_parameters.set_index(["grp", "parameter"])["estimate"]
        np.testing.assert_allclose(table.loc[i, ["sd_(Intercept)|block", "variance|field", "range|field", "sigma"]]
                                   .to_numpy(float), [np.sqrt(cp[("block", "var.(Intercept)")]),
                                                      cp[("field", "variance")], cp[("field", "range")], single.sigma],
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(table.loc[i, list(fit.fixef_names)].to_numpy(float), single.fixef, rtol=1e-6)


# ------------------------------------------------------------------ 5. user covariances checked
def _iid(p, coords):
    return p[0] ** 2 * jnp.eye(coords.shape[0])


@pytest.mark.parametrize("kwargs, message", [
    ({"n_params": 2.5}, r"n_params must be a whole number, got 2.5"),
    ({"n_params": 0}, r"n_params must be at least 1"),
    ({"scales": [0, 2]}, r"scales must hold parameter indices 0..1, got 2"),
    ({"scales": [0, 1, 1]}, r"scales lists 3 indices for 2 parameters"),
    ({"scales": [1, 1]}, r"scales lists an index twice"),
    ({"scales": "sd"}, r"scales must hold parameter indices"),
    ({"lower": [0.0, 1.0], "upper": [1.0, 0.0]}, r"parameter 1 has lower = 1.0 and upper = 0.0"),
    ({"lower": [0.0, np.nan]}, r"lower has NaN at position 1"),
    ({"upper": [1.0]}, r"upper: expected 2 values"),
    ({"start": [-1.0, 1.0], "lower": [0.0, 0.0]}, r"start\[0\] = -1.0 is not a finite value within its bounds"),
    ({"start": [np.inf, 1.0]}, r"start\[0\] = inf"),
    ({"names": ["a", "a"]}, r"names must be distinct; 'a' is given more than once"),
    ({"names": "ab"}, r"names must be a list of 2 strings"),
    ({"names": ["a", 3]}, r"names must be non-empty strings"),
    ({"name": 3}, r"name must be a non-empty string"),
])
def test_covariance_arguments_are_checked_when_it_is_made(kwargs, message):
    args = {"n_params": 2, **kwargs}
    with pytest.raises(DataError, match=message):
        jaxlmm.covariance(_iid, args.pop("n_params"), **args)


BAD_FUNCTIONS = [
    (lambda p, c: p[0] ** 2 * jnp.ones((2, 2)), r"returned an array of shape \(2, 2\); the term has 3 columns, so "
                                                r"it must return a \(3, 3\) matrix"),
    (lambda p, c: p[0] ** 2 * jnp.ones(3), r"returned an array of shape \(3,\)"),
    (lambda p, c: p[0] ** 2 * (jnp.eye(3) + jnp.triu(jnp.ones((3, 3)), 1)), r"is not symmetric at the start"),
    (lambda p, c: -p[0] ** 2 * jnp.eye(3), r"is not positive semi-definite at the start .*smallest eigenvalue -"),
    (lambda p, c: p[0] ** 2 * (jnp.eye(3) - 0.9 * (1 - jnp.eye(3))), r"is not positive semi-definite at the start"),
    (lambda p, c: p[0] ** 2 * jnp.eye(3) * jnp.nan, r"is not finite at the start"),
    (lambda p, c: p[0] ** 2 * jnp.eye(3) + undefined_name, r"failed at the start .*NameError"),  # noqa: F821
    (lambda p, c: float(p[0]) ** 2 * np.eye(3), r"JAX cannot differentiate fn"),
    (lambda p, c: p[0] ** 2 * jnp.eye(3) + 0.0 * jnp.sqrt(p[1]), r"the first derivatives .* are not finite"),
    (lambda p, c: (p[0] ** 2 + p[1] ** 1.5) * jnp.eye(3), r"the second derivatives .* are not finite"),
    (lambda p, c: p[0] ** 2 * jnp.eye(3).astype(jnp.complex64), r"returned complex\d+ values"),
]


@pytest.mark.parametrize("fn, message", BAD_FUNCTIONS)
def test_user_covariance_is_checked_at_the_start(machines, fn, message):
    """Before: a NumPy matmul error from deep inside (wrong shape), or an asymmetric / negative-definite
    matrix accepted (-p^2 I "converged").  Now an error naming the group, before any fitting."""
    cov = jaxlmm.covariance(fn, 2, lower=[0.0, 0.0], start=[1.0, 0.0], scales=[0], name="mine")
    with pytest.raises(DataError, match=r"covariances\['Worker'\] \('mine'\): .*" + message):
        jaxlmm.lmer("score ~ Machine + (0 + Machine | Worker)", machines, covariances={"Worker": cov})
    Y = np.column_stack([machines["score"], machines["score"] + 1.0])   # the batch checks its starts too
    with pytest.raises(DataError, match=r"covariances\['Worker'\]"):
        jaxlmm.lmer("~ Machine + (0 + Machine | Worker)", machines, responses=Y, covariances={"Worker": cov})


def test_user_covariance_start_given_to_lmer_is_checked(machines):
    cov = jaxlmm.covariance(lambda p, c: p[0] * jnp.eye(3), 1, names=["variance"])
    with pytest.raises(DataError, match=r"covariances\['Worker'\].*not positive semi-definite at the start "
                                        r"params = \[-1\.\]"):
        jaxlmm.lmer("score ~ Machine + (0 + Machine | Worker)", machines, covariances={"Worker": cov},
                    start=[-1.0, 1.0])
    fit = jaxlmm.lmer("score ~ Machine + (0 + Machine | Worker)", machines, covariances={"Worker": cov})
    assert fit.converged and fit.theta[0] > 0


def test_user_covariance_not_positive_semi_definite_at_the_estimate():
    """Unbounded, a covariance that is not one everywhere can end at a 'variance' below 0 (within-group
    correlation is negative in these data): an error, not a fit."""
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(40), 3)
    e = rng.normal(size=120)
    y = e - 0.9 * pd.Series(e).groupby(g).transform("mean").to_numpy()
    data = pd.DataFrame({"y": y, "g": [f"g{i}" for i in g]})
    cov = jaxlmm.covariance(lambda p, c: p[0] * jnp.ones((1, 1)), 1, start=[0.1], names=["variance"])
    with pytest.raises(DataError, match=r"covariances\['g'\].*not positive semi-definite at the estimate"):
        jaxlmm.lmer("y ~ 1 + (1 | g)", data, covariances={"g": cov})


@pytest.mark.parametrize("covariances, message", [
    (lambda cov: [cov], r"covariances must be a dict from grouping-factor names .* got list"),
    (lambda cov: {1: cov}, r"covariances: a key must be the name of a grouping factor .* got 1 \(int\)"),
    (lambda cov: {"Worker": _iid}, r"covariances\['Worker'\] must be made by jaxlmm.covariance"),
    (lambda cov: {"Nobody": cov}, r"covariances\['Nobody'\]: the formula has 0 random-effects terms"),
])
def test_covariances_argument_is_checked(machines, covariances, message):
    cov = jaxlmm.covariance(_iid, 1, lower=[0.0], scales=[0])
    with pytest.raises(DataError if "Nobody" not in message else FormulaError, match=message):
        jaxlmm.lmer("score ~ Machine + (0 + Machine | Worker)", machines, covariances=covariances(cov))
