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


def shared_bytes(design, dtype_bytes: int = 8) -> int:
    """Bytes every path holds for one response: responses and weights (2 n) and a few copies of the
    dense part ``(q_dense + p + 1)^2`` (its matrix, factor, inverse and derivative products)."""
    q = design.structure.q_dense + design.X.shape[1] + 1
    return dtype_bytes * (2 * design.n_padded + 8 * q * q)


def describe_bytes(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def check_memory(design, dtype_bytes: int = 8, device=None, traits: int = 1, need: int | None = None,
                 sparse_ok: bool = False) -> int:
    """Estimated peak bytes of fitting ``traits`` responses of ``design``; raise before allocating
    when they exceed the free memory of ``device``.

    The estimate is ``batch_bytes_per_trait`` per trait: dominated, for large
    models, by the dense Schur complement of the non-block terms and ``[X y]``,
    ``(q_dense + p + 1)^2`` values in about ``3 (k + 2)`` live copies during the
    Hessian evaluation.  ``MemoryLimitError`` names the terms that make it large.
    ``need`` replaces the estimate (e.g. ``plan.FactorizationPlan.bytes_peak``);
    ``sparse_ok`` counts only what both the dense and the sparse cross block need.
    """
    from ..errors import MemoryLimitError

    if need is None:
        need = traits * batch_bytes_per_trait(design, dtype_bytes)
        if sparse_ok:
            # a single fit may store the cross block sparse (``plan.py``): here only the dense
            # part, which both paths hold, is checked; the caller checks the plan's total next
            need = min(need, traits * shared_bytes(design, dtype_bytes))
    have = available_bytes(device)
    if need > have:
        s = design.structure
        dense = [t for k, t in enumerate(design.terms) if k != s.block_term]
        detail = ", ".join(f"{t.group} ({len(t.factor.levels)} levels x {len(t.columns)})" for t in dense)
        q = s.q_dense + design.X.shape[1] + 1
        raise MemoryLimitError(
            f"this fit needs about {describe_bytes(need)} but only {describe_bytes(have)} is free: the dense "
            f"block of the random-effects terms other than the largest ({detail or 'none'}) and the fixed "
            f"effects is {q} x {q}. Use fewer levels in those terms, dtype='float32' (half the memory), a "
            f"smaller chunk_size for a batch, or a device with more memory.")
    return need
