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

    Raises a ``DataError`` naming the file when one is missing or the .bed's size does not match
    the numbers of markers (.bim lines) and individuals (.fam lines).
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
    n_ind = _count_lines(paths[".fam"])
    n_snp = _count_lines(paths[".bim"])
    expected = 3 + n_snp * (-(-n_ind // 4))
    size = paths[".bed"].stat().st_size
    if size != expected:
        raise DataError(f"{paths['.bed'].name} has {size} bytes but {n_snp} markers (.bim lines) x {n_ind} "
                        f"individuals (.fam lines) need {expected}: the .bed, .bim and .fam do not belong together")
    bed = open_bed(paths[".bed"], count_A1=True, num_threads=1)
    snps = pd.DataFrame({"snp": bed.sid.astype(str), "chrom": bed.chromosome.astype(str),
                         "pos": bed.bp_position.astype(np.int64), "allele1": bed.allele_1.astype(str),
                         "allele0": bed.allele_2.astype(str)})
    ids = tuple(format_level(v) for v in bed.iid)
    _check_unique(ids, "individual id", paths[".fam"].name)
    return Genotypes(ids, snps, bed)


def genotypes_from_frame(frame: pd.DataFrame) -> Genotypes:
    """Genotypes from a data frame: index = individual ids, one numeric column per marker (dosages)."""
    ids = tuple(format_level(v) for v in frame.index)
    _check_unique(ids, "individual id", "the genotype data frame's index")
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DataError(f"genotype column {str(bad[0])!r} is not numeric (dtype {frame[bad[0]].dtype})")
    values = frame.to_numpy(dtype=np.float64)
    if np.isinf(values).any():
        raise DataError("genotypes have infinite values")
    names = [str(c) for c in frame.columns]
    _check_unique(tuple(names), "marker name", "the genotype data frame's columns")
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


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def _check_unique(values: tuple[str, ...], what: str, where: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise DataError(f"{where} has the {what} {v!r} twice")
        seen.add(v)
