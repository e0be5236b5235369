"""Command line: ``jaxlmm fit DATA.csv "FORMULA"`` and ``jaxlmm fit --example NAME``.

The summary goes to standard output; with ``--out DIR`` the tables are written
as CSV files (``fixef.csv``, ``ranef.csv``, ``varcorr.csv``, ``theta.csv``; a fit with structured
covariances or ``--dispformula`` also ``covariance_parameters.csv``: its variances, correlations and
dispersion coefficients with Wald SEs).
JAX's persistent compilation cache (``~/.cache/jaxlmm/jax`` or
``$JAXLMM_CACHE``) makes the second run of a model of the same shape skip
compilation.

Bad input -- a file that cannot be read, a column or option that does not fit, a formula or data the
fit refuses -- is one line on standard error, ``jaxlmm: error: ...`` naming the option, file, line or
column, and exit status 2 (``report``; every ``JaxlmmError`` of every command goes through it).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

EPILOG = """examples:
  jaxlmm fit --example sulfur
  jaxlmm fit sleepstudy.csv "Reaction ~ Days + (Days | Subject)" --out results/
  jaxlmm fit trial.csv "yield ~ 0 + location + (1 | block)" --factors block --ml
  jaxlmm fit traits.csv "~ x + (1 | g)" --responses 'trait*' --out results/
  jaxlmm datasets

shipped examples (jaxlmm fit --example NAME):
{examples}
"""


def _examples_text() -> str:
    from ..datasets import DATASETS

    return "\n".join(f"  {name:<16} {formula}" for name, (_, _, formula) in sorted(DATASETS.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxlmm",
        description="Linear mixed models with lme4 formulas, fitted in JAX (REML or ML).",
        epilog=EPILOG.format(examples=_examples_text()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fit = sub.add_parser(
        "fit", help="fit a model and print its summary",
        description="Fit an lme4 formula to a CSV file (or a shipped example) and print lme4's summary.",
        epilog=EPILOG.format(examples=_examples_text()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("data", nargs="?", help="CSV file with a header row")
    fit.add_argument("formula", nargs="?", help='lme4 formula, e.g. "y ~ x + (1 | g)"')
    fit.add_argument("--example", metavar="NAME", help="fit a shipped dataset with its standard formula "
                     "(a FORMULA given as well overrides the standard one)")
    fit.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit.add_argument("--ddf", choices=["satterthwaite", "kenward-roger"],
                     help="add denominator df and p-values to the fixed-effects table (as lmerTest); "
                          "default: lme4's table (estimates, SEs, t values)")
    fit.add_argument("--out", metavar="DIR", help="write fixef.csv, ranef.csv, varcorr.csv, theta.csv here "
                     "(each written in full first, then moved into place; no other file is touched)")
    fit.add_argument("--force", action="store_true", help="write into a non-empty --out folder: files of the "
                     "names written are replaced, every other file is left alone")
    fit.add_argument("--factors", metavar="COLS", default="",
                     help="comma-separated numeric columns to treat as factors (categorical)")
    fit.add_argument("--dispformula", metavar="FORMULA",
                     help='residual variance model, as glmmTMB\'s: log(variance) linear in the columns of a '
                          'one-sided formula, e.g. "~ location" (one variance per level) or "~ x" (a trend)')
    fit.add_argument("--weights", metavar="COL", help="column of prior weights")
    fit.add_argument("--offset", metavar="COL", help="column holding an offset")
    fit.add_argument("--responses", metavar="PATTERN",
                     help="fit every matching column as a trait (shell glob such as 'trait*', or a "
                          "comma-separated list); the formula's left side may then be omitted")
    fit.add_argument("--relmat", action="append", default=[], metavar="GROUP=K.csv",
                     help="relationship matrix of a grouping factor (GBLUP): a CSV whose first column and "
                          "header hold the level names; repeat for several factors")
    fit.add_argument("--chunk-size", type=int, metavar="N", help="traits per compiled call (batch fits)")
    fit.add_argument("--float32", action="store_true", help="compute in single precision")
    fit.add_argument("--verbose", action="store_true",
                     help="print the factorization plan (predicted work and memory) and the optimizer's iterations")
    multi = fit.add_argument_group("several hosts (jax.distributed; with --responses)",
                                   "run the same command on every host with its own --process-id; each "
                                   "process fits its slice of the traits on its local devices and writes "
                                   "results.partK.csv to --out; process 0 merges them into results.csv "
                                   "when --out is a shared directory")
    multi.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator")
    multi.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    multi.add_argument("--process-id", type=int, metavar="K", help="this process's index, 0..N-1")
    fit.add_argument("--no-cache", action="store_true", help="do not use the persistent compilation cache")
    sub.add_parser("datasets", help="list the shipped example datasets")
    from .scan import add_parser as add_scan_parser

    add_scan_parser(sub)
    return parser


def _load(args):
    """The data, formula and name of ``jaxlmm fit``: a shipped example or a CSV file, with ``--factors``
    applied and the ``--weights`` and ``--offset`` columns checked."""
    from .inputs import check_column, fail, read_csv
    from ..datasets import DATASETS, example_formula, load_dataset

    if args.example:
        if args.example not in DATASETS:
            fail(f"--example: no shipped dataset {args.example!r} (jaxlmm datasets lists them: "
                 f"{', '.join(sorted(DATASETS))})")
        data = load_dataset(args.example)
        if args.data and not args.formula:
            args.formula, args.data = args.data, None
        formula, name, source = args.formula or example_formula(args.example), args.example, f"--example {args.example}"
    else:
        if not args.data or not args.formula:
            fail("fit needs DATA.csv and FORMULA (or --example NAME); see jaxlmm fit --help")
        # grouping factors are labels: read them as text, so ids such as 0001 keep their zeros
        data = read_csv(args.data, "data file", dtype={c: str for c in _grouping_columns(args.formula)})
        formula, name, source = args.formula, Path(args.data).stem, Path(args.data).name
    for col in filter(None, (c.strip() for c in args.factors.split(","))):
        check_column(data, col, "--factors", source)
        data[col] = data[col].astype("category")
    for option, col in (("--weights", args.weights), ("--offset", args.offset)):
        if col is not None:
            check_column(data, col, option, source, numeric=True)
    return data, formula, name, source


def _grouping_columns(formula: str) -> set[str]:
    """The grouping-factor columns of ``formula`` (empty if it does not parse: the fit reports that)."""
    from ..errors import FormulaError
    from ..model.formula import parse_formula

    try:
        return {v for term in parse_formula(formula).random for v in term.group_vars}
    except FormulaError:
        return set()


def _formula_columns(formula: str, columns) -> set[str]:
    """Every column ``formula`` names (variables and grouping factors)."""
    from ..errors import FormulaError
    from ..model.formula_grammar import tokenize

    try:
        names = {t.text.strip("`") for t in tokenize(formula) if t.kind in ("name", "quoted")}
    except FormulaError:
        return set()
    return {c for c in columns if str(c) in names}


FIT_FILES = ("fixef.csv", "ranef.csv", "varcorr.csv", "theta.csv")
COVARIANCE_FILE = "covariance_parameters.csv"   # structured fits (and --dispformula) only
BATCH_FILES = ("results.csv", "fixef.csv", "se.csv", "theta.csv", "diagnostics.csv", "varcorr.csv")


def _inputs(args) -> list[str]:
    """The files the command reads: ``--out`` must not overwrite them."""
    files = [] if args.example or not args.data else [args.data]
    return files + [item.partition("=")[2] for item in args.relmat]


def _write_tables(fit, out: Path, force: bool, inputs=()) -> list[Path]:
    import pandas as pd

    from .output_dir import write_tables

    fixef = pd.DataFrame({"term": fit.fixef_names, "estimate": fit.fixef.to_numpy(), "std_error": fit.se.to_numpy()})
    fixef["t_value"] = fixef["estimate"] / fixef["std_error"]
    theta = pd.DataFrame({"name": fit.theta_names, "theta": fit.theta})
    files = dict(zip(FIT_FILES, (fixef, fit.ranef, fit.varcorr, theta)))
    if _structured(fit):    # theta.csv holds its optimizer's parameters (e.g. atanh rho): report the model's
        files[COVARIANCE_FILE] = fit.covariance_parameters
    return write_tables(out, {name: (frame, False) for name, frame in files.items()}, force, inputs)


def _structured(fit) -> bool:
    return fit.kind == "structured"


def _relmats(specs: dict) -> dict | None:
    from .inputs import read_relmat

    return {group: read_relmat(group, file) for group, file in specs.items()} or None


def _traits(args, data, formula: str, source: str) -> list[str]:
    """The columns ``--responses`` names: numeric, and neither a column of the formula nor the
    ``--weights`` or ``--offset`` column; the formula must then have no left side."""
    from .inputs import fail, match_columns, numeric_columns
    from ..errors import FormulaError
    from ..model.formula import parse_formula

    try:
        response = parse_formula(formula).response
    except FormulaError:
        response = None                 # the fit reports the formula's own error
    if response is not None:
        fail(f"--responses fits each matching column as the response, so the formula must have no left side: "
             f"write '~ {formula.split('~', 1)[1].strip()}' instead of {formula!r}")
    excluded = {c: "in the formula" for c in _formula_columns(formula, data.columns)}
    excluded.update({c: f"the {option} column" for option, c in (("--weights", args.weights),
                                                                  ("--offset", args.offset)) if c})
    return match_columns(args.responses, list(data.columns), excluded=excluded, numeric=numeric_columns(data),
                         source=source)


def _cmd_batch(args, data, formula, name, traits) -> int:
    from ..fitting.lmer import lmer

    if args.coordinator:
        from .distributed import run_distributed_batch

        return run_distributed_batch(args, data, formula, name, traits)
    batch = lmer(formula, data, responses=traits, reml=not args.ml, weights=args.weights, offset=args.offset,
                 dtype="float32" if args.float32 else None, data_name=name, chunk_size=args.chunk_size,
                 relmat=args.relmats, dispformula=args.dispformula)
    print(repr(batch))
    print(batch.diagnostics.head(20).to_string())
    if args.out:
        from .output_dir import write_tables

        frames = (batch.to_frame(), batch.fixef, batch.se, batch.theta, batch.diagnostics, batch.varcorr)
        tables = {name: (frame, name != "varcorr.csv") for name, frame in zip(BATCH_FILES, frames)}
        write_tables(args.out, tables, args.force, _inputs(args))
        print(f"wrote {len(tables)} tables to {args.out}", file=sys.stderr)
    return 0


def _cmd_fit(args) -> int:
    from .. import _config

    if not args.no_cache and not os.environ.get("JAXLMM_NO_CACHE"):
        _config.enable_compilation_cache(ahead_of_time=True)
    from .inputs import relmat_specs
    from ..errors import JaxlmmWarning, count_argument
    from ..fitting.lmer import lmer

    if args.chunk_size is not None:
        count_argument(args.chunk_size, "--chunk-size", 1)
    specs = relmat_specs(args.relmat)
    data, formula, name, source = _load(args)
    traits = _traits(args, data, formula, source) if args.responses is not None else None
    args.relmats = _relmats(specs)
    if args.out and not args.coordinator:
        from .output_dir import check_target

        check_target(args.out, args.force, BATCH_FILES if traits is not None else FIT_FILES + (COVARIANCE_FILE,),
                     _inputs(args))
    if traits is not None:
        return _cmd_batch(args, data, formula, name, traits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JaxlmmWarning)  # the summary prints the messages
        fit = lmer(formula, data, reml=not args.ml, weights=args.weights, offset=args.offset,
                   dtype="float32" if args.float32 else None, data_name=name, relmat=args.relmats,
                   verbose=args.verbose, dispformula=args.dispformula)
    print(fit.summary(ddf=args.ddf))
    if args.relmats and fit._h2_term is not None:
        print(f"\nHeritability h2 = {fit.h2:.4f} (SE {fit.h2_se:.4f})")
    if args.out:
        paths = _write_tables(fit, Path(args.out), args.force, _inputs(args))
        for path in paths:
            print(f"wrote {path}", file=sys.stderr)
    return 0


def report(exc: Exception) -> int:
    """The one way the command line reports bad input: ``jaxlmm: error: MESSAGE`` as one line on standard
    error (the message names the option, file, line or column), exit status 2, no traceback."""
    print("jaxlmm: error: " + " ".join(str(exc).split()), file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from .._config import configure_xla
    from ..errors import JaxlmmError

    configure_xla()  # the command line owns its process (see _config.configure_xla)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "fit":
            return _cmd_fit(args)
        if args.command == "scan":
            from .scan import run as run_scan

            return run_scan(args)
    except JaxlmmError as exc:          # every input error of every command: one line, status 2
        return report(exc)
    if args.command == "datasets":
        from ..datasets import DATASETS

        for name, (fname, factors, formula) in sorted(DATASETS.items()):
            print(f"{name:<16} {formula}")
        return 0
    parser.print_help()
    return 0


def run() -> None:
    """The ``jaxlmm`` command: ``main``, then a fast exit.

    When ``main`` returns every result is written (atomically) and the output is flushed here;
    what is left is the interpreter's teardown -- freeing JAX's and pandas' objects and shutting
    the XLA client down -- which took about 0.3 s of a 1.4 s ``jaxlmm fit`` on a 2-core CPU.  The
    command skips it with ``os._exit``; ``main`` called from Python (tests, notebooks) returns
    normally.
    """
    try:
        code = main()
        sys.stdout.flush()
    except SystemExit as exc:          # argparse errors and --help
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BrokenPipeError:            # the reader went away (``jaxlmm fit ... | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = 141
    sys.stderr.flush()
    os._exit(int(code or 0))


if __name__ == "__main__":  # pragma: no cover
    run()
