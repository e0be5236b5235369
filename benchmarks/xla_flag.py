"""Warm and cold times with and without ``--xla_cpu_multi_thread_eigen=false``, in one run.

Usage:  python benchmarks/xla_flag.py

jaxlmm used to set that flag on import; it is now opt-in (``jaxlmm.configure_xla()``).
Each workload runs in two fresh processes, one with ``XLA_FLAGS`` set to the
flag and one without, nothing compiled: the first call (cold) and the best of
three warm calls.  Workloads: traits_1k (1000 traits of ``~ x + (1 + x | g)``,
the batch program), InstEval (the large crossed single fit), and a 1000-replicate
bootstrap and the profile CIs of sleepstudy.  Writes ``results/xla_flag_cpu.{md,json}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from _common import SHARED, machine, write_results

CHILD = r"""
import json, sys, time, warnings
import pandas as pd
import jaxlmm, jaxlmm.fitting.lmer
warnings.simplefilter("ignore")
which, shared = sys.argv[1], sys.argv[2]
if which == "traits":
    data = pd.read_csv(f"{shared}/bench/traits_1k.csv")
    traits = [c for c in data.columns if c.startswith("trait")]
    run = lambda: jaxlmm.lmer("~ x + (1 + x | g)", data, responses=traits, progress=False)
elif which == "insteval":
    data = jaxlmm.load_dataset("insteval")
    for c in ("s", "d", "dept", "service"):
        data[c] = data[c].astype(str).astype("category")
    run = lambda: jaxlmm.lmer("y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", data)
else:
    data = jaxlmm.load_dataset("sleepstudy")
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", data)
    run = {"bootstrap": lambda: fit.bootstrap(nsim=1000, seed=1),
           "profile": lambda: fit.confint(method="profile")}[which]
t0 = time.perf_counter(); run(); cold = time.perf_counter() - t0
warm = []
for _ in range(3):
    t0 = time.perf_counter(); run(); warm.append(time.perf_counter() - t0)
print(json.dumps({"cold": cold, "warm": min(warm)}))
"""

FLAG = "--xla_cpu_multi_thread_eigen=false"


def run(which: str, flag: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXLMM_CACHE")}
    if flag:
        env["XLA_FLAGS"] = FLAG
    out = subprocess.run([sys.executable, "-c", CHILD, which, str(SHARED)], capture_output=True, text=True,
                         env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    results = {w: {"flag": run(w, True), "no_flag": run(w, False)}
               for w in ("traits", "insteval", "bootstrap", "profile")}
    info = machine()
    lines = ["# XLA's multi-threaded Eigen pool on and off (one run)", "",
             f"Machine: {info.get('cpu', '?')}, {info['cpus']} CPUs; jax {info['jax']}. Fresh process per cell, "
             f"nothing compiled; warm = best of 3 after the first call. `flag` = `XLA_FLAGS={FLAG}` (what "
             "`import jaxlmm` used to set), `no flag` = what importing jaxlmm leaves now.", "",
             "| workload | cold, flag | cold, no flag | warm, flag | warm, no flag |", "|---|---|---|---|---|"]
    names = {"traits": "traits_1k, 1000 traits", "insteval": "InstEval single fit",
             "bootstrap": "sleepstudy bootstrap, 1000 replicates", "profile": "sleepstudy profile CIs"}
    for w, r in results.items():
        lines.append(f"| {names[w]} | {r['flag']['cold']:.2f} s | {r['no_flag']['cold']:.2f} s | "
                     f"{r['flag']['warm']:.3f} s | {r['no_flag']['warm']:.3f} s |")
    write_results("xla_flag_cpu", {"machine": info, "results": results}, "\n".join(lines))


if __name__ == "__main__":
    main()
