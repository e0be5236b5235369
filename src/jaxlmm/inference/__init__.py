"""The inference layer: what is computed from a fitted model.

Denominator degrees of freedom (``ddf``: Satterthwaite, Kenward-Roger), type
III tables and likelihood-ratio tests (``anova_tables``), estimated marginal
means (``marginal_means``), likelihood profiles (``profile``), confidence
intervals (``confint``) and the parametric bootstrap (``bootstrap``).  These
functions take a fitted result and reach the model through it (``fit.model``,
``fit.refit_ml()``): they import ``jaxlmm.core`` and ``jaxlmm.model``, never
the results or the entry points.
"""
