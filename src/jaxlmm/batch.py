"""Many traits in one call: ``lmer(formula, data, responses=Y)``.

Rows are shared; each trait keeps its own missing values as zero weights, so
the shapes are static and no trait loses rows because another has a gap.  The
design is built once, the cross-products of all traits come from a few matrix
products, and the single-trait optimizer runs vmapped over traits: one jitted
program for the whole batch (``core.fit.fit_batch_program``), compiled once per
design shape and chunk size and reused by later calls with new responses.

Traits that cannot be fitted (too few observations, a grouping factor with
fewer than two observed levels, fixed effects not estimable on the trait's
rows) are reported in ``diagnostics`` with a status, not raised; the rest of
the batch goes on.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from ._x64 import float64_scope
from .model.design import Design, bucket, build_design
from .errors import DataError
from .sharding import chunks, put, resolve_devices, round_chunk, trait_mesh
from .spectral_batch import MAX_MISSING_FRACTION, fit_spectral, missing_counts, spectral_layout

# per-trait status codes beyond the optimizer's (core.optimize: 0..3)
TOO_FEW_OBSERVATIONS = 10
ONE_LEVEL = 11
LEVELS_VS_OBSERVATIONS = 12
X_RANK_DEFICIENT = 13
CONSTANT_RESPONSE = 14

STATUS_NAMES = {
    0: "converged",
    1: "max_iter",
    2: "line_search_failed",
    3: "nonfinite",
    TOO_FEW_OBSERVATIONS: "too_few_observations",
    ONE_LEVEL: "one_level",
    LEVELS_VS_OBSERVATIONS: "levels_vs_observations",
    X_RANK_DEFICIENT: "x_rank_deficient",
    CONSTANT_RESPONSE: "constant_response",
}

STATUS_MESSAGES = {
    0: "",
    1: "optimizer stopped after {max_iter} iterations",
    2: "line search failed to decrease the criterion",
    3: "criterion not finite",
    TOO_FEW_OBSERVATIONS: "too few observations for the fixed effects",
    ONE_LEVEL: "a grouping factor has fewer than 2 observed levels",
    LEVELS_VS_OBSERVATIONS: "number of levels of a grouping factor >= number of observations (lme4's checks)",
    X_RANK_DEFICIENT: "fixed-effects model matrix is rank deficient on this trait's rows",
    CONSTANT_RESPONSE: "the response is constant on this trait's rows: no variance to estimate",
}


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


def trait_checks(design: Design, Y: np.ndarray) -> np.ndarray:
    """Per-trait status before fitting (0 = fit it): lme4's checks on each trait's own rows."""
    observed = ~np.isnan(Y) & (design.weights[:, None] > 0)
    n_t = observed.sum(axis=0)
    p = design.X.shape[1]
    status = np.zeros(Y.shape[1], dtype=np.int32)
    status[n_t <= p] = TOO_FEW_OBSERVATIONS
    spread = np.max(np.where(observed, Y, -np.inf), axis=0) - np.min(np.where(observed, Y, np.inf), axis=0)
    status[(status == 0) & ~(spread > 0)] = CONSTANT_RESPONSE
    for t in design.terms:
        counts = np.zeros((len(t.factor.levels), Y.shape[1]))
        np.add.at(counts, t.factor.codes, observed)
        nlev = (counts > 0).sum(axis=0)
        q = nlev * len(t.columns)
        status[(status == 0) & (nlev < 2)] = ONE_LEVEL
        if t.relmat is None:
            status[(status == 0) & ((nlev >= n_t) | (n_t <= q))] = LEVELS_VS_OBSERVATIONS
    if p:
        w = observed * design.weights[:, None]
        XtX = np.einsum("ni,nj,nt->tij", design.X, design.X, w)
        scale = np.maximum(np.einsum("tii->ti", XtX).max(axis=1), 1e-300)
        eig = np.linalg.eigvalsh(XtX)
        deficient = eig[:, 0] <= 1e-10 * scale
        status[(status == 0) & deficient] = X_RANK_DEFICIENT
    return status


def default_chunk_size(design: Design, n_traits: int, dtype_bytes: int, device=None) -> int:
    """Traits per call: all of them (as a shape bucket) if they fit in a quarter of the
    free memory, else the largest power of two that does."""
    from .model.memory import available_bytes, batch_bytes_per_trait

    per_trait = batch_bytes_per_trait(design, dtype_bytes)
    fits = int(available_bytes(device) // 4 // max(per_trait, 1))
    if fits >= bucket(n_traits):
        return bucket(n_traits)
    return max(1, 1 << (max(fits, 1).bit_length() - 1))


def _progress(total: int, enabled: bool | None):
    show = enabled if enabled is not None else sys.stderr.isatty()
    if not show or total <= 1:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="chunk", desc="jaxlmm", file=sys.stderr)


@float64_scope
def fit_batch(formula: str, data, responses, *, reml: bool = True, weights=None, offset=None,
              chunk_size: int | None = None, progress: bool | None = None, device=None,
              dtype=None, max_iter: int = 100, data_name: str | None = None, relmat=None,
              spectral: bool | None = None, devices=None, start=None):
    """Fit one model to every column of ``responses`` (see ``jaxlmm.lmer``).

    ``start``: theta to start every trait from (default lme4's start); a bootstrap
    starts its replicates from the fitted theta, as lme4's ``refit`` does.
    """
    import jax

    from .results.batch_result import BatchResult
    from .core.optimize import NewtonOptions
    from .model.design import _as_frame
    from .fitting import _dtype

    frame = _as_frame(data)
    names, Y_all = response_matrix(responses, frame)
    design = build_design(formula, frame, weights=weights, offset=offset, responses=Y_all, relmat=relmat)
    Y = np.asarray(design.y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    T = Y.shape[1]
    dt = _dtype(dtype)
    np_dtype = np.dtype(dt)

    status = trait_checks(design, Y)
    valid = status == 0
    k = design.structure.ntheta
    p = design.X.shape[1]
    options = NewtonOptions(max_iter=int(max_iter))
    h2_term = heritability_term(design)

    obs = ~np.isnan(Y)
    W = (obs * design.weights[:, None]).T          # (T, n) weights, 0 = missing
    Yt = np.nan_to_num(Y).T

    # which traits take the spectral path (core.spectral) and which the general one
    path = np.where(valid, "general", "none").astype(object)
    layout = spectral_layout(design) if spectral is not False else None
    if spectral is True and layout is None:
        raise ValueError("spectral=True needs one relationship-matrix term (1 | id) as the only random term, "
                         "one record per level and unit weights")
    if layout is not None:
        few_missing = missing_counts(W) <= MAX_MISSING_FRACTION * layout.n
        path[valid & (few_missing | (spectral is True))] = "spectral"

    devs = resolve_devices(device, devices)
    mesh = trait_mesh(devs)
    out = _empty_output(T, k, p, np_dtype)
    general = np.flatnonzero(path == "general")
    spectral_idx = np.flatnonzero(path == "spectral")
    bar = _progress(int(general.size > 0) + int(spectral_idx.size > 0), progress)
    ctx = jax.default_device(devs[0]) if mesh is None and device is not None else _null()
    with ctx:
        if general.size:
            chunk_size = _fit_general(design, Yt, W, general, out, reml=reml, np_dtype=np_dtype,
                                      options=options, chunk_size=chunk_size, device=device, h2_term=h2_term,
                                      devices=devs, mesh=mesh, start=start)
            if bar is not None:
                bar.update(1)
        if spectral_idx.size:
            for sel, res in fit_spectral(design, layout, Yt, W, spectral_idx, reml=reml, np_dtype=np_dtype,
                                         options=options, chunk_size=chunk_size, device=device,
                                         devices=devs, mesh=mesh).items():
                _scatter(out, np.asarray(sel), res)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return BatchResult(design, names, out, status, reml=bool(reml), dtype=dt, data_name=data_name,
                       max_iter=int(max_iter), chunk_size=chunk_size or 0, k=k, p=p, path=path,
                       h2_term=h2_term)


def heritability_term(design: Design) -> int | None:
    """Index of the first relationship-matrix term when every term is scalar (else None: no h2)."""
    if any(len(t.columns) != 1 for t in design.terms):
        return None
    for k, t in enumerate(design.terms):
        if t.relmat is not None:
            return k
    return None


def _empty_output(T: int, k: int, p: int, dtype) -> dict:
    """Per-trait output arrays, NaN until a path fills them."""
    nan = np.nan
    return {
        "theta": np.full((T, k), nan), "fun": np.full(T, nan), "grad": np.full((T, k), nan),
        "n_iter": np.zeros(T, np.int32), "status": np.zeros(T, np.int32), "step": np.full(T, nan),
        "criterion": np.full(T, nan), "beta": np.full((T, p), nan), "sigma": np.full(T, nan),
        "vcov_beta": np.full((T, p, p), nan), "n_obs": np.zeros(T), "h2": np.full(T, nan),
        "h2_se": np.full(T, nan),
    }


def _scatter(out: dict, idx: np.ndarray, res) -> None:
    """Copy a path's per-trait results (``BatchOutput`` or ``SpectralOutput``) into ``out`` at ``idx``."""
    for name in ("theta", "fun", "grad", "n_iter", "status", "step"):
        out[name][idx] = np.asarray(getattr(res.optim, name))
    for name in ("criterion", "beta", "sigma", "vcov_beta", "n_obs"):
        out[name][idx] = np.asarray(getattr(res.estimates, name))
    for name in ("h2", "h2_se"):
        if getattr(res, name, None) is not None:
            out[name][idx] = np.asarray(getattr(res, name))


def _fit_general(design: Design, Yt: np.ndarray, W: np.ndarray, idx: np.ndarray, out: dict, *, reml: bool,
                 np_dtype, options, chunk_size: int | None, device, h2_term: int | None, devices=(),
                 mesh=None, start=None) -> int:
    """The general path (``core.fit.fit_batch_program``) for the traits ``idx``; returns the chunk size."""
    import jax
    import jax.numpy as jnp

    from .core.fit import fit_batch_program

    from .model.memory import check_memory

    n_sel = idx.size
    check_memory(design, np_dtype.itemsize, device)  # at least one trait must fit
    if chunk_size is None:
        chunk_size = default_chunk_size(design, n_sel, np_dtype.itemsize, device)
    chunk_size = round_chunk(max(1, min(chunk_size, bucket(n_sel))), devices)
    base = put(design.model_data(np_dtype, y=np.zeros(design.nobs), weights=design.weights), mesh, False)
    structure = design.structure
    theta0 = structure.theta0() if start is None else np.maximum(np.asarray(start, float), structure.lower_bounds())
    for sel, take in chunks(idx, chunk_size):
        Yc = np.stack([design.pad_rows(y) for y in Yt[take]]).astype(np_dtype)
        Wc = np.stack([design.pad_rows(w) for w in W[take]]).astype(np_dtype)
        th0 = np.tile(theta0, (chunk_size, 1)).astype(np_dtype)
        Yc, Wc, th0 = put((jnp.asarray(Yc), jnp.asarray(Wc), jnp.asarray(th0)), mesh, True)
        res = fit_batch_program(base, Yc, Wc, th0, reml=bool(reml), options=options, h2_term=h2_term)
        res = jax.tree_util.tree_map(lambda a: np.asarray(a)[:sel.size], jax.device_get(res))
        _scatter(out, sel, res)
    return chunk_size


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
