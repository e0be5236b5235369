"""Issue O.5: one result type per model class, no field that changes meaning between engines.

``LinearMixedResult`` (``results/linear_result.py``) holds what every linear fit reports alike and no
variance parameters; ``LmerResult`` (lme4's class: ``theta`` relative to sigma) and ``StructuredResult``
(structured covariances or ``dispformula``: ``theta`` absolute) are its two subclasses, neither a subclass of
the other.  A structured fit reports what it reported before the split (values recorded then, and glmmTMB's
reference), and what it used to inherit from lme4's class with lme4's meaning (``lambdas``, ``h2``) now has
the model's meaning.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import jaxlmm
from jaxlmm.results.linear_result import LinearMixedResult
from test_relmat import load_case
from test_structures import _structured_case, check_against_glmmtmb

# machines_cs (tests/reference/structured) fitted before the split (commit 8a9aeb7)
THETA = [4.114487070125366, 8.419744133797993, 4.461802780288383, 1.5423550020039538]
THETA_NAMES = ["Worker.sd.MachineA", "Worker.sd.MachineB", "Worker.sd.MachineC", "Worker.a"]
VCOV = [16.92900385022882, 70.89209127862571, 19.907684050189143, 25.487156408915553, 13.506190154931453,
        27.638600726840867, 0.9257299681534243]
SDCOR = [4.114487070125366, 8.419744133797993, 4.461802780288383, 0.7357102186924985, 0.7357102186924988,
         0.7357102186924986, 0.9621486206160794]
COEF = {"Estimate": [52.35555555555561, 7.96666666666685, 13.916666666666682],
        "Std. Error": [1.6949720010607818, 2.49879756493418, 1.3191828848860279],
        "z value": [30.8887436033099, 3.1882001081094766, 10.549459689108252],
        "Pr(>|z|)": [1.6918374632161446e-209, 0.0014316142499462756, 5.109004341969301e-26]}
SUMMARY = """Linear mixed model fit by REML. z-tests [structured covariances: cs(Worker); one residual SD]
Formula: score ~ Machine + cs(0 + Machine | Worker)

REML criterion at convergence: 209.2

Scaled residuals: 
    Min      1Q  Median     3Q    Max
-2.3449 -0.5182 -0.0044 0.4789 2.4870

Random effects:
 Groups   Name     Variance Std.Dev. Corr
 Worker   MachineA  16.9290   4.1145
          MachineB  70.8921   8.4197 0.74
          MachineC  19.9077   4.4618 0.74 0.74
 Residual            0.9257   0.9621

Covariance parameters (Wald SEs):
                           Estimate Std. Error
Worker cs var.MachineA      16.9290    10.9168
Worker cs var.MachineB      70.8921    44.2502
Worker cs var.MachineC      19.9077    12.8613
Worker cs rho                0.7357     0.1724
Residual residual variance   0.9257     0.2185
Number of obs: 54, groups:  Worker, 6

Fixed effects:
            Estimate Std. Error z value Pr(>|z|)
(Intercept)   52.356      1.695  30.889   <2e-16
MachineB       7.967      2.499   3.188  0.00143
MachineC      13.917      1.319  10.549   <2e-16

Correlation of Fixed Effects:
         (Intr) MachnB
MachineB  0.325
MachineC -0.278  0.297"""

NUMBER = re.compile(r"-?\d+\.\d+(?:e-?\d+)?")

# what only one model class means one way: never on the base class
PER_CLASS = ("theta", "theta_names", "lower", "lambdas", "h2", "h2_se", "df_model", "term_covariances", "varcorr",
             "is_singular", "covariance_parameters", "residual_sd", "_default_ddf", "_refit", "kind")


@pytest.fixture(scope="module")
def machines_cs():
    ref, data = _structured_case("machines_cs")
    return ref, jaxlmm.lmer(ref["formula"], data)


@pytest.fixture(scope="module")
def sleep_fit():
    return jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", jaxlmm.load_dataset("sleepstudy"))


def test_one_result_type_per_model_class(machines_cs, sleep_fit):
    _, fit = machines_cs
    assert type(fit) is jaxlmm.StructuredResult and type(sleep_fit) is jaxlmm.LmerResult
    assert not isinstance(fit, jaxlmm.LmerResult)
    assert not issubclass(jaxlmm.StructuredResult, jaxlmm.LmerResult)
    assert not issubclass(jaxlmm.LmerResult, jaxlmm.StructuredResult)
    assert isinstance(fit, jaxlmm.LinearMixedResult) and isinstance(sleep_fit, jaxlmm.LinearMixedResult)
    assert jaxlmm.LinearMixedResult is LinearMixedResult and "LinearMixedResult" in jaxlmm.__all__
    assert (fit.kind, sleep_fit.kind) == ("structured", "lme4")


def test_base_class_defines_no_per_class_field():
    for name in PER_CLASS:
        assert not any(name in vars(cls) for cls in LinearMixedResult.__mro__), name
        assert name in dir(jaxlmm.LmerResult) and name in dir(jaxlmm.StructuredResult), name
    for name in ("plan", "cross_products", "influence", "profile"):     # lme4's class only (or refused)
        assert not hasattr(LinearMixedResult, name)


def test_structured_fit_reports_what_it_did_before_the_split(machines_cs):
    ref, fit = machines_cs
    check_against_glmmtmb(fit, ref)
    np.testing.assert_allclose(fit.theta, THETA, rtol=1e-6)
    assert fit.theta_names == THETA_NAMES
    vc = fit.varcorr
    assert list(vc["grp"]) == ["Worker"] * 6 + ["Residual"]
    assert list(vc["var2"]) == ["", "", "", "MachineB", "MachineC", "MachineC", ""]
    np.testing.assert_allclose(vc["vcov"], VCOV, rtol=1e-6)
    np.testing.assert_allclose(vc["sdcor"], SDCOR, rtol=1e-6)
    table = fit.coef_table()
    assert list(table.columns) == list(COEF) and list(table.index) == ["(Intercept)", "MachineB", "MachineC"]
    for column, values in COEF.items():
        np.testing.assert_allclose(table[column], values, rtol=1e-5)
    text = fit.summary()
    assert NUMBER.sub("#", text) == NUMBER.sub("#", SUMMARY)     # the same layout and words ...
    np.testing.assert_allclose([float(x) for x in NUMBER.findall(text)],      # ... and the same numbers
                               [float(x) for x in NUMBER.findall(SUMMARY)], rtol=2e-4, atol=1e-4)
    assert repr(fit).startswith("<StructuredResult")     # the short repr names the result's own type


def test_structured_parameters_and_lambdas_have_one_meaning(machines_cs):
    _, fit = machines_cs
    p = fit.parameters
    assert list(p.index) == THETA_NAMES + ["residual_sd.Residual"]
    np.testing.assert_array_equal(p.to_numpy(), np.append(fit.theta, fit.dispersion.to_numpy()))
    assert len(fit.grad) == len(p) == fit.df_model - len(fit.fixef)
    for lam, C in zip(fit.lambdas, fit.term_covariances):           # relative to sigma, as LmerResult's
        np.testing.assert_allclose(fit.sigma ** 2 * lam @ lam.T, C, rtol=1e-10, atol=1e-12)
    with pytest.raises(jaxlmm.JaxlmmError, match="influence"):
        fit.influence()


def test_heritability_of_a_structured_fit_is_the_lme4_fits():
    """A relationship-matrix model with ``dispformula="~1"`` is a structured fit of lme4's model: its
    ``h2`` and ``h2_se`` are lme4's (before the split it read its absolute theta as lme4's relative one)."""
    ref, data, relmat = load_case("gblup_simple")
    lme4 = jaxlmm.lmer(ref["formula"], data, relmat=relmat)
    structured = jaxlmm.lmer(ref["formula"], data, relmat=relmat, dispformula="~1")
    assert isinstance(structured, jaxlmm.StructuredResult) and isinstance(lme4, jaxlmm.LmerResult)
    assert lme4.h2 == pytest.approx(ref["h2"], abs=1e-4)
    assert structured.h2 == pytest.approx(lme4.h2, rel=1e-6)
    assert structured.h2_se == pytest.approx(lme4.h2_se, rel=1e-4)
    np.testing.assert_allclose(structured.lambdas[0], lme4.lambdas[0], rtol=1e-5)
    gv, gv_lme4 = structured.genetic_values(), lme4.genetic_values()
    np.testing.assert_allclose(gv["condval"], gv_lme4["condval"], rtol=1e-5, atol=1e-8)


def test_bootstrap_plot_takes_every_linear_fit(machines_cs):
    """``plot.bootstrap(frame, fit)`` reads the estimates of any linear fit (``isinstance`` of the base)."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd
    from jaxlmm.plot.bootstrap_plots import bootstrap

    _, fit = machines_cs
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"sigma": fit.sigma + 0.1 * rng.standard_normal(50),
                          "MachineB": fit.fixef["MachineB"] + rng.standard_normal(50)})
    fig = bootstrap(frame, fit)
    marked = [line.get_xdata()[0] for ax in fig.axes for line in ax.get_lines() if line.get_label() == "estimate"]
    np.testing.assert_allclose(sorted(marked), sorted([fit.sigma, fit.fixef["MachineB"]]))
