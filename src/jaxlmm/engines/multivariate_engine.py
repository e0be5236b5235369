"""``MultivariateEngine``: several traits fitted jointly, ``Y = X B + Z G + E`` (``core/multivariate/``).

``vec(G) ~ N(0, Sigma_g (x) K)`` (K a relationship matrix, or I for a grouping factor without one) and
``vec(E) ~ N(0, Sigma_e (x) I)``.  Its parameters are those of ``Sigma_g``'s structure, then ``Sigma_e``'s
(``core/multivariate/covariance.py``: lme4's Cholesky layout for ``us``); the criterion of the observed
entries is exact with missing values and a pure JAX function of them; one eigendecomposition of
``Z K Z^T`` serves every evaluation.  Fixed effects are tested with z tests (GEMMA's Wald tests).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import FormulaError
from .base import Engine


class MultivariateOptions(NamedTuple):
    """What makes a model multivariate: its traits and the structures of ``Sigma_g`` and ``Sigma_e``."""

    traits: tuple
    sigma_g: str = "us"
    sigma_e: str = "us"


def multivariate_spec(model):
    from ..core.multivariate.covariance import TraitCovariance
    from ..core.multivariate.criterion import Spec

    opt = model.multivariate
    d = len(opt.traits)
    return Spec(TraitCovariance.parse(opt.sigma_g, d, "sigma_g"), TraitCovariance.parse(opt.sigma_e, d, "sigma_e"))


def relationship_kernel(design) -> np.ndarray:
    """``Z K Z^T`` (records x records) of the model's one random term ``(1 | g)``."""
    if len(design.terms) != 1:
        raise FormulaError("multivariate models take one random term, (1 | g), with or without a relationship "
                           f"matrix for now; this formula has {len(design.terms)}")
    t = design.terms[0]
    if tuple(t.columns) != ("(Intercept)",) or t.cov not in ("us", "diag"):
        raise FormulaError(f"multivariate models take a random intercept (1 | {t.group}) for now, not ({t.term})")
    codes = np.asarray(t.factor.codes)
    K = np.eye(len(t.factor.levels)) if t.relmat is None else np.asarray(t.relmat.K, float)
    return K[np.ix_(codes, codes)]


def multivariate_data(model):
    """``(MultivariateData as JAX arrays, Rotation)`` of the model (``core/multivariate/data.py``)."""
    import jax
    import jax.numpy as jnp

    from ..core.multivariate.data import rotate

    design = model.design
    data, rotation = rotate(design.X, np.asarray(design.y, float) - np.asarray(design.offset, float)[:, None],
                            relationship_kernel(design))
    with jax.enable_x64(True):
        data = data._replace(**{f: jnp.asarray(getattr(data, f), model.dtype)
                                for f in ("Xr", "Yr", "s", "Um", "n_obs")})
    return data, rotation


class MultivariateEngine(Engine):
    """Multivariate linear mixed models (module docstring)."""

    name = "multivariate"
    result_path = "results.multivariate_result:MultivariateResult"
    default_ddf = "asymptotic"
    supports_bootstrap_func = False
    supports_fit_function = False

    def spec(self, model):
        return model.prepared("mv_spec", multivariate_spec)

    def data(self, model):
        return model.prepared("mv_data", multivariate_data)

    # -------------------------------------------------------------- parameters
    def theta0(self, model) -> np.ndarray:
        """``Sigma_g = Sigma_e = diag(var(y_t) / 2)`` in each structure's parameters."""
        spec = self.spec(model)
        Y = np.asarray(model.design.y, float)
        v = np.array([np.nanvar(Y[:, t]) for t in range(Y.shape[1])])
        return np.concatenate([spec.genetic.start(v / 2.0), spec.residual.start(v / 2.0)])

    def lower(self, model) -> np.ndarray:
        spec = self.spec(model)
        return np.concatenate([spec.genetic.lower(), spec.residual.lower()])

    def theta_names(self, model) -> list[str]:
        spec, traits = self.spec(model), list(model.multivariate.traits)
        return ([f"G.{n}" for n in spec.genetic.names(traits)]
                + [f"E.{n}" for n in spec.residual.names(traits)])

    def reflections(self, model) -> np.ndarray:
        from scipy.linalg import block_diag

        spec = self.spec(model)
        return block_diag(spec.genetic.reflections(), spec.residual.reflections()).astype(bool)

    # -------------------------------------------------------------- the criterion and a fit
    def objective(self, model, theta):
        import jax.numpy as jnp

        from ..core.multivariate.criterion import criterion

        return criterion(jnp.asarray(theta, model.dtype), self.data(model)[0], self.spec(model), model.reml)

    def fit(self, model, start):
        from ..core.linalg.threads import small_blas
        from ..core.multivariate.programs import fit

        with small_blas():
            res = fit(self.data(model)[0], self.spec(model), model.reml, self.start(model, start),
                      self.lower(model), self.reflections(model), model.max_iter, model.dtype)
        return res, "newton"

    def fit_many(self, model, names, Y, **options):
        from ..errors import JaxlmmError

        raise JaxlmmError("a multivariate model fits its traits jointly: responses= is not available for it")

    def satterthwaite_parts(self, fit):
        raise NotImplementedError("multivariate models have asymptotic (z) tests of their fixed effects")

    kenward_roger_parts = satterthwaite_parts
