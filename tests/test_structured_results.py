"""Issue S item 5: user covariances checked before they are used.

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
from jaxlmm import DataError, FormulaError
from test_structures import _structured_case

pytestmark = pytest.mark.usefixtures("x64")


@pytest.fixture(scope="module")
def machines():
    return _structured_case("machines_cs")[1]


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
