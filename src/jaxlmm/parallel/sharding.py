"""Traits sharded across local devices: a 1-D mesh over the trait axis.

A batch's per-trait arrays (responses, weights, starting values) are placed
with ``NamedSharding(mesh, P("traits"))``, the shared design is replicated,
and the same vmapped program runs on every device, each on its slice of the
traits (``on_mesh``: ``shard_map``), with no collective: under plain SPMD
partitioning the vmapped optimizer loop's stopping test (any trait still
running) was an all-reduce across devices at every iteration.  Chunk sizes are
rounded up to a multiple of the number of devices.

Across hosts, ``jaxlmm.cli.distributed`` splits the traits between processes
before this (each process shards its own slice over its local devices).
"""

from __future__ import annotations

import numpy as np


def resolve_devices(device=None, devices=None) -> list:
    """The devices a batch runs on: ``devices``, else ``[device]``, else all local devices of JAX's
    default backend."""
    import jax

    if devices is not None:
        devices = list(devices)
        if not devices:
            raise ValueError("devices must not be empty")
        return devices
    if device is not None:
        return [device]
    return list(jax.local_devices())


def trait_mesh(devices: list):
    """A 1-D mesh named ``traits`` over ``devices`` (None for a single device)."""
    if len(devices) <= 1:
        return None
    from jax.sharding import Mesh

    return Mesh(np.asarray(devices), ("traits",))


def round_chunk(chunk: int, devices: list) -> int:
    """``chunk`` rounded up to a multiple of the number of devices."""
    k = max(1, len(devices))
    return -(-int(chunk) // k) * k


def put(tree, mesh, per_trait: bool):
    """Place ``tree`` on the mesh: split along the leading (trait) axis, or replicated."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    if mesh is None:
        return tree
    spec = PartitionSpec("traits") if per_trait else PartitionSpec()
    return jax.device_put(tree, NamedSharding(mesh, spec))


def chunks(idx: np.ndarray, size: int):
    """Consecutive chunks of the trait indices ``idx``: pairs ``(sel, take)`` where ``take`` pads
    ``sel`` to ``size`` (``core.lanes.padded_chunks``: one static shape for every chunk)."""
    from ..core.optim.lanes import padded_chunks

    for take, n_real in padded_chunks(idx.size, size):
        yield idx[take[:n_real]], idx[take]



_ON_MESH: dict = {}


def on_mesh(program, mesh, split: tuple, compiler_options=None, **static):
    """``program(*args, **static)`` compiled (a plain function is jitted here, once per static
    arguments); on a mesh, run per device on its own traits
    (``core.per_device.per_device_program``: the vmapped optimizer's loop then stops per device,
    with no all-reduce at every iteration and no batched LAPACK call fanned out across the devices'
    thread pool).  ``split[i]``: whether argument ``i`` has the leading trait axis.  A jitted
    ``program`` runs its Python function inside (``compiler_options`` go to the outer jit: XLA takes
    them only there).  The wrapped programs are kept per (program, mesh, split, static arguments)."""
    if mesh is None and hasattr(program, "lower"):     # jitted already: its own cache and options
        return lambda *args: program(*args, **static)
    from functools import partial

    from ..core.compile.per_device import per_device_program

    key = (program, mesh, tuple(split), tuple(sorted(static.items())))
    if key not in _ON_MESH:
        body = partial(getattr(program, "__wrapped__", program), **static)
        _ON_MESH[key] = per_device_program(body, mesh, split, compiler_options=compiler_options)
    return _ON_MESH[key]
