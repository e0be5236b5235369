"""Fitting small models: host-driven projected Newton on the dense criterion, then the estimates.

Two compiled programs, each shared by every model whose padded sizes fall in
one bucket (``dense/system.py``) and by every use of those models -- REML and ML fits
alike: ``blocks`` (the three block log-determinants of
``dense.block_derivatives`` with their closed-form gradients and Hessians) and
``estimates`` (``dense.dense_solve``), each for a stack of (theta, system)
pairs.  The host combines the blocks into whichever criterion it minimizes
(``host_criterion``), and ``newton_host`` runs the loop.

Stacks are evaluated in chunks of a fixed number of lanes (``DenseStack``),
so a stack of any length reuses one compiled program per chunk size.

On a CPU every program uses XLA's classic emitters (``fit.CPU_COMPILER_OPTIONS``):
with the newer fusion emitters a vmapped second derivative through a batched
Cholesky factor can hang.  ``estimates`` for a handful of problems also turns XLA's
backend optimizations off (``FAST_COMPILE``): it compiles several times faster
and runs slower, the right trade for a program run once per fit; ``blocks``,
run at every iteration, keeps them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .system import (DenseSolution, DenseSystem, block_derivatives, block_derivatives_plain, criterion_weights,
                     dense_solve, without_reference)
from ..pls.parts import DevianceParts
from ..pls.programs import CPU_COMPILER_OPTIONS
from ..optim.host import minimize_newton_host
from ..optim.newton import NewtonOptions, OptimResult
from ..status import UNBOUNDED
from ..params.theta_scale import dense_default, dense_scale, scaled_start

FAST_COMPILE = {**CPU_COMPILER_OPTIONS, "xla_backend_optimization_level": 0}
FAST_MAX_BATCH = 8  # stacks up to this many problems use FAST_COMPILE on a CPU
CHUNK_BYTES = 1 << 28  # working memory of one program call (chunks of a stack are sized to it)
MAX_CHUNK = 256

# a stack of systems shares Lambda's index matrix; every other leaf has a leading lane axis
SYSTEM_AXES = DenseSystem(A=0, lam_index=None, p=0, n_obs=0, sum_log_w=0, beta_shift=0, x_scale=0, y_scale=0,
                          ref_b=0, ref_beta=0)


def compiler_options(batch: int = 1) -> str:
    """Which compiler options a program for ``batch`` problems gets here: "fast", "cpu" or "default"."""
    if jax.default_backend() != "cpu":
        return "default"
    return "fast" if batch <= FAST_MAX_BATCH else "cpu"


OPTIONS = {"fast": FAST_COMPILE, "cpu": CPU_COMPILER_OPTIONS, "default": None}


class _Variants(dict):
    """``fn`` jitted once per entry of ``OPTIONS`` (compiled lazily, on first use); while the
    ahead-of-time cache is enabled (``compile/aot.py``: the command line) a program is served from it, so a
    new process neither traces nor lowers it again."""

    def __init__(self, fn):
        super().__init__({kind: jax.jit(fn, compiler_options=opts) for kind, opts in OPTIONS.items()})
        self.fn = fn

    def __getitem__(self, kind):
        from ..compile import aot

        if not aot.enabled():
            return super().__getitem__(kind)
        aot.register_output_types(DenseSolution, DevianceParts)
        name = f"{self.fn.__module__}.{self.fn.__qualname__}"

        def run(*args):
            return aot.call(name, self.fn, args, {}, OPTIONS[kind])

        return run


def jit_variants(fn) -> dict:
    """``fn`` jitted once per entry of ``OPTIONS`` (``_Variants``)."""
    return _Variants(fn)


def _blocks(thetas, systems: DenseSystem, row_of):
    return jax.vmap(block_derivatives, in_axes=(0, SYSTEM_AXES, None))(thetas, systems, row_of)


def _blocks_plain(thetas, systems: DenseSystem, row_of):
    return jax.vmap(block_derivatives_plain, in_axes=(0, SYSTEM_AXES, None))(thetas, systems, row_of)


def _estimates(thetas, systems: DenseSystem, reml):
    return jax.vmap(dense_solve, in_axes=(0, SYSTEM_AXES, 0))(thetas, systems, reml)


_PROGRAMS = {"blocks": jit_variants(_blocks), "blocks_plain": jit_variants(_blocks_plain),
             "estimates": jit_variants(_estimates)}


def program(name: str, batch: int = 1):
    """The compiled program ``name`` ("blocks", "estimates") for a stack of ``batch``: ``blocks`` runs
    at every Newton iteration and keeps XLA's optimizations (a warm sleepstudy fit: 0.025 s, 0.048 s
    without them, for 0.1 s more compilation); ``estimates`` runs once per fit."""
    return _PROGRAMS[name][compiler_options(batch if name == "estimates" else FAST_MAX_BATCH + 1)]


def compiled_count() -> int:
    """How many programs have been compiled so far (tests check that models share them)."""
    return sum(fn._cache_size() for variants in _PROGRAMS.values() for fn in variants.values())


def lane_bytes(system: DenseSystem) -> int:
    """Working memory of one lane of ``blocks``: the (3, k, m, m) and (k, k, q, q) tensors dominate."""
    q, m = system.lam_index.shape[0], system.A.shape[-1]
    k = 4 if system.lam_index.size == 0 else int(np.max(system.lam_index))
    return 8 * (3 * k * m * m * 2 + k * k * q * q + 6 * m * m + k * q * m)


def chunk_lanes(system: DenseSystem, lanes: int) -> int:
    """Lanes per program call for a stack of ``lanes``: a power of two within ``CHUNK_BYTES``."""
    cap = max(1, min(MAX_CHUNK, CHUNK_BYTES // lane_bytes(system)))
    cap = 1 << (cap.bit_length() - 1)
    want = 1 << max(0, lanes - 1).bit_length()
    return min(cap, want)


class DenseStack:
    """A stack of ``B`` systems (NumPy leaves with a leading lane axis, ``lam_index`` shared),
    evaluated in chunks of ``chunk`` lanes (the last one padded by repeating its last lane).

    ``rows`` selects the lanes to evaluate (default all): an optimizer evaluates only the
    problems still running."""

    def __init__(self, systems: DenseSystem, row_of, chunk: int | None = None, shared: bool = False):
        self.host, self.shared = systems, shared
        self.B = int(systems.A.shape[0])
        self.chunk = chunk or chunk_lanes(systems, self.B)
        self.dtype = systems.A.dtype
        self.row_of = jax.device_put(np.asarray(row_of))
        self._all = np.arange(self.B)
        self._device_all = self._device_chunks(self._all)

    @staticmethod
    def of(system: DenseSystem, lanes: int, row_of, chunk: int | None = None) -> "DenseStack":
        """One system for any number of lanes (``lanes``: the length of a chunk's stack)."""
        return DenseStack(broadcast_system(system, lanes), row_of, chunk, shared=True)

    def _chunks(self, rows):
        for start in range(0, len(rows), self.chunk):
            sel = np.arange(start, start + self.chunk)
            yield np.minimum(sel, len(rows) - 1)

    def _device_chunks(self, rows):
        return [jax.device_put(_take(self.host, rows[sel])) for sel in self._chunks(rows)]

    def _run(self, name, thetas, rows, last):
        """Program ``name`` on every chunk of ``rows``: ``(thetas[sel], systems[sel], last(sel))``."""
        rows = self._all if rows is None else np.asarray(rows)
        thetas = np.asarray(thetas, float)
        if self.shared:
            device = self._device_all[:1] * (-(-len(rows) // self.chunk))
        elif len(rows) == self.B and np.array_equal(rows, self._all):
            device = self._device_all
        else:
            device = self._device_chunks(rows)
        out = []
        for sel, sys in zip(self._chunks(rows), device):
            n_real = min(self.chunk, len(rows) - int(sel[0]))
            res = jax.device_get(program(name, self.chunk)(jnp.asarray(thetas[sel], self.dtype), sys,
                                                           last(rows[sel] % self.B)))
            out.append(jax.tree_util.tree_map(lambda a: np.asarray(a, float)[:n_real], res))
        return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *out)

    def blocks(self, thetas, rows=None, plain: bool = False):
        """``block_derivatives`` (``plain``: ``block_derivatives_plain``) of the lanes ``rows`` at ``thetas``
        (one row each), as float64 NumPy."""
        return self._run("blocks_plain" if plain else "blocks", thetas, rows, lambda sel: self.row_of)

    def estimates(self, thetas, reml, rows=None) -> DenseSolution:
        """``dense_solve`` of the lanes ``rows`` (``reml``: a flag per lane of the stack), as NumPy."""
        reml = np.broadcast_to(np.asarray(reml, bool), (self.B,))
        return self._run("estimates", thetas, rows, lambda sel: jnp.asarray(reml[sel]))


def _take(systems: DenseSystem, sel) -> DenseSystem:
    return DenseSystem(*(leaf if axis is None else np.asarray(leaf)[sel] for leaf, axis in zip(systems, SYSTEM_AXES)))


def broadcast_system(system: DenseSystem, lanes: int) -> DenseSystem:
    """One system repeated ``lanes`` times along a new leading axis (``lam_index`` shared)."""
    return DenseSystem(*(np.asarray(leaf) if axis is None else np.broadcast_to(np.asarray(leaf),
                                                                               (lanes,) + np.shape(leaf))
                         for leaf, axis in zip(system, SYSTEM_AXES)))


def host_criterion(blocks, systems: DenseSystem, reml):
    """REML (``reml`` true) or ML criterion of every lane with its gradient and Hessian (NumPy)."""
    logdets, grads, hessians = blocks
    c, const = criterion_weights(systems, np.asarray(reml, float), xp=np)
    c = np.broadcast_to(c, logdets.shape)
    return (np.einsum("bs,bs->b", c, logdets) + const, np.einsum("bs,bsi->bi", c, grads),
            np.einsum("bs,bsij->bij", c, hessians))


def fit_stack(stack: DenseStack, theta0, lower, reflections, active_k: int, reml,
              options: NewtonOptions = NewtonOptions(), plain: bool = False) -> OptimResult:
    """Minimize every lane's criterion from ``theta0`` (B, k_pad) subject to ``theta >= lower`` (``plain``:
    on ``block_derivatives_plain``)."""
    sys64 = DenseSystem(*(np.asarray(leaf, float) for leaf in stack.host))
    reml = np.broadcast_to(np.asarray(reml, float), (stack.B,))

    def vgh(x, rows):
        return host_criterion(stack.blocks(x, rows, plain), _take(sys64, rows), reml[rows])

    # a line-search trial costs as much as the derivatives (kept for the next iteration)
    k_pad = np.asarray(theta0).shape[-1]
    scale = dense_scale(sys64, k_pad)
    theta0 = scaled_start(np.asarray(theta0, float), dense_default(stack.host.lam_index, k_pad), scale)
    return minimize_newton_host(vgh, None, theta0, lower, options,
                                reflections, active_k=active_k, dtype=stack.dtype, scale=scale)


def fit_dense(system: DenseSystem, row_of, theta0, lower, reflections, active_k: int, reml: bool = True,
              options: NewtonOptions = NewtonOptions()) -> tuple[OptimResult, DenseSolution]:
    """Minimize the criterion of one system from ``theta0``; the estimates at the optimum.

    Arrays are padded (``dense_layout``): only the first ``active_k`` thetas are free.  Where the
    PWRSS at the optimum is far below the terms it is computed from (a near-perfect fit:
    ``dense_reference``), the fit goes on from there on the system rereferenced at the optimum,
    until the criterion is computed to full precision near the optimum (``dense_reference.ROUNDS``
    refits at most; the iterations add up, the status is the last refit's).  The system given then
    takes that reference too (``dense_reference.adopt``): the model's objective is as precise there.
    The first round runs on ``block_derivatives_plain`` (a smaller program: the first fit of a model
    compiles it), whose PWRSS is exact to ``eps`` times that same cancellation: where the cancellation is
    small the first round's optimum stands; elsewhere the refits use ``block_derivatives``.
    """
    from . import reference as dense_reference

    res, sol, n_iter = None, None, 0
    original = system
    theta = np.asarray(theta0, float)[None]
    for round_ in range(dense_reference.ROUNDS + 1):
        if sol is not None:
            if (int(np.asarray(res.status)[0]) == UNBOUNDED
                    or dense_reference.cancellation(system, sol) <= dense_reference.CANCELLATION_MAX):
                break
            system = dense_reference.rereference(system, sol)
            if system is None:
                break
        if round_ == 0:             # the estimates too: exact to eps times the cancellation checked next
            stack = DenseStack.of(without_reference(system), 1, row_of)
            res = fit_stack(stack, theta, lower, reflections, active_k, bool(reml), options, plain=True)
        else:
            stack = DenseStack.of(system, 1, row_of)
            res = fit_stack(stack, theta, lower, reflections, active_k, bool(reml), options)
        n_iter += int(np.asarray(res.n_iter)[0])
        theta = np.asarray(res.theta, float)
        sol = stack.estimates(res.theta, [bool(reml)])
        sol = jax.tree_util.tree_map(lambda a: a[0], sol)
    dense_reference.adopt(original, system)
    res = OptimResult(*(np.asarray(v)[0] for v in res))._replace(n_iter=np.asarray(n_iter, np.int32))
    return res, sol
