"""Plots of an association scan (``jaxlmm.scan``): Manhattan and quantile-quantile plots of p-values."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._figure import _pyplot


def _pvalues(results: pd.DataFrame, trait: str | None, test: str) -> tuple[pd.DataFrame, str]:
    """The rows of one trait (the only one, or ``trait``) with a finite p-value of ``test``."""
    column = f"p_{test}"
    if column not in results.columns:
        raise ValueError(f"no column {column!r}: test must be 'wald', 'lrt' or 'score'")
    traits = list(dict.fromkeys(results["trait"]))
    if trait is None:
        if len(traits) != 1:
            raise ValueError(f"the results hold {len(traits)} traits; pick one with trait=")
        trait = traits[0]
    elif trait not in traits:
        raise ValueError(f"trait {trait!r} not in the results")
    rows = results[(results["trait"] == trait) & np.isfinite(results[column])]
    return rows.assign(_p=np.clip(rows[column].to_numpy(float), 1e-300, 1.0)), trait


def manhattan(results: pd.DataFrame, trait: str | None = None, test: str = "wald", threshold: float = 5e-8,
              ax=None):
    """``-log10 p`` of every marker along the genome (chromosomes in alternating colours), with a
    dashed line at ``threshold`` (genome-wide 5e-8 by default; None for none).

    R (qqman): ``manhattan(gwas, chr = "chrom", bp = "pos", p = "p_wald", snp = "snp")``.
    """
    plt = _pyplot()
    rows, trait = _pvalues(results, trait, test)
    fig, ax = (plt.subplots(figsize=(9, 3.2)) if ax is None else (ax.figure, ax))
    chrom = rows["chrom"].astype(str)
    order = sorted(chrom.unique(), key=lambda c: (0, int(c)) if c.isdigit() else (1, c))
    offset, ticks = 0.0, []
    for k, c in enumerate(order):
        part = rows[chrom == c]
        pos = part["pos"].to_numpy(float)
        x = offset + pos - (pos.min() if len(pos) else 0.0)
        ax.scatter(x, -np.log10(part["_p"]), s=6, color=("#1f4e79" if k % 2 == 0 else "#7fa7d1"))
        ticks.append((offset + (x.max() - offset) / 2 if len(pos) else offset, c))
        offset = (x.max() if len(pos) else offset) + 1.0
    if len(order) > 1:
        ax.set_xticks([t for t, _ in ticks], [c for _, c in ticks])
        ax.set_xlabel("chromosome")
    else:
        ax.set_xlabel(f"position on chromosome {order[0]}" if order else "position")
    if threshold:
        ax.axhline(-np.log10(threshold), color="grey", linestyle="--", linewidth=0.8)
    ax.set_ylabel(f"-log10 p ({test})")
    ax.set_title(f"{trait}: {len(rows)} markers")
    return fig


def qq(results: pd.DataFrame, trait: str | None = None, test: str = "wald", ax=None):
    """Observed against expected ``-log10 p`` under the null (uniform p), with the genomic inflation
    factor lambda_GC (median chi-square over its null median) in the title.

    R (qqman): ``qq(gwas$p_wald)``.
    """
    from scipy import stats

    plt = _pyplot()
    rows, trait = _pvalues(results, trait, test)
    p = np.sort(rows["_p"].to_numpy())
    n = p.size
    expected = -np.log10((np.arange(1, n + 1) - 0.5) / max(n, 1))
    fig, ax = (plt.subplots(figsize=(4, 4)) if ax is None else (ax.figure, ax))
    ax.scatter(expected, -np.log10(p), s=6, color="#1f4e79")
    top = max(expected.max() if n else 1.0, 1.0)
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=0.8)
    gc = np.median(stats.chi2.isf(p, 1)) / stats.chi2.ppf(0.5, 1) if n else np.nan
    ax.set_xlabel("expected -log10 p")
    ax.set_ylabel(f"observed -log10 p ({test})")
    ax.set_title(f"{trait}: lambda_GC = {gc:.3f}")
    return fig
