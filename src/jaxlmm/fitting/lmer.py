"""``lmer``: lme4's pipeline ``lFormula -> mkLmerDevfun -> optimizeLmer -> mkMerMod``.

- ``build_design`` (``lFormula``, ``jaxlmm.model``): formula + data -> arrays and names;
- ``Model`` (``mkLmerDevfun``, ``fitting/model.py``): the profiled criterion as a
  pure, differentiable JAX function of theta (``deviance_function`` builds one);
- ``Model.fit`` (``optimizeLmer`` + ``mkMerMod``, ``fitting/single.py``): the
  optimizer and the ``LmerResult`` that keeps its model;
- ``Model.fit_many``: many responses at once (``many/engine.py``).
"""

from __future__ import annotations


from .._x64 import float64_scope
from .model import Model
from ..model.design import Design, build_design


DevianceFunction = Model  # the name of mkLmerDevfun's output in earlier releases


@float64_scope
def deviance_function(formula: str, data, *, reml: bool = True, weights=None, offset=None,
                      dtype=None, relmat=None) -> DevianceFunction:
    """lme4's ``mkLmerDevfun``: the ``Model``, whose objective is the profiled criterion as a JAX function of theta."""
    return Model(build_design(formula, data, weights=weights, offset=offset, relmat=relmat), reml, dtype)


@float64_scope
def lmer(formula: str, data, *, reml: bool = True, weights=None, offset=None, start=None,
         optimizer=None, max_iter: int = 100, dtype=None, data_name: str | None = None,
         responses=None, chunk_size: int | None = None, progress: bool | None = None, device=None,
         relmat: dict | None = None, spectral: bool | None = None, devices=None, verbose: bool = False,
         REML: bool | None = None, trace: bool = False, dispformula: str | None = None,
         covariances: dict | None = None, sigma_g: str = "us", sigma_e: str = "us"):
    """Fit a linear mixed model by REML (default) or ML, as ``lme4::lmer``; or many traits at once.

    Parameters
    ----------
    formula : str
        lme4 formula, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : pandas.DataFrame
        Columns used by the formula.  Rows with missing values in used columns
        are removed (the count is in ``fit.messages``).  Make a numeric column
        a factor with ``df[col].astype("category")``.
    reml : bool
        REML (True) or maximum likelihood (False); ``REML=`` (lme4's spelling) is accepted too.
    weights, offset : array-like or column name, optional
        Prior weights (non-negative, finite) and an offset of the linear predictor.
    start : array-like, optional
        Starting theta (default lme4's: 1 on the diagonal, 0 off it).
    optimizer : optax.GradientTransformation or optimistix minimiser, optional
        Use this optimizer (e.g. ``optax.lbfgs()``, ``optax.adam(1e-2)``,
        ``optimistix.BFGS(rtol=1e-9, atol=1e-9)``) instead of the default
        projected Newton method (exact gradient and Hessian), for a single fit
        or every trait of a batch.  Bounds and the stopping rule are jaxlmm's
        (``jaxlmm.core.optim.first_order``): theta = the mirror of the solver's iterate
        at its bounds; converged when the largest projected-gradient component
        is below 1e-7 (1 + |criterion|).
    max_iter : int
        Iteration limit of the optimizer (the default 100 means 10000 for an
        optax/optimistix optimizer).
    trace : bool
        Record the optimizer's path (theta, criterion, projected gradient,
        step per iteration) as ``fit.optimizer_trace`` (``jaxlmm.plot.convergence``
        draws it).  A traced Newton fit runs the jitted program.
    dtype : float64 (default) or float32.
    responses : DataFrame, array (rows x traits) or list of column names, optional
        Fit the model to every trait in one vmapped, jitted call and return a
        ``BatchResult``.  NaN marks a missing value of one trait only.  The
        formula's left side may then be omitted (``"~ x + (1 | g)"``).
    chunk_size : int, optional
        Traits per compiled call (default: all that fit in a quarter of the free memory).
    progress : bool, optional
        Progress bar over chunks (default: when standard error is a terminal).
    device : jax.Device, optional
        Where to compute (default: JAX's default device, a GPU when JAX sees one).
    devices : list of jax.Device, optional
        For a batch: shard the traits over these devices (default: all local
        devices of JAX's default backend; see ``jaxlmm.parallel.sharding``).
    relmat : dict, optional
        Relationship matrices by grouping factor, ``{"id": K}``: the term's random
        effects have covariance ``sigma^2 lambda^2 K`` (GBLUP; see ``jaxlmm.relmat``
        and ``jaxlmm.grm``).  K is a DataFrame indexed and columned by level names
        or a pair ``(array, level_names)``.  A batch whose only random term is one
        such term with one record per level is fitted on K's eigenbasis
        (``core.spectral``).
    spectral : bool, optional
        For a batch: force (True) or forbid (False) the spectral path; default
        automatic (``diagnostics["path"]`` says which path fitted each trait).
    dispformula : str, optional
        glmmTMB's dispersion model, the log residual variance linear in its model matrix:
        ``"~ location"`` one variance per level, ``"~ x"`` log-linear in x (``fit.dispersion``,
        ``fit.residual_sd`` by level).
    covariances : dict, optional
        ``{"group": jaxlmm.covariance(fn, n_params, ...)}``: the term grouped by ``group``
        gets a covariance written as a JAX function of its own parameters.
    sigma_g, sigma_e : str
        A multivariate model's trait covariance structures (``"us"``, ``"diag"``, ``"fa<r>"``; see below).
    verbose : bool
        Print the factorization plan (block term, dense part, sparse or dense
        cross block, predicted work and memory; ``jaxlmm.plan``) before a single
        fit, and the iterations and time after it.

    Several traits jointly: a response ``cbind(y1, y2, ...)`` (as sommer and MCMCglmm write it) fits
    ``Y = X B + Z G + E`` with ``vec(G) ~ N(0, Sigma_g (x) K)`` and ``vec(E) ~ N(0, Sigma_e (x) I)`` for one
    random term ``(1 | g)`` (K from ``relmat``, else I) and returns a ``MultivariateResult`` (genetic and
    residual covariances and correlations, h2 per trait, B with SEs); a missing trait value is missing for
    that trait only, and the likelihood is that of the observed values, exactly.

    Examples
    --------
    >>> import jaxlmm
    >>> fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", jaxlmm.load_dataset("sleepstudy"))
    >>> round(fit.criterion, 3)
    1743.628
    >>> fit.fixef.round(4).to_dict()
    {'(Intercept)': 251.4051, 'Days': 10.4673}
    """
    if REML is not None:
        reml = bool(REML)
    from .multivariate import cbind_traits

    if cbind_traits(formula) is not None:
        from ..errors import ArgumentError
        from .multivariate import fit_multivariate

        given = [n for n, v in (("responses", responses), ("optimizer", optimizer), ("dispformula", dispformula),
                                ("covariances", covariances)) if v is not None] + (["trace"] if trace else [])
        if given:
            raise ArgumentError(f"a multivariate model (cbind response) does not take {', '.join(given)}=")
        return fit_multivariate(formula, data, reml=reml, relmat=relmat, sigma_g=sigma_g, sigma_e=sigma_e,
                                start=start, max_iter=max_iter, dtype=dtype, data_name=data_name, weights=weights,
                                offset=offset, verbose=verbose)
    if responses is not None:
        from .responses import fit_batch
        from ..errors import count_argument

        if chunk_size is not None:
            count_argument(chunk_size, "chunk_size", 1)

        return fit_batch(formula, data, responses, reml=reml, weights=weights, offset=offset,
                         chunk_size=chunk_size, progress=progress, device=device, dtype=dtype,
                         max_iter=max_iter, data_name=data_name, relmat=relmat, spectral=spectral,
                         devices=devices, start=start, optimizer=optimizer, trace=trace, dispformula=dispformula,
                         covariances=covariances)
    design = build_design(formula, data, weights=weights, offset=offset, relmat=relmat, dispformula=dispformula,
                          covariances=covariances)
    import jax

    model = Model(design, reml, dtype, max_iter=max_iter, optimizer=optimizer, offset_arg=offset,
                  data_name=data_name, trace=trace)
    with jax.default_device(device) if device is not None else _NullContext():
        return model.fit(start=start, verbose=verbose)


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@float64_scope
def lmer_design(design: Design, *, reml: bool = True, start=None, optimizer=None, max_iter: int = 100,
                dtype=None, data_name: str | None = None, warn: bool = True, verbose: bool = False):
    """Fit a built ``Design`` (lme4's ``optimizeLmer`` + ``mkMerMod``): ``Model(design).fit()``."""
    model = Model(design, reml, dtype, max_iter=max_iter, optimizer=optimizer, data_name=data_name)
    return model.fit(start=start, warn=warn, verbose=verbose)
