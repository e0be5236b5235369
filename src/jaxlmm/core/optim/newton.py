"""Bound-constrained minimization of the profiled deviance, jittable and vmappable.

The default is a projected Newton method (Bertsekas 1982) with the exact
gradient and Hessian from autodiff:

1. Active set: components at their lower bound whose gradient points outward
   (``g_i >= 0``) are held fixed.
2. Direction on the free set: ``d = -|H_ff|^{-1} g_f``, where ``|H|`` replaces
   the eigenvalues of the reduced Hessian by their absolute values (floored),
   so ``d`` is a descent direction also where the deviance is not convex.
3. Projected backtracking line search: ``x(a) = max(x + a d, lower)`` with the
   Armijo condition ``f(x(a)) <= f(x) + c g^T (x(a) - x)``.  For large models
   (``pls/programs.py``: a costly Hessian, cheap criterion evaluations) the trials instead
   raise a Levenberg-Marquardt damping ``mu`` in ``d(mu) = -(|H| + mu I)^{-1} g``
   (``damping="lm"``), and keep bounded components above a fraction of their
   distance to the bound (``interior``): a poor first quadratic model far from the
   optimum then no longer sends a well-determined variance component to 0, where
   its gradient vanishes and Newton needs several iterations to come back
   (InstEval from lme4's start: 7 instead of 11 Hessians).
4. Convergence is the scale-aware *relative gradient* criterion lme4 itself
   checks after optimizing: the Newton step ``H^{-1} g`` (distance to the
   optimum of the local quadratic model, in units of theta) is below ``xtol``
   relative to ``1 + |theta|``; or its predicted decrease ``-g^T d`` has been
   below ``1e-10 |f|`` (the rounding noise of the criterion in ill-conditioned
   problems) for more than three iterations in a row.
5. Boundary: the deviance is an even function of the diagonal element of a
   scalar term, so its gradient vanishes at 0 and Newton only approaches 0.
   At convergence, bounded components within ``snap_eps`` of their bound are
   set to the bound when that does not raise the deviance by more than
   ``snap_ftol * (1 + |f|)``; the iteration then continues with them active.
   This puts singular fits exactly on theta = 0, as lme4's bobyqa does.

``newton_kernel`` states the method in full: the halving line search turns to a damping after
``lm_after`` failed halvings, the iteration may work in units scaled by each theta's covariate
(``scale``, ``theta_scale``), and a stationary point on a flat criterion has the status
``not_identified``; one ending far out (large theta) where the criterion falls further along the ray
``t theta`` has the status ``unbounded``.

Everything runs in ``lax.while_loop``; failures are status codes, never
exceptions, so one bad problem in a vmapped batch does not stop the others.
Any optax or optimistix optimizer can be used instead (``first_order.minimize_first_order``); it shares
the bounds and the projected gradient of its stopping rule with this one (``kernel.projected_gradient``,
``kernel.projected_gradient_norm``: the trace's ``grad_norm`` here).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..linalg import factor as linalg
from . import kernel
from ..carry import tie
from .trace import Trace

from ..status import CONVERGED, LINE_SEARCH_FAILED, MAX_ITER, NONFINITE, NOT_IDENTIFIED  # noqa: F401


class OptimResult(NamedTuple):
    theta: jnp.ndarray
    fun: jnp.ndarray
    grad: jnp.ndarray
    n_iter: jnp.ndarray
    status: jnp.ndarray
    step: jnp.ndarray  # max |H^{-1} g| on the free set at the end (lme4's relative gradient)


class NewtonOptions(NamedTuple):
    max_iter: int = 100
    sequential_hessian: bool | str = False  # Hessian columns one by one (no batched LAPACK; large dense
    # parts); "forward" is accepted and means False (few parameters always use forward mode)
    xtol: float = 1e-8
    armijo: float = 1e-4
    max_halvings: int = 40   # line-search trials per iteration
    lm_after: int = 12       # damping="halve": after this many halvings fail, raise a Levenberg-Marquardt damping
    flat_tol: float = 1e-7   # not identified: a move of 1 + |theta| along a free direction changes f by less
    # than this relative to 1 + |f| (``newton_kernel``, item 7)
    ray_min: float = 100.0   # a fit ending with |theta / scale| above this tries 10, 100, 1000 theta (item 9)
    snap_eps: float = 1e-4
    snap_ftol: float = 1e-10
    damping: str = "halve"   # line search: "halve" the step, or "lm": raise a Levenberg-Marquardt damping
    interior: float = 0.0    # > 0: a trial keeps bounded components above this fraction of their distance to
    # the bound (unless within interior_min of it); for large models, whose Hessians are costly
    interior_min: float = 1e-2
    trace: bool = False      # record the path (``trace.Trace``; ``minimize_newton_traced``)


class Tolerances(NamedTuple):
    """The optimizer's tolerances at a working precision (the float64 values are the defaults)."""

    xtol: float   # Newton step relative to 1 + |theta|
    flat: float   # gradient counted as zero, relative to 1 + |f|
    small: float  # predicted decrease at the criterion's rounding noise
    zero: float   # predicted decrease counted as none

    @staticmethod
    def of(options: "NewtonOptions", dtype) -> "Tolerances":
        eps = float(np.finfo(dtype).eps)
        return Tolerances(max(options.xtol, 50.0 * eps), max(1e-12, 1e4 * eps), max(1e-10, 1e3 * eps),
                          max(1e-15, 10.0 * eps))


FORWARD_HESSIAN_MAX = 4  # up to this many parameters the Hessian comes from second-order forward mode


def value_grad_hessian(fun: Callable, x: jnp.ndarray, sequential: bool | str = False):
    """f, grad f and the (symmetric) Hessian of ``fun`` at ``x``.

    With few parameters (``k <= FORWARD_HESSIAN_MAX``) from nested forward mode
    along ``k (k + 1) / 2`` directions: the second directional derivative
    ``D^2 f[u] = u^T H u`` along ``u = e_i`` gives ``H_ii`` (and ``D f[e_i] = g_i``),
    along ``u = e_i + e_j`` it gives ``H_ij = (D^2 f[e_i + e_j] - H_ii - H_jj) / 2``
    (polarization).  No reverse pass: the program is about half the size of
    forward-over-reverse and as fast for these ``k``.  Otherwise from one
    linearization of ``grad f`` (forward over reverse), its columns with
    ``lax.map`` when ``sequential=True`` so that no LAPACK call gets a batch
    axis (see ``linalg/factor.py``).
    """
    k = x.shape[0]
    if sequential is not True and k <= FORWARD_HESSIAN_MAX:
        rows, cols = np.triu_indices(k)
        eye = np.eye(k)
        directions = jnp.asarray(eye[rows] + eye[cols] * (rows != cols)[:, None], x.dtype)

        def along(u):
            (f, d1), (_, d2) = jax.jvp(lambda s: jax.jvp(fun, (s,), (u,)), (x,), (u,))
            return f, d1, d2

        f, d1, d2 = jax.vmap(along)(directions)
        pair = {(int(i), int(j)): n for n, (i, j) in enumerate(zip(rows, cols))}
        diagonal = np.asarray([pair[i, i] for i in range(k)])
        hd = d2[diagonal]
        off = {(i, j): 0.5 * (d2[pair[i, j]] - (hd[i] + hd[j])) for i in range(k) for j in range(i + 1, k)}
        H = jnp.stack([jnp.stack([hd[i] if i == j else off[min(i, j), max(i, j)] for j in range(k)])
                       for i in range(k)])  # exactly symmetric
        return f[0], d1[diagonal], H
    (f, g), jvp = jax.linearize(jax.value_and_grad(fun), x)
    eye = jnp.eye(k, dtype=x.dtype)
    H = lax.map(lambda v: jvp(v)[1], eye) if sequential is True else jax.vmap(lambda v: jvp(v)[1])(eye)
    return f, g, 0.5 * (H + H.T)


def minimize_newton(fun: Callable, x0: jnp.ndarray, lower: jnp.ndarray,
                    options: NewtonOptions = NewtonOptions(), reflections=None, fixed=None, scale=None,
                    hessian=None) -> OptimResult:
    """Projected Newton minimization of ``fun`` subject to ``x >= lower`` (``_newton_loop``).

    ``hessian`` (k, k), optional: a fixed curvature used in place of the exact Hessian (the chord
    method: each iteration costs one value and gradient, convergence is linear instead of quadratic;
    the stopping rule still tests the gradient through the step ``H^-1 g``) -- for many small
    perturbations of one problem started at its optimum, such as a scan's markers."""
    return _newton_loop(fun, x0, lower, options, reflections, fixed, scale=scale, hessian=hessian)[0]


def minimize_newton_traced(fun: Callable, x0: jnp.ndarray, lower: jnp.ndarray,
                           options: NewtonOptions = NewtonOptions(), reflections=None, fixed=None, scale=None):
    """``minimize_newton`` and its path: ``(OptimResult, trace.Trace)`` (``options.trace`` is set)."""
    return _newton_loop(fun, x0, lower, options._replace(trace=True), reflections, fixed, scale=scale)


def _newton_loop(fun: Callable, x0: jnp.ndarray, lower: jnp.ndarray, options: NewtonOptions, reflections=None,
                 fixed=None, upper=None, scale=None, hessian=None):
    """Projected Newton minimization of ``fun`` subject to ``lower <= x <= upper``: the iterations of
    ``newton_kernel`` driven by ``lax.while_loop``.

    Each outer iteration evaluates f, g and H once at the current point; the
    inner loop evaluates f only, at the line-search trials or at the snapped
    point.  (One trace of each keeps the compiled program small.)

    ``reflections`` (k x k, 0/1) declares symmetries ``f(R x) = f(x)`` (``newton_kernel``, item 1).
    ``fixed`` (k, bool; may be traced) holds components at their starting values, for profiling.
    ``scale`` (k,): the units the iteration works in (``newton_kernel``, item 8).
    """
    opt = options
    dtype = x0.dtype
    lower = jnp.asarray(lower, dtype)[None]
    upper = (jnp.full_like(lower, jnp.inf) if upper is None else jnp.asarray(upper, dtype)[None])
    held = (jnp.zeros(x0.shape, bool) if fixed is None else jnp.asarray(fixed, bool))[None]
    R = None if reflections is None else jnp.asarray(reflections, dtype)
    scale = None if scale is None else jnp.asarray(scale, dtype)[None]
    tol = Tolerances.of(opt, dtype)

    def cond(state):
        return (~state["done"]) & (state["it"] < opt.max_iter)

    def body(state):
        x, it = state["x"], state["it"]
        if hessian is None:
            f, g, H = value_grad_hessian(fun, x, opt.sequential_hessian)
        else:
            (f, g), H = jax.value_and_grad(fun)(x), jnp.asarray(hessian, x.dtype)
        finite, g1, H1, f1 = kernel.sanitize(jnp, f[None], g[None], H[None])
        s = kernel.newton_step(jnp, linalg.symmetric_eigen, x[None], f1, g1, H1, lower, upper, held, R,
                               state["n_small"][None], tol, opt, scale)

        def ls_cond(c):
            _, _, ok, n = c
            return (~ok[0]) & (~kernel.gives_up(jnp, s, n, opt)[0])

        def ls_body(c):
            a, _, _, n = c
            xa = kernel.trial_point(jnp, s, a, n, opt)
            ok = kernel.accepts(jnp, s, f1, xa, fun(xa[0])[None], opt)
            return (jnp.where(ok, a, kernel.next_trial(jnp, s, a, n, opt)), xa, ok, n + 1)

        skip = ~finite | (s.converged & ~s.snap)
        c0 = tie(kernel.first_trial(jnp, s, opt), f)
        _, x_new, ls_ok, _ = lax.while_loop(ls_cond, ls_body, (c0, s.x, skip, tie(jnp.zeros((), jnp.int32), f)))
        moved = (ls_ok & ~skip)[0]
        converged, ls_ok, finite = s.converged[0], ls_ok[0], finite[0]
        done = ~finite | (converged & ~moved) | (~converged & ~ls_ok)
        status = kernel.status_code(jnp, finite, converged, ls_ok, s.step[0], s.flat[0])
        x_refl = s.x[0]
        new = dict(x=jnp.where(moved, x_new[0], x_refl), f=f, g=s.g[0], it=it + 1,
                   status=status.astype(jnp.int32), done=done, step=s.step[0], n_small=s.n_small[0])
        if opt.trace:
            pg = kernel.projected_gradient_norm(jnp, x_refl, s.g[0], lower[0], upper[0], scaled=False)
            new["moved"] = jnp.where(moved, jnp.max(jnp.abs(x_new[0] - x_refl)), 0.0)
            new["trace"] = state["trace"].record(it, x_refl, f, pg, state["moved"])
        return new

    out = lax.while_loop(cond, body, _newton_start(x0, opt))
    # the reported f and g belong to the last evaluated point; a final accepted
    # step (max_iter reached) leaves them one step behind, which only happens
    # when the fit has not converged.
    x, f, status = out["x"], out["f"], out["status"].astype(jnp.int32)
    if opt.ray_min < np.inf:          # item 9, statically off where the criterion is bounded below
        x, f, status = _ray(fun, x, f, status, scale, opt)
    res = OptimResult(x, f, out["g"], out["it"], status, out["step"])
    return res, out.get("trace")


def _ray(fun, x, f, status, scale, opt):
    """``newton_kernel`` item 9 for the one problem of ``_newton_loop`` (its values only where tried)."""
    points, tried = kernel.ray_points(jnp, x[None], scale, opt)
    values = lax.cond(tried[0], lambda p: jax.vmap(fun)(p), lambda p: jnp.full(p.shape[:1], jnp.inf, f.dtype),
                      points[0])
    x, f, status = kernel.ray_verdict(jnp, x[None], f[None], status[None], points, values[None], tried)
    return x[0], f[0], status[0]


def _newton_start(x0, opt: NewtonOptions) -> dict:
    k, dtype = x0.shape[0], x0.dtype
    init = dict(x=x0, f=jnp.asarray(jnp.inf, dtype), g=jnp.zeros(k, dtype), it=jnp.zeros((), jnp.int32),
                status=jnp.asarray(MAX_ITER, jnp.int32), done=jnp.zeros((), bool),
                step=jnp.asarray(jnp.inf, dtype), n_small=jnp.zeros((), jnp.int32))
    if opt.trace:
        init.update(moved=jnp.asarray(jnp.nan, dtype), trace=Trace.empty(opt.max_iter + 1, k, dtype))
    return {name: value if name == "x" else jax.tree_util.tree_map(lambda a: tie(a, x0), value)
            for name, value in init.items()}
