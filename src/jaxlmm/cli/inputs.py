"""Command-line inputs shared by ``jaxlmm fit`` and ``jaxlmm scan``: CSV files, ``--relmat GROUP=FILE.csv``
and ``--responses`` patterns.

Every problem is an ``ArgumentError`` (a ``JaxlmmError``) naming the option, the file and, where there is
one, the line or the column; ``cli.main`` prints it as one line, ``jaxlmm: error: ...``, and returns 2.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ArgumentError


def fail(message: str):
    raise ArgumentError(message)


def read_csv(path, what: str, *, dtype=None, converters=None):
    """The CSV file ``path`` (with a header row) as a DataFrame; ``what`` names it in messages ("data file",
    "--pheno file").

    Refused, each with a message naming the file: a path that does not exist or is not a file, an empty
    file, text that is not UTF-8, a quoted field never closed, a row with more or fewer fields than the
    header (pandas would shift a long first row's columns, or fill a short row with missing values), a
    column name given twice (pandas would rename the second ``x.1``) and a header without rows.
    """
    import warnings

    import pandas as pd

    p = Path(path)
    name = f"{what} {str(p)!r}"
    if not p.exists():
        fail(f"{name} not found")
    if not p.is_file():
        fail(f"{name} is not a file (a folder?)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(p, dtype=dtype, converters=converters, index_col=False)
    except pd.errors.EmptyDataError:
        fail(f"{name} is empty: a CSV file needs a header row of column names")
    except UnicodeDecodeError:
        fail(f"{name} is not UTF-8 text (line {_first_non_utf8_line(p)})")
    except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        checks = (_open_quote, _layout_problem) if "inside string" in str(exc) else (_layout_problem, _open_quote)
        fail(checks[0](p, name) or checks[1](p, name)
             or f"{name} is not a CSV file pandas can read ({' '.join(str(exc).split())})")
    except OSError as exc:
        fail(f"cannot read {name}: {exc.strerror or exc}")
    header = _raw_header(p)
    dup = sorted({c for c in header if header.count(c) > 1}, key=header.index)
    if dup:
        fail(f"{name} has the column name {dup[0]!r} {header.count(dup[0])} times (header line); column "
             "names must be unique")
    if frame.shape[0] == 0:
        fail(f"{name} has a header row but no data rows")
    if frame.shape[1] and frame.iloc[:, -1].isna().any():       # a short row leaves the last field empty
        problem = _layout_problem(p, name)
        if problem:
            fail(problem)
    return frame


def _raw_header(path: Path) -> list[str]:
    """The column names as written (pandas renames a repeated name)."""
    import pandas as pd

    row = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False, index_col=False)
    return [str(v) for v in row.iloc[0].tolist()] if len(row) else []


def _layout_problem(path: Path, name: str) -> str | None:
    """The first row whose number of fields differs from the header's, as a message; None if none."""
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        start, header = 1, None
        for row in reader:
            if row:
                if header is None:
                    header = (len(row), start)
                elif len(row) != header[0]:
                    return (f"line {start} of {name} has {len(row)} fields but the header (line {header[1]}) has "
                            f"{header[0]}")
            start = reader.line_num + 1
    return None


def _open_quote(path: Path, name: str) -> str | None:
    """A message naming the line where a quoted field that is never closed starts; None if there is none."""
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, strict=True)
        start = 1
        try:
            for _ in reader:
                start = reader.line_num + 1
        except csv.Error:
            return (f"{name}: the quoted field on line {start} is never closed (a '\"' without its closing "
                    "quote)")
    return None


def _first_non_utf8_line(path: Path) -> int | str:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return "unknown"


def relmat_spec(item: str, option: str = "--relmat") -> tuple[str, str]:
    """``(group, file)`` of ``GROUP=FILE.csv``; an error names the option when the ``GROUP=`` is missing."""
    group, sep, file = item.partition("=")
    if not sep or not group.strip() or not file:
        example = f"id={item}" if not sep and item else "id=K.csv"
        fail(f"{option} expects GROUP=FILE.csv, the grouping factor and its matrix (e.g. {example}); got {item!r}")
    return group.strip(), file


def relmat_specs(items: list[str], option: str = "--relmat") -> dict[str, str]:
    """``{group: file}`` of repeated ``--relmat`` options; a group given twice is an error."""
    out: dict[str, str] = {}
    for item in items:
        group, file = relmat_spec(item, option)
        if group in out:
            fail(f"{option} is given twice for the grouping factor {group!r} ({out[group]} and {file}); "
                 "give one matrix per factor")
        out[group] = file
    return out


def read_relmat(group: str, file: str, option: str = "--relmat") -> object:
    """K for grouping factor ``group`` from ``file``: a DataFrame whose level names are text on both axes
    (ids such as 0001 keep their zeros), checked (square, numeric, finite, symmetric, names unique and the
    same on both axes) with every message naming the option and the file."""
    import pandas as pd

    from ..errors import DataError
    from ..model.relmat import as_relationship_matrix

    what = f"{option} {group}={file}:"
    K = read_csv(file, f"{option} file", converters={0: str})
    K = K.set_index(K.columns[0])
    K.columns = [str(c) for c in K.columns]
    for col, dtype in K.dtypes.items():
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            bad = pd.to_numeric(K[col], errors="coerce").isna() & K[col].notna()
            row = K.index[bad.to_numpy()][0] if bad.any() else None
            fail(f"{what} column {col!r} is not numeric" + (f" (row {row!r} is {K.at[row, col]!r})"
                                                            if row is not None else f" (dtype {dtype})"))
    try:
        as_relationship_matrix(K, group)
    except DataError as exc:
        fail(f"{what} {exc}")
    return K


def match_columns(pattern: str, columns, *, excluded: dict | None = None, numeric=None,
                  source: str = "the data", option: str = "--responses") -> list[str]:
    """Columns matching a comma-separated list of names or globs (``--responses 'trait*'``), in the
    data's order within each piece, each once.

    ``excluded`` maps columns that cannot be traits to the reason (a covariate, the id column...);
    ``numeric`` is the set of numeric columns (None: all).  A piece that matches no column, only
    excluded columns, or a non-numeric column is an error naming those columns.
    """
    import fnmatch

    excluded = excluded or {}
    names = []
    pieces = [p.strip() for p in pattern.split(",") if p.strip()]
    if not pieces:
        fail(f"{option} is empty: give column names or a pattern such as 'trait*'")
    for piece in pieces:
        hits = [c for c in columns if fnmatch.fnmatchcase(str(c), piece)]
        if not hits:
            fail(f"{option} {piece!r} matches no column of {source}")
        usable = [c for c in hits if c not in excluded]
        if not usable:
            why = "; ".join(f"{str(c)!r} is {excluded[c]}" for c in hits[:5])
            fail(f"{option} {piece!r} matches only columns that cannot be traits: {why}")
        text = [c for c in usable if numeric is not None and c not in numeric]
        if text:
            fail(f"{option} {piece!r} matches the non-numeric column{'s' if len(text) > 1 else ''} "
                 f"{', '.join(repr(str(c)) for c in text[:5])}: a trait must be numeric")
        names.extend(h for h in usable if h not in names)
    return names


def numeric_columns(frame) -> set:
    """The columns of ``frame`` that can be traits: numeric, not boolean."""
    import pandas as pd

    return {c for c, dtype in frame.dtypes.items()
            if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)}


def check_column(frame, column: str, option: str, source: str, numeric: bool = False) -> None:
    """``column`` (the value of ``option``) is a column of ``frame`` (read from ``source``), numeric if asked."""
    if column not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:12])) + (" ..." if frame.shape[1] > 12 else "")
        fail(f"{option}: column {column!r} not in {source} (columns: {shown})")
    if numeric and column not in numeric_columns(frame[[column]]):
        fail(f"{option}: column {column!r} of {source} is not numeric (dtype {frame[column].dtype})")
