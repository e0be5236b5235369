"""``glmer``: generalized linear mixed models, as ``lme4::glmer`` (Laplace, adaptive Gauss-Hermite).

The formula's response is written as lme4 writes it (``model/glmm_response.py``) and becomes a
numeric column (the proportion for the binomial, whose trials become the prior weights); the right
side is ``lmer``'s (``build_design``).  The ``Model`` carries the family (``GlmmOptions``), and the
selector gives it the GLMM engine (``engines/glmm_engine.py``).
"""

from __future__ import annotations

import numpy as np

from .._x64 import float64_scope
from ..errors import ArgumentError, DataError, count_argument
from .model import Model

FAMILY_NAMES = {"binomial": "binomial", "poisson": "poisson", "negative_binomial": "negative_binomial",
                "nbinom2": "negative_binomial", "negbin": "negative_binomial", "gamma": "gamma", "Gamma": "gamma"}


def glmm_options(family: str, link: str | None, nAGQ) -> "GlmmOptions":
    """The family, link and quadrature points, checked (an ``ArgumentError`` naming the value)."""
    from ..core.glmm.families import DEFAULT_LINK, LINKS
    from ..engines.glmm_engine import GlmmOptions

    if not isinstance(family, str) or family not in FAMILY_NAMES:
        raise ArgumentError(f"family={family!r} is not one of 'binomial', 'poisson', 'negative_binomial', 'gamma'")
    name = FAMILY_NAMES[family]
    link = DEFAULT_LINK[name] if link is None else link
    if link not in LINKS[name]:
        raise ArgumentError(f"link={link!r} is not a link of the {name} family here; use one of {list(LINKS[name])}")
    if isinstance(nAGQ, bool) or not isinstance(nAGQ, (int, np.integer)) or nAGQ < 0 or nAGQ > 100:
        raise ArgumentError(f"nAGQ={nAGQ!r} must be an integer from 0 to 100")
    if nAGQ == 0 and name in ("negative_binomial", "gamma"):
        raise ArgumentError(f"nAGQ=0 is not available for the {name} family (its dispersion is estimated with beta); "
                            "use nAGQ=1")
    return GlmmOptions(name, link, int(nAGQ))


def _split(formula: str) -> tuple[str, str]:
    if not isinstance(formula, str) or "~" not in formula:
        raise ArgumentError(f"formula must be a string 'response ~ terms', got {formula!r}")
    lhs, rhs = formula.split("~", 1)
    return lhs.strip(), rhs.strip()


def glmm_design(formula: str, data, options, *, weights=None, offset=None, responses=None):
    """The ``Design`` of a GLMM (module docstring)."""
    from ..model.data_checks import _as_frame
    from ..model.design import build_design
    from ..model.glmm_response import RESPONSE_COLUMN, glmm_response

    lhs, rhs = _split(formula)
    frame = _as_frame(data)
    if responses is not None:
        Y = np.asarray(responses, float)
        _check_batch(Y, options.family)
        design = build_design(f"~ {rhs}", frame, weights=weights, offset=offset, responses=Y, check_levels=False)
        _check_grouping(design)
        return design
    if not lhs:
        raise ArgumentError(f"formula {formula!r} has no response (a batch takes responses=)")
    if RESPONSE_COLUMN in frame.columns:
        raise DataError(f"the data have a column named {RESPONSE_COLUMN!r}, which glmer uses itself; rename it")
    y, trials = glmm_response(lhs, frame, options.family, weights)
    used = y[~np.isnan(y)]
    if options.family == "binomial" and used.size and (np.all(used == 0) or np.all(used == 1)):
        raise DataError(f"binomial response {lhs!r} is {int(used[0])} on every row: the fixed effects are not "
                        "estimable (complete separation)")
    frame = frame.assign(**{RESPONSE_COLUMN: y})
    design = build_design(f"{RESPONSE_COLUMN} ~ {rhs}", frame, weights=trials if trials is not None else weights,
                          offset=offset, check_levels=False)
    design.response_name = lhs
    _check_grouping(design)
    return design


def _check_grouping(design):
    """glmer's checks of the grouping factors: at least 2 levels each (an observation-level random effect,
    one level per row, is allowed: lme4's ``check.nobs.vs.nlev = "ignore"`` for glmer)."""
    for t in design.terms:
        if len(t.factor.levels) < 2:
            raise DataError(f"grouping factor {t.group!r} has {len(t.factor.levels)} level; it needs at least 2")


def _check_batch(Y, family):
    if Y.ndim != 2:
        raise DataError(f"responses must be a rows x traits matrix, got shape {Y.shape}")
    ok = Y[~np.isnan(Y)]
    if family == "binomial" and np.any((ok != 0) & (ok != 1)):
        raise DataError("binomial responses= must be 0/1 (NaN = missing)")
    if family in ("poisson", "negative_binomial") and np.any((ok < 0) | (ok != np.round(ok))):
        raise DataError(f"{family} responses= must be non-negative integer counts (NaN = missing)")
    if family == "gamma" and np.any(ok <= 0):
        raise DataError("Gamma responses= must be positive (NaN = missing)")


def _check_quadrature(design, options):
    if options.nagq > 1 and (len(design.terms) != 1 or len(design.terms[0].columns) > 3):
        raise ArgumentError(f"nAGQ={options.nagq} needs a single random-effects term of at most 3 columns "
                            "(the integral then factors by level); use nAGQ=1 (Laplace) for this model")


@float64_scope
def glmer(formula: str, data, *, family: str = "binomial", link: str | None = None, nAGQ: int = 1,
          weights=None, offset=None, start=None, max_iter: int = 100, dtype=None, responses=None,
          chunk_size: int | None = None, progress: bool | None = None, data_name: str | None = None,
          verbose: bool = False):
    """Fit a generalized linear mixed model by maximum likelihood, as ``lme4::glmer``; or many traits at once.

    The likelihood is the Laplace approximation (``nAGQ=1``) or adaptive Gauss-Hermite quadrature with
    ``nAGQ`` points per dimension (one random-effects term of at most 3 columns: a scalar term as lme4,
    a vector term beyond it), maximized over (theta, beta[, dispersion]) by Newton's method with the exact
    gradient and Hessian (implicit derivatives through the conditional mode).

    Parameters
    ----------
    formula : str
        lme4 formula.  The response: 0/1, a two-level factor, ``cbind(successes, failures)``, or a proportion
        with ``weights=`` the trials (binomial); counts (Poisson, negative binomial); positive values (Gamma).
        ``offset(...)`` terms are allowed.
    family : {"binomial", "poisson", "negative_binomial", "gamma"}
        ``negative_binomial`` is glmmTMB's ``nbinom2`` (var = mu + mu^2 / r, r estimated);
        ``gamma`` estimates the shape (``fit.dispersion``: glmmTMB's ``sigma()``, 1 / sqrt(shape)).
    link : str, optional
        binomial: "logit" (default), "probit", "cloglog"; the others: "log".
    nAGQ : int
        1 (Laplace), the number of adaptive Gauss-Hermite points, or 0 (lme4's fast mode: beta inside the
        penalized iteration, the Laplace likelihood optimized over theta alone; ``vcov`` lme4's RX-based one).
    weights, offset : prior weights (the trials of a binomial proportion), offset of the linear predictor.
    start : array-like, optional
        (theta, beta[, log dispersion]) to start from (default: theta 1 / 0, beta of the GLM).
    responses : rows x traits matrix, optional
        Fit the model to every trait (NaN = missing) in one call: a ``GlmmBatchResult``.

    Examples
    --------
    >>> import jaxlmm
    >>> cbpp = jaxlmm.load_dataset("cbpp")                                       # doctest: +SKIP
    >>> fit = jaxlmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp)  # doctest: +SKIP
    """
    options = glmm_options(family, link, nAGQ)
    if chunk_size is not None:
        count_argument(chunk_size, "chunk_size", 1)
    design = glmm_design(formula, data, options, weights=weights, offset=offset, responses=responses)
    _check_quadrature(design, options)
    model = Model(design, False, dtype, max_iter=max_iter, offset_arg=offset, data_name=data_name, glmm=options)
    if responses is not None and options.nagq == 0:
        raise ArgumentError("responses= with nAGQ=0 is not available; use nAGQ=1 (Laplace)")
    if responses is not None:
        import pandas as pd

        names = list(responses.columns) if isinstance(responses, pd.DataFrame) else None
        return model.fit_many(names=names, start=start, chunk_size=chunk_size, progress=progress)
    return model.fit(start=start, verbose=verbose)
