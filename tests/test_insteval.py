"""The sparse cross block (core/pls/sparse.py, core/pls/schur/factor.py): the same fit as the dense path, and InstEval.

A synthetic crossed design (students x lecturers, like InstEval but small) is
large enough for the sparse path; every result is compared with the dense path
on the same ``ModelData`` without its sparse pattern.  The InstEval fit against
lme4 is in test_lme4_parity.py (slow); here its sparse path is checked against
the dense one at lme4's theta (slow).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm.core.pls import sparse
from jaxlmm.core.pls.crossprod import cross_products
from jaxlmm.core.pls.criterion import profiled_deviance
from jaxlmm.core.pls.programs import fit_program
from jaxlmm.core.optim.newton import value_grad_hessian
from jaxlmm import build_design

pytestmark = pytest.mark.usefixtures("x64")

RTOL = 1e-8


def crossed_frame(seed=0, students=300, lecturers=140, depts=7, per_student=9, slope=False):
    """Students rate a few lecturers each; lecturers belong to departments; ``service`` varies."""
    rng = np.random.default_rng(seed)
    dept_of = rng.integers(0, depts, lecturers)
    rows = []
    for s in range(students):
        k = rng.integers(per_student // 2, 2 * per_student)
        for d in rng.choice(lecturers, size=k, replace=False):
            rows.append((s, d, dept_of[d], rng.integers(0, 2), rng.normal()))
    df = pd.DataFrame(rows, columns=["s", "d", "dept", "service", "x"])
    b_s = rng.normal(0, 0.4, students)
    b_d = rng.normal(0, 0.6, lecturers)
    b_ds = rng.normal(0, 0.2, (depts, 2))
    df["y"] = (3.0 + 0.2 * df.service + b_s[df.s] + b_d[df.d] + b_ds[df.dept, df.service]
               + (0.3 * df.x * rng.normal(size=students)[df.s] if slope else 0.0) + rng.normal(0, 1.0, len(df)))
    for col in ["s", "d", "dept", "service"]:
        df[col] = df[col].astype("category")
    return df


FORMULA = "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)"


def both_paths(formula, frame):
    design = build_design(formula, frame)
    data = design.model_data(np.float64)
    assert data.sparse is not None, "the synthetic design should take the sparse path"
    dense = dataclasses.replace(data, sparse=None)
    return design, data, dense


@pytest.fixture(scope="module")
def crossed():
    design, data, dense = both_paths(FORMULA, crossed_frame())
    return design, data, dense, jax.jit(cross_products)(data), jax.jit(cross_products)(dense)


@partial(jax.jit, static_argnames="reml")
def value_grad_hess(theta, cp, reml=True):
    return value_grad_hessian(partial(profiled_deviance, cp=cp, reml=reml), theta, True)


@partial(jax.jit, static_argnames="reml")
def value_and_grad(theta, cp, reml=True):
    return jax.value_and_grad(profiled_deviance)(theta, cp, reml)


def close(a, b, rtol=RTOL, atol=0.0):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def test_pattern_is_taken_and_sparse(crossed):
    design, data, _, cps, cpd = crossed
    assert sparse.is_sparse(cps.Cdb) and not sparse.is_sparse(cpd.Cdb)
    s = design.structure
    from jaxlmm.model.plan import factorization_plan

    assert factorization_plan(design, data).cross == "sparse"       # the plan a user sees says so too
    # the stored entries are exactly the nonzeros of the dense cross block
    dense_Cdb = np.asarray(cpd.Cdb)
    back = np.asarray(sparse.densify(cps.Cdb, s.q_dense, s.terms[s.block_term].nlevels))
    close(back, dense_Cdb, rtol=1e-13, atol=1e-13)
    assert np.count_nonzero(dense_Cdb) <= data.sparse.nnz < 0.2 * dense_Cdb.size


@pytest.mark.slow   # long on 2 cores; CI runs it with the slow tests
@pytest.mark.parametrize("theta", [[1.0, 1.0, 1.0], [0.4, 0.7, 0.2], [0.4, 0.7, 0.0], [0.0, 0.5, 0.3]])
def test_criterion_gradient_hessian(crossed, theta):
    *_, cps, cpd = crossed
    th = jnp.asarray(theta)
    for reml in (True, False):
        fs, gs, Hs = value_grad_hess(th, cps, reml=reml)
        fd, gd, Hd = value_grad_hess(th, cpd, reml=reml)
        close(fs, fd)
        scale = np.max(np.abs(np.asarray(gd))) + 1.0
        close(gs, gd, atol=RTOL * scale)
        close(Hs, Hd, rtol=1e-7, atol=1e-7 * np.max(np.abs(np.asarray(Hd))))
        f1, g1 = value_and_grad(th, cps, reml=reml)                # the reverse pass alone
        close(f1, fd)
        close(g1, gd, atol=RTOL * scale)


def test_forward_over_forward_and_vmap(crossed):
    *_, cps, cpd = crossed
    th = jnp.asarray([0.4, 0.7, 0.2])

    def hess_fwd(cp):
        return jax.jacfwd(jax.jacfwd(partial(profiled_deviance, cp=cp)))(th)

    Hd = np.asarray(jax.jit(hess_fwd)(cpd))
    close(jax.jit(hess_fwd)(cps), Hd, rtol=1e-7, atol=1e-7 * np.max(np.abs(Hd)))
    thetas = jnp.asarray([[0.4, 0.7, 0.2], [1.0, 0.5, 0.1]])
    f = jax.jit(jax.vmap(partial(profiled_deviance), in_axes=(0, None)))
    close(f(thetas, cps), f(thetas, cpd))


@pytest.mark.slow   # long on 2 cores; CI runs it with the slow tests
def test_fit_matches_dense_path(crossed):
    design, data, dense, *_ = crossed
    th0 = jnp.asarray(design.structure.theta0())
    out_s = fit_program(data, th0, reml=True)
    out_d = fit_program(dense, th0, reml=True)
    assert int(out_s.optim.status) == 0 and int(out_d.optim.status) == 0
    close(out_s.optim.theta, out_d.optim.theta, rtol=1e-6, atol=1e-8)
    close(out_s.optim.fun, out_d.optim.fun)
    # at one theta, every estimate agrees to rounding
    th = out_d.optim.theta
    from jaxlmm.core.pls.solve import solve

    sol_s = jax.jit(partial(solve, reml=True))(th, cross_products(data))
    sol_d = jax.jit(partial(solve, reml=True))(th, cross_products(dense))
    close(sol_s.criterion, sol_d.criterion)
    close(sol_s.beta, sol_d.beta)
    close(sol_s.sigma, sol_d.sigma)
    close(sol_s.vcov_beta, sol_d.vcov_beta)
    for k in range(3):
        bd = np.asarray(sol_d.b[k])
        close(sol_s.b[k], bd, atol=RTOL * np.max(np.abs(bd)))
        close(sol_s.cond_var[k], sol_d.cond_var[k])


@pytest.mark.slow   # long on 2 cores; CI runs it with the slow tests
def test_lmer_inference_on_sparse_path():
    frame = crossed_frame(seed=1, students=250, lecturers=130)
    fit = jaxlmm.lmer(FORMULA, frame)
    assert fit.converged and fit.model_data.sparse is not None
    design = build_design(FORMULA, frame)
    dense = dataclasses.replace(design.model_data(np.float64), sparse=None)
    from jaxlmm.core.pls.ddf import kenward_roger_program, satterthwaite_program

    cps, cpd = fit.cross_products, cross_products(dense)
    th, sig = jnp.asarray(fit.theta), jnp.asarray(fit.sigma)
    for a, b in zip(satterthwaite_program(cps, th, sig), satterthwaite_program(cpd, th, sig)):
        close(a, b, rtol=1e-6, atol=1e-10)
    for a, b in zip(kenward_roger_program(cps, th, sig), kenward_roger_program(cpd, th, sig)):
        close(a, b, rtol=1e-6, atol=1e-12)
    ranef = fit.ranef
    assert len(ranef) == sum(len(frame[c].cat.categories) for c in ["s", "d"]) + frame.groupby(
        ["dept", "service"], observed=True).ngroups


@pytest.mark.slow
def test_vector_block_term_and_batch():
    """A (1 + x | s) block term, and the cross-products of a batch of traits (always dense)."""
    frame = crossed_frame(seed=2, students=200, lecturers=140, slope=True)
    formula = "y ~ 1 + service + (1 + x | s) + (1 | d) + (1 | dept:service)"
    design, data, dense = both_paths(formula, frame)
    cps, cpd = cross_products(data), cross_products(dense)
    th = jnp.asarray([0.5, 0.1, 0.3, 0.6, 0.2])
    (fs, gs, Hs), (fd, gd, Hd) = value_grad_hess(th, cps), value_grad_hess(th, cpd)
    close(fs, fd)
    close(gs, gd, atol=RTOL * (1 + np.max(np.abs(np.asarray(gd)))))
    close(Hs, Hd, rtol=1e-7, atol=1e-7 * np.max(np.abs(np.asarray(Hd))))
    fit = jaxlmm.lmer(formula, frame)
    assert fit.converged
    out_d = fit_program(dense, jnp.asarray(design.structure.theta0()))
    close(fit.theta, out_d.optim.theta, rtol=1e-6, atol=1e-8)
    # a batch ignores the pattern: the dense cross-products of every trait, as without it
    # (a batch fit of a dense part this large hangs in XLA's CPU runtime with or without the
    # sparse path -- batched LAPACK calls in a vmapped loop -- so only the cross-products here)
    from jaxlmm.core.pls.batch_crossprod import batch_cross_products

    Y = jnp.stack([jnp.asarray(data.y), jnp.asarray(data.y)[::-1]])
    W = jnp.stack([jnp.asarray(data.weights)] * 2)
    bs, bd = batch_cross_products(data, Y, W), batch_cross_products(dense, Y, W)
    assert not sparse.is_sparse(bs.Cdb)
    for a, b in zip(jax.tree_util.tree_leaves(bs), jax.tree_util.tree_leaves(bd)):
        close(a, b, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("formula, theta", [
    # a vector-valued dense term (its lambda is 2 x 2)
    ("y ~ 1 + service + (1 | s) + (1 + x | d) + (1 | dept:service)", [[0.4, 0.6, 0.1, 0.3, 0.2],
                                                                      [0.4, 0.005, 0.1, 0.3, 0.0]]),
    # two small dense terms and a large one
    ("y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept) + (1 | dept:service)", [[0.4, 0.7, 0.3, 0.2],
                                                                              [0.0, 0.7, 0.0, 0.2]]),
])
def test_other_designs(formula, theta):
    frame = crossed_frame(seed=3, students=200, lecturers=150, depts=9, slope=True)
    _, data, dense = both_paths(formula, frame)
    cps, cpd = cross_products(data), cross_products(dense)
    for th in theta:
        (fs, gs, Hs), (fd, gd, Hd) = value_grad_hess(jnp.asarray(th), cps), value_grad_hess(jnp.asarray(th), cpd)
        close(fs, fd)
        close(gs, gd, atol=RTOL * (1 + np.max(np.abs(np.asarray(gd)))))
        close(Hs, Hd, rtol=1e-7, atol=1e-7 * np.max(np.abs(np.asarray(Hd))))


@pytest.mark.slow
def test_insteval_sparse_equals_dense_at_lme4_theta():
    from conftest import case_data, load_reference

    ref = load_reference("insteval")
    design, data, dense = both_paths(ref["formula"], case_data(ref))
    th = jnp.asarray(ref["theta"])
    cps, cpd = jax.jit(cross_products)(data), jax.jit(cross_products)(dense)
    (fs, gs, Hs), (fd, gd, Hd) = value_grad_hess(th, cps), value_grad_hess(th, cpd)
    close(fs, fd)
    close(fs, ref["criterion"], rtol=1e-9)
    close(gs, gd, atol=1e-8)
    close(Hs, Hd, rtol=1e-8, atol=1e-8 * np.max(np.abs(np.asarray(Hd))))


def test_factorization_plan_and_verbose(capsys):
    frame = crossed_frame(seed=1, students=250, lecturers=130)
    fit = jaxlmm.lmer(FORMULA, frame, verbose=True)
    out = capsys.readouterr().out
    plan = fit.plan
    assert plan.block_term == "s" and plan.cross == "sparse"
    assert plan.pairs == fit.model_data.sparse.pair_first.shape[0]
    assert plan.dense_size == fit.model_data.structure.q_dense + 3
    assert [g for g, _, _ in plan.dense_terms] == ["d", "dept:service"]
    assert "block term: s (250 levels x 1)" in out and "cross block: sparse" in out
    assert "per Newton iteration" in out and f"{fit.n_iter} iterations, converged" in out
    # a small design keeps the dense cross block
    small = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", jaxlmm.load_dataset("sleepstudy"))
    assert small.plan.cross == "none" and small.plan.block_term == "Subject" and small.plan.dense_size == 3
    assert "block term: Subject (18 levels x 2)" in str(small.plan)
