"""Scaling the dense rows of a blocked matrix by the terms' relative covariance factors.

The dense random-effect columns are ordered term by term, level-major within a
term (``S_k`` columns per level), so ``Lambda_d^T A`` multiplies each level's
block of ``S_k`` rows by ``lambda_k^T``.  Used by the blocked deviance, the
solution and the Schur-complement system alike.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..params.structure import ReStructure


def scale_dense_rows(A: jnp.ndarray, lambdas: list, structure: ReStructure) -> jnp.ndarray:
    """``Lambda_d^T A``: each dense term's rows (level-major, S_k per level) times ``lambda_k^T``."""
    pieces = []
    for k, off in zip(structure.dense_terms, structure.dense_offsets):
        t = structure.terms[k]
        block = A[off:off + t.q]
        lam = lambdas[k]
        if t.ncols == 1:
            block = block * lam[0, 0]
        else:
            block = block.reshape((t.nlevels, t.ncols) + block.shape[1:])
            block = jnp.einsum("ls...,st->lt...", block, lam).reshape((t.q,) + block.shape[2:])
        pieces.append(block)
    if not pieces:
        return A
    return jnp.concatenate(pieces + [A[structure.q_dense:]], axis=0)
