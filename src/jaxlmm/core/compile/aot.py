"""Ahead-of-time program cache for short-lived processes (the command line).

JAX's persistent compilation cache skips XLA compilation in a new process,
but the program must still be traced and lowered to find its cache key, and
for a fit program that is most of a second.  Here the lowered program of a
given (function, argument shapes and structure, static options) is kept as a
serialized ``jax.export.Exported`` next to the compilation cache; a later
process deserializes it and calls it, so neither tracing nor (with the
persistent cache) compiling happens again.

An entry is untrusted input: it is one ``jax.export`` flatbuffer (StableHLO
and the output tree, whose NamedTuple nodes are registered with
``jax.export.register_namedtuple_serialization``); nothing is unpickled.  The
folder is created user-only (mode 0700), and an entry is read only if it is a
regular file owned by the current user that nobody else can write
(``cache_safety.owned_by_user``); any other entry, or one that fails to
deserialize, is ignored with a warning and the program is traced again.

The key includes the jaxlmm core's source, JAX's version and the backend, so
a changed program is never served from a stale entry.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from functools import lru_cache
from pathlib import Path

import jax

from .cache_safety import make_private_dir, owned_by_user, write_atomic

_DIR: Path | None = None
_REGISTERED: set[type] = set()
_LOADED: dict = {}           # key -> the jitted call of a deserialized program (one load per process)


def enable(directory: str | os.PathLike) -> bool:
    """Keep exported programs in ``directory``; ``False`` (and no cache) if it is not safe to use."""
    global _DIR
    path = make_private_dir(directory)
    _DIR = path
    return path is not None


def disable() -> None:
    global _DIR
    _DIR = None
    forget()


def forget() -> None:
    """Drop the programs loaded in this process: the next call reads its entry again, as a new
    process would."""
    _LOADED.clear()


def enabled() -> bool:
    return _DIR is not None


def register_output_types(*types: type) -> None:
    """Make NamedTuple output nodes serializable by ``jax.export`` (once per type)."""
    from jax import export

    for cls in types:
        if cls not in _REGISTERED:
            export.register_namedtuple_serialization(cls, serialized_name=f"jaxlmm.{cls.__qualname__}")
            _REGISTERED.add(cls)


@lru_cache(maxsize=1)
def _source_hash() -> str:
    h = hashlib.sha256()
    core = Path(__file__).parents[1]
    for path in sorted(core.rglob("*.py")):
        h.update(str(path.relative_to(core)).encode() + path.read_bytes())
    return h.hexdigest()[:16]


def _key(name: str, leaves, treedef, static) -> str:
    h = hashlib.sha256()
    h.update(f"{name}|{jax.__version__}|{jax.default_backend()}|{_source_hash()}|{static!r}|{treedef!r}".encode())
    for leaf in leaves:
        h.update(f"{getattr(leaf, 'shape', ())}{getattr(leaf, 'dtype', type(leaf))}".encode())
    return h.hexdigest()[:32]


def call(name: str, fn, args: tuple, static: dict, compiler_options: dict | None = None):
    """``jit(fn, compiler_options=...)(*args, **static)``, through the ahead-of-time cache when it is
    enabled."""
    if _DIR is None:
        return jax.jit(fn, static_argnames=tuple(static), compiler_options=compiler_options)(*args, **static)
    try:
        return _cached_call(name, fn, args, static, compiler_options)
    except Exception:  # the cache is an optimization only
        return jax.jit(fn, static_argnames=tuple(static), compiler_options=compiler_options)(*args, **static)


def _load(blob: Path):
    from jax import export

    if not blob.exists():
        return None
    if not owned_by_user(blob):
        warnings.warn(f"ignoring cache entry {blob}: not a regular file owned by this user, or writable "
                      "by others", RuntimeWarning, stacklevel=4)
        return None
    try:
        return export.deserialize(bytearray(blob.read_bytes()))
    except Exception:
        warnings.warn(f"ignoring unreadable cache entry {blob}; the program is traced again",
                      RuntimeWarning, stacklevel=4)
        return None


def _cached_call(name, fn, args, static, compiler_options=None):
    from jax import export

    leaves, treedef = jax.tree_util.tree_flatten(args)
    key = _key(name, leaves, treedef, (sorted(static.items()), sorted((compiler_options or {}).items())))
    run = _LOADED.get(key)
    if run is None:
        blob = _DIR / f"{key}.exported"
        exported = _load(blob)
        if exported is None:
            def flat(*flat_args):
                return fn(*jax.tree_util.tree_unflatten(treedef, flat_args), **static)

            exported = export.export(jax.jit(flat))(*leaves)
            write_atomic(blob, exported.serialize())
        run = _LOADED[key] = jax.jit(exported.call, compiler_options=compiler_options)
    return run(*leaves)
