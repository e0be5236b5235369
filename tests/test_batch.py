"""Many traits in one call: batch == single fits, lme4 parity on traits_1k, no recompilation."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from conftest import REFERENCE

pytestmark = pytest.mark.usefixtures("x64")

FORMULA = "~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def small_batch():
    """Sleepstudy with five traits: own missing rows each, a singular one, one with too few rows."""
    data = jaxlmm.load_dataset("sleepstudy")
    rng = np.random.default_rng(7)
    y = data["Reaction"].to_numpy()
    Y = pd.DataFrame({
        "reaction": y,
        "gaps": np.where(rng.random(len(y)) < 0.2, np.nan, y),
        "noisy": y + rng.normal(0, 40, len(y)),
        "singular": 250 + 10 * data["Days"].to_numpy() + rng.normal(0, 30, len(y)),
        "few": np.where(np.arange(len(y)) < 2, y, np.nan),
    })
    Y.loc[:30, "noisy"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxlmm.JaxlmmWarning)
        batch = jaxlmm.lmer(FORMULA, data, responses=Y)
    return data, Y, batch


def test_batch_equals_single_fits(small_batch):
    data, Y, batch = small_batch
    for name in ["reaction", "gaps", "noisy", "singular"]:
        rows = Y[name].notna()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jaxlmm.JaxlmmWarning)
            single = jaxlmm.lmer(f"y {FORMULA}", data[rows].assign(y=Y.loc[rows, name]))
        assert batch.criterion[name] == pytest.approx(single.criterion, rel=1e-8)
        np.testing.assert_allclose(batch.theta.loc[name], single.theta, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(batch.fixef.loc[name], single.fixef, rtol=1e-8)
        np.testing.assert_allclose(batch.se.loc[name], single.se, rtol=1e-6)
        assert batch.sigma[name] == pytest.approx(single.sigma, rel=1e-8)
        assert batch.nobs[name] == single.nobs
        assert bool(batch.is_singular[name]) == single.is_singular


def test_failures_are_statuses_and_the_batch_goes_on(small_batch):
    _, _, batch = small_batch
    d = batch.diagnostics
    assert d.loc["few", "status"] == "too_few_observations"
    assert not d.loc["few", "converged"] and np.isnan(batch.criterion["few"])
    assert d.loc["singular", "singular"] and d.loc["singular", "message"] == "boundary (singular) fit"
    assert d.loc[["reaction", "gaps", "noisy", "singular"], "converged"].all()
    assert batch.summary() == "5 traits; 4 converged; 1 singular; failed: 1 too_few_observations"
    assert list(d.columns) == ["status", "converged", "singular", "grad_norm", "n_iter", "nobs", "criterion",
                               "path", "message"]
    assert list(d["path"]) == ["general", "general", "general", "none", "general"] or \
        set(d.loc[d["status"] == "too_few_observations", "path"]) == {"none"}


def test_trait_view_is_a_full_single_fit(small_batch):
    _, _, batch = small_batch
    fit = batch.trait("gaps")
    assert fit.criterion == pytest.approx(batch.criterion["gaps"], rel=1e-10)
    assert fit.nobs == batch.nobs["gaps"]
    assert fit.formula.startswith("gaps ~ Days")
    assert len(fit.ranef) == 36 and "Random effects:" in fit.summary()
    assert batch.trait(0).criterion == pytest.approx(batch.criterion.iloc[0])
    with pytest.raises(ValueError, match="was not fitted: too_few_observations"):
        batch.trait("few")
    with pytest.raises(KeyError):
        batch.trait("nope")


def test_tidy_tables_and_export(small_batch, tmp_path):
    _, _, batch = small_batch
    vc = batch.varcorr
    assert list(vc.columns) == ["trait", "grp", "var1", "var2", "vcov", "sdcor"]
    assert len(vc) == 5 * 4 and list(vc["trait"].iloc[:4]) == ["reaction"] * 4
    assert list(batch.fixef.columns) == ["(Intercept)", "Days"]
    assert list(batch.theta.columns) == ["Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days"]
    batch.to_csv(tmp_path / "batch.csv")
    back = pd.read_csv(tmp_path / "batch.csv", index_col=0)
    assert list(back.index) == batch.traits and "theta_Subject.Days" in back.columns


def test_response_forms(small_batch):
    data, Y, batch = small_batch
    cols = data.assign(a=Y["reaction"], b=Y["gaps"])
    by_name = jaxlmm.lmer(FORMULA, cols, responses=["a", "b"])
    np.testing.assert_allclose(by_name.criterion, batch.criterion[["reaction", "gaps"]], rtol=1e-10)
    by_array = jaxlmm.lmer(FORMULA, data, responses=Y[["reaction", "gaps"]].to_numpy())
    assert by_array.traits == ["trait0", "trait1"]
    np.testing.assert_allclose(by_array.criterion, by_name.criterion, rtol=1e-10)
    with pytest.raises(jaxlmm.DataError, match="not found"):
        jaxlmm.lmer(FORMULA, data, responses=["nope"])
    with pytest.raises(jaxlmm.DataError, match="rows but data has"):
        jaxlmm.lmer(FORMULA, data, responses=np.zeros((3, 2)))


def test_chunks_equal_one_call_and_second_call_does_not_recompile(small_batch):
    data, Y, batch = small_batch
    chunked = jaxlmm.lmer(FORMULA, data, responses=Y, chunk_size=2, progress=False)
    np.testing.assert_allclose(chunked.criterion, batch.criterion, rtol=1e-12)
    other = Y * 1.5 + 3.0
    with jaxlmm.diagnostics.count_compilations() as compiled:
        again = jaxlmm.lmer(FORMULA, data, responses=other, chunk_size=2, progress=False)
    assert compiled.count == 0
    assert again.converged["reaction"]


def test_refit_reuses_the_program(fits):
    fit = fits.get("sleepstudy_slope_reml")
    fit.refit(fit.response * 3.0)
    with jaxlmm.diagnostics.count_compilations() as compiled:
        new = fit.refit(fit.response * 2.0 + 1.0)
    assert compiled.count == 0
    assert new.sigma == pytest.approx(2 * fit.sigma, rel=1e-6)
    np.testing.assert_allclose(new.theta, fit.theta, rtol=1e-5)


def _traits_1k(n_traits):
    data = pd.read_csv(REFERENCE / "traits_1k.csv.gz")
    ref = pd.read_csv(REFERENCE / "traits_1k_lme4.csv")
    traits = list(ref["trait"][:n_traits])
    batch = jaxlmm.lmer("~ x + (1 + x | g)", data, responses=traits, progress=False)
    crit = batch.criterion.to_numpy()
    lme4 = ref["criterion"].to_numpy()[:n_traits]
    return batch, crit, lme4


def test_traits_1k_subset_no_worse_than_lme4():
    batch, crit, lme4 = _traits_1k(64)
    assert batch.converged.all()
    assert np.all(crit <= lme4 + 1e-6 * np.abs(lme4))


@pytest.mark.slow
def test_traits_1k_all_no_worse_than_lme4():
    batch, crit, lme4 = _traits_1k(1000)
    assert batch.converged.all()
    assert np.all(crit <= lme4 + 1e-6 * np.abs(lme4))
