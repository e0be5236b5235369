"""Many responses of a model with structured covariances or ``dispformula`` (``core/marginal/criterion.py``).

Every trait first passes the general batch's checks on its own rows
(``many.engine.trait_checks``: too few observations, a constant response, fixed
effects not estimable, and lme4's level checks on the terms a single fit checks);
the traits that pass are lanes of one host Newton loop
(``core.marginal_fit.fit_marginal``), with their own missing values (their rows);
then per trait the BLUEs, their glmmTMB-style covariance ``Phi + J A J^T`` and the
residual SDs, from the block-by-block factorization (``core/marginal/blocks.py``).
Failures are statuses, never exceptions.

``StructuredBatchResult`` answers ``BatchResult``'s questions with the same meaning
(``fixef``, ``se``, ``theta``, ``sigma``, ``criterion``, ``varcorr``, ``diagnostics``,
``to_frame``, ``trait(i)``, ...), so code written for one works for the other; ``theta``
holds each term's own parameters (as ``StructuredResult.theta``), ``sigma`` the residual
SD (with a ``dispformula``, the root of the mean residual variance over the trait's rows,
as ``StructuredResult.sigma``) and ``residual_sd`` the SD of each residual level.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from .._x64 import float64_methods
from ..core.status import CONVERGED, STATUS_MESSAGES, STATUS_NAMES
from ..results.trait_tables import TraitTables


def fit_structured_batch(model, names: list[str], Y: np.ndarray, start=None):
    """``StructuredBatchResult`` of the columns of ``Y`` (NaN = missing)."""
    from .engine import trait_checks
    from ..core.marginal.fit import blas_threads, fit_marginal, parameter_covariance
    from ..core.marginal.criterion import evaluate
    from ..core.optim.newton import OptimResult
    from ..model.marginal_design import check_user_covariances, response_scale, start_values
    from ..model.structured_terms import level_checked_terms

    mm, design = model.marginal, model.design
    offset = np.asarray(design.offset, float)
    observed = np.isfinite(Y) & (np.asarray(design.weights)[:, None] > 0)
    Yc = np.where(observed, Y - offset[:, None], 0.0)
    T, k = Y.shape[1], mm.n_params
    pre_status = trait_checks(design, Y, terms=level_checked_terms(design))
    fit = np.flatnonzero(pre_status == 0)
    if start is not None:
        phi0 = np.broadcast_to(start_values(model, start), (len(fit), k)).copy()
    else:
        phi0 = np.stack([check_user_covariances(mm, np.clip(mm.start(response_scale(design, Y[:, b], observed[:, b])),
                                                            mm.lower(), mm.upper())) for b in fit]
                        or [np.zeros(k)])[:len(fit)]
    optim = OptimResult(np.full((T, k), np.nan), np.full(T, np.nan), np.full((T, k), np.nan),
                        np.zeros(T, np.int64), pre_status.astype(np.int64), np.full(T, np.nan))
    if len(fit):
        res = fit_marginal(mm, Yc[:, fit], observed[:, fit], model.reml, phi0)
        for field, values in zip(optim, res):
            field[fit] = np.asarray(values)
    p = design.X.shape[1]
    beta, vcov = np.full((T, p), np.nan), np.full((T, p, p), np.nan)
    with blas_threads(Y.shape[0]):
        for b in fit:
            rows = np.flatnonzero(observed[:, b])
            e = evaluate(mm, optim.theta[b], Yc[rows, b], rows, model.reml, extras=True)
            if not np.isfinite(e.value):
                continue
            A = np.nan_to_num(parameter_covariance(e.hess, mm.lower(), optim.theta[b]))
            beta[b], vcov[b] = e.beta, e.vcov_beta + e.beta_jacobian @ A @ e.beta_jacobian.T
    return StructuredBatchResult(model, names, optim, beta, vcov, observed.sum(axis=0), pre_status == 0)


@float64_methods
class StructuredBatchResult(TraitTables):
    """Per-trait estimates of a structured model (tables with one row per trait; module docstring)."""

    def __init__(self, model, traits, optim, beta, vcov, n_obs, fitted=None):
        self.model, self.design = model, model.design
        self.traits = list(traits)
        self._optim, self._beta, self._vcov, self.n_obs = optim, beta, vcov, np.asarray(n_obs)
        self._valid = np.ones(len(self.traits), bool) if fitted is None else np.asarray(fitted, bool)
        self.reml = model.reml
        self.data_name = model.data_name
        from ..core.optim.newton import NewtonOptions

        self.max_iter = NewtonOptions().max_iter       # fit_marginal's default, as the batch runs it
        self.path = np.where(self._valid, "marginal", "none").astype(object)

    @property
    def _phi(self) -> np.ndarray:
        return np.asarray(self._optim.theta, float)

    @cached_property
    def theta_names(self) -> list[str]:
        from ..model.naming import unique_group_names

        groups = unique_group_names([t.group for t in self.design.terms])
        return [f"{g}.{n}" for g, t in zip(groups, self.model.marginal.terms) for n in t.cov.names]

    @property
    def fixef_names(self) -> list[str]:
        return list(self.design.fixef_names)

    # ------------------------------------------------------------ per-trait arrays
    @property
    def theta(self) -> pd.DataFrame:
        """The terms' own parameters per trait (as ``StructuredResult.theta``)."""
        k = self.model.marginal.offsets[-1]
        return self._frame(self._phi[:, :k], self.theta_names)

    @cached_property
    def _level_sd(self) -> np.ndarray:
        """(T, levels) residual SDs."""
        mm = self.model.marginal
        return np.atleast_2d(mm.residual.level_sd(self._phi[:, mm.offsets[-1]:]))

    @property
    def residual_sd(self) -> pd.DataFrame:
        """The residual SD of each ``dispformula`` level per trait."""
        return self._frame(self._level_sd, list(self.design.resid_levels))

    @property
    def sigma(self) -> pd.Series:
        """The residual SD per trait (as ``BatchResult.sigma``); with a ``dispformula`` the root of the mean
        residual variance over the trait's observed rows (``StructuredResult.sigma``)."""
        sd = self._level_sd
        if sd.shape[1] == 1:
            return self._series(sd[:, 0], "sigma")
        codes = np.asarray(self.design.resid_codes)
        Y = np.asarray(self.design.y, float).reshape(self.design.nobs, -1)
        observed = np.isfinite(Y) & (np.asarray(self.design.weights)[:, None] > 0)
        var = sd[:, codes] ** 2                                             # (T, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.sum(np.where(observed.T, var, 0.0), axis=1) / observed.sum(axis=0)
        return self._series(np.sqrt(mean), "sigma")

    @property
    def dispersion(self) -> pd.DataFrame:
        """The residual parameters per trait (as ``StructuredResult.dispersion``)."""
        mm = self.model.marginal
        return self._frame(self._phi[:, mm.offsets[-1]:], list(mm.residual.names))

    @property
    def fixef(self) -> pd.DataFrame:
        return self._frame(self._beta, self.fixef_names)

    @property
    def se(self) -> pd.DataFrame:
        return self._frame(np.sqrt(np.diagonal(self._vcov, axis1=1, axis2=2)), self.fixef_names)

    def vcov(self, trait) -> pd.DataFrame:
        """The fixed effects' covariance of one trait (glmmTMB's ``Phi + J A J^T``)."""
        return pd.DataFrame(self._vcov[self._index(trait)], index=self.fixef_names, columns=self.fixef_names)

    @property
    def criterion(self) -> pd.Series:
        """REML criterion (or ML deviance) per trait."""
        return self._series(np.asarray(self._optim.fun, float), "criterion")

    @property
    def loglik(self) -> pd.Series:
        return -0.5 * self.criterion.rename("loglik")

    @property
    def nobs(self) -> pd.Series:
        return self._series(self.n_obs, "nobs")

    @property
    def n_iter(self) -> pd.Series:
        return self._series(np.asarray(self._optim.n_iter), "n_iter")

    @property
    def grad_norm(self) -> pd.Series:
        """Largest |gradient| component at the estimate, projected on the bounds."""
        mm = self.model.marginal
        g, x = np.asarray(self._optim.grad, float), self._phi
        lo, up = mm.lower()[None, :], mm.upper()[None, :]
        at_bound = (np.isfinite(lo) & (x <= lo + 1e-12) & (g > 0)) | (np.isfinite(up) & (x >= up - 1e-12) & (g < 0))
        with np.errstate(invalid="ignore"):
            out = np.max(np.abs(np.where(at_bound, 0.0, g)), axis=1) if g.shape[1] else np.zeros(len(g))
        return self._series(out, "grad_norm")

    @property
    def status_code(self) -> np.ndarray:
        return np.asarray(self._optim.status, int)

    @property
    def status(self) -> pd.Series:
        return self._series([STATUS_NAMES.get(int(c), f"status {int(c)}") for c in self.status_code], "status")

    @property
    def converged(self) -> pd.Series:
        return self._series(self.status_code == CONVERGED, "converged")

    @property
    def is_singular(self) -> pd.Series:
        """A term's standard deviation at (numerically) 0, as ``StructuredResult.is_singular``."""
        from ..results.lmer_result import SINGULAR_TOL

        mm = self.model.marginal
        scales = np.concatenate([off + np.asarray(t.cov.scales, int) for t, off in zip(mm.terms, mm.offsets)]
                                or [np.zeros(0, int)])
        sigma = np.maximum(np.nan_to_num(self.sigma.to_numpy()), 1e-300)
        singular = np.any(np.abs(self._phi[:, scales]) < SINGULAR_TOL * sigma[:, None], axis=1) & self._valid
        return self._series(singular, "singular")

    @cached_property
    def term_covariances(self) -> list[np.ndarray]:
        """Per term each trait's implied covariance of one level's effects, (T, S, S) (NaN: not fitted)."""
        mm = self.model.marginal
        out = []
        for t, off in zip(mm.terms, mm.offsets):
            S = t.z.shape[1]
            cov = np.full((self.n_traits, S, S), np.nan)
            if self._valid.any():
                cov[self._valid] = t.cov.derivatives_many(self._phi[self._valid, off:off + t.cov.n_params])[0]
            out.append(cov)
        return out

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """``StructuredResult.varcorr`` of every trait, with a ``trait`` column (as ``BatchResult.varcorr``)."""
        from ..core.params.covariance import sd_and_cor
        from ..model.naming import unique_group_names

        frames = []
        groups = unique_group_names([t.group for t in self.design.terms])
        for t, grp, cov in zip(self.design.terms, groups, self.term_covariances):
            sd = np.sqrt(np.maximum(np.einsum("tii->ti", cov), 0.0))
            for i, col in enumerate(t.columns):
                frames.append(pd.DataFrame({"trait": self.traits, "grp": grp, "var1": col, "var2": "",
                                            "vcov": cov[:, i, i], "sdcor": sd[:, i]}))
            cor = np.stack([sd_and_cor(c)[1] for c in cov]) if len(cov) else cov
            for j in range(len(t.columns)):
                for i in range(j + 1, len(t.columns)):
                    frames.append(pd.DataFrame({"trait": self.traits, "grp": grp, "var1": t.columns[j],
                                                "var2": t.columns[i], "vcov": cov[:, i, j], "sdcor": cor[:, i, j]}))
        sd = self._level_sd
        levels = [""] if sd.shape[1] == 1 else [str(v) for v in self.design.resid_levels]
        for r, level in enumerate(levels):
            frames.append(pd.DataFrame({"trait": self.traits, "grp": "Residual", "var1": level, "var2": "",
                                        "vcov": sd[:, r] ** 2, "sdcor": sd[:, r]}))
        out = pd.concat(frames, ignore_index=True)
        order = np.argsort(np.tile(np.arange(self.n_traits), len(frames)), kind="stable")
        return out.iloc[order].reset_index(drop=True)

    # ------------------------------------------------------------ diagnostics
    @cached_property
    def diagnostics(self) -> pd.DataFrame:
        """One row per trait, ``BatchResult.diagnostics``' columns: status, converged, singular, grad_norm,
        n_iter, nobs, criterion, path (``marginal`` or ``none``), message; ``n_obs`` repeats ``nobs``."""
        messages = []
        for code, sing in zip(self.status_code, self.is_singular.to_numpy()):
            msg = STATUS_MESSAGES.get(int(code), "").format(max_iter=self.max_iter)
            messages.append("boundary (singular) fit" if sing and code == CONVERGED else msg)
        return pd.DataFrame({
            "status": self.status.to_numpy(), "converged": self.converged.to_numpy(),
            "singular": self.is_singular.to_numpy(), "grad_norm": self.grad_norm.to_numpy(),
            "n_iter": self.n_iter.to_numpy(), "nobs": self.n_obs, "criterion": self.criterion.to_numpy(),
            "path": self.path, "message": messages, "n_obs": self.n_obs},
            index=pd.Index(self.traits, name="trait"))

    def summary(self) -> str:
        """One line of counts (``BatchResult.summary``)."""
        d = self.diagnostics
        failed = d.loc[~d["converged"], "status"].value_counts()
        parts = [f"{self.n_traits} traits", f"{int(d['converged'].sum())} converged",
                 f"{int(d['singular'].sum())} singular"]
        parts.append("failed: " + ", ".join(f"{n} {s}" for s, n in failed.items()) if len(failed) else "0 failed")
        return "; ".join(parts)

    def __repr__(self) -> str:
        return f"<StructuredBatchResult {'REML' if self.reml else 'ML'}: {self.formula} | {self.summary()}>"

    # ------------------------------------------------------------ export
    def to_frame(self) -> pd.DataFrame:
        """One wide row per trait: diagnostics, sigma, theta, fixef and their SEs (``BatchResult.to_frame``),
        and with a ``dispformula`` each level's residual SD (``residual_sd_<level>``)."""
        parts = [self.diagnostics.drop(columns="n_obs"), self.sigma.to_frame(), self.theta.add_prefix("theta_"),
                 self.fixef.add_prefix("fixef_"), self.se.add_prefix("se_")]
        if self._level_sd.shape[1] > 1:
            parts.append(self.residual_sd.add_prefix("residual_sd_"))
        return pd.concat(parts, axis=1)

    # ------------------------------------------------------------ one trait
    def trait(self, i):
        """The full ``StructuredResult`` of trait ``i`` (index or name), refitted from its estimate."""
        b = self._index(i)
        if not self._valid[b]:
            raise ValueError(f"trait {self.traits[b]!r} was not fitted: {self.status.iloc[b]}")
        y = np.asarray(self.design.y, float)
        y = y[:, b] if y.ndim == 2 else y
        design = self.design.with_response(y)
        return self.model.for_design(design).fit(start=self._phi[b])
