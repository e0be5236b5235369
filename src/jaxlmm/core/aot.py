"""Ahead-of-time program cache for short-lived processes (the command line).

JAX's persistent compilation cache skips XLA compilation in a new process,
but the program must still be traced and lowered to find its cache key, and
for a fit program that is most of a second.  Here the lowered program of a
given (function, argument shapes and structure, static options) is kept as a
serialized ``jax.export.Exported`` next to the compilation cache; a later
process deserializes it and calls it, so neither tracing nor (with the
persistent cache) compiling happens again.

The key includes the jaxlmm core's source, JAX's version and the backend, so
a changed program is never served from a stale entry.  Anything that fails
(no ``flatbuffers``, an unreadable entry) falls back to the ordinary call.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from functools import lru_cache
from pathlib import Path

import jax

_DIR: Path | None = None


def enable(directory: str | os.PathLike) -> None:
    global _DIR
    _DIR = Path(directory)
    _DIR.mkdir(parents=True, exist_ok=True)


def enabled() -> bool:
    return _DIR is not None


@lru_cache(maxsize=1)
def _source_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _key(name: str, leaves, treedef, static) -> str:
    h = hashlib.sha256()
    h.update(f"{name}|{jax.__version__}|{jax.default_backend()}|{_source_hash()}|{static!r}|{treedef!r}".encode())
    for leaf in leaves:
        h.update(f"{getattr(leaf, 'shape', ())}{getattr(leaf, 'dtype', type(leaf))}".encode())
    return h.hexdigest()[:32]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def call(name: str, fn, args: tuple, static: dict):
    """``jit(fn)(*args, **static)``, through the ahead-of-time cache when it is enabled."""
    if _DIR is None:
        return jax.jit(fn, static_argnames=tuple(static))(*args, **static)
    try:
        return _cached_call(name, fn, args, static)
    except Exception:  # the cache is an optimization only
        return jax.jit(fn, static_argnames=tuple(static))(*args, **static)


def _cached_call(name, fn, args, static):
    from jax import export

    leaves, treedef = jax.tree_util.tree_flatten(args)
    key = _key(name, leaves, treedef, sorted(static.items()))
    blob, tree = _DIR / f"{key}.exported", _DIR / f"{key}.tree"
    if blob.exists() and tree.exists():
        exported = export.deserialize(bytearray(blob.read_bytes()))
        out_tree = pickle.loads(tree.read_bytes())
    else:
        holder = {}

        def flat(*flat_args):
            out = fn(*jax.tree_util.tree_unflatten(treedef, flat_args), **static)
            out_leaves, holder["tree"] = jax.tree_util.tree_flatten(out)
            return out_leaves

        exported = export.export(jax.jit(flat))(*leaves)
        out_tree = holder["tree"]
        # atomic writes: a process reading while another writes sees the whole entry or none
        _write_atomic(tree, pickle.dumps(out_tree))
        _write_atomic(blob, exported.serialize())
    return jax.tree_util.tree_unflatten(out_tree, exported.call(*leaves))
