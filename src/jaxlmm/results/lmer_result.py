"""lme4's model class: the ``merMod`` accessors of a fit by lme4's engines (what ``jaxlmm.lmer`` returns
for a model without structured covariances or ``dispformula``).

Its variance parameters are lme4's: ``theta`` is ``getME(m, "theta")``, the column-major lower triangle of
each term's Cholesky factor ``lambda`` relative to the residual SD (a term's covariance is
``sigma^2 lambda lambda^T``), and the criterion is profiled over ``sigma`` and ``beta`` (lme4's PLS,
``core/pls``).  What every linear fit reports alike is in ``LinearMixedResult`` (``linear_result.py``).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from .._x64 import float64_methods
from ..model.naming import theta_names as _theta_names
from .heritability import Heritability, profiled_heritability
from .linear_result import SINGULAR_TOL, LinearMixedResult, _from_model  # noqa: F401 (_from_model: glmer_result's)
from .varcorr import varcorr_frame


@float64_methods
class LmerResult(Heritability, LinearMixedResult):
    """A fitted linear mixed model of lme4's class (module docstring).

    The attributes mirror lme4: ``fixef``, ``vcov``, ``theta``, ``sigma``,
    ``varcorr``, ``ranef``, ``coef``, ``criterion``, ``loglik``, ``aic``,
    ``bic``, ``fitted``, ``residuals()``, ``predict()``, ``summary()``.
    """

    kind = "lme4"   # the model class, by type: "structured" for ``StructuredResult``
    _refit_start = None     # ``refit`` starts from the engine's default, as a new fit

    @property
    def plan(self):
        """The factorization plan of the fit (``jaxlmm.model.plan.FactorizationPlan``): block term,
        dense part, dense or sparse cross block, predicted work and memory."""
        return self.model.plan

    @property
    def cross_products(self):
        """The core's cross-products of this fit's data (``jaxlmm.core.CrossProducts``), held by the model."""
        return self.model.cross_products

    # ------------------------------------------------------ variance parameters
    @property
    def theta(self) -> np.ndarray:
        """lme4's ``getME(m, "theta")``: each term's relative Cholesky factor's lower triangle, column-major."""
        return np.asarray(self._out.optim.theta)

    @cached_property
    def theta_names(self) -> list[str]:
        out = []
        for t in self.design.terms:
            out.extend(_theta_names(t.group, t.columns, t.cov))
        return out

    @property
    def lower(self) -> np.ndarray:
        """The lower bounds of ``theta`` (0 on the factors' diagonals, else -inf)."""
        return self.design.structure.lower_bounds()

    @property
    def df_model(self) -> int:
        """Number of parameters: fixed effects, theta and sigma (logLik's ``df``)."""
        return len(self.fixef_names) + len(self.theta) + 1

    @property
    def is_singular(self) -> bool:
        lower = self.lower
        return bool(np.any(self.theta[lower == 0] < SINGULAR_TOL))

    @property
    def residual_at_boundary(self) -> bool:
        """The residual variance is at its bound 0: a perfect fit (``sigma`` below 1e-5 of the response's sd)."""
        spread = float(np.std(self.response))
        return bool(spread > 0 and self.sigma <= 1e-5 * spread)

    @property
    def _residual_boundary_message(self) -> str:
        return (f"boundary (residual variance): sigma = {self.sigma:.3g} is numerically 0 beside the "
                f"response's spread ({np.std(self.response):.3g}): the model fits the data exactly, so "
                "the variance parameters relative to sigma (theta) are not estimable")

    # --------------------------------------------------------- random effects
    @cached_property
    def lambdas(self) -> list[np.ndarray]:
        """Each term's relative covariance factor ``lambda`` (``sigma^2 lambda lambda^T`` is its covariance)."""
        return self.design.structure.lambdas_numpy(self.theta)

    @property
    def term_covariances(self) -> list[np.ndarray]:
        """Each term's covariance of one level's effects, ``sigma^2 lambda lambda^T``."""
        return [self.sigma ** 2 * lam @ lam.T for lam in self.lambdas]

    @property
    def residual_variances(self) -> list[tuple[str, float]]:
        """``[("Residual", sigma^2)]`` (one row per ``dispformula`` level for structured fits)."""
        return [("Residual", self.sigma ** 2)]

    @property
    def residual_sd(self) -> pd.Series:
        """The residual SD: one value, ``Residual`` (a ``dispformula`` fit has one per level)."""
        return pd.Series([self.sigma], index=["Residual"], name="residual_sd")

    @cached_property
    def covariance_parameters(self) -> pd.DataFrame:
        """Each term's variances and correlations and the residual variance, with Wald SEs, as a structured
        fit's (``covariance_parameters.lme4_covariance_parameters``)."""
        from .covariance_parameters import lme4_covariance_parameters

        return lme4_covariance_parameters(self)

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        return varcorr_frame(self.lambdas, [t.group for t in self.design.terms],
                             [t.columns for t in self.design.terms], self.sigma)

    # ---------------------------------------------------------------- residuals
    def _weigh_residuals(self, r: np.ndarray, pearson: bool, scaled: bool) -> np.ndarray:
        """lme4's: Pearson residuals ``sqrt(w) (y - fitted)``; ``scaled`` divides by sigma
        (``residuals(m, scaled = TRUE)``)."""
        if pearson:
            r = r * np.sqrt(self.design.weights)
        return r / self.sigma if scaled else r

    def influence(self, method: str = "newton", steps: int = 2) -> pd.DataFrame:
        """Change of theta and the fixed effects from leaving each observation out: implicit Newton steps
        ("newton"), the derivative with respect to its case weight ("derivative") or refits ("exact");
        see ``influence.py``."""
        from .influence import influence

        return influence(self, method, steps)

    # ------------------------------------------------------------- inference
    def _heritability(self, k: int) -> tuple[float, float]:
        return profiled_heritability(self, k)

    def _refit(self, reml: bool) -> "LmerResult":
        return self.model.fit(reml=reml, start=self.theta, warn=False)

    @property
    def _default_ddf(self) -> str:
        return "asymptotic" if self.design.structure.structured else "satterthwaite"

    def profile(self, level: float = 0.95):
        """lme4's ``profile``: a ``Profile`` with ``frame`` (param, value, zeta) and ``confint()``."""
        from ..inference.profile import profile

        return profile(self, level)
