"""Pytrees that carry one problem through the JAX core.

``ModelData`` holds the row-level arrays of one response: the fixed-effects
matrix ``X`` (n x p), the response ``y``, prior weights ``weights`` (a weight
of 0 removes a row, which is how a batch gives every trait its own missing
values with one static shape), an ``offset``, and per random-effects term the
level index ``refs[k]`` (n,) and the per-row model matrix ``z[k]`` (n x S_k).
A term with a relationship matrix also carries ``transforms[k]``, the dense
``l_k x l_k`` factor ``T`` with ``K = T T^T`` that multiplies its columns.
``sparse`` is the static nonzero pattern of the block term x dense part cross
block (``sparse.SparsePattern``, built on the host from the design) when that
block is stored sparse, else None.

``CrossProducts`` holds the weighted cross-products of the columns
``[Z_b | Z_d | X | y]`` that the profiled deviance needs (see ``pls/crossprod.py``);
they are the sufficient statistics of one response, so the optimizer never
touches the n rows again.
"""

from __future__ import annotations

import dataclasses

import jax

from ..params.structure import ReStructure


def _pytree(cls, meta: tuple[str, ...]):
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(
        cls, data_fields=[f for f in fields if f not in meta], meta_fields=list(meta)
    )


@dataclasses.dataclass(frozen=True)
class ModelData:
    X: jax.Array
    y: jax.Array
    weights: jax.Array
    offset: jax.Array
    refs: tuple
    z: tuple
    transforms: tuple  # per term: (l_k, l_k) array, or None for an ordinary term
    structure: ReStructure
    sparse: object = None  # sparse.SparsePattern of the cross block, or None (dense Cdb)

    @property
    def nobs_rows(self) -> int:
        return self.X.shape[0]

    @property
    def p(self) -> int:
        return self.X.shape[1]

    def with_response(self, y, weights=None) -> "ModelData":
        """The same design with another response (and optionally other weights)."""
        return dataclasses.replace(self, y=y, weights=self.weights if weights is None else weights)


_pytree(ModelData, ("structure",))


@dataclasses.dataclass(frozen=True)
class CrossProducts:
    """Weighted cross-products of ``[Z_b | Z_d | X | y]`` (y already minus offset).

    Shapes with ``l_b, S_b`` the block term's levels and columns, ``q_d`` the
    dense part's size and ``p1 = p + 1`` (the columns of X, then y):

    - ``Dbb``  (S_b, S_b, l_b):  diagonal blocks of Z_b^T W Z_b
    - ``Cxb``  (S_b, p1, l_b):   Z_b^T W [X y], per level
    - ``Cdb``  (S_b, q_d, l_b):  Z_d^T W Z_b; or, on the sparse path, a
      ``sparse.SparseCross`` holding its nonzeros

    (The block term's levels are the last axis: see ``linalg/smallmat.py``.)
    - ``Add``  (q_d, q_d):       Z_d^T W Z_d
    - ``Axd``  (p1, q_d):        [X y]^T W Z_d
    - ``Axx``  (p1, p1):         [X y]^T W [X y]
    - ``n_obs``:                 number of rows with positive weight
    - ``sum_log_w``:             sum of log prior weights over those rows
    - ``beta_shift``  (p,):      the y used is ``y - offset - X beta_shift``; beta-hat adds it back
    """

    Dbb: jax.Array
    Cxb: jax.Array
    Cdb: jax.Array
    Add: jax.Array
    Axd: jax.Array
    Axx: jax.Array
    n_obs: jax.Array
    sum_log_w: jax.Array
    beta_shift: jax.Array
    structure: ReStructure

    @property
    def p(self) -> int:
        return self.Axx.shape[-1] - 1


_pytree(CrossProducts, ("structure",))
