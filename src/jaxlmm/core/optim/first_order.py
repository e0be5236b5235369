"""Any optax or optimistix minimiser on the profiled criterion, with the bounds and the stopping rule of jaxlmm.

The bounds ``lower <= theta <= upper`` and the projected gradient of the stopping rule are the Newton
kernel's (``kernel.py``, "Shared with the first-order path": ``projected_gradient``,
``projected_gradient_norm``, ``gradient_converged``); this module only drives the solvers.

Bounds: every solver minimises the *mirrored* criterion

    g(y) = f(P(y)),   P(y)_i = lower_i + |y_i - lower_i|  (lower bound only),
                      P(y)_i = upper_i - |upper_i - y_i|  (upper bound only),
                      P(y)_i = y_i folded into [lower_i, upper_i] by reflection at both  (two bounds),
                      P(y)_i = y_i  (neither),

an unconstrained function with the same minimum as ``f`` on ``lower <= theta <= upper``
(``upper``: +inf unless given); the estimate is ``theta = P(y)``.  For the diagonal
element of a scalar term ``f`` is even in ``theta_i`` (``lower_i = 0``), so ``g`` is as
smooth as ``f``; elsewhere ``g`` is continuous with a kink on the bound.  No solver sees
a bound, so none needs to support one.  The optimistix solvers own their iterate ``y``.
For the optax transformations the adapter owns it and also projects it onto the bounds
after each step, ``y <- clip(y + u, lower, upper)`` (where ``P`` is the identity): a
projected-gradient method, which sits on a bound the gradient pushes against instead of
oscillating across the kink (Adam's steps do not shrink there).  Line searches
(``value_fn``) evaluate ``g``, so every trial is a feasible theta.

Stopping rule, the same for all: the *projected exact gradient* at ``theta``,
``pg = theta - clip(theta - grad f, lower, upper)`` (``kernel.projected_gradient``: 0 on a
bound the gradient pushes against, the distance to it near one), scaled to the size of each
component, has ``max_i |pg_i| max(1, |theta_i|) <= gtol (1 + |f|)``
(``kernel.projected_gradient_norm``, ``kernel.gradient_converged``).  The scaling makes
the rule the gradient in ``log theta_i`` where ``|theta_i| > 1``: far out, where the
criterion flattens (``f ~ c log theta`` as a relative SD runs off to infinity, so
``df/dtheta ~ c / theta``), a small absolute gradient is no optimum, and a step that
threw theta to 1e7 does not "converge" there.  A solver may also stop on its
own (optimistix's ``terminate``) or stall (no move for ``STALL`` iterations): that is
``LINE_SEARCH_FAILED`` unless the projected gradient passes ``10 gtol``.

"Converged" is a claim about the point returned, so it also needs at least one iteration
(``max_iter=0`` returns the start with status ``MAX_ITER``) and a final criterion no higher
than the start's: a solver that climbed (a learning rate far too large) ends with status
``CRITERION_ROSE`` whatever its gradient says.

Maxima on a bound: the criterion is even in the diagonal element of a scalar term, so its
gradient vanishes at 0 also where 0 is a maximum along it (Sulfur: a first step lands on
0).  When the stopping rule passes with bounded components within ``snap_eps`` of a
bound, ``f`` is probed with those components ``escape`` inside; if that is lower, the
solver restarts from there (its state re-initialised; at most ``MAX_ESCAPES`` times).  The
probe also starts from the reflected theta (``ReStructure.reflections``: the column of lambda
below a diagonal element on its lower bound flipped, the same criterion with the gradient along that
element negated), where a vector term's bound may look like a minimum from one side only --
as the Newton optimizer's reflections do.

Boundary: a first-order method approaches a variance component whose optimum is 0
only geometrically.  At the end, components within ``snap_eps`` of a bound are put
on it when that raises ``f`` by at most ``snap_ftol (1 + |f|)`` -- as the Newton
optimizer does -- so singular fits land on ``theta = 0`` exactly.

optax: ``update(grad_g, state, y, value=g(y), grad=grad_g, value_fn=g)`` (through
``optax.with_extra_args_support``, so plain transformations ignore the extra
arguments and line searches such as ``optax.lbfgs`` get them).  optimistix: the
solver's ``init`` / ``step`` / ``terminate`` driven one step per iteration inside
the adapter's ``lax.while_loop``; the adapter evaluates ``f`` and its gradient at
each accepted iterate for the stopping rule and the trace.

A non-finite proposal (a learning-rate schedule that produces NaN, a step into
overflow) is never accepted: the loop stops at the last finite iterate with status
``NONFINITE_STEP``.  With ``trace=True`` the loop also fills a ``Trace``: fixed-size
arrays of ``max_iter + 1`` rows (row ``i``: the iterate after ``i`` steps; NaN after
the last one), so a vmapped batch carries one per trait.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ...errors import JaxlmmError
from .newton import OptimResult
from ..status import CONVERGED, CRITERION_ROSE, LINE_SEARCH_FAILED, MAX_ITER, NONFINITE, NONFINITE_STEP
from . import kernel
from .trace import Trace

STALL = 30  # iterations without a move before a solver counts as stalled
MAX_ESCAPES = 3  # restarts from inside a bound where the criterion had a stationary point on it


class FirstOrderOptions(NamedTuple):
    """Defaults chosen so that L-BFGS and BFGS reach the Newton optimizer's criterion to 1e-8 relative
    on every shared reference fit (``tests/test_optimizers.py``, ``benchmarks/optimizers.py``)."""

    max_iter: int = 10000
    gtol: float = 1e-7       # max |projected gradient| <= gtol (1 + |f|)
    snap_eps: float = 1e-3   # components this close to their bound are tried on it at the end
    snap_ftol: float = 1e-10  # ... and kept there when f rises by at most snap_ftol (1 + |f|)
    escape: float = 1e-2     # at a stationary point near a bound, f is probed this far inside it
    trace: bool = False


def optimizer_kind(optimizer) -> str:
    """``"optax"`` or ``"optimistix"``; a clear ``JaxlmmError`` for anything else."""
    import optax

    if isinstance(optimizer, optax.GradientTransformation) or (
            callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        return "optax"
    try:
        import optimistix as optx
    except ImportError:  # pragma: no cover - depends on the environment
        optx = None
    if optx is not None and isinstance(optimizer, optx.AbstractMinimiser):
        return "optimistix"
    hint = ""
    if callable(optimizer):
        hint = (" (a function was given: an optax optimizer is built by calling it, e.g. optax.lbfgs(), "
                "and a learning-rate schedule goes inside one, e.g. optax.adam(schedule))")
    raise JaxlmmError(f"optimizer= must be an optax GradientTransformation (e.g. optax.lbfgs(), optax.adam(1e-2)) "
                      f"or an optimistix minimiser (e.g. optimistix.BFGS(rtol=1e-9, atol=1e-9)); "
                      f"got {type(optimizer).__name__}{hint}")


def mirror(y, lower, upper=None):
    """``(P(y), dP/dy)`` (module docstring): bounded components reflected at their bounds, folded into
    ``[lower, upper]`` between two finite ones (a triangle wave of period ``2 (upper - lower)``).
    ``upper=None``: lower bounds only."""
    lo = jnp.isfinite(lower)
    l0 = jnp.where(lo, lower, 0.0)
    if upper is None:
        return jnp.where(lo, lower + jnp.abs(y - l0), y), jnp.where(lo & (y < lower), -1.0, 1.0).astype(y.dtype)
    up = jnp.isfinite(upper)
    two = lo & up
    u0 = jnp.where(up, upper, 0.0)
    width = jnp.where(two & (u0 > l0), u0 - l0, 1.0)
    phase = jnp.mod(y - l0, 2.0 * width)
    folded = jnp.where(u0 > l0, l0 + width - jnp.abs(phase - width), l0)
    theta = jnp.where(two, folded, jnp.where(lo, l0 + jnp.abs(y - l0), jnp.where(up, u0 - jnp.abs(u0 - y), y)))
    falling = jnp.where(two, phase > width, (lo & (y < lower)) | (up & (y > upper)))
    return theta, jnp.where(falling, -1.0, 1.0).astype(y.dtype)


def _optax_stepper(fun_g, optimizer, lower, upper):
    import optax

    opt = optax.with_extra_args_support(optimizer)

    def init(y, f, g):
        return opt.init(y)

    def step(y, state, f, g):
        updates, state = opt.update(g, state, y, value=f, grad=g, value_fn=fun_g)
        y = jnp.maximum(optax.apply_updates(y, updates), lower)
        return (y if upper is None else jnp.minimum(y, upper)), state, jnp.zeros((), bool)

    return init, step


def _optimistix_stepper(fun_g, solver, dtype):
    fn = lambda y, args: (fun_g(y), None)  # noqa: E731
    tags = frozenset()

    def init(y, f, g):
        return solver.init(fn, y, None, {}, jax.ShapeDtypeStruct((), dtype), None, tags)

    def step(y, state, f, g):
        y, state, _ = solver.step(fn, y, None, {}, state, tags)
        stop, _ = solver.terminate(fn, y, None, {}, state, tags)
        return y, state, stop

    return init, step


def minimize_first_order(fun: Callable, x0: jnp.ndarray, lower: jnp.ndarray, optimizer,
                         options: FirstOrderOptions = FirstOrderOptions(), reflections=None, upper=None):
    """Minimise ``fun`` on ``lower <= x <= upper`` with an optax or optimistix ``optimizer`` (module docstring).

    ``upper`` (k,): default None, no upper bounds (+inf everywhere; the program is then the one of lower
    bounds only).  ``reflections`` (k x k, 0/1; ``ReStructure.reflections``): sign flips that leave ``fun``
    unchanged when component i sits on its lower bound; the probe inside a bound also tries them.

    Returns ``(OptimResult, Trace or None)``; ``OptimResult.step`` is the final scaled max |projected gradient|.
    """
    opt = options
    dtype = x0.dtype
    upper = None if upper is None else jnp.asarray(upper, lower.dtype)  # None: the graph of lower bounds only
    vg = jax.value_and_grad(fun)
    fun_g = lambda y: fun(mirror(y, lower, upper)[0])  # noqa: E731
    pg_norm_of = partial(kernel.projected_gradient_norm, jnp, lower=lower,  # (theta, g[, scaled])
                         upper=jnp.full_like(lower, jnp.inf) if upper is None else upper)
    converged = partial(kernel.gradient_converged, jnp, gtol=opt.gtol)  # (f, pg_norm[, factor])
    projected = optimizer_kind(optimizer) == "optax"
    if projected:
        init, step = _optax_stepper(fun_g, optimizer, lower, upper)
    else:
        init, step = _optimistix_stepper(fun_g, optimizer, dtype)

    def evaluate(y):
        """f, df/dtheta at theta = P(y), the gradient the solver gets, and max |projected gradient|.

        The solver gets dg/dy; an optax one (projected iterates) with the components held on
        their bound (gradient pushing outwards) set to 0, so that its steps, momenta and
        curvature pairs live on the free components."""
        theta, sign = mirror(y, lower, upper)
        f, g = vg(theta)
        g_y = jnp.where(_held(theta, g, lower, upper), 0.0, g) if projected else sign * g
        return theta, f, g, g_y, pg_norm_of(theta, g)

    def cond(c):
        return (~c["done"]) & (c["it"] < opt.max_iter)

    def body(c):
        y_new, state, stop = step(c["y"], c["state"], c["f_y"], c["g_y"])
        theta_new, f, g, g_y, pg_norm = evaluate(y_new)
        finite = jnp.all(jnp.isfinite(y_new)) & jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
        moved = jnp.max(jnp.abs(theta_new - c["theta"]))
        n_still = jnp.where(moved > 0, 0, c["n_still"] + 1)
        conv = converged(f, pg_norm)
        stalled = stop | (n_still >= STALL)
        # a stationary point on (or at) a bound may be a maximum along it: probe inside, restart if lower
        near, near_up = _near(theta_new, lower, upper, opt.snap_eps)
        current = (theta_new, f, g, g_y, pg_norm)
        probe = lax.cond((conv | stalled) & _any(near, near_up),  # under vmap both branches run
                         lambda: _probe(evaluate, theta_new, (near, near_up), (lower, upper), opt.escape, reflections),
                         lambda: current)
        escape = ((conv | stalled) & _any(near, near_up) & (c["n_escape"] < MAX_ESCAPES) & jnp.isfinite(probe[1])
                  & (probe[1] < f - 1e-12 * (1.0 + jnp.abs(f))))
        theta_new, f, g, g_y, pg_norm = [jnp.where(escape, a, b) for a, b in zip(probe, current)]
        y_new = jnp.where(escape, probe[0], y_new)
        state = _select(escape, init(probe[0], probe[1], probe[3]), state)
        conv, stalled = conv & ~escape, stalled & ~escape
        status = jnp.where(~finite, NONFINITE_STEP, jnp.where(conv, CONVERGED, jnp.where(
            stalled, jnp.where(converged(f, pg_norm, factor=10.0), CONVERGED, LINE_SEARCH_FAILED), MAX_ITER)))
        out = dict(c, it=c["it"] + jnp.where(finite, 1, 0), done=~finite | conv | stalled, n_still=n_still,
                   status=status.astype(jnp.int32), n_escape=c["n_escape"] + escape.astype(jnp.int32))
        out.update(_select(finite, dict(y=y_new, state=state, theta=theta_new, f=f, g=g, f_y=f, g_y=g_y,
                                        pg=pg_norm),
                           {k: c[k] for k in ("y", "state", "theta", "f", "g", "f_y", "g_y", "pg")}))
        if opt.trace:
            row = jnp.where(finite, c["it"] + 1, opt.max_iter + 1)  # past the end: dropped
            out["trace"] = c["trace"].record(row, theta_new, f, pg_norm_of(theta_new, g, scaled=False), moved)
        return out

    theta0, f0, g0, g_y0, pg0 = evaluate(x0)
    start_ok = jnp.isfinite(f0) & jnp.all(jnp.isfinite(g0))
    carry = dict(y=x0, state=init(x0, f0, g_y0), theta=theta0, f=f0, g=g0, f_y=f0, g_y=g_y0, pg=pg0,
                 it=jnp.zeros((), jnp.int32), n_still=jnp.zeros((), jnp.int32), n_escape=jnp.zeros((), jnp.int32),
                 done=~start_ok,  # a converged start still gets one iteration: the probe of its bounds
                 status=jnp.where(start_ok, MAX_ITER, NONFINITE).astype(jnp.int32))  # no iteration: no claim
    if opt.trace:
        carry["trace"] = Trace.empty(opt.max_iter + 1, x0.shape[0], dtype).record(
            0, theta0, f0, pg_norm_of(theta0, g0, scaled=False), jnp.nan)
    c = lax.while_loop(cond, body, carry)
    theta, f, g = _snap(vg, c["theta"], c["f"], c["g"], lower, upper, opt)
    pg = pg_norm_of(theta, g)
    rose = (f > f0 + 1e-10 * (1.0 + jnp.abs(f0))) & (c["status"] != NONFINITE) & (c["status"] != NONFINITE_STEP)
    c["status"] = jnp.where(rose, CRITERION_ROSE, c["status"]).astype(jnp.int32)
    trace = None
    if opt.trace:
        last = jnp.minimum(c["it"], opt.max_iter)
        trace = c["trace"].record(last, theta, f, pg_norm_of(theta, g, scaled=False), c["trace"].step[last])
    return OptimResult(theta, f, g, c["it"], c["status"], pg), trace


def _held(theta, g, lower, upper):
    """The components on a bound with the gradient pushing outwards."""
    held = jnp.isfinite(lower) & (theta <= lower) & (g > 0)
    return held if upper is None else held | (jnp.isfinite(upper) & (theta >= upper) & (g < 0))


def _near(theta, lower, upper, eps):
    """The components within ``eps`` of their lower bound, and those within ``eps`` of their upper one
    (None without upper bounds)."""
    bounded = jnp.isfinite(lower)
    near = bounded & (theta - jnp.where(bounded, lower, 0.0) <= eps)
    if upper is None:
        return near, None
    bounded_up = jnp.isfinite(upper)
    return near, bounded_up & (jnp.where(bounded_up, upper, 0.0) - theta <= eps)


def _any(near, near_up):
    return jnp.any(near) if near_up is None else jnp.any(near | near_up)


def _probe(evaluate, theta, near, bounds, escape, reflections):
    """``evaluate`` at the lower of two points with the ``near`` components (near their lower bound, near
    their upper one) ``escape`` inside it: from ``theta``, and from its reflection (the column of lambda
    below a diagonal element on its lower bound flipped: the same criterion, the gradient along that
    element negated)."""
    (near, near_up), (lower, upper) = near, bounds

    def inside(point):
        point = jnp.where(near, lower + escape, point)
        return point if upper is None else jnp.clip(jnp.where(near_up, upper - escape, point), lower, upper)

    if reflections is None:
        return evaluate(inside(theta))
    R = jnp.asarray(reflections, theta.dtype)
    flip = near & (R @ (theta != 0).astype(theta.dtype) > 0)
    sign = jnp.where((flip.astype(theta.dtype) @ R) > 0, -1.0, 1.0).astype(theta.dtype)
    plain, mirrored = evaluate(inside(theta)), evaluate(inside(sign * theta))
    better = jnp.isfinite(mirrored[1]) & (mirrored[1] < plain[1])
    return _select(better, mirrored, plain)


def _select(pred, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), new, old)


def _snap(vg, theta, f, g, lower, upper, opt: FirstOrderOptions):
    """Put components within ``snap_eps`` of a bound on it when ``f`` does not rise past ``snap_ftol``."""
    near, near_up = _near(theta, lower, upper, opt.snap_eps)
    near = near & (theta > lower)
    trial = jnp.where(near, lower, theta)
    if upper is not None:
        near_up = near_up & (theta < upper)
        trial = jnp.where(near_up, upper, trial)
    f_trial, g_trial = vg(trial)
    ok = _any(near, near_up) & jnp.isfinite(f_trial) & (f_trial <= f + opt.snap_ftol * (1.0 + jnp.abs(f)))
    return jnp.where(ok, trial, theta), jnp.where(ok, f_trial, f), jnp.where(ok, g_trial, g)


def minimize_optax(fun: Callable, x0: jnp.ndarray, lower: jnp.ndarray, optimizer, max_iter: int = 10000,
                   gtol: float = 1e-7) -> OptimResult:
    """``minimize_first_order`` without a trace (the earlier name, kept for callers of ``jaxlmm.core``)."""
    return minimize_first_order(fun, x0, lower, optimizer, FirstOrderOptions(max_iter=max_iter, gtol=gtol))[0]
