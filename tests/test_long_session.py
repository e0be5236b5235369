"""A long notebook session: 100 distinct model structures in one process (issue I, item 8).

Each compiled XLA CPU program keeps its own memory maps; a session that
compiled one program per model structure ran out of Linux's default
``vm.max_map_count`` and crashed.  Small models now share a few programs per
size bucket, so the count of maps stays bounded however many formulas a
session fits.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import itertools, json, warnings
import numpy as np, pandas as pd
import jaxlmm

rng = np.random.default_rng(0)
n = 600
data = pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n), "w": rng.normal(size=n),
                     "f": rng.choice(list("abcd"), size=n)})
for levels in (6, 9, 14, 22, 35, 50, 80, 120):
    data[f"g{levels}"] = rng.integers(0, levels, size=n).astype(str)
data["y"] = data["x"] + rng.normal(size=n) + data["g9"].astype(int) * 0.3 + data["g22"].astype(int) * 0.05

def maps():
    with open("/proc/self/maps") as fh:
        return sum(1 for _ in fh)

fixed = ["1", "x", "x + z", "x * f", "f + w", "poly(x, 2)", "x + z + w + f"]
random = ["(1 | {a})", "(x | {a})", "(x || {a})", "(1 | {a}) + (1 | {b})", "(1 + x + z | {a})",
          "(1 | {a}) + (0 + x | {b})"]
groups = ["g6", "g9", "g14", "g22", "g35", "g50", "g80", "g120"]
formulas = []
for fx, rd, (a, b) in itertools.product(fixed, random, itertools.permutations(groups, 2)):
    formulas.append(f"y ~ {fx} + " + rd.format(a=a, b=b))
formulas = list(dict.fromkeys(formulas))
rng.shuffle(formulas)
formulas = formulas[:100]
start = maps()
peak = start
fitted = 0
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for f in formulas:
        fit = jaxlmm.lmer(f, data)
        assert np.isfinite(fit.criterion), f
        fitted += 1
        peak = max(peak, maps())
print(json.dumps({"fitted": fitted, "distinct": len(set(formulas)), "start_maps": start, "peak_maps": peak}))
"""


@pytest.mark.slow
def test_hundred_distinct_models_in_one_process():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["fitted"] == report["distinct"] == 100
    # far below vm.max_map_count (65,530): the programs are shared, not one per structure
    assert report["peak_maps"] < 20000, report


THOUSAND = r"""
import itertools, json, sys, time, warnings
import numpy as np, pandas as pd
import jaxlmm
from jaxlmm import _program_budget as budget

budget.set_fraction(FRACTION)
jaxlmm.enable_compilation_cache(CACHE)      # a release then costs a reload from disk, not a compilation
rng = np.random.default_rng(1)
fixed = ["1", "x", "x + z", "x * f", "f + w", "x + z + w + f"]
random = ["(1 | a)", "(x | a)", "(x || a)", "(1 | a) + (1 | b)", "(1 + x + z | a)", "(1 | a) + (0 + x | b)"]
shapes = list(itertools.product(fixed, random, range(3, 60)))
rng.shuffle(shapes)
peak, fitted, started = budget.map_count(), 0, time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for fx, rd, levels in shapes[:1000]:
        n = 5 * levels + int(rng.integers(0, 40))
        d = pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n), "w": rng.normal(size=n),
                          "f": rng.choice(list("abc"), size=n),
                          "a": rng.integers(0, levels, size=n).astype(str),
                          "b": rng.integers(0, max(2, levels // 3), size=n).astype(str)})
        d["y"] = d["x"] + rng.normal(size=n) + pd.factorize(d["a"])[0] % 5 * 0.3
        fit = jaxlmm.lmer(f"y ~ {fx} + {rd}", d)
        assert np.isfinite(fit.criterion)
        fitted += 1
        peak = max(peak, budget.map_count())
print(json.dumps({"fitted": fitted, "distinct": len(set(shapes[:1000])), "peak_maps": peak,
                  "releases": budget.releases(), "budget": FRACTION * budget.map_limit(),
                  "seconds": time.perf_counter() - started}))
"""


@pytest.mark.slow
def test_thousand_distinct_shapes_keep_the_memory_maps_bounded(tmp_path):
    """Issue U.1: 1,000 distinct model shapes (formula x rows x levels) in one process.  With a budget of
    a tenth of vm.max_map_count the process releases its compiled programs several times and its
    memory maps stay near the budget; every fit still succeeds."""
    fraction = 0.1
    script = THOUSAND.replace("FRACTION", repr(fraction)).replace("CACHE", repr(str(tmp_path / "cache")))
    out = subprocess.run([sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=3000)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print(report)
    assert report["fitted"] == report["distinct"] == 1000
    assert report["releases"] >= 1, report
    # the check runs before each call: one model's programs may pass the budget before the next release
    assert report["peak_maps"] < report["budget"] + 4000, report


RELEASE = r"""
import json, warnings
import numpy as np
import jaxlmm
from jaxlmm import _program_budget as budget

sleep = jaxlmm.load_dataset("sleepstudy")
warnings.simplefilter("ignore")
first = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
budget.set_fraction(1e-6)                     # every count of the maps is over budget
second = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", sleep)   # compiles, so the next call counts
third = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)  # released first, then compiled again
print(json.dumps({"releases": budget.releases(), "same": bool(np.allclose(first.theta, third.theta, atol=1e-10)),
                  "criterion": [first.criterion, third.criterion]}))
"""


def test_a_release_drops_the_programs_and_refits_agree():
    out = subprocess.run([sys.executable, "-c", RELEASE], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["releases"] >= 1 and report["same"], report
