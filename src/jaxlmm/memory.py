"""Memory estimates: what a fit or a batch of traits needs, and what the device has free."""

from __future__ import annotations

import os


def available_bytes(device=None) -> int:
    """Free memory of ``device`` (default: JAX's default device).

    Accelerators report their allocator's limit minus what is in use; on a CPU
    it is the free physical memory of the machine.
    """
    import jax

    dev = device if device is not None else jax.devices()[0]
    stats = None
    try:
        stats = dev.memory_stats()
    except Exception:  # CPU devices may not implement it
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4 << 30


def batch_bytes_per_trait(design, dtype_bytes: int = 8) -> int:
    """Bytes one trait of a batch holds at the peak of the fit program.

    The trait's responses and weights (2 n), its cross-products, and in the
    optimizer's Hessian evaluation about ``3 (k + 2)`` live copies of the
    block-term and dense arrays (primal, gradient and k Hessian tangents,
    with temporaries).
    """
    s = design.structure
    n = design.n_padded
    p1 = design.X.shape[1] + 1
    k = s.ntheta
    block = s.block
    lb, Sb = (block.nlevels, block.ncols) if block is not None else (0, 0)
    Q = s.q_dense + p1
    cross = Sb * Sb * lb + Sb * Q * lb + Q * Q
    working = 3 * (k + 2) * (Sb * Sb * lb + Sb * Q * lb + Q * Q)
    return dtype_bytes * (2 * n + cross + working)
