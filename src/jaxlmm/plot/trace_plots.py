"""The optimizer's path (``fit.optimizer_trace``): how fast each optimizer approaches the optimum.

Four panels against the iteration: the criterion's gap to the best value reached by any
of the paths drawn, ``f_i - min f`` (log scale; lme4 has no equivalent -- its
``verbose = TRUE`` prints the criterion per bobyqa evaluation), the largest component
of the projected gradient (the stopping rule's measure), the step ``max |theta_i -
theta_{i-1}|``, and each theta.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._figure import _pyplot

FIXED = {"optimizer", "trait", "iteration", "criterion", "grad_norm", "step"}


def _as_frames(paths) -> dict[str, pd.DataFrame]:
    """``{label: trace frame}`` from a fit, a trace frame, or a dict / list of them."""
    if isinstance(paths, dict):
        items = list(paths.items())
    elif isinstance(paths, (list, tuple)):
        items = [(None, p) for p in paths]
    else:
        items = [(None, paths)]
    frames = {}
    for label, item in items:
        frame = item if isinstance(item, pd.DataFrame) else item.optimizer_trace
        if label is None:
            label = str(frame["optimizer"].iloc[0]) if len(frame) and "optimizer" in frame else "fit"
            while label in frames:
                label += "'"
        frames[str(label)] = frame
    return frames


def optimizer_paths(paths, *, max_traits: int = 50):
    """Draw one or more optimizer paths: a fit with ``trace=True``, its ``optimizer_trace`` frame, or a
    dict ``{label: fit or frame}`` to compare optimizers.  A batch's frame (a ``trait`` column) draws
    at most ``max_traits`` traits, one thin line each."""
    plt = _pyplot()
    frames = _as_frames(paths)
    best = min(float(np.nanmin(f["criterion"])) for f in frames.values() if len(f))
    fig, axes = plt.subplots(2, 2, figsize=(10.0, 6.5))
    theta_cols = []
    for n, (label, frame) in enumerate(frames.items()):
        color = f"C{n % 10}"
        groups = list(frame.groupby("trait", sort=False))[:max_traits] if "trait" in frame else [(None, frame)]
        thin = len(groups) > 1
        for j, (_, path) in enumerate(groups):
            it = path["iteration"].to_numpy()
            kw = dict(color=color, lw=0.6 if thin else 1.5, alpha=0.5 if thin else 1.0,
                      label=label if j == 0 else None)
            gap = path["criterion"].to_numpy(float) - (float(np.nanmin(path["criterion"])) if thin else best)
            axes[0, 0].plot(it, np.maximum(gap, 1e-16 * max(1.0, abs(best))), **kw)
            axes[0, 1].plot(it, np.maximum(path["grad_norm"].to_numpy(float), 1e-17), **kw)
            axes[1, 0].plot(it, path["step"].to_numpy(float), **kw)
            cols = [c for c in path.columns if c not in FIXED]
            theta_cols = theta_cols or cols
            for m, col in enumerate(cols):
                axes[1, 1].plot(it, path[col].to_numpy(float), color=color, lw=kw["lw"], alpha=kw["alpha"],
                                ls=["-", "--", ":", "-."][m % 4], label=(f"{label}: {col}" if j == 0 else None))
    titles = [("criterion - best" + (" (per trait)" if any("trait" in f for f in frames.values()) else ""), True),
              ("max |projected gradient|", True), ("step max |theta_i - theta_(i-1)|", True), ("theta", False)]
    for ax, (title, log) in zip(axes.ravel(), titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        if log:
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=8)
    if len(theta_cols) * len(frames) <= 12:
        axes[1, 1].legend(fontsize=7)
    fig.tight_layout()
    return fig
