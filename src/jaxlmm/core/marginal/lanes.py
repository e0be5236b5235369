"""The marginal criterion of many responses at once: ``marginal/blocks.py`` with a leading lane axis.

Lane ``B`` has its own parameters ``phi_B`` and response (all lanes share the rows,
hence the block layout); every product is batched over (lanes, blocks), so one
Newton iteration of a thousand bootstrap replicates is a handful of NumPy calls
and compiles nothing but each structure's small derivative program.  The
formulas are ``marginal/blocks.py``'s.
"""

from __future__ import annotations

import numpy as np

from ..likelihood.criteria import marginal_criterion



def lane_covariance(model, phis: np.ndarray, rows, layout, terms):
    """``V`` (B, nb, b, b) and its first and second derivatives, per lane."""
    B = phis.shape[0]
    base = model.offsets[-1]
    inv_w = layout.gather(1.0 / model.w[rows])                      # 0 in the padding
    x = model.residual.covariates(rows)
    r, dr, d2r = model.residual.jets(phis[:, base:], None if x is None else layout.gather(x), layout.index.shape)
    resid = np.where(layout.real[None], r * inv_w[None], 1.0)
    nb, b = layout.index.shape
    V = np.zeros((B, nb, b, b))
    V[:, :, np.arange(b), np.arange(b)] = resid
    first, second = [], {}
    for t, off, (z, G) in zip(model.terms, model.offsets, terms):
        C, dC, d2C = t.cov.derivatives_many(phis[:, off:off + t.cov.n_params])
        zt = np.swapaxes(z, 1, 2)

        def spread(M):
            return (z[None] @ M[:, None]) @ zt[None] * G[None]      # (z M z^T) o G per lane and block

        V += spread(C)
        for a in range(t.cov.n_params):
            first.append(("full", spread(dC[:, a])))
            for c in range(a, t.cov.n_params):
                if np.any(d2C[:, a, c]):
                    second[(off + a, off + c)] = ("full", spread(d2C[:, a, c]))
    first.extend(("diag", d * inv_w[None]) for d in dr)
    for (a, c), d in d2r.items():
        second[(base + a, base + c)] = ("diag", d * inv_w[None])
    return V, first, second


def _times(M, D):
    kind, A = D
    return M * A[:, :, None, :] if kind == "diag" else M @ A


def _apply(D, v):
    kind, A = D
    return A * v if kind == "diag" else np.einsum("Bkab,Bkb->Bka", A, v)


def _apply_to_columns(D, M):
    kind, A = D
    return A[..., None] * M if kind == "diag" else A @ M


def _cholesky(V):
    """Lower factors of a stack, and which lanes are not positive definite (their V replaced by I)."""
    try:
        return np.linalg.cholesky(V), np.zeros(V.shape[0], bool)
    except np.linalg.LinAlgError:
        bad = np.zeros(V.shape[0], bool)
        for i in range(V.shape[0]):
            try:
                np.linalg.cholesky(V[i])
            except np.linalg.LinAlgError:
                bad[i] = True
        V = np.where(bad.reshape((-1,) + (1,) * (V.ndim - 1)), np.eye(V.shape[-1]), V)
        return np.linalg.cholesky(V), bad


def evaluate_lanes(model, phis, Y, rows, reml: bool, layout, terms, extras: bool = False):
    """Per lane: criterion (B,), gradient (B, k), Hessian (B, k, k), beta (B, p); inf where V is singular.
    With ``extras`` also ``Phi = Q^-1`` (B, p, p) and ``d beta / d phi = -Q^-1 Z^T V_j P y`` (B, p, k)."""
    B, k = phis.shape
    V, first, second = lane_covariance(model, phis, rows, layout, terms)
    L, bad = _cholesky(V)
    Li = np.linalg.inv(L)
    Vi = np.swapaxes(Li, -1, -2) @ Li
    X, Yb = layout.gather(model.X[rows]), np.moveaxis(layout.gather(Y), -1, 0)     # (nb, b, p), (B, nb, b)
    Z = Vi @ X[None]
    Q = np.einsum("kap,Bkaq->Bpq", X, Z)
    LQ, bad_q = _cholesky(Q)
    bad |= bad_q
    Qi = np.linalg.inv(np.where(bad_q[:, None, None], np.eye(Q.shape[-1]), Q))
    beta = np.einsum("Bpq,Bq->Bp", Qi, np.einsum("Bkap,Bka->Bp", Z, Yb))
    Py = np.einsum("Bkab,Bkb->Bka", Vi, Yb - np.einsum("kap,Bp->Bka", X, beta))
    n, p = len(rows), X.shape[-1]
    ld_V = 2.0 * np.sum(np.log(np.diagonal(L, axis1=-2, axis2=-1)), axis=(1, 2))
    ld_Q = 2.0 * np.sum(np.log(np.diagonal(LQ, axis1=-2, axis2=-1)), axis=1)
    quad = np.sum(Yb * Py, axis=(1, 2))
    value = marginal_criterion(ld_V, ld_Q, quad, n, p, reml)

    ViA = [_times(Vi, D) for D in first]
    AZ = [_apply_to_columns(D, Z) for D in first]
    ZAZ = [np.einsum("Bkap,Bkaq->Bpq", Z, az) for az in AZ]
    u = [_apply(D, Py) for D in first]
    Zu = [np.einsum("Bkap,Bka->Bp", Z, uj) for uj in u]
    Viu = [np.einsum("Bkab,Bkb->Bka", Vi, uj) for uj in u]

    def trace_M(D, ZDZ):
        kind, A = D
        tr_vi = np.einsum("Bkaa,Bka->B", Vi, A) if kind == "diag" else np.einsum("Bkab,Bkba->B", Vi, A)
        return tr_vi - np.sum(Qi * ZDZ, axis=(1, 2)) if reml else tr_vi

    grad = np.stack([trace_M(D, ZAZ[j]) - np.sum(Py * u[j], axis=(1, 2)) for j, D in enumerate(first)], axis=1)
    H = np.empty((B, k, k))
    for j in range(k):
        for l in range(j, k):
            t = np.einsum("Bkab,Bkba->B", ViA[j], ViA[l])
            if reml:
                t = t - 2.0 * np.sum(Qi * np.einsum("Bkap,Bkaq->Bpq", AZ[j], ViA[l] @ Z), axis=(1, 2))
                t = t + np.sum((Qi @ ZAZ[j]) * np.swapaxes(Qi @ ZAZ[l], 1, 2), axis=(1, 2))
            uPu = np.sum(u[j] * Viu[l], axis=(1, 2)) - np.einsum("Bp,Bpq,Bq->B", Zu[j], Qi, Zu[l])
            H[:, j, l] = -t + 2.0 * uPu
            if (j, l) in second:
                D = second[(j, l)]
                ZDZ = np.einsum("Bkap,Bkaq->Bpq", Z, _apply_to_columns(D, Z))
                H[:, j, l] += trace_M(D, ZDZ) - np.sum(Py * _apply(D, Py), axis=(1, 2))
            H[:, l, j] = H[:, j, l]
    bad |= ~np.isfinite(value)
    value = np.where(bad, np.inf, value)
    grad[bad], H[bad] = 0.0, np.eye(k)
    if extras:
        return value, grad, H, beta, Qi, -np.einsum("Bpq,Bqj->Bpj", Qi, np.stack(Zu, axis=2))
    return value, grad, H, beta
