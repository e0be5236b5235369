"""The profile's lane program (``core/pls/profile_lanes.py``): its two kinds of lanes give the ML deviances
they stand for, and a profile compiles one program per model structure, shared by every round."""

from __future__ import annotations

import numpy as np

import jaxlmm


def _lanes(fit, z, j, c, fixed):
    import jax

    from jaxlmm.core.pls.profile_lanes import lane_program

    with jax.enable_x64(True):
        out = lane_program(np.asarray(z, float), np.asarray(j, np.int32), np.asarray(c, float),
                           np.asarray(fixed, bool), fit.cross_products)
    return [np.asarray(a) for a in out]


def test_lanes_give_the_ml_deviances():
    """A variance lane at (sd, cor, log sigma)-hat and a fixed-effect lane at (theta-hat, beta_j-hat) give
    the ML deviance at the estimate (zero gradient in what is free); a fixed-effect lane held elsewhere
    equals the ML deviance of the model refitted with that column moved to the offset."""
    import jax

    from jaxlmm.core.pls.criterion import profiled_deviance
    from jaxlmm.core.params.profile_params import w_from_theta_sigma

    data = jaxlmm.load_dataset("sleepstudy")
    ml = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", data, reml=False)
    structure = ml.design.structure
    k = structure.ntheta
    w = w_from_theta_sigma(ml.theta, ml.sigma, structure)
    x = np.where(np.arange(k + 1) == 1, np.tanh(w), w)                  # the correlation itself
    beta = ml.fixef.to_numpy()
    z_fixed = np.append(ml.theta, 0.0)
    D, g, H = _lanes(ml, [x, z_fixed, z_fixed], [-1, 1, 1], [0.0, beta[1], beta[1] + 1.5], [False, True, True])
    np.testing.assert_allclose(D[:2], ml.criterion, rtol=1e-10)
    np.testing.assert_allclose(g[0], 0.0, atol=1e-4)
    np.testing.assert_allclose(g[1, :k], 0.0, atol=1e-4)
    assert np.all(H[1, k] == 0.0) and np.all(np.linalg.eigvalsh(H[0]) > 0)
    # held elsewhere: Days' effect moved to the offset
    shifted = data.assign(Reaction=data["Reaction"] - (beta[1] + 1.5) * data["Days"])
    held = jaxlmm.lmer("Reaction ~ 1 + (Days | Subject)", shifted, reml=False)
    with jax.enable_x64(True):
        expected = float(profiled_deviance(np.asarray(ml.theta), held.cross_products, reml=False))
    np.testing.assert_allclose(D[2], expected, rtol=1e-10)


def test_profile_compiles_one_program_per_structure():
    """The first profile of a model compiles the lane program once for every round and both kinds of
    parameters; profiling it again compiles nothing; the limits are lme4's."""
    data = jaxlmm.load_dataset("sleepstudy")
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", data)
    fit.refit_ml().cross_products
    with jaxlmm.diagnostics.count_compilations() as first:
        ci = fit.confint(method="profile")
    assert first.count <= 1
    with jaxlmm.diagnostics.count_compilations() as again:
        fit.confint(method="profile")
    assert again.count == 0
    # lme4 1.1-31: confint(fm1) for sleepstudy
    np.testing.assert_allclose(ci.iloc[:, 0], [14.3814, -0.4815, 3.8012, 22.8982, 237.6807, 7.3587], atol=2e-3)
    np.testing.assert_allclose(ci.iloc[:, 1], [37.7160, 0.6850, 8.7534, 28.8580, 265.1295, 13.5759], atol=2e-3)
