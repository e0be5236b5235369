"""Association scans: ``jaxlmm.scan`` tests every marker for every trait (GEMMA's ``-lmm 4``).

    scan("~ 1 + (1 | id)", traits, genotypes="geno", relmat={"id": K}, responses=["y1", "y2"])

returns one row per (trait, marker) with GEMMA's statistics (``core/spectral/scan.py``
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

from .._x64 import float64_scope
from ..core import status as codes
from ..errors import DataError, JaxlmmError
from .progress import progress_bar

TESTS = ("wald", "lrt", "score")
RESULT_COLUMNS = ["trait", "snp", "chrom", "pos", "allele1", "allele0", "af", "n_obs", "n_miss", "beta", "se",
                  "lambda", "p_wald", "p_lrt", "p_score", "status"]
TESTED_STATUSES = tuple(codes.STATUS_NAMES[c] for c in codes.SCAN_TESTED)   # rows with statistics
CPU_SNP_CHUNK = 2048
GPU_SNP_CHUNK = 4096


@float64_scope
def scan(formula: str, data, *, genotypes, relmat: dict, responses=None, test: str = "all", mode: str = "exact",
         snp_chunk: int | None = None, trait_chunk: int | None = None, progress: bool | None = None,
         devices=None, center_relmat: bool = True) -> pd.DataFrame:
    """Test every marker of ``genotypes`` for association with every trait (GEMMA ``-lmm 4``).

    Parameters
    ----------
    formula : str
        ``"y ~ covariates + (1 | id)"``, or ``"~ covariates + (1 | id)"`` with ``responses``; or
        ``"cbind(y1, y2, y3) ~ covariates + (1 | id)"``: the traits tested jointly, one row per marker
        (GEMMA ``-lmm 4 -n 1 2 3``; ``gwas/multivariate_scan.py``).
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
        Markers and traits per compiled call (positive integers; a ``JaxlmmError`` otherwise).
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
    "converged", "lambda_at_lower_bound" or "lambda_at_upper_bound" for a tested marker (the last two:
    the reported lambda -- the marker's REML one, or with ``mode="null"`` the null model's -- ended at an
    end of the search range, see ``core.status``), "monomorphic" or "no_genotypes" per marker, or a
    trait's failed check ("too_few_observations", "constant_response") with NaN statistics.  The results
    do not depend on the scale of K (``relmat_scale``); ``lambda`` is on the scale of the K given.
    """
    snp_chunk = _positive_int("snp_chunk", snp_chunk)
    trait_chunk = _positive_int("trait_chunk", trait_chunk)
    from ..fitting.multivariate import cbind_traits

    if cbind_traits(formula) is not None:        # a trait set tested jointly (GEMMA -lmm 4 -n 1 2 ...)
        from .multivariate_scan import multivariate_scan

        return multivariate_scan(formula, data, genotypes=genotypes, relmat=relmat, snp_chunk=snp_chunk,
                                 progress=progress)
    if mode not in ("exact", "null"):
        raise ValueError(f"mode must be 'exact' or 'null', got {mode!r}")
    if test not in ("all",) + TESTS:
        raise ValueError(f"test must be one of 'all', 'wald', 'lrt', 'score', got {test!r}")
    from ..model.plink import as_genotypes

    problem = scan_problem(formula, data, relmat, responses, as_genotypes(genotypes))
    stats = run_scan(problem, mode=mode, lrt=test in ("all", "lrt"), snp_chunk=snp_chunk,
                     trait_chunk=trait_chunk, progress=progress, devices=devices, center=center_relmat)
    return results_frame(problem, stats, test)


def _positive_int(name: str, value):
    """``value`` as an int if it is None or a positive integer, else a ``JaxlmmError`` naming ``name``."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise JaxlmmError(f"{name} must be a positive integer (or None), got {value!r}")
    return int(value)


def relmat_scale(K: np.ndarray) -> float:
    """The scale the scan divides K by before its eigendecompositions: the mean diagonal of K after
    double-centring on all the scan's individuals, ``trace(P K P) / n`` with ``P = I - 1 1^T / n`` (the
    mean of the centred K's eigenvalues; the mean diagonal of K itself in the degenerate case where
    that is not positive).

    Why: the search for ``lambda = sigma_g^2 / sigma_e^2`` runs on GEMMA's fixed range [1e-5, 1e5], which
    means something only for K on a known scale -- for K x c the optimum is lambda / c, and K x 1e8 pinned
    every marker at the range's end.  Searching on ``K / scale`` makes the scan invariant to the scale of
    K (K x c gives the same ``K / scale`` up to rounding), and a GRM (GEMMA's ``-gk``, ``jaxlmm.grm``:
    mean centred diagonal ~1) keeps nearly GEMMA's own range.  The centred diagonal rather than the raw
    one (or the raw trace / n) because a constant added to K is absorbed by the intercept and must not
    change the scale: it is the average variance K gives an individual around the mean, the usual
    normalization of a kinship matrix (GCTA, LDAK).  ``lambda`` is reported on the user's scale of K:
    the scaled search's value divided by this scale."""
    n = K.shape[0]
    diag = np.diagonal(K)
    scale = float(np.mean(diag) - np.sum(K) / (n * n))
    if not (np.isfinite(scale) and scale > 0):
        scale = float(np.mean(diag))
    if not (np.isfinite(scale) and scale > 0):
        raise DataError("the relationship matrix has no positive scale: its mean diagonal is not positive, "
                        "before and after centring")
    return scale


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
    from ..fitting.responses import response_matrix
    from ..model.design import _as_frame, build_design
    from ..model.plink import match_individuals
    from ..many.spectral import spectral_layout

    from ..model.relmat import relmat_argument

    frame = _as_frame(data)
    relmat = relmat_argument(relmat)
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

    from ..core.spectral import scan as core
    from ..core.spectral import scan_data
    from ..parallel.sharding import on_mesh, put, resolve_devices, round_chunk, trait_mesh

    devices = resolve_devices(None, devices)
    mesh = trait_mesh(devices)
    host = devices[0].platform == "cpu" and mesh is None   # LAPACK and BLAS on the host: faster than XLA's
    snp_chunk = int(snp_chunk or (host_snp_chunk(len(problem.rows)) if host else GPU_SNP_CHUNK))
    trait_chunk = round_chunk(int(trait_chunk or (1 if host else default_trait_chunk(len(problem.rows),
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
    X = np.asarray(problem.X, float)
    chunks = _GenotypeCache(problem, snp_chunk, host, (~np.isnan(problem.Y.T)).astype(float))
    scale = relmat_scale(problem.K)     # the search runs on K / scale (relmat_scale says why)
    traits = _TraitCache(problem.K / scale, X, center)
    bar = progress_bar(-(-todo.size // trait_chunk) * chunks.n_chunks, progress)
    pending = None          # the last dispatched chunk, collected once the next one is dispatched
    program = None if host else on_mesh(core.scan_chunk, mesh, core.CHUNK_SPLIT, mode=mode, lrt=lrt)

    def collect(item):
        stats, sel, start, stop = item
        for name, values in jax.device_get(stats)._asdict().items():
            out[name][sel, start:stop] = np.asarray(values)[:sel.size, :stop - start]
        if bar is not None:
            bar.update(1)

    for lo in range(0, todo.size, trait_chunk):
        sel = todo[lo:lo + trait_chunk]
        take = np.concatenate([sel, np.repeat(sel[:1], trait_chunk - sel.size)])
        Y = np.nan_to_num(problem.Y[:, take].T)
        observed = (~np.isnan(problem.Y[:, take].T)).astype(float)
        if host:
            parts = traits.host(Y, observed)
            series = _stack_series(*zip(*((b, g, o) for (b, _, _, g), o in zip(parts, observed))))
        else:
            U, coef, Rb, series = traits.device(Y, observed, mesh)
        null = core.null_program(series)
        for start, stop, chunk in chunks:
            if host:
                moments = [scan_data.host_moments(chunk, j, Ui, np.flatnonzero(o > 0), Rbi, b.coef, snp_chunk)
                           for j, (b, Ui, Rbi, _), o in zip(take, parts, observed)]
                moments = scan_data.MarkerMoments(*(np.stack(a) for a in zip(*moments)))
                stats = core.scan_moments_program(series, null, moments, mode=mode, lrt=lrt)
            else:
                stats = program(U, coef, Rb, put(jax.numpy.asarray(observed), mesh, True), series, null, chunk)
            if pending is not None:
                collect(pending)
            pending = (stats, sel, start, stop)
    if pending is not None:
        collect(pending)
    if bar is not None:
        bar.close()
    out["lambda_reml"] /= scale                      # back on the user's scale of K
    failed = np.isin(out["status"], codes.SCAN_TESTED) & ~np.isfinite(out["beta"]) & ~np.isnan(out["af"])
    out["status"][failed] = codes.NONFINITE          # e.g. a null model that could not be fitted
    return out


def _stack_series(bases, gram_b, observed):
    """One ``TraitSeries`` with a leading trait axis from per-trait weight bases (of one width), the
    coefficients ``gram_b`` and the observed rows."""
    from ..core.spectral.scan import TraitSeries

    return TraitSeries(np.stack([b.poles for b in bases]), np.stack([b.coef.sum(axis=0) for b in bases]),
                       np.array([b.logdet0 for b in bases]), np.array([float(b.coef.shape[0]) for b in bases]),
                       np.stack([np.asarray(g) for g in gram_b]), np.array([o.sum() for o in observed]))


class _TraitCache:
    """Each trait's eigendecomposition (of K restricted to, and centred on, its observed individuals),
    weight basis and rotated ``[W, y]``.  The last few eigendecompositions are kept by set of observed
    individuals: traits observed on the same individuals (often all of them) share one."""

    SIZE = 4

    def __init__(self, K: np.ndarray, X: np.ndarray, center: bool):
        self.K, self.X, self.center, self.entries = K, X, center, {}

    def _eigen(self, observed: np.ndarray):
        from ..core.spectral.scan_data import host_eigen

        key = (observed > 0).tobytes()
        if key not in self.entries:
            if len(self.entries) >= self.SIZE:
                self.entries.pop(next(iter(self.entries)))
            rows = np.flatnonzero(observed > 0)
            U, d = host_eigen(self.K, rows, self.center)
            U_rows = np.zeros((observed.size, rows.size))
            U_rows[rows] = U
            self.entries[key] = (U_rows, d, U)
        return self.entries[key]

    def host(self, Y: np.ndarray, observed: np.ndarray) -> list:
        """``(basis, U_rows, Rb, gram_b)`` of each trait (rows of ``Y`` and ``observed``), on the host
        (``U_rows``: ``scan_data.host_moments``); the traits share one set of poles."""
        from ..core.spectral.scan import LOG_RANGE
        from ..core.spectral.scan_basis import weight_bases
        from ..core.spectral.scan_data import trait_pieces

        eig = [self._eigen(o) for o in observed]
        bases = weight_bases([d for _, d, _ in eig], *LOG_RANGE)
        return [(b, U_rows, *trait_pieces(U, b.coef, self.X[o > 0], y[o > 0], None, np))
                for b, (U_rows, _, U), y, o in zip(bases, eig, Y, observed)]

    def device(self, Y: np.ndarray, observed: np.ndarray, mesh):
        """``(U, coef, Rb, series)`` of a chunk of traits, in programs on the devices (the weight bases of
        the eigenvalues on the host)."""
        import jax

        from ..core.spectral import scan as core
        from ..core.spectral.scan_basis import weight_bases
        from ..parallel.sharding import on_mesh, put

        K, X = put((jax.numpy.asarray(self.K), jax.numpy.asarray(self.X)), mesh, False)
        Yd, od = put((jax.numpy.asarray(Y), jax.numpy.asarray(observed)), mesh, True)
        U, d = on_mesh(core.trait_eigen, mesh, core.EIGEN_SPLIT, center=self.center)(K, od)
        bases = weight_bases(list(np.asarray(jax.device_get(d))), *core.LOG_RANGE)   # one set of poles per chunk
        coef = put(jax.numpy.asarray(np.stack([b.coef for b in bases])), mesh, True)
        Rb, gram_b = on_mesh(core.traits_pieces, mesh, core.PIECES_SPLIT)(U, coef, X, Yd, od)
        return U, coef, Rb, _stack_series(bases, list(jax.device_get(gram_b)), observed)


def host_snp_chunk(n: int) -> int:
    """Markers per chunk on the host: ``CPU_SNP_CHUNK``, or fewer (a multiple of 64) where its working
    arrays -- the dosages, their squares, the missing mask, the imputed and the rotated markers, each
    n x chunk in float64 -- would take more than an eighth of the free memory."""
    from ..model.memory import available_bytes

    fits = available_bytes() // 8 // (5 * 8 * max(n, 1))
    return int(max(64, min(CPU_SNP_CHUNK, fits // 64 * 64)))


def default_trait_chunk(n: int, snp_chunk: int, devices) -> int:
    """Traits per call on an accelerator: as many (up to 64) as a quarter of the free memory of a device
    holds -- per trait its eigenvectors and their weight-basis coefficients (~n^2) and, per marker, the
    imputed and rotated dosages (2n) and the Gram coefficients with their grid evaluation."""
    from ..model.memory import available_bytes

    per_trait = 8 * (2 * n * n + snp_chunk * (3 * n + 12 * 16 * 32))
    fits = int(available_bytes(devices[0]) // 4 // per_trait) * len(devices)
    return max(1, min(64, fits))


class _GenotypeCache:
    """Marker chunks of a static width, read once when the whole matrix (with its squares and missing
    mask) fits in ``MAX_CACHE_BYTES`` and a quarter of the free memory, else read again for every chunk of
    traits.  For the host path a chunk is a ``core.scan.HostChunk`` (the
    program's width is reached by padding the moments); for the programs, the dosages padded with a
    constant marker."""

    MAX_CACHE_BYTES = 2 << 30

    def __init__(self, problem: ScanProblem, width: int, host: bool, observed: np.ndarray):
        from ..model.memory import available_bytes

        self.problem, self.width, self.host, self.observed = problem, width, host, observed
        self.n_snps = problem.genotypes.n_snps
        self.n_chunks = -(-self.n_snps // width)
        limit = min(self.MAX_CACHE_BYTES, available_bytes() // 4)
        small = 3 * len(problem.rows) * self.n_snps * 8 <= limit
        self.cached = [self._read(k) for k in range(self.n_chunks)] if small else None

    def _read(self, k: int):
        from ..core.spectral.scan_data import HostChunk

        start, stop = k * self.width, min((k + 1) * self.width, self.n_snps)
        G = self.problem.genotypes.read(self.problem.rows, start, stop)
        if self.host:
            return start, stop, HostChunk(np.asarray(G, dtype=np.float64), self.observed)
        if G.shape[1] < self.width:
            G = np.concatenate([G, np.zeros((G.shape[0], self.width - G.shape[1]))], axis=1)
        return start, stop, G

    def __iter__(self):
        for k in range(self.n_chunks):
            yield self.cached[k] if self.cached is not None else self._read(k)


def results_frame(problem: ScanProblem, stats: dict, test: str = "all") -> pd.DataFrame:
    """The tidy table: one row per (trait, marker), p-values from the statistics (``scipy.special``)."""
    from scipy import special

    T, m = stats["beta"].shape
    df = (stats["n_obs"] - problem.X.shape[1] - 1)[:, None].astype(float)
    want = TESTS if test == "all" else (test,)
    p = {"wald": special.fdtrc(1, df, stats["f_wald"]), "lrt": special.chdtrc(1, stats["chi2_lrt"]),
         "score": special.fdtrc(1, df, stats["f_score"])}
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
