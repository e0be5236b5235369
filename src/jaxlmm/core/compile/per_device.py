"""Programs that run per device on a mesh of traits (``shard_map``), with no collective."""

from __future__ import annotations


def per_device_program(body, mesh, split: tuple, out_split: bool = True, compiler_options=None):
    """``jax.jit(body)``; on a mesh, each device runs ``body`` on its own slice of the traits
    (``shard_map``): ``split[i]`` says whether argument ``i`` is split along its leading (trait) axis or
    replicated.

    Nothing in a per-trait program couples traits, but plain SPMD partitioning of a vmapped loop turns
    its condition (any lane still running) into an all-reduce at every iteration; and a batched LAPACK
    call on XLA's CPU devices fans its batch out on the thread pool that runs the devices' programs,
    which can deadlock when several devices wait at once (jaxlib's ``ParallelBatchMap``).  Under
    ``shard_map`` loops stop per device, with no collective."""
    import jax

    if mesh is None:
        return jax.jit(body, compiler_options=compiler_options)
    from jax.sharding import PartitionSpec

    spec = {True: PartitionSpec("traits"), False: PartitionSpec()}
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=tuple(spec[bool(s)] for s in split),
                                 out_specs=spec[bool(out_split)], check_vma=False), compiler_options=compiler_options)
