"""The dense small-model engine: closed-form derivatives, shared programs, agreement with the block path."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlmm
from jaxlmm.core.dense.system import dense_deviance, value_grad_hessian
from jaxlmm.core.dense.layout import DenseLayout, dense_system, derivative_rows

pytestmark = pytest.mark.usefixtures("x64")


def _system(formula, data, relmat=None):
    design = jaxlmm.build_design(formula, data, relmat=relmat)
    layout = DenseLayout.build([(len(t.factor.levels), len(t.columns)) for t in design.terms], design.X.shape[1])
    transforms = [None if t.relmat is None else t.relmat.factor for t in design.terms]
    system = dense_system(design.X, design.y, design.weights, design.offset, [t.factor.codes for t in design.terms],
                          [t.z for t in design.terms], transforms, layout, np.float64)
    return layout, system


@pytest.mark.parametrize("formula", [
    "Reaction ~ Days + (Days | Subject)",
    "Reaction ~ Days + (Days || Subject)",
    "Reaction ~ Days + (1 | Subject) + (1 | DaysF)",
])
@pytest.mark.parametrize("reml", [True, False])
def test_closed_form_derivatives_equal_autodiff(formula, reml):
    data = jaxlmm.load_dataset("sleepstudy")
    data["DaysF"] = data["Days"].astype(str)
    layout, system = _system(formula, data)
    rng = np.random.default_rng(0)
    theta = jnp.asarray(layout.pad_theta(rng.uniform(0.2, 1.2, layout.k)))
    row_of = derivative_rows(system.lam_index, layout.k_pad)
    f, g, H = jax.jit(partial(value_grad_hessian, reml=reml))(theta, system, row_of)
    objective = partial(dense_deviance, system=system, reml=reml)
    k = layout.k
    np.testing.assert_allclose(f, objective(theta), rtol=1e-12)
    np.testing.assert_allclose(g[:k], jax.grad(objective)(theta)[:k], rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(H[:k, :k], jax.hessian(objective)(theta)[:k, :k], rtol=1e-6, atol=1e-6)


def test_second_model_of_a_session_compiles_nothing():
    """Other formulas of the same size bucket, REML or ML, run the programs already compiled."""
    data = jaxlmm.load_dataset("sleepstudy")
    jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", data)
    with jaxlmm.diagnostics.count_compilations() as compiled:
        fit = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data)
        jaxlmm.lmer("Reaction ~ 1 + (Days || Subject)", data, reml=False)
    assert compiled.count == 0
    np.testing.assert_allclose(fit.theta, [1.1978815], rtol=1e-6)


def test_dense_and_block_paths_agree():
    from jaxlmm.core.pls.programs import run_fit_program
    from jaxlmm.core.optim.newton import NewtonOptions

    data = jaxlmm.load_dataset("sleepstudy")
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", data)
    design = fit.design
    block = run_fit_program(design.model_data(np.float64), jnp.asarray(design.structure.theta0()), reml=True,
                            options=NewtonOptions())
    np.testing.assert_allclose(fit.theta, block.optim.theta, rtol=1e-6)
    np.testing.assert_allclose(fit.fixef.to_numpy(), block.solution.beta, rtol=1e-9)
    for k, term in enumerate(design.terms):          # conditional SDs, through the public ranef table
        sd = np.sqrt(np.diagonal(np.asarray(block.solution.cond_var[k])[:18], axis1=1, axis2=2))
        r = fit.ranef[fit.ranef.group == term.group]
        for s, col in enumerate(term.columns):
            np.testing.assert_allclose(r[r.term == col].condsd.to_numpy(), sd[:, s], rtol=1e-6)


@pytest.mark.parametrize("formula", ["Reaction ~ Days + (Days | Subject)", "Reaction ~ Days + (1 | Subject) + (1 | DaysF)"])
def test_kenward_roger_derivatives_equal_autodiff(formula):
    """M = X^T V^-1 X and log|V|: closed-form first and second derivatives in gamma equal autodiff's."""
    from jaxlmm.core.dense.ddf import marginal_derivatives, marginal_parts

    data = jaxlmm.load_dataset("sleepstudy")
    data["DaysF"] = data["Days"].astype(str)
    layout, system = _system(formula, data)
    rng = np.random.default_rng(1)
    gamma = np.zeros(layout.k_pad + 1)
    gamma[:layout.k] = rng.uniform(0.3, 1.5, layout.k) * 100.0
    gamma[-1] = 650.0
    gamma = jnp.asarray(gamma)
    cov_index = jnp.asarray(layout.cov_index())
    mask = jnp.arange(layout.p_pad) < layout.p
    M, P, Q, d2_log_v, _ = marginal_derivatives(gamma, system, cov_index, mask)

    def parts(g):
        return marginal_parts(g, system, cov_index, mask)

    log_v, M_ad = parts(gamma)
    P_ad = jnp.moveaxis(jax.jacfwd(lambda g: parts(g)[1])(gamma), -1, 0)
    Q_ad = jnp.moveaxis(jax.jacfwd(jax.jacfwd(lambda g: parts(g)[1]))(gamma), (2, 3), (0, 1))
    H_ad = jax.hessian(lambda g: parts(g)[0])(gamma)
    np.testing.assert_allclose(M, M_ad, rtol=1e-9)
    np.testing.assert_allclose(P, P_ad, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(Q, Q_ad, rtol=1e-6, atol=1e-14)
    np.testing.assert_allclose(d2_log_v, H_ad, rtol=1e-7, atol=1e-12)
