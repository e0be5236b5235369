"""The fitted multivariate model: trait covariances, genetic correlations, fixed effects per trait.

Parameters: those of ``Sigma_g``'s and ``Sigma_e``'s structures (``core/multivariate/covariance.py``).  The
covariance of the estimates is twice the inverse Hessian of the criterion at the optimum over the
parameters not on a bound; the entries of ``Sigma_g`` and ``Sigma_e`` and the correlations get their SEs by
the delta method (``covariance_parameters``).  Fixed effects: GLS at the estimate, ``vcov`` the inverse of
``X_o^T V_oo^-1 X_o`` over ``vec(B)`` (trait by trait), z tests.  Genetic values are the conditional
means ``E[G | observed entries]`` at the estimate, for every level of K (levels without data too).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd
from scipy import special

from .._x64 import float64_methods
from .common import InformationCriteria
from .linear_result import SINGULAR_TOL, _from_model


def _correlation(S: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.maximum(np.diag(S), 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        R = S / np.outer(sd, sd)
    np.fill_diagonal(R, 1.0)
    return R


def _vech_pairs(d: int) -> list[tuple[int, int]]:
    """(row, column) of vech's entries: the lower triangle column by column."""
    return [(i, j) for j in range(d) for i in range(j, d)]


@float64_methods
class MultivariateResult(InformationCriteria):
    """A fitted multivariate linear mixed model (what ``lmer("cbind(y1, y2, ...) ~ ...")`` returns).

    ``sigma_g``, ``sigma_e`` (trait x trait), ``genetic_correlation``, ``residual_correlation``, ``h2`` per
    trait, ``covariance_parameters`` (each entry and correlation with its SE), ``fixef`` / ``se``
    (coefficient x trait), ``vcov``, ``coef_table()``, ``genetic_values()`` (``ranef``), ``loglik``,
    ``criterion``, ``aic``, ``bic``, ``summary()``, ``converged`` / ``status``.
    """

    kind = "multivariate"

    def __init__(self, model, output, *, optimizer: str = "newton"):
        self.model = model
        self._out = output
        self.optimizer = optimizer

    design = _from_model("design", "The ``Design`` (arrays and names) of the fitted model.")
    reml = _from_model("reml", "Whether the fit is REML (else ML).")
    data_name = _from_model("data_name", "The data's name in printed output.")

    # ---------------------------------------------------------------- the pieces
    @property
    def _engine(self):
        return self.model.engine

    @property
    def _spec(self):
        return self._engine.spec(self.model)

    @property
    def _data(self):
        return self._engine.data(self.model)[0]

    @property
    def traits(self) -> list[str]:
        return list(self.model.multivariate.traits)

    @property
    def formula(self) -> str:
        return f"{self.design.response_name} ~ {self.design.formula.text.split('~', 1)[-1].strip()}"

    @property
    def theta(self) -> np.ndarray:
        """The parameters of ``Sigma_g``'s structure, then ``Sigma_e``'s."""
        return np.asarray(self._out.theta[0], float)

    @property
    def theta_names(self) -> list[str]:
        return self._engine.theta_names(self.model)

    @property
    def lower(self) -> np.ndarray:
        return self._engine.lower(self.model)

    @cached_property
    def _estimates(self):
        import jax
        import jax.numpy as jnp

        from ..core.multivariate.programs import estimates_program

        return jax.tree_util.tree_map(np.asarray, estimates_program(jnp.asarray(self.theta, self.model.dtype),
                                                                    self._data, self._spec))

    @cached_property
    def _at_estimate(self) -> tuple[float, np.ndarray, np.ndarray]:
        """The criterion, its gradient and Hessian evaluated at the estimate itself."""
        import jax.numpy as jnp

        from ..core.multivariate.programs import evaluate

        f, g, H = evaluate(jnp.asarray(self.theta, self.model.dtype), self._data, self._spec, self.reml)
        return float(f), np.asarray(g, float), np.asarray(H, float)

    @property
    def _hessian(self) -> np.ndarray:
        return self._at_estimate[2]

    @cached_property
    def theta_cov(self) -> np.ndarray:
        """``2 H^-1`` over the parameters not on a bound (NaN rows and columns for those on one)."""
        k = len(self.theta)
        free = ~((self.lower == 0) & (np.abs(self.theta) < 1e-8 * max(1.0, float(np.max(np.abs(self.theta))))))
        out = np.full((k, k), np.nan)
        H = self._hessian[np.ix_(free, free)]
        try:
            out[np.ix_(free, free)] = 2.0 * np.linalg.inv(0.5 * (H + H.T))
        except np.linalg.LinAlgError:
            pass
        return out

    # ---------------------------------------------------------------- optimizer
    @property
    def criterion(self) -> float:
        """REML criterion at convergence (REML fits) or deviance (ML fits), evaluated at the estimate."""
        return self._at_estimate[0]

    @property
    def nobs(self) -> int:
        """The number of observed trait values."""
        return int(np.isfinite(np.asarray(self.design.y, float)).sum())

    @property
    def df_model(self) -> int:
        return len(self.theta) + self._estimates.B.size

    @property
    def _status_code(self):
        return self._out.status

    @property
    def n_iter(self) -> int:
        return int(self._out.n_iter[0])

    @property
    def grad(self) -> np.ndarray:
        """Gradient of the criterion at the estimate."""
        return self._at_estimate[1]

    @property
    def is_singular(self) -> bool:
        """A covariance matrix at its boundary: an eigenvalue of ``Sigma_g`` (or ``Sigma_e``) below 1e-4 of its
        largest -- e.g. a genetic correlation of +-1 or a genetic variance of 0."""
        return self.sigma_g_singular or self.sigma_e_singular

    @staticmethod
    def _singular(S: np.ndarray) -> bool:
        w = np.linalg.eigvalsh(S)
        return bool(w[0] <= SINGULAR_TOL * max(w[-1], 1e-300))

    @property
    def sigma_g_singular(self) -> bool:
        return self._singular(self._estimates.Sg)

    @property
    def sigma_e_singular(self) -> bool:
        return self._singular(self._estimates.Se)

    @property
    def messages(self) -> list[str]:
        out = list(self.design.messages)
        if not self.converged:
            out.append(f"optimizer: {self.optimizer_message}")
        if self.sigma_g_singular:
            out.append("boundary (singular) fit: Sigma_g is singular (a genetic variance of 0 or a genetic correlation "
                       "of +-1 within the traits)")
        if self.sigma_e_singular:
            out.append("boundary (singular) fit: Sigma_e is singular (a residual variance of 0 or a residual "
                       "correlation of +-1)")
        return out

    # ---------------------------------------------------------------- covariances
    def _trait_frame(self, M: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(M, index=self.traits, columns=self.traits)

    @property
    def sigma_g(self) -> pd.DataFrame:
        """The genetic (random-term) covariance between the traits."""
        return self._trait_frame(self._estimates.Sg)

    @property
    def sigma_e(self) -> pd.DataFrame:
        """The residual covariance between the traits."""
        return self._trait_frame(self._estimates.Se)

    @property
    def genetic_correlation(self) -> pd.DataFrame:
        return self._trait_frame(_correlation(self._estimates.Sg))

    @property
    def residual_correlation(self) -> pd.DataFrame:
        return self._trait_frame(_correlation(self._estimates.Se))

    @property
    def h2(self) -> pd.Series:
        """Per trait ``sigma_g^2 / (sigma_g^2 + sigma_e^2)`` (the heritability with a relationship matrix)."""
        g, e = np.diag(self._estimates.Sg), np.diag(self._estimates.Se)
        return pd.Series(g / (g + e), index=self.traits, name="h2")

    @cached_property
    def covariance_parameters(self) -> pd.DataFrame:
        """Each entry of ``Sigma_g`` and ``Sigma_e`` (variances and covariances) and each correlation, with its SE
        by the delta method on ``2 H^-1``; columns: component, trait1, trait2, quantity, estimate, se."""
        import jax.numpy as jnp

        from ..core.multivariate.programs import parameter_jacobian

        d = len(self.traits)
        pairs = _vech_pairs(d)
        Jac = np.asarray(parameter_jacobian(jnp.asarray(self.theta, self.model.dtype), self._spec), float)
        A = self.theta_cov
        free = np.all(np.isfinite(A), axis=0)
        cov = Jac[:, free] @ A[np.ix_(free, free)] @ Jac[:, free].T         # of (vech Sg, vech Se)
        rows = []
        for part, (name, S) in enumerate((("G", self._estimates.Sg), ("E", self._estimates.Se))):
            base = part * len(pairs)
            pos = {pr: base + a for a, pr in enumerate(pairs)}
            for (i, j) in pairs:
                a = pos[(i, j)]
                quantity = "variance" if i == j else "covariance"
                rows.append((name, self.traits[j], self.traits[i], quantity, S[i, j], np.sqrt(max(cov[a, a], 0.0))))
            for (i, j) in pairs:
                if i == j:
                    continue
                a, ii, jj = pos[(i, j)], pos[(i, i)], pos[(j, j)]
                r = S[i, j] / np.sqrt(S[i, i] * S[j, j])
                grad = np.zeros(cov.shape[0])
                grad[a] = 1.0 / np.sqrt(S[i, i] * S[j, j])
                grad[ii] = -0.5 * r / S[i, i]
                grad[jj] = -0.5 * r / S[j, j]
                rows.append((name, self.traits[j], self.traits[i], "correlation", r,
                             float(np.sqrt(max(grad @ cov @ grad, 0.0)))))
        out = pd.DataFrame(rows, columns=["component", "trait1", "trait2", "quantity", "estimate", "se"])
        if not np.all(free):
            out.loc[:, "se"] = np.where(np.isfinite(out["se"]), out["se"], np.nan)
        return out

    # ---------------------------------------------------------------- fixed effects
    @property
    def fixef_names(self) -> list[str]:
        return list(self.design.fixef_names)

    @property
    def fixef(self) -> pd.DataFrame:
        """``B``: coefficient x trait."""
        return pd.DataFrame(self._estimates.B, index=self.fixef_names, columns=self.traits)

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance of ``vec(B)`` (trait by trait), indexed by (trait, coefficient)."""
        index = pd.MultiIndex.from_product([self.traits, self.fixef_names], names=["trait", "coefficient"])
        return pd.DataFrame(self._estimates.cov_beta, index=index, columns=index)

    @property
    def se(self) -> pd.DataFrame:
        p, d = len(self.fixef_names), len(self.traits)
        se = np.sqrt(np.maximum(np.diag(self._estimates.cov_beta), 0.0)).reshape(d, p).T
        return pd.DataFrame(se, index=self.fixef_names, columns=self.traits)

    def coef_table(self) -> pd.DataFrame:
        """One row per trait and coefficient: Estimate, Std. Error, z value, Pr(>|z|)."""
        est = self.fixef.T.stack()
        se = self.se.T.stack()
        z = est / se
        table = pd.DataFrame({"Estimate": est, "Std. Error": se, "z value": z,
                              "Pr(>|z|)": 2.0 * special.ndtr(-np.abs(z))})
        table.index.names = ["trait", "coefficient"]
        return table

    # ---------------------------------------------------------------- genetic values
    def genetic_values(self, include_unobserved: bool = True) -> pd.DataFrame:
        """``E[G | observed entries]`` per level (rows) and trait (columns) of the random term; with
        ``include_unobserved``, also the levels of K without data (``K_{new, obs} Z^T P r*``)."""
        t = self.design.terms[0]
        rotation = self._engine.data(self.model)[1]
        Pr = rotation.U @ self._estimates.Pr                  # P r* over the kept records (original order)
        codes = np.asarray(t.factor.codes)[rotation.rows]
        n_levels = len(t.factor.levels)
        ZtPr = np.zeros((n_levels, Pr.shape[1]))
        np.add.at(ZtPr, codes, Pr)
        levels = list(t.factor.levels)
        if t.relmat is None:
            K_rows = np.eye(n_levels)
        elif include_unobserved and t.relmat.unused_levels:
            full = t.relmat.full
            pos = {lv: i for i, lv in enumerate(full.levels)}
            levels = levels + list(t.relmat.unused_levels)
            K_rows = full.K[np.ix_([pos[lv] for lv in levels], [pos[lv] for lv in t.factor.levels])]
        else:
            K_rows = np.asarray(t.relmat.K, float)
        G = K_rows @ ZtPr @ self._estimates.Sg
        out = pd.DataFrame(G, index=pd.Index(levels, name=t.group), columns=self.traits)
        return out

    @property
    def ranef(self) -> pd.DataFrame:
        """The genetic values of the observed levels (``genetic_values(include_unobserved=False)``)."""
        return self.genetic_values(include_unobserved=False)

    # ---------------------------------------------------------------- text
    def summary(self) -> str:
        method = "REML" if self.reml else "maximum likelihood"
        crit = f"REML criterion at convergence: {self.criterion:.4f}" if self.reml else \
            f"deviance: {self.criterion:.4f}"
        t = self.design.terms[0]
        lines = [f"Multivariate linear mixed model fit by {method}",
                 f"Formula: {self.formula}" + (f"   (relationship matrix for {t.group})" if t.relmat is not None else ""),
                 crit, f"logLik: {self.loglik:.4f}; AIC: {self.aic:.2f}; BIC: {self.bic:.2f}",
                 f"Traits: {len(self.traits)}; observed values: {self.nobs}; levels of {t.group}: "
                 f"{len(t.factor.levels)}", ""]
        for title, S in (("Sigma_g (genetic covariance; correlations above the diagonal)", self._estimates.Sg),
                         ("Sigma_e (residual covariance; correlations above the diagonal)", self._estimates.Se)):
            M = np.tril(S) + np.triu(_correlation(S), 1)
            lines += [title, pd.DataFrame(M, index=self.traits, columns=self.traits).to_string(
                float_format=lambda v: f"{v:.4g}"), ""]
        lines += ["Heritability (sigma_g^2 / (sigma_g^2 + sigma_e^2)):",
                  self.h2.to_frame().T.to_string(float_format=lambda v: f"{v:.4g}", index=False), ""]
        lines += ["Fixed effects (z tests):", self.coef_table().to_string(float_format=lambda v: f"{v:.4g}")]
        lines += [m for m in self.messages]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<MultivariateResult fit by {'REML' if self.reml else 'ML'}: {self.formula}\n"
                f"  criterion {self.criterion:.4f}; traits {len(self.traits)}; "
                f"{'converged' if self.converged else self.status_name}>")
