"""The pure JAX core of jaxlmm: no pandas, no formulas, static shapes under jit.

Sub-packages by role, each importing only from those above it (``tests/test_layers.py``):

- ``status``, ``carry``, ``linalg`` (factorizations, small matrices, BLAS threads), ``compile``
  (ahead-of-time programs, cache safety, per-device placement), ``likelihood`` (the REML/ML criterion
  in each parametrization, Satterthwaite's and Kenward-Roger's formulas): the foundations;
- ``optim``: the one projected Newton kernel (``optim.kernel``) and its two drivers (in-jit
  ``optim.newton``, host ``optim.host``), first-order optimizers, lanes (chunk-and-pad), theta units;
- ``params``: the random-effects structure and the layout of theta, covariance functions, profile
  parametrizations, heritability;
- ``pls``: lme4's penalized least squares -- cross-products, the profiled REML/ML criterion, the
  solution (beta, BLUPs, sigma), the blocked fit programs, the Schur complement of large models;
- ``dense``, ``marginal``, ``spectral``: the small dense system, the marginal (structured) criterion,
  and K's eigenbasis (spectral batches and association scans).

The core follows the caller's JAX configuration: its functions compute in
the dtype of the arrays they get, so float64 needs JAX's 64-bit mode
(``jax.config.update("jax_enable_x64", True)`` or ``with jax.enable_x64(True):``).
"""

from .pls.crossprod import cross_products
from .pls.data import CrossProducts, ModelData
from .pls.criterion import deviance, profiled_deviance
from .pls.programs import FitOutput, fit_program
from .optim.newton import NewtonOptions, OptimResult, minimize_newton
from .optim.first_order import minimize_first_order, minimize_optax
from .pls.solve import Solution, linear_predictor, solve
from .params.structure import ReStructure, TermSpec

__all__ = [
    "CrossProducts", "FitOutput", "ModelData", "NewtonOptions", "OptimResult", "ReStructure", "Solution",
    "TermSpec", "cross_products", "deviance", "fit_program", "linear_predictor", "minimize_newton",
    "minimize_optax", "minimize_first_order", "profiled_deviance", "solve",
]
