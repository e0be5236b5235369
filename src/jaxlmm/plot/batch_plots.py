"""Plots over a batch of traits: a per-trait variance ratio (heritability) and the optimizer's status."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._figure import _pyplot


def variance_ratio(batch, component: str | None = None) -> pd.Series:
    """Per trait ``v / (v + sigma^2)`` for one variance component ``v`` of ``batch.varcorr``.

    ``component`` is ``"var1|grp"`` (``"(Intercept)|g"``) or just the group;
    default: the first variance of the first term.  For a one-term,
    intercept-only model this is the intra-class correlation; with a
    relationship matrix on that term, the heritability.
    """
    vc = batch.varcorr
    var = vc[(vc["var2"] == "") & (vc["grp"] != "Residual")]
    if var.empty:
        raise ValueError("the model has no random-effects variance")
    keys = list(dict.fromkeys(zip(var["grp"], var["var1"])))
    if component is None:
        grp, var1 = keys[0]
    elif "|" in component:
        var1, grp = component.rsplit("|", 1)
    else:
        match = [k for k in keys if k[0] == component]
        if not match:
            raise ValueError(f"no variance component for group {component!r}")
        grp, var1 = match[0]
    if (grp, var1) not in keys:
        raise ValueError(f"no variance component {var1}|{grp}; available: "
                         + ", ".join(f"{v}|{g}" for g, v in keys))
    v = var[(var["grp"] == grp) & (var["var1"] == var1)].set_index("trait")["vcov"]
    s2 = vc[vc["grp"] == "Residual"].set_index("trait")["vcov"]
    out = (v / (v + s2.reindex(v.index))).reindex(batch.traits)
    out.name = f"{var1}|{grp}"
    return out


def batch_histogram(batch, what="h2", bins: int = 40):
    """Histogram of a per-trait heritability-like ratio over a batch of traits.

    lme4: ``hist(sapply(fits, function(m) { v <- as.data.frame(VarCorr(m))$vcov; v[1] / (v[1] + sigma(m)^2) }))``.

    ``what``:

    - ``"h2"``: the batch's ``h2`` attribute when it has one (fits with a
      relationship matrix), else as ``"variance_ratio"``;
    - ``"variance_ratio"``: ``var_term / (var_term + sigma^2)`` for the
      first variance of the first term (``variance_ratio``; for a one-term
      intercept model the intra-class correlation);
    - ``"var1|grp"`` (e.g. ``"x|g"``): the same ratio for that variance component;
    - a Series or array with one value per trait, or a function ``batch -> values``.

    Traits that failed (NaN) are left out and counted in the title; the
    median is marked.
    """
    plt = _pyplot()
    if callable(what):
        values, label = what(batch), getattr(what, "__name__", "value")
    elif isinstance(what, str) and what == "h2" and getattr(batch, "h2_term", None) is not None:
        values, label = batch.h2, "h2"
    elif isinstance(what, str):
        comp = None if what in ("h2", "variance_ratio") else what
        values = variance_ratio(batch, comp)
        label = f"var / (var + σ²), {values.name}" if comp or what == "variance_ratio" else \
            f"h² = var / (var + σ²), {values.name}"
    else:
        values, label = what, getattr(what, "name", None) or "value"
    x = np.asarray(values, dtype=float).reshape(-1)
    ok = np.isfinite(x)
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    ax.hist(x[ok], bins=bins, color="C0", alpha=0.8, edgecolor="white")
    if ok.any():
        med = float(np.median(x[ok]))
        ax.axvline(med, color="C3", lw=1.5, label=f"median {med:.3g}")
        ax.legend(fontsize=8)
    ax.set_xlabel(label)
    ax.set_ylabel("traits")
    n_bad = int((~ok).sum())
    ax.set_title(f"{int(ok.sum())} traits" + (f" ({n_bad} not estimated)" if n_bad else ""))
    fig.tight_layout()
    return fig


def convergence(batch, **kwargs):
    """Overview of the fits of a batch: status counts, singular fits, iterations, gradient norms.

    Given a fit with ``trace=True``, its ``optimizer_trace``, or a dict of them (or a batch
    with ``paths=True``), it draws the optimizer's path instead (``trace_plots.optimizer_paths``).

    lme4 has no single equivalent: over a list of fits one would tabulate
    ``m@optinfo$conv``, ``isSingular(m)``, ``m@optinfo$feval`` and the
    gradient check of ``m@optinfo$derivs``.  Four panels: traits per status
    (``batch.status``), converged fits split into regular and singular
    (boundary) fits plus failures, a histogram of optimizer iterations, and
    a histogram of ``log10`` of the largest absolute gradient element at the
    estimate.
    """
    from ..results.trait_tables import TraitTables

    if kwargs.pop("paths", False) or not isinstance(batch, TraitTables):   # a single fit: its optimizer paths
        from .trace_plots import optimizer_paths

        return optimizer_paths(batch, **kwargs)
    plt = _pyplot()
    d = batch.diagnostics
    fig, axes = plt.subplots(2, 2, figsize=(10.0, 6.5))
    ax = axes[0, 0]
    counts = d["status"].value_counts()
    bars = ax.bar(range(len(counts)), counts.to_numpy(), color=["C2" if s == "converged" else "C3"
                                                               for s in counts.index])
    ax.set_xticks(range(len(counts)), list(counts.index), rotation=20, ha="right", fontsize=8)
    ax.bar_label(bars, fontsize=8)
    ax.set_ylabel("traits")
    ax.set_title("status")

    ax = axes[0, 1]
    conv, sing = d["converged"].to_numpy(bool), d["singular"].to_numpy(bool)
    labels = ["regular", "singular", "not converged"]
    vals = [int((conv & ~sing).sum()), int((conv & sing).sum()), int((~conv).sum())]
    bars = ax.bar(labels, vals, color=["C2", "C1", "C3"])
    ax.bar_label(bars, fontsize=8)
    ax.set_ylabel("traits")
    ax.set_title("converged fits: regular vs boundary (singular)")

    ax = axes[1, 0]
    it = d["n_iter"].to_numpy(float)
    it = it[np.isfinite(it)]
    edges = np.arange(0, (it.max() if len(it) else 1) + 2) - 0.5
    ax.hist(it, bins=edges if len(edges) <= 120 else 60, color="C0", edgecolor="white")
    ax.set_xlabel("optimizer iterations")
    ax.set_ylabel("traits")
    ax.set_title(f"iterations (max {int(it.max())})" if len(it) else "iterations")

    ax = axes[1, 1]
    g = d["grad_norm"].to_numpy(float)
    g = g[np.isfinite(g)]
    ax.hist(np.log10(np.maximum(g, 1e-17)), bins=40, color="C0", edgecolor="white")
    ax.set_xlabel("log10 max |gradient| at the estimate")
    ax.set_ylabel("traits")
    ax.set_title("gradient norm (unprojected: nonzero outwards at a bound)")
    from matplotlib.ticker import MaxNLocator

    for ax in axes.ravel():
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(batch.summary(), fontsize=10)
    fig.tight_layout()
    return fig
