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

for block-diagonal ``A``, ``B`` (the ``V_j`` and ``V_jl`` of ``marginal.py``).
"""

from __future__ import annotations

import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))


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


def _tr(A, B):
    """``sum_k tr(A_k B_k)`` of stacks of blocks."""
    return float(np.einsum("kab,kba->", A, B))


def _times(M, D):
    """``M A`` for a block-diagonal ``A`` given as ("diag", (nb, b)) or ("full", (nb, b, b))."""
    kind, A = D
    return M * A[:, None, :] if kind == "diag" else M @ A


def _apply(D, v):
    kind, A = D
    return A * v if kind == "diag" else np.einsum("kab,kb->ka", A, v)


def _apply_to_columns(D, M):
    kind, A = D
    return A[:, :, None] * M if kind == "diag" else A @ M


def block_covariance(model, phi, rows, layout: BlockLayout, terms):
    """``V`` (nb, b, b) and its first and second derivatives as block stacks (``marginal.covariance``)."""
    inv_w = layout.gather(1.0 / model.w[rows])
    s = phi[model.offsets[-1]:]
    rc = model.resid_codes[rows]
    resid = layout.gather(s[rc] ** 2 / model.w[rows], fill=1.0)
    nb, b = layout.index.shape
    V = np.zeros((nb, b, b))
    V[:, np.arange(b), np.arange(b)] = resid
    first, second = [], {}
    for t, off, (z, G) in zip(model.terms, model.offsets, terms):
        C, dC, d2C = t.cov.derivatives(phi[off:off + t.cov.n_params])
        zt = np.swapaxes(z, 1, 2)

        def spread(M):
            return (z @ M) @ zt * G                # (z M z^T) o G, block by block

        V += spread(C)
        for a in range(t.cov.n_params):
            first.append(("full", spread(dC[a])))
            for c in range(a, t.cov.n_params):
                if np.any(d2C[a, c]):
                    second[(off + a, off + c)] = ("full", spread(d2C[a, c]))
    base = model.offsets[-1]
    rcb = layout.gather(rc.astype(float), fill=-1.0)
    for r in range(model.n_resid):
        mask = (rcb == r) * inv_w
        first.append(("diag", 2.0 * s[r] * mask))
        second[(base + r, base + r)] = ("diag", 2.0 * mask)
    return V, first, second


def evaluate_blocks(model, phi, y, rows, reml: bool, layout: BlockLayout, terms, extras: bool = False):
    """Criterion, gradient and Hessian of ``marginal.py``'s module docstring, block by block; with
    ``extras`` also beta, ``Phi = Q^-1`` and ``d beta / d phi = -Q^-1 Z^T V_j P y``."""
    k = model.n_params
    V, first, second = block_covariance(model, phi, rows, layout, terms)
    failed = (np.inf, np.zeros(k), np.eye(k)) + ((None, None, None) if extras else ())
    try:
        L = np.linalg.cholesky(V)
    except np.linalg.LinAlgError:
        return failed
    Li = np.linalg.inv(L)
    Vi = np.swapaxes(Li, 1, 2) @ Li
    X, yb = layout.gather(model.X[rows]), layout.gather(y)
    Z = Vi @ X
    Q = np.einsum("kap,kaq->pq", X, Z)
    try:
        LQ = np.linalg.cholesky(Q)
    except np.linalg.LinAlgError:
        return failed
    Qi = np.linalg.inv(Q)
    beta = Qi @ np.einsum("kap,ka->p", Z, yb)
    Py = np.einsum("kab,kb->ka", Vi, yb - X @ beta)
    n, p = len(rows), X.shape[-1]
    ld_V = 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))))
    ld_Q = 2.0 * float(np.sum(np.log(np.diagonal(LQ))))
    quad = float(np.sum(yb * Py))
    value = (n - p) * LOG_2PI + ld_V + ld_Q + quad if reml else n * LOG_2PI + ld_V + quad
    if not np.isfinite(value):
        return failed
    return _derivatives(first, second, Vi, Z, Qi, Py, reml, value, beta, extras)


def _derivatives(first, second, Vi, Z, Qi, Py, reml, value, beta, extras):
    k = len(first)
    ViA = [_times(Vi, D) for D in first]
    AZ = [_apply_to_columns(D, Z) for D in first]
    ZAZ = [np.einsum("kap,kaq->pq", Z, az) for az in AZ]
    u = [_apply(D, Py) for D in first]
    Zu = [np.einsum("kap,ka->p", Z, uj) for uj in u]
    Viu = [np.einsum("kab,kb->ka", Vi, uj) for uj in u]

    def trace_M(D, ZDZ):
        kind, A = D
        tr_vi = float(np.einsum("kaa,ka->", Vi, A)) if kind == "diag" else _tr(Vi, A)
        return tr_vi - float(np.sum(Qi * ZDZ)) if reml else tr_vi

    grad = np.array([trace_M(D, ZAZ[j]) - float(np.sum(Py * u[j])) for j, D in enumerate(first)])
    H = np.empty((k, k))
    for j in range(k):
        for l in range(j, k):
            t = _tr(ViA[j], ViA[l])
            if reml:
                ViAZ_l = ViA[l] @ Z
                t += -2.0 * float(np.sum(Qi * np.einsum("kap,kaq->pq", AZ[j], ViAZ_l)))
                t += float(np.sum((Qi @ ZAZ[j]) * (Qi @ ZAZ[l]).T))
            uPu = float(np.sum(u[j] * Viu[l])) - float(Zu[j] @ Qi @ Zu[l])
            H[j, l] = -t + 2.0 * uPu
            if (j, l) in second:
                D = second[(j, l)]
                ZDZ = np.einsum("kap,kaq->pq", Z, _apply_to_columns(D, Z))
                H[j, l] += trace_M(D, ZDZ) - float(np.sum(Py * _apply(D, Py)))
            H[l, j] = H[j, l]
    if extras:
        return value, grad, H, beta, Qi, -(Qi @ np.stack(Zu, axis=1))
    return value, grad, H
