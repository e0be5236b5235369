"""What every fitted linear mixed model reports the same way, whichever model class fitted it.

``LinearMixedResult`` is the base of the two linear model classes: ``LmerResult`` (lme4's model class,
``results/lmer_result.py``: variance parameters relative to sigma) and ``StructuredResult`` (structured
covariances or ``dispformula``, ``results/structured_result.py``: absolute variance parameters).  It holds
the accessors whose meaning is the same for both: the model, design and options; the formula, ``nobs``,
``sigma``, the criterion and the optimizer's outcome; the fixed effects and their covariance; fitted values
and residuals; refits and predictions; the inference methods (coefficient tables, contrasts, ANOVA,
confidence intervals, simulation, bootstrap), which dispatch on the fit's engine; the printed summary; and
the random-effects tables (``ranef``, ``coef``) and information criteria (``results/common.py``).

It defines nothing whose meaning depends on the model class.  A subclass provides:

- ``kind``: the model class's name (``"lme4"``, ``"structured"``);
- ``theta``, ``theta_names``, ``lower``: its variance parameters, their names and lower bounds, in the
  model class's own parametrization;
- ``df_model`` (the number of parameters), ``is_singular``, ``term_covariances`` (each term's covariance of
  one level's effects), ``varcorr``, ``covariance_parameters``, ``residual_variances`` and ``residual_sd``;
- ``residual_at_boundary`` and ``_residual_boundary_message`` (the message when it is true);
- ``_weigh_residuals(r, pearson, scaled)``: what Pearson and scaled residuals divide ``y - fitted`` by;
- ``_default_ddf`` (the default denominator df of ``coef_table`` and ``summary``), ``_refit(reml)`` (the same
  model by ML or REML, started at the estimate) and ``_refit_start`` (where ``refit`` starts: None for the
  engine's default).

The result is immutable; every table is built on first access from the arrays of the fit (the engine's
``FitOutput``) and the names of the design.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from .._x64 import float64_methods, float64_scope
from .common import InformationCriteria, RandomEffectsTables

SINGULAR_TOL = 1e-4  # lme4's isSingular(tol = 1e-4)
RESIDUAL_TYPES = ("response", "pearson")


def _numpy_tree(tree):
    import jax

    return jax.device_get(tree)


def _from_model(name: str, doc: str) -> property:
    """A read-only attribute of the result that is the model's ``name``."""
    return property(lambda self: getattr(self.model, name), doc=doc)


@float64_methods
class LinearMixedResult(RandomEffectsTables, InformationCriteria):
    """A fitted linear mixed model: what every model class reports alike (module docstring, which also
    lists what a subclass provides)."""

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
    def sigma(self) -> float:
        """The residual standard deviation (with a ``dispformula``: the engine's one summary of its levels'; see
        ``residual_sd`` for each level's)."""
        return float(self._out.solution.sigma)

    @property
    def criterion(self) -> float:
        """REML criterion at convergence (REML fits) or deviance (ML fits)."""
        return float(self._out.solution.criterion)

    # -------------------------------------------------------------- optimizer
    @property
    def _status_code(self):
        return self._out.optim.status

    @property
    def n_iter(self) -> int:
        return int(self._out.optim.n_iter)

    @property
    def optimizer_trace(self):
        """The optimizer's path (a fit with ``trace=True``): one row per iterate with the criterion, the
        largest projected-gradient component, the step and the parameters (``results.optimizer_trace``)."""
        from .optimizer_trace import NOT_TRACED, trace_frame

        trace = self._out.trace
        if trace is None:
            raise ValueError(NOT_TRACED)
        return trace_frame(trace, self.model.theta_names, self.optimizer)

    @property
    def grad(self) -> np.ndarray:
        """Gradient of the criterion at the estimate with respect to the parameters the optimizer moved
        (the model's ``theta_names``: ``LmerResult.theta``; every one of ``StructuredResult.parameters``)."""
        return np.asarray(self._out.optim.grad)

    @property
    def messages(self) -> list[str]:
        """The design's messages, the optimizer's when it did not converge, a singular fit's and a residual
        variance at its bound 0."""
        msgs = self._fit_messages()
        if self.residual_at_boundary:
            msgs.append(self._residual_boundary_message)
        return msgs

    # ---------------------------------------------------------- fixed effects
    @property
    def fixef_names(self) -> list[str]:
        return list(self.design.fixef_names)

    @cached_property
    def fixef(self) -> pd.Series:
        return pd.Series(np.asarray(self._out.solution.beta), index=self.fixef_names, name="fixef")

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Covariance of the fixed-effect estimates, ``(X^T V^-1 X)^-1`` at the estimated variance parameters."""
        v = np.asarray(self._out.solution.vcov_beta)
        return pd.DataFrame(v, index=self.fixef_names, columns=self.fixef_names)

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.fixef_names, name="se")

    # ---------------------------------------------------- fitted & residuals
    @property
    def fitted(self) -> np.ndarray:
        return np.asarray(self._out.fitted)[:self.design.nobs]

    @property
    def response(self) -> np.ndarray:
        return np.asarray(self.design.y)

    def residuals(self, type: str = "response", scaled: bool = False) -> np.ndarray:
        """Residuals ``y - fitted`` (``"response"``) or Pearson residuals (``"pearson"``); ``scaled=True``
        divides by the residual SD.  What each divides by is the model class's (``_weigh_residuals``)."""
        if type not in RESIDUAL_TYPES:
            raise ValueError(f"type must be 'response' or 'pearson', not {type!r}")
        return self._weigh_residuals(self.response - self.fitted, type == "pearson", scaled)

    def refit(self, new_response):
        """lme4's ``refit``: the same model with a new response (same rows), reusing the compiled program.

        NaN entries are treated as missing (weight 0).
        """
        design = self.design.with_response(np.asarray(new_response, dtype=float))
        return self.model.for_design(design).fit(start=self._refit_start)

    def refit_ml(self):
        """The same model fitted by maximum likelihood (``self`` if it already is)."""
        return self if not self.reml else self._refit(False)

    def refit_reml(self):
        """The same model fitted by REML (``self`` if it already is)."""
        return self if self.reml else self._refit(True)

    def predict(self, newdata=None, re_form=None, allow_new_levels: bool = False) -> np.ndarray:
        """Predictions as lme4's ``predict.merMod`` (see ``predict.py``)."""
        from .predict import predict

        return predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels)

    # ------------------------------------------------------------- inference
    def coef_table(self, ddf: str | None = None) -> pd.DataFrame:
        """Fixed effects with SEs, df, t and p values, as ``summary(m, ddf = ...)`` of lmerTest.

        ``ddf``: ``"satterthwaite"`` (the default), ``"kenward-roger"`` (adjusted SEs
        and KR df, as pbkrtest), ``"residual"`` (n - p) or ``"asymptotic"`` (z tests, the
        default for models with ``ar1()`` or ``cs()`` terms, as glmmTMB's summary).
        """
        from ..inference.ddf import coef_table

        return coef_table(self, ddf or self._default_ddf)

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
