"""Shared fixtures: lme4 reference results, datasets and fits (compiled once per session).

JAX's persistent compilation cache is on for the whole test session
(``JAXLMM_TEST_CACHE`` or ``.pytest_cache/jax``, one subdirectory per pytest-xdist
worker), so compiled fit programs are reused across runs; within a run, fits are
shared by session-scoped fixtures.  The suite runs in two worker processes
(``-n 2`` in pyproject.toml): XLA's CPU runtime gives every compiled kernel its own
memory maps, and the whole suite in one process exceeds Linux's default
``vm.max_map_count`` (65,530) and crashes.
"""

from __future__ import annotations

import json
import os
import pathlib
import warnings

import jax
import pytest

import jaxlmm
from jaxlmm import enable_compilation_cache

REFERENCE = pathlib.Path(__file__).parent / "reference"
ROOT = pathlib.Path(__file__).parent.parent

# one cache directory per pytest-xdist worker (see pyproject.toml): no two processes write one entry
enable_compilation_cache(os.path.join(os.environ.get("JAXLMM_TEST_CACHE", str(ROOT / ".pytest_cache" / "jax")),
                                      os.environ.get("PYTEST_XDIST_WORKER", "main")))

# jaxlmm scopes float64 itself; JAXLMM_TEST_X64=1 runs the suite as a user who enabled x64 globally
if os.environ.get("JAXLMM_TEST_X64"):
    jax.config.update("jax_enable_x64", True)


@pytest.fixture
def x64():
    """64-bit mode for tests that call the JAX core or transform jaxlmm's objective directly."""
    with jax.enable_x64(True):
        yield


CASES = sorted(p.stem for p in REFERENCE.glob("*.json"))
FAST_CASES = [c for c in CASES if c != "insteval"]


def load_reference(case: str) -> dict:
    return json.loads((REFERENCE / f"{case}.json").read_text())


def case_data(ref: dict):
    """The reference case's data with its factor columns categorical (as in refgen.R)."""
    name = ref["data"].removesuffix(".csv")
    frame = jaxlmm.load_dataset(name)
    factors = [ref["factors"]] if isinstance(ref["factors"], str) else ref["factors"]
    for col in factors:
        frame[col] = frame[col].astype(str).astype("category") if frame[col].dtype == object else \
            frame[col].astype("category")
    return frame


class FitCache:
    def __init__(self):
        self._fits = {}

    def get(self, case: str, reml: bool | None = None):
        ref = load_reference(case)
        reml = ref["reml"] if reml is None else reml
        key = (case, reml)
        if key not in self._fits:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", jaxlmm.JaxlmmWarning)
                self._fits[key] = jaxlmm.lmer(ref["formula"], case_data(ref), reml=reml)
        return self._fits[key]


@pytest.fixture(scope="session")
def fits() -> FitCache:
    return FitCache()


# scripts that made the reference files are not tests (run them by hand; see their docstrings)
collect_ignore_glob = ["reference/*"]


def write_plink(prefix, genotypes) -> None:
    """``prefix.bed/.bim/.fam`` of a genotype frame (individuals x markers, dosages; bed-reader), ids on
    both id columns, markers on chromosome 1 every 1000 bp."""
    import numpy as np
    from bed_reader import to_bed

    ids, n_snp = list(genotypes.index), genotypes.shape[1]
    to_bed(f"{prefix}.bed", np.array(genotypes.to_numpy(), dtype=np.float32, order="C"), properties={
        "fid": ids, "iid": ids, "sid": list(genotypes.columns), "chromosome": ["1"] * n_snp,
        "bp_position": list(range(1000, 1000 * (n_snp + 1), 1000)), "allele_1": ["A"] * n_snp,
        "allele_2": ["G"] * n_snp})
