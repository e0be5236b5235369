"""Many responses of a model with structured covariances or ``dispformula`` (``core/marginal.py``).

Every trait is a lane of one host Newton loop (``core.marginal_fit.fit_marginal``),
with its own missing values (its rows); then per trait the BLUEs, their
glmmTMB-style covariance ``Phi + J A J^T`` and the residual SDs, from the
block-by-block factorization (``core/marginal_blocks.py``).  Failures are
statuses, never exceptions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .core.status import CONVERGED, STATUS_NAMES


def fit_structured_batch(model, names: list[str], Y: np.ndarray, start=None):
    """``StructuredBatchResult`` of the columns of ``Y`` (NaN = missing)."""
    from .core.marginal_fit import blas_threads, fit_marginal, parameter_covariance
    from .core.marginal import evaluate
    from .marginal_entry import check_user_covariances, start_values
    from .model.marginal_design import response_scale

    mm, design = model.marginal, model.design
    offset = np.asarray(design.offset, float)
    observed = np.isfinite(Y) & (np.asarray(design.weights)[:, None] > 0)
    Yc = np.where(observed, Y - offset[:, None], 0.0)
    T = Y.shape[1]
    if start is not None:
        phi0 = np.broadcast_to(start_values(model, start), (T, mm.n_params)).copy()
    else:
        phi0 = np.stack([check_user_covariances(mm, np.clip(mm.start(response_scale(design, Y[:, b], observed[:, b])),
                                                            mm.lower(), mm.upper())) for b in range(T)])
    res = fit_marginal(mm, Yc, observed, model.reml, phi0)
    p = design.X.shape[1]
    beta, vcov = np.full((T, p), np.nan), np.full((T, p, p), np.nan)
    with blas_threads(Y.shape[0]):
        for b in range(T):
            rows = np.flatnonzero(observed[:, b])
            e = evaluate(mm, res.theta[b], Yc[rows, b], rows, model.reml, extras=True)
            if not np.isfinite(e.value):
                continue
            A = np.nan_to_num(parameter_covariance(e.hess, mm.lower(), res.theta[b]))
            beta[b], vcov[b] = e.beta, e.vcov_beta + e.beta_jacobian @ A @ e.beta_jacobian.T
    return StructuredBatchResult(model, names, res, beta, vcov, observed.sum(axis=0))


class StructuredBatchResult:
    """Per-trait estimates of a structured model (tables with one row per trait)."""

    def __init__(self, model, traits, optim, beta, vcov, n_obs):
        self.model, self.design = model, model.design
        self.traits = list(traits)
        self._optim, self._beta, self._vcov, self.n_obs = optim, beta, vcov, n_obs

    def _frame(self, values, columns):
        return pd.DataFrame(values, index=pd.Index(self.traits, name="trait"), columns=columns)

    @property
    def _names(self):
        from .model.naming import unique_group_names

        groups = unique_group_names([t.group for t in self.design.terms])
        return [f"{g}.{n}" for g, t in zip(groups, self.model.marginal.terms) for n in t.cov.names]

    @property
    def theta(self) -> pd.DataFrame:
        """The terms' own parameters per trait (as ``StructuredResult.theta``)."""
        k = self.model.marginal.offsets[-1]
        return self._frame(np.asarray(self._optim.theta)[:, :k], self._names)

    @property
    def residual_sd(self) -> pd.DataFrame:
        """The residual SD of each ``dispformula`` level per trait."""
        mm = self.model.marginal
        sd = mm.residual.level_sd(np.asarray(self._optim.theta)[:, mm.offsets[-1]:])
        return self._frame(sd, list(self.design.resid_levels))

    @property
    def dispersion(self) -> pd.DataFrame:
        """The residual parameters per trait (as ``StructuredResult.dispersion``)."""
        mm = self.model.marginal
        return self._frame(np.asarray(self._optim.theta)[:, mm.offsets[-1]:], list(mm.residual.names))

    @property
    def fixef(self) -> pd.DataFrame:
        return self._frame(self._beta, list(self.design.fixef_names))

    @property
    def se(self) -> pd.DataFrame:
        return self._frame(np.sqrt(np.diagonal(self._vcov, axis1=1, axis2=2)), list(self.design.fixef_names))

    @property
    def criterion(self) -> pd.Series:
        return pd.Series(np.asarray(self._optim.fun), index=pd.Index(self.traits, name="trait"), name="criterion")

    @property
    def diagnostics(self) -> pd.DataFrame:
        status = np.asarray(self._optim.status)
        return pd.DataFrame({"status": [STATUS_NAMES.get(int(s), str(s)) for s in status],
                             "converged": status == CONVERGED, "n_iter": np.asarray(self._optim.n_iter),
                             "n_obs": self.n_obs}, index=pd.Index(self.traits, name="trait"))

    def trait(self, i):
        """The full ``StructuredResult`` of trait ``i`` (index or name), refitted from its estimate."""
        b = self.traits.index(i) if isinstance(i, str) else int(i)
        y = np.asarray(self.design.y, float)
        y = y[:, b] if y.ndim == 2 else y
        design = self.design.with_response(y)
        return self.model.for_design(design).fit(start=np.asarray(self._optim.theta)[b])
