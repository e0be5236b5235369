"""Result folders (the command line's ``--out``): a command never deletes or overwrites a file it did not write.

Rules:

* A command writes only the files it names (``fixef.csv``, ``TRAIT.assoc.csv``, ...).  It never
  removes the ``--out`` folder, nor any other file in it: the data, K or genotype files may sit there.
* A non-empty ``--out`` folder is refused unless ``force=True``; then the files of the names this
  command writes are replaced, and everything else in the folder is left alone.  ``--out .`` works.
* A file the command would write that is one of its own inputs (the same path, or the same file
  through a link) is refused, naming the file -- with or without ``force``.
* Every table is first written into a fresh temporary folder *inside* ``--out`` (``.jaxlmm-tmp-*``:
  on the same file system, which ``os.replace`` needs -- the target may be a mount point -- and no
  write access to the parent is needed for ``--out .``), then each file is moved into place with
  ``os.replace``: atomic per file, so a reader never sees a table cut short, and a crash while the
  tables are being written leaves the old files untouched.  The temporary folder is removed in every
  case, and a ``--out`` folder this call created is removed again if the write fails while it is empty.
* Links: a target that is a symbolic link is refused; tables are written only inside the fresh
  temporary folder (no write follows a link), and a file of a written name that is a link is itself
  replaced by ``os.replace`` (the link, never the file it points to).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import JaxlmmError

TEMP_PREFIX = ".jaxlmm-tmp-"


class OutputDirError(JaxlmmError):
    """The ``--out`` folder cannot be written safely."""


def _entry(path: str | os.PathLike) -> tuple[str, str]:
    """The directory entry ``path`` names: its folder with links resolved, and its own name (a link
    in the last component is not followed: replacing it replaces the link)."""
    path = os.path.abspath(os.fspath(path))
    return os.path.realpath(os.path.dirname(path)), os.path.basename(path)


def _same_file(a: Path, b: str | os.PathLike) -> bool:
    if _entry(a) == _entry(b):
        return True
    try:
        return os.path.samefile(a, b)       # the same file by another path (a link to it, a hard link)
    except OSError:
        return False


def check_target(out: str | os.PathLike, force: bool = False, names=(), inputs=()) -> Path:
    """``out`` as a Path if it can be written (checked before any work is done), else ``OutputDirError``.

    ``names`` are the file names the command will write (when known), ``inputs`` the paths of the
    files it reads: none of the names may be one of the inputs or an existing folder."""
    out = Path(out)
    if out.is_symlink():
        raise OutputDirError(f"--out {str(out)!r} is a symbolic link; give the real folder")
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {str(out)!r} exists and is not a folder")
    for name in names:
        if not name or name in (".", "..") or "/" in name or os.sep in name or name.startswith(TEMP_PREFIX):
            raise OutputDirError(f"cannot write a file named {name!r}")
        target = out / name
        for source in inputs:
            if source is not None and _same_file(target, source):
                raise OutputDirError(f"{str(target)!r} would be written, but it is an input of this command "
                                     f"({str(source)!r}); choose another --out folder")
        if target.is_dir() and not target.is_symlink():
            raise OutputDirError(f"{str(target)!r} is a folder; cannot write a file there")
    if out.exists() and not force and any(out.iterdir()):
        raise OutputDirError(f"--out {str(out)!r} is not empty; use --force to write into it (files of the "
                             f"names this command writes are replaced, nothing else is touched)")
    return out


def write_tables(out: str | os.PathLike, tables: dict, force: bool = False, inputs=()) -> list[Path]:
    """Write ``{file name: (DataFrame or figure, write_index)}`` into the folder ``out``: all into a
    temporary folder first, then each moved into place (``os.replace``); no other file is touched."""
    out = check_target(out, force, list(tables), inputs)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=out))
    moved = False
    try:
        for name, (frame, index) in tables.items():
            if hasattr(frame, "savefig"):  # a matplotlib figure (jaxlmm scan's plots)
                frame.savefig(tmp / name, dpi=100)
                _close(frame)
            else:
                frame.to_csv(tmp / name, index=index)
        check_target(out, True, list(tables), inputs)   # again, just before anything is replaced
        moved = True
        for name in tables:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not moved:
            try:
                out.rmdir()              # only if still empty: it is the folder this call made
            except OSError:
                pass
    return [out / name for name in tables]


def _close(figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)
