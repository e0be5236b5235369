"""The fitted model: lme4's ``merMod`` accessors on the output of one fit.

The result is immutable; every table is built on first access from the arrays
of the fit (``FitOutput``) and the names of the design.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from .._x64 import float64_methods, float64_scope
from ..core.status import CONVERGED, OPTIMIZER_MESSAGES as STATUS_MESSAGES, as_status, status_name as _name
from ..model.naming import theta_names as _theta_names
from .common import InformationCriteria, RandomEffectsTables
from .varcorr import varcorr_frame

SINGULAR_TOL = 1e-4  # lme4's isSingular(tol = 1e-4)


def _numpy_tree(tree):
    import jax

    return jax.device_get(tree)


def _from_model(name: str, doc: str) -> property:
    """A read-only attribute of the result that is the model's ``name``."""
    return property(lambda self: getattr(self.model, name), doc=doc)


@float64_methods
class LmerResult(RandomEffectsTables, InformationCriteria):
    """A fitted linear mixed model (what ``jaxlmm.lmer`` returns).

    The attributes mirror lme4: ``fixef``, ``vcov``, ``theta``, ``sigma``,
    ``varcorr``, ``ranef``, ``coef``, ``criterion``, ``loglik``, ``aic``,
    ``bic``, ``fitted``, ``residuals()``, ``predict()``, ``summary()``.
    """

    kind = "lme4"   # the model class, by type: "structured" for ``StructuredResult``

    def __init__(self, model, output, *, optimizer: str = "newton"):
        self.model = model          # the ``fitting.model.Model`` that was fitted
        self._out = _numpy_tree(output)
        self.optimizer = optimizer

    design = _from_model("design", "The ``Design`` (arrays and names) of the fitted model.")
    model_data = _from_model("data", "The core's row-level ``ModelData``.")
    reml = _from_model("reml", "Whether the fit is REML (else ML).")
    data_name = _from_model("data_name", "The data's name in printed output.")
    _offset_arg = _from_model("offset_arg", "The offset as given (a column name is evaluated again by predict).")

    @property
    def _fit_options(self) -> dict:
        m = self.model
        return dict(dtype=m.requested_dtype, max_iter=m.max_iter, optimizer=m.optimizer)

    @property
    def plan(self):
        """The factorization plan of the fit (``jaxlmm.model.plan.FactorizationPlan``): block term,
        dense part, dense or sparse cross block, predicted work and memory."""
        return self.model.plan

    # ------------------------------------------------------------------ basic
    @property
    def formula(self) -> str:
        text = self.design.formula.text
        if self.design.formula.response is None and self.design.response_name:
            return f"{self.design.response_name} {text.strip()}"
        return text

    @property
    def nobs(self) -> int:
        return int(self._out.solution.parts.n_obs)

    def _levels(self, k: int) -> int:
        return len(self.design.terms[k].factor.levels)

    def _b(self, k: int) -> np.ndarray:
        """BLUPs of term k (levels x columns), without shape padding."""
        return np.asarray(self._out.solution.b[k])[:self._levels(k)]

    def _cond_var(self, k: int) -> np.ndarray:
        return np.asarray(self._out.solution.cond_var[k])[:self._levels(k)]

    @property
    def theta(self) -> np.ndarray:
        return np.asarray(self._out.optim.theta)

    @cached_property
    def theta_names(self) -> list[str]:
        out = []
        for t in self.design.terms:
            out.extend(_theta_names(t.group, t.columns, t.cov))
        return out

    @property
    def lower(self) -> np.ndarray:
        return self.design.structure.lower_bounds()

    @property
    def sigma(self) -> float:
        return float(self._out.solution.sigma)

    @property
    def criterion(self) -> float:
        """REML criterion at convergence (REML fits) or deviance (ML fits)."""
        return float(self._out.solution.criterion)

    @property
    def deviance(self) -> float:
        return self.criterion

    @property
    def df_model(self) -> int:
        """Number of parameters: fixed effects, theta and sigma (logLik's ``df``)."""
        return len(self.fixef_names) + len(self.theta) + 1

    @property
    def loglik(self) -> float:
        return -0.5 * self.criterion

    @property
    def is_singular(self) -> bool:
        lower = self.lower
        return bool(np.any(self.theta[lower == 0] < SINGULAR_TOL))

    @property
    def status(self) -> int:
        """The optimizer's outcome: a ``core.status.Status``, an int (``== 0``) whose ``str`` is its name."""
        return as_status(self._out.optim.status)

    @property
    def status_name(self) -> str:
        """The name of ``status``: ``"converged"``, ``"max_iter"``, ``"line_search_failed"``, ..."""
        return _name(self._out.optim.status)

    @property
    def converged(self) -> bool:
        return self.status == CONVERGED

    @property
    def optimizer_message(self) -> str:
        return STATUS_MESSAGES.get(self.status, "unknown status")

    @property
    def n_iter(self) -> int:
        return int(self._out.optim.n_iter)

    @property
    def optimizer_trace(self):
        """The optimizer's path (a fit with ``trace=True``): one row per iterate with the criterion, the
        largest projected-gradient component, the step and theta (``results.optimizer_trace``)."""
        from .optimizer_trace import NOT_TRACED, trace_frame

        trace = self._out.trace
        if trace is None:
            raise ValueError(NOT_TRACED)
        return trace_frame(trace, self.model.theta_names, self.optimizer)

    @property
    def grad(self) -> np.ndarray:
        """Gradient of the criterion with respect to theta at the estimate."""
        return np.asarray(self._out.optim.grad)

    @property
    def messages(self) -> list[str]:
        msgs = self._fit_messages()
        if self.residual_at_boundary:
            msgs.append(f"boundary (residual variance): sigma = {self.sigma:.3g} is numerically 0 beside the "
                        f"response's spread ({np.std(self.response):.3g}): the model fits the data exactly, so "
                        "the variance parameters relative to sigma (theta) are not estimable")
        return msgs

    @property
    def residual_at_boundary(self) -> bool:
        """The residual variance is at its bound 0: a perfect fit (``sigma`` below 1e-5 of the response's sd)."""
        spread = float(np.std(self.response))
        return bool(spread > 0 and self.sigma <= 1e-5 * spread)

    # ---------------------------------------------------------- fixed effects
    @property
    def fixef_names(self) -> list[str]:
        return list(self.design.fixef_names)

    @cached_property
    def fixef(self) -> pd.Series:
        return pd.Series(np.asarray(self._out.solution.beta), index=self.fixef_names, name="fixef")

    @cached_property
    def vcov(self) -> pd.DataFrame:
        v = np.asarray(self._out.solution.vcov_beta)
        return pd.DataFrame(v, index=self.fixef_names, columns=self.fixef_names)

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.fixef_names, name="se")

    # --------------------------------------------------------- random effects
    @cached_property
    def lambdas(self) -> list[np.ndarray]:
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

    # ---------------------------------------------------- fitted & residuals
    @property
    def fitted(self) -> np.ndarray:
        return np.asarray(self._out.fitted)[:self.design.nobs]

    @property
    def response(self) -> np.ndarray:
        return np.asarray(self.design.y)

    def residuals(self, type: str = "response", scaled: bool = False) -> np.ndarray:
        """Residuals ``y - fitted`` (``"response"``) or ``sqrt(w) (y - fitted)`` (``"pearson"``).

        ``scaled=True`` divides by sigma, as lme4's ``residuals(m, scaled = TRUE)``.
        """
        r = self.response - self.fitted
        if type == "pearson":
            r = r * np.sqrt(self.design.weights)
        elif type != "response":
            raise ValueError(f"type must be 'response' or 'pearson', not {type!r}")
        return r / self.sigma if scaled else r

    def refit(self, new_response) -> "LmerResult":
        """lme4's ``refit``: the same model with a new response (same rows), reusing the compiled program.

        NaN entries are treated as missing (weight 0).
        """
        design = self.design.with_response(np.asarray(new_response, dtype=float))
        return self.model.for_design(design).fit()

    def predict(self, newdata=None, re_form=None, allow_new_levels: bool = False) -> np.ndarray:
        """Predictions as lme4's ``predict.merMod`` (see ``predict.py``)."""
        from .predict import predict

        return predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels)

    def influence(self, method: str = "newton", steps: int = 2) -> pd.DataFrame:
        """Change of theta and the fixed effects from leaving each observation out: implicit Newton steps
        ("newton"), the derivative with respect to its case weight ("derivative") or refits ("exact");
        see ``influence.py``."""
        from .influence import influence

        return influence(self, method, steps)

    # ------------------------------------------------------------- relationship matrices
    @property
    def _h2_term(self) -> int | None:
        from ..model.design import heritability_term

        return heritability_term(self.design)

    @cached_property
    def _h2_and_se(self) -> tuple[float, float]:
        import jax
        import jax.numpy as jnp

        from ..core.pls.criterion import profiled_deviance
        from ..core.params.heritability import heritability, heritability_se
        from ..core.optim.newton import value_grad_hessian

        k = self._h2_term
        if k is None:
            return float("nan"), float("nan")
        theta = jnp.asarray(self.theta)
        reml, sequential = bool(self.reml), self.model.engine.large

        def hessian(th, cp):
            return value_grad_hessian(lambda t: profiled_deviance(t, cp=cp, reml=reml), th, sequential)[2]

        H = jax.jit(hessian)(theta, self.cross_products)
        return float(heritability(theta, k)), float(heritability_se(theta, H, k))

    @property
    def h2(self) -> float:
        """Heritability: the first relationship-matrix term's variance over the sum of all
        variance components and the residual (``sigma_g^2 / (sigma_g^2 + sigma_e^2)`` with one
        term).  NaN without a relationship-matrix term or with vector-valued terms."""
        return self._h2_and_se[0]

    @property
    def h2_se(self) -> float:
        """Delta-method SE of ``h2`` from the exact Hessian of the criterion (NaN at a boundary)."""
        return self._h2_and_se[1]

    def genetic_values(self, group: str | None = None, include_unobserved: bool = True) -> pd.DataFrame:
        """BLUPs of a relationship-matrix term per level (``condval``, ``condsd``; for a term with
        several columns, one row per level and column as in ``ranef``).

        With ``include_unobserved``, levels of K without data are added with
        ``condval = K_mo K_oo^{-1} u_o`` (the conditional mean given the observed
        levels' BLUPs; ``condsd`` NaN).
        """
        terms = [t for t in self.design.terms if t.relmat is not None and (group is None or t.group == group)]
        if not terms:
            raise ValueError(f"no relationship-matrix term{'' if group is None else ' for ' + repr(group)}")
        t = terms[0]
        r = self.ranef
        out = r[(r["group"] == t.group) & r["term"].isin(t.columns)].copy()
        if include_unobserved and t.relmat.unused_levels:
            full = t.relmat.full
            obs = list(t.factor.levels)
            miss = list(t.relmat.unused_levels)
            K_oo = full.restrict(obs).K
            pos = {lv: i for i, lv in enumerate(full.levels)}
            K_mo = full.K[np.ix_([pos[lv] for lv in miss], [pos[lv] for lv in obs])]
            rows = []
            for col in t.columns:
                u = out[out["term"] == col].set_index("level").loc[obs, "condval"].to_numpy()
                pred = K_mo @ np.linalg.lstsq(K_oo, u, rcond=None)[0]
                rows.append(pd.DataFrame({"group": t.group, "term": col, "level": miss, "condval": pred,
                                          "condsd": np.nan}))
            out = pd.concat([out] + rows, ignore_index=True)
        return out.reset_index(drop=True)

    # ------------------------------------------------------------- inference
    @property
    def cross_products(self):
        """The core's cross-products of this fit's data (``jaxlmm.core.CrossProducts``), held by the model."""
        return self.model.cross_products

    def _refit(self, reml: bool) -> "LmerResult":
        return self.model.fit(reml=reml, start=self.theta, warn=False)

    def refit_ml(self) -> "LmerResult":
        """The same model fitted by maximum likelihood (``self`` if it already is)."""
        return self if not self.reml else self._refit(False)

    def refit_reml(self) -> "LmerResult":
        """The same model fitted by REML (``self`` if it already is)."""
        return self if self.reml else self._refit(True)

    def coef_table(self, ddf: str | None = None) -> pd.DataFrame:
        """Fixed effects with SEs, df, t and p values, as ``summary(m, ddf = ...)`` of lmerTest.

        ``ddf``: ``"satterthwaite"`` (the default), ``"kenward-roger"`` (adjusted SEs
        and KR df, as pbkrtest), ``"residual"`` (n - p) or ``"asymptotic"`` (z tests, the
        default for models with ``ar1()`` or ``cs()`` terms, as glmmTMB's summary).
        """
        from ..inference.ddf import coef_table

        return coef_table(self, ddf or self._default_ddf)

    @property
    def _default_ddf(self) -> str:
        return "asymptotic" if self.design.structure.structured else "satterthwaite"

    def contest(self, L, ddf: str = "satterthwaite", joint: bool = True) -> pd.DataFrame:
        """Test ``L beta = 0`` (lmerTest's ``contest``): an F test, or with ``joint=False`` a t test per row."""
        from ..inference.ddf import contest

        return contest(self, L, ddf, joint)

    def anova(self, type: int = 3, ddf: str = "satterthwaite") -> pd.DataFrame:
        """Type III ANOVA table (lmerTest's ``anova(m, type = 3)``)."""
        if type != 3:
            raise ValueError("only type III tables are implemented (type=3)")
        from ..inference.anova_tables import anova_type3

        return anova_type3(self, ddf)

    def confint(self, method: str = "profile", level: float = 0.95, nsim: int = 500, seed: int | None = None,
                use_u: bool = False) -> pd.DataFrame:
        """Confidence intervals (lme4's ``confint``): ``"profile"`` (default), ``"wald"`` or ``"boot"``."""
        from ..inference.confint import confint

        return confint(self, method, level, nsim=nsim, seed=seed, use_u=use_u)

    def profile(self, level: float = 0.95):
        """lme4's ``profile``: a ``Profile`` with ``frame`` (param, value, zeta) and ``confint()``."""
        from ..inference.profile import profile

        return profile(self, level)

    def simulate(self, nsim: int = 1, seed: int | None = None, use_u: bool = False) -> np.ndarray:
        """Simulated responses (n x nsim), as lme4's ``simulate`` (``use_u``: condition on the BLUPs)."""
        from ..inference.bootstrap import simulate

        return simulate(self, nsim, seed, use_u)

    def bootstrap(self, nsim: int = 500, seed: int | None = None, use_u: bool = False, func=None,
                  progress: bool | None = None) -> pd.DataFrame:
        """Parametric bootstrap (lme4's ``bootMer``): one row of estimates per replicate."""
        from ..inference.bootstrap import bootstrap

        return bootstrap(self, nsim, seed, use_u, func, progress=progress)

    # ------------------------------------------------------------------ text
    def summary(self, ddf: str | None = "default") -> str:
        """lme4/lmerTest-style summary; fixed effects tested with ``ddf`` df (``None``: lme4's t values only;
        the default: Satterthwaite, or z tests for models with ``ar1()`` or ``cs()`` terms)."""
        from .summary import format_summary

        if ddf is None:
            return format_summary(self)
        from ..inference.ddf import normalize_ddf

        method = normalize_ddf(self._default_ddf if ddf == "default" else ddf)
        title = {"satterthwaite": ". t-tests use Satterthwaite's method",
                 "kenward-roger": ". t-tests use Kenward-Roger's method",
                 "residual": ". t-tests use n - p df", "asymptotic": ". z-tests"}[method]
        return format_summary(self, self.coef_table(method), title_suffix=title)

    def __repr__(self) -> str:
        from .summary import format_short

        return format_short(self)

    @float64_scope
    def _repr_html_(self) -> str:
        """Jupyter's display: ``summary()`` as HTML tables (``results/html.py``); ``repr`` stays the text."""
        from .html import fit_html

        return fit_html(self)
