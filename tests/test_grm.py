"""jaxlmm.grm (module jaxlmm.model.markers): genomic relationship matrices against GEMMA 0.98.5 (tests/reference/relmat/README.txt, 2)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaxlmm.model import markers as grm_module
from jaxlmm import DataError, JaxlmmWarning
from jaxlmm import grm

REF = Path(__file__).parent / "reference" / "relmat"
# GEMMA prints 10 significant digits: relative rounding error <= 5e-10
TOL = dict(rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def markers():
    return pd.read_csv(REF / "gemma_markers.csv", index_col=0).copy()  # "NA" -> NaN; copy consolidates


def gemma(name):
    return np.loadtxt(REF / f"grm_gemma_{name}.csv", delimiter=",")


def test_vanraden_equals_gemma_centered(markers):
    K = grm(markers)
    np.testing.assert_allclose(K.to_numpy(), gemma("centered"), **TOL)


def test_standardized_equals_gemma_standardized(markers):
    K = grm(markers, "standardized")
    np.testing.assert_allclose(K.to_numpy(), gemma("standardized"), **TOL)


def test_vanraden2008_is_rescaled_vanraden(markers):
    p = markers.mean().to_numpy() / 2  # pandas means skip NaN: mu_j / 2
    scale = markers.shape[1] / (2 * np.sum(p * (1 - p)))
    np.testing.assert_allclose(grm(markers, "vanraden2008").to_numpy(),
                               scale * grm(markers).to_numpy(), rtol=1e-13)


@pytest.mark.parametrize("method", grm_module.METHODS)
def test_symmetric_psd_and_centred(markers, method):
    K = grm(markers, method).to_numpy()
    assert np.array_equal(K, K.T)
    assert np.linalg.eigvalsh(K).min() > -1e-12
    np.testing.assert_allclose(K.sum(axis=1), 0, atol=1e-12)  # columns of Z sum to 0 (imputed z = 0)


def test_dataframe_in_dataframe_out_numpy_in_numpy_out(markers):
    K = grm(markers)
    assert isinstance(K, pd.DataFrame)
    assert list(K.index) == list(K.columns) == [f"ind{i:02d}" for i in range(1, 31)]
    A = grm(markers.to_numpy())
    assert type(A) is np.ndarray and A.dtype == np.float64
    np.testing.assert_array_equal(A, K.to_numpy())
    # nullable integer columns with pd.NA are read as NaN-missing dosages
    np.testing.assert_allclose(grm(markers.astype("Int64")).to_numpy(), A, rtol=1e-14)


@pytest.mark.parametrize("method", grm_module.METHODS)
def test_chunking_does_not_change_the_result(markers, method, monkeypatch):
    whole = grm(markers, method).to_numpy()
    monkeypatch.setattr(grm_module, "_CHUNK", 7)
    np.testing.assert_allclose(grm(markers, method).to_numpy(), whole, rtol=1e-12, atol=1e-15)


def with_extra_snps(markers):
    """GEMMA's filter experiment: + a SNP with 2/30 missing, a monomorphic SNP, a singleton SNP.

    (A SNP of all heterozygotes is monomorphic too, but its maf from mu_j / 2 is 0.5: GEMMA keeps it.)
    """
    n = len(markers)
    rng = np.random.default_rng(1)
    two_missing = rng.integers(0, 3, n).astype(float)
    two_missing[[3, 17]] = np.nan
    singleton = np.zeros(n)
    singleton[5] = 1  # maf = 1/60 > 0.01: kept
    return markers.assign(miss2=two_missing, mono=np.full(n, 2.0), single=singleton)


def test_gemma_default_filters(markers):
    X = with_extra_snps(markers)
    filtered = grm(X, min_maf=0.01, max_missing=0.05).to_numpy()
    # the same as leaving the two SNPs out: divisor m = 101 analysed SNPs (as GEMMA reported)
    np.testing.assert_allclose(filtered, grm(X.drop(columns=["miss2", "mono"])).to_numpy(), rtol=1e-13)
    # unfiltered, the monomorphic SNP contributes zero to Z Z' but still counts in m
    unfiltered = grm(X.drop(columns="miss2")).to_numpy()
    np.testing.assert_allclose(unfiltered * 102, filtered * 101, rtol=1e-13, atol=1e-15)
    # each filter alone
    np.testing.assert_allclose(grm(X, max_missing=0.05).to_numpy(), grm(X.drop(columns="miss2")).to_numpy())
    np.testing.assert_allclose(grm(X, min_maf=0.01).to_numpy(), grm(X.drop(columns="mono")).to_numpy())
    np.testing.assert_allclose(grm(X, min_maf=0.02).to_numpy(),
                               grm(X.drop(columns=["mono", "single"])).to_numpy())
    # with the filters on, "standardized" has no monomorphic marker left to warn about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grm(X, "standardized", min_maf=0.01, max_missing=0.05)


def test_standardized_drops_monomorphic_markers_with_warning(markers):
    X = markers.assign(mono=2.0)
    with pytest.warns(JaxlmmWarning,
                      match=r"dropped 1 monomorphic marker\(s\) with zero variance \('mono'\)"):
        K = grm(X, "standardized")
    np.testing.assert_allclose(K.to_numpy(), gemma("standardized"), **TOL)


def test_all_missing_marker_dropped_by_max_missing(markers):
    X = markers.assign(empty=np.nan)
    with pytest.raises(DataError, match=r"marker 'empty' has only missing values"):
        grm(X)
    np.testing.assert_allclose(grm(X, max_missing=0.5).to_numpy(), gemma("centered"), **TOL)


def test_errors(markers):
    with pytest.raises(DataError, match=r"must be a 2-D individuals x markers matrix, got 1-D"):
        grm(np.zeros(5))
    with pytest.raises(DataError, match=r"got 3-D"):
        grm(np.zeros((2, 3, 4)))
    with pytest.raises(DataError, match=r"marker column 'rs002' is not numeric"):
        grm(markers.assign(rs002="A"))
    with pytest.raises(DataError, match=r"marker column 1 is not numeric"):
        grm(np.array([[0, "A"], [1, 2]], dtype=object))
    with pytest.raises(DataError, match=r"markers are not numeric \(dtype <U1\)"):
        grm(np.array([["0", "1"], ["1", "2"]]))
    bad = markers.copy()
    bad.loc["ind07", "rs042"] = 3
    with pytest.raises(DataError, match=r"individual 'ind07', marker 'rs042': dosage 3 is outside \[0, 2\]"):
        grm(bad)
    with pytest.raises(DataError, match=r"individual row 1, marker column 0: dosage -1 is outside"):
        grm(np.array([[0.0, 1.0], [-1.0, 2.0]]))
    with pytest.raises(DataError, match=r"dosage inf is outside"):
        grm(np.array([[0.0, np.inf], [1.0, 2.0]]))
    with pytest.raises(DataError, match=r"no markers left after filtering \(min_maf=0.01, max_missing=0.05, "
                                        r"2 markers given\)"):
        grm(np.array([[0, 0], [0, 1], [0, np.nan]]), min_maf=0.01, max_missing=0.05)
    with pytest.raises(DataError, match=r"no markers \(columns\)"):
        grm(np.zeros((3, 0)))
    with pytest.raises(DataError, match=r"2 sum p\(1-p\) = 0"):
        grm(np.array([[0.0, 2.0], [0.0, 2.0], [0.0, np.nan]]), "vanraden2008")
    with pytest.raises(ValueError, match=r"method must be one of 'vanraden', 'standardized', 'vanraden2008'"):
        grm(markers, "gemma")
    with pytest.raises(ValueError, match=r"min_maf must be between 0 and 0.5"):
        grm(markers, min_maf=0.7)
    with pytest.raises(ValueError, match=r"max_missing must be between 0 and 1"):
        grm(markers, max_missing=-0.1)
