"""Structured covariances (glmmTMB's ``us diag cs ar1 ou exp gau`` and user covariances) and
``dispformula``: the marginal criterion of ``y ~ N(X beta, V(phi))`` in absolute parameters
(``core/marginal/criterion.py``), fitted by the host driver of the Newton kernel (``core/marginal/fit.py``).

The parameters ``phi`` are each term's own (ar1's ``(sd, a)``, exp's ``(sd, log range)``, ...) and
the residual's (one SD, or the dispersion coefficients), with upper bounds where a structure has
them; the result is a ``StructuredResult``; fixed effects default to Satterthwaite's df, as glmmTMB
reports z tests and lmerTest's formula applies to any covariance.
"""

from __future__ import annotations

import numpy as np

from .base import Engine


class MarginalEngine(Engine):
    name = "marginal"
    result_path = "results.structured_result:StructuredResult"
    default_ddf = "satterthwaite"
    supports_bootstrap_func = False
    supports_fit_function = False

    def theta0(self, model) -> np.ndarray:
        from ..model.marginal_design import start_values

        return start_values(model, None)

    def start(self, model, start) -> np.ndarray:
        from ..model.marginal_design import start_values

        return start_values(model, start)

    def lower(self, model) -> np.ndarray:
        return model.marginal.lower()

    def upper(self, model) -> np.ndarray:
        return model.marginal.upper()

    def theta_names(self, model) -> list[str]:
        from ..model.naming import unique_group_names

        groups = unique_group_names([t.group for t in model.design.terms])
        return ([f"{g}.{n}" for g, t in zip(groups, model.marginal.terms) for n in t.cov.names]
                + list(model.marginal.residual.names))

    def objective(self, model, theta):
        import jax.numpy as jnp

        return model.marginal_criterion(jnp.asarray(theta, model.dtype))

    def fit(self, model, start):
        from .marginal_fit import fit_marginal_model

        return fit_marginal_model(model, start), "newton"

    def fit_many(self, model, names, Y, *, start=None, **options):
        from ..many.structured import fit_structured_batch

        return fit_structured_batch(model, names, Y, start=start)

    def satterthwaite_parts(self, fit):
        return fit.marginal_satterthwaite_parts()

    def kenward_roger_parts(self, fit):
        return fit.marginal_kenward_roger_parts()

    def bootstrap(self, fit, Y, chunk_size):
        from ..inference.bootstrap_lanes import bootstrap_lanes

        return bootstrap_lanes(fit, Y)
