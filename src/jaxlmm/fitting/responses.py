"""Many traits in one call: ``lmer(formula, data, responses=Y)``.

The responses are read (``response_matrix``: column names, an array or a data
frame), the design is built once for all of them, and the ``Model`` fits them
(``Model.fit_many``, ``many/engine.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._x64 import float64_scope
from ..errors import DataError
from ..model.design import build_design


def response_matrix(responses, data: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Trait names and an (n, T) float matrix (NaN = missing) from the accepted forms."""
    if isinstance(responses, str):
        responses = [responses]
    if isinstance(responses, pd.Series):
        responses = responses.to_frame()
    if isinstance(responses, pd.DataFrame):
        names = [str(c) for c in responses.columns]
        frame = responses
        if len(frame) != len(data):
            raise DataError(f"responses have {len(frame)} rows but data has {len(data)}")
    elif isinstance(responses, (list, tuple)) and all(isinstance(r, str) for r in responses):
        missing = [r for r in responses if r not in data.columns]
        if missing:
            raise DataError(f"response column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing[:5]))} "
                            "not found in data")
        names = list(responses)
        frame = data[names]
    else:
        arr = np.asarray(responses)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise DataError(f"responses must be 2-D (rows x traits), got shape {arr.shape}")
        names = [f"trait{i}" for i in range(arr.shape[1])]
        frame = pd.DataFrame(arr, columns=names)
        if len(frame) != len(data):
            raise DataError(f"responses have {len(frame)} rows but data has {len(data)}")
    if not names:
        raise DataError("responses has no columns")
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c]) or
           pd.api.types.is_bool_dtype(frame[c])]
    if bad:
        raise DataError(f"response {str(bad[0])!r} is not numeric (dtype {frame[bad[0]].dtype})")
    Y = frame.to_numpy(dtype=np.float64)
    if np.isinf(Y).any():
        j = int(np.flatnonzero(np.isinf(Y).any(axis=0))[0])
        raise DataError(f"response {names[j]!r} has infinite values")
    return names, Y


@float64_scope
def fit_batch(formula: str, data, responses, *, reml: bool = True, weights=None, offset=None,
              chunk_size: int | None = None, progress: bool | None = None, device=None,
              dtype=None, max_iter: int = 100, data_name: str | None = None, relmat=None,
              spectral: bool | None = None, devices=None, start=None, optimizer=None, trace: bool = False,
              dispformula=None, covariances=None):
    """Fit one model to every column of ``responses`` (see ``jaxlmm.lmer``).

    ``start``: theta to start every trait from (default lme4's start); a bootstrap
    starts its replicates from the fitted theta, as lme4's ``refit`` does.
    ``optimizer``, ``trace``: as for a single fit, per trait (the general path).
    """
    from .model import Model
    from ..model.design import _as_frame

    frame = _as_frame(data)
    names, Y_all = response_matrix(responses, frame)
    design = build_design(formula, frame, weights=weights, offset=offset, responses=Y_all, relmat=relmat,
                          dispformula=dispformula, covariances=covariances)
    model = Model(design, reml, dtype, max_iter=max_iter, data_name=data_name, optimizer=optimizer, trace=trace)
    return model.fit_many(None, names, start=start, chunk_size=chunk_size, progress=progress, device=device,
                          devices=devices, spectral=spectral)
