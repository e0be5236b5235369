"""Issue S item 8: named statuses, dataset names in any case, the precision note, ``coef`` without
pandas warnings, and the compile-time note of ``fit_function``."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm.core.implicit import FitState
from jaxlmm.core.status import CONVERGED, MAX_ITER, STATUS_NAMES, Status, as_status, status_name
from jaxlmm.datasets import DATASETS, example_formula, list_datasets, load_dataset

pytestmark = pytest.mark.usefixtures("x64")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sleep_fit():
    return jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", load_dataset("sleepstudy"))


@pytest.fixture(scope="module")
def ar1_fit():
    """A structured fit with 105 random-effect columns absent from the fixed effects (coef adds each)."""
    rng = np.random.default_rng(0)
    T, G = 105, 3
    d = pd.DataFrame({"g": np.repeat([f"g{i}" for i in range(G)], T), "t": np.tile(np.arange(T), G)})
    d["y"] = rng.normal(size=len(d)) + np.repeat(rng.normal(size=G), T)
    return jaxlmm.lmer("y ~ 1 + ar1(0 + factor(t) | g)", d)


# ------------------------------------------------------------------ item 8: statuses with names
def test_status_table_names_every_code():
    assert {int(s) for s in Status} == set(STATUS_NAMES)
    for code, name in STATUS_NAMES.items():
        s = as_status(code)
        assert s == code and isinstance(s, int) and str(s) == name and f"{s}" == name and f"{s:>25}".strip() == name
        assert status_name(code) == name and status_name(np.int32(code)) == name
    assert as_status(99) == 99 and status_name(99) == "status 99"


def test_lmer_result_status_is_named_and_compares_as_int(sleep_fit):
    s = sleep_fit.status
    assert s == CONVERGED and s == 0 and isinstance(s, int) and int(s) == 0
    assert str(s) == "converged" and sleep_fit.status_name == "converged" and sleep_fit.converged
    assert sleep_fit.optimizer_message == "converged"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        short = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", load_dataset("sleepstudy"), max_iter=1)
    assert short.status == MAX_ITER and short.status_name == "max_iter" and str(short.status) == "max_iter"
    assert not short.converged and short.optimizer_message == "maximum number of iterations reached"
    assert STATUS_NAMES[short.status] == "max_iter"          # the table still takes the code as a key


def test_fit_state_status_name():
    f = jaxlmm.fit_function("Reaction ~ Days + (Days | Subject)", load_dataset("sleepstudy"))
    state = f(f.y)
    assert int(state.status) == CONVERGED and state.status_name == "converged"
    batch = state._replace(status=np.array([CONVERGED, MAX_ITER], np.int32))
    assert list(batch.status_name) == ["converged", "max_iter"]
    with pytest.raises(TypeError, match="concrete status"):
        jax.jit(lambda s: FitState(*[None] * 7, s, None).status_name)(0)


# ------------------------------------------------------------------ item 8: dataset names
def test_every_dataset_name_the_readme_lists_loads_in_any_case():
    readme = (ROOT / "README.md").read_text()
    listed = ["sleepstudy", "Dyestuff", "Dyestuff2", "Penicillin", "Pastes", "InstEval"]
    data_section = readme[readme.index("## Data"):]
    for name in listed:
        assert re.search(rf"\b{name}\b", data_section), name
    for name in listed + list_datasets() + [n.upper() for n in DATASETS]:
        frame = load_dataset(name)
        assert isinstance(frame, pd.DataFrame) and len(frame) > 0, name
        assert example_formula(name) == DATASETS[name.lower()][2]
    d2 = load_dataset("Dyestuff2")
    assert d2.shape == (30, 2) and isinstance(d2["Batch"].dtype, pd.CategoricalDtype)
    with pytest.raises(ValueError, match="unknown dataset 'nosuch'.*Dyestuff2"):
        load_dataset("nosuch")


# ------------------------------------------------------------------ item 8: docs, coef, compile note
def test_lme4_users_doc_says_import_changes_no_jax_setting():
    doc = (ROOT / "docs" / "for_lme4_users.md").read_text()
    precision = doc[doc.index("**Precision.**"):doc.index("**Singular fits.**")]
    assert "turns on JAX's 64-bit mode" not in precision
    assert "for the whole process" not in precision
    assert "leaves\n`jax_enable_x64`" in precision and "jax.enable_x64(True)" in precision


def test_coef_builds_without_pandas_warnings(ar1_fit, sleep_fit):
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # PerformanceWarning included
        coef = type(ar1_fit).coef.func(ar1_fit)             # built afresh, not a cached value
        sleep_coef = type(sleep_fit).coef.func(sleep_fit)
    re = ar1_fit.ranef_dict()["g"]
    assert coef["g"].shape == (3, 1 + 105) and re.shape[1] == 105
    assert list(coef["g"].columns) == ["(Intercept)"] + list(re.columns)
    np.testing.assert_allclose(coef["g"]["(Intercept)"], ar1_fit.fixef["(Intercept)"])
    np.testing.assert_allclose(coef["g"][re.columns].to_numpy(), re.to_numpy())
    sre = sleep_fit.ranef_dict()["Subject"]
    expected = sre + sleep_fit.fixef[["(Intercept)", "Days"]].to_numpy()
    pd.testing.assert_frame_equal(sleep_coef["Subject"], expected, check_names=False)


def test_fit_function_docstring_says_what_compiles():
    doc = jaxlmm.model.fit_function.FitFunction.__doc__
    assert "Compile time" in doc and "jax.jit(jax.grad(g), compiler_options=f.compiler_options)" in doc
    assert "once" in doc and "sleepstudy" in doc
