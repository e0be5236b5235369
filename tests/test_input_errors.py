"""Bad input gets one clear sentence, never a library's own error (issue S, items 6 and 7).

Item 6: PLINK files (a .bed without the magic number, a malformed .bim line, a variant id twice),
CSV files (empty, a folder, an unterminated quote, ragged rows, a column name twice), data frames
with a column name twice, and arguments of the wrong type or value (``relmat``, ``dispformula``,
``nsim``, ``max_iter``), and ``fit_function``'s case weights refused where ``lmer`` refuses.

Item 7: values that must not pass silently: NaN weights and offsets (dropped and counted, as lme4's
``na.action``), a new level of a fixed-effect factor in ``predict``'s newdata (an error), and the
command line's ``--relmat`` and ``--responses`` mistakes.

At the command line each is exit status 2 and one line on standard error, without a traceback.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from conftest import write_plink
from jaxlmm.cli.main import main
from jaxlmm.errors import ArgumentError, DataError

pytestmark = pytest.mark.usefixtures("x64")

N_IND, N_SNP = 20, 6


@pytest.fixture(scope="module")
def data():
    """24 rows, 6 groups of 4: a response, a covariate, a two-level factor, two traits and a text column."""
    rng = np.random.default_rng(5)
    n = 24
    effect = np.repeat(rng.normal(scale=2.0, size=6), 4)
    return pd.DataFrame({"y": effect + rng.normal(size=n), "x": rng.normal(size=n),
                         "g": np.repeat(list("abcdef"), 4), "f": np.tile(["P", "Q"], 12),
                         "t1": effect + rng.normal(size=n), "t2": effect + rng.normal(size=n), "note": ["text"] * n})


@pytest.fixture(scope="module")
def genotypes():
    rng = np.random.default_rng(6)
    ids = [f"i{k:02d}" for k in range(N_IND)]
    return pd.DataFrame(rng.integers(0, 3, size=(N_IND, N_SNP)).astype(float), index=pd.Index(ids, name="id"),
                        columns=[f"rs{j}" for j in range(N_SNP)])


@pytest.fixture(scope="module")
def relmat(genotypes):
    K = jaxlmm.grm(genotypes)
    return K + 0.1 * np.eye(N_IND)


@pytest.fixture
def scan_files(tmp_path, genotypes, relmat):
    """geno.bed/.bim/.fam, K.csv and pheno.csv (id, y, cov, note) in ``tmp_path``."""
    write_plink(tmp_path / "geno", genotypes)
    relmat.rename_axis("id").to_csv(tmp_path / "K.csv")
    rng = np.random.default_rng(7)
    pd.DataFrame({"id": genotypes.index, "y": rng.normal(size=N_IND), "cov": rng.normal(size=N_IND),
                  "note": ["x"] * N_IND}).to_csv(tmp_path / "pheno.csv", index=False)
    return tmp_path


def _scan(folder, *extra, bfile="geno", relmat="id=K.csv", responses=("--responses", "y")):
    return ["scan", "--bfile", str(folder / bfile), "--pheno", str(folder / "pheno.csv"),
            "--relmat", relmat if "=" not in relmat else relmat.replace("=", f"={folder}/", 1),
            *responses, "--out", str(folder / "out"), "--no-plots", *extra]


def _one_line_error(capsys, args, *pieces):
    """``main(args)`` fails with status 2 and one line on standard error holding every piece."""
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxlmm: error: "), err
    assert "Traceback" not in err
    for piece in pieces:
        assert piece in lines[0], (piece, lines[0])
    return lines[0]


# ---------------------------------------------------------------- item 6: PLINK files

def test_bed_with_bad_magic_number(scan_files, capsys):
    bed = scan_files / "geno.bed"
    raw = bytearray(bed.read_bytes())
    raw[0] = 0
    bed.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"geno.bed is not a PLINK .bed file: .*magic number 6c 1b"):
        jaxlmm.read_plink(scan_files / "geno")
    _one_line_error(capsys, _scan(scan_files), "--bfile", "geno.bed", "magic number")


def test_bed_that_is_a_folder(scan_files):
    (scan_files / "geno.bed").unlink()
    (scan_files / "geno.bed").mkdir()
    with pytest.raises(DataError, match=r"geno.bed' is not a file"):
        jaxlmm.read_plink(scan_files / "geno")


@pytest.mark.parametrize("line, message", [
    ("1\trs1\t0", r"line 2 of geno.bim has 3 fields but a .bim line has 6"),
    ("1\trs1\t0\tXYZ\tA\tG", r"line 2 of geno.bim: the base-pair position \(field 4\) is 'XYZ'"),
    ("1\trs1\tnope\t2000\tA\tG", r"line 2 of geno.bim: the position in cM \(field 3\) is 'nope'"),
    ("1\trs0\t0\t2000\tA\tG", r"line 2 of geno.bim repeats the variant id 'rs0' of line 1"),
])
def test_malformed_bim_line(scan_files, capsys, line, message):
    bim = scan_files / "geno.bim"
    lines = bim.read_text().splitlines()
    lines[1] = line
    bim.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        jaxlmm.read_plink(scan_files / "geno")
    _one_line_error(capsys, _scan(scan_files), "--bfile", "line 2 of geno.bim")


def test_bim_separated_by_spaces_is_read(scan_files, genotypes):
    bim = scan_files / "geno.bim"
    bim.write_text(bim.read_text().replace("\t", "  "))
    geno = jaxlmm.read_plink(scan_files / "geno")
    assert list(geno.snps["snp"]) == list(genotypes.columns)
    np.testing.assert_array_equal(geno.dosages().to_numpy(), genotypes.to_numpy())


def test_malformed_fam_line(scan_files):
    fam = scan_files / "geno.fam"
    lines = fam.read_text().splitlines()
    lines[3] = "only_one"
    fam.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 4 of geno.fam has 1 field but a .fam line has 6"):
        jaxlmm.read_plink(scan_files / "geno")


def test_duplicate_marker_ids_in_a_genotype_frame(genotypes, relmat):
    frame = genotypes.rename(columns={"rs2": "rs0"})
    pheno = pd.DataFrame({"id": genotypes.index, "y": np.arange(N_IND, dtype=float)})
    with pytest.raises(DataError, match=r"genotype data frame has the marker column 'rs0' twice"):
        jaxlmm.scan("y ~ 1 + (1 | id)", pheno, genotypes=frame, relmat={"id": relmat})


# ---------------------------------------------------------------- item 6: CSV files at the command line

@pytest.mark.parametrize("text, pieces", [
    ("", ["bad.csv", "is empty"]),
    ("y,x,g\n", ["bad.csv", "no data rows"]),
    ('y,x,g\n1,2,a\n3,"4,b\n5,6,c\n', ["bad.csv", "quoted field on line 3 is never closed"]),
    ("y,x,g\n1,2,a\n3,4,b,9\n", ["line 3 of data file", "bad.csv", "has 4 fields but the header (line 1) has 3"]),
    ("y,x,g\n1,2,a,7\n3,4,b,8\n", ["line 2 of data file", "has 4 fields"]),
    ("y,x,g\n1,2,a\n3,4\n5,6,b\n", ["line 3 of data file", "has 2 fields"]),
    ("y,x,x,g\n1,2,3,a\n", ["bad.csv", "column name 'x' 2 times"]),
    (b"y,x,g\n1,2,\xff\n", ["bad.csv", "not UTF-8", "line 2"]),
])
def test_unreadable_csv(tmp_path, capsys, text, pieces):
    path = tmp_path / "bad.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    _one_line_error(capsys, ["fit", str(path), "y ~ x + (1 | g)", "--no-cache"], *pieces)


def test_folder_or_missing_file_as_data(tmp_path, capsys):
    _one_line_error(capsys, ["fit", str(tmp_path), "y ~ x + (1 | g)", "--no-cache"], "is not a file")
    _one_line_error(capsys, ["fit", str(tmp_path / "no.csv"), "y ~ x + (1 | g)", "--no-cache"], "no.csv", "not found")


def test_unreadable_pheno_and_relmat_files(scan_files, capsys):
    (scan_files / "pheno.csv").write_text("")
    _one_line_error(capsys, _scan(scan_files), "--pheno file", "pheno.csv", "is empty")
    (scan_files / "pheno.csv").write_text("id,y\ni00,1\n")
    (scan_files / "K.csv").write_text('id,i00\n"i00,1\n')
    _one_line_error(capsys, _scan(scan_files), "--relmat file", "K.csv", "never closed")
    (scan_files / "K.csv").write_text("id,i00\ni00,one\n")
    _one_line_error(capsys, _scan(scan_files), "--relmat id=", "K.csv", "column 'i00' is not numeric")


# ---------------------------------------------------------------- item 6: data frames and arguments

def test_duplicated_column_names_in_a_data_frame(data):
    frame = data[["y", "x", "g", "t1"]].set_axis(["y", "x", "g", "x"], axis=1)
    with pytest.raises(DataError, match=r"data has 2 columns named 'x'; column names must be unique"):
        jaxlmm.lmer("y ~ x + (1 | g)", frame)


def test_relmat_must_name_its_group(data, genotypes, relmat):
    pheno = pd.DataFrame({"id": genotypes.index, "y": np.arange(N_IND, dtype=float)})
    with pytest.raises(ArgumentError, match=r"relmat must be a dict .*relmat=\{'id': K\}; got a DataFrame"):
        jaxlmm.scan("y ~ 1 + (1 | id)", pheno, genotypes=genotypes, relmat=relmat)
    with pytest.raises(ArgumentError, match=r"relmat must be a dict .* got a list"):
        jaxlmm.lmer("y ~ 1 + (1 | id)", pheno, relmat=[relmat])


def test_dispformula_must_be_a_string(data):
    with pytest.raises(ArgumentError, match=r"dispformula must be a string.* got a list \(\['x'\]\)"):
        jaxlmm.lmer("y ~ x + (1 | g)", data, dispformula=["x"])


@pytest.mark.parametrize("value", [-1, 2.5, True, "10"])
def test_max_iter_is_a_non_negative_integer(data, value):
    message = rf"max_iter must be a non-negative integer, got {value!r}"
    with pytest.raises(ArgumentError, match=message.replace("(", r"\(").replace(".", r"\.")):
        jaxlmm.lmer("y ~ x + (1 | g)", data, max_iter=value)
    with pytest.raises(ArgumentError, match="max_iter must be a non-negative integer"):
        jaxlmm.lmer("~ x + (1 | g)", data, responses=["t1", "t2"], max_iter=value)
    with pytest.raises(ArgumentError, match="max_iter must be a non-negative integer"):
        jaxlmm.fit_function("y ~ x + (1 | g)", data, max_iter=value)


@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_chunk_size_is_a_positive_integer(data, value):
    with pytest.raises(ArgumentError, match=rf"chunk_size must be a positive integer, got {value!r}"):
        jaxlmm.lmer("~ x + (1 | g)", data, responses=["t1", "t2"], chunk_size=value)


def test_nsim_is_a_positive_integer(data):
    fit = jaxlmm.lmer("y ~ x + (1 | g)", data)
    for value in (-1, 0, 2.5):
        with pytest.raises(ArgumentError, match=rf"nsim must be a positive integer, got {value!r}"):
            fit.bootstrap(value)
    with pytest.raises(ArgumentError, match="nsim must be a positive integer"):
        fit.simulate(0)
    with pytest.raises(ArgumentError, match="nsim must be a positive integer"):
        fit.confint(method="boot", nsim=-1)


def test_fit_function_refuses_case_weights_lmer_would_refuse(data):
    f = jaxlmm.fit_function("y ~ x + (1 | g)", data)
    one_group = (data["g"] == "a").to_numpy()
    with pytest.raises(DataError) as lmer_error:
        jaxlmm.lmer("y ~ x + (1 | g)", data[one_group])
    with pytest.raises(DataError, match="on the rows the weights and case weights keep") as ours:
        f(f.y, case_weights=one_group.astype(float))
    # the same check as lmer's (data_checks._check_levels), with where it applies added
    assert str(ours.value).replace(" on the rows the weights and case weights keep", "") == str(lmer_error.value)
    two = np.isin(data["g"], ["a", "b"]).astype(float)
    assert f(f.y, case_weights=two).theta.shape == (1,)           # two groups of 4: lmer fits it too
    with pytest.raises(DataError, match=r"rank deficient \(column 'fQ'\)"):
        g = jaxlmm.fit_function("y ~ f + (1 | g)", data)
        g(g.y, case_weights=(data["f"] == "P").to_numpy(float))


# ---------------------------------------------------------------- item 7: NaN weights and offsets

def test_missing_weight_or_offset_drops_the_row_and_counts_it(data, tmp_path, capsys):
    frame = data.assign(w=1.0, o=0.0)
    frame.loc[2, "w"] = np.nan
    frame.loc[[5, 7], "o"] = np.nan
    fit = jaxlmm.lmer("y ~ x + (1 | g)", frame, weights="w", offset="o")
    assert fit.nobs == 21
    assert "3 rows with missing values removed (1 with a missing weight, 2 with a missing offset)" in fit.messages
    kept = jaxlmm.lmer("y ~ x + (1 | g)", data.drop(index=[2, 5, 7]))        # lme4: na.omit of those rows
    np.testing.assert_allclose(fit.fixef.to_numpy(), kept.fixef.to_numpy(), rtol=1e-6)
    assert jaxlmm.fit_function("y ~ x + (1 | g)", frame, weights="w", offset="o").nobs == 21
    batch = jaxlmm.lmer("~ x + (1 | g)", frame, responses=["t1", "t2"], weights="w", offset="o")
    assert (batch.diagnostics["nobs"] == 21).all()
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert main(["fit", str(tmp_path / "d.csv"), "y ~ x + (1 | g)", "--weights", "w", "--no-cache"]) == 0
    assert "1 row with missing values removed (1 with a missing weight)" in capsys.readouterr().out


# ---------------------------------------------------------------- item 7: new factor levels in newdata

@pytest.mark.filterwarnings("ignore:Data has categories outside")     # formulaic's, on the NaN level
def test_predict_refuses_a_new_level_of_a_fixed_effect_factor(data):
    fit = jaxlmm.lmer("y ~ x + f + (1 | g)", data)
    new = data.iloc[:3].assign(f=["P", "R", "Q"])
    with pytest.raises(DataError, match=r"newdata: factor 'f' has new level 'R' \(row 1\); the fit's levels "
                                        r"are 'P', 'Q'"):
        fit.predict(new)
    fit_c = jaxlmm.lmer("y ~ x + C(f) + (1 | g)", data)
    with pytest.raises(DataError, match=r"factor 'f' has new level 'R'"):
        fit_c.predict(new)
    # a missing factor value is NA (lme4's na.pass), not the reference level
    pred = fit.predict(data.iloc[:3].assign(f=[data["f"][0], np.nan, data["f"][2]]))
    assert np.isnan(pred[1]) and np.allclose(pred[[0, 2]], fit.predict(data.iloc[:3])[[0, 2]])


# ---------------------------------------------------------------- item 7: --relmat and --responses

def test_cli_relmat_mistakes(data, tmp_path, capsys, scan_files):
    data.to_csv(tmp_path / "d.csv", index=False)
    fit = ["fit", str(tmp_path / "d.csv"), "y ~ x + (1 | g)", "--no-cache"]
    _one_line_error(capsys, fit + ["--relmat", "K.csv"], "--relmat expects GROUP=FILE.csv", "id=K.csv", "'K.csv'")
    _one_line_error(capsys, fit + ["--relmat", "g=A.csv", "--relmat", "g=B.csv"],
                    "--relmat is given twice for the grouping factor 'g' (A.csv and B.csv)")
    _one_line_error(capsys, _scan(scan_files, relmat=str(scan_files / "K.csv")), "--relmat expects GROUP=FILE.csv")
    _one_line_error(capsys, _scan(scan_files, relmat="ident=K.csv"), "--relmat ident=...", "'ident' not in pheno.csv")


def test_cli_responses_mistakes(data, tmp_path, capsys, scan_files):
    data.to_csv(tmp_path / "d.csv", index=False)
    def fit(formula, pattern):
        return ["fit", str(tmp_path / "d.csv"), formula, "--no-cache", "--responses", pattern]

    _one_line_error(capsys, fit("y ~ x + (1 | g)", "t*"), "--responses", "no left side", "'~ x + (1 | g)'")
    _one_line_error(capsys, fit("~ x + (1 | g)", "x"), "--responses 'x' matches only columns that cannot be traits",
                    "'x' is in the formula")
    _one_line_error(capsys, fit("~ x + (1 | g)", "note"), "--responses 'note' matches the non-numeric column 'note'")
    _one_line_error(capsys, fit("~ x + (1 | g)", "zz*"), "--responses 'zz*' matches no column of d.csv")
    _one_line_error(capsys, _scan(scan_files, "--covariates", "cov", responses=("--responses", "cov")),
                    "'cov' is a --covariates column")
    _one_line_error(capsys, _scan(scan_files, responses=("--responses", "id")), "'id' is the id column")
    _one_line_error(capsys, _scan(scan_files, responses=()), "non-numeric column 'note'", "--responses")


def test_cli_option_columns_and_values(data, tmp_path, capsys):
    data.to_csv(tmp_path / "d.csv", index=False)
    fit = ["fit", str(tmp_path / "d.csv"), "y ~ x + (1 | g)", "--no-cache"]
    _one_line_error(capsys, fit + ["--weights", "zz"], "--weights: column 'zz' not in d.csv")
    _one_line_error(capsys, fit + ["--offset", "note"], "--offset: column 'note' of d.csv is not numeric")
    _one_line_error(capsys, fit + ["--factors", "qq"], "--factors: column 'qq' not in d.csv")
    _one_line_error(capsys, ["fit", "--example", "nosuch", "--no-cache"], "--example", "'nosuch'")
    _one_line_error(capsys, fit + ["--relmat", "g=" + str(tmp_path / "none.csv")], "--relmat file", "not found")
    _one_line_error(capsys, ["fit", str(tmp_path / "d.csv"), "--no-cache"], "fit needs DATA.csv and FORMULA")
    _one_line_error(capsys, fit + ["--responses", "t*", "--chunk-size", "0"], "--chunk-size must be a positive integer")


def test_the_command_prints_one_line_and_exits_2(tmp_path):
    import subprocess
    import sys

    (tmp_path / "empty.csv").write_text("")
    out = subprocess.run([sys.executable, "-m", "jaxlmm", "fit", str(tmp_path / "empty.csv"), "y ~ x + (1 | g)",
                          "--no-cache"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [f"jaxlmm: error: data file {str(tmp_path / 'empty.csv')!r} is empty: "
                                               "a CSV file needs a header row of column names"]
