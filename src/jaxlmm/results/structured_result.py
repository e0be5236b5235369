"""The result of a fit with structured covariances or ``dispformula`` (``core/marginal/criterion.py``).

Its parameters are absolute: ``theta`` holds each term's own parameters (ar1's
``(sd, a)``, exp's ``(sd, log range)``, ...); the residual's are one SD, or with a
``dispformula`` glmmTMB's dispersion coefficients ``dispersion.(Intercept)``, ... (the log
of the residual variance, ``core/marginal/residual.py``), and ``residual_sd`` the residual
SD of each level (each combination of the dispformula's variables); ``parameters`` lists them
all by name.  ``varcorr`` lists each term's implied covariance in lme4's long layout,
``covariance_parameters`` each structure's reported quantities (variances, correlations,
ranges) with Wald SEs from the exact Hessian (delta method), and fixed effects are tested with
z tests (glmmTMB's summary) by default.  It is not lme4's model class (``LmerResult``): what
every linear fit reports alike is in ``LinearMixedResult`` (``linear_result.py``).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from .._x64 import float64_methods
from ..core.params.covariance import sd_and_cor
from ..model.naming import unique_group_names
from .heritability import Heritability, marginal_heritability
from .linear_result import SINGULAR_TOL, LinearMixedResult

RESIDUAL_BOUND = 1e-5   # a residual SD at most this times the response's SD is at its bound 0


@float64_methods
class StructuredResult(Heritability, LinearMixedResult):
    """A fitted model with structured covariances (module docstring)."""

    kind = "structured"

    @property
    def _marginal(self):
        return self.model.marginal

    @property
    def _phi(self) -> np.ndarray:
        return np.asarray(self._out.optim.theta, float)

    @property
    def _refit_start(self) -> np.ndarray:
        return self._phi

    # ------------------------------------------------------ variance parameters
    @property
    def theta(self) -> np.ndarray:
        """The terms' own parameters (absolute scale), in lme4's term order."""
        return self._phi[:self._marginal.offsets[-1]]

    @cached_property
    def theta_names(self) -> list[str]:
        return [f"{g}.{n}" for g, t in zip(unique_group_names([t.group for t in self.design.terms]),
                                            self._marginal.terms) for n in t.cov.names]

    @property
    def parameters(self) -> pd.Series:
        """Every parameter the fit estimated, absolute: the terms' own (``theta``), then the residual's
        (``dispersion``), indexed by name."""
        return pd.Series(self._phi, index=self.theta_names + list(self._marginal.residual.names),
                         name="parameters")

    @property
    def lower(self) -> np.ndarray:
        """The lower bounds of ``theta``."""
        return self._marginal.lower()[:len(self.theta)]

    @property
    def df_model(self) -> int:
        """Number of parameters: fixed effects and ``parameters`` (logLik's ``df``)."""
        return len(self.fixef_names) + len(self._phi)

    @property
    def dispersion(self) -> pd.Series:
        """The dispersion model's coefficients (``dispformula``; glmmTMB's ``fixef(fit)$disp``, the log of the
        residual variance), or the one residual SD (``residual_sd.Residual``) without a dispformula."""
        mm = self._marginal
        return pd.Series(self._phi[mm.offsets[-1]:], index=list(mm.residual.names), name="dispersion")

    @property
    def residual_sd(self) -> pd.Series:
        """The residual SD of each ``dispformula`` level (one value, ``Residual``, without one)."""
        return pd.Series(self._out.estimates.residual_sd, index=list(self.design.resid_levels), name="residual_sd")

    @property
    def is_singular(self) -> bool:
        scales = np.concatenate([off + np.asarray(t.cov.scales, int) for t, off in
                                 zip(self._marginal.terms, self._marginal.offsets)] or [np.zeros(0, int)])
        return bool(np.any(np.abs(self._phi[scales]) < SINGULAR_TOL * max(self.sigma, 1e-300)))

    @property
    def residual_at_boundary(self) -> bool:
        spread = float(np.nanstd(self.response))
        return bool(spread > 0 and np.any(self._out.estimates.residual_sd <= RESIDUAL_BOUND * spread))

    @property
    def _residual_boundary_message(self) -> str:
        return ("boundary (residual variance): a residual SD is at its bound 0 -- the structured "
                "terms absorb all of that residual variance")

    @property
    def term_covariances(self) -> list[np.ndarray]:
        """Each term's implied covariance of one level's effects (absolute)."""
        return [np.asarray(c) for c in self._out.estimates.covariances]

    @cached_property
    def lambdas(self) -> list[np.ndarray]:
        """Each term's covariance factor relative to ``sigma``, as ``LmerResult.lambdas``:
        ``sigma^2 lambda lambda^T`` is ``term_covariances`` (a Cholesky factor, or a symmetric square root
        where the covariance is singular)."""
        from ..inference.bootstrap import _square_root

        with np.errstate(divide="ignore", invalid="ignore"):
            return [_square_root(C) / self.sigma for C in self.term_covariances]

    @property
    def residual_variances(self) -> list[tuple[str, float]]:
        from .summary import MAX_SHOWN

        sds = self._out.estimates.residual_sd
        if len(sds) == 1:
            return [("Residual", float(sds[0]) ** 2)]
        out = [(f"Residual {level}", float(s) ** 2) for level, s in zip(self.design.resid_levels[:MAX_SHOWN], sds)]
        if len(sds) > MAX_SHOWN:
            out.append((f"Residual ... ({len(sds) - MAX_SHOWN} more levels)", np.nan))
        return out

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        rows = []
        for cov, grp, t in zip(self.term_covariances, unique_group_names([t.group for t in self.design.terms]),
                               self.design.terms):
            sd, cor = sd_and_cor(cov)
            cols = t.columns
            for i, c in enumerate(cols):
                rows.append((grp, c, "", cov[i, i], sd[i]))
            for j in range(len(cols)):
                for i in range(j + 1, len(cols)):
                    rows.append((grp, cols[j], cols[i], cov[i, j], cor[i, j]))
        sds = self._out.estimates.residual_sd
        if len(sds) == 1:
            rows.append(("Residual", "", "", sds[0] ** 2, sds[0]))
        else:
            for level, s in zip(self.design.resid_levels, sds):
                rows.append(("Residual", str(level), "", s ** 2, s))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    @cached_property
    def covariance_parameters(self) -> pd.DataFrame:
        """Each structure's reported quantities with Wald SEs (delta method on ``2 H^-1``)."""
        from .covariance_parameters import parameter_table

        mm = self._marginal
        return parameter_table(self.design, [t.cov for t in mm.terms], mm.residual, self._phi,
                               np.asarray(self._out.phi_cov, float))

    def _weigh_residuals(self, r: np.ndarray, pearson: bool, scaled: bool) -> np.ndarray:
        """glmmTMB's: Pearson residuals (and ``scaled=True`` of either type) divide ``y - fitted`` by each
        row's own residual SD, ``sqrt(w_i) (y_i - fitted_i) / s_r(i)`` with ``s_r(i)`` the SD of its
        ``dispformula`` level.  Where a level's residual SD is at its bound 0 these are not defined: an
        error, not NaN."""
        if not (pearson or scaled):
            return r
        sds = np.asarray(self._out.estimates.residual_sd, float)
        bound = sds <= RESIDUAL_BOUND * float(np.nanstd(self.response))
        codes = np.asarray(self.design.resid_codes)
        if np.any(bound[codes]):
            from ..errors import JaxlmmError

            level = self.design.resid_levels[int(np.flatnonzero(bound)[0])]
            raise JaxlmmError(f"scaled and Pearson residuals are not defined: the residual SD of "
                              f"{'level ' + repr(level) if len(sds) > 1 else 'the model'} is at its bound 0 "
                              f"({float(sds[np.flatnonzero(bound)[0]]):.3g}; the structured terms absorb all of "
                              "that residual variance); residuals(type='response') are y - fitted")
        return r * np.sqrt(np.asarray(self.design.weights, float)) / sds[codes]

    def _krige(self, k: int, coords: np.ndarray) -> np.ndarray:
        """BLUPs of term ``k``'s levels at new positions ``coords`` (m, d): ``C(s0, S) Z^T V^-1 (y - X beta)``
        (``predict.py``), with the term's covariance function evaluated over the fit's and the new positions."""
        from ..errors import DataError
        from ..core.params.covfuns import check_matrix

        mm, term = self._marginal, self.design.terms[k]
        t, off = mm.terms[k], mm.offsets[k]
        if t.cov.at is None or t.K is not None:
            raise DataError(f"newdata has positions of {term.term} that the fit did not see: predicting there "
                            f"needs a covariance function of the coordinates, and {t.cov.name}() "
                            f"{'with a relationship matrix ' if t.K is not None else ''}is not one")
        S = len(term.columns)
        both = t.cov.at(np.concatenate([np.asarray(term.coords, float), np.asarray(coords, float)]))
        C = check_matrix(both, self._phi[off:off + t.cov.n_params], S + len(coords), "the estimate (new positions)")
        fitted = self.term_covariances[k]
        if not np.allclose(C[:S, :S], fitted, rtol=1e-8, atol=1e-10 * max(float(np.max(np.abs(fitted))), 1e-300)):
            raise DataError(f"{term.term}: its covariance over the fit's positions changes when new positions "
                            "are added (it is not a function of each pair of coordinates), so a new position "
                            "cannot be kriged")
        return np.asarray(self._out.estimates.zt_vinv_r[k], float)[:self._levels(k)] @ C[:S, S:]

    @property
    def structure_description(self) -> str:
        """The terms' structures and the residual model, for the summary's header."""
        groups = unique_group_names([t.group for t in self.design.terms])
        terms = ", ".join(f"{t.cov.name}({g})" for g, t in zip(groups, self._marginal.terms))
        residual = f"dispformula {self.design.dispformula}" if self.design.dispformula is not None else "one residual SD"
        return f"structured covariances: {terms}; {residual}"

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Covariance of the fixed effects including the variance parameters' uncertainty,
        ``Phi + J A J^T`` (glmmTMB's; ``vcov_conditional`` is lme4's ``Phi`` at the estimate)."""
        J = np.asarray(self._out.estimates.beta_jacobian)
        A = np.nan_to_num(np.asarray(self._out.phi_cov, float))
        V = np.asarray(self._out.solution.vcov_beta) + J @ A @ J.T
        return pd.DataFrame(V, index=self.fixef_names, columns=self.fixef_names)

    @property
    def vcov_conditional(self) -> pd.DataFrame:
        """``(X^T V^-1 X)^-1`` at the estimated variance parameters."""
        V = np.asarray(self._out.solution.vcov_beta)
        return pd.DataFrame(V, index=self.fixef_names, columns=self.fixef_names)

    def marginal_satterthwaite_parts(self):
        """lmerTest's ingredients in the marginal parametrization: ``A = 2 H^-1`` (parameters at a bound
        held), ``J = d Phi / d phi``, ``V = Phi``."""
        from ..inference.ddf import SatterthwaiteParts

        A = np.nan_to_num(np.asarray(self._out.phi_cov, float))
        return SatterthwaiteParts(A, np.asarray(self._out.estimates.vcov_jacobian),
                                  np.asarray(self._out.solution.vcov_beta))

    def marginal_kenward_roger_parts(self):
        """pbkrtest's ingredients at the REML estimate (``core/marginal/kenward_roger.py``; an ML fit is refitted by REML)."""
        from ..core.marginal.fit import blas_threads
        from ..core.marginal.kenward_roger import kenward_roger
        from ..inference.ddf import KenwardRogerParts

        base = self if self.reml else self.refit_reml()
        design = base.design
        y = np.asarray(design.y, float) - np.asarray(design.offset, float)
        rows = np.flatnonzero((np.asarray(design.weights) > 0) & np.isfinite(y))
        with blas_threads(len(rows)):
            return KenwardRogerParts(*kenward_roger(base._marginal, base._phi, y[rows], rows))

    def _unsupported(self, what: str):
        from ..errors import JaxlmmError

        raise JaxlmmError(f"{what} of models with structured covariances or dispformula is not supported yet; "
                          "use confint(method='wald') and covariance_parameters (Wald SEs)")

    def profile(self, level: float = 0.95):
        """Not yet for this model class (an error that says what to use instead)."""
        self._unsupported("profile()")

    def influence(self, method: str = "newton", steps: int = 2):
        """Not yet for this model class: ``LmerResult.influence`` differentiates lme4's profiled criterion."""
        self._unsupported("influence()")

    def confint(self, method: str = "profile", level: float = 0.95, **kwargs) -> pd.DataFrame:
        """Wald intervals of the fixed effects (``method="wald"``) or percentile intervals of the parametric
        bootstrap (``method="boot"``); profiles not yet."""
        if method == "boot":
            return super().confint(method, level, **kwargs)
        if method != "wald":
            self._unsupported(f"confint(method={method!r})")
        from scipy import special

        z = special.ndtri(0.5 + level / 2.0)
        lo, hi = f"{100 * (1 - level) / 2:.1f} %", f"{100 * (1 + level) / 2:.1f} %"
        return pd.DataFrame({lo: self.fixef - z * self.se, hi: self.fixef + z * self.se})

    @property
    def _default_ddf(self) -> str:
        return "asymptotic"

    def _heritability(self, k: int) -> tuple[float, float]:
        return marginal_heritability(self, k)

    def _refit(self, reml: bool):
        return self.model.fit(reml=reml, start=self._phi, warn=False)
