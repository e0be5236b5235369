"""A term's covariance as a differentiable function of its own parameters.

Every structure maps a parameter vector ``phi`` (absolute scale, not relative
to sigma) to the ``S x S`` covariance ``C(phi)`` of one level's effects, in
``jax.numpy``; first and second derivatives come from autodiff of this small
map (``derivatives``), so a structure -- built in or written by a user -- is
nothing more than this function, its bounds and its start:

- ``us``: ``C = L L^T`` with ``L`` lower triangular, parameters its column-major lower
  triangle (lme4's theta times sigma); diagonal entries >= 0.
- ``diag``: ``C = diag(s)^2``, ``s >= 0``.
- ``ar1``: ``C_ij = tau^2 rho^|i-j|``, ``rho = tanh(a)``; parameters ``(tau >= 0, |a| <= 8)``.
- ``cs``: ``C = D R D``, ``D = diag(s)``, ``R = (1 - rho) I + rho 1 1^T``,
  ``rho = lo + (1 - lo) / (1 + e^-a)`` with ``lo = -1 / (S - 1)`` (always positive definite).
- ``exp``: ``C_ij = tau^2 exp(-d_ij / l)``, ``gau``: ``tau^2 exp(-d_ij^2 / l^2)``, ``ou``: ``exp``
  over one coordinate (times); ``d_ij`` the Euclidean distance of the columns' coordinates
  (``pos(...)``), parameters ``(tau >= 0, log l)``.

``natural`` maps the parameters to the quantities a summary reports (variances,
correlations, ranges); its Jacobian gives their Wald standard errors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

import jax
import jax.numpy as jnp

A_MAX = 8.0  # bound of a correlation's unconstrained parameter (tanh(8) = 1 - 2e-7)
_DERIVATIVES: dict = {}   # CovarianceFunction.key -> jitted (C, dC, d2C)
BUILT_IN = ("us", "diag", "ar1", "cs", "exp", "gau", "ou")
SPATIAL = ("exp", "gau", "ou")


@dataclass(frozen=True, eq=False)
class CovarianceFunction:
    """``C = fn(phi)`` (S x S) with ``n_params`` parameters, bounds ``lower``/``upper``, ``start``.

    ``scales``: indices of parameters that are standard deviations (their start is multiplied by
    the response's residual SD); ``names``: parameter names; ``natural``: ``phi -> dict`` of
    reported quantities (default: the parameters themselves).
    """

    name: str
    fn: Callable
    n_params: int
    lower: np.ndarray
    start: np.ndarray
    names: tuple[str, ...]
    scales: tuple[int, ...] = ()
    upper: np.ndarray | None = None
    natural: Callable | None = None
    key: tuple | None = None    # identifies the function across models (its compiled derivatives are shared)
    origin: str | None = None   # a user's covariance: where it was given (``covariances['g']``), for messages
    at: Callable | None = None  # coords (S', d) -> the same covariance over other coordinates (kriging)

    def _program(self):
        key = self.key or ("object", id(self))
        prog = _DERIVATIVES.get(key)
        if prog is None:
            fn = self.fn

            def jets(p):
                C = fn(p)
                J = jax.jacfwd(fn)(p)
                H = jax.jacfwd(jax.jacfwd(fn))(p)
                return C, jnp.moveaxis(J, -1, 0), jnp.moveaxis(H, (-2, -1), (0, 1))
            prog = _DERIVATIVES[key] = jax.jit(jax.vmap(jets))
        return prog

    def derivatives(self, phi: np.ndarray):
        """``C``, ``dC/dphi`` (k, S, S) and ``d2C/dphi^2`` (k, k, S, S) at ``phi`` (NumPy, float64)."""
        return tuple(a[0] for a in self.derivatives_many(np.asarray(phi, float)[None]))

    def derivatives_many(self, phis: np.ndarray):
        """``derivatives`` of each row of ``phis`` (B, k), stacked on a leading axis; lanes padded to a power
        of two so that any number of lanes shares a few compiled programs."""
        phis = np.asarray(phis, float)
        B = phis.shape[0]
        pad = 1 << max(0, B - 1).bit_length()
        full = np.concatenate([phis, np.repeat(phis[-1:], pad - B, axis=0)]) if pad > B else phis
        with jax.enable_x64(True):
            out = self._program()(jnp.asarray(full, jnp.float64))
            return tuple(np.asarray(a, float)[:B] for a in out)

    def report(self, phi: np.ndarray, vcov: np.ndarray | None):
        """Reported quantities, with delta-method SEs from ``vcov`` (the parameters' covariance)."""
        with jax.enable_x64(True):
            return self._report(phi, vcov)

    def report_many(self, phis: np.ndarray) -> dict:
        """``report``'s quantities (no SEs) of each row of ``phis`` (B, k): name -> (B,) array."""
        nat = self.natural or (lambda p: {n: p[i] for i, n in enumerate(self.names)})
        with jax.enable_x64(True):
            names = list(nat(jnp.asarray(self.start, jnp.float64)))
            stacked = jax.vmap(lambda p: jnp.stack([jnp.asarray(v, jnp.float64) for v in nat(p).values()]))
            values = np.asarray(stacked(jnp.asarray(np.atleast_2d(phis), jnp.float64)), float)
        return {name: values[:, i] for i, name in enumerate(names)}

    def _report(self, phi, vcov):
        nat = self.natural or (lambda p: {n: p[i] for i, n in enumerate(self.names)})
        values = {k: float(v) for k, v in nat(jnp.asarray(phi, jnp.float64)).items()}
        if vcov is None:
            return values, {k: np.nan for k in values}
        J = jax.jacfwd(lambda p: jnp.stack(list(nat(p).values())))(jnp.asarray(phi, jnp.float64))
        J = np.asarray(J, float)
        se = np.sqrt(np.maximum(np.einsum("ai,ij,aj->a", J, vcov, J), 0.0))
        return values, dict(zip(values, se))


def _lower_triangle(S: int):
    rows, cols = [], []
    for j in range(S):
        for i in range(j, S):
            rows.append(i)
            cols.append(j)
    return np.asarray(rows), np.asarray(cols)


def unstructured(S: int, columns) -> CovarianceFunction:
    rows, cols = _lower_triangle(S)

    def fn(p):
        L = jnp.zeros((S, S), p.dtype).at[rows, cols].set(p)
        return L @ L.T

    def natural(p):
        C = fn(p)
        sd = jnp.sqrt(jnp.diagonal(C))
        out = {f"var.{c}": C[i, i] for i, c in enumerate(columns)}
        for j in range(S):
            for i in range(j + 1, S):
                out[f"cor.{columns[i]}.{columns[j]}"] = C[i, j] / (sd[i] * sd[j])
        return out

    names = tuple(f"L[{i},{j}]" for i, j in zip(rows, cols))
    return CovarianceFunction("us", fn, len(rows), np.where(rows == cols, 0.0, -np.inf),
                              np.where(rows == cols, 1.0, 0.0), names, tuple(np.flatnonzero(rows == cols)),
                              natural=natural)


def diagonal(S: int, columns) -> CovarianceFunction:
    return CovarianceFunction("diag", lambda p: jnp.diag(p * p), S, np.zeros(S), np.ones(S),
                              tuple(f"sd.{c}" for c in columns), tuple(range(S)),
                              natural=lambda p: {f"var.{c}": p[i] ** 2 for i, c in enumerate(columns)})


def ar1(S: int) -> CovarianceFunction:
    lag = np.abs(np.subtract.outer(np.arange(S), np.arange(S)))

    def fn(p):
        rho = jnp.tanh(p[1])
        # rho^0 .. rho^(S-1) by products (a power with exponent 0 has a NaN derivative at rho = 0)
        powers = jnp.cumprod(jnp.concatenate([jnp.ones(1, p.dtype), jnp.full((S - 1,), 1.0, p.dtype) * rho]))
        return p[0] ** 2 * powers[lag]

    # start at rho = 0.5: at rho = 0 the term's covariance is tau^2 I, confounded with the residual's,
    # and Newton's first step from a singular Hessian can land on the flat plateau rho = 1; |a| <= 8
    # (|rho| <= 1 - 2e-7) keeps a gradient there to come back along
    return CovarianceFunction("ar1", fn, 2, np.array([0.0, -A_MAX]), np.array([1.0, np.arctanh(0.5)]), ("sd", "a"),
                              (0,), upper=np.array([np.inf, A_MAX]),
                              natural=lambda p: {"variance": p[0] ** 2, "rho": jnp.tanh(p[1])})


def compound_symmetry(S: int, columns) -> CovarianceFunction:
    lo = -1.0 / max(S - 1, 1)

    def rho(a):
        return lo + (1.0 - lo) / (1.0 + jnp.exp(-a))

    def fn(p):
        r = rho(p[S])
        R = (1.0 - r) * jnp.eye(S, dtype=p.dtype) + r
        return p[:S, None] * R * p[None, :S]

    def natural(p):
        out = {f"var.{c}": p[i] ** 2 for i, c in enumerate(columns)}
        out["rho"] = rho(p[S])
        return out

    return CovarianceFunction("cs", fn, S + 1, np.r_[np.zeros(S), -np.inf], np.r_[np.ones(S), np.log(-lo)],
                              tuple(f"sd.{c}" for c in columns) + ("a",), tuple(range(S)), natural=natural)


def spatial(kind: str, coords: np.ndarray) -> CovarianceFunction:
    """``exp``, ``gau`` or ``ou`` over the columns' coordinates ``coords`` (S, d)."""
    coords = np.asarray(coords, float)
    D = np.sqrt(np.sum((coords[:, None, :] - coords[None, :, :]) ** 2, axis=-1))
    positive = D[D > 0]
    start_range = float(np.median(positive)) if positive.size else 1.0

    def fn(p):
        scaled = D * jnp.exp(-p[1])
        k = jnp.exp(-scaled * scaled) if kind == "gau" else jnp.exp(-scaled)
        return p[0] ** 2 * k

    return CovarianceFunction(kind, fn, 2, np.array([0.0, -np.inf]), np.array([1.0, np.log(start_range)]),
                              ("sd", "log_range"), (0,),
                              natural=lambda p: {"variance": p[0] ** 2, "range": jnp.exp(p[1])},
                              at=lambda new: spatial(kind, new))


def built_in(kind: str, S: int, columns, coords=None) -> CovarianceFunction:
    """The built-in structure ``kind`` for a term of ``S`` columns (``coords``: spatial kinds)."""
    if kind == "us":
        out = unstructured(S, columns)
    elif kind == "diag":
        out = diagonal(S, columns)
    elif kind == "ar1":
        out = ar1(S)
    elif kind == "cs":
        out = compound_symmetry(S, columns)
    elif kind in SPATIAL:
        out = spatial(kind, coords)
    else:
        raise ValueError(f"unknown covariance structure {kind!r}")
    where = b"" if coords is None or kind not in SPATIAL else np.asarray(coords, float).tobytes()
    return replace(out, key=(kind, S, where))


@dataclass(frozen=True, eq=False)
class UserCovariance:
    """A covariance written by a user: ``fn(params, coords) -> (S, S)`` in ``jax.numpy``.

    ``coords`` is the (S, d) array of the term's column coordinates (``pos(...)``), or the
    column indices 0..S-1 as an (S, 1) array for other terms.  Made by ``jaxlmm.covariance``.
    """

    fn: Callable
    n_params: int
    lower: np.ndarray
    upper: np.ndarray | None
    start: np.ndarray
    names: tuple[str, ...]
    scales: tuple[int, ...]
    name: str = "user"

    def sized(self, term, group: str | None = None) -> CovarianceFunction:
        """The function bound to one term's columns (``group``: the ``covariances=`` key, for messages)."""
        coords = getattr(term, "coords", None)
        S = len(term.columns)
        coords = np.arange(S, dtype=float)[:, None] if coords is None else np.asarray(coords, float)
        where = f"covariances[{(group if group is not None else term.group)!r}] ({self.name!r})"
        return self._bound(coords, where)

    def _bound(self, coords: np.ndarray, where: str) -> CovarianceFunction:
        with jax.enable_x64(True):
            c = jnp.asarray(coords, jnp.float64)
        return CovarianceFunction(self.name, lambda p: self.fn(p, c), self.n_params, self.lower, self.start,
                                  self.names, self.scales, self.upper, key=("user", id(self), coords.tobytes()),
                                  origin=where, at=lambda new: self._bound(np.asarray(new, float), where))


def covariance(fn: Callable, n_params: int, *, lower=None, upper=None, start=None, names=None,
               scales=(), name: str = "user") -> UserCovariance:
    """A term covariance ``C = fn(params, coords)`` to pass as ``lmer(..., covariances={group: ...})``.

    ``fn`` is a ``jax.numpy`` function of the parameter vector (length ``n_params``) and the
    term's column coordinates; it must return a symmetric positive semi-definite ``S x S`` matrix on
    the absolute scale (not relative to sigma).  Gradients and Hessians of the fit come from
    autodiff of ``fn``.  ``lower``/``upper``: bounds (default unbounded); ``start``: starting
    values (default 1, moved into the bounds); ``scales``: indices of parameters that are standard
    deviations (their start is multiplied by the response's residual SD); ``names``: parameter
    names (distinct).

    The arguments are checked here; ``fn`` itself is checked where a fit starts, on the term's
    coordinates (``check_at_start``): it must return a finite, symmetric, positive semi-definite
    ``(S, S)`` matrix with finite first and second derivatives, else the error names the group.

    Examples
    --------
    A homogeneous AR(1) over the levels of a factor, as the built-in ``ar1``:

    >>> import jax.numpy as jnp
    >>> def ar1(p, coords):
    ...     lag = jnp.abs(coords[:, None, 0] - coords[None, :, 0])
    ...     return p[0] ** 2 * jnp.tanh(p[1]) ** lag
    >>> cov = covariance(ar1, 2, lower=[0.0, -jnp.inf], start=[1.0, 0.1], scales=[0], names=["sd", "a"])
    """
    from ...errors import DataError

    if not callable(fn):
        raise DataError(f"covariance(fn, ...): fn must be a function of (params, coords), got {type(fn).__name__}")
    if isinstance(n_params, bool) or not isinstance(n_params, (int, np.integer, float, np.floating)) \
            or not float(n_params).is_integer():
        raise DataError(f"covariance(...): n_params must be a whole number, got {n_params!r}")
    k = int(n_params)
    if k < 1:
        raise DataError(f"covariance(...): n_params must be at least 1, got {k}")
    if not isinstance(name, str) or not name:
        raise DataError(f"covariance(...): name must be a non-empty string, got {name!r}")

    def vec(v, fill, arg):
        try:
            out = np.full(k, fill, float) if v is None else np.asarray(v, float).reshape(-1)
        except (TypeError, ValueError):
            raise DataError(f"covariance(...): {arg} must be {k} numbers, got {v!r}") from None
        if out.shape != (k,):
            raise DataError(f"covariance(...): {arg}: expected {k} values (one per parameter), got {out.shape[0]}")
        if np.any(np.isnan(out)):
            raise DataError(f"covariance(...): {arg} has NaN at position {int(np.flatnonzero(np.isnan(out))[0])}")
        return out

    lo, up = vec(lower, -np.inf, "lower"), vec(upper, np.inf, "upper")
    bad = np.flatnonzero((lo > up) | (lo == np.inf) | (up == -np.inf))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"covariance(...): parameter {i} has lower = {lo[i]} and upper = {up[i]}: lower must be "
                        "below upper, lower < inf and upper > -inf")
    if start is None:
        st = np.clip(np.ones(k), lo, up)
    else:
        st = vec(start, 1.0, "start")
        out = np.flatnonzero(~np.isfinite(st) | (st < lo) | (st > up))
        if out.size:
            i = int(out[0])
            raise DataError(f"covariance(...): start[{i}] = {st[i]} is not a finite value within its bounds "
                            f"[{lo[i]}, {up[i]}]")
    names = _checked_names(names, k)
    return UserCovariance(fn, k, lo, None if upper is None else up, st, names, _checked_scales(scales, k), name)


def _checked_names(names, k: int) -> tuple[str, ...]:
    from ...errors import DataError

    if names is None:
        return tuple(f"p{i + 1}" for i in range(k))
    if isinstance(names, str):
        raise DataError(f"covariance(...): names must be a list of {k} strings, got the string {names!r}")
    names = tuple(names)
    if len(names) != k:
        raise DataError(f"covariance(...): names: {len(names)} names for {k} parameters")
    if not all(isinstance(n, str) and n for n in names):
        raise DataError(f"covariance(...): names must be non-empty strings, got {list(names)!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"covariance(...): names must be distinct; {', '.join(map(repr, dup))} is given more "
                        "than once")
    return names


def _checked_scales(scales, k: int) -> tuple[int, ...]:
    from ...errors import DataError

    if scales is None:
        return ()
    if isinstance(scales, (int, np.integer)) and not isinstance(scales, bool):
        scales = [scales]
    try:
        items = list(scales)
    except TypeError:
        raise DataError(f"covariance(...): scales must be a list of parameter indices, got {scales!r}") from None
    if len(items) > k:
        raise DataError(f"covariance(...): scales lists {len(items)} indices for {k} parameters")
    out = []
    for i in items:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= int(i) < k:
            raise DataError(f"covariance(...): scales must hold parameter indices 0..{k - 1}, got {i!r}")
        out.append(int(i))
    if len(set(out)) != len(out):
        raise DataError(f"covariance(...): scales lists an index twice: {out}")
    return tuple(out)


SYMMETRY_TOL = 1e-8     # |C - C^T| <= tol * max |C|
PSD_TOL = 1e-8          # smallest eigenvalue >= -tol * largest |eigenvalue|


def check_matrix(cov: CovarianceFunction, phi: np.ndarray, S: int, when: str) -> np.ndarray:
    """``cov.fn(phi)`` checked: an ``(S, S)`` finite, symmetric, positive semi-definite matrix (NumPy)."""
    from ...errors import DataError

    where = cov.origin or f"covariance {cov.name!r}"
    shown = np.array2string(np.asarray(phi, float), precision=4, separator=", ")
    try:
        with jax.enable_x64(True):
            C = np.asarray(cov.fn(jnp.asarray(phi, jnp.float64)))
    except Exception as exc:       # the user's function: any exception is theirs, reported with its group
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"{where}: fn(params, coords) failed at {when} params = {shown}: "
                        f"{type(exc).__name__}: {first}") from exc
    if C.shape != (S, S):
        raise DataError(f"{where}: fn(params, coords) returned an array of shape {C.shape}; the term has {S} "
                        f"column{'s' if S != 1 else ''}, so it must return a ({S}, {S}) matrix")
    if not (np.issubdtype(C.dtype, np.floating) or np.issubdtype(C.dtype, np.integer)):
        raise DataError(f"{where}: fn(params, coords) returned {C.dtype} values; it must return real numbers")
    C = C.astype(float)
    if not np.all(np.isfinite(C)):
        raise DataError(f"{where}: fn(params, coords) is not finite at {when} params = {shown}")
    scale = float(np.max(np.abs(C))) if C.size else 0.0
    asym = float(np.max(np.abs(C - C.T))) if C.size else 0.0
    if asym > SYMMETRY_TOL * scale:
        raise DataError(f"{where}: fn(params, coords) is not symmetric at {when} params = {shown} "
                        f"(max |C - C^T| = {asym:.3g}, max |C| = {scale:.3g}); a covariance must be symmetric")
    eig = np.linalg.eigvalsh(0.5 * (C + C.T))
    if eig.size and eig[0] < -PSD_TOL * max(float(np.max(np.abs(eig))), 1e-300):
        raise DataError(f"{where}: fn(params, coords) is not positive semi-definite at {when} params = {shown} "
                        f"(smallest eigenvalue {eig[0]:.4g}, largest {eig[-1]:.4g}); a covariance must be; "
                        "bound the parameters (lower=, upper=) to where it is")
    return C


def check_at_start(cov: CovarianceFunction, phi: np.ndarray, S: int) -> None:
    """A user's covariance at the fit's start: ``check_matrix``, and its first and second derivatives
    (autodiff of ``fn``, as the fit uses them) exist and are finite."""
    from ...errors import DataError

    check_matrix(cov, phi, S, "the start")
    where = cov.origin or f"covariance {cov.name!r}"
    try:
        C, dC, d2C = cov.derivatives(phi)
    except Exception as exc:       # not traceable by JAX (NumPy calls, Python branches on values, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"{where}: JAX cannot differentiate fn(params, coords) ({type(exc).__name__}: {first}); "
                        "write it with jax.numpy, without NumPy calls or Python branches on params") from exc
    for what, a in (("first", dC), ("second", d2C)):
        if not np.all(np.isfinite(a)):
            raise DataError(f"{where}: the {what} derivatives of fn(params, coords) in params are not finite at "
                            f"the start params = {np.array2string(np.asarray(phi, float), precision=4)} (a "
                            "square root or log at 0, such as sqrt of a zero distance? add a tiny constant)")
