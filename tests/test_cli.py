"""The command line: examples, CSV files, --out tables and errors."""

from __future__ import annotations

import subprocess
from pathlib import Path
import sys

import numpy as np
import pandas as pd
import pytest

from jaxlmm.cli.main import main


def test_example_sulfur(capsys):
    assert main(["fit", "--example", "sulfur", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "Formula: yield ~ 0 + location + (1 | block)" in out
    assert "locationGranada" in out and "REML criterion at convergence: 565.8" in out


def test_example_verbose_prints_the_plan(capsys):
    assert main(["fit", "--example", "sulfur", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "Factorization plan" in out and "block term: block" in out and "iterations, converged" in out


def test_csv_formula_and_out(tmp_path, capsys):
    src = tmp_path / "sleep.csv"
    import jaxlmm

    jaxlmm.load_dataset("sleepstudy").to_csv(src, index=False)
    out_dir = tmp_path / "res"
    code = main(["fit", str(src), "Reaction ~ Days + (Days | Subject)", "--ml", "--out", str(out_dir),
                 "--no-cache"])
    assert code == 0
    assert "maximum likelihood" in capsys.readouterr().out
    fixef = pd.read_csv(out_dir / "fixef.csv")
    assert list(fixef["term"]) == ["(Intercept)", "Days"]
    assert set(pd.read_csv(out_dir / "varcorr.csv")["grp"]) == {"Subject", "Residual"}
    assert len(pd.read_csv(out_dir / "ranef.csv")) == 36
    assert len(pd.read_csv(out_dir / "theta.csv")) == 3


def test_factors_option(tmp_path, capsys):
    import jaxlmm

    src = tmp_path / "sulfur.csv"
    jaxlmm.load_dataset("sulfur").to_csv(src, index=False)
    assert main(["fit", str(src), "yield ~ location + trt + (1 | block)", "--factors", "trt,block",
                 "--no-cache"]) == 0
    assert "trt24" in capsys.readouterr().out


def test_errors_are_messages(tmp_path, capsys):
    import jaxlmm

    src = tmp_path / "s.csv"
    jaxlmm.load_dataset("sleepstudy").to_csv(src, index=False)
    assert main(["fit", str(src), "Reaction ~ Dayz + (1 | Subject)", "--no-cache"]) == 2
    assert "column 'Dayz'" in capsys.readouterr().err
    assert main(["fit", "--example", "nosuch"]) == 2
    assert "--example: no shipped dataset 'nosuch'" in capsys.readouterr().err


def test_help_documents_commands():
    out = subprocess.run([sys.executable, "-m", "jaxlmm.cli.main", "fit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for piece in ["--example", "--ml", "--out", "--factors", "sleepstudy", "sulfur"]:
        assert piece in out.stdout


def test_batch_responses(tmp_path, capsys):
    import numpy as np

    import jaxlmm

    data = jaxlmm.load_dataset("sleepstudy")
    rng = np.random.default_rng(3)
    for i in range(3):
        data[f"trait{i}"] = data["Reaction"] + rng.normal(0, 20, len(data))
    data.loc[:5, "trait1"] = np.nan
    src = tmp_path / "traits.csv"
    data.to_csv(src, index=False)
    out_dir = tmp_path / "res"
    assert main(["fit", str(src), "~ Days + (1 | Subject)", "--responses", "trait*", "--out", str(out_dir),
                 "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert "3 traits; 3 converged" in text
    for name in ["results.csv", "fixef.csv", "se.csv", "theta.csv", "varcorr.csv", "diagnostics.csv"]:
        assert (out_dir / name).exists()
    fixef = pd.read_csv(out_dir / "fixef.csv", index_col=0)
    assert list(fixef.index) == ["trait0", "trait1", "trait2"]
    diag = pd.read_csv(out_dir / "diagnostics.csv", index_col=0)
    assert diag.loc["trait1", "nobs"] == len(data) - 6


def test_relmat_batch_and_single(tmp_path, capsys):
    ref = Path(__file__).parent / "reference" / "relmat"
    data = pd.read_csv(ref / "relmat_gblup80.csv")
    data["trait_b"] = data["y"] * 2.0 + 1.0
    data.loc[[4, 9], "trait_b"] = np.nan
    data["trait_a"] = data["y"]
    src = tmp_path / "traits.csv"
    data.to_csv(src, index=False)
    out_dir = tmp_path / "out"
    assert main(["fit", str(src), "~ 1 + (1 | id)", "--relmat", f"id={ref / 'K_gblup80.csv'}",
                 "--responses", "trait*", "--out", str(out_dir), "--no-cache"]) == 0
    results = pd.read_csv(out_dir / "results.csv", index_col=0)
    assert list(results.index) == ["trait_b", "trait_a"]
    assert (results["path"] == "spectral").all()
    assert results.loc["trait_a", "h2"] == pytest.approx(0.383757310714996, abs=1e-4)
    assert main(["fit", str(src), "y ~ 1 + (1 | id)", "--relmat", f"id={ref / 'K_gblup80.csv'}", "--no-cache"]) == 0
    assert "Heritability h2 = 0.3838" in capsys.readouterr().out
    assert main(["fit", str(src), "y ~ 1 + (1 | id)", "--relmat", "id", "--no-cache"]) == 2
    assert "--relmat expects GROUP=FILE.csv" in capsys.readouterr().err


def test_command_exits_fast_with_its_status(tmp_path):
    """``python -m jaxlmm`` (``cli.run``): the summary is written and flushed before the fast exit, the
    exit status is main's (0), an argparse error's (2) or a failed fit's (2)."""
    ok = subprocess.run([sys.executable, "-m", "jaxlmm", "fit", "--example", "sleepstudy", "--no-cache"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "Linear mixed model fit by REML" in ok.stdout and ok.stdout.rstrip().endswith("-0.138")
    bad = subprocess.run([sys.executable, "-m", "jaxlmm", "fit", "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "jaxlmm", "fit", str(tmp_path / "nope.csv"), "y ~ x + (1 | g)"],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "error" in missing.stderr
