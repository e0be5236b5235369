"""Association scans of a trait set (GEMMA ``-lmm 4 -n 1 2 ...``): every marker tested on all traits at once.

For marker ``x`` the model is ``Y = [X, x] [B; b^T] + Z G + E`` with ``b`` (d) the marker's effects on the
d traits; complete data only (GEMMA drops the individuals with a missing trait), so the criterion of
``criterion.py`` has no missing entries and every evaluation costs d x d factors per record.  Per marker:

- Wald: ``Sigma_g, Sigma_e`` re-estimated by REML with the marker (the one Newton kernel, from the null
  estimate), ``b^T Cov(b)^-1 b`` ~ chi^2_d;
- likelihood ratio: re-estimated by ML with the marker, ``2 (l_1 - l_0)`` ~ chi^2_d against the null ML fit;
- score: at the null REML estimate, ``b^T Cov(b)^-1 b`` with ``Sigma_g, Sigma_e`` held there.

The REML and ML refits of a chunk of markers are the lanes of one vmapped in-jit Newton program (a traced
``reml`` flag per lane), so one compiled program serves every chunk.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ..linalg import factor as linalg
from ..optim.newton import NewtonOptions, minimize_newton
from .criterion import Spec, criterion, estimates
from .data import MultivariateData


def _with_marker(data: MultivariateData, x):
    """The data with the rotated marker ``x`` (n,) appended to X."""
    return data._replace(Xr=jnp.concatenate([data.Xr, x[:, None]], axis=1))


def _marker_effect(params, data: MultivariateData, spec: Spec):
    """``(b, b^T Cov(b)^-1 b)``: the marker's effects (its row of B) and their Wald statistic at ``params``."""
    est = estimates(params, data, spec)
    d, p = est.B.shape[1], est.B.shape[0]
    b = est.B[-1]
    idx = jnp.arange(d) * p + (p - 1)                     # the marker's coefficient in each trait's block
    C = est.cov_beta[idx][:, idx]
    stat = b @ linalg.spd_inverse(C) @ b              # d x d, written out: no batched LAPACK call
    return b, jnp.sqrt(jnp.diag(C)), stat, C


@partial(jax.jit, static_argnames=("spec", "options"))
def scan_program(Xm, data: MultivariateData, theta_reml, theta_ml, lower, reflections, spec: Spec,
                 options: NewtonOptions):
    """For each rotated marker (columns of ``Xm``, (n, m)): the REML refit's effects, SEs, Wald statistic,
    status and iterations; the ML refit's deviance and status; the score statistic at ``theta_reml``.

    The refits take the null model's Hessians (REML and ML, at their optima) as the kernel's curvature
    (``minimize_newton(hessian=)``, the chord method): a marker moves the optimum a little, so a few
    iterations of one value and gradient each reach it, where exact Hessians cost k (k + 1) / 2 directional
    second derivatives per iteration."""
    H = jnp.stack([jax.hessian(lambda th: criterion(th, data, spec, True))(theta_reml),
                   jax.hessian(lambda th: criterion(th, data, spec, False))(theta_ml)])

    def one(x):
        dx = _with_marker(data, x)

        def fit(theta0, reml, H0):
            return minimize_newton(lambda th: criterion(th, dx, spec, reml), theta0, lower, options, reflections,
                                   hessian=H0)

        starts = jnp.stack([theta_reml, theta_ml])
        flags = jnp.array([True, False])
        res = jax.vmap(fit)(starts, flags, H)             # lane 0: REML, lane 1: ML
        b, se, wald, _ = _marker_effect(res.theta[0], dx, spec)
        _, _, score, _ = _marker_effect(theta_reml, dx, spec)
        return dict(beta=b, se=se, wald=wald, score=score, ml_deviance=res.fun[1], status_reml=res.status[0],
                    status_ml=res.status[1], n_iter=res.n_iter[0] + res.n_iter[1], theta=res.theta[0])

    return jax.vmap(one, in_axes=1)(Xm)
