"""The projected Newton method of ``optimize.minimize_newton``, driven from the host for a stack of problems.

Same method, same tolerances, same status codes (``optimize.py`` states them):
active set at the bounds, saddle-free Newton direction on the free set with
an escape along negative curvature, reflection symmetries at the bound,
projected Armijo backtracking, lme4's relative-gradient convergence test and
snapping of near-bound components to the bound.  Here the loop is NumPy on
the host and each iteration makes one call of a compiled
``vgh(x, rows) -> (f, g, H)`` for the problems still running (``x``: their rows,
``rows``: their indices among the B), plus one call of ``fun(x, rows) -> f``
per line-search trial for the problems still searching.  The compiled programs therefore hold
no loop: they are small, compile fast and are shared by every model of one
shape bucket (``dense.py``).

Problems that have stopped keep their values and are not evaluated again;
the callers pad what they evaluate to fixed chunk sizes, so the compiled
programs' shapes never change.
"""

from __future__ import annotations

import numpy as np

from .optimize import CONVERGED, LINE_SEARCH_FAILED, MAX_ITER, NONFINITE, NewtonOptions, OptimResult, Tolerances


def _newton_direction(x, g, H, free, at_bound, at_upper):
    """Descent direction at damping 0 and whether ``H_ff`` is positive definite (``optimize._newton_direction``)."""
    k = g.shape[1]
    eye = np.eye(k)
    Hf = np.where(free[:, :, None] & free[:, None, :], H, eye)
    gf = np.where(free, g, 0.0)
    w, V = np.linalg.eigh(Hf)
    scale = np.maximum(np.max(np.abs(w), axis=1), 1.0)
    w_abs = np.maximum(np.abs(w), 1e-10 * scale[:, None])
    Vg = np.einsum("bki,bk->bi", V, gf)
    newton = -np.einsum("bki,bi->bk", V, Vg / w_abs)
    v = V[:, :, 0]
    slope = np.sum(gf * v, axis=1)
    inward = np.sum(np.where(at_bound, v, 0.0) - np.where(at_upper, v, 0.0), axis=1)
    sign = np.where(np.abs(inward) > 1e-8, np.sign(inward), np.where(slope > 0, -1.0, 1.0))
    size = np.maximum(np.max(np.abs(newton), axis=1), 0.1 * np.maximum(1.0, np.max(np.abs(x), axis=1)))
    negative = w[:, 0] < -1e-8 * scale
    d = newton + np.where(negative, sign * size, 0.0)[:, None] * v
    return np.where(free, d, 0.0), w[:, 0] > 0


def _reflect(x, g, H, at_bound, flat, held, R):
    """Flip the columns whose diagonal element sits at 0 with an outward gradient (``f(R x) = f(x)``;
    ``R`` (k, k), or (B, k, k): one per problem)."""
    R = np.broadcast_to(R, (x.shape[0],) + R.shape[-2:])
    flip = (at_bound & (g > flat[:, None]) & (np.einsum("bj,bij->bi", (x != 0).astype(float), R) > 0) & ~held
            & (np.einsum("bj,bij->bi", held.astype(float), R) == 0))
    sign = np.where(np.einsum("bi,bij->bj", flip.astype(float), R) > 0, -1.0, 1.0)
    return sign * x, sign * g, sign[:, :, None] * H * sign[:, None, :]


def _line_search(fun, first, x, f, g, d, snap, x_snap, floor, ceiling, skip, opt: NewtonOptions):
    """Projected Armijo backtracking (or the snapped point) for every problem at once.

    The first trial is evaluated by ``first`` (the full derivatives, kept for the next
    iteration, which usually starts there), later ones by ``fun`` (by ``first`` too if
    ``fun`` is None: where a value costs as much as the derivatives).
    """
    a = np.ones(x.shape[0])
    ok = skip.copy()
    n = np.zeros(x.shape[0], dtype=int)
    x_new = x.copy()
    while True:
        give_up = np.where(snap, n >= 1, n >= opt.max_halvings)
        searching = ~ok & ~give_up
        if not searching.any():
            return x_new, ok
        xa = np.where(snap[:, None], x_snap, np.clip(x + a[:, None] * d, floor, ceiling))
        rows = np.flatnonzero(searching)
        fa = np.zeros(x.shape[0])
        fa[rows] = np.asarray((first if not n.any() or fun is None else fun)(xa[rows], rows), dtype=float)
        fa = np.where(np.isnan(fa), np.inf, fa)
        accept = np.where(snap, fa <= f + opt.snap_ftol * (1.0 + np.abs(f)),
                          fa <= f + opt.armijo * np.sum(g * (xa - x), axis=1))
        x_new = np.where(searching[:, None], xa, x_new)
        ok = np.where(searching, accept, ok)
        a = np.where(searching & ~accept, 0.5 * a, a)
        n = n + searching


def _remember_last(vgh):
    """``vgh`` remembered for its last argument: a line search's accepted first trial is the next
    iteration's point, so most iterations cost one evaluation."""
    memo: dict = {}

    def derivatives(z, rows):
        key = z.tobytes() + rows.tobytes()
        if key not in memo:
            memo.clear()
            memo[key] = tuple(np.asarray(v, dtype=float) for v in vgh(z, rows))
        return memo[key]

    return derivatives


def _converged(x, f, g, d, pos_def, n_small, tol: Tolerances):
    """lme4's relative-gradient test on the Newton step ``d``, or a predicted decrease at the noise
    floor for more than three iterations; returns (step size, converged, updated n_small)."""
    step = np.max(np.abs(d), axis=1, initial=0.0)
    pred = -np.sum(g * d, axis=1)
    tiny = np.max(np.abs(d) / (1.0 + np.abs(x)), axis=1, initial=0.0) <= tol.xtol
    fa = np.abs(f)
    n_small = np.where(pred <= tol.small * (1.0 + fa), n_small + 1, 0)
    return step, pos_def & (tiny | (pred <= tol.zero * (1.0 + fa)) | (n_small > 3)), n_small


def minimize_newton_host(vgh, fun, x0, lower, options: NewtonOptions = NewtonOptions(), reflections=None,
                         fixed=None, active_k: int | None = None, dtype=None, upper=None) -> OptimResult:
    """Minimize B problems ``fun(x)`` subject to ``lower <= x <= upper`` (``x0``: (B, k)); NumPy results.

    ``vgh(x, rows)`` returns ``(f, g, H)`` of the problems ``rows`` at ``x`` (their rows).  Only the first
    ``active_k`` components are optimized (the rest are shape padding, held
    where they are).  ``fixed`` (B, k) holds components at their start (profiles); ``lower``,
    ``upper`` and ``reflections`` may differ by problem (a leading B axis).  ``dtype`` is
    the precision the programs compute in (default ``x0``'s): the tolerances follow it, while the
    iterate itself is kept in float64 on the host.
    """
    opt = options
    x = np.array(x0, dtype=float, copy=True)
    B, k_all = x.shape
    k = k_all if active_k is None else active_k
    lower = np.broadcast_to(np.asarray(lower, float), (B, k_all))[:, :k]
    upper = np.broadcast_to(np.asarray(np.inf if upper is None else upper, float), (B, k_all))[:, :k]
    bounded, bounded_up = np.isfinite(lower), np.isfinite(upper)
    held = np.zeros((B, k), bool) if fixed is None else np.asarray(fixed, bool)[:, :k]
    R = None if reflections is None else np.asarray(reflections, float)[..., :k, :k]
    tol = Tolerances.of(opt, np.asarray(x0).dtype if dtype is None else dtype)
    f_out, g_out = np.full(B, np.inf), np.zeros((B, k))
    step_out = np.full(B, np.inf)
    it = np.zeros(B, dtype=np.int32)
    status = np.full(B, MAX_ITER, dtype=np.int32)
    done = np.zeros(B, bool)
    n_small = np.zeros(B, dtype=int)

    def pad(xk, full):
        out = full.copy()
        out[:, :k] = xk
        return out

    derivatives = _remember_last(vgh)

    for _ in range(opt.max_iter):
        lanes = ~done
        if not lanes.any():
            break
        rows = np.flatnonzero(lanes)
        f, g, H = np.zeros(B), np.zeros((B, k_all)), np.broadcast_to(np.eye(k_all), (B, k_all, k_all)).copy()
        f[rows], g[rows], H[rows] = derivatives(x[rows], rows)
        g, H = g[:, :k], H[:, :k, :k]
        xk = x[:, :k]
        it = it + lanes
        finite = np.isfinite(f) & np.all(np.isfinite(g), axis=1) & np.all(np.isfinite(H), axis=(1, 2))
        g = np.where(finite[:, None], g, 0.0)
        H = np.where(finite[:, None, None], H, np.eye(k))
        at_bound = bounded & (xk <= lower)
        at_upper = bounded_up & (xk >= upper)
        flat = tol.flat * (1.0 + np.abs(np.where(finite, f, 0.0)))
        if R is not None:
            xk, g, H = _reflect(xk, g, H, at_bound, flat, held, R)
        diag = np.diagonal(H, axis1=1, axis2=2)
        active = (held | (at_bound & ((g > flat[:, None]) | ((g >= -flat[:, None]) & (diag >= 0))))
                  | (at_upper & ((g < -flat[:, None]) | ((g <= flat[:, None]) & (diag >= 0)))))
        d, pos_def = _newton_direction(xk, g, H, ~active, at_bound, at_upper)
        step, converged, n_small = _converged(xk, np.where(finite, f, 0.0), g, d, pos_def, n_small, tol)
        near = bounded & (xk > lower) & (xk - lower <= opt.snap_eps) & ~held
        near_up = bounded_up & (xk < upper) & (upper - xk <= opt.snap_eps) & ~held
        snap = converged & (near | near_up).any(axis=1)
        x_snap = np.where(near, lower, np.where(near_up, upper, xk))
        cap = 10.0 * np.maximum(1.0, np.max(np.abs(xk), axis=1, initial=0.0))
        d = d * np.minimum(1.0, cap / np.maximum(step, 1e-300))[:, None]
        skip = ~finite | (converged & ~snap) | ~lanes
        value = None if fun is None else (lambda z, r: fun(pad(z, x[r]), r))
        x_new, ls_ok = _line_search(value, lambda z, r: derivatives(pad(z, x[r]), r)[0], xk,
                                    np.where(finite, f, 0.0), g, d, snap, x_snap,
                                    lower, upper, skip, opt)
        moved = ls_ok & ~skip
        stop = ~finite | (converged & ~moved) | (~converged & ~ls_ok)
        code = np.where(~finite, NONFINITE, np.where(
            converged, CONVERGED, np.where(ls_ok, MAX_ITER, np.where(step < 1e-5, CONVERGED, LINE_SEARCH_FAILED))))
        x[:, :k] = np.where((lanes & moved)[:, None], x_new, np.where(lanes[:, None], xk, x[:, :k]))
        f_out = np.where(lanes, f, f_out)
        g_out = np.where(lanes[:, None], g, g_out)
        step_out = np.where(lanes, step, step_out)
        status = np.where(lanes, code, status).astype(np.int32)
        done = done | (lanes & stop)
    return OptimResult(x, f_out, g_out, it, status, step_out)
