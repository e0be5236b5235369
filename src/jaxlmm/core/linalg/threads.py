"""BLAS threads for the host-side loops of small models.

The host Newton loops (``optim/host.py``) and the marginal engine (``marginal*.py``) call
NumPy/SciPy, and through them OpenBLAS (jaxlib's CPU LAPACK calls go through SciPy's too), on
matrices of a few dozen to a few hundred rows.  There OpenBLAS's threads cost far more than they
save: on a 2-core VM one thread made a sleepstudy profile 1.6x faster and a 180-row marginal
evaluation 25x faster.  ``small_blas()`` holds BLAS to one thread for the duration of a call
(``threadpoolctl``; restored on exit, nothing global changes).
"""

from __future__ import annotations

from contextlib import nullcontext


_CONTROLLER = []


def small_blas(active: bool = True):
    """A context with one BLAS thread (``active``), else a no-op context.  The controller (the list of
    loaded BLAS libraries, about 2 ms to build in a process with jax loaded) is built once, at the
    first call, after NumPy's and SciPy's OpenBLAS are loaded."""
    if not active:
        return nullcontext()
    if not _CONTROLLER:
        import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS, which jaxlib's CPU LAPACK calls too)
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")
