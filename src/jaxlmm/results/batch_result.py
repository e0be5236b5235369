"""Results of a batch of traits: a struct of arrays with cheap per-trait views.

Every accessor returns a table with one row per trait (``fixef``, ``se``,
``theta``...) or a tidy frame with a ``trait`` column (``varcorr``).  Failures
are statuses in ``diagnostics``, never exceptions.  ``trait(i)`` refits that
one trait from its estimate (one Newton iteration) and returns the full
single-fit ``LmerResult`` with BLUPs, predictions and summary.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from .._x64 import float64_methods, float64_scope
from ..core.status import STATUS_MESSAGES, STATUS_NAMES
from ..model.design import Design
from ..model.naming import theta_names as _theta_names
from .lmer_result import SINGULAR_TOL
from .trait_tables import TraitTables


@float64_methods
class BatchResult(TraitTables):
    def __init__(self, design: Design, traits: list[str], output: dict, pre_status: np.ndarray, *, reml: bool,
                 dtype, data_name: str | None, max_iter: int, chunk_size: int, k: int, p: int,
                 path=None, h2_term: int | None = None, model=None):
        self.model = model          # the ``fitting.model.Model`` fitted to every trait
        self.design = design
        self.traits = list(traits)
        self._out = output
        self.reml = reml
        self.dtype = dtype
        self.data_name = data_name
        self.max_iter = max_iter
        self.chunk_size = chunk_size
        self.path = np.asarray(path if path is not None else np.where(pre_status == 0, "general", "none"),
                               dtype=object)
        self.h2_term = h2_term
        optim_status = np.asarray(output["status"], dtype=np.int32)
        self.status_code = np.where(pre_status != 0, pre_status, optim_status)
        self._valid = pre_status == 0

    @cached_property
    def theta_names(self) -> list[str]:
        return [n for t in self.design.terms for n in _theta_names(t.group, t.columns, t.cov)]

    @property
    def fixef_names(self) -> list[str]:
        return list(self.design.fixef_names)

    # ------------------------------------------------------------ per-trait arrays
    @cached_property
    def theta(self) -> pd.DataFrame:
        """theta per trait (traits x theta_names)."""
        return pd.DataFrame(self._masked(self._out["theta"]), index=pd.Index(self.traits, name="trait"),
                            columns=self.theta_names)

    @property
    def sigma(self) -> pd.Series:
        return self._series(self._masked(self._out["sigma"]), "sigma")

    @property
    def criterion(self) -> pd.Series:
        """REML criterion (or ML deviance) per trait."""
        return self._series(self._masked(self._out["criterion"]), "criterion")

    @property
    def loglik(self) -> pd.Series:
        return -0.5 * self.criterion.rename("loglik")

    @cached_property
    def fixef(self) -> pd.DataFrame:
        return pd.DataFrame(self._masked(self._out["beta"]), index=pd.Index(self.traits, name="trait"),
                            columns=self.fixef_names)

    @cached_property
    def se(self) -> pd.DataFrame:
        v = np.asarray(self._out["vcov_beta"])
        se = np.sqrt(np.maximum(np.einsum("tii->ti", v), 0.0))
        return pd.DataFrame(self._masked(se), index=pd.Index(self.traits, name="trait"), columns=self.fixef_names)

    def vcov(self, trait) -> pd.DataFrame:
        i = self._index(trait)
        return pd.DataFrame(np.asarray(self._out["vcov_beta"])[i], index=self.fixef_names,
                            columns=self.fixef_names)

    @property
    def nobs(self) -> pd.Series:
        Y = np.asarray(self.design.y).reshape(self.design.nobs, -1)
        observed = (~np.isnan(Y)) & (self.design.weights[:, None] > 0)
        return self._series(observed.sum(axis=0), "nobs")

    @property
    def n_iter(self) -> pd.Series:
        return self._series(np.where(self._valid, self._out["n_iter"], 0), "n_iter")

    @property
    def grad_norm(self) -> pd.Series:
        """Largest |gradient| component of the criterion at the estimate, projected on the bounds
        (a zero variance whose gradient points outward counts as 0)."""
        g = np.asarray(self._out["grad"], dtype=float)
        if not g.size:
            return self._series(self._masked(np.zeros(len(g))), "grad_norm")
        th = np.asarray(self._out["theta"])
        lower = self.design.structure.lower_bounds()
        at_bound = np.isfinite(lower)[None, :] & (th <= lower[None, :] + 1e-12) & (g > 0)
        return self._series(self._masked(np.max(np.abs(np.where(at_bound, 0.0, g)), axis=1)), "grad_norm")

    @property
    def optimizer_trace(self) -> pd.DataFrame:
        """Each trait's optimizer path (a batch fitted with ``trace=True``; traits of the general path):
        ``trait``, ``iteration``, ``criterion``, ``grad_norm``, ``step`` and theta."""
        from .optimizer_trace import NOT_TRACED, batch_trace_frame

        traces = self._out.get("trace")
        if traces is None:
            raise ValueError(NOT_TRACED)
        name = "newton" if self.model is None or self.model.optimizer is None else self.model.optimizer_name
        return batch_trace_frame(traces, self.traits, self.theta_names, name)

    @property
    def h2(self) -> pd.Series:
        """Heritability per trait: the first relationship-matrix term's variance over the total
        (``sigma_g^2 / (sigma_g^2 + sigma_e^2)`` with one term; NaN without such a term or with
        vector-valued terms)."""
        return self._series(self._masked(self._out["h2"]), "h2")

    @property
    def h2_se(self) -> pd.Series:
        """Delta-method SE of ``h2`` from the exact Hessian of the criterion (NaN at a boundary)."""
        return self._series(self._masked(self._out["h2_se"]), "h2_se")

    @property
    def converged(self) -> pd.Series:
        return self._series(self.status_code == 0, "converged")

    @property
    def is_singular(self) -> pd.Series:
        th = np.asarray(self._out["theta"])
        diag = self.design.structure.lower_bounds() == 0
        singular = np.any(th[:, diag] < SINGULAR_TOL, axis=1) & self._valid
        return self._series(singular, "singular")

    @property
    def status(self) -> pd.Series:
        return self._series([STATUS_NAMES.get(int(c), f"status {int(c)}") for c in self.status_code], "status")

    @cached_property
    def lambdas(self) -> list[np.ndarray]:
        """Per term an array (T, S, S) of relative covariance factors."""
        return self.design.structure.lambdas_stacked(self._out["theta"])

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """``as.data.frame(VarCorr(m))`` of every trait, with a ``trait`` column."""
        from ..model.naming import unique_group_names

        sigma = np.asarray(self._out["sigma"])
        frames = []
        groups = unique_group_names([t.group for t in self.design.terms])
        T = self.n_traits
        for t, grp, lam in zip(self.design.terms, groups, self.lambdas):
            cov = sigma[:, None, None] ** 2 * np.einsum("tij,tkj->tik", lam, lam)
            sd = np.sqrt(np.maximum(np.einsum("tii->ti", cov), 0.0))
            for i, col in enumerate(t.columns):
                frames.append(pd.DataFrame({"trait": self.traits, "grp": grp, "var1": col, "var2": "",
                                            "vcov": cov[:, i, i], "sdcor": sd[:, i]}))
            for j in range(len(t.columns)):
                for i in range(j + 1, len(t.columns)):
                    with np.errstate(invalid="ignore", divide="ignore"):
                        cor = cov[:, i, j] / (sd[:, i] * sd[:, j])
                    frames.append(pd.DataFrame({"trait": self.traits, "grp": grp, "var1": t.columns[j],
                                                "var2": t.columns[i], "vcov": cov[:, i, j], "sdcor": cor}))
        frames.append(pd.DataFrame({"trait": self.traits, "grp": "Residual", "var1": "", "var2": "",
                                    "vcov": sigma ** 2, "sdcor": sigma}))
        out = pd.concat(frames, ignore_index=True)
        out.loc[np.tile(~self._valid, len(frames)), ["vcov", "sdcor"]] = np.nan
        order = np.argsort(np.tile(np.arange(T), len(frames)), kind="stable")
        return out.iloc[order].reset_index(drop=True)

    # ------------------------------------------------------------ diagnostics
    @cached_property
    def diagnostics(self) -> pd.DataFrame:
        """One row per trait: status, singular, gradient norm, iterations, nobs, criterion, the path
        that fitted it (``general``, ``spectral`` or ``none``) and a message."""
        messages = []
        for code, sing in zip(self.status_code, self.is_singular.to_numpy()):
            msg = STATUS_MESSAGES.get(int(code), "").format(max_iter=self.max_iter)
            if sing and code == 0:
                msg = "boundary (singular) fit"
            messages.append(msg)
        return pd.DataFrame({
            "status": self.status.to_numpy(), "converged": self.converged.to_numpy(),
            "singular": self.is_singular.to_numpy(), "grad_norm": self.grad_norm.to_numpy(),
            "n_iter": self.n_iter.to_numpy(), "nobs": self.nobs.to_numpy(), "criterion": self.criterion.to_numpy(),
            "path": self.path, "message": messages}, index=pd.Index(self.traits, name="trait"))

    def summary(self) -> str:
        """One line of counts."""
        d = self.diagnostics
        failed = d.loc[~d["converged"], "status"].value_counts()
        parts = [f"{self.n_traits} traits", f"{int(d['converged'].sum())} converged",
                 f"{int(d['singular'].sum())} singular"]
        if len(failed):
            parts.append("failed: " + ", ".join(f"{n} {s}" for s, n in failed.items()))
        else:
            parts.append("0 failed")
        return "; ".join(parts)

    def __repr__(self) -> str:
        method = "REML" if self.reml else "ML"
        return f"<BatchResult {method}: {self.formula} | {self.summary()}>"

    @float64_scope
    def _repr_html_(self) -> str:
        """Jupyter's display: the counts, traits per status and one row per trait as HTML tables."""
        from .html import batch_html

        return batch_html(self)

    # ------------------------------------------------------------ export
    def to_frame(self) -> pd.DataFrame:
        """One wide row per trait: diagnostics, sigma, theta, fixef and their SEs."""
        parts = [self.diagnostics, self.sigma.to_frame(),
                 self.theta.add_prefix("theta_"), self.fixef.add_prefix("fixef_"), self.se.add_prefix("se_")]
        if self.h2_term is not None:
            parts.append(pd.concat([self.h2, self.h2_se], axis=1))
        return pd.concat(parts, axis=1)

    # ------------------------------------------------------------ one trait
    def trait(self, trait):
        """The full single-trait result (``LmerResult``) of one trait, by name or index.

        The trait is refitted on its own rows, starting from its batch
        estimate, so it converges at once and gives BLUPs, predictions and
        the summary of a single fit.
        """
        i = self._index(trait)
        if not self._valid[i]:
            raise ValueError(f"trait {self.traits[i]!r} was not fitted: {self.status.iloc[i]}")
        y = np.asarray(self.design.y).reshape(self.design.nobs, -1)[:, i]
        keep = ~np.isnan(y)
        sub = self.design.subset_rows(keep, y[keep], response_name=self.traits[i])
        return self.model.for_design(sub).fit(start=np.asarray(self._out["theta"])[i])
