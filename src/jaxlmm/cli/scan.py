"""``jaxlmm scan``: an association scan from the command line (``jaxlmm.scan``).

    jaxlmm scan --bfile geno --pheno traits.csv --relmat id=K.csv --responses 'trait*' --out results/
    jaxlmm scan ... --responses 'y1,y2,y3' --joint --out results/    (the traits tested jointly)

writes (``output_dir.write_tables``: each file complete or not at all, no other
file of the folder touched) one table per trait (``STEM.assoc.csv``: the rows of
``jaxlmm.scan`` for that trait), a Manhattan and a QQ plot per trait
(``STEM.manhattan.png``, ``STEM.qq.png``; needs matplotlib, skipped with a note
otherwise) and ``summary.csv`` (per trait: its ``assoc_file``, the number of
individuals, the markers tested and the best marker with its p-value).  ``STEM``
is the trait's name made safe for a file name (``file_stems``), unique per trait.
With ``--coordinator`` (``jax.distributed``), process K scans the K-th slice of
the traits (``distributed.trait_slice``) and writes its files to ``DIR/processK``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def add_parser(sub) -> None:
    """Register the ``scan`` subcommand on the ``jaxlmm`` parser's subparsers ``sub``."""
    p = sub.add_parser("scan", help="association scan: every marker x every trait (GEMMA -lmm 4)",
                       description="Test every marker of a PLINK file set for association with every trait, "
                                   "with a relationship matrix for relatedness (GEMMA's -lmm 4: Wald, "
                                   "likelihood-ratio and score tests, lambda refitted by REML per marker).")
    p.add_argument("--bfile", required=True, metavar="PREFIX", help="PLINK PREFIX.bed/.bim/.fam")
    p.add_argument("--pheno", required=True, metavar="CSV", help="traits (and covariates), one row per individual")
    p.add_argument("--relmat", required=True, metavar="ID=K.csv",
                   help="the id column of --pheno and its relationship matrix (first column and header: ids)")
    p.add_argument("--responses", metavar="PATTERN", help="traits to scan: a glob such as 'trait*' or a "
                   "comma-separated list (default: every column except the id and covariates)")
    p.add_argument("--covariates", metavar="COLS", default="", help="comma-separated covariate columns")
    p.add_argument("--mode", choices=["exact", "null"], default="exact",
                   help="exact: lambda refitted per marker (default); null: the null model's lambda (EMMAX)")
    p.add_argument("--test", choices=["all", "wald", "lrt", "score"], default="all")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the tables and plots")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out folder: files of the "
                   "names written are replaced, every other file is left alone")
    p.add_argument("--no-plots", action="store_true", help="write the tables only")
    p.add_argument("--joint", action="store_true", help="test the traits jointly: one multivariate scan of the "
                   "trait set (GEMMA -lmm 4 -n 1 2 ...; chi-square tests with one df per trait) written to "
                   "joint.assoc.csv")
    p.add_argument("--snp-chunk", type=int, metavar="N", help="markers per compiled call")
    p.add_argument("--trait-chunk", type=int, metavar="N", help="traits per compiled call")
    multi = p.add_argument_group("several hosts (jax.distributed)",
                                 "run the same command on every host with its own --process-id; process K "
                                 "scans its slice of the traits on its local devices and writes its files "
                                 "to DIR/processK (DIR on a file system every host sees)")
    multi.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator")
    multi.add_argument("--num-processes", type=int, metavar="N")
    multi.add_argument("--process-id", type=int, metavar="K")


def run(args) -> int:
    """``jaxlmm scan``: every input checked here first, each problem an ``ArgumentError`` (or the scan's
    ``DataError``) that ``cli.main`` reports as one line with exit status 2."""
    import pandas as pd

    from .inputs import check_column, fail, match_columns, numeric_columns, read_csv, read_relmat, relmat_spec
    from ..errors import count_argument
    from .output_dir import check_target, write_tables

    for flag, value in (("--snp-chunk", args.snp_chunk), ("--trait-chunk", args.trait_chunk)):
        if value is not None:
            count_argument(value, flag, 1)
    group, relmat_file = relmat_spec(args.relmat)
    out = args.out
    if args.coordinator:
        if args.num_processes is None or args.process_id is None:
            fail("--coordinator needs --num-processes and --process-id")
        count_argument(args.num_processes, "--num-processes", 1)
        if not 0 <= args.process_id < args.num_processes:
            fail(f"--process-id must be in 0..{args.num_processes - 1}, got {args.process_id}")
        out = str(Path(args.out) / f"process{args.process_id}")
    check_target(out, args.force, ["summary.csv"], _inputs(args))
    data = read_csv(args.pheno, "--pheno file", dtype={group: str})
    source = Path(args.pheno).name
    check_column(data, group, f"--relmat {group}=...", source)
    covariates = [c.strip() for c in args.covariates.split(",") if c.strip()]
    for col in covariates:
        check_column(data, col, "--covariates", source)
    excluded = {group: f"the id column (--relmat {group}=...)"}
    excluded.update({c: "a --covariates column" for c in covariates})
    numeric = numeric_columns(data)
    if args.responses is not None:
        traits = match_columns(args.responses, list(data.columns), excluded=excluded, numeric=numeric,
                               source=source)
    else:
        traits = [c for c in data.columns if c not in excluded]
        text = [str(c) for c in traits if c not in numeric]
        if text:
            fail(f"--pheno file {source!r} has the non-numeric column{'s' if len(text) > 1 else ''} "
                 f"{', '.join(map(repr, text[:5]))}, which would be scanned as traits: name the traits with "
                 "--responses, or list such a column in --covariates")
        if not traits:
            fail(f"--pheno file {source!r} has no trait columns (every column is the id or a covariate)")
    formula = "~ " + " + ".join(["1"] + [f"`{c}`" for c in covariates]) + f" + (1 | {group})"
    genotypes = _genotypes(args.bfile)
    relmat = {group: read_relmat(group, relmat_file)}
    if not args.coordinator:
        return _scan_and_write(args, formula, data, traits, relmat, out, genotypes)
    import jax

    from .distributed import trait_slice

    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id)
    try:
        traits = trait_slice(traits, args.process_id, args.num_processes)
        if not traits:
            write_tables(out, {"summary.csv": (pd.DataFrame(columns=["trait"]), False)}, args.force, _inputs(args))
            return 0
        return _scan_and_write(args, formula, data, traits, relmat, out, genotypes)
    finally:
        jax.distributed.shutdown()      # a barrier: process 0's coordinator outlives the others


def _genotypes(prefix: str):
    """``read_plink(prefix)``, its problems (a missing or malformed file) naming ``--bfile``."""
    from .inputs import fail
    from ..errors import DataError
    from ..model.plink import read_plink

    try:
        return read_plink(prefix)
    except DataError as exc:
        fail(f"--bfile {prefix}: {exc}")


def _scan_and_write(args, formula, data, traits, relmat, out, genotypes) -> int:
    """Scan ``traits`` and write their tables and plots (and ``summary.csv``) to ``out``."""
    from ..gwas.association import scan
    from .output_dir import write_tables

    if args.joint:
        return _joint_scan_and_write(args, formula, data, traits, relmat, out, genotypes)
    results = scan(formula, data, genotypes=genotypes, relmat=relmat, responses=traits, test=args.test,
                   mode=args.mode, snp_chunk=args.snp_chunk, trait_chunk=args.trait_chunk, progress=True)
    tables = per_trait_files(results, args.test, plots=not args.no_plots)
    write_tables(out, tables, args.force, _inputs(args))
    print(f"scanned {len(traits)} trait{'s' if len(traits) > 1 else ''} x {results['snp'].nunique()} markers; "
          f"wrote {len(tables)} files to {out}", file=sys.stderr)
    return 0


def _joint_scan_and_write(args, formula, data, traits, relmat, out, genotypes) -> int:
    """``--joint``: the traits as one ``cbind(...)`` response, one table ``joint.assoc.csv`` (and its plots)."""
    from .inputs import fail
    from ..gwas.association import scan
    from .output_dir import write_tables

    if len(traits) < 2:
        fail("--joint needs two or more traits (--responses)")
    if args.mode != "exact" or args.coordinator:
        fail("--joint re-estimates the covariances per marker (--mode exact) on one host (no --coordinator)")
    lhs = "cbind(" + ", ".join(f"`{t}`" for t in traits) + ")"
    results = scan(f"{lhs} {formula}", data, genotypes=genotypes, relmat=relmat, snp_chunk=args.snp_chunk,
                   progress=True)
    shown = "wald" if args.test == "all" else args.test
    files = {"joint.assoc.csv": (results, False)}
    figures = None if args.no_plots else _plot_module()
    tested = results[results["status"] == "converged"]
    if figures is not None and len(tested):
        files["joint.manhattan.png"] = (figures.manhattan(results, test=shown), False)
        files["joint.qq.png"] = (figures.qq(results, test=shown), False)
    write_tables(out, files, args.force, _inputs(args))
    print(f"scanned {len(traits)} traits jointly x {len(results)} markers; wrote {len(files)} files to {out}",
          file=sys.stderr)
    return 0


def per_trait_files(results, test: str, plots: bool = True) -> dict:
    """``{file name: (table or figure, write_index)}``: per-trait tables and plots and ``summary.csv`` (whose
    ``assoc_file`` column names each trait's table; its plots share the table's stem)."""
    import pandas as pd

    from ..gwas.association import TESTED_STATUSES

    shown = "wald" if test == "all" else test
    figures = _plot_module() if plots else None
    files, summary = {}, []
    groups = list(results.groupby("trait", sort=False, observed=True))
    stems = file_stems([str(trait) for trait, _ in groups])
    for (trait, rows), stem in zip(groups, stems):
        files[f"{stem}.assoc.csv"] = (rows, False)
        tested = rows[rows["status"].isin(TESTED_STATUSES)]
        best = tested.loc[tested[f"p_{shown}"].idxmin()] if len(tested) else None
        summary.append({"trait": trait, "assoc_file": f"{stem}.assoc.csv", "n_obs": int(rows["n_obs"].iloc[0]),
                        "markers_tested": len(tested), "best_snp": None if best is None else best["snp"],
                        f"best_p_{shown}": None if best is None else best[f"p_{shown}"]})
        if figures is not None and len(tested):
            files[f"{stem}.manhattan.png"] = (figures.manhattan(rows, test=shown), False)
            files[f"{stem}.qq.png"] = (figures.qq(rows, test=shown), False)
    files["summary.csv"] = (pd.DataFrame(summary), False)
    return files


def _plot_module():
    try:
        import matplotlib

        matplotlib.use("Agg")
        from .. import plot
    except ImportError:
        print("jaxlmm: note: matplotlib is not installed; no plots written", file=sys.stderr)
        return None
    return plot


def _inputs(args) -> list[str]:
    """The files ``jaxlmm scan`` reads: ``--out`` must not overwrite them."""
    return [args.pheno, args.relmat.partition("=")[2]] + [f"{args.bfile}{ext}" for ext in (".bed", ".bim", ".fam")]


MAX_STEM = 100


def _file_stem(name: str) -> str:
    """``name`` with every run of characters other than letters, digits, ``_``, ``.`` and ``-`` as ``_``, no
    leading dot (no hidden files, no ``..``), at most ``MAX_STEM`` characters (a long name is cut and
    given its hash)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    stem = re.sub(r"^\.+", "_", stem) or "trait"
    if len(stem) > MAX_STEM:
        stem = f"{stem[:MAX_STEM - 9]}-{_hash(name)}"
    return stem


def _hash(name: str) -> str:
    import hashlib

    return hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def file_stems(names: list[str]) -> list[str]:
    """A file stem per trait name, unique even on a case-insensitive file system: a name that is already a
    safe stem keeps it; a sanitized one that would collide (``a/b`` and ``a_b``, ``A`` and ``a``) gets
    ``-`` and the first 8 hex digits of its name's SHA-1 (then a counter, if even that collides)."""
    stems, used = [None] * len(names), set()
    # first the names that need no change, so that a trait called ``a_b`` is always ``a_b.assoc.csv``
    order = sorted(range(len(names)), key=lambda i: _file_stem(names[i]) != names[i])
    for i in order:
        base = stem = _file_stem(names[i])
        k = 0
        while stem.casefold() in used:
            k += 1
            stem = f"{base}-{_hash(names[i])}" + (f"-{k}" if k > 1 else "")
        used.add(stem.casefold())
        stems[i] = stem
    return stems
