"""Structured covariances against glmmTMB (issue J): repeated_ar1 and field_exp, timed in the same run.

jaxlmm: the first fit in a fresh process with an empty compilation cache (``cold``, import excluded)
and the best of repeated fits in that process (``warm``); glmmTMB: the median of in-process fits
after a warm-up (benchmarks/r/structured_glmmtmb.R).  Writes results/structured_cpu.{md,json}.

    python benchmarks/structured.py [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _common import HERE, SHARED, have_r, machine, run_r, write_results

CASES = {
    "repeated_ar1": ("repeated.csv", "y ~ visit * arm + (1 | subject) + ar1(0 + factor(visit) | subject)",
                     ["subject", "arm"]),
    "field_exp": ("fieldtrial.csv", "yield ~ 0 + variety + (1 | block) + exp(0 + pos(x, y) | field)",
                  ["variety", "block", "field"]),
}

CHILD = r"""
import json, sys, time
import pandas as pd
data_dir, name, csv, formula, factors, reps = sys.argv[1:7]
import jaxlmm
d = pd.read_csv(f"{data_dir}/{csv}")
for f in json.loads(factors):
    d[f] = d[f].astype(str).astype("category")
t0 = time.perf_counter(); fit = jaxlmm.lmer(formula, d); cold = time.perf_counter() - t0
warm = []
for _ in range(int(reps)):
    t0 = time.perf_counter(); jaxlmm.lmer(formula, d); warm.append(time.perf_counter() - t0)
print(json.dumps({"cold_s": cold, "warm_s": min(warm), "criterion": fit.criterion, "n_iter": fit.n_iter}))
"""


def jaxlmm_fit(data_dir, name, reps):
    csv, formula, factors = CASES[name]
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=tempfile.mkdtemp(prefix="jaxlmm-cold-"))
    out = subprocess.run([sys.executable, "-c", CHILD, str(data_dir), name, csv, formula, json.dumps(factors),
                          str(reps)], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    data_dir = SHARED / "data" / "structured"
    ours = {name: jaxlmm_fit(data_dir, name, args.reps) for name in CASES}
    theirs = json.loads(run_r("structured_glmmtmb.R", data_dir, args.reps)[0]) if have_r() else None
    lines = ["# Structured covariances: jaxlmm against glmmTMB (REML), same run", "",
             f"Machine: {machine().get('cpu', '?')}, {os.cpu_count()} CPUs"
             + (f"; glmmTMB {theirs['glmmTMB_version']}" if theirs else "; glmmTMB not installed"), "",
             "| model | jaxlmm cold (first fit, empty cache) | jaxlmm warm | glmmTMB (median) | warm ratio "
             "(glmmTMB / jaxlmm) | criterion jaxlmm | criterion glmmTMB |", "|---|---|---|---|---|---|---|"]
    for name, r in ours.items():
        g = theirs["fits"][name] if theirs else None
        ratio = f"{g['median_s'] / r['warm_s']:.1f}x" if g else "-"
        lines.append(f"| {name} | {r['cold_s']:.2f} s | {r['warm_s']:.3f} s | "
                     f"{g['median_s']:.3f} s | {ratio} | {r['criterion']:.6f} | "
                     f"{g['criterion']:.6f} |" if g else f"| {name} | {r['cold_s']:.2f} s | {r['warm_s']:.3f} s | - | - "
                     f"| {r['criterion']:.6f} | - |")
    write_results("structured_cpu", {"machine": machine(), "jaxlmm": ours, "glmmTMB": theirs}, "\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
