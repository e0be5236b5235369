"""Relationship-matrix terms (GBLUP): parity with lme4's modular fit, K = I, spectral == general path.

References: tests/reference/relmat/*.json from make_relmat_cases.R (lme4 1.1-31:
lFormula, Zt <- t(L) %*% Zt with K = L L^T, mkLmerDevfun, optimizeLmer).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm import DataError

REF = pathlib.Path(__file__).parent / "reference" / "relmat"
CASES = ["gblup_simple", "gblup_covariate", "gblup_missing", "gblup_repeated", "gblup_two_kernels"]


def load_case(case: str):
    ref = json.loads((REF / f"{case}.json").read_text())
    data = pd.read_csv(REF / ref["data"])
    if case == "gblup_covariate":
        data["y"] = data["y_cov"]
    relmat = {g: pd.read_csv(REF / f, index_col=0) for g, f in (ref.get("kernels") or {}).items()}
    return ref, data, relmat


@pytest.fixture(scope="module")
def case_fits():
    out = {}
    for case in CASES:
        ref, data, relmat = load_case(case)
        out[case] = (ref, jaxlmm.lmer(ref["formula"], data, relmat=relmat))
    return out


@pytest.mark.parametrize("case", CASES)
def test_relmat_matches_lme4(case_fits, case):
    ref, fit = case_fits[case]
    assert fit.criterion <= ref["criterion"] * (1 + 1e-6) + 1e-9
    assert fit.criterion == pytest.approx(ref["criterion"], rel=1e-6)
    np.testing.assert_allclose(fit.theta, ref["theta"], rtol=1e-4, atol=1e-4)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-4)
    np.testing.assert_allclose(fit.fixef[list(ref["beta"])].to_numpy(), list(ref["beta"].values()), rtol=1e-4)
    assert fit.h2 == pytest.approx(ref["h2"], abs=1e-4)
    assert np.isfinite(fit.h2_se) and 0 < fit.h2_se < 1
    gv = fit.genetic_values(ref["terms"][0]["group"] if "terms" in ref else None)
    gv = gv.set_index("level")["condval"]
    expected = pd.Series(ref["genetic_values"])
    np.testing.assert_allclose(gv.loc[expected.index].to_numpy(), expected.to_numpy(), rtol=1e-3, atol=1e-4)


def test_unobserved_levels_get_conditional_means(case_fits):
    ref, fit = case_fits["gblup_missing"]
    assert any("not in the data" in m for m in fit.messages)
    gv = fit.genetic_values().set_index("level")
    unobs = pd.Series(ref["genetic_values_unobserved"])
    np.testing.assert_allclose(gv.loc[unobs.index, "condval"].to_numpy(), unobs.to_numpy(), rtol=1e-3, atol=1e-4)
    assert gv.loc[unobs.index, "condsd"].isna().all()
    assert (gv.drop(unobs.index)["condsd"] > 0).all()


def test_identity_relmat_equals_plain_model():
    ref = json.loads((REF / "identity_repeated.json").read_text())
    data = pd.read_csv(REF / ref["data"])
    ids = sorted(data["id"].astype(str).unique())
    K = pd.DataFrame(np.eye(len(ids)), index=ids, columns=ids)
    with_k = jaxlmm.lmer(ref["formula"], data, relmat={"id": K})
    plain = jaxlmm.lmer(ref["formula"], data)
    assert with_k.criterion == pytest.approx(plain.criterion, rel=1e-10)
    assert with_k.criterion == pytest.approx(ref["plain_lmer"]["criterion"], rel=1e-6)
    np.testing.assert_allclose(with_k.theta, plain.theta, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(with_k.ranef["condval"], plain.ranef["condval"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(with_k.ranef["condsd"], plain.ranef["condsd"], rtol=1e-6)


@pytest.fixture(scope="module")
def traits():
    """Four traits on the 80 individuals of gblup_simple, two of them with missing values."""
    ref, data, relmat = load_case("gblup_simple")
    rng = np.random.default_rng(1)
    Y = pd.DataFrame({f"t{i}": data["y"] + rng.normal(size=len(data)) * 0.4 * i for i in range(4)})
    Y.iloc[[3, 5, 7], 1] = np.nan
    Y.iloc[10:22, 3] = np.nan
    return data, relmat, Y


@pytest.fixture(scope="module")
def spectral_batch(traits):
    data, relmat, Y = traits
    return jaxlmm.lmer("~ 1 + (1 | id)", data, relmat=relmat, responses=Y)


def test_spectral_path_taken_and_equal_to_general(traits, spectral_batch):
    data, relmat, Y = traits
    assert (spectral_batch.diagnostics["path"] == "spectral").all()
    assert spectral_batch.converged.all()
    general = jaxlmm.lmer("~ 1 + (1 | id)", data, relmat=relmat, responses=Y, spectral=False)
    assert (general.diagnostics["path"] == "general").all()
    for name in ["criterion", "sigma", "h2", "h2_se"]:
        np.testing.assert_allclose(getattr(spectral_batch, name), getattr(general, name), rtol=1e-6)
    np.testing.assert_allclose(spectral_batch.theta, general.theta, rtol=1e-6)
    np.testing.assert_allclose(spectral_batch.fixef, general.fixef, rtol=1e-6)
    np.testing.assert_allclose(spectral_batch.se, general.se, rtol=1e-6)


@pytest.mark.parametrize("name", ["t0", "t1", "t3"])
def test_spectral_trait_equals_fit_on_observed_rows(traits, spectral_batch, name):
    data, relmat, Y = traits
    frame = data.assign(y=Y[name]).dropna(subset=["y"])
    alone = jaxlmm.lmer("y ~ 1 + (1 | id)", frame, relmat=relmat)
    assert spectral_batch.criterion[name] == pytest.approx(alone.criterion, rel=1e-6)
    assert spectral_batch.theta.loc[name].iloc[0] == pytest.approx(alone.theta[0], rel=1e-6)
    assert spectral_batch.fixef.loc[name].iloc[0] == pytest.approx(alone.fixef.iloc[0], rel=1e-6)
    assert spectral_batch.h2[name] == pytest.approx(alone.h2, rel=1e-6)
    assert spectral_batch.h2_se[name] == pytest.approx(alone.h2_se, rel=1e-5)
    assert spectral_batch.nobs[name] == alone.nobs


def test_batch_h2_columns_and_trait_view(spectral_batch):
    frame = spectral_batch.to_frame()
    assert {"h2", "h2_se", "path"} <= set(frame.columns)
    vc = spectral_batch.variance_components
    np.testing.assert_allclose(spectral_batch.h2, vc["id"] / (vc["id"] + vc["Residual"]), rtol=1e-10)
    one = spectral_batch.trait("t1")
    assert one.criterion == pytest.approx(spectral_batch.criterion["t1"], rel=1e-8)


def test_relmat_errors():
    ref, data, relmat = load_case("gblup_simple")
    K = relmat["id"]
    with pytest.raises(DataError, match="not in its relationship matrix"):
        jaxlmm.lmer("y ~ 1 + (1 | id)", data, relmat={"id": K.iloc[1:, 1:]})
    bad = K.copy()
    bad.iloc[0, 1] += 0.5
    with pytest.raises(DataError, match="not symmetric"):
        jaxlmm.lmer("y ~ 1 + (1 | id)", data, relmat={"id": bad})
    neg = K - 2.0 * np.eye(len(K))
    with pytest.raises(DataError, match="not positive semi-definite"):
        jaxlmm.lmer("y ~ 1 + (1 | id)", data, relmat={"id": neg})
    with pytest.raises(DataError, match="grouping factors"):
        jaxlmm.lmer("y ~ 1 + (1 | id)", data, relmat={"ID": K})
    with pytest.raises(DataError, match="square"):
        jaxlmm.lmer("y ~ 1 + (1 | id)", data, relmat={"id": (np.ones((3, 2)), ["a", "b", "c"])})
    nan = K.copy()
    nan.iloc[2, 2] = np.nan
    with pytest.raises(DataError, match="missing or infinite"):
        jaxlmm.lmer("y ~ 1 + (1 | id)", data, relmat={"id": nan})


@pytest.mark.filterwarnings("ignore::jaxlmm.errors.JaxlmmWarning")
def test_singular_grm_and_array_input():
    """A centred genomic matrix (K 1 = 0, singular) passed as (array, names) works through eigen factors."""
    markers = pd.read_csv(REF / "gemma_markers.csv", index_col=0)
    K = jaxlmm.grm(markers)
    assert np.linalg.eigvalsh(K.to_numpy())[0] < 1e-10
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"id": K.index, "y": rng.normal(size=len(K)) + 5})
    as_frame = jaxlmm.lmer("y ~ 1 + (1 | id)", data, relmat={"id": K})
    as_pair = jaxlmm.lmer("y ~ 1 + (1 | id)", data, relmat={"id": (K.to_numpy(), list(K.index))})
    assert as_frame.design.terms[0].relmat.method == "eigen"
    assert as_frame.criterion == pytest.approx(as_pair.criterion, rel=1e-12)
