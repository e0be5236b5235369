"""The block term x dense part cross block, stored by its nonzeros.

With the block term's levels ``j`` (``S_b`` columns each) and the dense
columns ``c`` of ``[Z_d]``, the cross block ``C_d = Z_d^T W Z_b`` has, for
level j, the columns of the dense levels its rows touch.  In a crossed design
(each student rates a few dozen of a thousand lecturers) that is a few percent
of ``l_b x q_d``.  It is stored as a static list of *entries* ``e = (j_e, c_e)``
with values ``v_e`` (``S_b`` per entry), found on the host from the design.

The blocked factorization (``pls/criterion.py``, ``pls/schur/factor.py``) needs the Schur
update of the dense part ``[Z_d | X | y]``,

    U = sum_j C_j^T M_j C_j,        M_j = lambda_b (lambda_b^T D_j lambda_b + I)^{-1} lambda_b^T,

with ``C_j = [C_dj | C_xj]`` the level-j rows of the cross-products (``C_xj``
dense, ``p + 1`` columns).  Its dense-dense block is a sum over *pairs* of
entries of the same level,

    U_dd[c_e, c_f] = sum_{j; e, f in j} v_e^T M_j v_f,

``sum_j nnz_j^2 / 2`` products instead of ``l_b q_d^2``.  The unordered pairs
``e <= f`` of each level are listed once (``pair_*``, ``pair_values = v_e v_f^T``)
together with their *target* ``(c_e, c_f)``; the distinct targets (``target_row
<= target_col``) are the nonzeros of the upper triangle of ``U_dd``.  A pair's
products are first summed per target (``pair_sums``: a scatter into an array of
the targets, small enough to stay in cache) and then placed into dense
matrices (``add_targets``), in both triangles or only the upper one.  The
transposed contraction, for a symmetric q_d x q_d matrix ``K`` given at the
targets,

    Gamma_j(K) = C_dj K C_dj^T = sum_{e, f in j} v_e v_f^T K[c_e, c_f],

reads the same list the other way (a gather, then a sum per level).  Both are
linear in ``M`` and ``K``, so derivatives in theta are the same operations on
``dM``.  The other blocks of ``U`` are sums over entries (``U_xd``) and
levels (``U_xx``).

The list is built once per design (``build_pattern``, NumPy, no sorting of the
pairs) and travels as integer leaves of ``ModelData`` / ``CrossProducts``:
shapes are static under jit and no Python loop over levels runs inside a
program.  It is used where it pays: a large dense part and a cross block sparse
enough (``SPARSE_MAX_FILL``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..linalg import smallmat
from ..params.structure import ReStructure

DENSE_MIN = 128          # dense parts [Z_d X y] of at most this size keep the dense path (see linalg.RECURSIVE_MAX)
SPARSE_MAX_FILL = 0.25   # the pair products must cost at most this fraction of the dense l_b q_d^2 update


def _pytree(cls, meta: tuple[str, ...] = ()):
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(
        cls, data_fields=[f for f in fields if f not in meta], meta_fields=list(meta)
    )


@dataclasses.dataclass(frozen=True)
class SparsePattern:
    """The entries of the cross block, the pairs of entries sharing a level and their targets (int32).

    - ``entry``  (n, m): per row, the entry of each of its dense columns (the
      columns of ``crossprod._dense_columns``, in that order)
    - ``level``, ``column``  (nnz,): the entry's block level and dense column,
      sorted by (level, column)
    - ``pair_first``, ``pair_second``, ``pair_level`` (npairs,): entries ``e <= f``
      of one level and that level, level by level
    - ``pair_target`` (npairs,): the index of the pair's target ``(c_e, c_f)`` among
    - ``target_rc`` (ntargets, 2): the distinct targets (row, column), row <= column;
      they include the nonzeros of ``Z_d^T W Z_d`` (two dense columns of one row)
    - ``row_target`` (n, m (m + 1) / 2): per row, the targets of its pairs of dense
      columns ``a <= b`` (``triu_indices(m)`` order)

    """

    entry: jax.Array
    level: jax.Array
    column: jax.Array
    pair_first: jax.Array
    pair_second: jax.Array
    pair_level: jax.Array
    pair_target: jax.Array
    target_rc: jax.Array
    row_target: jax.Array

    @property
    def nnz(self) -> int:
        return self.level.shape[-1]

    @property
    def ntargets(self) -> int:
        return self.target_rc.shape[0]

    @property
    def target_row(self) -> jax.Array:
        return self.target_rc[:, 0]

    @property
    def target_col(self) -> jax.Array:
        return self.target_rc[:, 1]


_pytree(SparsePattern)


@dataclasses.dataclass(frozen=True)
class SparseCross:
    """``Z_d^T W Z_b`` at the entries of ``pattern``; replaces the dense ``CrossProducts.Cdb``.

    - ``values``  (S_b, nnz): ``v_e``
    - ``pair_values``  (S_b, S_b, npairs): ``v_e v_f^T`` of each pair
    - ``add_values``  (ntargets,): ``Z_d^T W Z_d`` at the targets (it is zero elsewhere)
    """

    values: jax.Array
    pair_values: jax.Array
    add_values: jax.Array
    pattern: SparsePattern

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape


_pytree(SparseCross)


def is_sparse(Cdb) -> bool:
    return isinstance(Cdb, SparseCross)


# Gathers and scatter-adds along the leading axis with int32 indices (in bounds by
# construction): jnp indexing adds a pass that maps negative indices, over millions of pairs.
# CLIP, not PROMISE_IN_BOUNDS: the latter let the test suite crash later in unrelated code
# (likely memory corruption), and clipping costs nothing measurable here.
_MODE = jax.lax.GatherScatterMode.CLIP


def take(x: jax.Array, idx: jax.Array) -> jax.Array:
    """``x[idx]`` along the leading axis; ``idx`` (n,) or (n, 2) for the two leading axes."""
    k = 1 if idx.ndim == 1 else idx.shape[1]
    dn = jax.lax.GatherDimensionNumbers(offset_dims=tuple(range(1, x.ndim - k + 1)),
                                        collapsed_slice_dims=tuple(range(k)), start_index_map=tuple(range(k)))
    return jax.lax.gather(x, idx.reshape(idx.shape[0], k), dn, slice_sizes=(1,) * k + x.shape[k:], mode=_MODE)


def add_at(x: jax.Array, idx: jax.Array, updates: jax.Array, sorted: bool = False, unique: bool = False):
    """``x.at[idx].add(updates)`` along the leading axis (``idx`` as in ``take``)."""
    k = 1 if idx.ndim == 1 else idx.shape[1]
    dn = jax.lax.ScatterDimensionNumbers(update_window_dims=tuple(range(1, updates.ndim)),
                                         inserted_window_dims=tuple(range(k)),
                                         scatter_dims_to_operand_dims=tuple(range(k)))
    return jax.lax.scatter_add(x, idx.reshape(idx.shape[0], k), updates, dn, indices_are_sorted=sorted,
                               unique_indices=unique, mode=_MODE)


def segment_sum(values: jax.Array, ids: jax.Array, n: int, sorted: bool = False) -> jax.Array:
    return add_at(jnp.zeros((n,) + values.shape[1:], values.dtype), ids, values, sorted=sorted)


# ------------------------------------------------------------------ host side
def build_pattern(structure: ReStructure, refs, p: int, transforms=None) -> SparsePattern | None:
    """The entries, pairs and targets of the design's cross block, or None where the dense path is better.

    ``refs``: per term the level of each row (NumPy).  The sparse path is taken
    when the dense part ``q_d + p + 1`` exceeds ``DENSE_MIN``, no dense term has
    a relationship matrix (its columns mix all levels), and the pair products
    cost at most ``SPARSE_MAX_FILL`` of the dense update ``l_b q_d^2``.
    """
    s = structure
    if s.block_term is None or not s.dense_terms:
        return None
    if s.q_dense + p + 1 <= DENSE_MIN:
        return None
    if any(s.terms[k].transformed or (transforms is not None and transforms[k] is not None)
           for k in s.dense_terms):
        return None
    qd, lb = s.q_dense, s.terms[s.block_term].nlevels
    if qd * qd >= 2 ** 31:
        return None
    rb = np.asarray(refs[s.block_term], dtype=np.int64)
    cols = []
    for k, off in zip(s.dense_terms, s.dense_offsets):
        S = s.terms[k].ncols
        cols.append(off + np.asarray(refs[k], dtype=np.int64)[:, None] * S + np.arange(S)[None, :])
    cols = np.concatenate(cols, axis=1)                                      # (n, m), as _dense_columns
    n, m = cols.shape
    keys, entry = np.unique((rb[:, None] * qd + cols).reshape(-1), return_inverse=True)
    counts = np.bincount(keys // qd, minlength=lb)
    npairs = int(np.sum(counts * (counts + 1) // 2))
    if npairs > SPARSE_MAX_FILL * lb * qd * qd:
        return None
    i32 = np.int32
    level, column = (keys // qd).astype(i32), (keys % qd).astype(i32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(i32)
    first = np.empty(npairs, i32)
    second = np.empty(npairs, i32)
    # pairs level by level: within a level every pair has its own target, so consecutive
    # scatter-adds never wait on each other
    offsets = np.concatenate([[0], np.cumsum(counts * (counts + 1) // 2)]).astype(np.int64)
    for c in np.unique(counts[counts > 0]):                                  # levels with c entries
        i1, i2 = np.triu_indices(int(c))
        lev = np.flatnonzero(counts == c)
        where = (offsets[lev][:, None] + np.arange(i1.size)[None, :]).reshape(-1)
        first[where] = (starts[lev][:, None] + i1[None, :]).reshape(-1)
        second[where] = (starts[lev][:, None] + i2[None, :]).reshape(-1)
    flat = column[first] * i32(qd) + column[second]
    a, b = np.triu_indices(m)
    lo, hi = np.minimum(cols[:, a], cols[:, b]), np.maximum(cols[:, a], cols[:, b])
    row_flat = (lo * qd + hi).astype(i32)                                     # (n, m (m + 1) / 2)
    used = np.zeros(qd * qd, bool)
    used[flat] = True
    used[row_flat.reshape(-1)] = True
    targets = np.flatnonzero(used).astype(i32)
    index = (np.cumsum(used) - 1).astype(i32)                                  # target -> its position
    target_rc = np.stack([targets // i32(qd), targets % i32(qd)], axis=1)
    return SparsePattern(entry.reshape(n, m).astype(i32), level, column, first, second, level[first],
                         index[flat], target_rc, index[row_flat])


# ------------------------------------------------------------------ in programs
def cross_values(pattern: SparsePattern, wvals: jax.Array, vals: jax.Array, zb: jax.Array) -> SparseCross:
    """``v_e = sum_i w_i z_d[i, c_e] z_b[i]`` over the rows of each entry, the pair products, and
    ``Z_d^T W Z_d`` at the targets.

    ``wvals``, ``vals`` (n, m): the rows' weighted and plain dense values; ``zb`` (n, S_b).
    """
    nnz = pattern.nnz
    contrib = (wvals[:, :, None] * zb[:, None, :]).reshape(-1, zb.shape[1])   # (n m, S_b)
    values = segment_sum(contrib, pattern.entry.reshape(-1), nnz).T           # (S_b, nnz)
    vf, vs = take(values.T, pattern.pair_first).T, take(values.T, pattern.pair_second).T
    a, b = np.triu_indices(vals.shape[1])
    add = segment_sum((wvals[:, a] * vals[:, b]).reshape(-1), pattern.row_target.reshape(-1), pattern.ntargets)
    return SparseCross(values, vf[:, None, :] * vs[None, :, :], add, pattern)


def materialize(tree):
    """``tree``, computed before the code that reads it (NaN if its first value is not finite).

    The pair loops read per-level values (``M_j``, 3,000 of them) once per pair (millions):
    XLA otherwise fuses the per-level arithmetic into the per-pair loop and repeats it there.
    A conditional is a fusion boundary (an optimization barrier is not, on CPU).
    """
    first = jax.tree_util.tree_leaves(tree)[0].reshape(-1)[0]
    return jax.lax.cond(jnp.isfinite(first), lambda t: t,
                        lambda t: jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.nan), t), tree)


def level_weights(lam_b, L: list) -> list:
    """``M_j = lambda_b (L_j L_j^T)^{-1} lambda_b^T`` per level (nested S_b x S_b list of (l_b,))."""
    S = len(L)
    G = [smallmat.solve_lower(L, [lam_b[c, a] for a in range(S)]) for c in range(S)]   # G[c][a] = (L^-1 lam^T)[a, c]
    return [[sum(G[c][a] * G[d][a] for a in range(S)) for d in range(S)] for c in range(S)]


def pair_sums(M: list, Cdb: SparseCross) -> jax.Array:
    """``U_dd`` at its targets (upper triangle): ``sum over the target's pairs of v_e^T M_j v_f``.

    ``M``: nested S_b x S_b list of per-level arrays (l_b,), or a list of such (then a list).
    One scatter per ``M``: the array of targets then stays in cache.
    """
    if isinstance(M[0][0], list):
        return [pair_sums(m, Cdb) for m in M]
    pat = Cdb.pattern
    S = len(M)
    M = materialize(M)
    pv = sum(take(M[a][c], pat.pair_level) * Cdb.pair_values[a, c] for a in range(S) for c in range(S))
    return segment_sum(pv, pat.pair_target, pat.ntargets)


def add_targets(base: jax.Array, values: jax.Array, pattern: SparsePattern, upper: bool = True,
                lower: bool = True) -> jax.Array:
    """``base`` (q_d, q_d) plus ``values`` at the targets (``upper``) and at their mirror images
    below the diagonal (``lower``; the diagonal once)."""
    rc = pattern.target_rc
    out = base
    if upper:
        out = add_at(out, rc, values, sorted=True, unique=True)
    if lower:
        diag = rc[:, 0] == rc[:, 1]
        out = add_at(out, rc[:, ::-1], jnp.where(diag & upper, 0.0, values), unique=True)
    return out


def at_targets(K: jax.Array, pattern: SparsePattern) -> jax.Array:
    """``K[target_row, target_col]`` of a q_d x q_d matrix."""
    return take(K, pattern.target_rc)


def targets_times(values: jax.Array, H: jax.Array, pattern: SparsePattern) -> jax.Array:
    """``X H`` for the symmetric q_d x q_d ``X`` given by ``values`` at the targets (zero elsewhere)."""
    r, c = pattern.target_row, pattern.target_col
    qd = H.shape[0]
    off = jnp.where(r == c, 0.0, values)
    return (segment_sum(values[:, None] * take(H, c), r, qd, sorted=True)
            + segment_sum(off[:, None] * take(H, r), c, qd))


def target_rows(values: jax.Array, pattern: SparsePattern, off: int, q: int, qd: int) -> jax.Array:
    """Rows ``off:off+q`` (a q x q_d strip) of the symmetric ``X`` given by ``values`` at the targets."""
    r, c = pattern.target_row, pattern.target_col
    zero = jnp.zeros((q, qd), values.dtype)
    in_r = (r >= off) & (r < off + q)
    in_c = (c >= off) & (c < off + q) & (r != c)
    first = add_at(zero, jnp.stack([jnp.clip(r - off, 0, q - 1), c], axis=1), jnp.where(in_r, values, 0.0))
    return add_at(first, jnp.stack([jnp.clip(c - off, 0, q - 1), r], axis=1), jnp.where(in_c, values, 0.0))


def term_sums(values: jax.Array, pattern: SparsePattern, structure: ReStructure) -> jax.Array:
    """``sum_{i in t, j in u} X_ij`` per pair of dense terms (n_t, n_t), for the symmetric ``X``
    given by ``values`` at the targets."""
    ends = np.cumsum([structure.terms[k].q for k in structure.dense_terms])
    term = jnp.asarray(np.repeat(np.arange(len(ends)), np.diff(np.concatenate([[0], ends]))), jnp.int32)
    nt = len(ends)
    tr, tc = take(term, pattern.target_row), take(term, pattern.target_col)
    off = jnp.where(pattern.target_row == pattern.target_col, 0.0, values)
    out = segment_sum(values, tr * nt + tc, nt * nt) + segment_sum(off, tc * nt + tr, nt * nt)
    return out.reshape(nt, nt)


def cross_update(M: list, Cdb: SparseCross, Cxb: jax.Array, q_dense: int):
    """The blocks ``(U_xd, U_xx)`` of ``U`` with ``[X y]`` (sums over entries and levels)."""
    pat = Cdb.pattern
    S = len(M)
    Mx = [sum(M[a][c] * Cxb[c] for c in range(S)) for a in range(S)]                   # (p1, l_b) each
    u = sum(Cdb.values[a][:, None] * take(Mx[a].T, pat.level) for a in range(S))     # (nnz, p1)
    U_xd = segment_sum(u, pat.column, q_dense).T                                       # (p1, q_d)
    U_xx = sum(Cxb[a] @ Mx[a].T for a in range(S))
    return U_xd, 0.5 * (U_xx + U_xx.T)


def gamma(K_targets: jax.Array, Cdb: SparseCross, nlevels: int) -> list:
    """``Gamma_j(K) = C_dj K C_dj^T`` per level (nested S_b x S_b list of (l_b,)) for a symmetric
    ``K`` given at the targets (``at_targets``)."""
    pat = Cdb.pattern
    K_targets = materialize(K_targets)
    k = take(K_targets, pat.pair_target)
    k = k * jnp.where(pat.pair_first == pat.pair_second, 0.5, 1.0).astype(k.dtype)
    S = Cdb.values.shape[0]
    out = [[None] * S for _ in range(S)]
    for a in range(S):
        for c in range(a + 1):
            g = segment_sum(k * (Cdb.pair_values[a, c] + Cdb.pair_values[c, a]), pat.pair_level, nlevels,
                            sorted=True)
            out[a][c] = out[c][a] = g
    return out


def cross_times(H: jax.Array, Cdb: SparseCross, Cxb: jax.Array, q_dense: int, nlevels: int) -> list:
    """``C_j H`` per level for ``H`` (Q, r): S_b arrays (r, l_b)."""
    pat = Cdb.pattern
    Hd, Hx = H[:q_dense], H[q_dense:]
    S = Cdb.values.shape[0]
    out = []
    for a in range(S):
        y = segment_sum(Cdb.values[a][:, None] * take(Hd, pat.column), pat.level, nlevels, sorted=True).T
        out.append(y + jnp.einsum("pl,pr->rl", Cxb[a], Hx))
    return out


def cross_t_times(Y: list, Cdb: SparseCross, Cxb: jax.Array, q_dense: int) -> jax.Array:
    """``sum_j C_j^T Y_j`` for ``Y``: S_b arrays (r, l_b) -> (Q, r)."""
    pat = Cdb.pattern
    S = Cdb.values.shape[0]
    d = sum(segment_sum(Cdb.values[a][:, None] * take(Y[a].T, pat.level), pat.column, q_dense) for a in range(S))
    x = sum(jnp.einsum("pl,rl->pr", Cxb[a], Y[a]) for a in range(S))
    return jnp.concatenate([d, x], axis=0)


def densify(Cdb: SparseCross, q_dense: int, nlevels: int) -> jax.Array:
    """The dense ``(S_b, q_d, l_b)`` cross block (for code that needs it whole)."""
    pat = Cdb.pattern
    S = Cdb.values.shape[0]
    flat = segment_sum(Cdb.values.T, pat.column * nlevels + pat.level, q_dense * nlevels)   # (q_d l_b, S)
    return flat.T.reshape(S, q_dense, nlevels)
