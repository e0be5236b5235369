"""A reference fit for the dense system: the PWRSS of near-perfect fits to full precision.

``dense.pwrss`` computes the penalized residual sum of squares at the solution as
``|e + Z d_b + X d_beta|^2 + |u|^2``, where ``e = y - Z ref_b - X ref_beta`` is the residual of a
reference fit (its cross-products are the system's last row and column) and ``d`` the differences
between the reference fit and the solution.  Rounding makes it uncertain by about ``eps`` times the
size of those terms, so relative to the PWRSS by ``eps * cancellation`` (``cancellation``).  With no
reference (``e`` = the response after its least-squares shift) that is ``eps |y|^2 / PWRSS``: harmless
for most fits, but 1e-6 and worse where the model fits the data nearly exactly (sigma 1e-6 of the
response's spread and below), and a criterion that scatters by that much over small theta steps
stops Newton's method early, anywhere.

``rereference`` takes the solution at theta as the new reference: ``e`` is formed anew from the
rows (``Rows``, in the system's units: X and y scaled, y shifted), so its cross-products are exact
to rounding of the small residual, not of y; near that theta every term is then of the size of the
PWRSS.  ``dense_fit`` refits from its optimum with the system rereferenced there while the
cancellation at the optimum is large (``CANCELLATION_MAX``).

The rows are kept for the systems built by ``dense_layout.dense_system`` (``remember_rows``),
in a registry that forgets them when the system's ``A`` is collected.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import numpy as np

CANCELLATION_MAX = 1e3   # rereference where the PWRSS is this much smaller than its terms (~1e-13 rounding)
ROUNDS = 4               # at most this many refits from a rereferenced system


class Rows(NamedTuple):
    """The rows a dense system was formed from, in its units (NumPy / scipy.sparse, host only)."""

    X: np.ndarray    # (n, p) X / x_scale
    R: np.ndarray    # (n,) (y - offset - X beta_shift) / y_scale, 0 where unobserved
    Z: object        # (n, q) scipy.sparse
    w: np.ndarray    # (n,) weights, 0 where unobserved


_ROWS: dict[int, Rows] = {}


def remember_rows(system, rows: Rows) -> None:
    """Keep ``rows`` for ``system`` (until its ``A`` is collected)."""
    key = id(system.A)
    _ROWS[key] = rows
    weakref.finalize(system.A, _ROWS.pop, key, None)


def rows_of(system) -> Rows | None:
    return _ROWS.get(id(system.A))


def scaled_solution(system, sol) -> tuple[np.ndarray, np.ndarray]:
    """``(b, beta')`` of a ``DenseSolution`` in the system's units (padded): ``Lambda u`` and the
    scaled, shifted fixed effects."""
    y_scale = float(np.asarray(system.y_scale))
    b = np.asarray(sol.b, float) / y_scale
    beta = (np.asarray(sol.beta, float) - np.asarray(system.beta_shift, float)) * np.asarray(system.x_scale,
                                                                                             float) / y_scale
    return b, beta


def cancellation(system, sol) -> float:
    """``(|e|^2 + |Z d_b + X d_beta|^2) / PWRSS`` at the solution ``sol``: the factor by which rounding in
    ``dense.pwrss`` exceeds ``eps`` relative to the PWRSS (module docstring)."""
    A = np.asarray(system.A, float)
    b, beta = scaled_solution(system, sol)
    d = np.concatenate([np.asarray(system.ref_b, float) - b, np.asarray(system.ref_beta, float) - beta])
    terms = A[-1, -1] + abs(d @ A[:-1, :-1] @ d)
    p2 = float(np.asarray(sol.parts.pwrss)) / float(np.asarray(system.y_scale)) ** 2
    return float(terms / p2) if p2 > 0 else float("inf")


def rereference(system, sol):
    """The system with the solution ``sol`` as its reference fit (module docstring), or None where
    its rows are not known or the solution is not finite."""
    rows = rows_of(system)
    b, beta = scaled_solution(system, sol)
    if rows is None or not (np.all(np.isfinite(b)) and np.all(np.isfinite(beta))):
        return None
    q, p = rows.Z.shape[1], rows.X.shape[1]
    e = rows.R - rows.Z @ b[:q] - rows.X @ beta[:p]
    e = np.where(rows.w > 0, e, 0.0)
    we = rows.w * e
    A = np.array(system.A, dtype=float, copy=True)
    m = A.shape[0]
    col = np.zeros(m)
    col[:q] = rows.Z.T @ we
    qp = m - 1 - len(beta)
    col[qp:qp + p] = rows.X.T @ we
    col[-1] = e @ we
    A[:, -1] = A[-1, :] = col
    dt = np.asarray(system.A).dtype
    ref_b = np.zeros(np.shape(system.ref_b))
    ref_b[:q] = b[:q]
    ref_beta = np.zeros(np.shape(system.ref_beta))
    ref_beta[:p] = beta[:p]
    out = system._replace(A=A.astype(dt), ref_b=ref_b.astype(dt), ref_beta=ref_beta.astype(dt))
    remember_rows(out, rows)
    return out


def adopt(system, rereferenced) -> None:
    """Give ``system`` (in place) the reference of ``rereferenced``, the same problem: its last row and
    column of ``A`` and its reference fit.  Nothing where they are one system or ``system``'s arrays are
    read-only (a broadcast stack)."""
    if rereferenced is system or rereferenced is None:
        return
    leaves = [np.asarray(system.A), np.asarray(system.ref_b), np.asarray(system.ref_beta)]
    if not all(isinstance(a, np.ndarray) and a.flags.writeable for a in leaves):
        return
    A, ref_b, ref_beta = leaves
    A[-1, :] = np.asarray(rereferenced.A)[-1, :]
    A[:, -1] = np.asarray(rereferenced.A)[:, -1]
    ref_b[...] = np.asarray(rereferenced.ref_b)
    ref_beta[...] = np.asarray(rereferenced.ref_beta)
