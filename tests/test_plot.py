"""jaxlmm.plot: each function returns a Figure with the expected artists (no image comparison)."""

from __future__ import annotations

import subprocess
import sys
import types
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Ellipse, FancyArrowPatch, Rectangle  # noqa: E402

import jaxlmm  # noqa: E402
from jaxlmm import plot  # noqa: E402


def _fit(formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxlmm.JaxlmmWarning)
        return jaxlmm.lmer(formula, data, **kw)


@pytest.fixture(scope="module")
def sleep():
    return jaxlmm.load_dataset("sleepstudy")


@pytest.fixture(scope="module")
def slope_fit(sleep):
    return _fit("Reaction ~ Days + (Days | Subject)", sleep)


@pytest.fixture(scope="module")
def intercept_fit(sleep):
    return _fit("Reaction ~ Days + (1 | Subject)", sleep)


@pytest.fixture(scope="module")
def shrink():
    return jaxlmm.load_dataset("shrinkage")


@pytest.fixture(scope="module")
def singular_fit(shrink):
    return _fit("y1 ~ 1 + (1 | g)", shrink)


@pytest.fixture(scope="module")
def batch(shrink):
    return _fit("~ 1 + (1 | g)", shrink, responses=["y1", "y2", "y3"])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _points(ax):
    """Line2D artists drawn with markers only (data points)."""
    return [ln for ln in ax.get_lines() if ln.get_linestyle() in ("None", "none", "", " ")]


def test_import_does_not_need_matplotlib():
    code = "import sys, jaxlmm, jaxlmm.plot; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------ caterpillar
def test_caterpillar_slope(slope_fit):
    fig = plot.caterpillar(slope_fit)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Subject: (Intercept)", "Subject: Days"]
    re = slope_fit.ranef
    for ax, term in zip(fig.axes, ["(Intercept)", "Days"]):
        assert any(isinstance(c, LineCollection) for c in ax.collections)  # the intervals
        pts = _points(ax)
        assert len(pts) == 1 and len(pts[0].get_xdata()) == 18
        x = np.asarray(pts[0].get_xdata())
        assert np.all(np.diff(x) >= 0)  # sorted by condval
        expected = np.sort(re.loc[re["term"] == term, "condval"].to_numpy())
        np.testing.assert_allclose(x, expected)
        labels = [t.get_text() for t in ax.get_yticklabels()]
        order = re.loc[re["term"] == term].sort_values("condval", kind="stable")["level"].astype(str).tolist()
        assert labels == order
        assert "condsd" in ax.get_xlabel()


def test_caterpillar_interval_width(slope_fit):
    fig = plot.caterpillar(slope_fit, group="Subject", z=1.0)
    seg = fig.axes[0].collections[0].get_segments()
    re = slope_fit.ranef[slope_fit.ranef["term"] == "(Intercept)"]
    widths = sorted(s[1, 0] - s[0, 0] for s in seg)
    np.testing.assert_allclose(widths, sorted(2 * re["condsd"]), rtol=1e-10)


def test_caterpillar_unknown_group(slope_fit):
    with pytest.raises(ValueError, match="grouping factors"):
        plot.caterpillar(slope_fit, group="nope")


# ------------------------------------------------------------------ shrinkage
def test_within_group_estimates_are_per_subject_ols(slope_fit, sleep):
    own = plot.within_group_estimates(slope_fit)
    assert list(own.columns) == ["(Intercept)", "Days"]
    d = sleep[sleep["Subject"] == 308]
    slope, intercept = np.polyfit(d["Days"], d["Reaction"], 1)
    np.testing.assert_allclose(own.loc["308"].to_numpy(), [intercept, slope], rtol=1e-10)


def test_within_group_estimates_partial_residual(intercept_fit, sleep):
    own = plot.within_group_estimates(intercept_fit)
    d = sleep[sleep["Subject"] == 309]
    expected = np.mean(d["Reaction"] - intercept_fit.fixef["Days"] * d["Days"])
    np.testing.assert_allclose(own.loc["309", "(Intercept)"], expected, rtol=1e-10)


def test_shrinkage_2d(slope_fit):
    fig = plot.shrinkage(slope_fit)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == 18
    assert any(isinstance(p, Ellipse) for p in ax.patches)
    assert ax.get_xlabel() == "(Intercept)" and ax.get_ylabel() == "Days"
    # conditional estimates are coef()
    pts = _points(ax)
    cond = [ln for ln in pts if "coef()" in ln.get_label()][0]
    np.testing.assert_allclose(cond.get_xdata(), slope_fit.coef["Subject"]["(Intercept)"].to_numpy())
    np.testing.assert_allclose(cond.get_ydata(), slope_fit.coef["Subject"]["Days"].to_numpy())
    pop = [ln for ln in pts if "population" in ln.get_label()][0]
    np.testing.assert_allclose([pop.get_xdata()[0], pop.get_ydata()[0]], slope_fit.fixef.to_numpy())
    assert fig.legends  # figure legend below the panel


def test_shrinkage_intercept(intercept_fit):
    fig = plot.shrinkage(intercept_fit)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xlabel() == "(Intercept)" and ax.get_ylabel() == "Subject"
    assert sum(isinstance(p, FancyArrowPatch) for p in ax.patches) == 18
    vlines = [ln for ln in ax.get_lines() if "population" in ln.get_label()]
    np.testing.assert_allclose(vlines[0].get_xdata()[0], intercept_fit.fixef["(Intercept)"])
    assert len(ax.get_yticklabels()) == 18


def test_shrinkage_singular_pulls_all_to_grand_mean(singular_fit):
    fig = plot.shrinkage(singular_fit)
    ax = fig.axes[0]
    cond = [ln for ln in _points(ax) if "coef()" in ln.get_label()][0]
    np.testing.assert_allclose(cond.get_xdata(), singular_fit.fixef["(Intercept)"], rtol=1e-12)
    own = [ln for ln in _points(ax) if "within-group" in ln.get_label()][0]
    assert np.ptp(own.get_xdata()) > 1  # the cell means differ


# ------------------------------------------------------------------ profile
@pytest.fixture(scope="module")
def profile_frame():
    rows = []
    for p, est, se in [("sd_(Intercept)|Subject", 24.7, 6.0), ("sd_Days|Subject", 5.9, 1.2),
                       ("sigma", 25.6, 1.5), ("(Intercept)", 251.4, 6.8)]:
        v = np.linspace(est - 3 * se, est + 3.5 * se, 21)
        z = (v - est) / se
        rows.append(pd.DataFrame({"param": p, "value": v, "zeta": z - 0.05 * z * np.abs(z)}))
    return pd.concat(rows, ignore_index=True)


def test_profile(profile_frame):
    fig = plot.profile(profile_frame)
    assert len(fig.axes) == 4
    ax = fig.axes[0]
    assert ax.get_xlabel() == "sd_(Intercept)|Subject" and ax.get_ylabel() == "ζ"
    horizontal = {round(float(ln.get_ydata()[0]), 6) for ln in ax.get_lines()
                  if len(set(np.asarray(ln.get_ydata(), float))) == 1 and len(ln.get_ydata()) == 2}
    assert {1.96, -1.96} <= horizontal
    assert any(ln.get_label() == "linear reference" for ln in ax.get_lines())
    # profile interval: vertical lines where zeta crosses +/- 1.96
    vertical = [ln for ln in ax.get_lines() if ln.get_color() == "C3"]
    assert len(vertical) == 2
    curve = [ln for ln in ax.get_lines() if ln.get_label() == "ζ"][0]
    assert len(curve.get_xdata()) == 21


def test_profile_needs_columns():
    with pytest.raises(ValueError, match="zeta"):
        plot.profile(pd.DataFrame({"param": ["a"], "value": [1.0]}))


# ------------------------------------------------------------------ residuals
def test_residuals(slope_fit):
    fig = plot.residuals(slope_fit)
    assert len(fig.axes) == 3  # fitted vs residuals, QQ of (Intercept) and of Days
    ax = fig.axes[0]
    assert ax.get_xlabel() == "fitted values" and ax.get_ylabel() == "residuals"
    pts = _points(ax)[0]
    np.testing.assert_allclose(pts.get_ydata(), slope_fit.residuals())
    for qq in fig.axes[1:]:
        assert qq.get_xlabel() == "standard normal quantiles"
        assert len(_points(qq)[0].get_xdata()) == 18
        assert "Subject" in qq.get_title()


# ------------------------------------------------------------------ bootstrap
def test_bootstrap(slope_fit):
    rng = np.random.default_rng(1)
    boot = pd.DataFrame({"sd_(Intercept)|Subject": rng.normal(24.7, 6, 200), "sigma": rng.normal(25.6, 1.5, 200),
                         "Days": rng.normal(10.5, 1.5, 200)})
    fig = plot.bootstrap(boot, estimates=slope_fit)
    assert len(fig.axes) == 3
    for ax, name in zip(fig.axes, boot.columns):
        assert ax.get_title() == name
        assert sum(isinstance(p, Rectangle) for p in ax.patches) >= 10  # histogram bars
        est = [ln for ln in ax.get_lines() if ln.get_label() == "estimate"]
        assert len(est) == 1
    est = [ln for ln in fig.axes[2].get_lines() if ln.get_label() == "estimate"][0]
    np.testing.assert_allclose(est.get_xdata()[0], slope_fit.fixef["Days"])


def test_bootstrap_without_estimates():
    fig = plot.bootstrap(pd.DataFrame({"a": np.arange(50.0), "label": ["x"] * 50}))
    assert len(fig.axes) == 1  # non-numeric columns ignored
    assert not [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "estimate"]


def test_parameter_estimates_names(slope_fit):
    est = plot.parameter_estimates(slope_fit)
    assert {"sd_(Intercept)|Subject", "sd_Days|Subject", "cor_Days.(Intercept)|Subject", "sigma",
            "(Intercept)", "Days"} == set(est.index)
    np.testing.assert_allclose(est["sigma"], slope_fit.sigma)


# ------------------------------------------------------------------ batches
def test_variance_ratio(batch, shrink):
    ratio = plot.variance_ratio(batch)
    assert list(ratio.index) == ["y1", "y2", "y3"]
    assert ratio["y1"] == pytest.approx(0.0, abs=1e-12)  # singular
    fit = _fit("y2 ~ 1 + (1 | g)", shrink)
    v = fit.varcorr["vcov"].to_numpy()
    assert ratio["y2"] == pytest.approx(v[0] / (v[0] + fit.sigma ** 2), rel=1e-6)


def test_batch_histogram(batch):
    fig = plot.batch_histogram(batch)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert sum(isinstance(p, Rectangle) for p in ax.patches) == 40
    assert "σ²" in ax.get_xlabel() and ax.get_ylabel() == "traits"
    assert ax.get_title() == "3 traits"
    fig2 = plot.batch_histogram(batch, what="(Intercept)|g", bins=5)
    assert "(Intercept)|g" in fig2.axes[0].get_xlabel()


def test_batch_histogram_uses_h2_attribute():
    fake = types.SimpleNamespace(h2=pd.Series([0.1, 0.5, np.nan], name="h2"), h2_term=0)
    fig = plot.batch_histogram(fake)
    assert fig.axes[0].get_xlabel() == "h2"
    assert "1 not estimated" in fig.axes[0].get_title()


def test_convergence(batch):
    fig = plot.convergence(batch)
    assert len(fig.axes) == 4
    assert fig._suptitle.get_text() == batch.summary()
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "status" and titles[2].startswith("iterations") and titles[3].startswith("gradient norm")
    bars = [p for p in fig.axes[1].patches if isinstance(p, Rectangle)]
    heights = [b.get_height() for b in bars]
    assert heights == [2, 1, 0]  # y2, y3 regular; y1 singular; none failed
    assert sum(isinstance(p, Rectangle) for p in fig.axes[3].patches) > 0


def test_profile_accepts_object_with_frame(profile_frame):
    fig = plot.profile(types.SimpleNamespace(frame=profile_frame))
    assert len(fig.axes) == 4
