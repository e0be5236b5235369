"""Simulation from a fitted model and the parametric bootstrap (lme4's ``simulate`` / ``bootMer``).

A simulated response is ``y* = offset + X beta-hat + Z b* + e*`` with
``e* ~ N(0, sigma-hat^2 / w)`` and

- ``use_u=False``: new random effects ``b* = Lambda-hat u*``, ``u* ~ N(0, sigma-hat^2 I)``
  (lme4's default: the marginal distribution of y);
- ``use_u=True``: the estimated random effects ``b* = b-hat`` (the conditional
  distribution given the BLUPs).

``bootstrap`` refits every replicate and returns a table of replicate estimates: lme4's models
by the host-driven Newton loop over chunks of replicates (``bootstrap_host.py``: small compiled
programs, no loop in them), a model with structured covariances as lanes of one host Newton
loop on its marginal criterion (``bootstrap_lanes.py``), and ``func=`` (which receives a
``BatchResult``) with the batch path (one vmapped, jitted call for all replicates).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._x64 import float64_scope
from ..errors import count_argument
from .replicates import replicate_statistics


@float64_scope
def simulate(fit, nsim: int = 1, seed: int | None = None, use_u: bool = False) -> np.ndarray:
    """``nsim`` simulated responses, an (n, nsim) array."""
    nsim = count_argument(nsim, "nsim", 1)
    rng = np.random.default_rng(seed)
    design = fit.design
    n = design.nobs
    mean = design.offset + design.X @ fit.fixef.to_numpy()
    sims = np.repeat(mean[:, None], nsim, axis=1)
    for k, t in enumerate(design.terms):
        codes, z = t.factor.codes, t.z
        if use_u:
            b = fit._b(k)[codes]                                            # (n, S)
            sims += np.sum(z * b, axis=1)[:, None]
        else:
            root = _square_root(fit.term_covariances[k])
            nlev, S = len(t.factor.levels), len(t.columns)
            b = rng.standard_normal((nsim, nlev, S)) @ root.T                # (nsim, nlev, S)
            if t.relmat is not None:                                         # Cov(b) = K kron Sigma
                b = np.einsum("ml,jls->jms", np.asarray(t.relmat.factor, float), b)
            sims += np.einsum("ns,jns->nj", z, b[:, codes, :])
    noise = rng.standard_normal((n, nsim)) * (_residual_sd(fit) / np.sqrt(design.weights))[:, None]
    return sims + noise


def _square_root(C: np.ndarray) -> np.ndarray:
    """``R`` with ``R R^T = C`` for a positive semi-definite ``C`` (a Cholesky factor where one exists)."""
    try:
        return np.linalg.cholesky(C)
    except np.linalg.LinAlgError:
        vals, vecs = np.linalg.eigh(C)
        return vecs * np.sqrt(np.maximum(vals, 0.0))


def _residual_sd(fit) -> np.ndarray:
    """The residual SD of every row (per ``dispformula`` level for a structured fit)."""
    codes = fit.design.resid_codes
    sd = np.asarray(fit.residual_sd, float)
    if codes is None or len(sd) == 1:
        return np.full(fit.design.nobs, float(sd[0]))
    return sd[np.asarray(codes)]


def replicate_table(batch) -> pd.DataFrame:
    """Default statistic of a bootstrap batch: fixed effects, then sd/cor of each term and sigma."""
    return replicate_statistics(batch.design, batch.fixef.reset_index(drop=True), batch.sigma.to_numpy(),
                                batch.lambdas)


@float64_scope
def bootstrap(fit, nsim: int = 500, seed: int | None = None, use_u: bool = False, func=None,
              chunk_size: int | None = None, progress: bool | None = None) -> pd.DataFrame:
    """Parametric bootstrap (``bootMer``): ``nsim`` replicates refitted in one batch.

    Returns a DataFrame with one row per replicate: by default the fixed
    effects, the sd/cor of each term and sigma (lme4's ``confint`` names);
    ``func(batch) -> DataFrame`` computes other statistics from the
    ``BatchResult`` of the replicates.  Replicates whose fit failed are
    dropped (their count is in ``.attrs["failed"]``).
    """
    if chunk_size is not None:
        count_argument(chunk_size, "chunk_size", 1)
    Y = simulate(fit, nsim, seed, use_u)
    engine = fit.model.engine
    if func is None:
        table = engine.bootstrap(fit, Y, chunk_size)     # the engine's own replicate path, if it has one
        if table is not None:
            table.attrs.update(nsim=nsim, use_u=use_u)
            return table
    elif not engine.supports_bootstrap_func:
        from ..errors import JaxlmmError

        raise JaxlmmError("bootstrap(func=...) of models with structured covariances or dispformula is not "
                          "supported yet; the default statistics are")
    model = fit.model.sibling(trace=False) if fit.model.trace else fit.model  # no paths
    batch = model.fit_many(Y, start=fit.theta, chunk_size=chunk_size, progress=progress)
    table = func(batch) if func is not None else replicate_table(batch)
    ok = batch.converged.to_numpy()
    table = table.loc[ok].reset_index(drop=True) if len(table) == len(ok) else table
    table.attrs["failed"] = int((~ok).sum())
    table.attrs["nsim"] = nsim
    table.attrs["use_u"] = use_u
    return table
