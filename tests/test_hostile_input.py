"""Hostile input: a formula or a cache entry never runs code (issue I, items 1 and 2)."""

from __future__ import annotations

import os
import pickle
import stat
import warnings
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm import DataError, FormulaError
from jaxlmm.cli.main import main
from jaxlmm.core.compile import aot
from jaxlmm.core.compile import cache_safety

pytestmark = pytest.mark.usefixtures("x64")


@pytest.fixture(scope="module")
def data():
    frame = jaxlmm.load_dataset("sleepstudy")
    return frame.assign(x=frame["Days"].astype(float))


def _payload(marker) -> str:
    return (f"{{x.__class__.__init__.__globals__['__builtins__']['__import__']('os')"
            f".system('touch {marker}')}}")


@pytest.mark.parametrize("place", ["fixed", "random", "response"])
def test_formula_code_injection_is_refused(data, tmp_path, place):
    marker = tmp_path / "owned.txt"
    attack = _payload(marker)
    formula = {"fixed": f"Reaction ~ {attack} + (1 | Subject)",
               "random": f"Reaction ~ Days + ({attack} | Subject)",
               "response": f"{attack} ~ Days + (1 | Subject)"}[place]
    with pytest.raises(FormulaError, match=r"Unknown operator '\{'"):
        jaxlmm.lmer(formula, data)
    assert not marker.exists()


def test_formula_code_injection_through_the_cli(data, tmp_path, capsys):
    marker = tmp_path / "owned.txt"
    csv = tmp_path / "d.csv"
    data.to_csv(csv, index=False)
    code = main(["fit", str(csv), f"Reaction ~ {_payload(marker)} + (1 | Subject)", "--no-cache"])
    assert code == 2 and not marker.exists()
    assert "not allowed in a formula" in capsys.readouterr().err


@pytest.mark.parametrize("formula, message", [
    ("Reaction ~ x.__class__ + (1 | Subject)", r"'x.__class__' .*not allowed"),
    ("Reaction ~ __import__(x) + (1 | Subject)", r"'__import__' .*not allowed"),
    ("Reaction ~ np.log(x) + (1 | Subject)", r"function 'np.log' is not allowed"),
    ("Reaction ~ eval(x) + (1 | Subject)", r"function 'eval' is not allowed"),
    ("Reaction ~ (x)(x) + (1 | Subject)", r"calls something that is not a function name"),
    ("Reaction ~ x + (1 | Subject[0])", r"Unknown operator '\['"),
    ("Reaction ~ I('a') + (1 | Subject)", r"Unknown operator \"'\""),
    ("Reaction ~ poly(x, 2, _state=x) + (1 | Subject)", r"'_state' .*not allowed|keyword '_state'"),
    ("Reaction ~ log(x, base=x) + (1 | Subject)", r"keyword 'base' is not allowed in log\(\)"),
    ("Reaction ~ x + (1 | Subject); import os", r"Unknown operator ';'"),
    ("Reaction ~ lambda + (1 | Subject)", r"column 'lambda'"),
])
def test_formula_outside_the_grammar(data, formula, message):
    with pytest.raises((FormulaError, DataError), match=message):
        jaxlmm.lmer(formula, data)


def test_formula_grammar_checked_by_the_parser_alone():
    with pytest.raises(FormulaError, match=r"Unknown operator '\{'"):
        jaxlmm.parse_formula("y ~ {__import__('os')} + (1 | g)")


def test_allowed_transforms_still_work(data):
    rng = np.random.default_rng(1)
    frame = data.assign(**{"Sepal.Length": rng.normal(size=len(data)), "lambda": rng.normal(size=len(data))})
    fit = jaxlmm.lmer("log(Reaction) ~ sqrt(x) + scale(`Sepal.Length`) + lambda + (1 | Subject)", frame)
    assert np.isfinite(fit.fixef.to_numpy()).all()
    assert list(fit.fixef.index) == ["(Intercept)", "sqrt(x)", "scale(Sepal.Length)", "lambda"]


class _Out(NamedTuple):
    total: jnp.ndarray
    twice: jnp.ndarray


def _program(x, scale):
    return _Out(jnp.sum(x) * scale, 2 * x)


@pytest.fixture
def cache_dir(tmp_path):
    directory = tmp_path / "exported"
    aot.register_output_types(_Out)
    assert aot.enable(directory)
    yield directory
    aot.disable()


def _run():
    """One call in a new process: the entry is read from the folder again (``aot.forget``)."""
    aot.forget()
    return aot.call("test_program", _program, (jnp.arange(3.0),), {"scale": 2.0})


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_cache_entries_are_never_unpickled(cache_dir, tmp_path):
    assert float(_run().total) == 6.0
    entries = list(cache_dir.glob("*.exported"))
    assert len(entries) == 1 and not list(cache_dir.glob("*.tree"))
    marker = tmp_path / "owned.txt"
    evil = pickle.dumps(_Exploit(marker))
    entries[0].write_bytes(evil)
    (cache_dir / (entries[0].stem + ".tree")).write_bytes(evil)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        out = _run()
    assert float(out.total) == 6.0 and not marker.exists()


def test_cache_folder_is_user_only(cache_dir):
    _run()
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700
    for entry in cache_dir.iterdir():
        assert stat.S_IMODE(os.stat(entry).st_mode) & 0o077 == 0


def test_cache_entry_writable_by_others_is_refused(cache_dir):
    _run()
    (entry,) = cache_dir.glob("*.exported")
    os.chmod(entry, 0o666)
    with pytest.warns(RuntimeWarning, match="not a regular file owned by this user"):
        assert float(_run().total) == 6.0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_cache_entry_of_another_user_is_refused(cache_dir):
    _run()
    (entry,) = cache_dir.glob("*.exported")
    os.chown(entry, 65534, 65534)
    with pytest.warns(RuntimeWarning, match="not a regular file owned by this user"):
        assert float(_run().total) == 6.0


def test_truncated_cache_entry_is_recompiled(cache_dir):
    _run()
    (entry,) = cache_dir.glob("*.exported")
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="unreadable cache entry"):
        assert float(_run().total) == 6.0


def test_cache_folder_writable_by_others_is_not_used(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.warns(RuntimeWarning, match="compilation cache disabled"):
        assert cache_safety.make_private_dir(shared) is None


def test_cache_path_that_is_a_file_falls_back_to_no_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.warns(RuntimeWarning, match="compilation cache disabled"):
        assert cache_safety.make_private_dir(blocker / "jax") is None


def test_cache_off_by_environment(monkeypatch):
    from jaxlmm._config import cache_directory

    monkeypatch.setenv("JAXLMM_CACHE", "off")
    assert cache_directory() is None


def test_lme4_spelling_of_reml(data):
    ml = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data, REML=False)
    assert not ml.reml and ml.criterion == pytest.approx(
        jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data, reml=False).criterion, rel=1e-12)


def test_factor_power_and_offset_in_formulas(data):
    fit = jaxlmm.lmer("Reaction ~ I(Days^2) + factor(Days) + offset(log(Days + 1)) + (1 | Subject)", data)
    names = list(fit.fixef.index)
    assert names[:3] == ["(Intercept)", "I(Days^2)", "factor(Days)1"]
    shifted = data.assign(Reaction=data["Reaction"] - np.log(data["Days"] + 1.0))
    plain = jaxlmm.lmer("Reaction ~ I(Days^2) + factor(Days) + (1 | Subject)", shifted)
    np.testing.assert_allclose(fit.fixef.to_numpy(), plain.fixef.to_numpy(), rtol=1e-8)


def test_transform_nan_rows_are_dropped_and_counted(data):
    """I.3: log of a negative value is NaN: the row is dropped and counted, as lme4 does."""
    frame = data.assign(x=data["Days"] - 2.5)
    fit = jaxlmm.lmer("Reaction ~ log(x) + (1 | Subject)", frame)
    assert fit.nobs == 126 and "54 rows with missing values removed" in fit.messages
    assert np.isfinite(fit.fixef.to_numpy()).all()
    kept = frame[frame["x"] > 0]
    np.testing.assert_allclose(fit.fixef.to_numpy(),
                               jaxlmm.lmer("Reaction ~ log(x) + (1 | Subject)", kept).fixef.to_numpy(), rtol=1e-10)


@pytest.mark.parametrize("formula, message", [
    ("Reaction ~ log(Days) + (1 | Subject)", r"column 'log\(Days\)' of the fixed effects is -inf in row 0"),
    ("log(Reaction - Reaction) ~ Days + (1 | Subject)", r"of the response .* is -inf in row 0"),
    ("Reaction ~ Days + (0 + log(Days) | Subject)", r"random-effects term .* is -inf"),
])
def test_transform_infinite_values_are_errors(data, formula, message):
    with pytest.raises(DataError, match=message):
        jaxlmm.lmer(formula, data)


def test_infinite_column_is_an_error(data):
    frame = data.assign(x=data["x"].where(data.index != 7, np.inf))
    with pytest.raises(DataError, match=r"column 'x' of the fixed effects is inf in row 7"):
        jaxlmm.lmer("Reaction ~ x + (1 | Subject)", frame)


def test_aliased_columns_match_the_sequential_rule_and_scale():
    """I.9: rank deficiency by R's rule, without a per-column pass over the rows."""
    import time

    from jaxlmm.model.design import aliased_columns

    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 12))
    X[:, 4] = 2 * X[:, 1] - X[:, 3]
    X[:, 7] = 0.0
    X[:, 9] = X[:, 4] + X[:, 8]
    assert np.flatnonzero(aliased_columns(X)).tolist() == [4, 7, 9]
    n, levels = 20000, 1000
    code = rng.integers(0, levels, size=n)
    dummies = np.zeros((n, levels + 1))
    dummies[:, 0] = 1.0
    dummies[np.arange(n), 1 + code] = 1.0                 # intercept + every level: one aliased column
    t0 = time.perf_counter()
    aliased = aliased_columns(dummies)
    assert np.flatnonzero(aliased).tolist() == [levels] and time.perf_counter() - t0 < 20.0


@pytest.mark.parametrize("value", [250.0, 0.0])
def test_constant_response_single_fit_is_an_error(data, value):
    """I.4: a constant (or all-zero) response has no variance to estimate."""
    with pytest.raises(DataError, match=r"response 'y' is constant"):
        jaxlmm.lmer("y ~ Days + (1 | Subject)", data.assign(y=value))


def test_constant_response_in_a_batch_is_a_status(data):
    Y = pd.DataFrame({"good": data["Reaction"], "flat": 3.0, "zero": 0.0})
    batch = jaxlmm.lmer("~ Days + (1 | Subject)", data, responses=Y)
    assert batch.status.tolist() == ["converged", "constant_response", "constant_response"]
    assert "constant" in batch.diagnostics["message"].iloc[1]
    assert batch.theta.iloc[0, 0] == pytest.approx(1.1978815, rel=1e-6)


def test_cli_reads_ids_as_text_and_responses_skip_formula_columns(tmp_path, capsys):
    """I.12: ids such as 0001 match between the data and K; '*' does not fit the id or covariates as traits."""
    rng = np.random.default_rng(5)
    ids = [f"{i:04d}" for i in range(1, 31)]
    G = rng.normal(size=(30, 60))
    K = pd.DataFrame(G @ G.T / 60 + 0.05 * np.eye(30), index=ids, columns=ids)
    K.to_csv(tmp_path / "K.csv")
    data = pd.DataFrame({"id": np.repeat(ids, 2), "x": rng.normal(size=60)})
    data["t1"] = rng.normal(size=60)
    data["t2"] = rng.normal(size=60)
    data.to_csv(tmp_path / "d.csv", index=False)
    code = main(["fit", str(tmp_path / "d.csv"), "~ x + (1 | id)", "--relmat", f"id={tmp_path / 'K.csv'}",
                 "--responses", "*", "--no-cache", "--out", str(tmp_path / "out")])
    assert code == 0
    results = pd.read_csv(tmp_path / "out" / "results.csv", index_col=0)
    assert sorted(map(str, results.index)) == ["t1", "t2"]


def test_out_folder_is_written_whole_and_never_in_place(data, tmp_path, capsys):
    """I.10: non-empty --out refused without --force; --force writes the tables and leaves every other file
    (S.1: a command never deletes a file it did not write); links refused."""
    csv = tmp_path / "d.csv"
    data.to_csv(csv, index=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.csv").write_text("old")
    args = ["fit", str(csv), "Reaction ~ Days + (1 | Subject)", "--no-cache", "--out", str(out)]
    assert main(args) == 2 and "not empty" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["fixef.csv", "ranef.csv", "stale.csv", "theta.csv", "varcorr.csv"]
    link = tmp_path / "link"
    link.symlink_to(out)
    assert main(args[:-1] + [str(link), "--force"]) == 2 and "symbolic link" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_write_leaves_the_old_folder_untouched(tmp_path):
    from jaxlmm.cli.output_dir import write_tables

    out = tmp_path / "out"
    write_tables(out, {"a.csv": (pd.DataFrame({"x": [1]}), False)})

    class Broken:
        def to_csv(self, path, index):
            open(path, "w").write("half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_tables(out, {"a.csv": (pd.DataFrame({"x": [2]}), False), "b.csv": (Broken(), False)}, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["a.csv"] and pd.read_csv(out / "a.csv")["x"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("kind, message", [
    ("zero", r"is zero on the observed levels"),
    ("ones", r"only adds directions the fixed effects already have"),
])
def test_degenerate_relationship_matrix_is_refused(kind, message):
    """I.5: an all-zero K has no variance; an all-ones K is the intercept again."""
    rng = np.random.default_rng(2)
    ids = [f"i{k}" for k in range(40)]
    K = pd.DataFrame(np.zeros((40, 40)) if kind == "zero" else np.ones((40, 40)), index=ids, columns=ids)
    data = pd.DataFrame({"id": ids, "y": rng.normal(size=40)})
    with pytest.raises(DataError, match=message):
        jaxlmm.lmer("y ~ 1 + (1 | id)", data, relmat={"id": K})
    with pytest.raises(DataError, match=message):
        jaxlmm.lmer("~ 1 + (1 | id)", data, relmat={"id": K}, responses=data[["y"]])


@pytest.mark.slow   # long on 2 cores; CI runs it with the slow tests
def test_perfect_fit_says_the_residual_variance_is_at_its_bound(data):
    """I.7: an exact fit drives sigma to 0; the fit says so instead of reporting a huge theta silently."""
    codes = data["Subject"].astype("category").cat.codes.to_numpy()
    frame = data.assign(y=3.0 + 2.0 * data["Days"] + codes)
    with pytest.warns(jaxlmm.JaxlmmWarning, match=r"boundary \(residual variance\)"):
        fit = jaxlmm.lmer("y ~ Days + (1 | Subject)", frame)
    assert fit.residual_at_boundary and any("fits the data exactly" in m for m in fit.messages)
    assert not jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data).residual_at_boundary


@pytest.mark.parametrize("scale", [1e10, 1e-10])
def test_float32_does_not_depend_on_the_scale_of_the_data(data, scale):
    """I.6: y and X are brought to unit scale inside the fit and back in the results."""
    frame = data.assign(R=data["Reaction"] * scale, D=data["Days"] * 1e6)
    formula = "R ~ D + (1 | Subject)"
    f64 = jaxlmm.lmer(formula, frame)
    f32 = jaxlmm.lmer(formula, frame, dtype="float32")
    unit = jaxlmm.lmer(formula, frame.assign(R=data["Reaction"]), dtype="float32")
    assert f32.converged
    assert f32.criterion == pytest.approx(f64.criterion, rel=1e-5)
    np.testing.assert_allclose(f32.fixef.to_numpy(), f64.fixef.to_numpy(), rtol=1e-4)
    np.testing.assert_allclose(f32.theta, unit.theta, rtol=1e-9, atol=1e-12)   # the same float32 problem
    # float32's criterion carries ~1e-7 relative noise: theta, where the criterion is flat, to ~1e-2
    np.testing.assert_allclose(f32.theta, f64.theta, rtol=1e-2)


def test_fixed_factor_too_large_for_memory_is_a_memory_error(monkeypatch):
    """I.9: the size of X is checked before it is built, and reported as memory, not as a formula error."""
    import jaxlmm.model.memory

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"g": rng.integers(0, 2000, size=20000).astype(str),
                          "h": rng.integers(0, 50, size=20000).astype(str), "y": rng.normal(size=20000)})
    monkeypatch.setattr(jaxlmm.model.memory, "available_bytes", lambda device=None: 100 << 20)
    with pytest.raises(jaxlmm.MemoryLimitError, match=r"term 'g': 2000 columns"):
        jaxlmm.lmer("y ~ g + (1 | h)", frame)


def test_unwritable_cache_falls_back_with_one_warning(data, tmp_path, monkeypatch, capsys):
    """I.11: a cache path that is a file (or unwritable) gives a warning, never a traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("JAXLMM_CACHE", str(blocker / "cache"))
    from jaxlmm import enable_compilation_cache

    with pytest.warns(RuntimeWarning, match="compilation cache disabled"):
        assert enable_compilation_cache(ahead_of_time=True) is None
