"""Issue S items 8 and 9: named statuses, dataset names in any case, the precision note, ``coef``
without pandas warnings, the compile-time note of ``fit_function``, and HTML display in notebooks."""

from __future__ import annotations

import html
import re
import warnings
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm.core.pls.implicit import FitState
from jaxlmm.core.status import CONVERGED, MAX_ITER, STATUS_NAMES, Status, as_status, status_name
from jaxlmm.datasets import DATASETS, example_formula, list_datasets, load_dataset

pytestmark = pytest.mark.usefixtures("x64")

ROOT = Path(__file__).resolve().parents[1]
MARKUP = "<b>x</b>"
ESCAPED = html.escape(MARKUP)


@pytest.fixture(scope="module")
def sleep_fit():
    return jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", load_dataset("sleepstudy"))


@pytest.fixture(scope="module")
def marked_data():
    """A factor with a level that is markup (a fixed effect ``f<b>x</b>``) and a response column named
    ``<b>x</b>`` (a trait of a batch)."""
    rng = np.random.default_rng(3)
    n = 60
    d = pd.DataFrame({"g": np.repeat([f"g{i}" for i in range(10)], 6),
                      "f": pd.Categorical(np.tile(["a", MARKUP, "c"], 20), categories=["a", MARKUP, "c"])})
    d["y"] = rng.normal(size=n) + np.repeat(rng.normal(size=10), 6) + (d["f"] == MARKUP) * 1.5
    d[MARKUP] = rng.normal(size=n) + np.repeat(rng.normal(size=10), 6)
    return d


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


# ------------------------------------------------------------------ item 9: HTML display
def test_lmer_result_html_is_the_summary_as_tables(sleep_fit):
    out = sleep_fit._repr_html_()
    assert out.count("<table") >= 4                          # residuals, random effects, fixed effects, correlation
    assert "Satterthwaite" in out and "Random effects:" in out and "Fixed effects:" in out
    assert "REML criterion at convergence: 1743.6" in out
    text = sleep_fit.summary()
    for number in ("36.838", "6.771", "3.26e-06", "612.09", "24.740", "654.94", "17.00"):   # the same numbers
        assert number in text and f"<td>{number}</td>" in out
    assert "&lt;2e-16" in out and "<2e-16" not in out
    for name in ("Pr(&gt;|t|)", "Std. Error", "(Intercept)", "Days", "Subject", "Residual"):
        assert name in out
    assert repr(sleep_fit).startswith("<LmerResult")          # plain text stays the repr


def test_html_escapes_user_strings(marked_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jaxlmm.lmer("y ~ f + (1 | g)", marked_data, data_name="<script>alert(1)</script>")
    assert f"f{MARKUP}" in fit.fixef_names
    out = fit._repr_html_()
    assert MARKUP not in out and "<script>" not in out
    assert f"f{ESCAPED}" in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    coef_html = fit.coef_table()._repr_html_()              # a coefficient table is a DataFrame: escaped too
    assert MARKUP not in coef_html and f"f{ESCAPED}" in coef_html

    emm = jaxlmm.emmeans(fit, "f")
    emm_html = emm._repr_html_()
    assert MARKUP not in emm_html and ESCAPED in emm_html and emm_html.count("<tr>") == 3      # one row per level
    assert "Degrees-of-freedom method: kenward-roger" in emm_html and repr(emm).startswith(emm.table.to_string(index=False))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = jaxlmm.lmer("~ 1 + (1 | g)", marked_data, responses=["y", MARKUP])
    assert MARKUP in batch.traits
    batch_html = batch._repr_html_()
    assert MARKUP not in batch_html and ESCAPED in batch_html
    assert "Traits per status:" in batch_html
    assert re.search(r"<th>converged</th>\s*<td>2</td>", batch_html)          # 2 traits converged
    assert repr(batch).startswith("<BatchResult")


def test_structured_result_html_has_covariance_parameters_and_z_tests(ar1_fit):
    out = ar1_fit._repr_html_()
    assert "z-tests" in out and "Pr(&gt;|z|)" in out and "Covariance parameters (Wald SEs):" in out
    assert "... (97 more)" in out and "rho" in out
    assert repr(ar1_fit).startswith("<StructuredResult")


def test_batch_html_shows_a_long_batch_in_part():
    rng = np.random.default_rng(1)
    d = pd.DataFrame({"g": np.repeat(np.arange(8), 5).astype(str)})
    Y = rng.normal(size=(40, 30)) + np.repeat(rng.normal(size=(8, 30)), 5, axis=0)
    for j in range(30):
        d[f"t{j}"] = Y[:, j]
    batch = jaxlmm.lmer("~ 1 + (1 | g)", d, responses=[f"t{j}" for j in range(30)])
    out = batch._repr_html_()
    assert "t0" in out and "t29" in out and "t15" not in out and "..." in out      # first and last ten rows


def test_cli_dispformula_and_the_covariance_parameters_table(tmp_path, capsys):
    """S.8: ``--dispformula`` at the command line; a structured fit writes its covariance parameters (the
    model's variances and correlations, not the optimizer's internal atanh(rho))."""
    from jaxlmm.cli.main import main

    sleep = jaxlmm.load_dataset("sleepstudy")
    csv = tmp_path / "sleep.csv"
    sleep.to_csv(csv, index=False)
    out = tmp_path / "disp"
    assert main(["fit", str(csv), "Reaction ~ Days + (1 | Subject)", "--dispformula", "~ Days",
                 "--out", str(out), "--no-cache"]) == 0
    table = pd.read_csv(out / "covariance_parameters.csv")
    assert {"dispersion.(Intercept)", "dispersion.Days"} <= set(table["parameter"])
    fit = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", sleep, dispformula="~ Days")
    np.testing.assert_allclose(table["estimate"], fit.covariance_parameters["estimate"], rtol=1e-6)

    out = tmp_path / "ar1"
    sleep.assign(day=sleep["Days"].astype(str)).to_csv(csv, index=False)
    assert main(["fit", str(csv), "Reaction ~ Days + ar1(0 + factor(Days) | Subject)", "--out", str(out),
                 "--no-cache"]) == 0
    table = pd.read_csv(out / "covariance_parameters.csv")
    rho = table.loc[table["parameter"].str.contains("rho|cor", regex=True), "estimate"]
    assert len(rho) >= 1 and np.all(np.abs(rho) <= 1)
    assert (out / "theta.csv").exists()
    capsys.readouterr()


def test_diagnostics_counts_compilations():
    """O.6: one public compile counter: a new shape compiles, the same shape again does not."""
    import jax.numpy as jnp

    with jaxlmm.diagnostics.count_compilations() as first:
        jax_fn = __import__("jax").jit(lambda x: jnp.sin(x) * 3.0)
        jax_fn(jnp.ones(7))
    with jaxlmm.diagnostics.count_compilations() as again:
        jax_fn(jnp.ones(7))
    assert first.count >= 1 and again.count == 0
    assert jaxlmm.diagnostics.compilations() >= first.count
    assert jaxlmm.diagnostics.releases() >= 0
