"""The pure JAX core of jaxlmm: no pandas, no formulas, static shapes under jit.

- ``structure``: random-effects terms and the layout of theta (``ReStructure``)
- ``data``: the pytrees ``ModelData`` (rows of one response) and ``CrossProducts``
- ``crossprod``: the weighted cross-products (sufficient statistics) of one response
- ``deviance``: the profiled REML criterion / ML deviance from one blocked Cholesky factor
- ``solution``: beta, BLUPs, sigma, Cov(beta) and conditional variances at theta
- ``optimize``: projected Newton (exact gradient and Hessian) and optax drivers
- ``fit``: the jitted fit program of the block path (large models, batches)
- ``dense``, ``dense_layout``, ``dense_fit``, ``newton_host``: small models through
  programs shared by every model of one size bucket

The core follows the caller's JAX configuration: its functions compute in
the dtype of the arrays they get, so float64 needs JAX's 64-bit mode
(``jax.config.update("jax_enable_x64", True)`` or ``with jax.enable_x64(True):``).
"""

from .crossprod import cross_products
from .data import CrossProducts, ModelData
from .deviance import deviance, profiled_deviance
from .fit import FitOutput, fit_program
from .optimize import NewtonOptions, OptimResult, minimize_newton
from .optimizers import minimize_first_order, minimize_optax
from .solution import Solution, linear_predictor, solve
from .structure import ReStructure, TermSpec

__all__ = [
    "CrossProducts", "FitOutput", "ModelData", "NewtonOptions", "OptimResult", "ReStructure", "Solution",
    "TermSpec", "cross_products", "deviance", "fit_program", "linear_predictor", "minimize_newton",
    "minimize_optax", "minimize_first_order", "profiled_deviance", "solve",
]
