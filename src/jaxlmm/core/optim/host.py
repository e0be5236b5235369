"""The projected Newton method of ``newton_kernel``, driven from the host for a stack of problems.

The iterations are ``newton_kernel``'s (the same as inside ``jit``: ``optimize.minimize_newton``);
here the loop is NumPy on the host and each iteration makes one call of a compiled
``vgh(x, rows) -> (f, g, H)`` for the problems still running (``x``: their rows,
``rows``: their indices among the B), plus one call of ``fun(x, rows) -> f``
per line-search trial for the problems still searching.  The compiled programs therefore hold
no loop: they are small, compile fast and are shared by every model of one
shape bucket (``dense/system.py``).

Problems that have stopped keep their values and are not evaluated again;
the callers pad what they evaluate to fixed chunk sizes, so the compiled
programs' shapes never change.
"""

from __future__ import annotations

import numpy as np

from . import kernel
from .newton import MAX_ITER, NewtonOptions, OptimResult, Tolerances


def _line_search(fun, first, s: kernel.Step, f, skip, opt: NewtonOptions):
    """The kernel's line search for every problem at once (``newton_kernel``, item 6).

    The first trial is evaluated by ``first`` (the full derivatives, kept for the next
    iteration, which usually starts there), later ones by ``fun`` (by ``first`` too if
    ``fun`` is None: where a value costs as much as the derivatives).
    """
    c = kernel.first_trial(np, s, opt)
    ok = skip.copy()
    n = np.zeros(s.x.shape[0], dtype=int)
    x_new = s.x.copy()
    while True:
        searching = ~ok & ~kernel.gives_up(np, s, n, opt)
        if not searching.any():
            return x_new, ok
        xa = kernel.trial_point(np, s, c, n, opt)
        rows = np.flatnonzero(searching)
        fa = np.zeros(s.x.shape[0])
        fa[rows] = np.asarray((first if not n.any() or fun is None else fun)(xa[rows], rows), dtype=float)
        accept = kernel.accepts(np, s, f, xa, fa, opt)
        x_new = np.where(searching[:, None], xa, x_new)
        ok = np.where(searching, accept, ok)
        c = np.where(searching & ~accept, kernel.next_trial(np, s, c, n, opt), c)
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


def minimize_newton_host(vgh, fun, x0, lower, options: NewtonOptions = NewtonOptions(), reflections=None,
                         fixed=None, active_k: int | None = None, dtype=None, upper=None, scale=None) -> OptimResult:
    """Minimize B problems ``fun(x)`` subject to ``lower <= x <= upper`` (``x0``: (B, k)); NumPy results.

    ``vgh(x, rows)`` returns ``(f, g, H)`` of the problems ``rows`` at ``x`` (their rows).  Only the first
    ``active_k`` components are optimized (the rest are shape padding, held
    where they are).  ``fixed`` (B, k) holds components at their start (profiles); ``lower``,
    ``upper``, ``reflections`` and ``scale`` (the units the iteration works in, ``newton_kernel`` item 8)
    may differ by problem (a leading B axis).  ``dtype`` is
    the precision the programs compute in (default ``x0``'s): the tolerances follow it, while the
    iterate itself is kept in float64 on the host.
    """
    opt = options
    x = np.array(x0, dtype=float, copy=True)
    B, k_all = x.shape
    k = k_all if active_k is None else active_k
    lower = np.broadcast_to(np.asarray(lower, float), (B, k_all))[:, :k]
    upper = np.broadcast_to(np.asarray(np.inf if upper is None else upper, float), (B, k_all))[:, :k]
    held = np.zeros((B, k), bool) if fixed is None else np.asarray(fixed, bool)[:, :k]
    R = None if reflections is None else np.asarray(reflections, float)[..., :k, :k]
    scale = None if scale is None else np.broadcast_to(np.asarray(scale, float), (B, k_all))[:, :k]
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
        it = it + lanes
        finite, g, H, f0 = kernel.sanitize(np, f, g[:, :k], H[:, :k, :k])
        s = kernel.newton_step(np, np.linalg.eigh, x[:, :k], f0, g, H, lower, upper, held, R, n_small, tol, opt,
                               scale)
        n_small = s.n_small
        skip = ~finite | (s.converged & ~s.snap) | ~lanes
        value = None if fun is None else (lambda z, r: fun(pad(z, x[r]), r))
        x_new, ls_ok = _line_search(value, lambda z, r: derivatives(pad(z, x[r]), r)[0], s, f0, skip, opt)
        moved = ls_ok & ~skip
        stop = ~finite | (s.converged & ~moved) | (~s.converged & ~ls_ok)
        code = kernel.status_code(np, finite, s.converged, ls_ok, s.step, s.flat)
        x[:, :k] = np.where((lanes & moved)[:, None], x_new, np.where(lanes[:, None], s.x, x[:, :k]))
        f_out = np.where(lanes, f, f_out)
        g_out = np.where(lanes[:, None], s.g, g_out)
        step_out = np.where(lanes, s.step, step_out)
        status = np.where(lanes, code, status).astype(np.int32)
        done = done | (lanes & stop)
    x[:, :k], f_out, status = _ray(derivatives, fun, x, f_out, status, scale, k, opt)
    return OptimResult(x, f_out, g_out, it, status, step_out)


def _ray(derivatives, fun, x, f, status, scale, k, opt):
    """``newton_kernel`` item 9: the problems ending far out tried along the ray ``t x``."""
    points, tried = kernel.ray_points(np, x[:, :k], scale, opt)
    values = np.full(points.shape[:2], np.inf)
    rows = np.flatnonzero(tried & np.isfinite(f))
    for j in range(points.shape[1]):
        if len(rows):
            z = x[rows].copy()
            z[:, :k] = points[rows, j]
            values[rows, j] = np.asarray((derivatives if fun is None else (lambda a, r: (fun(a, r),)))(z, rows)[0])
    return kernel.ray_verdict(np, x[:, :k], f, status, points, values, tried)
