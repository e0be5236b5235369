"""Write notebooks/02_agronomy_blues.ipynb and notebooks/04_wald_vs_bootstrap.ipynb.

The notebooks are generated from the cell lists below (nbformat v4, kernel
python3, outputs cleared), so edits belong here, not in the .ipynb files:

    python notebooks/_build/build_02_04.py             # write both notebooks
    python notebooks/_build/build_02_04.py --execute   # write, then run each as CI does and time it
    python notebooks/_build/build_02_04.py --execute --png-dir /tmp/nb_png   # also save the figures

``--execute`` runs each notebook with nbclient in a fresh python3 kernel, with
``notebooks/`` as working directory and ``MPLBACKEND=Agg`` (as
``tests/test_notebooks.py``); the executed copy is kept in memory only.
"""

from __future__ import annotations

import argparse
import base64
import os
import pathlib
import textwrap
import time

import nbformat
from nbformat import v4

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent


def md(text: str):
    return v4.new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str):
    return v4.new_code_cell(textwrap.dedent(text).strip("\n"))


# --------------------------------------------------------------------------------------------- 02
NB02 = [
    md(r"""
    # BLUEs in a yield trial with missing blocks

    A sulfur-fertilizer trial (grain yield, kg/ha) at three Spanish locations, **Cordoba**, **Granada** and
    **Leon**, with four sulfur rates (`trt`: 0, 24, 36, 48) in four blocks. The design was meant to be
    complete, 3 × 4 × 4 = 48 plots, but two blocks were lost: Cordoba has no block 1 and Leon no block 2,
    which leaves 40 plots.

    The first question is simple: *what is the mean yield at each location?* With a complete
    design the answer is the plain average of each location's plots. With missing blocks it is not, and
    this notebook shows why, how a linear mixed model with random blocks answers the question (the
    **BLUEs** of the locations), and how to test and compare them with Kenward–Roger standard errors and
    degrees of freedom. At the end every number is checked against R (lme4 1.1-31, lmerTest, pbkrtest,
    emmeans).
    """),
    code(r"""
    import json
    import pathlib

    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import statsmodels.formula.api as smf

    import jaxlmm
    from jaxlmm import plot as lmmplot

    sulfur = jaxlmm.load_dataset("sulfur")          # location, trt, block are categorical
    print(sulfur.dtypes.to_dict())
    pd.crosstab(sulfur["location"], sulfur["block"], margins=True)   # plots per location and block
    """),
    md(r"""
    ## A look at the data

    Mean yield per location and block (over the four sulfur rates); the two empty cells are the lost
    blocks.

    Four plots stand out: yields of 10–15 kg/ha where the same rate in the neighbouring blocks gave
    950–1525 kg/ha. Multiplied by 100 they would fall in line with their neighbours, so they look like
    entries in another unit, or failed plots — in a real trial they would be checked before any analysis.
    Three of them are in Cordoba's block 4 and one in Granada's block 1, and they drag those block means
    down. The reference analysis (and R's numbers at the end) includes them, and so does this notebook; a
    section near the end shows how much they matter.
    """),
    code(r"""
    cell_means = sulfur.pivot_table(index="location", columns="block", values="yield", aggfunc="mean",
                                    observed=False)
    display(cell_means.round(1))
    sulfur[sulfur["yield"] < 100]
    """),
    md(r"""
    ## The model: `yield ~ 0 + location + (1 | block)`

    $$y_{lkr} = \beta_l + b_k + \varepsilon_{lkr}, \qquad b_k \sim N(0, \sigma_b^2), \quad
      \varepsilon_{lkr} \sim N(0, \sigma^2),$$

    for location $l$, block $k$ and plot $r$. `0 +` drops the intercept, so each location gets its own
    coefficient $\beta_l$: the location mean. Its generalized least-squares estimate $\hat\beta_l$, with
    the variance components at their REML estimates, is the location's **BLUE** (best linear unbiased
    estimate). Blocks are random: a sample of field conditions, with variance $\sigma_b^2$.

    In this data set the block labels 1–4 are shared by the three locations, and `(1 | block)` treats block
    $k$ as one unit across locations — a blocking factor *crossed* with location (think of rep $k$ as a
    common sowing date or field crew). That is the model of the reference analysis, and it is what makes a
    missing block matter. Were blocks distinct fields within each location, the model would be
    `(1 | location:block)`, every location would be balanced over its own blocks, and each BLUE would again
    be the plain mean.
    """),
    code(r"""
    fit = jaxlmm.lmer("yield ~ 0 + location + (1 | block)", sulfur)
    print(fit.summary(ddf="kenward-roger"))
    """),
    md(r"""
    ## BLUEs are not the simple means — and why

    The mixed model equations (Henderson's) for the location coefficients say, for an indicator design,

    $$\hat\beta_l = \bar y_l - \overline{\hat b}_l ,$$

    the simple mean of location $l$ minus the **average BLUP of the blocks its plots are in** (each block
    counted once per plot). The BLUPs $\hat b_k$ sum to zero, so for Granada, which has all four blocks with
    four plots each, $\overline{\hat b}_l = 0$ and the BLUE *is* the simple mean. Cordoba was grown in
    blocks 2, 3 and 4 only: it missed block 1, a below-average block ($\hat b_1 \approx -37$), so the
    blocks it does have average $+12$, its simple mean flatters it, and the BLUE is lower.
    Leon missed block 2, the block with the highest BLUP ($\hat b_2 \approx +73$), so its blocks average
    $-24$, its simple mean undersells it, and the BLUE is higher. The simple means put Leon 240 kg/ha
    above Cordoba; adjusted for the blocks the gap is 277 kg/ha.

    For comparison, the last column treats blocks as *fixed* (`yield ~ 0 + location + block`, block effects
    summing to zero; the location coefficients are then least-squares means over the four blocks). That
    removes the full estimated block effects, using only comparisons within blocks. The mixed model removes
    *shrunken* block effects (BLUPs) — it also uses the information between blocks, weighted by the
    estimated variance components — and lands between the simple mean and the fixed-block mean.
    """),
    code(r"""
    blup = fit.ranef_dict()["block"]["(Intercept)"]                       # b_k, one per block
    simple = sulfur.groupby("location", observed=True)["yield"].mean()
    # average BLUP over each location's plots (levels are labelled as strings)
    avg_blup = blup.reindex(sulfur["block"].astype(str)).groupby(sulfur["location"].to_numpy()).mean()

    fixed_blocks = smf.ols("Q('yield') ~ 0 + location + C(block, Sum)", sulfur).fit()
    ls_means = fixed_blocks.params.filter(like="location").to_numpy()

    blues = pd.DataFrame({"simple mean": simple.to_numpy(),
                          "avg BLUP of its blocks": avg_blup.reindex(simple.index).to_numpy(),
                          "BLUE (mixed model)": fit.fixef.to_numpy(),
                          "fixed-block LS mean": ls_means}, index=simple.index)
    # Henderson's identity, exactly: BLUE = simple mean - average BLUP of the location's plots
    np.testing.assert_allclose(blues["BLUE (mixed model)"],
                               blues["simple mean"] - blues["avg BLUP of its blocks"], rtol=1e-8)
    blues.round(2) + 0.0                                                 # + 0.0: no "-0.00"
    """),
    md(r"""
    ## BLUPs of the blocks

    The block effects themselves are predicted, not estimated: their BLUPs are shrunk towards zero, by
    more the smaller $\sigma_b^2$ is relative to $\sigma^2$ and the fewer plots a block has. The caterpillar
    plot (lme4: `dotplot(ranef(m, condVar = TRUE))`) shows each block's BLUP with a 95% prediction
    interval $\hat b_k \pm 1.96\,\text{condsd}_k$. Blocks 1 and 2 have 8 plots, blocks 3 and 4 have 12, so
    their intervals are a little wider. With $\hat\sigma_b \approx 124$ kg/ha against a residual
    $\hat\sigma \approx 446$ kg/ha, and only four blocks, no single block is clearly different from the
    average, yet the adjustment above is not negligible.
    """),
    code(r"""
    display(fit.varcorr)
    fit.ranef
    """),
    code(r"""
    fig = lmmplot.caterpillar(fit)
    fig.set_size_inches(5.5, 2.4)          # the default height suits many levels; four need more room
    fig.tight_layout()
    """),
    md(r"""
    ## Population-level versus conditional predictions

    * `fit.predict(re_form="~0")` (lme4: `predict(m, re.form = NA)`) sets the block effect to zero: the
      expected yield at a location in an *average* block, $\hat\beta_l$ — the BLUE, the number to report
      for the location.
    * `fit.predict()` adds the block's BLUP: $\hat\beta_l + \hat b_k$, the expected yield of *that* block at
      that location — what a plot in block 4 at Leon is predicted to yield.

    With `newdata` both work for any location × block combination, including the two cells that were
    never observed: Cordoba in block 1 and Leon in block 2, predicted from the location's BLUE and the
    block's BLUP, which was estimated at the other locations (this relies on the crossed-block assumption).
    """),
    code(r"""
    grid = pd.DataFrame([(loc, blk) for loc in sulfur["location"].cat.categories
                         for blk in sulfur["block"].cat.categories], columns=["location", "block"])
    grid["population (re_form='~0')"] = fit.predict(grid, re_form="~0")
    grid["conditional (BLUE + BLUP)"] = fit.predict(grid)
    grid.pivot(index="location", columns="block", values="conditional (BLUE + BLUP)").round(1).assign(
        **{"population (re_form='~0')": grid.groupby("location", observed=True)["population (re_form='~0')"]
           .first().round(1)})
    """),
    md(r"""
    ## Estimated marginal means with Kenward–Roger SEs and df

    For a one-factor model the estimated marginal means (emmeans' `emmeans(m, ~ location)`) are the
    BLUEs. What the Kenward–Roger method changes is their uncertainty:

    * **Standard error.** The model-based covariance $(X^\top \hat V^{-1} X)^{-1}$ plugs in the estimated
      variance components as if they were known. It understates the sampling variance of the BLUE, which
      also moves with $\hat\sigma_b^2$ and $\hat\sigma^2$. Kenward and Roger (1997) add a correction for
      that. Cordoba's and Leon's BLUEs depend on how much of the block effect is removed — on the
      estimated variance ratio — so their SE grows (145.8 → 151.1). Granada's BLUE is its plain mean
      whatever the variance components are, so its SE is unchanged (127.7).
    * **Degrees of freedom.** The $t$ statistic is referred to a $t$ distribution whose df match the first
      two moments of the (approximate) $F$ statistic. A location mean contains the block-to-block
      variance, estimated from only four blocks, so the df are about 9–11, far from the 37 residual df.
      Satterthwaite's df (lmerTest's default, with the unadjusted SE) are similar.
    """),
    code(r"""
    emm = jaxlmm.emmeans(fit, "location", ddf="kenward-roger")
    print(emm)
    kr = fit.coef_table("kenward-roger")
    sat = fit.coef_table("satterthwaite")
    pd.DataFrame({"BLUE": fit.fixef, "model SE": fit.se, "KR SE": kr["Std. Error"],
                  "Satterthwaite df": sat["df"], "KR df": kr["df"]}).round(3)
    """),
    md(r"""
    ## Pairwise comparisons of the locations

    A difference between two locations is mostly a comparison *within* blocks, where the block effect
    cancels. Its precision is governed by the residual variance, and its df (≈ 36) are close to the
    residual df — far more than the df of each mean. Cordoba and Leon share only blocks 3 and 4, so their
    difference is less precise (SE 199) than the comparisons with the complete Granada (SE 177).
    `adjust="none"` gives the unadjusted $p$ values of the reference; Tukey's adjustment (emmeans' default)
    accounts for making three comparisons.
    """),
    code(r"""
    pw = jaxlmm.pairs(emm, adjust="none")
    pw["p.value (Tukey)"] = jaxlmm.pairs(emm, adjust="tukey")["p.value"]
    pw.round(4)
    """),
    md(r"""
    ## Adding the sulfur rates: `yield ~ location * trt + (1 | block)`

    The full model has a mean for every location × rate cell (12 fixed effects, treatment contrasts with
    Cordoba and rate 0 as reference). The **type III ANOVA** (lmerTest's `anova(m, type = 3)`) tests each
    term with the others in the model, with hypotheses about the cell means averaged with equal weights
    over the other factor; so the tests do not depend on the order of the terms, which matters with
    unbalanced data. With Kenward–Roger's method the $F$ statistics use the adjusted covariance and the
    denominator df are matched to the $F$ distribution.

    The rates explain much of the residual variation of the first model ($\hat\sigma$: 446 → 357 kg/ha).
    Location and rate both matter; there is no evidence that the response to sulfur differs between
    locations ($p = 0.44$ for the interaction).
    """),
    code(r"""
    fit2 = jaxlmm.lmer("yield ~ location * trt + (1 | block)", sulfur)
    print(f"REML criterion {fit2.criterion:.4f}, sigma {fit2.sigma:.2f}, sd(block) "
          f"{fit2.varcorr.loc[0, 'sdcor']:.2f}")
    anova_kr = fit2.anova(type=3, ddf="kenward-roger")
    anova_kr
    """),
    md(r"""
    ## Marginal means of the rates

    `emmeans(m, ~ trt)` averages each rate's cell means over the three locations with equal weights — the
    mean response to a rate across the environments of the trial, not weighted by how many plots each
    location happened to keep. The rate comparisons are again within-block comparisons (df ≈ 25, close
    to the 28 residual df of this model), while each marginal mean still carries the block variance
    (df ≈ 11).
    Rate 36 gives the highest yield, about 690 kg/ha above the unfertilized plots; rate 48 falls back.
    """),
    code(r"""
    emm_trt = jaxlmm.emmeans(fit2, "trt", ddf="kenward-roger")
    display(emm_trt.table.round(2))
    pw_trt = jaxlmm.pairs(emm_trt, adjust="none")
    pw_trt["p.value (Tukey)"] = jaxlmm.pairs(emm_trt, adjust="tukey")["p.value"]
    pw_trt.round(4)
    """),
    md(r"""
    The cell means by location and rate (`emmeans(m, ~ location * trt)`), with 95% KR confidence
    intervals. Granada and Leon respond strongly to sulfur; Cordoba looks flat — but three of its nine
    fertilized plots are the suspicious 10–15 kg/ha plots of block 4 (see below). The intervals are wide,
    and the interaction test finds no evidence that the response differs between locations.
    """),
    code(r"""
    cells = jaxlmm.emmeans(fit2, ["location", "trt"], ddf="kenward-roger").table
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for i, (loc, d) in enumerate(cells.groupby("location", sort=False)):
        x = d["trt"].astype(float) + (i - 1) * 0.8                    # small dodge
        ax.errorbar(x, d["emmean"], yerr=[d["emmean"] - d["lower.CL"], d["upper.CL"] - d["emmean"]],
                    marker="o", capsize=3, label=loc)
    ax.set_xticks([0, 24, 36, 48])
    ax.set_xlabel("sulfur rate (trt)")
    ax.set_ylabel("estimated marginal mean yield (kg/ha)")
    ax.set_title("yield ~ location * trt + (1 | block): cell EMMs, 95% KR intervals")
    ax.legend(title="location", frameon=False)
    fig.tight_layout()
    """),
    md(r"""
    ## A caveat: the four suspicious plots

    How much of the block adjustment comes from the four plots with yields of 10–15 kg/ha? Refit the first
    model without them. The block variance estimate drops to zero: a *boundary (singular) fit* (jaxlmm
    warns, as lme4 does). All BLUPs are then 0, every BLUE is its location's simple mean, and Cordoba, now
    without its three failed plots, moves from last to second.

    So in this trial the apparent block effects — and with them the whole difference between BLUEs and
    simple means — rest on a handful of aberrant plots: they made block 4 (and block 1) look poor. Two
    lessons for practice. With four blocks the block variance is estimated with 3 df at best and can swing
    from "large" to zero; the BLUEs of incomplete locations move with it, which is what the Kenward–Roger
    SE inflation above acknowledges. And the mechanism of this notebook is general, but the data deserve a
    check before the numbers are reported.
    """),
    code(r"""
    clean = sulfur[sulfur["yield"] >= 100].reset_index(drop=True)
    fit_clean = jaxlmm.lmer("yield ~ 0 + location + (1 | block)", clean)
    print(f"singular: {fit_clean.is_singular}, sd(block) = {fit_clean.varcorr.loc[0, 'sdcor']:.3g}, "
          f"sigma = {fit_clean.sigma:.1f}")
    pd.DataFrame({"BLUE, all 40 plots": fit.fixef.to_numpy(),
                  "BLUE, without the 4 plots": fit_clean.fixef.to_numpy(),
                  "simple mean, without the 4 plots":
                      clean.groupby("location", observed=True)["yield"].mean().to_numpy()},
                 index=blues.index).round(2)
    """),
    md(r"""
    ## Comparison with lme4

    Reference values from R: lme4 1.1-31 (`lmer`, REML), lmerTest (Satterthwaite df, type III ANOVA),
    pbkrtest (Kenward–Roger) and emmeans (`lmer.df = "kenward-roger"`, `pairs(..., adjust = "none")`),
    read from the package's test references `../tests/reference/sulfur_blue.json` and `sulfur_trt.json`.
    Tolerances: criterion, $\theta$, $\sigma$, estimates, SEs and confidence limits within $10^{-4}$
    relative; df and $p$ values within $10^{-3}$ relative.
    """),
    code(r"""
    REF = pathlib.Path("../tests/reference")
    ref1 = json.loads((REF / "sulfur_blue.json").read_text())
    ref2 = json.loads((REF / "sulfur_trt.json").read_text())
    TOL = {"estimate": 1e-4, "df/p": 1e-3}
    rows = []

    def compare(model, quantity, ours, theirs, kind="estimate"):
        ours, theirs = np.atleast_1d(np.asarray(ours, float)), np.atleast_1d(np.asarray(theirs, float))
        assert ours.shape == theirs.shape, (quantity, ours.shape, theirs.shape)
        rel = np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-300)
        rows.append({"model": model, "quantity": quantity, "jaxlmm": ours[0], "lme4": theirs[0], "n": len(ours),
                     "max rel. diff": rel.max(), "tolerance": TOL[kind]})

    for name, f, ref in [("location", fit, ref1), ("location*trt", fit2, ref2)]:
        assert fit.fixef_names == list(ref1["beta"]) and fit2.fixef_names == list(ref2["beta"])
        compare(name, "REML criterion", f.criterion, ref["criterion"])
        compare(name, "theta", f.theta, ref["theta"])
        compare(name, "sigma", f.sigma, ref["sigma"])
        compare(name, "beta (BLUEs)", f.fixef, list(ref["beta"].values()))
        compare(name, "SE", f.se, list(ref["se"].values()))
        compare(name, "BLUPs (condval)", f.ranef["condval"], [r["condval"] for r in ref["ranef"]])
        compare(name, "condsd", f.ranef["condsd"], [r["condsd"] for r in ref["ranef"]])
        compare(name, "predict(re_form='~0')", f.predict(re_form="~0"), ref["pred_fixed"])
        compare(name, "predict() (fitted)", f.predict(), ref["fitted"])
        t_kr = f.coef_table("kenward-roger")
        compare(name, "KR SE", t_kr["Std. Error"], list(ref["kenward_roger"]["se"].values()))
        compare(name, "KR df", t_kr["df"], list(ref["kenward_roger"]["df"].values()), "df/p")
        compare(name, "KR p", t_kr["Pr(>|t|)"], list(ref["kenward_roger"]["p"].values()), "df/p")
        t_sat = f.coef_table("satterthwaite")
        compare(name, "Satterthwaite df", t_sat["df"], list(ref["satterthwaite"]["df"].values()), "df/p")
        compare(name, "Satterthwaite p", t_sat["Pr(>|t|)"], list(ref["satterthwaite"]["p"].values()), "df/p")
        for ddf, key in [("kenward-roger", "anova_kr"), ("satterthwaite", "anova_satterthwaite")]:
            a, ra = f.anova(type=3, ddf=ddf), pd.DataFrame(ref[key]).set_index("term")
            assert list(a.index) == list(ra.index)
            compare(name, f"anova {ddf}: F", a["F value"], ra["F value"])
            compare(name, f"anova {ddf}: DenDF", a["DenDF"], ra["DenDF"], "df/p")
            compare(name, f"anova {ddf}: p", a["Pr(>F)"], ra["Pr(>F)"], "df/p")
        ci, rci = f.confint("wald"), ref["confint_wald"]
        compare(name, "Wald CI", ci.to_numpy().ravel(), np.column_stack([rci["lower"], rci["upper"]]).ravel())

    for name, e, ref in [("location", emm, ref1), ("location*trt", emm_trt, ref2)]:
        spec = e.specs[0]
        for ddf, key in [("kenward-roger", "emmeans_kr"), ("satterthwaite", "emmeans_satterthwaite")]:
            ours, theirs = jaxlmm.emmeans(e.fit, spec, ddf=ddf).table, pd.DataFrame(ref[key])
            assert list(ours[spec]) == list(theirs[spec].astype(str))
            compare(name, f"emmeans {ddf}: emmean", ours["emmean"], theirs["emmean"])
            compare(name, f"emmeans {ddf}: SE", ours["SE"], theirs["SE"])
            compare(name, f"emmeans {ddf}: CL", ours[["lower.CL", "upper.CL"]].to_numpy().ravel(),
                    theirs[["lower.CL", "upper.CL"]].to_numpy().ravel())
            compare(name, f"emmeans {ddf}: df", ours["df"], theirs["df"], "df/p")
        ours, theirs = jaxlmm.pairs(e, adjust="none"), pd.DataFrame(ref["pairs_kr"])
        assert list(ours["contrast"]) == list(theirs["contrast"])
        compare(name, "pairs KR: estimate", ours["estimate"], theirs["estimate"])
        compare(name, "pairs KR: SE", ours["SE"], theirs["SE"])
        compare(name, "pairs KR: df", ours["df"], theirs["df"], "df/p")
        compare(name, "pairs KR: p", ours["p.value"], theirs["p.value"], "df/p")

    comparison = pd.DataFrame(rows)
    with pd.option_context("display.max_rows", 100, "display.float_format", "{:.6g}".format):
        display(comparison)
    bad = comparison[comparison["max rel. diff"] > comparison["tolerance"]]
    assert bad.empty, bad
    print(f"all {len(comparison)} quantities ({comparison['n'].sum()} numbers) agree with lme4/lmerTest/"
          "pbkrtest/emmeans within tolerance")
    """),
    md(r"""
    ## Summary

    * With missing blocks, a location's simple mean carries the effects of the blocks it happened to be
      grown in. The BLUE removes them: $\hat\beta_l = \bar y_l - \overline{\hat b}_l$, the average *BLUP*
      of its blocks. A complete location (Granada) keeps its simple mean.
    * A random-block analysis adjusts less than a fixed-block one, because it shrinks the block effects and
      also uses the between-block information.
    * `predict(re_form="~0")` gives the BLUEs (an average block); `predict()` adds the block's BLUP.
    * Kenward–Roger inflates the SEs of BLUEs that depend on the estimated variance components and gives
      small df to means that contain the block variance (4 blocks), and large df to comparisons within
      blocks.
    * The type III ANOVA of `location * trt` finds location and rate effects and no interaction; the rate
      EMMs average over locations with equal weights.
    * Here the block effects hinge on four suspicious plots: without them the block variance is estimated
      at zero and the BLUEs are the simple means. Look at the data first.
    """),
]


# --------------------------------------------------------------------------------------------- 04
NB04 = [
    md(r"""
    # Wald, profile and bootstrap: ten clusters with separated intercepts

    A simulated teaching example (`clusters`): ten clusters `p` with ten observations each. Within every
    cluster $y$ falls with $x$ with a common slope of about $-1$, but the clusters sit at very different
    levels — their intercepts are spread about 2 units apart — and the clusters with larger $x$ also have
    larger intercepts.

    What are the standard errors of the intercept and the slope? That depends on the question. A
    fixed-effects analysis (one dummy per cluster) answers it *for these ten clusters*; the mixed model
    `y ~ x + (1 | p)` answers it *for the population of clusters they were sampled from*. The two give
    almost the same slope and SE, and an intercept SE that differs by a factor of 30. This notebook shows
    why, reproduces both answers with a parametric bootstrap (`use_u=False` versus `use_u=True`), and
    compares Wald, profile-likelihood and bootstrap confidence intervals. Every number is checked against
    R (lme4 1.1-31, lmerTest, pbkrtest) at the end.
    """),
    code(r"""
    import json
    import pathlib

    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import statsmodels.formula.api as smf
    from scipy import stats

    import jaxlmm
    from jaxlmm import plot as lmmplot

    clusters = jaxlmm.load_dataset("clusters")        # x, y, and the cluster p (categorical)
    clusters.groupby("p", observed=True).agg(n=("y", "size"), mean_x=("x", "mean"), mean_y=("y", "mean")).round(2)
    """),
    md(r"""
    ## The data, and the pooled regression that ignores the clusters

    A regression of $y$ on $x$ that ignores the clusters finds a *positive* slope: it is driven by the
    differences between clusters (higher $x$, higher level), not by the relation within them — Simpson's
    paradox. Every analysis below lets each cluster have its own level.
    """),
    code(r"""
    pooled = smf.ols("y ~ x", clusters).fit()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (p, d) in enumerate(clusters.groupby("p", observed=True)):
        ax.plot(d["x"], d["y"], "o", ms=4, color=plt.cm.viridis(i / 9), label=f"p = {p}")
    xs = np.linspace(clusters["x"].min(), clusters["x"].max(), 2)
    ax.plot(xs, pooled.params["Intercept"] + pooled.params["x"] * xs, "k--", lw=1.2,
            label=f"pooled OLS, slope {pooled.params['x']:+.2f}")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize=7, ncol=2, frameon=False)
    ax.set_title("ten clusters: within each, slope ≈ -1")
    fig.tight_layout()
    """),
    md(r"""
    ## Fixed effects versus the mixed model

    * **Fixed effects** (`y ~ x + C(p, Sum)`, ordinary least squares with cluster dummies in sum-to-zero
      coding): each cluster has its own intercept $\alpha_j$ and the model intercept is their mean,
      $\bar\alpha = \frac1{10}\sum_j \alpha_j$ — the average level of *these ten* clusters.
    * **Mixed model** (`y ~ x + (1 | p)`): $\alpha_j = \beta_0 + b_j$ with $b_j \sim N(0, \sigma_b^2)$; the
      intercept $\beta_0$ is the mean of the *population* of clusters.
    """),
    code(r"""
    fe = smf.ols("y ~ x + C(p, Sum)", clusters).fit()
    fit = jaxlmm.lmer("y ~ x + (1 | p)", clusters)
    print(fit.summary(ddf="kenward-roger"))
    ses = pd.DataFrame({"pooled OLS": pooled.params[["Intercept", "x"]].to_numpy(),
                        "pooled SE": pooled.bse[["Intercept", "x"]].to_numpy(),
                        "fixed effects": fe.params[["Intercept", "x"]].to_numpy(),
                        "fixed-effects SE": fe.bse[["Intercept", "x"]].to_numpy(),
                        "mixed model": fit.fixef.to_numpy(), "mixed-model SE": fit.se.to_numpy()},
                       index=fit.fixef_names)
    ses.round(5)
    """),
    md(r"""
    ## Why the intercept SE of the mixed model is 30 times larger

    The clusters are well separated: $\hat\sigma_b \approx 6.04$ against a residual $\hat\sigma \approx
    0.103$ ($\theta = \sigma_b/\sigma \approx 59$). With ten observations per cluster the shrinkage factor
    $k = \theta^2 n_j / (1 + \theta^2 n_j)$ is 0.99997, so the BLUPs are practically the fixed cluster
    effects and the slope is, in both models, estimated from the variation *within* clusters — same
    estimate, same SE (about 0.0116), about 89 df.

    The intercepts mean different things:

    * In the fixed-effects model, $\bar\alpha$ is an average over the clusters at hand. Its only
      uncertainty is residual noise, and the extrapolation from $\bar x \approx 5.5$ to $x = 0$ through the
      slope: $\text{SE}^2 \approx \sigma^2/100 + \bar x^2\,\text{SE}(\hat\beta_1)^2$.
    * In the mixed model, $\beta_0$ is the mean of a population of clusters of which we have seen ten. The
      spread of the clusters enters the SE:
      $\text{SE}^2 \approx \sigma_b^2/10 + \sigma^2/100 + \bar x^2\,\text{SE}(\hat\beta_1)^2$, and
      $\sigma_b^2/10 \approx 3.65$ swamps everything else. Its df (Satterthwaite or Kenward–Roger) are
      about 9, ten clusters minus one: it is essentially a mean of ten cluster levels.

    The mixed-model answer is the one to use if the clusters are a sample (fields, herds, families) and the
    conclusion is about new ones. A side remark for the statistician: the cluster levels here are strongly
    correlated with the cluster means of $x$, which a random-intercept model assumes away. It does no harm
    here because $\theta$ is so large that the slope is the within-cluster estimate; with smaller clusters
    or less separation it would be pulled towards the pooled slope (the usual remedy is to add the cluster
    mean of $x$ as a covariate).
    """),
    code(r"""
    xbar = clusters["x"].mean()
    var_b = fit.varcorr.loc[0, "vcov"]
    approx = pd.DataFrame({
        "formula": [np.sqrt(fe.scale / 100 + xbar**2 * fe.bse["x"]**2),
                    np.sqrt(var_b / 10 + fit.sigma**2 / 100 + xbar**2 * fit.se["x"]**2)],
        "exact SE": [fe.bse["Intercept"], fit.se["(Intercept)"]]},
        index=["fixed-effects intercept", "mixed-model intercept"])
    theta = fit.theta[0]
    print(f"theta = {theta:.2f}, shrinkage factor k = {theta**2 * 10 / (1 + theta**2 * 10):.6f}")
    display(approx.round(4))
    fit.coef_table("kenward-roger")
    """),
    md(r"""
    ## Parametric bootstrap: `use_u=False` versus `use_u=True`

    The parametric bootstrap (lme4's `bootMer`, here `fit.bootstrap(nsim, seed, use_u=...)`) simulates new
    responses from the fitted model, $y^* = X\hat\beta + Z b^* + \varepsilon^*$ with
    $\varepsilon^* \sim N(0, \hat\sigma^2 I)$, refits the model to each (all replicates in one vmapped,
    compiled batch), and looks at the spread of the estimates. `use_u` decides what $b^*$ is:

    * `use_u=False` (lme4's default): **new clusters** every replicate, $b^* \sim N(0, \hat\sigma_b^2)$. The
      SD of the intercept replicates estimates the sampling variability over studies that sample new
      clusters — the mixed model's SE, about 1.9.
    * `use_u=True`: **the same clusters**, $b^* = \hat b$ (the BLUPs), only new residual noise. Now the
      intercept varies only as much as the fixed-effects intercept does, about 0.065.

    The slope is a within-cluster quantity and has the same SD either way. R's bootstrap SDs (500
    replicates each) are shown next to ours (1,000 each); they are Monte-Carlo estimates, compared within
    four standard errors of the ratio of two SD estimates,
    $s = \sqrt{1/(2(500-1)) + 1/(2(1000-1))}$.
    """),
    code(r"""
    NSIM = 1000
    boot_new = fit.bootstrap(NSIM, seed=1, use_u=False, progress=False)       # new clusters
    boot_same = fit.bootstrap(NSIM, seed=2, use_u=True, progress=False)       # the same clusters (BLUPs)
    print("failed refits:", boot_new.attrs["failed"], boot_same.attrs["failed"])
    boot_sd = pd.DataFrame({"Wald SE (mixed)": fit.se, "fixed-effects SE": fe.bse[["Intercept", "x"]].to_numpy(),
                            "boot SD use_u=False": boot_new[fit.fixef_names].std(),
                            "boot SD use_u=True": boot_same[fit.fixef_names].std()})
    boot_sd.round(5)
    """),
    md(r"""
    All bootstrap replicates with `use_u=False`, one panel per parameter (lme4: `hist(bootMer(...)$t)`),
    with the estimate (red) and the 95% percentile interval (dashed). The intercept's distribution is
    close to normal; the between-cluster SD, estimated from only ten clusters, ranges from about 2 to 10.
    """),
    code(r"""
    fig = lmmplot.bootstrap(boot_new, estimates=fit)
    """),
    md(r"""
    The intercept under both schemes on one axis: the narrow spike is the conditional (same-clusters)
    distribution, the wide one the marginal (new-clusters) distribution. The curves are the normal
    densities with the fixed-effects and mixed-model SEs.
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    b0 = fit.fixef["(Intercept)"]
    ax.hist(boot_new["(Intercept)"], bins=40, density=True, alpha=0.6, color="C0",
            label="use_u=False (new clusters)")
    ax.hist(boot_same["(Intercept)"], bins=40, density=True, alpha=0.8, color="C1",
            label="use_u=True (same clusters)")
    grid = np.linspace(b0 - 4.5 * fit.se["(Intercept)"], b0 + 4.5 * fit.se["(Intercept)"], 800)
    ax.plot(grid, stats.norm.pdf(grid, b0, fit.se["(Intercept)"]), color="C0", lw=1.5,
            label=f"N(β̂₀, mixed-model SE {fit.se['(Intercept)']:.2f})")
    ax.plot(grid, stats.norm.pdf(grid, b0, fe.bse["Intercept"]), color="C1", lw=1.0,
            label=f"N(β̂₀, fixed-effects SE {fe.bse['Intercept']:.3f})")
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 20)
    ax.set_xlabel("bootstrap replicates of the intercept")
    ax.set_ylabel("density (log scale)")
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    """),
    md(r"""
    ## Profile versus Wald confidence intervals

    The **Wald** interval $\hat\beta \pm 1.96\,\text{SE}$ (lme4's `confint(m, method = "Wald")`) treats the
    SE as known. For the intercept that SE is mostly $\hat\sigma_b/\sqrt{10}$, and $\hat\sigma_b$ comes from
    ten clusters, so the normal quantile is too optimistic — the same reason a mean of ten numbers uses
    $t_9$, not $z$.

    The **profile** interval (`confint(m, method = "profile")`, `fit.profile()`) fixes one parameter at a
    time, re-optimizes the (ML) deviance over all the others, and keeps the values where the signed root
    of the deviance increase, $\zeta$, lies within $\pm 1.96$. It does not assume a symmetric, normal
    estimate: it is wider than Wald for the intercept (between Wald and the Kenward–Roger $t_9$ interval),
    asymmetric for the between-cluster SD (which has no Wald interval in lme4), and the same as Wald for
    the slope, whose profile is a straight line. As in lme4, a REML fit is profiled on the ML deviance, so
    $\zeta = 0$ at the ML estimates (for $\sigma_b$: 5.73 by ML against 6.04 by REML).

    In the plots, a straight $\zeta$ line means the Wald approximation is good (dashed: the linear
    reference at the estimate); the red lines mark where $\zeta = \pm 1.96$, the 95% profile limits.
    """),
    code(r"""
    prof = fit.profile()
    fig = lmmplot.profile(prof)
    for ax in fig.axes:                    # the profile reaches zeta = -21 for the SD; show |zeta| <= 3
        ax.set_ylim(-3, 3)
    """),
    code(r"""
    ci_profile = prof.confint()
    ci_wald = fit.confint("wald")
    kr = fit.coef_table("kenward-roger")
    t_q = stats.t.ppf(0.975, kr["df"])
    ci_boot = boot_new.quantile([0.025, 0.975]).T
    params = list(ci_profile.index)
    intervals = pd.DataFrame({
        "estimate": lmmplot.parameter_estimates(fit).reindex(params),
        "Wald lower": ci_wald.iloc[:, 0].reindex(params), "Wald upper": ci_wald.iloc[:, 1].reindex(params),
        "KR t lower": (kr["Estimate"] - t_q * kr["Std. Error"]).reindex(params),
        "KR t upper": (kr["Estimate"] + t_q * kr["Std. Error"]).reindex(params),
        "profile lower": ci_profile.iloc[:, 0], "profile upper": ci_profile.iloc[:, 1],
        "boot lower": ci_boot.iloc[:, 0].reindex(params), "boot upper": ci_boot.iloc[:, 1].reindex(params)})
    sd_reps = boot_new["sd_(Intercept)|p"]
    print(f"bootstrap replicates of sd_(Intercept)|p: mean {sd_reps.mean():.2f}, simulated from "
          f"{fit.varcorr.loc[0, 'sdcor']:.2f}; mean of their squares {np.mean(sd_reps**2):.1f} vs "
          f"{fit.varcorr.loc[0, 'vcov']:.1f}")
    intervals.round(4)
    """),
    md(r"""
    The percentile bootstrap interval (`use_u=False`) for the intercept is close to Wald: every replicate
    is simulated with the same plug-in $\hat\sigma_b$, and a percentile interval does nothing about that.
    For the between-cluster SD it is shifted down from the profile interval: the variance estimate is
    nearly unbiased, so its square root, the SD, is biased low (the replicates average about 5.9 against
    the 6.04 they were simulated from), and a percentile interval carries that bias along.

    ## Comparison with lme4

    Reference values from R: lme4 1.1-31 (REML fit, `confint(m, method = "Wald")`, `confint(m, method =
    "profile")`, `bootMer(m, fixef, nsim = 500, use.u = FALSE / TRUE)`), lmerTest (Satterthwaite) and
    pbkrtest (Kenward–Roger), read from `../tests/reference/clusters.json`. Tolerances: criterion,
    $\theta$, $\sigma$, estimates, SEs and Wald limits within $10^{-4}$ relative; df and $p$ within
    $10^{-3}$; profile limits within $10^{-3}$ (both programs locate the $\zeta = \pm1.96$ crossings
    numerically: lme4 by spline interpolation of its profile, jaxlmm by bracketing); bootstrap SDs within
    four Monte-Carlo standard errors of the ratio (above).
    """),
    code(r"""
    ref = json.loads((pathlib.Path("../tests/reference") / "clusters.json").read_text())
    rows = []

    def compare(quantity, ours, theirs, tol):
        ours, theirs = np.atleast_1d(np.asarray(ours, float)), np.atleast_1d(np.asarray(theirs, float))
        assert ours.shape == theirs.shape, (quantity, ours.shape, theirs.shape)
        rel = np.abs(ours - theirs) / np.abs(theirs)
        rows.append({"quantity": quantity, "jaxlmm": ours[0], "lme4": theirs[0], "n": len(ours),
                     "max rel. diff": rel.max(), "tolerance": tol})

    assert fit.fixef_names == list(ref["beta"])
    compare("REML criterion", fit.criterion, ref["criterion"], 1e-4)
    compare("theta", fit.theta, ref["theta"], 1e-4)
    compare("sigma", fit.sigma, ref["sigma"], 1e-4)
    compare("beta", fit.fixef, list(ref["beta"].values()), 1e-4)
    compare("SE (Wald)", fit.se, list(ref["se"].values()), 1e-4)
    compare("BLUPs (condval)", fit.ranef["condval"], [r["condval"] for r in ref["ranef"]], 1e-4)
    compare("KR SE", kr["Std. Error"], list(ref["kenward_roger"]["se"].values()), 1e-4)
    compare("KR df", kr["df"], list(ref["kenward_roger"]["df"].values()), 1e-3)
    compare("KR p", kr["Pr(>|t|)"], list(ref["kenward_roger"]["p"].values()), 1e-3)
    sat = fit.coef_table("satterthwaite")
    compare("Satterthwaite df", sat["df"], list(ref["satterthwaite"]["df"].values()), 1e-3)
    compare("Satterthwaite p", sat["Pr(>|t|)"], list(ref["satterthwaite"]["p"].values()), 1e-3)
    compare("Wald CI", ci_wald.to_numpy().ravel(),
            np.column_stack([ref["confint_wald"]["lower"], ref["confint_wald"]["upper"]]).ravel(), 1e-4)
    assert list(ci_profile.index) == ref["confint_profile"]["param"]
    for j, name in enumerate(ref["confint_profile"]["param"]):
        compare(f"profile CI {name}", ci_profile.iloc[j].to_numpy(),
                [ref["confint_profile"]["lower"][j], ref["confint_profile"]["upper"][j]], 1e-3)

    m_ref = ref["boot_sd"]["nsim"]
    s = np.sqrt(1 / (2 * (m_ref - 1)) + 1 / (2 * (NSIM - 1)))       # rel. SE of the ratio of two SDs
    for key, reps in [("use_u_false", boot_new), ("use_u_true", boot_same)]:
        for name, sd_ref in ref["boot_sd"][key].items():
            compare(f"boot SD {name} ({key})", reps[name].std(), sd_ref, 4 * s)

    comparison = pd.DataFrame(rows)
    with pd.option_context("display.max_rows", 100, "display.float_format", "{:.6g}".format):
        display(comparison)
    bad = comparison[comparison["max rel. diff"] > comparison["tolerance"]]
    assert bad.empty, bad
    print(f"all {len(comparison)} quantities agree with lme4/lmerTest/pbkrtest within tolerance "
          f"(bootstrap: 4 Monte-Carlo SEs = {4 * s:.3f} relative)")
    """),
    md(r"""
    ## Summary

    * With well separated clusters, the mixed model and the fixed-effects model estimate the slope from
      within-cluster variation alike; the intercept is a different parameter in each: the mean of these ten
      clusters (SE ≈ 0.065) versus the mean of the cluster population (SE ≈ 1.9, ≈ 9 df).
    * The parametric bootstrap reproduces both: `use_u=False` draws new clusters (the mixed model's SE),
      `use_u=True` keeps the BLUPs fixed (the fixed-effects SE). The slope does not care.
    * Wald intervals treat the SE as known; the profile interval of the intercept is wider (between Wald
      and a $t$ interval with Kenward–Roger's 9 df), and the profile interval of the between-cluster SD is
      asymmetric. Percentile bootstrap intervals inherit the plug-in variance and the bias of the SD.
    """),
]


def write(path: pathlib.Path, cells, prefix: str) -> None:
    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):        # stable ids (as notebooks 01/03/05), no churn between builds
        cell["id"] = f"{prefix}-{i:02d}"
    nbformat.validate(nb)
    nbformat.write(nb, path)


def execute(path: pathlib.Path, png_dir: pathlib.Path | None) -> float:
    from nbclient import NotebookClient

    # CI runs with the Agg backend (figures are drawn, nothing is displayed); to keep the figures as PNG
    # outputs the kernel needs the inline backend instead
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline" if png_dir else "Agg"
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    if errors:
        raise RuntimeError(f"{path.name}: {errors}")
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
        k = 0
        for i, c in enumerate(nb.cells):
            for o in c.get("outputs", []):
                data = o.get("data", {})
                if "image/png" in data:
                    k += 1
                    (png_dir / f"{path.stem}_cell{i:02d}_{k}.png").write_bytes(base64.b64decode(data["image/png"]))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--execute", action="store_true", help="run each notebook as CI does and time it")
    parser.add_argument("--png-dir", type=pathlib.Path, default=None, help="with --execute: save figures here")
    parser.add_argument("--only", choices=["02", "04"], default=None)
    args = parser.parse_args()
    targets = {"02": (NOTEBOOKS / "02_agronomy_blues.ipynb", NB02),
               "04": (NOTEBOOKS / "04_wald_vs_bootstrap.ipynb", NB04)}
    for key, (path, cells) in targets.items():
        if args.only and key != args.only:
            continue
        write(path, cells, key)
        print(f"wrote {path.relative_to(NOTEBOOKS.parent)}")
        if args.execute:
            print(f"  executed in {execute(path, args.png_dir):.1f} s")


if __name__ == "__main__":
    main()
