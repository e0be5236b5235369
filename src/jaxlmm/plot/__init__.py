"""Diagnostic and teaching plots of fitted models (matplotlib), with their lme4 equivalents.

Every function returns a ``matplotlib.figure.Figure`` made with ``pyplot``
(display it in a notebook, or ``fig.savefig(path)``).  matplotlib is imported
inside the functions, so ``import jaxlmm`` never needs it; install it with
``pip install 'jaxlmm[plot]'``.

==========================  =========================================================
``caterpillar(fit)``        ``lattice::dotplot(ranef(m, condVar = TRUE))``
``shrinkage(fit)``          the within-group vs. conditional estimates plot of
                            Bates' *lme4* book (``coef(lmList(...))`` vs ``coef(m)``)
``profile(frame)``          ``lattice::xyplot(profile(m))``
``residuals(fit)``          ``plot(m)`` and ``lattice::qqmath(ranef(m))``
``bootstrap(frame)``        histograms of ``bootMer(m, FUN)$t``
``batch_histogram(batch)``  ``hist()`` of a per-trait variance ratio (heritability)
``convergence(batch)``      overview of the optimizer's status over many traits
``convergence(fit)``        the optimizer's path of a fit with ``trace=True`` (or a dict
                            of fits / ``optimizer_trace`` frames to compare optimizers)
``manhattan(results)``      ``qqman::manhattan`` of an association scan (``jaxlmm.scan``)
``qq(results)``             ``qqman::qq`` of a scan's p-values, with lambda_GC
==========================  =========================================================
"""

from __future__ import annotations

from .batch_plots import batch_histogram, convergence, variance_ratio
from .bootstrap_plots import bootstrap, parameter_estimates
from .profile_plots import profile
from .ranef_plots import caterpillar, residuals
from .scan_plots import manhattan, qq
from .shrinkage_plots import shrinkage, within_group_estimates

__all__ = ["caterpillar", "shrinkage", "profile", "residuals", "bootstrap", "batch_histogram", "convergence",
           "manhattan", "qq"]
