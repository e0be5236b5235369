"""What one factorization of the penalized system yields, and the criterion built from it.

Both factorizations of the blocked path (``pls/cross_dense.py``, ``pls/cross_sparse.py``)
return a ``Factor`` and ``DevianceParts``; ``criterion_from_parts`` reads the REML
criterion or the ML deviance off them (``likelihood/criteria.py`` writes it).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from ..likelihood.criteria import profiled_criterion


class Factor(NamedTuple):
    """Blocked Cholesky factor of the penalized system at one theta."""

    lambdas: list          # lambda_k per term
    Lb: jnp.ndarray        # (S_b, S_b, l_b) block-term factors L_j (levels last)
    Wt: jnp.ndarray        # (S_b, Q, l_b): L_j^{-1} lambda_b^T [C_dj, C_xj], Q = q_d + p + 1 (None: sparse path)
    L22: jnp.ndarray       # (Q, Q) dense factor of [Z_d | X | y]
    logdet_b: jnp.ndarray  # 2 sum_j log |L_j|


class DevianceParts(NamedTuple):
    ldL2: jnp.ndarray
    ldRX2: jnp.ndarray
    pwrss: jnp.ndarray
    n_obs: jnp.ndarray
    sum_log_w: jnp.ndarray


def criterion_from_parts(parts: DevianceParts, p: int, reml: bool) -> jnp.ndarray:
    """REML criterion or ML deviance from its parts (sigma^2 profiled out; ``likelihood.criteria``)."""
    return profiled_criterion(parts.ldL2, parts.ldRX2, parts.pwrss, parts.n_obs, p, reml, parts.sum_log_w)
