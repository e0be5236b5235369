"""Cache folders and entries that only their user can have written.

A compilation cache holds programs that a later process runs, so its contents
must come from the user alone: folders are created with mode 0700, a folder
or entry owned by someone else or writable by group/others is refused, and
entries are written to a temporary file and renamed into place (a reader sees
a whole entry or none).  Any failure disables the cache with one warning;
nothing here raises.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path


def _owner_ok(st: os.stat_result) -> bool:
    return not hasattr(os, "getuid") or st.st_uid == os.getuid()


def owned_by_user(path: str | os.PathLike, *, directory: bool = False) -> bool:
    """True for a file (or folder) owned by this user that group and others cannot write; no symlinks."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    kind_ok = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    return kind_ok and _owner_ok(st) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def make_private_dir(path: str | os.PathLike) -> Path | None:
    """Create ``path`` (mode 0700) if needed; ``None`` with a warning when it is unusable or unsafe."""
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        warnings.warn(f"jaxlmm: compilation cache disabled: cannot create {path} ({exc.strerror or exc})",
                      RuntimeWarning, stacklevel=3)
        return None
    if not owned_by_user(path, directory=True):
        warnings.warn(f"jaxlmm: compilation cache disabled: {path} is not a folder owned by this user that "
                      "only this user can write", RuntimeWarning, stacklevel=3)
        return None
    if not os.access(path, os.W_OK | os.X_OK):
        warnings.warn(f"jaxlmm: compilation cache disabled: {path} is not writable", RuntimeWarning,
                      stacklevel=3)
        return None
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a private temporary file renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
