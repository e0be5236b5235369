"""``select_engine``: the one place that decides which engine fits a model.

It reads the design and the options once, when a ``Model`` is made, and nothing else in jaxlmm reads
the predicates it uses:

0. a family (``glmer``) -> ``GlmmEngine`` (the Laplace or adaptive Gauss-Hermite likelihood); several
   traits fitted jointly (``cbind(y1, y2, ...)`` in ``lmer``) -> ``MultivariateEngine``;
1. structured covariances, user covariances or a ``dispformula`` -> ``MarginalEngine`` (the
   criterion of lme4 needs lambda linear in theta and one residual variance);
2. otherwise lme4's profiled criterion: ``DenseEngine`` when the padded dense system is small
   (``core.dense_layout.fits_dense``) and the default Newton optimizer runs untraced (the dense
   programs have no loop to trace and no first-order driver), else ``BlockedEngine``; either is
   ``large`` when the blocked structure's dense part passes ``core.linalg.RECURSIVE_MAX`` (then the
   Hessian is formed column by column, with damping and an interior floor).

A batch's traits may still go through K's eigenbasis (``many.spectral``) when the model has one
relationship-matrix term with one record per level: that choice depends on each trait's missing values
and is made per trait by the batch (``many.engine``), with ``many.spectral.spectral_layout``.
"""

from __future__ import annotations

from ..errors import JaxlmmError
from .base import Engine
from .lme4_engines import BlockedEngine, DenseEngine
from .marginal_engine import MarginalEngine


def is_marginal(design) -> bool:
    """Structured covariances, user covariances or a dispformula: the marginal engine's models."""
    from ..model.structured_terms import is_marginal as structured

    return structured(design)


def select_engine(design, *, optimizer=None, trace: bool = False, glmm=None, multivariate=None) -> Engine:
    """The engine for ``design`` fitted with ``optimizer`` (None: Newton) and ``trace`` (module docstring);
    ``glmm`` (family, link, nAGQ) makes it a generalized model, ``multivariate`` (traits, structures) a
    multivariate one."""
    from ..core.dense.layout import fits_dense
    from ..core.linalg.factor import RECURSIVE_MAX

    if glmm is not None:
        from .glmm_engine import GlmmEngine

        if optimizer is not None or trace:
            raise JaxlmmError("generalized models are fitted by the projected Newton method only "
                              "(optimizer= and trace= are not available for glmer)")
        return GlmmEngine()
    if multivariate is not None:
        from .multivariate_engine import MultivariateEngine

        if optimizer is not None or trace:
            raise JaxlmmError("multivariate models are fitted by the projected Newton method only "
                              "(optimizer= and trace= are not available for them)")
        return MultivariateEngine()
    if is_marginal(design):
        if optimizer is not None or trace:
            raise JaxlmmError("models with structured covariances or dispformula are fitted by the projected "
                              "Newton method only (optimizer= and trace= are not available for them yet)")
        return MarginalEngine()
    large = design.structure.q_dense + design.X.shape[1] + 1 > RECURSIVE_MAX
    q = sum(len(t.factor.levels) * len(t.columns) for t in design.terms)
    if optimizer is None and not trace and fits_dense(q, design.X.shape[1]):
        return DenseEngine(large)
    return BlockedEngine(large)
