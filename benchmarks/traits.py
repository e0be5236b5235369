"""Benchmark: 1000 traits of ``~ x + (1 + x | g)`` (traits_1k) in one call, against lme4 and statsmodels.

Run:  python benchmarks/traits.py [--skip-r] [--statsmodels-traits 20]

Measures, in one run on this machine:
- jaxlmm: the first call in a fresh process with an empty compilation cache (compile + run),
  the first call in a fresh process with a warm persistent cache, and warm calls;
- float32 against float64 (accuracy and time);
- lme4: the per-trait loop (benchmarks/r/traits_1k_lme4.R), timed here;
- statsmodels MixedLM per trait, on a subset of traits.
Writes benchmarks/results/traits_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from _common import HERE, SHARED, have_r, machine, run_r, timed, write_results

FORMULA = "~ x + (1 + x | g)"

CHILD = r"""
import collections, json, sys, time
t0 = time.perf_counter()
import jax, pandas as pd, jaxlmm
from jaxlmm import enable_compilation_cache
enable_compilation_cache(sys.argv[2])
events = collections.defaultdict(float)
jax.monitoring.register_event_duration_secs_listener(lambda name, d, **kw: events.__setitem__(name, events[name] + d))
data = pd.read_csv(sys.argv[1])
traits = [c for c in data.columns if c.startswith("trait")]
t1 = time.perf_counter()
b = jaxlmm.lmer("~ x + (1 + x | g)", data, responses=traits, progress=False)
t2 = time.perf_counter()
stages = {"trace_s": "jaxpr_trace_duration", "lower_s": "jaxpr_to_mlir_module_duration",
          "xla_compile_s": "backend_compile_duration"}
breakdown = {k: sum(v for name, v in events.items() if name.endswith(suffix)) for k, suffix in stages.items()}
breakdown["rest_s"] = (t2 - t1) - sum(breakdown.values())
print(json.dumps({"import_and_read_s": t1 - t0, "first_call_s": t2 - t1, "process_s": t2 - t0,
                  "converged": int(b.converged.sum()), "first_call_breakdown": breakdown}))
"""


NOTES = """What dominates (profiled on this machine, 2026-11-22, with jax.profiler and XLA's pass timers):
- Warm: the Hessian of the profiled deviance on every iteration.  The batch program is vmapped over
  traits, so each Newton iteration computes f, g and H (second-order forward mode along k(k+1)/2 = 6
  directions) for all 1000 traits x 40 levels; the loop runs until the slowest trait converges (17
  iterations here, mean 7.6).  The fused per-level kernels of that Hessian take most of the time;
  no LAPACK call is left in the loop (closed-form 2 x 2 factorizations in structure-of-arrays form).
- First call: XLA's compile of the one batch program (~300 fusions), then tracing.  The program uses
  XLA's classic CPU fusion emitters (``CPU_COMPILER_OPTIONS`` in ``core/pls/programs.py``), which compile it in
  about half the time of the newer MLIR emitters for a slightly slower run."""


def child_first_call(path, cache_dir) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(cache_dir)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def statsmodels_per_trait(data, traits) -> tuple[float, int]:
    import warnings

    import statsmodels.formula.api as smf

    times, failed = [], 0
    for t in traits:
        sub = data[["g", "x", t]].dropna().rename(columns={t: "y"})
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                smf.mixedlm("y ~ x", sub, groups=sub["g"], re_formula="~x").fit(reml=True)
            except Exception:
                failed += 1
        times.append(time.perf_counter() - t0)
    return float(np.mean(times)), failed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-r", action="store_true")
    ap.add_argument("--statsmodels-traits", type=int, default=20)
    args = ap.parse_args()

    import jaxlmm

    path = SHARED / "bench" / "traits_1k.csv"
    data = pd.read_csv(path)
    traits = [c for c in data.columns if c.startswith("trait")]

    with tempfile.TemporaryDirectory() as cache:
        cold = child_first_call(path, cache)
        warm_cache = child_first_call(path, cache)

    def run(dtype=None):
        return jaxlmm.lmer(FORMULA, data, responses=traits, progress=False, dtype=dtype)

    run()
    best, median, b64 = timed(run, 5)
    run("float32")
    best32, median32, b32 = timed(lambda: run("float32"), 5)

    ref = pd.read_csv(HERE / "reference" / "traits_1k_lme4.csv")
    crit_ref = ref["criterion"].to_numpy()
    crit = b64.criterion.to_numpy()
    rel = (crit - crit_ref) / np.abs(crit_ref)
    ok32 = b32.converged.to_numpy() & b64.converged.to_numpy()
    f32 = {
        "converged": int(b32.converged.sum()),
        "max_rel_criterion_diff": float(np.max(np.abs(b32.criterion - b64.criterion)[ok32] / np.abs(b64.criterion[ok32]))),
        "median_abs_beta_diff": float(np.median(np.abs(b32.fixef - b64.fixef).to_numpy()[ok32])),
        "max_abs_beta_diff_over_se": float(np.max((np.abs(b32.fixef - b64.fixef) / b64.se).to_numpy()[ok32])),
        "max_abs_sigma_rel_diff": float(np.max(np.abs(b32.sigma / b64.sigma - 1)[ok32])),
    }

    lme4 = None
    if not args.skip_r and have_r():
        with tempfile.NamedTemporaryFile(suffix=".csv") as tmp:
            stdout, wall = run_r("traits_1k_lme4.R", path, tmp.name)
        lme4 = {"loop_wall_s": wall, "per_trait_ms": wall / len(traits) * 1000, "stdout": stdout.strip()[-400:]}

    sm_s, sm_failed = statsmodels_per_trait(data, traits[:args.statsmodels_traits])

    payload = {
        "machine": machine(),
        "workload": f"traits_1k: {len(traits)} traits, {len(data)} rows, {FORMULA}, ~5% missing per trait",
        "jaxlmm": {
            "warm_best_s": best, "warm_median_s": median,
            "first_call_cold_cache_s": cold["first_call_s"], "process_cold_cache_s": cold["process_s"],
            "first_call_cold_cache_breakdown": cold["first_call_breakdown"],
            "first_call_warm_persistent_cache_s": warm_cache["first_call_s"],
            "float32_warm_best_s": best32, "float32_warm_median_s": median32,
            "converged": int(b64.converged.sum()), "singular": int(b64.is_singular.sum()),
            "criterion_vs_lme4": {"worse_by_more_than_1e-6_rel": int(np.sum(rel > 1e-6)),
                                  "max_rel_diff": float(rel.max()), "min_rel_diff": float(rel.min())},
            "float32_vs_float64": f32,
        },
        "lme4": lme4,
        "statsmodels": {"traits_timed": args.statsmodels_traits, "per_trait_s": sm_s, "failed": sm_failed},
    }
    lines = [f"# traits_1k benchmark ({payload['machine']['date']})", "",
             f"Machine: {payload['machine'].get('cpu', '?')}, {payload['machine']['cpus']} CPUs; "
             f"jax {payload['machine']['jax']}; {payload['machine'].get('R', 'R not available')}", "",
             f"Workload: {payload['workload']}", "",
             "| what | time | ratio |", "|---|---|---|"]
    lines.append(f"| jaxlmm, all traits, warm (best of 5) | {best:.3f} s | 1 |")
    lines.append(f"| jaxlmm, first call, empty compilation cache | {cold['first_call_s']:.2f} s | |")
    lines.append(f"| jaxlmm, first call in a new process, warm persistent cache | "
                 f"{warm_cache['first_call_s']:.2f} s | |")
    lines.append(f"| jaxlmm float32, warm | {best32:.3f} s | |")
    if lme4:
        lines.append(f"| lme4 loop (lmer per trait), measured in this run | {lme4['loop_wall_s']:.1f} s "
                     f"({lme4['per_trait_ms']:.1f} ms/trait) | {lme4['loop_wall_s'] / best:.0f}x slower |")
    lines.append(f"| statsmodels MixedLM per trait (mean of {args.statsmodels_traits}) | {sm_s * 1000:.1f} ms/trait "
                 f"(x{len(traits)} = {sm_s * len(traits):.1f} s) | {sm_s * len(traits) / best:.0f}x slower |")
    bd = cold["first_call_breakdown"]
    lines += ["", f"First call with an empty cache: tracing {bd['trace_s']:.2f} s, lowering {bd['lower_s']:.2f} s, "
              f"XLA compile {bd['xla_compile_s']:.2f} s, the rest (front end, transfers, the run) {bd['rest_s']:.2f} s.",
              "", NOTES]
    lines += ["", f"Criterion vs lme4: {payload['jaxlmm']['criterion_vs_lme4']}",
              f"float32 vs float64: {f32}"]
    write_results("traits_cpu", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
