"""The optimizer's path as a table: one row per iterate (``fit.optimizer_trace``).

The core records the path in fixed-size arrays (``core.trace.Trace``: row ``i`` the
iterate after ``i`` steps, NaN after the last); here the recorded rows become a
DataFrame with the columns ``iteration``, ``criterion``, ``grad_norm`` (largest
component of the projected gradient), ``step`` (largest change of theta from the
previous row) and one column per theta, and for a batch a leading ``trait`` column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NOT_TRACED = "no optimizer trace: fit with trace=True (e.g. jaxlmm.lmer(..., trace=True))"


def trace_frame(trace, theta_names: list[str], optimizer: str) -> pd.DataFrame:
    """The recorded rows of one ``Trace`` (arrays of one fit)."""
    criterion = np.asarray(trace.criterion, dtype=float)
    rows = np.flatnonzero(np.isfinite(criterion))
    frame = pd.DataFrame({"iteration": rows, "criterion": criterion[rows],
                          "grad_norm": np.asarray(trace.grad_norm, dtype=float)[rows],
                          "step": np.asarray(trace.step, dtype=float)[rows]})
    theta = np.asarray(trace.theta, dtype=float)[rows]
    for j, name in enumerate(theta_names):
        frame[name] = theta[:, j]
    frame.insert(0, "optimizer", optimizer)
    return frame


def batch_trace_frame(traces: dict, traits: list[str], theta_names: list[str], optimizer: str) -> pd.DataFrame:
    """The traces of a batch (arrays with a leading trait axis), stacked with a ``trait`` column."""
    frames = []
    for i, trait in enumerate(traits):
        one = type("OneTrace", (), {name: values[i] for name, values in traces.items()})
        frame = trace_frame(one, theta_names, optimizer)
        frame.insert(0, "trait", trait)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
