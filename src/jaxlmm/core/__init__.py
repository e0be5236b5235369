"""The pure JAX core of jaxlmm: no pandas, no formulas, static shapes under jit.

- ``structure``: random-effects terms and the layout of theta (``ReStructure``)
- ``data``: the pytrees ``ModelData`` (rows of one response) and ``CrossProducts``
- ``crossprod``: the weighted cross-products (sufficient statistics) of one response
- ``deviance``: the profiled REML criterion / ML deviance from one blocked Cholesky factor
- ``solution``: beta, BLUPs, sigma, Cov(beta) and conditional variances at theta
- ``optimize``: projected Newton (exact gradient and Hessian) and optax drivers
- ``fit``: the jitted fit program
"""

from .._config import enable_x64

enable_x64()

from .crossprod import cross_products  # noqa: E402
from .data import CrossProducts, ModelData  # noqa: E402
from .deviance import deviance, profiled_deviance  # noqa: E402
from .fit import FitOutput, fit_program  # noqa: E402
from .optimize import NewtonOptions, OptimResult, minimize_newton, minimize_optax  # noqa: E402
from .solution import Solution, linear_predictor, solve  # noqa: E402
from .structure import ReStructure, TermSpec  # noqa: E402

__all__ = [
    "CrossProducts", "FitOutput", "ModelData", "NewtonOptions", "OptimResult", "ReStructure", "Solution",
    "TermSpec", "cross_products", "deviance", "fit_program", "linear_predictor", "minimize_newton",
    "minimize_optax", "profiled_deviance", "solve",
]
