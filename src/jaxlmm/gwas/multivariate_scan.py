"""``jaxlmm.scan`` of a trait set: ``scan("cbind(y1, y2, y3) ~ sex + (1 | id)", data, genotypes=, relmat=)``.

GEMMA's ``-lmm 4 -n 1 2 3``: the null multivariate model is fitted by REML and ML (``lmer`` with a ``cbind``
response, complete individuals only, as GEMMA), then every marker is tested on all traits at once
(``core/multivariate/scan.py``: Wald and likelihood-ratio tests with ``Sigma_g, Sigma_e`` re-estimated per
marker, the score test at the null estimate; chi-square with d degrees of freedom).  Missing dosages are
replaced by the marker's mean; a marker without variation is "monomorphic" with NaN statistics.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..errors import DataError
from .progress import progress_bar

READ_BLOCK = 512   # markers read and rotated at once
CHUNK = 8          # markers per compiled call (larger chunks ran slower per marker: 5.6 ms at 8, 9.4 at 32, 27 at 48)
STATISTICS = ("beta", "se", "wald", "score", "ml_deviance", "status_reml", "status_ml", "n_iter")


def multivariate_scan(formula: str, data, *, genotypes, relmat, snp_chunk: int | None = None,
                      progress: bool | None = None) -> pd.DataFrame:
    """One row per marker: ``beta_<trait>``, ``se_<trait>``, ``p_wald``, ``p_lrt``, ``p_score`` (module docstring)."""
    from ..model.plink import as_genotypes, match_individuals

    genotypes = as_genotypes(genotypes)
    null_reml, null_ml, messages = _null_fits(formula, data, relmat)
    model = null_reml.model
    term = model.design.terms[0]
    rotation = model.engine.data(model)[1]
    levels = [term.factor.levels[c] for c in np.asarray(term.factor.codes)[rotation.rows]]
    rows, extra = match_individuals(genotypes, levels, term.group)
    if extra:
        messages.append(f"{extra} genotyped individual{'s' if extra > 1 else ''} without data left out")
    stats, af, n_miss = _scan_markers(null_reml, null_ml, genotypes, rows, int(snp_chunk or CHUNK), progress)
    table = _table(genotypes, null_reml.traits, stats, af, n_miss, null_ml.criterion)
    table.attrs["messages"] = messages
    table.attrs["null_reml"], table.attrs["null_ml"] = null_reml, null_ml
    return table


def _null_fits(formula: str, data, relmat):
    """The null model fitted by REML and ML on the complete individuals, and the messages so far."""
    from ..fitting.multivariate import fit_multivariate, multivariate_design
    from ..model.data_checks import _as_frame

    frame = _as_frame(data)
    design, _ = multivariate_design(formula, frame, relmat=relmat)
    term = design.terms[0]
    if term.relmat is None:
        raise DataError("scan needs relmat={'id': K}: one relationship matrix for the formula's (1 | id) term")
    if len(set(term.factor.codes)) != len(term.factor.codes):
        raise DataError(f"scan needs one row per individual of {term.group!r}")
    complete = np.isfinite(np.asarray(design.y, float)).all(axis=1)
    messages = []
    if (~complete).any():
        messages.append(f"{int((~complete).sum())} individuals with a missing trait left out (as GEMMA)")
    kept = frame.loc[design.row_index[complete]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        null_reml = fit_multivariate(formula, kept, relmat=relmat, reml=True)
        null_ml = fit_multivariate(formula, kept, relmat=relmat, reml=False)
    return null_reml, null_ml, messages


def _scan_markers(null_reml, null_ml, genotypes, rows, width: int, progress) -> tuple[dict, np.ndarray, np.ndarray]:
    """The statistics of every marker (``core.multivariate.scan.scan_program``), its allele frequency and
    missing count: markers read and rotated ``READ_BLOCK`` at a time, fitted ``width`` per call."""
    import jax
    import jax.numpy as jnp

    from ..core.multivariate.scan import scan_program
    from ..core.optim.lanes import map_padded
    from ..core.optim.newton import NewtonOptions

    model = null_reml.model
    engine, dt = model.engine, model.dtype
    data_mv, rotation = engine.data(model)
    n_snps = genotypes.n_snps
    out = []
    af, n_miss = np.zeros(n_snps), np.zeros(n_snps, int)
    bar = progress_bar(-(-n_snps // READ_BLOCK), progress)
    with jax.enable_x64(True):
        fixed = (jnp.asarray(null_reml.theta, dt), jnp.asarray(null_ml.theta, dt), jnp.asarray(engine.lower(model), dt),
                 jnp.asarray(engine.reflections(model), dt))
        options = NewtonOptions(max_iter=100, ray_min=float("inf"))
        for block in range(0, n_snps, READ_BLOCK):
            stop = min(block + READ_BLOCK, n_snps)
            G = genotypes.read(rows, block, stop)
            miss = ~np.isfinite(G)
            mean = np.nanmean(np.where(miss, np.nan, G), axis=0)
            af[block:stop], n_miss[block:stop] = mean / 2.0, miss.sum(axis=0)
            rotated = rotation.U.T @ np.where(miss, mean[None, :], G)
            out.append(map_padded(lambda take: scan_program(jnp.asarray(rotated[:, take], dt), data_mv, *fixed,
                                                            engine.spec(model), options),
                                  stop - block, width))       # one compiled shape: the last chunk padded
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return {k: np.concatenate([o[k] for o in out]) for k in STATISTICS}, af, n_miss


def _table(genotypes, traits, stats: dict, af, n_miss, null_ml_deviance: float) -> pd.DataFrame:
    """One row per marker: its description, effects and SEs per trait, the three p-values, a status."""
    from scipy import special

    from ..core.status import STATUS_NAMES

    d = len(traits)
    snps = genotypes.snps
    table = pd.DataFrame({c: snps[c].to_numpy() for c in ("snp", "chrom", "pos", "allele1", "allele0")})
    table["af"], table["n_miss"] = af, n_miss
    for j, t in enumerate(traits):
        table[f"beta_{t}"] = stats["beta"][:, j]
        table[f"se_{t}"] = stats["se"][:, j]
    table["p_wald"] = special.chdtrc(d, stats["wald"])
    table["p_lrt"] = special.chdtrc(d, np.maximum(null_ml_deviance - stats["ml_deviance"], 0.0))
    table["p_score"] = special.chdtrc(d, stats["score"])
    status = np.where(stats["status_reml"] != 0, stats["status_reml"], stats["status_ml"])
    table["status"] = [STATUS_NAMES.get(int(s), str(int(s))) for s in status]
    mono = af * (1 - af) <= 0
    table.loc[mono, [c for c in table.columns if c.startswith(("beta_", "se_", "p_"))]] = np.nan
    table.loc[mono, "status"] = "monomorphic"
    return table
