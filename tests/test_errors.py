"""Bad input: each a clear error naming the problem, raised before anything reaches JAX."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm import DataError, FormulaError


@pytest.fixture(scope="module")
def sleep():
    return jaxlmm.load_dataset("sleepstudy")


FORMULA = "Reaction ~ Days + (Days | Subject)"


def test_missing_column(sleep):
    with pytest.raises(DataError, match=r"column 'Dayz' .*not found"):
        jaxlmm.lmer("Reaction ~ Dayz + (1 | Subject)", sleep)
    with pytest.raises(DataError, match=r"column 'Subj' .*grouping factor"):
        jaxlmm.lmer("Reaction ~ Days + (1 | Subj)", sleep)


def test_response_not_numeric(sleep):
    data = sleep.assign(label=["a"] * len(sleep))
    with pytest.raises(DataError, match=r"response 'label' is not numeric"):
        jaxlmm.lmer("label ~ Days + (1 | Subject)", data)


@pytest.mark.parametrize("formula, message", [
    ("Reaction ~ Days + (Days | Subject", r"unbalanced parentheses"),
    ("Reaction ~ Days + Days | Subject)", r"unbalanced parentheses"),
    ("Reaction ~ Days + ( | Subject)", r"empty left side of '\|'"),
    ("Reaction ~ Days + (Days | )", r"empty grouping factor"),
    ("Reaction ~ Days $ Subject + (1 | Subject)", r"Unknown operator '\$'"),
    ("Reaction ~ Days + + (1 | Subject)", r"missing an argument"),
    ("Reaction Days + (1 | Subject)", r"has no '~'"),
    ("Reaction ~ Days | Subject", r"'\|' must appear inside a parenthesized"),
    ("Reaction ~ Days", r"no random-effects terms"),
])
def test_formula_syntax_errors(sleep, formula, message):
    with pytest.raises(FormulaError, match=message):
        jaxlmm.lmer(formula, sleep)


def test_grouping_factor_with_one_level(sleep):
    with pytest.raises(DataError, match=r"grouping factor 'one' has only 1 level"):
        jaxlmm.lmer("Reaction ~ Days + (1 | one)", sleep.assign(one="a"))


def test_as_many_levels_as_observations(sleep):
    data = sleep.assign(row=np.arange(len(sleep)))
    with pytest.raises(DataError, match=r"number of levels of each grouping factor must be < number of "
                                        r"observations \(problems: row"):
        jaxlmm.lmer("Reaction ~ Days + (1 | row)", data)


def test_more_random_effects_than_observations(sleep):
    data = sleep.iloc[:40].assign(half=np.arange(40) // 2)
    with pytest.raises(DataError, match=r"number of observations \(=40\) <= number of random effects \(=40\)"):
        jaxlmm.lmer("Reaction ~ Days + (Days | half)", data)


def test_all_nan_response(sleep):
    with pytest.raises(DataError, match=r"response 'Reaction' has no non-missing values"):
        jaxlmm.lmer(FORMULA, sleep.assign(Reaction=np.nan))


def test_empty_data(sleep):
    with pytest.raises(DataError, match=r"data has no rows"):
        jaxlmm.lmer(FORMULA, sleep.iloc[:0])
    with pytest.raises(DataError, match=r"must be a pandas DataFrame"):
        jaxlmm.lmer(FORMULA, [1, 2, 3])


def test_non_finite_and_negative_weights(sleep):
    w = np.ones(len(sleep))
    w[5] = np.inf
    with pytest.raises(DataError, match=r"weights must be finite; row 5 has inf"):
        jaxlmm.lmer(FORMULA, sleep, weights=w)
    w[5] = -1.0
    with pytest.raises(DataError, match=r"negative weights are not allowed; row 5 has -1.0"):
        jaxlmm.lmer(FORMULA, sleep, weights=w)
    with pytest.raises(DataError, match=r"weights has length 3"):
        jaxlmm.lmer(FORMULA, sleep, weights=[1.0, 2.0, 3.0])


def test_newdata_errors(fits):
    fit = fits.get("sleepstudy_slope_reml")
    with pytest.raises(DataError, match=r"newdata is missing column 'Days'"):
        fit.predict(pd.DataFrame({"Subject": [308]}))
    new = pd.DataFrame({"Days": [1.0, 2.0], "Subject": [308, 999]})
    with pytest.raises(DataError, match=r"new level '999' of grouping factor 'Subject'"):
        fit.predict(new)
    pred = fit.predict(new, allow_new_levels=True)
    population = fit.predict(new, re_form="~0")
    assert pred[1] == pytest.approx(population[1])
    assert pred[0] == pytest.approx(fit.fitted[1])


def test_missing_values_are_dropped_and_reported(sleep):
    data = sleep.copy()
    data.loc[[3, 10], "Reaction"] = np.nan
    data.loc[20, "Days"] = np.nan
    fit = jaxlmm.lmer(FORMULA, data)
    assert fit.nobs == len(sleep) - 3
    assert "3 rows with missing values removed" in fit.messages
    assert "3 rows with missing values removed" in fit.summary()


def test_rank_deficient_x_drops_columns(sleep):
    data = sleep.assign(Days2=2 * sleep["Days"])
    with pytest.warns(jaxlmm.JaxlmmWarning, match=r"rank deficient so dropping 1 column / coefficient: Days2"):
        fit = jaxlmm.lmer("Reaction ~ Days + Days2 + (1 | Subject)", data)
    assert list(fit.fixef.index) == ["(Intercept)", "Days"]


def test_memory_guard_refuses_a_dense_block_that_cannot_fit():
    """Two crossed factors of 60,000 levels: the dense block alone would need hundreds of GiB."""
    import jaxlmm
    from jaxlmm import MemoryLimitError

    rng = np.random.default_rng(0)
    n = 130_000
    data = pd.DataFrame({"y": rng.normal(size=n), "a": rng.integers(0, 62_000, n).astype(str),
                         "b": rng.integers(0, 60_000, n).astype(str)})
    with pytest.raises(MemoryLimitError, match=r"needs about .* GiB but only .* free: .*\(b \(\d+ levels x 1\)\)"):
        jaxlmm.lmer("y ~ 1 + (1 | a) + (1 | b)", data)


def test_memory_guard_uses_the_free_memory(monkeypatch):
    import jaxlmm
    from jaxlmm.model import memory
    from jaxlmm import MemoryLimitError

    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 1000)
    with pytest.raises(MemoryLimitError, match="float32"):
        jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", jaxlmm.load_dataset("sleepstudy"))
    with pytest.raises(MemoryError):
        jaxlmm.lmer("~ Days + (1 | Subject)", jaxlmm.load_dataset("sleepstudy"), responses=["Reaction"])
