"""The profiled deviance of a linear mixed model as a pure function of theta.

With ``Lambda`` the block-diagonal relative covariance factor, lme4's penalized
least-squares problem has the positive-definite coefficient matrix

    [ Lambda^T Z^T W Z Lambda + I    Lambda^T Z^T W X    Lambda^T Z^T W y ]
    [            .                         X^T W X             X^T W y    ]
    [            .                            .                y^T W y    ]

and its lower Cholesky factor ``L`` gives everything: with ``L_Z`` the random-
effects block, ``R_X`` the fixed-effects block and ``r`` the last diagonal
element,

    log|L_Z|^2 = ldL2,   log|R_X|^2 = ldRX2,   r^2 = pwrss (penalized weighted RSS).

Profiling out sigma^2, with n observations, p = rank(X) and prior weights w,

    REML criterion  = ldL2 + ldRX2 + (n - p) (1 + log(2 pi pwrss / (n - p))) - sum log w
    ML deviance     = ldL2         +  n      (1 + log(2 pi pwrss / n))       - sum log w

(lme4's ``devcomp$cmp[["REML"]]`` and ``deviance()``).

The factor is computed blockwise (MixedModels.jl's scheme): the block term's
diagonal part is ``l_b`` small ``S_b x S_b`` Cholesky factors ``L_j``; the rows
of every other column block below it are ``W_j^T = L_j^{-1} lambda_b^T C_j``
(``C_j`` its cross-products with level j); the rest ``[Z_d | X | y]`` is the
dense Schur complement ``R - sum_j W_j^T W_j`` factored by one dense Cholesky.
No q x q matrix is ever formed.

Where the cross block of the block term and the dense part is sparse (a large
crossed design, ``pls/sparse.py``), ``cp.Cdb`` lists its nonzeros: the Schur update
is a sum over pairs of nonzeros sharing a level, and ``log|R_dd|`` and the
``(p+1) x (p+1)`` Schur complement of ``[X y]`` come from ``schur.dense_parts``,
which carries its own exact first and second derivatives.  ``factorize`` and
``deviance_parts`` give the same ``Factor`` and ``DevianceParts`` on both paths
(on the sparse path ``Factor.Wt`` is None; ``pls/solve.py`` works from ``cp``).
"""

from __future__ import annotations

import jax.numpy as jnp

from . import cross_dense, cross_sparse, sparse
from .crossprod import cross_products
from .data import CrossProducts, ModelData
from .parts import DevianceParts, Factor, criterion_from_parts  # noqa: F401  (re-exported)


def cross_block(cp: CrossProducts):
    """The factorization for these cross-products: ``cross_sparse`` when the cross block of the
    block term and the dense part is stored sparse (a large crossed design), else ``cross_dense``.
    The one place the two paths are chosen; each module has ``factorize``, ``parts``,
    ``deviance_parts`` and ``solve``."""
    return cross_sparse if sparse.is_sparse(cp.Cdb) else cross_dense


def factorize(theta: jnp.ndarray, cp: CrossProducts) -> Factor:
    """Blocked Cholesky factor of the penalized system (see module docstring)."""
    return cross_block(cp).factorize(theta, cp)


def parts(theta: jnp.ndarray, cp: CrossProducts) -> DevianceParts:
    """``DevianceParts`` at theta (``deviance_parts`` without the factor)."""
    return cross_block(cp).parts(theta, cp)


def deviance_parts(theta: jnp.ndarray, cp: CrossProducts) -> tuple[DevianceParts, Factor]:
    """log-determinants and penalized RSS from one factorization, and the factor."""
    return cross_block(cp).deviance_parts(theta, cp)


def profiled_deviance(theta: jnp.ndarray, cp: CrossProducts, reml: bool = True) -> jnp.ndarray:
    """REML criterion (``reml=True``) or ML deviance at ``theta`` from cross-products."""
    return criterion_from_parts(parts(theta, cp), cp.p, reml)


def deviance(theta: jnp.ndarray, data: ModelData, reml: bool = True) -> jnp.ndarray:
    """lme4's profiled REML criterion / ML deviance at ``theta`` for one response.

    Pure and jittable; differentiate it with ``jax.grad`` / ``jax.hessian``.
    """
    return profiled_deviance(theta, cross_products(data), reml)
