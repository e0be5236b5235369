"""The fitted generalized linear mixed model: lme4's ``glmerMod`` accessors on the output of one fit.

Parameters ``x = (theta, beta[, log dispersion])`` (``engines/glmm_engine.py``).  The covariance of
the estimates is twice the inverse Hessian of ``-2 log L`` at the optimum (lme4's
``use.hessian = TRUE``, glmmTMB's ``sdreport``), over the components not on a bound (a variance
component estimated as 0 is held there); the fixed effects' block is ``vcov``.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd
from scipy import special

from .._x64 import float64_methods
from .lmer_result import SINGULAR_TOL, _from_model
from .common import InformationCriteria, RandomEffectsTables
from .varcorr import varcorr_frame

FAMILY_LABEL = {"binomial": "binomial", "poisson": "poisson", "negative_binomial": "nbinom2", "gamma": "Gamma"}


@float64_methods
class GlmerResult(RandomEffectsTables, InformationCriteria):
    """A fitted generalized linear mixed model (what ``jaxlmm.glmer`` returns).

    lme4's accessors: ``fixef``, ``se``, ``vcov``, ``theta``, ``varcorr``, ``ranef``, ``coef``, ``fitted``,
    ``predict(newdata, type=, re_form=)``, ``residuals(type=)``, ``loglik``, ``aic``, ``bic``, ``deviance``,
    ``summary()``, ``converged`` / ``status``; ``dispersion`` (NB2's r, Gamma's coefficient of variation).
    """

    kind = "glmm"
    reml = False

    def __init__(self, model, output, *, optimizer: str = "newton"):
        self.model = model
        self._out = output
        self.optimizer = optimizer

    design = _from_model("design", "The ``Design`` (arrays and names) of the fitted model.")
    data_name = _from_model("data_name", "The data's name in printed output.")
    _offset_arg = _from_model("offset_arg", "The offset as given.")

    # ---------------------------------------------------------------- parameters
    @property
    def _layout(self):
        return self.model.engine.layout(self.model)

    @property
    def family(self) -> str:
        return self.model.glmm.family

    @property
    def link(self) -> str:
        return self.model.glmm.link

    @property
    def nagq(self) -> int:
        return self.model.glmm.nagq

    @property
    def x(self) -> np.ndarray:
        """All parameters ``(theta, beta[, log dispersion])``."""
        return np.asarray(self._out.optim.theta)[0]

    @property
    def theta(self) -> np.ndarray:
        return self.x[:self._layout.ntheta]

    @property
    def theta_names(self) -> list[str]:
        return self.model.engine.theta_names(self.model)[:self._layout.ntheta]

    @property
    def fixef_names(self) -> list[str]:
        return list(self.design.fixef_names)

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(np.asarray(self._out.beta)[0], index=self.fixef_names)

    @property
    def _log_dispersion(self) -> float:
        return float(self.x[-1]) if self._layout.family.dispersion else 0.0

    @property
    def dispersion(self) -> float:
        """NB2: ``r`` of var = mu + mu^2 / r; Gamma: the coefficient of variation 1 / sqrt(shape) (glmmTMB's
        ``sigma()``); 1 for the binomial and Poisson."""
        if self.family == "negative_binomial":
            return float(np.exp(self._log_dispersion))
        if self.family == "gamma":
            return float(np.exp(-0.5 * self._log_dispersion))
        return 1.0

    sigma = dispersion

    # ---------------------------------------------------------------- criterion
    @property
    def criterion(self) -> float:
        """``-2 log L`` at the optimum (Laplace or AGQ)."""
        return float(np.asarray(self._out.optim.fun)[0])


    @property
    def nobs(self) -> int:
        return int(np.sum(np.asarray(self.design.weights) > 0))

    @property
    def df_model(self) -> int:
        layout = self._layout
        return layout.ntheta + layout.nbeta + int(layout.family.dispersion)

    # ---------------------------------------------------------------- convergence
    @property
    def _status_code(self):
        return self._out.optim.status

    @property
    def n_iter(self) -> int:
        return int(np.asarray(self._out.optim.n_iter)[0])

    @property
    def grad(self) -> np.ndarray:
        return np.asarray(self._out.optim.grad)[0]

    @property
    def is_singular(self) -> bool:
        lower = self.model.engine.lower(self.model)[:self._layout.ntheta]
        return bool(np.any(np.isfinite(lower) & (np.abs(self.theta) < SINGULAR_TOL)))

    @property
    def messages(self) -> list[str]:
        return self._fit_messages()

    # ---------------------------------------------------------------- covariance of the estimates
    @cached_property
    def hessian(self) -> np.ndarray:
        """The Hessian of ``-2 log L`` at the optimum over all parameters ``x``."""
        return np.asarray(self._out.hessian)[0]

    @cached_property
    def covariance(self) -> pd.DataFrame:
        """Covariance of every estimate ``x`` (module docstring): ``2 H^{-1}`` over the free components."""
        H = self.hessian
        lower = self.model.engine.lower(self.model)
        free = ~(np.isfinite(lower) & (self.x <= lower + 1e-12))
        cov = np.full(H.shape, np.nan)
        sub = H[np.ix_(free, free)]
        try:
            inv = np.linalg.inv(sub)
        except np.linalg.LinAlgError:
            inv = np.linalg.pinv(sub)
        cov[np.ix_(free, free)] = 2.0 * inv
        names = self.model.engine.theta_names(self.model)
        return pd.DataFrame(cov, index=names, columns=names)

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance of the fixed effects: from the Hessian (``covariance``), or for ``nAGQ = 0`` lme4's
        ``RX``-based one, the inverse Schur complement at the joint mode (``core/glmm/joint.py``)."""
        if self._out.beta_cov is not None:
            return pd.DataFrame(np.asarray(self._out.beta_cov)[0], index=self.fixef_names, columns=self.fixef_names)
        return self.covariance.loc[self.fixef_names, self.fixef_names]

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.fixef_names)

    def coef_table(self) -> pd.DataFrame:
        """Estimate, Std. Error, z value, Pr(>|z|) (glmer's Wald z tests)."""
        est, se = self.fixef, self.se
        z = est / se
        return pd.DataFrame({"Estimate": est, "Std. Error": se, "z value": z,
                             "Pr(>|z|)": 2.0 * special.ndtr(-np.abs(z))})

    # ---------------------------------------------------------------- random effects
    @property
    def lambdas(self) -> list[np.ndarray]:
        from ..core.glmm.layout import theta_lambdas

        return theta_lambdas(self._layout, self.theta)

    @property
    def term_covariances(self) -> list[np.ndarray]:
        """Each term's covariance of its random effects, ``T_k T_k'``."""
        return [T @ T.T for T in self.lambdas]

    residual_variances: list = []      # no residual variance in a GLMM's random-effects table

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """``as.data.frame(VarCorr(m))``: variances and SDs / correlations of each term (no residual row)."""
        frame = varcorr_frame(self.lambdas, [t.group for t in self.design.terms],
                              [t.columns for t in self.design.terms], 1.0)
        return frame[frame.grp != "Residual"].reset_index(drop=True)

    def _u(self, k: int) -> np.ndarray:
        term = self._layout.terms[k]
        u = np.asarray(self._out.u)[0]
        return u[term.u_start:term.u_start + term.ncols * term.nlevels].reshape(term.nlevels, term.ncols)

    def _b(self, k: int) -> np.ndarray:
        """The conditional modes of term ``k``'s random effects (levels x columns), ``b = T u``."""
        return self._u(k) @ self.lambdas[k].T

    def _cond_var(self, k: int) -> np.ndarray:
        """Conditional covariance of ``b`` per level of term ``k`` (levels x s x s)."""
        term, T = self._layout.terms[k], self.lambdas[k]
        s = term.ncols
        if self._layout.block_diagonal:
            blocks = self._u_covariance
        else:
            pos = term.u_start + np.arange(term.nlevels)[:, None] * s + np.arange(s)[None, :]
            blocks = self._u_covariance[pos[:, :, None], pos[:, None, :]]
        return np.einsum("ab,gbc,dc->gad", T, blocks, T)

    @cached_property
    def _u_covariance(self) -> np.ndarray:
        """``H^{-1}`` from its blocked Cholesky factor (``core/glmm/mode.Factor``): the conditional covariance
        of ``u`` -- (levels, s, s) blocks for one term, else (q, q)."""
        from scipy.linalg import solve_triangular

        from ..core.glmm.mode import Factor, dense_factor

        F = Factor(*(np.asarray(t)[0] for t in self._out.L))
        if self._layout.block_diagonal:
            inv = np.linalg.inv(F.L)                      # per level: L_j^{-1} (s x s)
            return np.einsum("gki,gkj->gij", inv, inv)
        inv = solve_triangular(dense_factor(F), np.eye(self._layout.q), lower=True)
        return inv.T @ inv

    # ---------------------------------------------------------------- fitted, predictions, residuals
    @property
    def linear_predictor(self) -> np.ndarray:
        return np.asarray(self._out.eta)[0]

    def _mean(self, eta) -> np.ndarray:
        import jax.numpy as jnp

        from ..core.glmm.families import mean

        return np.asarray(mean(self._layout.family, jnp.asarray(eta, float)))

    @property
    def fitted(self) -> np.ndarray:
        """The conditional mean ``mu`` at the modes (the response scale: a probability for the binomial)."""
        return self._mean(self.linear_predictor)

    @property
    def response(self) -> np.ndarray:
        return np.asarray(self.design.y, float)

    def predict(self, newdata=None, type: str = "link", re_form=None, allow_new_levels: bool = False) -> np.ndarray:
        """lme4's ``predict.merMod``: the linear predictor (``type="link"``) or the mean (``"response"``)."""
        from .predict import predict

        if type not in ("link", "response"):
            raise ValueError(f"type={type!r}: use 'link' or 'response'")
        if newdata is None and re_form is None:
            eta = self.linear_predictor.copy()
        else:
            eta = predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels)
        return self._mean(eta) if type == "response" else eta

    def residuals(self, type: str = "deviance") -> np.ndarray:
        """``"deviance"`` (default, as glmer), ``"pearson"``, ``"response"`` (``y - mu``) or ``"working"``."""
        import jax.numpy as jnp

        from ..core.glmm.families import log_density, variance

        fam, y, w, mu = self._layout.family, self.response, np.asarray(self.design.weights, float), self.fitted
        if type == "response":
            return y - mu
        if type == "pearson":
            v = np.asarray(variance(fam, jnp.asarray(mu), jnp.asarray(w), self._log_dispersion))
            return (y - mu) / np.sqrt(v)
        if type == "working":
            import jax

            from ..core.glmm.families import mean

            dmu = jax.vmap(jax.grad(lambda e: mean(fam, e)))(jnp.asarray(self.linear_predictor))
            return (y - mu) / np.asarray(dmu)
        if type != "deviance":
            raise ValueError(f"type={type!r}: use 'deviance', 'pearson', 'response' or 'working'")
        ld = lambda eta_or_mu: np.asarray(log_density(fam, jnp.asarray(eta_or_mu), jnp.asarray(y), jnp.asarray(w),
                                                      self._log_dispersion))
        saturated = ld(self._saturated_eta(y))
        fitted = ld(self.linear_predictor)
        return np.sign(y - mu) * np.sqrt(np.maximum(2.0 * (saturated - fitted), 0.0))

    def _saturated_eta(self, y) -> np.ndarray:
        """The linear predictor whose mean is ``y`` (the saturated model), clipped where the link is infinite."""
        from scipy.special import logit, ndtri

        eps = 1e-300
        if self.family != "binomial":
            return np.log(np.maximum(y, eps))
        p = np.clip(y, 1e-15, 1 - 1e-15)
        return {"logit": logit, "probit": ndtri, "cloglog": lambda m: np.log(-np.log1p(-m))}[self.link](p)

    # ---------------------------------------------------------------- simulation and intervals
    def simulate(self, nsim: int = 1, seed: int | None = None, use_u: bool = False) -> np.ndarray:
        """lme4's ``simulate``: ``nsim`` responses (n, nsim) from the fitted model -- new random effects
        ``u ~ N(0, I)`` (or the conditional modes, ``use_u=True``), then each row from its family at
        ``mu = g^{-1}(X beta + offset + Z Lambda u)`` (binomial: the proportion of the row's trials)."""
        from ..errors import count_argument

        nsim = count_argument(nsim, "nsim", 1)
        rng = np.random.default_rng(seed)
        design, layout = self.design, self._layout
        eta0 = design.X @ self.fixef.to_numpy() + np.asarray(design.offset, float)
        eta = np.repeat(eta0[:, None], nsim, axis=1)
        for k, (t, term) in enumerate(zip(design.terms, layout.terms)):
            U = np.repeat(self._u(k)[:, :, None], nsim, axis=2) if use_u else \
                rng.standard_normal((term.nlevels, term.ncols, nsim))
            B = np.einsum("ab,lbs->las", self.lambdas[k], U)                  # levels x cols x nsim
            eta += np.einsum("ia,ias->is", np.asarray(t.z, float), B[np.asarray(t.factor.codes)])
        mu = self._mean(eta)
        w = np.asarray(design.weights, float)[:, None]
        if self.family == "binomial":
            trials = np.round(w).astype(np.int64)
            y = rng.binomial(np.broadcast_to(trials, mu.shape), mu) / np.where(trials > 0, trials, 1)
        elif self.family == "poisson":
            y = rng.poisson(mu).astype(float)
        elif self.family == "negative_binomial":
            r = self.dispersion
            y = rng.poisson(rng.gamma(r, mu / r)).astype(float)
        else:
            shape = np.exp(self._log_dispersion)
            y = rng.gamma(shape, mu / shape)
        return np.where(w > 0, y, np.nan)

    def bootstrap(self, nsim: int = 200, seed: int | None = None, chunk_size: int | None = None):
        """Parametric bootstrap: ``nsim`` responses simulated from the fit, each refitted (a batch of lanes,
        ``many/glmm.py``): the ``GlmmBatchResult`` of the replicates."""
        Y = self.simulate(nsim, seed=seed)
        return self.model.fit_many(Y, names=[f"sim{i}" for i in range(nsim)], start=self.x, chunk_size=chunk_size)

    def confint(self, method: str = "profile", level: float = 0.95, nsim: int = 200, seed: int | None = None) -> pd.DataFrame:
        """Confidence intervals of the fixed effects: ``"Wald"`` (estimate +- z SE), ``"profile"`` (profile
        likelihood, also of scalar terms' SDs: ``inference/glmm_profile.py``) or ``"boot"`` (percentiles of the
        parametric bootstrap's converged replicates, ``bootstrap``)."""
        if not 0 < level < 1:
            raise ValueError(f"level={level!r} must be between 0 and 1")
        lo, hi = (1 - level) / 2, (1 + level) / 2
        cols = [f"{100 * lo:.3g} %", f"{100 * hi:.3g} %"]
        if method.lower() == "wald":
            z = special.ndtri(hi)
            est, se = self.fixef, self.se
            return pd.DataFrame({cols[0]: est - z * se, cols[1]: est + z * se})
        if method.lower() == "profile":
            from ..inference.glmm_profile import profile_intervals

            return profile_intervals(self, level)
        if method.lower() in ("boot", "bootstrap"):
            reps = self.bootstrap(nsim, seed=seed)
            ok = reps.fixef[reps.converged.to_numpy()]
            return pd.DataFrame({cols[0]: ok.quantile(lo), cols[1]: ok.quantile(hi)})
        raise ValueError(f"method={method!r}: use 'Wald', 'profile' or 'boot'")

    # ---------------------------------------------------------------- printing
    def summary(self) -> str:
        from .glmer_summary import format_glmer_summary

        return format_glmer_summary(self)

    def __repr__(self) -> str:
        fam = FAMILY_LABEL[self.family]
        return (f"<GlmerResult {self.design.response_name} ~ ... {fam}({self.link}), logLik {self.loglik:.4f}, "
                f"{'converged' if self.converged else 'NOT converged: ' + self.status_name}>")
