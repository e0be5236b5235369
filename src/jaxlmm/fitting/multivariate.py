"""Multivariate models in ``lmer``: ``cbind(y1, y2, ...) ~ fixed + (1 | g)`` fits the traits jointly.

As sommer and MCMCglmm write a multivariate response; ``cbind`` in ``glmer`` keeps its binomial meaning.
Every trait has the fixed effects of the right side (``B``: coefficients x traits), the random term's
effects have the trait covariance ``Sigma_g`` (with K across levels when ``relmat`` names the group) and
the residuals ``Sigma_e``.  A missing trait value is missing for that trait only: the likelihood is that
of the observed entries, exactly (``core/multivariate/criterion.py``); a row is dropped only where a
covariate or the grouping factor is missing, or every trait is.
"""

from __future__ import annotations

import numpy as np

from ..errors import ArgumentError, DataError, FormulaError


def cbind_traits(formula: str) -> tuple[list[str], str] | None:
    """``(trait expressions, right side)`` of a formula whose response is ``cbind(...)``, else None."""
    from ..model.formula import _split_top

    if not isinstance(formula, str) or "~" not in formula:
        return None
    lhs, rhs = (part.strip() for part in formula.split("~", 1))
    if not (lhs.startswith("cbind(") and lhs.endswith(")")):
        return None
    traits = [p.strip().strip("`") for _, p in _split_top(lhs[len("cbind("):-1], ",")]   # `name`: the column
    if len(traits) < 2 or any(not t for t in traits):
        raise FormulaError(f"cbind() in the response {lhs!r} needs two or more traits, e.g. cbind(y1, y2)")
    if len(set(traits)) != len(traits):
        raise FormulaError(f"cbind() in the response {lhs!r} names a trait twice")
    return traits, rhs


def trait_matrix(frame, traits: list[str]) -> np.ndarray:
    """The traits as a rows x traits float matrix (NaN = missing); each trait checked."""
    from ..model.glmm_response import _values

    columns = []
    for t in traits:
        v = np.asarray(_values(frame, t), float)
        ok = v[np.isfinite(v)]
        if ok.size < 2:
            raise DataError(f"trait {t!r} is observed on {ok.size} row{'s' if ok.size != 1 else ''}: a multivariate "
                            "model needs at least 2 observed values per trait")
        if np.ptp(ok) == 0:
            raise DataError(f"trait {t!r} has no variance (every observed value is {ok[0]:g}): its variance "
                            "components are not identifiable")
        columns.append(v)
    return np.column_stack(columns)


def multivariate_design(formula: str, data, *, relmat=None, offset=None, weights=None):
    """``(Design with the traits as responses, trait names)`` of a ``cbind`` formula."""
    from ..model.data_checks import _as_frame
    from ..model.design import build_design

    parsed = cbind_traits(formula)
    if parsed is None:
        raise FormulaError(f"formula {formula!r} has no cbind(...) response")
    if weights is not None or offset is not None:
        raise ArgumentError("weights= and offset= are not available for multivariate models yet")
    traits, rhs = parsed
    frame = _as_frame(data)
    Y = trait_matrix(frame, traits)
    design = build_design(f"~ {rhs}", frame, responses=Y, relmat=relmat)
    design.response_name = f"cbind({', '.join(traits)})"
    return design, traits


def fit_multivariate(formula: str, data, *, reml: bool = True, relmat=None, sigma_g: str = "us",
                     sigma_e: str = "us", start=None, max_iter: int = 100, dtype=None, data_name=None,
                     weights=None, offset=None, verbose: bool = False):
    """Fit the traits of ``cbind(...)`` jointly: a ``MultivariateResult`` (module docstring)."""
    from ..engines.multivariate_engine import MultivariateOptions
    from .model import Model

    design, traits = multivariate_design(formula, data, relmat=relmat, offset=offset, weights=weights)
    options = MultivariateOptions(tuple(traits), sigma_g, sigma_e)
    model = Model(design, reml, dtype, max_iter=max_iter, data_name=data_name, multivariate=options)
    model.engine.spec(model)          # a clear error for a bad structure before any work
    return model.fit(start=start, verbose=verbose)
