"""jaxlmm: lme4-compatible linear mixed models on JAX, for one response or thousands.

>>> import jaxlmm
>>> fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", jaxlmm.load_dataset("sleepstudy"))
>>> fit.theta.round(4).tolist()
[0.9667, 0.0152, 0.2309]

Fits match lme4 in float64 by default, without touching the caller's JAX
configuration: importing jaxlmm changes no JAX setting, environment variable
or XLA flag; each call runs in a 64-bit scope of its own (``_x64.py``).  Pass
``dtype="float32"`` for single precision.  The pure JAX core lives in
``jaxlmm.core`` and never imports pandas.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (loaded on first use, so that
# ``import jaxlmm.core`` stays free of pandas and formulaic)
_EXPORTS = {
    "lmer": "fitting.lmer",
    "glmer": "fitting.glmer",
    "GlmerResult": "results.glmer_result",
    "deviance_function": "fitting.lmer",
    "DevianceFunction": "fitting.lmer",
    "build_design": "model.design",
    "lformula": "model.design",
    "LmerResult": "results.lmer_result",
    "MultivariateResult": "results.multivariate_result",
    "LinearMixedResult": "results.linear_result",
    "load_dataset": "datasets",
    "list_datasets": "datasets",
    "example_formula": "datasets",
    "JaxlmmError": "errors",
    "FormulaError": "errors",
    "DataError": "errors",
    "ArgumentError": "errors",
    "JaxlmmWarning": "errors",
    "MemoryLimitError": "errors",
    "parse_formula": "model.formula",
    "emmeans": "inference.marginal_means",
    "pairs": "inference.marginal_means",
    "EMMeans": "inference.marginal_means",
    "anova": "inference.anova_tables",
    "likelihood_ratio_test": "inference.anova_tables",
    "Model": "fitting.model",
    "grm": "model.markers",
    "RelationshipMatrix": "model.relmat",
    "factorization_plan": "model.plan",
    "enable_compilation_cache": "_config",
    "configure_xla": "_config",
    "FactorizationPlan": "model.plan",
    "covariance": "core.params.covfuns",
    "StructuredResult": "results.structured_result",
    "fit_function": "fitting.differentiable_fit",
    "FitFunction": "model.fit_function",
    "FitState": "core.pls.implicit",
    "scan": "gwas.association",
    "read_plink": "model.plink",
}

__all__ = sorted(_EXPORTS)


_SUBMODULES = ("plot", "core", "diagnostics")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        attr = {"lformula": "build_design", "anova": "lrt", "likelihood_ratio_test": "lrt"}.get(name, name)
        value = getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxlmm' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
