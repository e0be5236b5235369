"""The projected Newton method, written once for a stack of problems and any array namespace.

Every Newton fit in jaxlmm -- inside ``jit`` (``optimize.minimize_newton``: batches of traits,
``fit_function``, the spectral path) and on the host over lanes (``newton_host``: single fits,
profiles, bootstraps, structured models) -- takes its iterations from these functions; the two
drivers differ only in how they loop and evaluate (``lax.while_loop`` and compiled values, or a
NumPy loop that calls compiled programs for the lanes still running).  ``xp`` is ``numpy`` or
``jax.numpy``; ``eigh`` the symmetric eigensolver (``numpy.linalg.eigh``, or the loop-free
``linalg.symmetric_eigen`` inside ``jit``).  Arrays have a leading axis of B problems.

One iteration at ``x`` with ``f``, ``g``, ``H`` (``newton_step``):

1. Reflection symmetries ``f(R x) = f(x)`` (``ReStructure.reflections``): a component on its
   lower bound whose gradient points outward has its column of lambda flipped (``x, g, H ->
   R x, R g, R H R``), which turns the gradient inward; a boundary point is accepted only if
   it is a local minimum of both reflections.
2. Active set: components held (``held``), or on a bound with the gradient pointing outward
   (or flat there with non-negative curvature).
3. Direction on the free set: ``d(mu) = -V (|w| + mu)^{-1} V^T g_f`` with ``H_ff = V diag(w)
   V^T`` (saddle-free Newton at ``mu = 0``; ``|w|`` floored); where ``H_ff`` has a negative
   eigenvalue the eigenvector of the most negative one is added, oriented downhill (into the
   feasible set only where the slope along it is flat, as on theta = 0 by symmetry: oriented
   inward but uphill it made an ascent direction, on which the line search failed at once).
   Raising ``mu`` (Levenberg-Marquardt, ``damping="lm"``) damps the directions of small
   curvature first.  The step is capped at ``10 max(1, |x|)``.
4. Convergence: lme4's relative-gradient test, the Newton step ``H^{-1} g`` below ``xtol (1 +
   |x|)`` componentwise, with ``H_ff`` positive definite (or flat: item 7); or the predicted
   decrease ``-g^T d`` at the criterion's rounding noise for more than three iterations in a row.
5. Boundary: at convergence, components within ``snap_eps`` of a bound are tried on it and
   kept there if ``f`` rises by at most ``snap_ftol (1 + |f|)`` (singular fits on theta = 0
   exactly, as lme4's bobyqa).
6. Line search (``trial_point`` / ``accepts``): projected backtracking ``x(a) = clip(x + a d,
   floor, ceiling)`` with Armijo's condition, halving ``a`` (``damping="halve"``; after
   ``lm_after`` halvings fail, a poor direction, the trials raise ``mu`` instead) or raising
   ``mu`` (``"lm"``: first the curvature that dominates the step, then times 4).  A trial equal
   to ``x`` (a step below its rounding) is accepted only where the predicted decrease is at the
   noise floor (item 4's count then ends the fit); elsewhere it is no step, and the search fails
   instead of the fit repeating its point until the iteration limit.  With
   ``interior > 0`` a trial keeps bounded components above that fraction of their distance to
   the bound: a poor quadratic model far from the optimum no longer throws a well-determined
   variance component onto 0, where its gradient vanishes.
7. Status (``status_code``): converged; the iteration limit; a failed line search (converged
   after all when the Newton step was already below 1e-5); a non-finite criterion; not
   identified: stationary, but along a free eigenvector of the Hessian a move of ``1 + |x|``
   changes the criterion by at most ``flat_tol (1 + |f|)`` (a flat criterion: the data do not
   determine theta there, lme4's "nearly unidentifiable").
9. Unbounded criterion (``ray_points`` / ``ray_verdict``): where the fit ends with ``x / scale`` above
   ``ray_min`` in some component, the criterion is tried at ``t x`` for ``t`` in ``RAY``; a value below
   ``f`` there means ``x`` is no minimum -- in lme4's models the criterion then falls without bound as
   theta grows (the model reproduces the data, sigma -> 0) -- and the fit ends at the lowest of them
   with the status ``unbounded``.
8. Units (``scale``): the iteration may work on ``x / scale``.  Newton's direction does not depend
   on the units, but the step cap, the tolerances, the eigenvalue floor, the escape along negative
   curvature, the damping and the boundary snap do: the callers scale each element of theta by
   the spread of its random-effect covariate (``theta_scale``), so that a covariate on the scale
   of 1e4 or 1e-3 does not leave its thetas at 1e-4 or 1e3 beside the others.

Shared with the first-order path (``first_order.py``, optax and optimistix), which has no Newton step:
the bounds ``lower <= x <= upper`` and the stopping quantity of every optimizer, the projected gradient

    pg = x - clip(x - g, lower, upper)    (``projected_gradient``: 0 on a bound the gradient pushes
                                           against, the distance to it near one, g elsewhere),

its scaled size ``max_i |pg_i| max(1, |x_i|)`` (``projected_gradient_norm``; unscaled, ``max_i |pg_i|``,
it is the trace's ``grad_norm``, ``trace.py``) and the first-order stopping test ``pg_norm <= factor gtol
(1 + |f|)`` (``gradient_converged``).  The Newton iteration itself stops by item 4; its drivers report
this projected gradient in the trace.  These three take one problem (k,) or a stack (B, k).
"""

from __future__ import annotations

from typing import NamedTuple

from ..status import CONVERGED, LINE_SEARCH_FAILED, MAX_ITER, NONFINITE, NOT_IDENTIFIED, UNBOUNDED

RAY = (10.0, 100.0, 1000.0)   # item 9: multiples of x tried where x is large


class Step(NamedTuple):
    """One iteration's quantities for B problems (``newton_step``)."""

    x: object          # (B, k) the point (reflected)
    g: object          # (B, k) the gradient (reflected)
    d: object          # (B, k) the capped direction at damping 0
    step: object       # (B,) max |d| before the cap (lme4's relative gradient, unscaled)
    converged: object  # (B,)
    snap: object       # (B,) converged with components near a bound: try them on it
    x_snap: object     # (B, k)
    floor: object      # (B, k) lowest value a trial may take (the bound, or the interior floor)
    ceiling: object    # (B, k)
    n_small: object    # (B,) iterations in a row at the noise floor
    damped: tuple      # (V, Vg, w_abs, extra, cap, free, scale): the directions at damping mu > 0
    mu1: object        # (B,) first damping of a Levenberg-Marquardt search
    flat: object       # (B,) the criterion is flat along a free direction (item 7: not identified)


def reflect(xp, x, g, H, at_bound, flat, held, R):
    """Flip the columns whose diagonal element sits on 0 with an outward gradient (item 1)."""
    B = x.shape[0]
    R = xp.broadcast_to(R, (B,) + R.shape[-2:]).astype(x.dtype)
    nonzero = (x != 0).astype(x.dtype)
    flip = (at_bound & (g > flat[:, None]) & (xp.einsum("bj,bij->bi", nonzero, R) > 0) & ~held
            & (xp.einsum("bj,bij->bi", held.astype(x.dtype), R) == 0))
    sign = xp.where(xp.einsum("bi,bij->bj", flip.astype(x.dtype), R) > 0, -1.0, 1.0).astype(x.dtype)
    return sign * x, sign * g, sign[:, :, None] * H * sign[:, None, :]


def newton_step(xp, eigh, x, f, g, H, lower, upper, held, reflections, n_small, tol, opt, scale=None) -> Step:
    """Items 1-5 and 7 of the module docstring for B problems at ``x`` (``f`` finite; ``g``, ``H`` sanitized).

    ``scale`` (B, k) or (k,), positive: the iteration works on ``x / scale`` (item 8); the returned
    point, gradient, direction and bounds are in ``x``'s own units.
    """
    if scale is None:
        return _step(xp, eigh, x, f, g, H, lower, upper, held, reflections, n_small, tol, opt)
    c = xp.broadcast_to(xp.asarray(scale, x.dtype), x.shape)
    s = _step(xp, eigh, x / c, f, g * c, H * c[:, :, None] * c[:, None, :], lower / c, upper / c, held,
              reflections, n_small, tol, opt)
    return s._replace(x=s.x * c, g=s.g / c, d=s.d * c, x_snap=s.x_snap * c, floor=s.floor * c,
                      ceiling=s.ceiling * c, damped=s.damped[:-1] + (c,))


def _step(xp, eigh, x, f, g, H, lower, upper, held, reflections, n_small, tol, opt) -> Step:
    """``newton_step`` in the iteration's units."""
    dtype = x.dtype
    k = x.shape[1]
    bounded, bounded_up = xp.isfinite(lower), xp.isfinite(upper)
    at_bound = bounded & (x <= lower)
    at_upper = bounded_up & (x >= upper)
    flat = tol.flat * (1.0 + xp.abs(f))
    if reflections is not None:
        x, g, H = reflect(xp, x, g, H, at_bound, flat, held, reflections)
    diag = xp.diagonal(H, axis1=1, axis2=2)
    fl = flat[:, None]
    active = (held | (at_bound & ((g > fl) | ((g >= -fl) & (diag >= 0))))
              | (at_upper & ((g < -fl) | ((g <= fl) & (diag >= 0)))))
    free = ~active

    # item 3: the saddle-free Newton direction with its escape along negative curvature
    eye = xp.eye(k, dtype=dtype)
    Hf = xp.where(free[:, :, None] & free[:, None, :], H, eye)
    gf = xp.where(free, g, 0.0)
    w, V = eigh(Hf)
    scale = xp.maximum(xp.max(xp.abs(w), axis=1), 1.0)
    w_abs = xp.maximum(xp.abs(w), 1e-10 * scale[:, None])
    Vg = xp.einsum("bki,bk->bi", V, gf)
    newton = -xp.einsum("bki,bi->bk", V, Vg / w_abs)
    v = V[:, :, 0]
    slope = xp.sum(gf * v, axis=1)
    inward = xp.sum(xp.where(at_bound, v, 0.0) - xp.where(at_upper, v, 0.0), axis=1)
    # downhill where the slope along v is not flat; into the feasible set where it is (on 0 by symmetry)
    sign = xp.where(xp.abs(slope) > flat, -xp.sign(slope),
                    xp.where(xp.abs(inward) > 1e-8, xp.sign(inward), 1.0))
    size = xp.maximum(xp.max(xp.abs(newton), axis=1), 0.1 * xp.maximum(1.0, xp.max(xp.abs(x), axis=1)))
    negative = w[:, 0] < -1e-8 * scale
    extra = xp.where(negative, sign * size, 0.0)[:, None] * v
    d = xp.where(free, newton + extra, 0.0)
    pos_def = w[:, 0] > 0
    mu1 = xp.take_along_axis(w_abs, xp.argmax(xp.abs(Vg) / w_abs, axis=1)[:, None], axis=1)[:, 0]

    # item 4: convergence
    step = xp.max(xp.abs(d), axis=1)
    pred = -xp.sum(g * d, axis=1)
    tiny = xp.max(xp.abs(d) / (1.0 + xp.abs(x)), axis=1) <= tol.xtol
    fa = xp.abs(f)
    n_small = xp.where(pred <= tol.small * (1.0 + fa), n_small + 1, 0)
    # item 7: along a free eigenvector of curvature w, a move of 1 + |x| changes f by w (1 + |x|)^2 / 2
    reach = (1.0 + xp.max(xp.abs(x), axis=1)) ** 2
    on_free = xp.einsum("bk,bki->bi", free.astype(dtype), V * V) > 0.5
    flat_dir = xp.any(on_free & (xp.abs(w) * reach[:, None] <= 2.0 * opt.flat_tol * (1.0 + fa)[:, None]), axis=1)
    converged = (pos_def | flat_dir) & (tiny | (pred <= tol.zero * (1.0 + fa)) | (n_small > 3))

    # item 5: the bound for components within snap_eps of it
    near = bounded & (x > lower) & (x - xp.where(bounded, lower, 0.0) <= opt.snap_eps) & ~held
    near_up = bounded_up & (x < upper) & (xp.where(bounded_up, upper, 0.0) - x <= opt.snap_eps) & ~held
    snap = converged & xp.any(near | near_up, axis=1)
    x_snap = xp.where(near, lower, xp.where(near_up, upper, x))

    cap = 10.0 * xp.maximum(1.0, xp.max(xp.abs(x), axis=1))
    d = d * xp.minimum(1.0, cap / xp.maximum(step, 1e-300))[:, None]
    if opt.interior > 0:
        base = xp.where(bounded, lower, 0.0)
        keep = bounded & (x - base > opt.interior_min)
        floor = xp.where(keep, base + opt.interior * (x - base), lower)
    else:
        floor = lower + xp.zeros_like(x)
    return Step(x, g, d, step, converged, snap, x_snap, floor, upper + xp.zeros_like(x), n_small,
                (V, Vg, w_abs, extra, cap, free, None), mu1, flat_dir)


def damped_direction(xp, s: Step, mu):
    """``d(mu)`` of item 3 for B dampings ``mu`` (B,), capped as the undamped one."""
    V, Vg, w_abs, extra, cap, free, scale = s.damped
    mu = mu[:, None]
    d = -xp.einsum("bki,bi->bk", V, Vg / (w_abs + mu)) + extra * (w_abs[:, :1] / (w_abs[:, :1] + mu))
    d = xp.where(free, d, 0.0)
    d = d * xp.minimum(1.0, cap / xp.maximum(xp.max(xp.abs(d), axis=1), 1e-300))[:, None]
    return d if scale is None else d * scale


def first_trial(xp, s: Step, opt):
    """The line search's first value of its control: step fraction 1 (``halve``) or damping 0 (``lm``)."""
    return xp.zeros_like(s.step) if opt.damping == "lm" else xp.ones_like(s.step)


def _damped_phase(n, opt):
    """Whether trial number ``n`` (0-based) raises the damping: always with ``lm``; with ``halve``
    after ``lm_after`` halvings have failed (a poor direction: item 6)."""
    return (n >= 0) if opt.damping == "lm" else (n >= opt.lm_after)


def next_trial(xp, s: Step, c, n, opt):
    """The control after a rejected trial number ``n`` (0-based)."""
    if opt.damping == "lm":
        return xp.where(n == 0, s.mu1, 4.0 * c)
    return xp.where(n + 1 < opt.lm_after, 0.5 * c, xp.where(n + 1 == opt.lm_after, s.mu1, 4.0 * c))


def trial_point(xp, s: Step, c, n, opt):
    """The point tried at control ``c`` (B,) on trial ``n``: the snapped point, or the projected step."""
    damped = xp.asarray(_damped_phase(n, opt))
    d = xp.where(xp.reshape(damped, (-1, 1)), damped_direction(xp, s, xp.where(damped, c, 0.0)), c[:, None] * s.d)
    return xp.where(s.snap[:, None], s.x_snap, xp.minimum(xp.maximum(s.x + d, s.floor), s.ceiling))


def accepts(xp, s: Step, f, xa, fa, opt):
    """Whether the trial ``xa`` with value ``fa`` (NaN counted as +inf) is accepted."""
    fa = xp.where(xp.isnan(fa), xp.inf, fa)
    # a trial equal to x (a step below its rounding) only where the predicted decrease is at the noise floor
    moves = xp.any(xa != s.x, axis=1) | (s.n_small > 0)
    return xp.where(s.snap, fa <= f + opt.snap_ftol * (1.0 + xp.abs(f)),
                    moves & (fa <= f + opt.armijo * xp.sum(s.g * (xa - s.x), axis=1)))


def gives_up(xp, s: Step, n, opt):
    """After ``n`` trials: a snap is tried once, a step ``max_halvings`` times (``halve``: ``lm_after``
    halvings, then raised dampings)."""
    return xp.where(s.snap, n >= 1, n >= opt.max_halvings)


def status_code(xp, finite, converged, ls_ok, step, flat):
    """Item 7 of the module docstring."""
    stationary = xp.where(flat, NOT_IDENTIFIED, CONVERGED)
    return xp.where(~finite, NONFINITE, xp.where(converged, stationary, xp.where(
        ls_ok, MAX_ITER, xp.where(step < 1e-5, stationary, LINE_SEARCH_FAILED))))


def sanitize(xp, f, g, H):
    """``finite`` and (g, H) with non-finite problems' derivatives replaced (LAPACK's eigensolver may
    never return on NaN input; such a problem stops anyway)."""
    finite = xp.isfinite(f) & xp.all(xp.isfinite(g), axis=1) & xp.all(xp.isfinite(H), axis=(1, 2))
    k = g.shape[1]
    return (finite, xp.where(finite[:, None], g, 0.0),
            xp.where(finite[:, None, None], H, xp.eye(k, dtype=H.dtype)), xp.where(finite, f, 0.0))


def ray_points(xp, x, scale, opt):
    """(B, len(RAY), k) the points ``t x`` of item 9, and (B,) whether each problem is tried at all."""
    rel = xp.abs(x) if scale is None else xp.abs(x / scale)
    tried = xp.max(rel, axis=1) >= opt.ray_min
    return xp.asarray(RAY, x.dtype)[None, :, None] * x[:, None, :], tried


def ray_verdict(xp, x, f, status, points, values, tried):
    """Item 9: ``(x, f, status)`` after the ray's ``values`` (B, len(RAY)) at ``points``."""
    values = xp.where(xp.isnan(values) | ~tried[:, None], xp.inf, values)
    best = xp.argmin(values, axis=1)
    low = xp.take_along_axis(values, best[:, None], axis=1)[:, 0]
    lower = low < f - 1e-8 * (1.0 + xp.abs(f))
    x_best = xp.take_along_axis(points, best[:, None, None], axis=1)[:, 0]
    return (xp.where(lower[:, None], x_best, x), xp.where(lower, low, f),
            xp.where(lower, UNBOUNDED, status).astype(status.dtype))


def projected_gradient(xp, x, g, lower, upper):
    """``pg = x - clip(x - g, lower, upper)`` for ``x`` within its bounds (module docstring), formed
    componentwise so that it is ``g`` exactly where no bound is near: ``min(g, x - lower)`` where ``g > 0``
    and ``lower`` is finite, ``max(g, x - upper)`` where ``g < 0`` and ``upper`` is finite."""
    bounded, bounded_up = xp.isfinite(lower), xp.isfinite(upper)
    gap = x - xp.where(bounded, lower, 0.0)
    gap_up = x - xp.where(bounded_up, upper, 0.0)
    return xp.where(bounded & (g > 0), xp.minimum(g, xp.maximum(gap, 0.0)),
                    xp.where(bounded_up & (g < 0), xp.maximum(g, xp.minimum(gap_up, 0.0)), g))


def projected_gradient_norm(xp, x, g, lower, upper, scaled: bool = True):
    """``max_i |pg_i| max(1, |x_i|)`` (``scaled``: the stopping rule's size, the gradient in ``log x_i``
    where ``|x_i| > 1``) or ``max_i |pg_i|`` (the trace's), over the last axis."""
    pg = xp.abs(projected_gradient(xp, x, g, lower, upper))
    return xp.max(pg * xp.maximum(1.0, xp.abs(x)) if scaled else pg, axis=-1)


def gradient_converged(xp, f, pg_norm, gtol, factor=1.0):
    """The first-order stopping test: ``pg_norm <= factor gtol (1 + |f|)`` (``pg_norm``: scaled)."""
    return pg_norm <= factor * gtol * (1.0 + xp.abs(f))
