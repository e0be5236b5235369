"""Command-line inputs shared by ``jaxlmm fit`` and ``jaxlmm scan``: ``--relmat GROUP=FILE.csv`` and
``--responses`` patterns.  Errors are ``SystemExit`` messages (no traceback)."""

from __future__ import annotations

from pathlib import Path


def _exit(message: str):
    raise SystemExit(f"jaxlmm: error: {message}")


def read_relmat(item: str, fail=_exit) -> tuple[str, object]:
    """``(group, K)`` from ``GROUP=FILE.csv``: K a DataFrame whose level names are text on both axes
    (ids such as 0001 keep their zeros).  ``fail(message)`` reports bad input (an argparse parser's
    ``error`` prints the usage too)."""
    import pandas as pd

    group, sep, file = item.partition("=")
    if not sep or not group.strip() or not file:
        fail(f"--relmat expects GROUP=FILE.csv, got {item!r}")
    if not Path(file).exists():
        fail(f"--relmat: file {file!r} not found")
    K = pd.read_csv(file, converters={0: str})
    return group.strip(), K.set_index(K.columns[0])


def match_columns(pattern: str, columns) -> list[str]:
    """Columns matching a comma-separated list of names or globs (``--responses 'trait*'``), in the
    data's order within each piece, each once."""
    import fnmatch

    names = []
    for piece in filter(None, (p.strip() for p in pattern.split(","))):
        hits = [c for c in columns if fnmatch.fnmatchcase(str(c), piece)]
        if not hits:
            raise SystemExit(f"jaxlmm: error: --responses {piece!r} matches no column")
        names.extend(h for h in hits if h not in names)
    return names
