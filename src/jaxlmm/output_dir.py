"""Result folders written whole or not at all (the command line's ``--out``).

The tables are written into a fresh temporary folder beside the target and
renamed into place, so a reader -- or a crash halfway -- never sees new
tables next to old ones or a table cut short.  A non-empty target is refused
unless ``force=True`` (then it is replaced as a whole: no stale files stay);
a target that is a symbolic link is always refused, and nothing inside the
temporary folder can be a link, so no write follows one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import JaxlmmError


class OutputDirError(JaxlmmError):
    """The ``--out`` folder cannot be written safely."""


def check_target(out: str | os.PathLike, force: bool = False) -> Path:
    """``out`` as a Path if it can be written (checked before any work is done), else ``OutputDirError``."""
    out = Path(out)
    if out.is_symlink():
        raise OutputDirError(f"--out {str(out)!r} is a symbolic link; give the real folder")
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {str(out)!r} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputDirError(f"--out {str(out)!r} is not empty; use --force to replace its contents")
    return out


def write_tables(out: str | os.PathLike, tables: dict, force: bool = False) -> list[Path]:
    """Write ``{file name: (DataFrame, write_index)}`` into the folder ``out``, atomically."""
    out = check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, (frame, index) in tables.items():
            if hasattr(frame, "savefig"):  # a matplotlib figure (jaxlmm scan's plots)
                frame.savefig(tmp / name, dpi=100)
                _close(frame)
            else:
                frame.to_csv(tmp / name, index=index)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "previous")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(out, 0o777 & ~_umask())  # mkdtemp made it 0700
    return [out / name for name in tables]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _close(figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)
