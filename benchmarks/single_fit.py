"""Benchmark: single fits (sleepstudy, Penicillin, Pastes) and whole CLI processes, against lme4.

Run:  python benchmarks/single_fit.py [--skip-r]

Measures in one run on this machine: jaxlmm's warm fit (the whole ``jaxlmm.lmer`` call,
best/median of 50), its first call in a fresh process (with compilation, empty cache),
lme4's fit (benchmarks/r/single_fit_lme4.R, median of 20), and a whole
``jaxlmm fit --example sleepstudy`` process (persistent cache warm) against a whole
``Rscript`` process fitting the same model (benchmarks/r/sleepstudy_process.R).
Writes benchmarks/results/single_fit.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

from _common import HERE, SHARED, have_r, machine, run_r, timed, write_results

MODELS = {
    "sleepstudy": "Reaction ~ Days + (Days | Subject)",
    "penicillin": "diameter ~ 1 + (1 | plate) + (1 | sample)",
    "pastes": "strength ~ 1 + (1 | batch/cask)",
}

FIRST_CALL = r"""
import sys, time, warnings, jaxlmm
warnings.simplefilter("ignore")
d = jaxlmm.load_dataset(sys.argv[1]); t = time.perf_counter()
jaxlmm.lmer(sys.argv[2], d).fixef
print(time.perf_counter() - t)
"""


def process_seconds(cmd, repeat=5, env=None) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-r", action="store_true")
    args = ap.parse_args()
    import os

    import jaxlmm

    warnings.simplefilter("ignore")
    rows = {}
    for name, formula in MODELS.items():
        data = jaxlmm.load_dataset(name)
        first = float(subprocess.run([sys.executable, "-c", FIRST_CALL, name, formula], capture_output=True,
                                     text=True, check=True, env={**os.environ, "JAXLMM_NO_CACHE": "1"}).stdout)
        jaxlmm.lmer(formula, data)
        best, median, fit = timed(lambda: jaxlmm.lmer(formula, data).fixef, 50)
        rows[name] = {"jaxlmm_warm_best_s": best, "jaxlmm_warm_median_s": median, "jaxlmm_first_call_s": first}

    r = None
    if not args.skip_r and have_r():
        out, _ = run_r("single_fit_lme4.R", SHARED / "data", 20)
        r = json.loads(out)
        for name in rows:
            rows[name]["lme4_median_s"] = r["fits"][name]["median_s"]

    proc = {}
    # the installed console script, else the same entry point through this interpreter
    cli = [shutil.which("jaxlmm")] if shutil.which("jaxlmm") else [sys.executable, "-m", "jaxlmm.cli.main"]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "JAXLMM_CACHE": cache}
        subprocess.run([*cli, "fit", "--example", "sleepstudy"], capture_output=True, check=True, env=env)
        proc["jaxlmm_process_s"] = process_seconds([*cli, "fit", "--example", "sleepstudy"], env=env)
    if not args.skip_r and have_r():
        proc["rscript_process_s"] = process_seconds(["Rscript", str(HERE / "r" / "sleepstudy_process.R"),
                                                     str(SHARED / "data")])

    payload = {"machine": machine(), "fits": rows, "process": proc, "lme4": r}
    lines = [f"# Single-fit benchmark ({payload['machine']['date']})", "",
             f"Machine: {payload['machine'].get('cpu', '?')}, {payload['machine']['cpus']} CPUs; "
             f"jax {payload['machine']['jax']}; {payload['machine'].get('R', 'R not available')}", "",
             "| model | jaxlmm warm (median) | jaxlmm first call (compile) | lme4 (median) | lme4 / jaxlmm |",
             "|---|---|---|---|---|"]
    for name, row in rows.items():
        lme4 = row.get("lme4_median_s")
        ratio = f"{lme4 / row['jaxlmm_warm_median_s']:.1f}x" if lme4 else "-"
        lme4_txt = f"{lme4 * 1000:.1f} ms" if lme4 else "-"
        lines.append(f"| {name} | {row['jaxlmm_warm_median_s'] * 1000:.1f} ms | {row['jaxlmm_first_call_s']:.2f} s | "
                     f"{lme4_txt} | {ratio} |")
    if proc:
        lines += ["", "Whole process, `jaxlmm fit --example sleepstudy` (persistent cache warm) vs `Rscript` "
                  "fitting the same model and printing its summary (median of 5):", ""]
        for k, v in proc.items():
            lines.append(f"- {k}: {v:.2f} s")
    write_results("single_fit", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
