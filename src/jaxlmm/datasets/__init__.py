"""Datasets shipped with jaxlmm, with the formulas their examples use.

Sources
-------
sleepstudy
    Reaction times in a sleep-deprivation study: Belenky, G. et al. (2003),
    *Journal of Sleep Research* 12, 1-12; as distributed with R's lme4 1.1-31.
dyestuff, dyestuff2
    Yield of dyestuff by batch (Davies, 1947) and simulated data with zero
    between-batch variance (Box & Tiao, 1973); as distributed with lme4 1.1-31.
penicillin
    Diameter of the zone of inhibition for 6 penicillin samples on 24 plates
    (Davies & Goldsmith, 1972); lme4 1.1-31.
pastes
    Strength of a chemical paste, 3 casks in each of 10 batches (Davies &
    Goldsmith, 1972); lme4 1.1-31.
insteval
    University lecture evaluations by students at ETH Zurich (2,972 students,
    1,128 lecturers); lme4 1.1-31, ordered factors written as text.
sulfur
    A sulfur-fertilizer yield trial (kg/ha) at three Spanish locations with
    blocks missing at two of them, an agronomy teaching example.
shrinkage, shrinkage_large, clusters
    Simulated teaching examples (five groups under three ratios of group to
    residual variance, set.seed(1673); the same with 500 rows per group; ten
    clusters with separated intercepts and a common slope).
"""

from __future__ import annotations

from importlib import resources

#: name -> (file, columns treated as factors, standard formula)
DATASETS = {
    "sleepstudy": ("sleepstudy.csv", ("Subject",), "Reaction ~ Days + (Days | Subject)"),
    "dyestuff": ("dyestuff.csv", ("Batch",), "Yield ~ 1 + (1 | Batch)"),
    "dyestuff2": ("dyestuff2.csv", ("Batch",), "Yield ~ 1 + (1 | Batch)"),
    "penicillin": ("penicillin.csv", ("plate", "sample"), "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    "pastes": ("pastes.csv", ("batch", "cask", "sample"), "strength ~ 1 + (1 | batch/cask)"),
    "insteval": ("insteval.csv.gz", ("s", "d", "studage", "lectage", "service", "dept"),
                 "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)"),
    "sulfur": ("sulfur.csv", ("location", "block", "trt"), "yield ~ 0 + location + (1 | block)"),
    "shrinkage": ("shrinkage.csv", ("g",), "y2 ~ 1 + (1 | g)"),
    "shrinkage_large": ("shrinkage_large.csv", ("g",), "y ~ 1 + (1 | g)"),
    "clusters": ("clusters.csv", ("p",), "y ~ x + (1 | p)"),
}


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def example_formula(name: str) -> str:
    """The standard formula of a shipped dataset."""
    return _entry(name)[2]


def _entry(name: str):
    """The entry of ``name`` in any case (``"Dyestuff2"``, ``"InstEval"``, ``"sleepstudy"``: lme4's names and ours)."""
    key = name.lower() if isinstance(name, str) else name
    try:
        return DATASETS[key]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())} "
                         "(in any case, e.g. 'Dyestuff2')") from None


def load_dataset(name: str):
    """A shipped dataset as a pandas DataFrame, with its factor columns categorical.

    ``name`` in any case: ``load_dataset("Dyestuff2")`` (lme4's spelling) is ``load_dataset("dyestuff2")``;
    ``list_datasets()`` (or ``jaxlmm datasets``) lists them.
    """
    import pandas as pd

    fname, factors, _ = _entry(name)
    with resources.as_file(resources.files(__name__) / fname) as path:
        frame = pd.read_csv(path)
    for col in factors:
        frame[col] = frame[col].astype("category")
    return frame
