"""Fitting a ``Model`` to many responses: the engine behind ``lmer(..., responses=Y)`` and the bootstrap.

Rows are shared; each trait keeps its own missing values as zero weights, so
the shapes are static and no trait loses rows because another has a gap.  The
cross-products of all traits come from a few matrix products, and the
single-trait optimizer runs vmapped over traits: one jitted program for the
whole batch (``core.fit.fit_batch_program``), compiled once per design shape
and chunk size and reused by later calls with new responses.  Traits whose
only random term is one relationship-matrix term with one record per level go
through K's eigenbasis instead (``many.spectral``).

Traits that cannot be fitted (too few observations, a grouping factor with
fewer than two observed levels, fixed effects not estimable on the trait's
rows, a constant response) get a status (``core.status``), not an exception;
the rest of the batch goes on.
"""

from __future__ import annotations

import sys

import numpy as np

from ..core.status import CONSTANT_RESPONSE, LEVELS_VS_OBSERVATIONS, ONE_LEVEL, TOO_FEW_OBSERVATIONS, X_RANK_DEFICIENT
from ..model.design import Design, bucket, heritability_term
from ..parallel.sharding import chunks, on_mesh, put, resolve_devices, round_chunk, trait_mesh
from .spectral import MAX_MISSING_FRACTION, fit_spectral, missing_counts, spectral_layout


def trait_checks(design: Design, Y: np.ndarray, terms=None) -> np.ndarray:
    """Per-trait status before fitting (0 = fit it): lme4's checks on each trait's own rows.

    ``terms``: the terms whose numbers of levels are checked (default all; a structured model passes
    those its single fit checks, ``structured_terms.level_checked_terms``)."""
    observed = ~np.isnan(Y) & (design.weights[:, None] > 0)
    n_t = observed.sum(axis=0)
    p = design.X.shape[1]
    status = np.zeros(Y.shape[1], dtype=np.int32)
    status[n_t <= p] = TOO_FEW_OBSERVATIONS
    spread = np.max(np.where(observed, Y, -np.inf), axis=0) - np.min(np.where(observed, Y, np.inf), axis=0)
    status[(status == 0) & ~(spread > 0)] = CONSTANT_RESPONSE
    for t in design.terms if terms is None else terms:
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
    from ..model.memory import available_bytes, batch_bytes_per_trait

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


def fit_design_batch(model, names: list[str], Y: np.ndarray, *, start=None, chunk_size: int | None = None,
                     progress: bool | None = None, device=None, devices=None, spectral: bool | None = None):
    """Fit ``model`` to every column of ``Y`` (n x T, NaN = missing): a ``BatchResult`` that keeps the model."""
    import jax

    from ..core.optim.newton import NewtonOptions
    from ..results.batch_result import BatchResult

    design, reml = model.design, model.reml
    T = Y.shape[1]
    dt = model.dtype
    np_dtype = np.dtype(dt)
    max_iter, data_name = model.max_iter, model.data_name

    status = trait_checks(design, Y)
    valid = status == 0
    k = design.structure.ntheta
    p = design.X.shape[1]
    spectral_options = NewtonOptions(max_iter=int(max_iter))
    options = model.engine.newton_options(max_iter)       # the general path's (a large dense part: damped)
    if model.optimizer is not None or model.trace:   # the general path's loop: any optimizer, a trace
        if spectral is True:
            raise ValueError("spectral=True uses its own Newton optimizer: drop optimizer= and trace=, or spectral")
        spectral = False
        options = options._replace(trace=True) if model.optimizer is None else model.first_order_options
        spectral_options = options
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
                                      devices=devs, mesh=mesh, start=start, optimizer=model.optimizer)
            if bar is not None:
                bar.update(1)
        if spectral_idx.size:
            for sel, res in fit_spectral(design, layout, Yt, W, spectral_idx, reml=reml, np_dtype=np_dtype,
                                         options=spectral_options, chunk_size=chunk_size, device=device,
                                         devices=devs, mesh=mesh).items():
                _scatter(out, np.asarray(sel), res)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return BatchResult(design, names, out, status, reml=bool(reml), dtype=dt, data_name=data_name,
                       max_iter=int(max_iter), chunk_size=chunk_size or 0, k=k, p=p, path=path,
                       h2_term=h2_term, model=model)


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


def _scatter_trace(out: dict, idx: np.ndarray, trace, T: int) -> None:
    """Copy a chunk's traces (``core.trace.Trace``, leading trait axis) into ``out["trace"]``."""
    if trace is None:
        return
    if out.get("trace") is None:
        out["trace"] = {name: np.full((T,) + np.shape(v)[1:], np.nan) for name, v in trace._asdict().items()}
    for name, values in trace._asdict().items():
        out["trace"][name][idx] = np.asarray(values)


def _scatter(out: dict, idx: np.ndarray, res) -> None:
    """Copy a path's per-trait results (``BatchOutput`` or ``SpectralOutput``) into ``out`` at ``idx``."""
    for name in ("theta", "fun", "grad", "n_iter", "status", "step"):
        out[name][idx] = np.asarray(getattr(res.optim, name))
    for name in ("criterion", "beta", "sigma", "vcov_beta", "n_obs"):
        out[name][idx] = np.asarray(getattr(res.estimates, name))
    for name in ("h2", "h2_se"):
        if getattr(res, name, None) is not None:
            out[name][idx] = np.asarray(getattr(res, name))
    _scatter_trace(out, idx, getattr(res, "trace", None), len(out["fun"]))


def _fit_general(design: Design, Yt: np.ndarray, W: np.ndarray, idx: np.ndarray, out: dict, *, reml: bool,
                 np_dtype, options, chunk_size: int | None, device, h2_term: int | None, devices=(),
                 mesh=None, start=None, optimizer=None) -> int:
    """The general path (``core.fit.fit_batch_program``) for the traits ``idx``; returns the chunk size."""
    import jax
    import jax.numpy as jnp

    from ..core.pls.programs import CPU_COMPILER_OPTIONS, fit_batch_program

    from ..model.memory import check_memory

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
        res = on_mesh(fit_batch_program, mesh, (False, True, True, True), CPU_COMPILER_OPTIONS, reml=bool(reml),
                      options=options, h2_term=h2_term, optimizer=optimizer)(base, Yc, Wc, th0)
        res = jax.tree_util.tree_map(lambda a: np.asarray(a)[:sel.size], jax.device_get(res))
        _scatter(out, sel, res)
    return chunk_size


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
