"""Marker genotypes for association scans: PLINK .bed/.bim/.fam files or a data frame.

A marker's value for an individual is its dosage, the number of copies of the
.bim's ``allele1`` (column 5; PLINK's A1), so a positive effect means allele1
raises the trait -- GEMMA's convention, whose ``beta`` then has the same sign.
Missing genotypes are NaN.  Individuals are named by the .fam's individual id
(column 2); they are matched to the data and to K by these names.

``bed-reader`` reads the .bed file, a chunk of markers at a time (a scan never
needs the whole matrix in memory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .naming import format_level

SNP_COLUMNS = ["snp", "chrom", "pos", "allele1", "allele0"]


@dataclass(frozen=True)
class Genotypes:
    """Individuals' ids, the markers' table (``SNP_COLUMNS``) and a reader of dosage blocks."""

    ids: tuple[str, ...]
    snps: pd.DataFrame
    source: object          # bed_reader.open_bed or an (individuals x markers) float array

    @property
    def n_snps(self) -> int:
        return len(self.snps)

    def read(self, rows: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Dosages (len(rows), stop - start) of the individuals ``rows`` (positions in ``ids``)."""
        if isinstance(self.source, np.ndarray):
            return self.source[rows, start:stop].astype(np.float64)
        return self.source.read(index=np.s_[rows, start:stop], dtype="float64", order="C")

    def dosages(self) -> pd.DataFrame:
        """Every dosage as a data frame (individuals x markers); for small sets."""
        values = self.read(np.arange(len(self.ids)), 0, self.n_snps)
        return pd.DataFrame(values, index=pd.Index(self.ids, name="id"), columns=self.snps["snp"])


def read_plink(prefix: str | os.PathLike) -> Genotypes:
    """The genotypes of ``PREFIX.bed`` with ``PREFIX.bim`` and ``PREFIX.fam`` (dosage = copies of allele1).

    The .bim and .fam are read here, line by line (whitespace-separated, blank lines skipped), and the
    .bed's header and size are checked before ``bed-reader`` opens it.  Each problem is a ``DataError``
    naming the file (and the line): a missing file or a folder, a line with too few fields or a
    position that is not a number, a marker or individual id given twice, a .bed without PLINK's magic
    number, or a .bed whose size does not match the numbers of markers and individuals.
    """
    from bed_reader import open_bed

    prefix = str(prefix)
    for suffix in (".bed", ".bim", ".fam"):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
    paths = {s: Path(prefix + s) for s in (".bed", ".bim", ".fam")}
    for suffix, path in paths.items():
        if not path.exists():
            raise DataError(f"PLINK file {str(path)!r} not found")
        if not path.is_file():
            raise DataError(f"PLINK file {str(path)!r} is not a file (a folder?)")
    bim = _read_bim(paths[".bim"])
    fam = _read_fam(paths[".fam"])
    n_snp, n_ind = len(bim["sid"]), len(fam["iid"])
    _check_bed(paths[".bed"], n_snp, n_ind)
    bed = open_bed(paths[".bed"], iid_count=n_ind, sid_count=n_snp, count_A1=True, num_threads=1,
                   properties={"fid": fam["fid"], "iid": fam["iid"], "sid": bim["sid"],
                               "chromosome": bim["chromosome"], "bp_position": bim["bp_position"],
                               "allele_1": bim["allele_1"], "allele_2": bim["allele_2"]})
    snps = pd.DataFrame({"snp": bim["sid"], "chrom": bim["chromosome"],
                         "pos": np.asarray(bim["bp_position"], dtype=np.int64), "allele1": bim["allele_1"],
                         "allele0": bim["allele_2"]})
    ids = tuple(format_level(v) for v in fam["iid"])
    return Genotypes(ids, snps, bed)


BED_MAGIC = b"\x6c\x1b"


def _check_bed(path: Path, n_snp: int, n_ind: int) -> None:
    """The .bed starts with PLINK's magic number and a mode byte (1: SNP-major, 0: individual-major)
    and has the size the .bim's markers and the .fam's individuals need."""
    with open(path, "rb") as fh:
        head = fh.read(3)
    if head[:2] != BED_MAGIC:
        raise DataError(f"{path.name} is not a PLINK .bed file: it starts with bytes {head[:2].hex(' ') or 'none'}, "
                        "not PLINK's magic number 6c 1b")
    if len(head) < 3 or head[2] not in (0, 1):
        mode = head[2:3].hex() or "none"
        raise DataError(f"{path.name} is not a PLINK .bed file: its third byte (the mode) is {mode}, not 01 "
                        "(SNP-major) or 00 (individual-major)")
    expected = 3 + (n_snp * (-(-n_ind // 4)) if head[2] == 1 else n_ind * (-(-n_snp // 4)))
    size = path.stat().st_size
    if size != expected:
        raise DataError(f"{path.name} has {size} bytes but {n_snp} markers (.bim lines) x {n_ind} "
                        f"individuals (.fam lines) need {expected}: the .bed, .bim and .fam do not belong together")


BIM_FIELDS = "chromosome, variant id, position in cM, base-pair position, allele 1, allele 2"
FAM_FIELDS = "family id, individual id, father, mother, sex, phenotype"


def _lines(path: Path):
    """``(line number, fields)`` of each non-blank line of a whitespace-separated text file."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                fields = raw.decode("utf-8").split()
            except UnicodeDecodeError:
                raise DataError(f"line {number} of {path.name} is not UTF-8 text") from None
            if fields:
                yield number, fields


def _read_bim(path: Path) -> dict[str, list]:
    """The .bim's columns (bed-reader's property names); a ``DataError`` names the line of a malformed
    entry or of a variant id seen before."""
    out = {k: [] for k in ("chromosome", "sid", "cm_position", "bp_position", "allele_1", "allele_2")}
    first: dict[str, int] = {}
    for number, fields in _lines(path):
        if len(fields) < 6:
            raise DataError(f"line {number} of {path.name} has {len(fields)} field{'s' if len(fields) != 1 else ''} "
                            f"but a .bim line has 6 ({BIM_FIELDS})")
        chrom, sid, cm, bp, a1, a2 = fields[:6]
        try:
            float(cm)
        except ValueError:
            raise DataError(f"line {number} of {path.name}: the position in cM (field 3) is {cm!r}, "
                            "not a number") from None
        try:
            bp = int(bp)
        except ValueError:
            raise DataError(f"line {number} of {path.name}: the base-pair position (field 4) is {bp!r}, "
                            "not an integer") from None
        if sid in first:
            raise DataError(f"line {number} of {path.name} repeats the variant id {sid!r} of line {first[sid]}: "
                            "variant ids must be unique (plink2 --set-all-var-ids can make them so)")
        first[sid] = number
        for key, value in zip(out, (chrom, sid, float(cm), bp, a1, a2)):
            out[key].append(value)
    return out


def _read_fam(path: Path) -> dict[str, list]:
    """The .fam's family and individual ids; a ``DataError`` names the line of a malformed entry or of an
    individual id seen before."""
    fid, iid, first = [], [], {}
    for number, fields in _lines(path):
        if len(fields) < 6:
            raise DataError(f"line {number} of {path.name} has {len(fields)} field{'s' if len(fields) != 1 else ''} "
                            f"but a .fam line has 6 ({FAM_FIELDS})")
        if fields[1] in first:
            raise DataError(f"line {number} of {path.name} repeats the individual id {fields[1]!r} of line "
                            f"{first[fields[1]]}: individual ids (field 2) must be unique")
        first[fields[1]] = number
        fid.append(fields[0])
        iid.append(fields[1])
    return {"fid": fid, "iid": iid}


def genotypes_from_frame(frame: pd.DataFrame) -> Genotypes:
    """Genotypes from a data frame: index = individual ids, one numeric column per marker (dosages)."""
    ids = tuple(format_level(v) for v in frame.index)
    _check_unique(ids, "individual id", "the genotype data frame's index")
    names = [str(c) for c in frame.columns]
    _check_unique(tuple(names), "marker column", "the genotype data frame")
    bad = [(c, dtype) for c, dtype in frame.dtypes.items() if not pd.api.types.is_numeric_dtype(dtype)]
    if bad:
        raise DataError(f"genotype column {str(bad[0][0])!r} is not numeric (dtype {bad[0][1]})")
    values = frame.to_numpy(dtype=np.float64)
    if np.isinf(values).any():
        raise DataError("genotypes have infinite values")
    snps = pd.DataFrame({"snp": names, "chrom": "", "pos": np.arange(1, len(names) + 1),
                         "allele1": "", "allele0": ""})
    return Genotypes(ids, snps, values)


def as_genotypes(value) -> Genotypes:
    """A PLINK prefix (str or path), a ``Genotypes`` or a data frame, as ``Genotypes``."""
    if isinstance(value, Genotypes):
        return value
    if isinstance(value, (str, os.PathLike)):
        return read_plink(value)
    if isinstance(value, pd.DataFrame):
        return genotypes_from_frame(value)
    raise DataError("genotypes must be a PLINK .bed/.bim/.fam prefix or a data frame (individuals x markers)")


def match_individuals(genotypes: Genotypes, levels: list[str], name: str) -> tuple[np.ndarray, int]:
    """Positions in ``genotypes.ids`` of the data's ``levels`` of grouping factor ``name``, and the number
    of genotyped individuals without data (left out, as levels of K without data are).

    A ``DataError`` names the levels that have no genotypes.
    """
    from .relmat import level_positions

    rows = level_positions(levels, genotypes.ids, name, "the genotypes")
    return rows, len(genotypes.ids) - len(set(levels))


def _check_unique(values: tuple[str, ...], what: str, where: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise DataError(f"{where} has the {what} {v!r} twice")
        seen.add(v)
