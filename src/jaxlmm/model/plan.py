"""The factorization plan of a design: what the blocked Cholesky factor looks like and what it costs.

The penalized system of ``[Z | X | y]`` is factored blockwise (``core/pls/criterion.py``,
MixedModels.jl's scheme): one random-effects term, the *block term*, has a
diagonal of ``l_b`` small ``S_b x S_b`` blocks; every other term, ``X`` and ``y``
form the dense part of size ``Q = q_d + p + 1``, factored after the Schur update

    A_dd - sum_j C_j^T M_j C_j

where ``C_j`` is level j's row of the cross block ``Z_b^T W [Z_d X y]``.  The block
term is the one with the most columns ``l_k S_k`` (it leaves the smallest dense part,
hence the least fill-in); lme4's order of the terms and of theta is kept in
everything a user sees.  The cross block is stored dense (``S_b x Q x l_b``) or, in a
large crossed design, by its nonzeros (``core/pls/sparse.py``): then the update is a sum
over the pairs of nonzeros that share a level, ``sum_j nnz_j^2``, instead of
``l_b q_d^2``.

``factorization_plan(design)`` predicts, from the design alone, the floating-point
operations of one evaluation of the criterion and of one Newton iteration (value,
gradient and Hessian), and the peak memory (``memory.batch_bytes_per_trait``);
``lmer(..., verbose=True)`` prints it.  The flop counts are models (leading terms),
not measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

from .memory import batch_bytes_per_trait, describe_bytes, shared_bytes


@dataclass(frozen=True)
class FactorizationPlan:
    block_term: str | None          # grouping factor of the block term
    block_levels: int
    block_columns: int
    dense_terms: tuple              # (grouping factor, levels, columns) of the other terms
    q_dense: int                    # random-effects columns in the dense part
    p: int                          # fixed-effects columns
    cross: str                      # "dense", "sparse" or "none"
    cross_values: int               # stored values of the cross block Z_b^T W Z_d
    pairs: int                      # sparse path: pairs of nonzeros sharing a level (0 otherwise)
    ntheta: int
    flops_criterion: float          # one evaluation of the criterion
    flops_newton: float             # one Newton iteration (value, gradient, Hessian)
    bytes_peak: int

    @property
    def dense_size(self) -> int:
        """``Q = q_d + p + 1``, the order of the dense Cholesky factor."""
        return self.q_dense + self.p + 1

    def __str__(self) -> str:
        lines = ["Factorization plan"]
        if self.block_term is None:
            lines.append("  block term: none (every random-effects term is in the dense part)")
        else:
            lines.append(f"  block term: {self.block_term} ({self.block_levels} levels x {self.block_columns}): "
                         f"{self.block_levels} diagonal blocks of {self.block_columns} x {self.block_columns}")
        dense = ", ".join(f"{g} ({lv} x {c})" for g, lv, c in self.dense_terms) or "none"
        lines.append(f"  dense part: {self.dense_size} x {self.dense_size} "
                     f"(terms: {dense}; {self.p} fixed-effects columns and the response; levels padded "
                     f"to shape buckets)")
        if self.cross == "sparse":
            full = self.block_columns * self.q_dense * self.block_levels
            lines.append(f"  cross block: sparse, {self.cross_values:,} values "
                         f"({100.0 * self.cross_values / max(full, 1):.1f}% of {full:,}), "
                         f"{self.pairs:,} pairs in the Schur update")
        elif self.cross == "dense":
            lines.append(f"  cross block: dense, {self.cross_values:,} values")
        lines.append(f"  predicted work: {_flops(self.flops_criterion)} per criterion evaluation, "
                     f"{_flops(self.flops_newton)} per Newton iteration ({self.ntheta} theta)")
        lines.append(f"  predicted peak memory: {describe_bytes(self.bytes_peak)}")
        return "\n".join(lines)


def _flops(x: float) -> str:
    for unit, size in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if x >= size:
            return f"{x / size:.2f} {unit}"
    return f"{x:.0f} FLOP"


def factorization_plan(design, model_data=None, dtype_bytes: int = 8) -> FactorizationPlan:
    """The plan of ``design`` (``model_data``: its ``ModelData``, for the sparse pattern if any)."""
    s = design.structure
    p = design.X.shape[1]
    k = s.ntheta
    qd = s.q_dense
    Q = qd + p + 1
    pattern = None if model_data is None else getattr(model_data, "sparse", None)
    dense_terms = tuple((design.terms[t].group, len(design.terms[t].factor.levels), len(design.terms[t].columns))
                        for t in s.dense_terms)
    chol = Q ** 3 / 3.0
    if s.block_term is None:
        name, lb, Sb, cross, values, pairs = None, 0, 0, "none", 0, 0
        update = 0.0
    else:
        t = design.terms[s.block_term]
        name, lb, Sb = t.group, len(t.factor.levels), len(t.columns)
        if pattern is not None:
            cross, values, pairs = "sparse", int(pattern.nnz) * Sb, int(pattern.pair_first.shape[0])
            update = 2.0 * pairs * Sb * Sb
        else:
            cross, values, pairs = ("dense" if qd else "none"), Sb * qd * lb, 0
            update = 2.0 * lb * Sb * Q * Q
    flops_criterion = update + chol
    if pattern is not None:
        # the sparse path's own derivatives: R_dd^{-1} (4/3 q_d^3 in products), one q_d^3 product
        # per block-term theta, and the pair sums per Hessian tangent
        nb = s.terms[s.block_term].ntheta
        flops_newton = flops_criterion + 8.0 / 3.0 * qd ** 3 + 2.0 * nb * qd ** 3 + (nb + 1) * update
    else:
        # forward-over-reverse autodiff: about three passes of the value per Hessian column
        flops_newton = (3.0 * k + 2.0) * flops_criterion
    bytes_peak = batch_bytes_per_trait(design, dtype_bytes)
    if pattern is not None:
        # no dense cross block; the pair list (4 int32 and S_b^2 values per pair) and a few Q x Q arrays
        bytes_peak = (shared_bytes(design, dtype_bytes) + dtype_bytes * (k + 2) * Sb * Sb * lb
                      + pairs * (16 + dtype_bytes * Sb * Sb))
    return FactorizationPlan(name, lb, Sb, dense_terms, qd, p, cross, values, pairs, k, float(flops_criterion),
                             float(flops_newton), int(bytes_peak))
