"""The engine interface: how one class of model is evaluated, fitted and made ready for inference.

A ``Model`` (``fitting/model.py``) is a design, options, and the engine that ``select_engine`` chose for
them once (``engines/select.py``, the only reader of the predicates that tell the classes apart).
Everything downstream asks the engine, never the design or the result's attributes:

- parameters: ``theta0(model)`` (the start), ``lower(model)``, ``upper(model)``, ``theta_names(model)``;
- the criterion as a pure JAX function of the parameters: ``objective(model, theta)`` (the profiled
  REML criterion or ML deviance of lme4, or the marginal criterion of a structured model);
- a fit: ``fit(model, start) -> (output, optimizer name)`` -- the optimum by one of the two drivers
  of the one Newton kernel (``core/optim/kernel.py``) or a first-order optimizer, with the
  estimates (beta, BLUPs, conditional variances, sigma) at it -- and ``result_type``, the class
  of the result that wraps the output (``result_path``);
- many responses: ``fit_many(model, names, Y, **options)`` (``batch_path``: the engine's batch driver);
- inference: ``satterthwaite_parts(fit)`` and ``kenward_roger_parts(fit)`` (what lmerTest's and
  pbkrtest's formulas need, ``inference/ddf.py``), ``default_ddf``, ``bootstrap(fit, Y, chunk_size)``
  (the engine's replicate path, or None for the generic batch refit) and ``supports_bootstrap_func``;
- ``supports_fit_function``: whether ``jaxlmm.fit_function`` (``fitting/differentiable_fit.py``: the fit as a
  pure JAX function of the response, with implicit derivatives) can build the model's fit -- lme4's
  profiled criterion only; ``fit_function`` asks the engine that ``select_engine`` picks;
- ``small``: a small-model engine (its host loops run fastest with one BLAS thread, its one-off
  programs compile with XLA's quick options); ``large``: a large dense part (column-by-column
  Hessians); ``check_memory(model, verbose)``: refuse before allocating what the device cannot hold.

The engines (``dense.py``, ``blocked.py``, ``marginal.py``) are stateless singletons; what they
prepare from the data (the dense system, the blocked cross-products, the marginal model) is cached
on the ``Model``.
"""

from __future__ import annotations

import numpy as np


class Engine:
    """Base of the engines (module docstring); an engine is compared by identity, named by ``name``."""

    name = "engine"
    default_ddf = "kenward-roger"
    small = False
    large = False
    supports_bootstrap_func = True
    supports_fit_function = True

    def __eq__(self, other) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self).__name__)

    # -------------------------------------------------------------- parameters
    def theta0(self, model) -> np.ndarray:
        return model.design.structure.theta0()

    def lower(self, model) -> np.ndarray:
        return model.design.structure.lower_bounds()

    def upper(self, model) -> np.ndarray:
        return np.full(len(self.lower(model)), np.inf)

    def theta_names(self, model) -> list[str]:
        from ..model.naming import theta_names

        return [n for t in model.design.terms for n in theta_names(t.group, t.columns, t.cov)]

    def start(self, model, start) -> np.ndarray:
        """The fit's start: ``start`` as given (checked, moved onto the bounds), else ``theta0``."""
        lower = self.lower(model)
        theta0 = self.theta0(model) if start is None else np.asarray(start, dtype=float)
        if theta0.shape != lower.shape:
            raise ValueError(f"start must have {len(lower)} values ({', '.join(self.theta_names(model))}), "
                             f"got {theta0.shape}")
        return np.maximum(theta0, lower)

    def check_memory(self, model, verbose: bool) -> None:
        """Raise ``MemoryLimitError`` before a fit that the device cannot hold (and print the plan)."""
        return None

    # -------------------------------------------------------------- the criterion, a fit, many fits
    def objective(self, model, theta):
        raise NotImplementedError

    def fit(self, model, start):
        raise NotImplementedError

    # where an engine's result class and batch driver live ("module:name" under jaxlmm), imported on first use
    result_path = "results.lmer_result:LmerResult"
    batch_path = "many.engine:fit_design_batch"

    @property
    def result_type(self):
        """The class of the result that wraps ``fit``'s output (``result_path``)."""
        return _load(self.result_path)

    def fit_many(self, model, names, Y, **options):
        """Many responses (``batch_path``: the engine's batch driver)."""
        return _load(self.batch_path)(model, names, Y, **options)

    # -------------------------------------------------------------- inference
    def satterthwaite_parts(self, fit):
        raise NotImplementedError

    def kenward_roger_parts(self, fit):
        raise NotImplementedError

    def bootstrap(self, fit, Y, chunk_size):
        """The replicate table of the simulated responses ``Y`` by this engine's own path, or None (the
        generic path: ``model.fit_many`` and ``replicate_table``)."""
        return None

    def __repr__(self) -> str:
        return f"<jaxlmm engine {self.name!r}>"


def _load(path: str):
    """The object ``name`` of the jaxlmm module ``module`` for ``"module:name"``."""
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(f"jaxlmm.{module}"), name)
