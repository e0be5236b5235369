"""The marginal criterion block by block: ``V`` is block diagonal over the rows that share no level.

Rows are connected when they share a level of any term (a relationship-matrix
term connects them all); each connected set is one diagonal block of ``V``
(repeated measures: one block per subject).  Blocks are padded to one size ``b``
(padding rows: ``V = 1``, ``X = 0``, ``y = 0``, which changes no number) and
stacked, so every product is a batched ``b x b`` one: ``O(n b^2)`` instead of
``O(n^3)``.  With ``Z = V^-1 X``, ``Q = X^T V^-1 X`` and ``P y = V^-1 (y - X beta)``:

    tr(P A)       = tr(V^-1 A) - tr(Q^-1 Z^T A Z)
    tr(P A P B)   = tr(V^-1 A V^-1 B) - 2 tr(Q^-1 Z^T A V^-1 B Z) + tr(Q^-1 Z^T A Z Q^-1 Z^T B Z)
    u^T P v       = u^T V^-1 v - (Z^T u)^T Q^-1 (Z^T v)

for block-diagonal ``A``, ``B`` (the ``V_j`` and ``V_jl`` of ``marginal/criterion.py``).
"""

from __future__ import annotations

import numpy as np

def row_blocks(model, rows: np.ndarray) -> list[np.ndarray]:
    """The connected sets of ``rows`` (positions into ``rows``), largest first."""
    n = len(rows)
    if any(t.K is not None for t in model.terms):
        return [np.arange(n)]
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for t in model.terms:
        codes = t.codes[rows]
        first = {}
        for i, c in enumerate(codes):
            j = first.setdefault(int(c), i)
            if j != i:
                a, b = find(i), find(j)
                if a != b:
                    parent[a] = b
    roots = np.array([find(i) for i in range(n)])
    groups = [np.flatnonzero(roots == r) for r in np.unique(roots)]
    return sorted(groups, key=len, reverse=True)


class BlockLayout:
    """Padded block index: ``index`` (nb, b) positions into ``rows`` (-1 = padding)."""

    def __init__(self, blocks: list[np.ndarray]):
        b = max(len(g) for g in blocks)
        self.index = np.full((len(blocks), b), -1, dtype=np.int64)
        for k, g in enumerate(blocks):
            self.index[k, :len(g)] = g
        self.real = self.index >= 0
        self.safe = np.where(self.real, self.index, 0)

    def gather(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """``values`` (n, ...) as (nb, b, ...) with ``fill`` in the padding."""
        out = values[self.safe]
        mask = self.real.reshape(self.real.shape + (1,) * (values.ndim - 1))
        return np.where(mask, out, fill)

    def pair_mask(self) -> np.ndarray:
        return self.real[:, :, None] & self.real[:, None, :]


def block_terms(model, rows, layout: BlockLayout):
    """Per term the padded covariates (nb, b, S) and level-sharing pattern (nb, b, b)."""
    out = []
    for t in model.terms:
        z = layout.gather(t.z[rows])
        if t.K is not None:                     # one block holding every row
            out.append((z, t.pattern(rows)[None]))
            continue
        c = layout.gather(t.codes[rows].astype(float), fill=-1.0)
        G = (c[:, :, None] == c[:, None, :]) & layout.pair_mask()
        out.append((z, G.astype(float)))
    return out


def evaluate_blocks(model, phi, y, rows, reml: bool, layout: BlockLayout, terms, extras: bool = False):
    """Criterion, gradient and Hessian of ``marginal/criterion.py``'s module docstring, block by block; with
    ``extras`` also beta, ``Phi = Q^-1`` and ``d beta / d phi = -Q^-1 Z^T V_j P y``.  One lane of
    ``marginal_lanes.evaluate_lanes`` (the one implementation of these formulas)."""
    from .lanes import evaluate_lanes

    out = evaluate_lanes(model, np.asarray(phi, float)[None], np.asarray(y, float)[:, None], rows, reml,
                         layout, terms, extras=extras)
    value, *rest = (a[0] for a in out)
    return (float(value), *rest) if extras else (float(value), *rest[:2])
