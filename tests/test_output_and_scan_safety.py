"""Output folders and scans that cannot hurt the user (issue S, items 1 and part of 3).

* ``--force`` never deletes or overwrites a file the command did not write (inputs inside ``--out``
  survive, ``--out .`` works, a file the command would write that is one of its inputs is refused,
  a failed write leaves the old files, links are replaced, never followed);
* a scan does not depend on the scale of K, and a lambda at an end of its search range is not
  called ``converged``;
* ``snp_chunk`` and ``trait_chunk`` are positive integers;
* traits whose names make the same file name (``a/b`` and ``a_b``) get distinct files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from conftest import write_plink
from jaxlmm.cli.main import main
from jaxlmm.errors import JaxlmmError
from jaxlmm.cli.output_dir import TEMP_PREFIX, OutputDirError, write_tables

pytestmark = pytest.mark.usefixtures("x64")

N_IND, N_SNP = 80, 24


# ---------------------------------------------------------------- small synthetic inputs

@pytest.fixture(scope="module")
def genotypes():
    """80 individuals in 8 families (so K has structure), 24 markers (one of them with missing values)."""
    rng = np.random.default_rng(11)
    family = np.repeat(np.arange(8), 10)
    p = rng.uniform(0.1, 0.9, size=(8, N_SNP))
    G = rng.binomial(2, p[family]).astype(float)
    G[rng.choice(N_IND, 5, replace=False), 3] = np.nan
    ids = [f"i{k:03d}" for k in range(N_IND)]
    return pd.DataFrame(G, index=pd.Index(ids, name="id"), columns=[f"rs{j}" for j in range(N_SNP)])


@pytest.fixture(scope="module")
def relmat(genotypes):
    return jaxlmm.grm(genotypes)


@pytest.fixture(scope="module")
def pheno(genotypes, relmat):
    """``y`` (h2 ~ 0.5, effect of rs0), ``noise`` (no relatedness) and ``a/b``, ``a_b`` (two traits whose
    sanitized names collide)."""
    rng = np.random.default_rng(12)
    n = len(genotypes)
    L = np.linalg.cholesky(relmat.to_numpy() + 1e-6 * np.eye(n))
    g = L @ rng.normal(size=n)
    x0 = np.nan_to_num(genotypes["rs0"].to_numpy())
    y = 0.4 * x0 + g + rng.normal(size=n)
    return pd.DataFrame({"id": genotypes.index, "y": y, "noise": rng.normal(size=n),
                         "a/b": g + rng.normal(size=n), "a_b": 2.0 * rng.normal(size=n) + g})


@pytest.fixture
def scan_inputs(tmp_path, genotypes, relmat, pheno):
    """The scan's input files inside ``tmp_path / "work"``: geno.bed/.bim/.fam, K.csv and pheno.csv."""
    work = tmp_path / "work"
    work.mkdir()
    write_plink(work / "geno", genotypes)
    relmat.rename_axis("id").to_csv(work / "K.csv")
    pheno.to_csv(work / "pheno.csv", index=False)
    return work


def _scan_args(work, out, *extra, prefix=None):
    prefix = work if prefix is None else prefix
    return ["scan", "--bfile", str(prefix / "geno"), "--pheno", str(prefix / "pheno.csv"),
            "--relmat", f"id={prefix / 'K.csv'}", "--responses", "y", "--out", str(out), "--no-plots",
            "--snp-chunk", "32", *extra]


def _contents(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _no_leftovers(*folders):
    for folder in folders:
        left = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        assert not left, left


# ---------------------------------------------------------------- item 1: --out and --force

def test_fit_force_keeps_the_inputs_inside_out(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    jaxlmm.load_dataset("sleepstudy").to_csv(out / "sleep.csv", index=False)
    (out / "notes.txt").write_text("mine")
    (out / "fixef.csv").write_text("old")
    before = _contents(out)
    args = ["fit", str(out / "sleep.csv"), "Reaction ~ Days + (1 | Subject)", "--no-cache", "--out", str(out)]
    assert main(args) == 2 and "not empty" in capsys.readouterr().err
    assert _contents(out) == before                      # refused: nothing written
    assert main(args + ["--force"]) == 0
    after = _contents(out)
    assert after["sleep.csv"] == before["sleep.csv"] and after["notes.txt"] == b"mine"
    assert set(after) == {"sleep.csv", "notes.txt", "fixef.csv", "ranef.csv", "varcorr.csv", "theta.csv"}
    assert after["fixef.csv"] != b"old" and b"Days" in after["fixef.csv"]
    _no_leftovers(out, tmp_path)
    # the data file named like a table this command writes: refused before the fit, even with --force
    (out / "sleep.csv").rename(out / "theta.csv")
    before = _contents(out)
    args[1] = str(out / "theta.csv")
    assert main(args + ["--force"]) == 2
    err = capsys.readouterr().err
    assert "theta.csv" in err and "input" in err
    assert _contents(out) == before


def test_scan_force_keeps_the_inputs_inside_out(scan_inputs, capsys):
    work = scan_inputs
    (work / "y.assoc.csv").write_text("old")
    before = _contents(work)
    assert main(_scan_args(work, work)) == 2 and "not empty" in capsys.readouterr().err
    assert _contents(work) == before
    assert main(_scan_args(work, work, "--force")) == 0
    after = _contents(work)
    for name in ("geno.bed", "geno.bim", "geno.fam", "K.csv", "pheno.csv"):
        assert after[name] == before[name], name
    assert set(after) == set(before) | {"summary.csv"}
    assert pd.read_csv(work / "y.assoc.csv")["snp"].tolist() == [f"rs{j}" for j in range(N_SNP)]
    _no_leftovers(work, work.parent)


def test_out_dot_with_force(scan_inputs, monkeypatch, capsys):
    """``--out .`` (the current folder, full of the inputs) works for fit and scan, twice, and leaves no
    temporary or ``.old`` folder behind."""
    from pathlib import Path

    monkeypatch.chdir(scan_inputs)
    jaxlmm.load_dataset("sleepstudy").to_csv("sleep.csv", index=False)
    inputs = _contents(Path("."))
    fit = ["fit", "sleep.csv", "Reaction ~ Days + (1 | Subject)", "--no-cache", "--out", ".", "--force"]
    for _ in range(2):
        assert main(fit) == 0
        assert main(_scan_args(None, ".", "--force", prefix=Path("."))) == 0
    after = _contents(Path("."))
    assert {k: after[k] for k in inputs} == inputs
    assert set(after) == set(inputs) | {"fixef.csv", "ranef.csv", "varcorr.csv", "theta.csv", "y.assoc.csv",
                                        "summary.csv"}
    _no_leftovers(scan_inputs, scan_inputs.parent)
    assert not [p for p in scan_inputs.iterdir() if p.is_dir()]


def test_a_file_to_write_that_is_an_input_is_refused(scan_inputs, capsys):
    """--pheno called summary.csv inside --out: refused, with or without --force, naming the file."""
    work = scan_inputs
    (work / "pheno.csv").rename(work / "summary.csv")
    before = _contents(work)
    args = _scan_args(work, work, "--force")
    args[args.index("--pheno") + 1] = str(work / "summary.csv")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "summary.csv" in err and "input" in err and "Traceback" not in err
    assert _contents(work) == before
    # the same file through a link, and directly through write_tables
    link = work.parent / "link.csv"
    link.symlink_to(work / "summary.csv")
    with pytest.raises(OutputDirError, match=r"summary\.csv.*input"):
        write_tables(work, {"summary.csv": (pd.DataFrame({"x": [1]}), False)}, force=True, inputs=[link])
    assert _contents(work) == before


def test_failed_write_leaves_the_old_files(tmp_path):
    out = tmp_path / "out"
    write_tables(out, {"a.csv": (pd.DataFrame({"x": [1]}), False), "b.csv": (pd.DataFrame({"y": [1]}), False)})
    (out / "keep.txt").write_text("mine")

    class Broken:
        def to_csv(self, path, index):
            open(path, "w").write("half")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_tables(out, {"a.csv": (pd.DataFrame({"x": [2]}), False), "b.csv": (Broken(), False)}, force=True)
    assert pd.read_csv(out / "a.csv")["x"].tolist() == [1] and pd.read_csv(out / "b.csv")["y"].tolist() == [1]
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "b.csv", "keep.txt"]
    # a folder this call would have created is not left behind
    with pytest.raises(OSError, match="disk full"):
        write_tables(tmp_path / "new", {"b.csv": (Broken(), False)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_links_are_replaced_never_followed(tmp_path):
    victim = tmp_path / "victim.csv"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.csv").symlink_to(victim)
    write_tables(out, {"a.csv": (pd.DataFrame({"x": [1]}), False)}, force=True)
    assert victim.read_text() == "precious"
    assert not (out / "a.csv").is_symlink() and pd.read_csv(out / "a.csv")["x"].tolist() == [1]
    link = tmp_path / "link"
    link.symlink_to(out)
    with pytest.raises(OutputDirError, match="symbolic link"):
        write_tables(link, {"a.csv": (pd.DataFrame({"x": [2]}), False)}, force=True)
    (out / "b.csv").mkdir()
    with pytest.raises(OutputDirError, match="is a folder"):
        write_tables(out, {"b.csv": (pd.DataFrame({"x": [2]}), False)}, force=True)
    assert pd.read_csv(out / "a.csv")["x"].tolist() == [1]
    assert not [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]


# ---------------------------------------------------------------- item 2: the scale of K

def _scan(pheno, genotypes, K, responses=("y",), **kw):
    return jaxlmm.scan("~ 1 + (1 | id)", pheno, genotypes=genotypes, relmat={"id": K}, responses=list(responses),
                       snp_chunk=32, **kw)


def test_scan_does_not_depend_on_the_scale_of_K(pheno, genotypes, relmat):
    """K, K x 1e8, K x 1e50 and K x 1e-8: the same p-values and statuses, lambda / the factor."""
    base = _scan(pheno, genotypes, relmat)
    ok = base["status"] == "converged"
    assert ok.sum() == N_SNP and base["lambda"].between(0.05, 20).all()    # an interior optimum everywhere
    for factor in (1e8, 1e50, 1e-8):
        scaled = _scan(pheno, genotypes, relmat * factor)
        assert (scaled["status"] == base["status"]).all(), factor
        for test in ("wald", "lrt", "score"):
            dev = np.abs(np.log10(scaled[f"p_{test}"]) - np.log10(base[f"p_{test}"]))
            assert dev.max() < 1e-8, (factor, test, dev.max())
        np.testing.assert_allclose(scaled["lambda"] * factor, base["lambda"], rtol=1e-8)
        np.testing.assert_allclose(scaled["beta"], base["beta"], rtol=1e-8)


def test_lambda_at_an_end_of_the_range_is_not_converged(pheno, genotypes, relmat):
    """No relatedness (``noise``): REML lambda ~0, at the lower end -- at every scale of K.  A trait that is
    all genetic (no residual): at the upper end.  Neither is called converged; both keep their statistics."""
    from jaxlmm.gwas.association import relmat_scale

    rng = np.random.default_rng(3)
    L = np.linalg.cholesky(relmat.to_numpy() + 1e-9 * np.eye(N_IND))
    frame = pheno.assign(genetic=L @ rng.normal(size=N_IND))
    for factor in (1.0, 1e8):
        K = relmat * factor
        res = _scan(frame, genotypes, K, responses=("noise", "genetic"))
        noise, genetic = res[res["trait"] == "noise"], res[res["trait"] == "genetic"]
        assert (noise["status"] == "lambda_at_lower_bound").sum() >= N_SNP // 2
        low = noise[noise["status"] == "lambda_at_lower_bound"]
        np.testing.assert_allclose(low["lambda"], 1e-5 / relmat_scale(K.to_numpy()), rtol=1e-8)
        assert (genetic["status"] == "lambda_at_upper_bound").all()
        assert np.isfinite(res[["beta", "se", "p_wald", "p_lrt", "p_score"]].to_numpy()).all()
        # the null model's lambda at an end (mode="null" reports it): the same statuses
        null = _scan(frame, genotypes, K, responses=("noise", "genetic"), mode="null")
        assert set(null.loc[null["trait"] == "noise", "status"]) == {"lambda_at_lower_bound"}
        assert set(null.loc[null["trait"] == "genetic", "status"]) == {"lambda_at_upper_bound"}


# ---------------------------------------------------------------- item 3: chunk sizes

@pytest.mark.parametrize("name, value", [("snp_chunk", -5), ("snp_chunk", 0), ("snp_chunk", 2.5),
                                         ("snp_chunk", True), ("trait_chunk", -1), ("trait_chunk", "4")])
def test_chunk_sizes_must_be_positive_integers(pheno, genotypes, relmat, name, value):
    with pytest.raises(JaxlmmError, match=rf"{name} must be a positive integer"):
        jaxlmm.scan("~ 1 + (1 | id)", pheno, genotypes=genotypes, relmat={"id": relmat}, responses=["y"],
                    **{name: value})


@pytest.mark.parametrize("flag", ["--snp-chunk", "--trait-chunk"])
def test_cli_chunk_sizes_must_be_positive(scan_inputs, tmp_path, flag, capsys):
    args = _scan_args(scan_inputs, tmp_path / "out")
    args = [a for a in args if a not in ("--snp-chunk", "32")] + [flag, "-3"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"jaxlmm: error: {flag} must be a positive integer, got -3"
    assert not (tmp_path / "out").exists()


def test_fit_cli_chunk_size_must_be_positive(capsys):
    assert main(["fit", "--example", "sleepstudy", "--responses", "Reaction", "--chunk-size", "0", "--no-cache"]) == 2
    assert capsys.readouterr().err.strip() == "jaxlmm: error: --chunk-size must be a positive integer, got 0"


# ---------------------------------------------------------------- item 4: per-trait file names

def test_colliding_trait_names_get_distinct_files(scan_inputs, tmp_path):
    out = tmp_path / "out"
    args = _scan_args(scan_inputs, out)
    args[args.index("--responses") + 1] = "a/b,a_b"
    assert main(args) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["trait"]) == ["a/b", "a_b"]
    files = dict(zip(summary["trait"], summary["assoc_file"]))
    assert files["a_b"] == "a_b.assoc.csv" and files["a/b"].startswith("a_b-") and files["a/b"] != files["a_b"]
    assert sorted(p.name for p in out.iterdir()) == sorted(["summary.csv", *files.values()])
    for trait, name in files.items():
        table = pd.read_csv(out / name)
        assert set(table["trait"]) == {trait} and len(table) == N_SNP


def test_file_stems_are_safe_and_unique():
    from jaxlmm.cli.scan import file_stems

    names = ["a/b", "a_b", "A_B", "..", ".hidden", "", "x" * 300, "ok-1.2"]
    stems = file_stems(names)
    assert stems[1] == "a_b" and stems[-1] == "ok-1.2"
    assert len({s.casefold() for s in stems}) == len(names)
    assert all(s and not s.startswith(".") and "/" not in s and len(s) <= 100 for s in stems)
    assert file_stems(names) == stems                   # the same names, the same files
