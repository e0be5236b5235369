"""Many problems of one shape in calls of one static size: the chunk-and-pad driver.

A compiled program takes a fixed number of lanes (problems: traits, replicates, profile points, the
lanes of the host Newton loop still running).  ``padded_chunks(n, size)`` cuts ``range(n)`` into
consecutive chunks of ``size``, the last one padded by repeating its last position, so every call
has the same shape and no program is compiled for a remainder; ``map_padded`` runs a function over
the chunks and stitches the real lanes' results back together.
"""

from __future__ import annotations

import numpy as np


def padded_chunks(n: int, size: int):
    """Pairs ``(take, n_real)``: ``take`` (``size`` positions into ``range(n)``, the last repeated as
    padding) and how many of them are real."""
    for lo in range(0, n, size):
        yield np.minimum(np.arange(lo, lo + size), n - 1), min(size, n - lo)


def map_padded(fn, n: int, size: int):
    """``fn(take)`` on every padded chunk of ``range(n)``; its output (a pytree of arrays with a leading lane
    axis) cut to the real lanes and concatenated (NumPy)."""
    import jax

    parts = [jax.tree_util.tree_map(lambda a, k=n_real: np.asarray(a)[:k], jax.device_get(fn(take)))
             for take, n_real in padded_chunks(n, size)]
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)
