"""What every fitted mixed model reports the same way: the random-effects tables, lme4's ``ranef`` and
``coef``, from each term's conditional modes ``_b(k)`` (levels x columns) and conditional covariances
``_cond_var(k)`` (levels x columns x columns) -- ``LmerResult``'s BLUPs and ``GlmerResult``'s conditional
modes -- and the information criteria and messages."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd


class InformationCriteria:
    """``AIC`` and ``BIC`` from ``criterion`` (-2 log L, or the REML criterion), ``df_model`` and ``nobs``; the
    messages every fit reports (the design's, the optimizer's when it did not converge, a singular fit's);
    the optimizer's outcome (``status``, ``status_name``, ``converged``, ``optimizer_message``) from the
    status code ``_status_code`` of the result's output, and ``deviance`` / ``loglik`` from ``criterion``."""

    @property
    def status(self):
        """The optimizer's outcome: a ``core.status.Status``, an int (``== 0``) whose ``str`` is its name."""
        from ..core.status import as_status

        return as_status(int(np.asarray(self._status_code).reshape(-1)[0]))

    @property
    def status_name(self) -> str:
        """The name of ``status``: ``"converged"``, ``"max_iter"``, ``"line_search_failed"``, ..."""
        from ..core.status import status_name

        return status_name(int(self.status))

    @property
    def converged(self) -> bool:
        from ..core.status import CONVERGED

        return int(self.status) == CONVERGED

    @property
    def optimizer_message(self) -> str:
        from ..core.status import OPTIMIZER_MESSAGES

        return OPTIMIZER_MESSAGES.get(int(self.status), self.status_name)

    @property
    def deviance(self) -> float:
        return self.criterion

    @property
    def loglik(self) -> float:
        return -0.5 * self.criterion

    def _fit_messages(self) -> list[str]:
        out = list(self.design.messages)
        if not self.converged:
            out.append(f"optimizer: {self.optimizer_message}")
        if self.is_singular:
            out.append("boundary (singular) fit: see help('isSingular')")
        return out

    @property
    def aic(self) -> float:
        return self.criterion + 2.0 * self.df_model

    @property
    def bic(self) -> float:
        return self.criterion + np.log(self.nobs) * self.df_model


class RandomEffectsTables:
    """``ranef``, ``ranef_dict()`` and ``coef`` of a result with ``_b(k)`` and ``_cond_var(k)`` (module
    docstring): the tables are the same for every model class."""

    @cached_property
    def ranef(self) -> pd.DataFrame:
        """``as.data.frame(ranef(m, condVar = TRUE))``: group, term, level, condval, condsd."""
        return ranef_frame(self)

    def ranef_dict(self) -> dict[str, pd.DataFrame]:
        """``ranef(m)``: per grouping factor a levels x columns frame of the conditional modes."""
        return ranef_by_group(self)

    @cached_property
    def coef(self) -> dict[str, pd.DataFrame]:
        """``coef(m)``: per grouping factor, the fixed effects plus that factor's conditional modes."""
        return coef_by_group(self)


def ranef_frame(fit) -> pd.DataFrame:
    """``as.data.frame(ranef(m, condVar = TRUE))``: group, term, level, condval, condsd."""
    frames = []
    for g in dict.fromkeys(t.group for t in fit.design.terms):
        for k, t in enumerate(fit.design.terms):
            if t.group != g:
                continue
            b, v = fit._b(k), fit._cond_var(k)
            for s, col in enumerate(t.columns):
                frames.append(pd.DataFrame({"group": g, "term": col, "level": t.factor.levels,
                                            "condval": b[:, s], "condsd": np.sqrt(np.maximum(v[:, s, s], 0.0))}))
    return pd.concat(frames, ignore_index=True)


def ranef_by_group(fit) -> dict[str, pd.DataFrame]:
    """``ranef(m)``: per grouping factor a levels x columns frame of the conditional modes."""
    out = {}
    for k, t in enumerate(fit.design.terms):
        b = pd.DataFrame(fit._b(k), index=t.factor.levels, columns=list(t.columns))
        out[t.group] = pd.concat([out[t.group], b], axis=1) if t.group in out else b
    return out


def coef_by_group(fit) -> dict[str, pd.DataFrame]:
    """``coef(m)``: per grouping factor, the fixed effects plus that factor's conditional modes."""
    out = {}
    fixef = fit.fixef
    for g, re in ranef_by_group(fit).items():    # each frame at once (column by column warns past ~100)
        columns = {name: fixef[name] + re[name].to_numpy() if name in re.columns
                   else np.full(len(re), fixef[name]) for name in fit.fixef_names}
        columns.update({name: re[name].to_numpy() for name in re.columns if name not in columns})
        out[g] = pd.DataFrame(columns, index=re.index)
    return out
