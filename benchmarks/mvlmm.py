"""Multivariate models (issue Q) against GEMMA 0.98.5 mvLMM, timed in the same run.

Run:  python benchmarks/mvlmm.py [--skip-gemma]

Workload: shared/bench/mvlmm/mv3_traits.csv (1000 individuals of kinship_K.csv, 3 traits, covariate sex)
and the 5000 markers of shared/bench/scan.  jaxlmm, each in a fresh process with an empty compilation
cache (cold) and again in it (warm): the null REML fit of ``cbind(mv3_t1, mv3_t2, mv3_t3) ~ sex + (1 | id)``
(complete data and with ~10% missing), and the scan of the trait set.  GEMMA: ``-lmm 4 -n 1 2 3`` with
``-c [1, sex]`` (null fits + the scan; GEMMA has no null-only mode).  Writes results/mvlmm_cpu.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from _common import SHARED, machine, write_results

MV = SHARED / "bench" / "mvlmm"
SCAN = SHARED / "bench" / "scan" / "scan"
FORMULA = "cbind(mv3_t1, mv3_t2, mv3_t3) ~ sex + (1 | id)"

CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import pandas as pd, jaxlmm
K = pd.read_csv(sys.argv[1], index_col=0)
data = pd.read_csv(sys.argv[2]); missing = pd.read_csv(sys.argv[3])
formula = sys.argv[5]
out = {}
def step(name, fn):
    t = time.perf_counter(); value = fn(); out[name] = time.perf_counter() - t; return value
step("fit_cold", lambda: jaxlmm.lmer(formula, data, relmat={"id": K}))
step("fit_warm", lambda: jaxlmm.lmer(formula, data, relmat={"id": K}))
step("fit_missing_first", lambda: jaxlmm.lmer(formula, missing, relmat={"id": K}))
step("fit_missing_warm", lambda: jaxlmm.lmer(formula, missing, relmat={"id": K}))
g = jaxlmm.read_plink(sys.argv[4])
res = step("scan_cold", lambda: jaxlmm.scan(formula, data, genotypes=g, relmat={"id": K}))
step("scan_warm", lambda: jaxlmm.scan(formula, data, genotypes=g, relmat={"id": K}))
res.to_csv(sys.argv[6], index=False)
print(json.dumps(out))
"""


def run_jaxlmm(work: str) -> dict:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=tempfile.mkdtemp(prefix="jaxlmm_mv_cache_"))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(SHARED / "bench" / "kinship_K.csv"),
                           str(MV / "mv3_traits.csv"), str(MV / "mv3_traits_missing.csv"), str(SCAN), FORMULA,
                           os.path.join(work, "jaxlmm_scan.csv")], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_gemma(work: str) -> float:
    """GEMMA -lmm 4 -n 1 2 3 -c [1, sex]: wall seconds (null fits and the scan)."""
    K = pd.read_csv(SHARED / "bench" / "kinship_K.csv", index_col=0)
    fam = pd.read_csv(str(SCAN) + ".fam", sep=r"\s+", header=None)
    ids = fam[1].astype(str).tolist()
    np.savetxt(os.path.join(work, "K.txt"), K.loc[ids, ids].to_numpy(), fmt="%.17g", delimiter="\t")
    data = pd.read_csv(MV / "mv3_traits.csv").set_index("id").loc[ids]
    data[["mv3_t1", "mv3_t2", "mv3_t3"]].to_csv(os.path.join(work, "pheno.txt"), sep="\t", header=False,
                                                index=False, na_rep="NA")
    pd.DataFrame({"one": 1, "sex": data["sex"]}).to_csv(os.path.join(work, "covar.txt"), sep="\t", header=False,
                                                      index=False)
    for suffix in (".bed", ".bim", ".fam"):
        shutil.copy(str(SCAN) + suffix, os.path.join(work, "scan" + suffix))
    t0 = time.perf_counter()
    subprocess.run(["gemma", "-bfile", "scan", "-p", "pheno.txt", "-c", "covar.txt", "-k", "K.txt", "-lmm", "4",
                    "-n", "1", "2", "3", "-outdir", "out", "-o", "mv3", "-silence"], cwd=work, check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-gemma", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="jaxlmm_mvlmm_")
    ours = run_jaxlmm(work)
    payload = {"machine": machine(), "jaxlmm": ours}
    gemma_row = "| GEMMA -lmm 4 -n 1 2 3 (null fits + 5000 markers) | not run | |"
    if not args.skip_gemma and shutil.which("gemma"):
        g = run_gemma(work)
        payload["gemma_s"] = g
        gemma_row = (f"| GEMMA -lmm 4 -n 1 2 3 (null fits + 5000 markers), same run | {g:.1f} s | "
                     f"jaxlmm scan: {g / ours['scan_warm']:.2f}x (warm), {g / ours['scan_cold']:.2f}x (cold) |")
    md = f"""# Multivariate models (mv3: 1000 individuals x 3 traits, 5000 markers)

Machine: {payload['machine'].get('cpu', '?')}, {payload['machine']['cpus']} CPUs, jax {payload['machine']['jax']};
jaxlmm in a fresh process with an empty compilation cache (cold = first call).

| step | seconds | ratio |
|---|---|---|
| null REML fit, complete data: first (cold) / again (warm) | {ours['fit_cold']:.2f} / {ours['fit_warm']:.2f} | |
| null REML fit, ~10% missing: first / again | {ours['fit_missing_first']:.2f} / {ours['fit_missing_warm']:.2f} | |
| scan of the trait set (null REML + ML fits, 5000 markers): first / again | {ours['scan_cold']:.1f} / {ours['scan_warm']:.1f} | |
{gemma_row}
"""
    write_results("mvlmm_cpu", payload, md)


if __name__ == "__main__":
    main()
