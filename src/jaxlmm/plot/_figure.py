"""Figures made of panels, and the grouping factors a plot may show."""

from __future__ import annotations


def _pyplot():
    """``matplotlib.pyplot``, imported on first use (an ``ImportError`` saying how to install it)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("jaxlmm.plot needs matplotlib: pip install 'jaxlmm[plot]'") from exc
    return plt


def _grid(n: int, max_cols: int = 3, panel=(4.0, 3.2), layout=None):
    """A figure with ``n`` panels in rows of at most ``max_cols``; unused panels removed."""
    plt = _pyplot()
    ncols = max(1, min(n, max_cols))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False,
                             layout=layout)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


def _groups(fit, group) -> list[str]:
    """The grouping factors to plot: all of the fit's, or ``group`` (a name or a list of names),
    each checked to have a random-effects term."""
    available = list(dict.fromkeys(t.group for t in fit.design.terms))
    if group is None:
        return available
    wanted = [group] if isinstance(group, str) else list(group)
    unknown = [g for g in wanted if g not in available]
    if unknown:
        raise ValueError(f"no random-effects term for {', '.join(map(repr, unknown))}; "
                         f"grouping factors: {', '.join(available)}")
    return wanted
