"""Association scans: ``jaxlmm.scan`` tests every marker for every trait (GEMMA's ``-lmm 4``).

    scan("~ 1 + (1 | id)", traits, genotypes="geno", relmat={"id": K}, responses=["y1", "y2"])

returns one row per (trait, marker) with GEMMA's statistics (``core/scan.py``
states the mathematics): the REML variance ratio under the alternative
(``lambda``, GEMMA's ``l_remle``), ``beta`` and ``se``, and the Wald, likelihood-
ratio and score p-values.  The formula has one random term ``(1 | id)`` with a
relationship matrix and one row per individual; its fixed part gives the
covariates.  Individuals are matched to K and to the genotypes by id (every
individual of the data must be in both; extra ones are left out).  Each trait
uses its own observed individuals -- a missing value drops the individual from
that trait only -- and K restricted to them, exactly as GEMMA's one-trait runs.

Work is split into chunks of traits (vmapped, sharded over ``devices``) times
chunks of markers (a static size: one compiled program serves every chunk).  On
a single CPU device each trait's eigendecomposition and the rotation of the
markers run in LAPACK/BLAS on the host (several times faster there than XLA's)
and the compiled program does the rest; on accelerators everything runs in the
programs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._x64 import float64_scope
from .core import status as codes
from .errors import DataError

TESTS = ("wald", "lrt", "score")
RESULT_COLUMNS = ["trait", "snp", "chrom", "pos", "allele1", "allele0", "af", "n_obs", "n_miss", "beta", "se",
                  "lambda", "p_wald", "p_lrt", "p_score", "status"]
CPU_SNP_CHUNK = 512
GPU_SNP_CHUNK = 4096


@float64_scope
def scan(formula: str, data, *, genotypes, relmat: dict, responses=None, test: str = "all", mode: str = "exact",
         snp_chunk: int | None = None, trait_chunk: int | None = None, progress: bool | None = None,
         devices=None, center_relmat: bool = True) -> pd.DataFrame:
    """Test every marker of ``genotypes`` for association with every trait (GEMMA ``-lmm 4``).

    Parameters
    ----------
    formula : str
        ``"y ~ covariates + (1 | id)"``, or ``"~ covariates + (1 | id)"`` with ``responses``.
    data : DataFrame
        One row per individual: the id column, covariates and traits.
    genotypes : str, path, DataFrame or ``Genotypes``
        A PLINK .bed/.bim/.fam prefix (``jaxlmm.read_plink``) or a data frame indexed by id with one
        dosage column per marker.
    relmat : dict
        ``{"id": K}``, K a DataFrame indexed and columned by id (as ``lmer``'s ``relmat=``).
    responses : list of column names, optional
        Traits to scan (each with its own missing values).
    test : "all", "wald", "lrt" or "score"
        The p-values to compute (the others are NaN; leaving out the LRT halves the work).
    mode : "exact" or "null"
        ``"exact"`` refits lambda by REML for every marker (GEMMA ``-lmm``); ``"null"`` keeps the null
        model's lambda (EMMAX / P3D: much faster, nearly the same p-values for small effects).
    snp_chunk, trait_chunk : int, optional
        Markers and traits per compiled call.
    progress : bool, optional
        A progress bar over chunks (default: when standard error is a terminal).
    devices : list of jax devices, optional
        Shard the traits of a chunk over these devices (default: every local device).
    center_relmat : bool
        Double-centre K on each trait's observed individuals, as GEMMA does (default).  REML, lambda,
        beta, se and the Wald test do not depend on it (the model has an intercept); the ML likelihood,
        and so the LRT and score tests, do.  False uses K as given (as ``lmer(relmat=)``).

    Returns
    -------
    DataFrame with the columns ``RESULT_COLUMNS``: one row per (trait, marker); ``status`` is
    "converged", "monomorphic" or "no_genotypes" per marker, or a trait's failed check
    ("too_few_observations", "constant_response") with NaN statistics.
    """
    if mode not in ("exact", "null"):
        raise ValueError(f"mode must be 'exact' or 'null', got {mode!r}")
    if test not in ("all",) + TESTS:
        raise ValueError(f"test must be one of 'all', 'wald', 'lrt', 'score', got {test!r}")
    from .model.plink import as_genotypes

    problem = scan_problem(formula, data, relmat, responses, as_genotypes(genotypes))
    stats = run_scan(problem, mode=mode, lrt=test in ("all", "lrt"), snp_chunk=snp_chunk,
                     trait_chunk=trait_chunk, progress=progress, devices=devices, center=center_relmat)
    return results_frame(problem, stats, test)


@dataclass
class ScanProblem:
    """What a scan needs, in K's level order: covariates, traits, K and the genotype rows."""

    X: np.ndarray            # (n, c) covariates
    Y: np.ndarray            # (n, T) traits, NaN = missing
    K: np.ndarray            # (n, n) relationship matrix on the data's individuals
    names: list
    genotypes: object        # model.plink.Genotypes
    rows: np.ndarray         # (n,) positions of the individuals in the genotypes
    messages: list

    @property
    def n_traits(self) -> int:
        return self.Y.shape[1]


def scan_problem(formula: str, data, relmat, responses, genotypes) -> ScanProblem:
    """Build the design (``build_design``), check it fits the scan, and match the genotypes by id."""
    from .batch import response_matrix
    from .model.design import _as_frame, build_design
    from .model.plink import match_individuals
    from .spectral_batch import spectral_layout

    frame = _as_frame(data)
    if not relmat or len(relmat) != 1:
        raise DataError("scan needs relmat={'id': K}: one relationship matrix for the formula's (1 | id) term")
    if responses is not None:
        names, Y = response_matrix(responses, frame)
        design = build_design(formula, frame, responses=Y, relmat=relmat)
    else:
        design = build_design(formula, frame, relmat=relmat)
        names = [design.response_name]
    layout = spectral_layout(design)
    if layout is None:
        raise DataError("scan needs a formula with one random term (1 | id), where id has a relationship "
                        "matrix and one row per individual, and no prior weights")
    term = design.terms[0]
    levels = [term.factor.levels[c] for c in term.factor.codes[layout.order]]
    rows, extra = match_individuals(genotypes, levels, term.group)
    Y = np.asarray(design.y, float).reshape(design.nobs, -1)[layout.order] - design.offset[layout.order][:, None]
    messages = list(design.messages)
    if extra:
        messages.append(f"{extra} genotyped individual{'s' if extra > 1 else ''} without data left out")
    return ScanProblem(design.X[layout.order], Y, layout.K, names, genotypes, rows, messages)


def trait_checks(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Per trait a status code: too few observed individuals or a constant response, else 0."""
    out = np.zeros(Y.shape[1], dtype=np.int32)
    for j in range(Y.shape[1]):
        obs = ~np.isnan(Y[:, j])
        if obs.sum() <= X.shape[1] + 2:
            out[j] = codes.TOO_FEW_OBSERVATIONS
        elif np.ptp(Y[obs, j]) == 0:
            out[j] = codes.CONSTANT_RESPONSE
    return out


def run_scan(problem: ScanProblem, *, mode: str, lrt: bool, snp_chunk=None, trait_chunk=None, progress=None,
             devices=None, center: bool = True) -> dict:
    """Statistics (name -> (T, n_snps) array) of every trait and marker, chunk by chunk."""
    import jax

    from .core.scan import (Markers, basis_from_eigen_program, host_eigen, host_impute_and_rotate,
                            scan_chunk_program, scan_rotated_program, trait_basis_program)
    from .sharding import put, resolve_devices, round_chunk, trait_mesh

    devices = resolve_devices(None, devices)
    mesh = trait_mesh(devices)
    on_cpu = devices[0].platform == "cpu"
    snp_chunk = int(snp_chunk or (CPU_SNP_CHUNK if on_cpu else GPU_SNP_CHUNK))
    trait_chunk = round_chunk(int(trait_chunk or (1 if on_cpu else default_trait_chunk(len(problem.rows),
                                                                                        snp_chunk, devices))),
                              devices)
    check = trait_checks(problem.X, problem.Y)
    todo = np.flatnonzero(check == 0)
    T, m = problem.n_traits, problem.genotypes.n_snps
    out = {name: np.full((T, m), np.nan) for name in ("beta", "se", "lambda_reml", "f_wald", "f_score",
                                                      "chi2_lrt", "af")}
    out["n_miss"] = np.zeros((T, m), np.int64)
    out["status"] = np.repeat(check[:, None], m, axis=1)
    out["n_obs"] = (~np.isnan(problem.Y)).sum(axis=0)
    K, X = put((jax.numpy.asarray(problem.K), jax.numpy.asarray(problem.X, float)), mesh, False)
    cache = _GenotypeCache(problem, snp_chunk)
    eigen_cache = _EigenCache(host_eigen)
    bar = _progress(-(-todo.size // trait_chunk) * cache.n_chunks, progress)
    for lo in range(0, todo.size, trait_chunk):
        sel = todo[lo:lo + trait_chunk]
        take = np.concatenate([sel, np.repeat(sel[:1], trait_chunk - sel.size)])
        Yc = problem.Y[:, take].T
        per_trait = put((jax.numpy.asarray(np.nan_to_num(Yc)), jax.numpy.asarray((~np.isnan(Yc)).astype(float))),
                        mesh, True)
        host = on_cpu and mesh is None      # LAPACK and BLAS on the host: faster than XLA's on a CPU
        observed = (~np.isnan(Yc)).astype(float)
        if host:
            eig = [eigen_cache.get(problem.K, o, center) for o in observed]
            basis = basis_from_eigen_program(np.stack([u for u, _ in eig]), np.stack([d for _, d in eig]), X,
                                             *per_trait)
        else:
            basis = trait_basis_program(K, X, *per_trait, center=center)
        for start, stop, G in cache:
            if host:
                parts = [host_impute_and_rotate(G, U, o) for (U, _), o in zip(eig, observed)]
                markers = Markers(*(np.stack(a) for a in zip(*parts)))
                stats = jax.device_get(scan_rotated_program(basis, markers, mode=mode, lrt=lrt))
            else:
                stats = jax.device_get(scan_chunk_program(basis, G, mode=mode, lrt=lrt))
            for name, values in stats._asdict().items():
                out[name][sel, start:stop] = np.asarray(values)[:sel.size, :stop - start]
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    failed = (out["status"] == codes.CONVERGED) & ~np.isfinite(out["beta"]) & ~np.isnan(out["af"])
    out["status"][failed] = codes.NONFINITE          # e.g. a null model that could not be fitted
    return out


def default_trait_chunk(n: int, snp_chunk: int, devices) -> int:
    """Traits per call on an accelerator: as many (up to 64) as a quarter of the free memory of a device
    holds -- per trait its eigenvectors (n^2) and, per marker, the rotated markers, the Gram matrices'
    Chebyshev coefficients and their forward-mode tangents."""
    from .core.scan_expansion import N_CHEB
    from .model.memory import available_bytes

    per_trait = 8 * (3 * n * n + snp_chunk * (6 * n + 4 * 9 * N_CHEB))
    fits = int(available_bytes(devices[0]) // 4 // per_trait) * len(devices)
    return max(1, min(64, fits))


class _EigenCache:
    """The last few eigendecompositions by set of observed individuals: traits observed on the same
    individuals (often all of them) share one."""

    SIZE = 4

    def __init__(self, compute):
        self.compute, self.entries = compute, {}

    def get(self, K, observed, center):
        key = (np.asarray(observed) > 0).tobytes()
        if key not in self.entries:
            if len(self.entries) >= self.SIZE:
                self.entries.pop(next(iter(self.entries)))
            self.entries[key] = self.compute(K, observed, center)
        return self.entries[key]


class _GenotypeCache:
    """Marker chunks of a static width (the last one padded with a constant marker), read once when
    the whole matrix fits in ``MAX_CACHE_BYTES``, else read again for every chunk of traits."""

    MAX_CACHE_BYTES = 2 << 30

    def __init__(self, problem: ScanProblem, width: int):
        self.problem, self.width = problem, width
        self.n_snps = problem.genotypes.n_snps
        self.n_chunks = -(-self.n_snps // width)
        small = len(problem.rows) * self.n_snps * 8 <= self.MAX_CACHE_BYTES
        self.cached = [self._read(k) for k in range(self.n_chunks)] if small else None

    def _read(self, k: int):
        start, stop = k * self.width, min((k + 1) * self.width, self.n_snps)
        G = self.problem.genotypes.read(self.problem.rows, start, stop)
        if G.shape[1] < self.width:
            G = np.concatenate([G, np.zeros((G.shape[0], self.width - G.shape[1]))], axis=1)
        return start, stop, G

    def __iter__(self):
        for k in range(self.n_chunks):
            yield self.cached[k] if self.cached is not None else self._read(k)


def _progress(total: int, enabled: bool | None):
    import sys

    show = enabled if enabled is not None else sys.stderr.isatty()
    if not show or total <= 1:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="chunk", desc="jaxlmm scan", file=sys.stderr)


def results_frame(problem: ScanProblem, stats: dict, test: str = "all") -> pd.DataFrame:
    """The tidy table: one row per (trait, marker), p-values from the statistics (``scipy.stats``)."""
    from scipy import stats as st

    T, m = stats["beta"].shape
    df = (stats["n_obs"] - problem.X.shape[1] - 1)[:, None].astype(float)
    want = TESTS if test == "all" else (test,)
    p = {"wald": st.f.sf(stats["f_wald"], 1, df), "lrt": st.chi2.sf(stats["chi2_lrt"], 1),
         "score": st.f.sf(stats["f_score"], 1, df)}
    snps = problem.genotypes.snps
    frame = pd.DataFrame({
        "trait": np.repeat(np.asarray(problem.names, dtype=object), m),
        **{c: np.tile(snps[c].to_numpy(), T) for c in ("snp", "chrom", "pos", "allele1", "allele0")},
        "af": stats["af"].ravel(), "n_obs": np.repeat(stats["n_obs"], m),
        "n_miss": stats["n_miss"].ravel(), "beta": stats["beta"].ravel(), "se": stats["se"].ravel(),
        "lambda": stats["lambda_reml"].ravel(),
        **{f"p_{t}": (p[t] if t in want else np.full((T, m), np.nan)).ravel() for t in TESTS},
        "status": pd.Categorical([codes.STATUS_NAMES[c] for c in stats["status"].ravel()]),
    })
    frame.attrs["messages"] = problem.messages
    return frame[RESULT_COLUMNS]
