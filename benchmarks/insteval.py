"""Benchmark: the InstEval fit (73,421 rows; 2,972 students x 1,128 lecturers, crossed), against lme4.

    y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)      (REML)

Run:  python benchmarks/insteval.py [--skip-r] [--repeat 3] [--rows N]

Measures in one run on this machine:
- jaxlmm: the whole ``jaxlmm.lmer`` call warm (best and median of ``--repeat``, after one
  untimed call that compiles), and the first call in a fresh process (compilation included,
  no persistent cache);
- lme4: ``lmer`` on lme4's own InstEval data (benchmarks/r/insteval_lme4.R, best of
  ``--repeat`` after a warm-up fit), timed inside R;
- parity of criterion, theta, beta and sigma with that lme4 fit and with
  tests/reference/insteval.json.
``--rows N`` fits only the first N rows (both programs), for a quick check of the script;
its results go to insteval_cpu_<N>rows.{json,md} instead of insteval_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings

import numpy as np

from _common import HERE, have_r, machine, run_r, timed, write_results

FORMULA = "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)"
REFERENCE = HERE.parent / "tests" / "reference" / "insteval.json"

FIRST_CALL = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import jaxlmm
sys.path.insert(0, sys.argv[1])
from insteval import insteval_frame
frame = insteval_frame(int(sys.argv[2]))
t1 = time.perf_counter()
fit = jaxlmm.lmer(sys.argv[3], frame)
fit.fixef
t2 = time.perf_counter()
print(json.dumps({"import_and_data_s": t1 - t0, "first_call_s": t2 - t1, "converged": bool(fit.converged)}))
"""


def insteval_frame(rows: int = 0):
    """jaxlmm's copy of lme4's InstEval with the factors the formula uses (the first ``rows`` rows)."""
    import jaxlmm

    frame = jaxlmm.load_dataset("insteval")
    if rows:
        frame = frame.iloc[:rows].copy()
    for col in ["s", "d", "dept", "service"]:
        frame[col] = frame[col].astype(str).astype("category") if frame[col].dtype == object else \
            frame[col].astype("category")
        frame[col] = frame[col].cat.remove_unused_categories()
    return frame


def first_call(rows: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    out = subprocess.run([sys.executable, "-c", FIRST_CALL, str(HERE), str(rows), FORMULA], capture_output=True,
                         text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def compare(fit, other: dict) -> dict:
    return {"criterion_rel": rel(fit.criterion, other["criterion"]),
            "theta_max_abs": float(np.max(np.abs(np.asarray(fit.theta) - np.asarray(other["theta"], float)))),
            "beta_max_rel": rel(fit.fixef.to_numpy(), other["beta"]),
            "sigma_rel": rel(fit.sigma, other["sigma"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-r", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rows", type=int, default=0, help="fit only the first ROWS rows (a quick check)")
    args = ap.parse_args()

    import jaxlmm

    warnings.simplefilter("ignore")
    frame = insteval_frame(args.rows)
    first = first_call(args.rows)
    fit = jaxlmm.lmer(FORMULA, frame)                                     # compiles
    best, median, fit = timed(lambda: jaxlmm.lmer(FORMULA, frame), args.repeat)
    jax_row = {"warm_best_s": best, "warm_median_s": median, **first, "converged": bool(fit.converged),
               "n_iter": fit.n_iter, "sparse_path": fit.model_data.sparse is not None,
               "criterion": float(fit.criterion), "theta": np.asarray(fit.theta).tolist(),
               "beta": fit.fixef.to_numpy().tolist(), "sigma": float(fit.sigma), "plan": str(fit.plan)}

    lme4 = None
    if not args.skip_r and have_r():
        out, _ = run_r("insteval_lme4.R", args.repeat, *([args.rows] if args.rows else []))
        lme4 = json.loads(out)
        for key in ("criterion", "sigma"):
            lme4[key] = float(np.asarray(lme4[key]).reshape(-1)[0])
    parity = {}
    if lme4 is not None:
        parity["vs_lme4_this_run"] = compare(fit, lme4)
    if not args.rows:
        ref = json.loads(REFERENCE.read_text())
        parity["vs_reference"] = compare(fit, {**ref, "beta": list(ref["beta"].values())})

    name = "insteval_cpu" if not args.rows else f"insteval_cpu_{args.rows}rows"
    payload = {"machine": machine(), "formula": FORMULA, "rows": len(frame), "repeat": args.repeat,
               "jaxlmm": jax_row, "lme4": lme4, "parity": parity}
    m = payload["machine"]
    lines = [f"# InstEval benchmark ({m['date']})", "",
             f"Machine: {m.get('cpu', '?')}, {m['cpus']} CPUs; jax {m['jax']}; {m.get('R', 'R not available')}", "",
             f"Workload: `{FORMULA}` (REML), {len(frame)} rows"
             + (f" (the first {args.rows} of InstEval: a quick check, not the benchmark)" if args.rows else ""), "",
             "| what | time | ratio |", "|---|---|---|",
             f"| jaxlmm `lmer`, warm (best of {args.repeat}; median {median:.2f} s) | {best:.2f} s | 1 |",
             f"| jaxlmm, first call in a new process (compilation, no persistent cache) | "
             f"{first['first_call_s']:.2f} s | |"]
    if lme4 is not None:
        ratio = lme4["best_s"] / best
        ratio_txt = f"{ratio:.1f}x slower" if ratio >= 1 else f"{1 / ratio:.1f}x faster"
        lines.append(f"| lme4 `lmer`, in R (best of {lme4['reps']}; median {lme4['median_s']:.2f} s) | "
                     f"{lme4['best_s']:.2f} s | {ratio_txt} |")
    lines += ["", f"jaxlmm: {jax_row['n_iter']} Newton iterations, converged: {jax_row['converged']}, sparse "
              f"cross block: {jax_row['sparse_path']}.", "", "Factorization plan (`fit.plan`; predicted, not measured):",
              "", "```", str(fit.plan), "```"]
    for k, v in parity.items():
        lines.append(f"Parity {k.replace('_', ' ')}: " + ", ".join(f"{a} {b:.2e}" for a, b in v.items()))
    write_results(name, payload, "\n".join(lines))


if __name__ == "__main__":
    main()
