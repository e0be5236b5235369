"""Many traits of one GLMM (``glmer(..., responses=Y)``): per-trait tables of the estimates.

Every table has one row per trait; a trait that was not fitted (its ``status``) has NaN estimates.
Standard errors are from each trait's Hessian at its optimum, as a single fit's (``GlmerResult``).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from ..core.status import CONVERGED, status_name


class GlmmBatchResult:
    """Per-trait estimates of a GLMM fitted to many responses (module docstring)."""

    kind = "glmm_batch"

    def __init__(self, model, traits: list[str], output: dict):
        self.model = model
        self.design = model.design
        self.traits = list(traits)
        self._out = output

    @property
    def _names(self) -> list[str]:
        return self.model.engine.theta_names(self.model)

    @property
    def _layout(self):
        return self.model.engine.layout(self.model)

    @cached_property
    def parameters(self) -> pd.DataFrame:
        """Every parameter ``(theta, beta[, log dispersion])`` per trait."""
        return pd.DataFrame(self._out["x"], index=self.traits, columns=self._names)

    @property
    def theta(self) -> pd.DataFrame:
        return self.parameters.iloc[:, :self._layout.ntheta]

    @property
    def fixef(self) -> pd.DataFrame:
        t = self._layout.ntheta
        return self.parameters.iloc[:, t:t + self._layout.nbeta]

    @cached_property
    def se(self) -> pd.DataFrame:
        """Standard errors of the fixed effects: ``sqrt(diag(2 H^{-1}))`` over the free parameters per trait."""
        t, p = self._layout.ntheta, self._layout.nbeta
        lower = self.model.engine.lower(self.model)
        out = np.full((len(self.traits), p), np.nan)
        for j, (x, H) in enumerate(zip(self._out["x"], self._out["hessian"])):
            if not np.all(np.isfinite(H)):
                continue
            free = ~(np.isfinite(lower) & (x <= lower + 1e-12))
            try:
                cov = 2.0 * np.linalg.inv(H[np.ix_(free, free)])
            except np.linalg.LinAlgError:
                continue
            full = np.full(H.shape, np.nan)
            full[np.ix_(free, free)] = cov
            out[j] = np.sqrt(np.diag(full)[t:t + p])
        return pd.DataFrame(out, index=self.traits, columns=self.fixef.columns)

    @property
    def loglik(self) -> pd.Series:
        return pd.Series(-0.5 * self._out["fun"], index=self.traits, name="logLik")

    @property
    def status_code(self) -> np.ndarray:
        return np.asarray(self._out["status"], np.int32)

    @property
    def status(self) -> pd.Series:
        return pd.Series([status_name(int(s)) for s in self.status_code], index=self.traits, name="status")

    @property
    def converged(self) -> pd.Series:
        return pd.Series(self.status_code == CONVERGED, index=self.traits, name="converged")

    @property
    def n_iter(self) -> pd.Series:
        return pd.Series(self._out["n_iter"], index=self.traits, name="n_iter")

    @property
    def variance_components(self) -> pd.DataFrame:
        """Per trait the variance of each scalar term's random effect (theta^2), or each diagonal entry of T T'."""
        from ..core.glmm.layout import theta_lambdas

        rows = []
        for x in self._out["x"]:
            if not np.all(np.isfinite(x)):
                rows.append([np.nan] * sum(t.ncols for t in self._layout.terms))
                continue
            rows.append([v for T in theta_lambdas(self._layout, x[:self._layout.ntheta]) for v in np.diag(T @ T.T)])
        cols = [f"{t.group}.{c}" for t in self.design.terms for c in t.columns]
        return pd.DataFrame(rows, index=self.traits, columns=cols)

    def to_frame(self) -> pd.DataFrame:
        """One row per trait: status, logLik, the fixed effects and their SEs, the variance components."""
        se = self.se.add_prefix("se_")
        return pd.concat([self.status, self.loglik, self.fixef, se, self.variance_components.add_prefix("var_")],
                         axis=1)

    def __repr__(self) -> str:
        ok = int(self.converged.sum())
        return f"<GlmmBatchResult {len(self.traits)} traits, {ok} converged>"
