"""``GlmmEngine``: generalized linear mixed models (``glmer``) on the Laplace or adaptive Gauss-Hermite
likelihood (``core/glmm/``).

Its parameters are ``x = (theta, beta, log dispersion)``: lme4's theta (the relative Cholesky factor
of each term), the fixed effects, and for NB2 / Gamma the log of ``r`` (var = mu + mu^2 / r) / the
shape.  The criterion ``-2 log L(x)`` is a pure JAX function (``core/glmm/objective.py``): the
conditional mode inside it is differentiated implicitly, so the host driver of the Newton kernel gets
exact gradients and Hessians; the Hessian at the optimum is the covariance of the estimates (lme4's
``use.hessian = TRUE``).  The start is lme4's: theta 1 / 0, beta from R's ``glm.fit`` start (``core/glmm/driver.glm_start``),
log dispersion 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..core.glmm.driver import fit_lanes, glm_start, glmm_data, glmm_layout
from .base import Engine


class GlmmOptions(NamedTuple):
    """What makes a model generalized: the family, its link, the number of quadrature points."""

    family: str
    link: str
    nagq: int = 1


class GlmmEngine(Engine):
    """Generalized linear mixed models (module docstring)."""

    name = "glmm"
    result_path = "results.glmer_result:GlmerResult"
    batch_path = "many.glmm:fit_glmm_batch"
    default_ddf = "asymptotic"
    supports_bootstrap_func = False
    supports_fit_function = False

    # -------------------------------------------------------------- parameters
    def layout(self, model):
        return model.prepared("glmm_layout", glmm_layout)

    def data(self, model):
        return model.prepared("glmm_data", glmm_data)

    def theta0(self, model) -> np.ndarray:
        """lme4's start: theta 1 / 0, beta from R's glm.fit start (``driver.glm_start``)."""
        return model.prepared("glmm_start", lambda m: glm_start(m, self.data(m))[0])

    def lower(self, model) -> np.ndarray:
        layout = self.layout(model)
        free = layout.nparams - layout.ntheta
        return np.concatenate([model.design.structure.lower_bounds(), np.full(free, -np.inf)])

    def theta_names(self, model) -> list[str]:
        from ..model.naming import theta_names

        names = [n for t in model.design.terms for n in theta_names(t.group, t.columns, t.cov)]
        layout = self.layout(model)
        if layout.nagq == 0:
            return names
        disp = ["log_dispersion"] if layout.family.dispersion else []
        return names + list(model.design.fixef_names) + disp

    def reflections(self, model) -> np.ndarray:
        R0 = model.design.structure.reflections()
        k = self.layout(model).nparams
        R = np.zeros((k, k), bool)
        R[:R0.shape[0], :R0.shape[1]] = R0
        return R

    # -------------------------------------------------------------- the criterion and a fit
    def objective(self, model, x):
        import jax.numpy as jnp

        from ..core.glmm.objective import objective

        data = self.data(model)
        one = data._replace(y=data.y[0], w=data.w[0])
        return objective(self.layout(model), jnp.asarray(x, model.dtype), one)

    def fit(self, model, start):
        from ..core.linalg.threads import small_blas

        with small_blas():
            return fit_lanes(model, self.data(model), self.start(model, start)[None], self.reflections(model)), \
                "newton"

    def satterthwaite_parts(self, fit):
        raise NotImplementedError("generalized models have asymptotic (z) tests, no denominator degrees of freedom")

    kenward_roger_parts = satterthwaite_parts
