"""Benchmark: 500 GBLUP traits ``~ 1 + (1 | id)`` with a 1000 x 1000 genomic K, against GEMMA and lme4.

Run:  python benchmarks/kinship.py [--gemma-traits 20] [--lme4-traits 1] [--skip-external]

Measures in one run on this machine:
- jaxlmm: the whole batch (spectral path) warm (best of 3), the first call in a
  fresh process with an empty compilation cache, and the eigendecomposition of
  K alone;
- GEMMA: ``gemma -lmm`` run trait by trait (r/kinship_gemma.sh) on the first
  ``--gemma-traits`` traits, timed here; its per-trait mean times 500 is the
  loop time it would need (it cannot share one eigendecomposition because the
  missing individuals differ per trait);
- lme4's modular GBLUP fit (r/kinship_lme4.R) on the first ``--lme4-traits``;
- accuracy: h2 against GEMMA's vg/(vg+ve) for all 500 traits
  (reference/kinship/gemma_traits.csv) and the criterion against lme4.
Writes benchmarks/results/kinship_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from _common import HERE, SHARED, have_r, machine, run_r, timed, write_results

FORMULA = "~ 1 + (1 | id)"

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import pandas as pd, jaxlmm
from jaxlmm import enable_compilation_cache
enable_compilation_cache(sys.argv[3])
K = pd.read_csv(sys.argv[1], index_col=0)
data = pd.read_csv(sys.argv[2])
traits = [c for c in data.columns if c.startswith("trait")]
t1 = time.perf_counter()
b = jaxlmm.lmer("~ 1 + (1 | id)", data, relmat={"id": K}, responses=traits, progress=False)
t2 = time.perf_counter()
print(json.dumps({"read_s": t1 - t0, "first_call_s": t2 - t1, "converged": int(b.converged.sum())}))
"""


def child_first_call(k_path, traits_path, cache_dir) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(k_path), str(traits_path), str(cache_dir)],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def gemma_loop(k_path, traits_path, n_traits: int) -> dict | None:
    if not shutil.which("gemma") or n_traits <= 0:
        return None
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run(["bash", str(HERE / "r" / "kinship_gemma.sh"), str(k_path), str(traits_path), out,
                        str(n_traits)], check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        table = pd.read_csv(f"{out}/gemma_traits.csv")
    return {"traits": n_traits, "loop_wall_s": wall, "per_trait_process_s": float(table["seconds"].mean())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gemma-traits", type=int, default=20)
    ap.add_argument("--lme4-traits", type=int, default=1)
    ap.add_argument("--skip-external", action="store_true")
    args = ap.parse_args()

    import jax

    import jaxlmm
    from jaxlmm.many.spectral import eigen

    k_path, traits_path = SHARED / "bench" / "kinship_K.csv", SHARED / "bench" / "kinship_traits.csv"
    K = pd.read_csv(k_path, index_col=0)
    data = pd.read_csv(traits_path)
    traits = [c for c in data.columns if c.startswith("trait")]

    with tempfile.TemporaryDirectory() as cache:
        cold = child_first_call(k_path, traits_path, cache)

    def run():
        return jaxlmm.lmer(FORMULA, data, relmat={"id": K}, responses=traits, progress=False)

    run()
    best, median, batch = timed(run, 3)
    with jax.enable_x64(True):  # jaxlmm scopes float64 in its own calls; this times an internal one
        eig_best, _, _ = timed(lambda: jax.block_until_ready(eigen(K.to_numpy(), np.float64)), 3)

    gemma_ref = pd.read_csv(HERE / "reference" / "kinship" / "gemma_traits.csv", index_col=0)
    interior = gemma_ref["at_lambda_min"] == 0
    h2_diff = (batch.h2 - gemma_ref["h2"]).abs()
    accuracy = {
        "paths": batch.diagnostics["path"].value_counts().to_dict(),
        "converged": int(batch.converged.sum()),
        "h2_max_abs_diff_vs_gemma_interior": float(h2_diff[interior].max()),
        "h2_max_abs_diff_vs_gemma_at_gemma_lambda_min": float(h2_diff[~interior].max()),
        "n_gemma_at_lambda_min": int((~interior).sum()),
        "h2_se_rel_diff_vs_gemma_se_pve_median": float((batch.h2_se / gemma_ref["se_pve"] - 1)[interior].abs().median()),
    }
    lme4_ref = pd.read_csv(HERE / "reference" / "kinship" / "lme4_traits.csv", index_col=0)
    crit = batch.criterion[lme4_ref.index]
    accuracy["criterion_rel_diff_vs_lme4"] = [float(x) for x in (crit / lme4_ref["criterion"] - 1)]
    accuracy["h2_abs_diff_vs_lme4"] = [float(x) for x in (batch.h2[lme4_ref.index] - lme4_ref["h2"])]

    gemma = lme4 = None
    if not args.skip_external:
        gemma = gemma_loop(k_path, traits_path, args.gemma_traits)
        if have_r() and args.lme4_traits > 0:
            with tempfile.NamedTemporaryFile(suffix=".csv") as tmp:
                _, wall = run_r("kinship_lme4.R", k_path, traits_path, tmp.name, args.lme4_traits)
                table = pd.read_csv(tmp.name)
            lme4 = {"traits": args.lme4_traits, "per_trait_fit_s": float(table["seconds"].mean()),
                    "script_wall_s": wall}
    gemma_source = "measured in this run" if gemma else "reference/kinship/gemma_timing.txt"
    gemma_per_trait = gemma["per_trait_process_s"] if gemma else float(gemma_ref["seconds"].mean())
    lme4_per_trait = lme4["per_trait_fit_s"] if lme4 else float(lme4_ref["seconds"].mean())

    T = len(traits)
    payload = {
        "machine": machine(),
        "workload": f"kinship: {T} traits, {K.shape[0]} individuals, {FORMULA} with K = kinship_K.csv, "
                    "1.7-4.8% missing per trait",
        "jaxlmm": {"warm_best_s": best, "warm_median_s": median, "first_call_cold_cache_s": cold["first_call_s"],
                   "eigendecomposition_s": eig_best, "per_trait_ms": (best - eig_best) / T * 1000},
        "gemma": gemma, "gemma_per_trait_s": gemma_per_trait, "gemma_source": gemma_source,
        "lme4": lme4, "lme4_per_trait_s": lme4_per_trait,
        "accuracy": accuracy,
    }
    m = payload["machine"]
    lines = [f"# Kinship (GBLUP) benchmark ({m['date']})", "",
             f"Machine: {m.get('cpu', '?')}, {m['cpus']} CPUs; jax {m['jax']}; {m.get('R', 'R not available')}", "",
             f"Workload: {payload['workload']}", "",
             "| what | time | ratio to jaxlmm warm |", "|---|---|---|",
             f"| jaxlmm, all {T} traits, warm (best of 3) | {best:.2f} s | 1 |",
             f"| of which eigendecomposition of K (once) | {eig_best:.2f} s | |",
             f"| jaxlmm, first call, empty compilation cache | {cold['first_call_s']:.2f} s | |",
             f"| GEMMA -lmm per trait ({gemma_source}), x {T} | {gemma_per_trait:.3f} s/trait = "
             f"{gemma_per_trait * T:.0f} s | {gemma_per_trait * T / best:.0f}x slower |",
             f"| lme4 modular GBLUP per trait, x {T} | {lme4_per_trait:.1f} s/trait = {lme4_per_trait * T:.0f} s | "
             f"{lme4_per_trait * T / best:.0f}x slower |", "",
             f"Accuracy: {json.dumps(accuracy)}"]
    write_results("kinship_cpu", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
