"""Traits split across processes (hosts) with ``jax.distributed``.

Every process runs the same command with its own ``process_id``:

    jaxlmm fit traits.csv "~ x + (1 | g)" --responses 'trait*' --out /shared/res \\
        --coordinator host0:8476 --num-processes N --process-id K

``jax.distributed.initialize`` connects the processes (JAX's own runtime; the
coordinator runs in process 0).  Process K takes the K-th of N contiguous
slices of the traits, fits them on its local devices (sharded over them, see
``parallel/sharding.py``) and writes ``results.partK.csv``; after a barrier, process 0
concatenates the parts, in the original trait order, into ``results.csv``
(this needs ``--out`` on a file system all processes see; otherwise collect the
parts yourself).  No trait is fitted twice and no data moves between hosts
except the barrier.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

BARRIER_TIMEOUT_MS = 3_600_000


def trait_slice(traits: list[str], process_id: int, num_processes: int) -> list[str]:
    """The ``process_id``-th of ``num_processes`` contiguous, near-equal slices of ``traits``."""
    bounds = np.linspace(0, len(traits), num_processes + 1).round().astype(int)
    return traits[bounds[process_id]:bounds[process_id + 1]]


def _barrier(name: str) -> None:
    from jax._src.distributed import global_state  # the runtime's key-value store and barriers

    global_state.client.wait_at_barrier(name, BARRIER_TIMEOUT_MS)


def run_distributed_batch(args, data: pd.DataFrame, formula: str, name: str, traits: list[str]) -> int:
    import jax

    from ..errors import ArgumentError, JaxlmmError
    from ..fitting.lmer import lmer

    if args.num_processes is None or args.process_id is None:
        raise ArgumentError("--coordinator needs --num-processes and --process-id")
    if not 0 <= args.process_id < args.num_processes:
        raise ArgumentError(f"--process-id must be in 0..{args.num_processes - 1}")
    if not args.out:
        raise ArgumentError("a distributed run needs --out (each process writes its part there)")
    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id)
    try:
        mine = trait_slice(traits, args.process_id, args.num_processes)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        part = out / f"results.part{args.process_id}.csv"
        if mine:
            try:
                batch = lmer(formula, data, responses=mine, reml=not args.ml, weights=args.weights,
                             offset=args.offset, dtype="float32" if args.float32 else None, data_name=name,
                             chunk_size=args.chunk_size, relmat=getattr(args, "relmats", None),
                             devices=jax.local_devices(), progress=False)
            except JaxlmmError as exc:
                print(f"jaxlmm: error: {exc}", file=sys.stderr)
                return 2
            batch.to_frame().to_csv(part)
            print(f"process {args.process_id}: {batch.summary()} -> {part}", file=sys.stderr)
        else:
            pd.DataFrame(index=pd.Index([], name="trait")).to_csv(part)
        _barrier("jaxlmm_results_written")
        if args.process_id == 0:
            parts = [pd.read_csv(out / f"results.part{k}.csv", index_col=0) for k in range(args.num_processes)]
            merged = pd.concat([p for p in parts if len(p)])
            merged.loc[traits].to_csv(out / "results.csv")
            print(f"merged {len(merged)} traits from {args.num_processes} processes into {out / 'results.csv'}",
                  file=sys.stderr)
    finally:
        jax.distributed.shutdown()
    return 0
