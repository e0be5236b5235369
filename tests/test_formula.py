"""lme4 formula syntax: bars, double bars, nesting, interactions and names."""

from __future__ import annotations

import pytest

from jaxlmm.model.formula import RandomTerm, parse_formula
from jaxlmm.model.naming import lme4_column_name
from jaxlmm.model.naming import confint_names, theta_names, unique_group_names


def terms(text):
    return [(t.expr, t.group) for t in parse_formula(text).random]


def test_simple_and_crossed():
    p = parse_formula("y ~ x + (1 | g) + (0 + x | h)")
    assert p.response == "y" and p.fixed == "x"
    assert terms("y ~ x + (1 | g) + (0 + x | h)") == [("1", "g"), ("0 + x", "h")]


def test_double_bar_expands_like_lme4():
    assert terms("y ~ x + (x || g)") == [("1", "g"), ("0 + x", "g")]
    assert terms("y ~ (1 + x + z || g)") == [("1", "g"), ("0 + x", "g"), ("0 + z", "g")]
    assert terms("y ~ (0 + x || g)") == [("0 + x", "g")]


def test_nesting_uses_lme4_group_names():
    assert terms("y ~ 1 + (1 | a/b)") == [("1", "b:a"), ("1", "a")]
    assert terms("y ~ 1 + (1 | a/b/c)") == [("1", "c:b:a"), ("1", "b:a"), ("1", "a")]
    assert terms("y ~ 1 + (1 | a:b)") == [("1", "a:b")]


def test_intercept_removal_and_fixed_part():
    assert parse_formula("y ~ 0 + loc + (1 | b)").fixed == "0 + loc"
    assert parse_formula("y ~ loc - 1 + (1 | b)").fixed == "loc - 1"
    assert parse_formula("y ~ (1 | b)").fixed == "1"
    assert parse_formula("~ x + (1 | g)").response is None


def test_random_term_str():
    assert str(RandomTerm("1 + x", ("b", "a"))) == "(1 + x | b:a)"


@pytest.mark.parametrize("formulaic_name, lme4_name", [
    ("Intercept", "(Intercept)"),
    ("location[T.Granada]", "locationGranada"),
    ("location[Cordoba]", "locationCordoba"),
    ("location[T.Granada]:trt[T.24]", "locationGranada:trt24"),
    ("Days", "Days"),
    ("poly(x, 2)[1]", "poly(x, 2)1"),
    ("C(trt)[T.24]", "trt24"),
])
def test_lme4_column_names(formulaic_name, lme4_name):
    assert lme4_column_name(formulaic_name) == lme4_name


def test_theta_and_confint_names():
    cols = ("(Intercept)", "Days")
    assert theta_names("Subject", cols) == ["Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days"]
    assert confint_names("Subject", cols) == ["sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject",
                                              "sd_Days|Subject"]
    assert unique_group_names(["S", "S", "g", "S"]) == ["S", "S.1", "g", "S.2"]
