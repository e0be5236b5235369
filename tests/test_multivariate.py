"""Multivariate models (issue Q): ``lmer("cbind(y1, y2, y3) ~ sex + (1 | id)", relmat={"id": K})``.

References: GEMMA 0.98.5 ``-lmm 4 -n 1 2 3`` on mv3 (tests/reference/mvlmm: its log), the dense likelihood
of the observed entries under ``Sigma_g (x) K + Sigma_e (x) I`` for the data with missing values, and the
univariate fits of lmer for diagonal covariances (independent traits).
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm.errors import ArgumentError, DataError, FormulaError

REF = Path(__file__).parent / "reference" / "mvlmm"
TRAITS = ["mv3_t1", "mv3_t2", "mv3_t3"]
FORMULA = "cbind(mv3_t1, mv3_t2, mv3_t3) ~ sex + (1 | id)"


def load_kinship() -> pd.DataFrame:
    """shared/bench/kinship_K.csv, rebuilt from its lower triangle (make_kinship_npz.py)."""
    z = np.load(REF / "kinship_K.npz", allow_pickle=False)
    lower = z["lower"].astype(float)
    mag = np.floor(np.log10(np.abs(np.where(lower == 0, 1.0, lower))))
    lower = np.round(lower / 10 ** (mag - 5)) * 10 ** (mag - 5)          # 6 significant digits, as the CSV
    n = len(z["ids"])
    K = np.zeros((n, n))
    K[np.tril_indices(n)] = lower
    K = K + np.tril(K, -1).T
    return pd.DataFrame(K, index=z["ids"], columns=z["ids"])


def gemma_log() -> dict:
    """The REML and ML estimates of Vg, Ve (with SEs) and B (with SEs) in GEMMA's log."""
    lines = (REF / "gemma_mvlmm_mv3.log.txt").read_text().splitlines()
    out, key, rows = {}, None, []
    heads = {"## REMLE estimate for Vg": "reml_vg", "## REMLE estimate for Ve": "reml_ve",
             "## MLE estimate for Vg": "ml_vg", "## MLE estimate for Ve": "ml_ve", "## estimate for B": "B",
             "## se(B)": "se_B"}
    order = []
    for line in lines + ["##"]:
        if line.startswith("##"):
            if key is not None:
                out[key] = rows
            key, rows = None, []
            for h, name in heads.items():
                if line.startswith(h):
                    key = name
            if line.startswith("## se(Vg)") or line.startswith("## se(Ve)"):
                key = "se_" + ("vg" if "Vg" in line else "ve") + f"_{len(order)}"
                order.append(key)
            m = re.match(r"## (REMLE|MLE) log-likelihood in the null model = (\S+)", line)
            if m:
                out[m.group(1)] = float(m.group(2))
            continue
        if key is not None:
            rows.append([float(v) for v in line.split()])
    full = {}
    for k, v in out.items():
        if isinstance(v, list):
            d = len(v)
            M = np.zeros((d, max(len(r) for r in v)))
            for i, r in enumerate(v):
                M[i, :len(r)] = r
            if k not in ("B", "se_B") and M.shape == (d, d):
                M = np.tril(M) + np.tril(M, -1).T
            full[k] = M
        else:
            full[k] = v
    full["reml_se_vg"], full["reml_se_ve"], full["ml_se_vg"], full["ml_se_ve"] = (full[k] for k in order)
    return full


@pytest.fixture(scope="module")
def K():
    return load_kinship()


@pytest.fixture(scope="module")
def mv3():
    return pd.read_csv(REF / "mv3_traits.csv")


@pytest.fixture(scope="module")
def mv3_missing():
    return pd.read_csv(REF / "mv3_traits_missing.csv")


@pytest.fixture(scope="module")
def reml_fit(mv3, K):
    return jaxlmm.lmer(FORMULA, mv3, relmat={"id": K})


def test_reml_matches_gemma(reml_fit):
    ref = gemma_log()
    fit = reml_fit
    assert isinstance(fit, jaxlmm.MultivariateResult) and fit.converged
    scale = max(np.max(np.diag(ref["reml_vg"])), np.max(np.diag(ref["reml_ve"])))
    np.testing.assert_allclose(fit.sigma_g.to_numpy(), ref["reml_vg"], atol=2e-3 * scale)
    np.testing.assert_allclose(fit.sigma_e.to_numpy(), ref["reml_ve"], atol=2e-3 * scale)
    cp = fit.covariance_parameters
    for comp, key in (("G", "reml_se_vg"), ("E", "reml_se_ve")):
        rows = cp[(cp.component == comp) & (cp.quantity != "correlation")]
        for _, r in rows.iterrows():
            i, j = TRAITS.index(r.trait2), TRAITS.index(r.trait1)
            assert abs(r.se - ref[key][i, j]) <= 1e-2, (comp, r.trait1, r.trait2, r.se, ref[key][i, j])
    B = np.column_stack([ref["B"][:, 0], ref["B"][:, 1]])          # traits x (intercept, sex)
    np.testing.assert_allclose(fit.fixef.to_numpy().T, B, atol=0.01 * np.min(ref["se_B"]))
    np.testing.assert_allclose(fit.se.to_numpy().T, ref["se_B"], rtol=2e-3)


def test_ml_matches_gemma(mv3, K):
    ref = gemma_log()
    fit = jaxlmm.lmer(FORMULA, mv3, relmat={"id": K}, reml=False)
    assert fit.converged
    scale = max(np.max(np.diag(ref["ml_vg"])), np.max(np.diag(ref["ml_ve"])))
    np.testing.assert_allclose(fit.sigma_g.to_numpy(), ref["ml_vg"], atol=2e-3 * scale)
    np.testing.assert_allclose(fit.sigma_e.to_numpy(), ref["ml_ve"], atol=2e-3 * scale)
    assert fit.loglik == pytest.approx(ref["MLE"], abs=0.01)


def test_result_tables(reml_fit):
    fit = reml_fit
    R = fit.genetic_correlation.to_numpy()
    np.testing.assert_allclose(np.diag(R), 1.0)
    assert np.all(np.abs(R) <= 1.0)
    assert list(fit.h2.index) == TRAITS and np.all((fit.h2 > 0) & (fit.h2 < 1))
    assert fit.fixef.shape == (2, 3) and list(fit.fixef.columns) == TRAITS
    assert fit.vcov.shape == (6, 6)
    table = fit.coef_table()
    assert table.shape == (6, 4)
    text = fit.summary()
    assert "Sigma_g" in text and "Heritability" in text and "mv3_t3" in text
    cp = fit.covariance_parameters
    assert set(cp.quantity) == {"variance", "covariance", "correlation"}
    assert np.all(np.isfinite(cp.se)) and np.all(cp.se > 0)
    gv = fit.genetic_values()
    assert gv.shape == (1000, 3) and np.all(np.isfinite(gv.to_numpy()))


def _dense_criterion(Sg, Se, K, X, Y, reml):
    """-2 log L (or REML) of the observed entries of Y under Sigma_g (x) K + Sigma_e (x) I, dense."""
    obs = np.isfinite(Y.T.reshape(-1))                  # vec(Y): trait by trait
    n, d = Y.shape
    V = np.kron(Sg, K) + np.kron(Se, np.eye(n))
    Xf = np.kron(np.eye(d), X)
    V, Xf, y = V[np.ix_(obs, obs)], Xf[obs], Y.T.reshape(-1)[obs]
    L = np.linalg.cholesky(V)
    Xw, yw = np.linalg.solve(L, Xf), np.linalg.solve(L, y)
    Q = Xw.T @ Xw
    beta = np.linalg.solve(Q, Xw.T @ yw)
    r = yw - Xw @ beta
    N, p = len(y), Xf.shape[1]
    value = 2.0 * np.sum(np.log(np.diag(L))) + r @ r
    if reml:
        return value + np.linalg.slogdet(Q)[1] + (N - p) * np.log(2 * np.pi)
    return value + N * np.log(2 * np.pi)


@pytest.fixture(scope="module")
def small_missing(mv3_missing, K):
    """The first 300 individuals of the data with missing values (the dense likelihood stays quick)."""
    data = mv3_missing.iloc[:300].copy()
    data.loc[5, TRAITS] = np.nan                          # a record with every trait missing: no information
    Ks = K.loc[data.id, data.id]
    return data, Ks


@pytest.mark.parametrize("reml", [True, False])
def test_missing_values_exact(small_missing, reml):
    data, Ks = small_missing
    fit = jaxlmm.lmer(FORMULA, data, relmat={"id": Ks}, reml=reml)
    assert fit.converged
    X = np.column_stack([np.ones(len(data)), data.sex.to_numpy(float)])
    Y = data[TRAITS].to_numpy(float)
    dense = _dense_criterion(fit.sigma_g.to_numpy(), fit.sigma_e.to_numpy(), Ks.to_numpy(), X, Y, reml)
    assert fit.criterion == pytest.approx(dense, rel=1e-10)
    rng = np.random.default_rng(1)                        # elsewhere too: at another parameter vector
    theta = fit.theta * (1 + 0.2 * rng.standard_normal(fit.theta.shape))
    model = fit.model
    with jax.enable_x64(True):
        Sg, Se = (np.asarray(S) for S in model.engine.spec(model).matrices(theta))
    assert float(model.objective(theta)) == pytest.approx(_dense_criterion(Sg, Se, Ks.to_numpy(), X, Y, reml),
                                                          rel=1e-10)


@pytest.mark.slow
def test_missing_values_stationary_and_blups(mv3_missing, K):
    """On all 1000 individuals with ~10% of the values missing (an interior optimum): the fit is a stationary
    point of the dense likelihood (central differences in the parameters), and its genetic values are the
    dense conditional means."""
    data, Ks = mv3_missing, K
    fit = jaxlmm.lmer(FORMULA, data, relmat={"id": Ks})
    assert fit.converged and not fit.is_singular
    X = np.column_stack([np.ones(len(data)), data.sex.to_numpy(float)])
    Y = data[TRAITS].to_numpy(float)
    spec = fit.model.engine.spec(fit.model)

    def f(th):
        with jax.enable_x64(True):
            Sg, Se = (np.asarray(S) for S in spec.matrices(th))
        return _dense_criterion(Sg, Se, Ks.to_numpy(), X, Y, True)

    h = 1e-5
    grad = np.array([(f(fit.theta + h * e) - f(fit.theta - h * e)) / (2 * h) for e in np.eye(len(fit.theta))])
    assert np.max(np.abs(grad)) <= 1e-6 * abs(fit.criterion)
    # genetic values: (Sigma_g (x) K) S_o^T V_oo^-1 (y_o - X_o beta)
    Sg, Se, B = fit.sigma_g.to_numpy(), fit.sigma_e.to_numpy(), fit.fixef.to_numpy()
    obs = np.isfinite(Y.T.reshape(-1))
    n = len(data)
    V = (np.kron(Sg, Ks.to_numpy()) + np.kron(Se, np.eye(n)))[np.ix_(obs, obs)]
    r = (Y - X @ B).T.reshape(-1)[obs]
    C = np.kron(Sg, Ks.to_numpy())[:, obs]
    g = (C @ np.linalg.solve(V, r)).reshape(3, n).T
    gv = fit.genetic_values()
    np.testing.assert_allclose(gv.loc[data.id].to_numpy(), g, atol=1e-8 * np.max(np.abs(g)))


def test_diagonal_covariances_are_independent_univariate_fits(small_missing):
    """Diagonal Sigma_g and Sigma_e: the traits are independent, the criterion is the sum of lmer's per-trait
    criteria and the variances are lmer's."""
    data, Ks = small_missing
    fit = jaxlmm.lmer(FORMULA, data, relmat={"id": Ks}, sigma_g="diag", sigma_e="diag")
    assert fit.converged
    total = 0.0
    for j, t in enumerate(TRAITS):
        one = jaxlmm.lmer(f"{t} ~ sex + (1 | id)", data.dropna(subset=[t]), relmat={"id": Ks})
        total += one.criterion
        vc = one.varcorr
        assert fit.sigma_g.iloc[j, j] == pytest.approx(float(vc.vcov.iloc[0]), rel=1e-5)
        assert fit.sigma_e.iloc[j, j] == pytest.approx(float(vc.vcov.iloc[-1]), rel=1e-5)
    assert fit.criterion == pytest.approx(total, rel=1e-9)
    assert np.all(fit.sigma_g.to_numpy()[~np.eye(3, dtype=bool)] == 0)


@pytest.mark.slow
def test_factor_structure_and_grouping_without_relmat(small_missing):
    data, Ks = small_missing
    fa = jaxlmm.lmer(FORMULA, data, relmat={"id": Ks}, sigma_g="fa1")
    us = jaxlmm.lmer(FORMULA, data, relmat={"id": Ks})
    assert fa.converged and fa.criterion >= us.criterion - 1e-6
    assert np.linalg.matrix_rank(fa.sigma_g.to_numpy() - np.diag(np.diag(fa.sigma_g.to_numpy()))) <= 3
    grouped = data.assign(block=np.arange(len(data)) // 3)
    fit = jaxlmm.lmer("cbind(mv3_t1, mv3_t2, mv3_t3) ~ sex + (1 | block)", grouped)
    assert fit.status_name in ("converged", "not_identified") and np.isfinite(fit.criterion)


def test_bad_input(mv3, K):
    flat = mv3.assign(mv3_t2=1.0)
    with pytest.raises(DataError, match="mv3_t2.*no variance"):
        jaxlmm.lmer(FORMULA, flat, relmat={"id": K})
    lone = mv3.assign(mv3_t3=np.where(np.arange(len(mv3)) == 0, 1.0, np.nan))
    with pytest.raises(DataError, match="mv3_t3.*observed on 1 row"):
        jaxlmm.lmer(FORMULA, lone, relmat={"id": K})
    with pytest.raises(ArgumentError, match="responses"):
        jaxlmm.lmer(FORMULA, mv3, relmat={"id": K}, responses=["mv3_t1"])
    with pytest.raises(FormulaError, match="one random term"):
        jaxlmm.lmer("cbind(mv3_t1, mv3_t2) ~ (1 | id) + (1 | sex)", mv3, relmat={"id": K})
    with pytest.raises(DataError, match="number of levels"):     # Sigma_g and Sigma_e confounded without K
        jaxlmm.lmer("cbind(mv3_t1, mv3_t2) ~ sex + (1 | id)", mv3)
    with pytest.raises(FormulaError, match="two or more traits"):
        jaxlmm.lmer("cbind(mv3_t1) ~ sex + (1 | id)", mv3)
    with pytest.raises(ArgumentError, match="sigma_g"):
        jaxlmm.lmer(FORMULA, mv3, relmat={"id": K}, sigma_g="banded")


def test_correlation_at_the_boundary_is_reported(small_missing):
    """Two copies of one trait (plus noise of 1e-6): a genetic correlation of 1, reported as a singular fit."""
    data, Ks = small_missing
    rng = np.random.default_rng(3)
    twin = data.assign(copy=data.mv3_t1 + 1e-3 * rng.standard_normal(len(data)))
    fit = jaxlmm.lmer("cbind(mv3_t1, copy) ~ sex + (1 | id)", twin, relmat={"id": Ks})
    assert np.isfinite(fit.criterion) and np.all(np.isfinite(fit.sigma_g.to_numpy()))
    assert fit.is_singular and any("singular" in m for m in fit.messages)


@pytest.mark.slow
def test_scan_of_a_trait_set_against_gemma(mv3, K):
    """GEMMA -lmm 4 -n 1 2 3 on 65 markers: Wald and score p-values within 0.05 in log10 (GEMMA re-estimates
    Vg/Ve per marker with its own tolerances), effects within 0.05 SE; the likelihood-ratio p-values within
    0.01, or where they differ our likelihood with the marker is the higher (a larger ratio against the same
    null), as at rs04165 where GEMMA's refit stopped short (p_lrt 0.54 beside its p_wald 0.082)."""
    from scipy import special

    G = pd.read_csv(REF / "scan_markers.csv.gz", index_col=0)
    res = jaxlmm.scan(FORMULA, mv3, genotypes=G, relmat={"id": K}, snp_chunk=32)
    ref = pd.read_csv(REF / "gemma_mvlmm_mv3.assoc.txt.gz", sep="\t").set_index("rs").loc[res.snp]
    assert (res.status == "converged").all()
    for test, tol in (("wald", 0.05), ("score", 0.05)):
        diff = np.abs(np.log10(res[f"p_{test}"].to_numpy()) - np.log10(ref[f"p_{test}"].to_numpy()))
        assert np.max(diff) <= tol, (test, np.max(diff))
    ours, theirs = res.p_lrt.to_numpy(), ref.p_lrt.to_numpy()
    far = np.abs(np.log10(ours) - np.log10(theirs)) > 0.01
    assert np.all(special.chdtri(3, ours[far]) > special.chdtri(3, theirs[far]))
    assert far[list(res.snp).index("rs04165")]
    for j in (1, 2, 3):
        se = np.sqrt(ref[f"Vbeta_{j}_{j}"].to_numpy())
        assert np.max(np.abs(res[f"beta_mv3_t{j}"].to_numpy() - ref[f"beta_{j}"].to_numpy()) / se) <= 0.05
    best = res.nsmallest(5, "p_wald").snp
    assert set(best) == set(ref.nsmallest(5, "p_wald").index)


@pytest.mark.slow
def test_command_line_joint_scan(tmp_path, mv3, K):
    """``jaxlmm scan --joint``: the traits as one cbind response, one table with GEMMA's multivariate tests."""
    from bed_reader import to_bed

    from jaxlmm.cli.main import main

    G = pd.read_csv(REF / "scan_markers.csv.gz", index_col=0).iloc[:, :16]
    to_bed(str(tmp_path / "geno.bed"), G.to_numpy(float), properties={"iid": list(G.index), "fid": list(G.index),
                                                                        "sid": list(G.columns)})
    K.rename_axis("id").to_csv(tmp_path / "K.csv")
    mv3.to_csv(tmp_path / "pheno.csv", index=False)
    out = tmp_path / "out"
    rc = main(["scan", "--bfile", str(tmp_path / "geno"), "--pheno", str(tmp_path / "pheno.csv"), "--relmat",
               f"id={tmp_path / 'K.csv'}", "--covariates", "sex", "--responses", "mv3_t*", "--joint",
               "--out", str(out), "--no-plots"])
    assert rc == 0
    table = pd.read_csv(out / "joint.assoc.csv")
    ours = jaxlmm.scan(FORMULA, mv3, genotypes=G, relmat={"id": K})
    np.testing.assert_allclose(table.p_wald, ours.p_wald, rtol=1e-8)
    assert {"beta_mv3_t1", "se_mv3_t3", "p_lrt", "p_score"} <= set(table.columns)
