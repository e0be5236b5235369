"""Benchmark: inference against lme4/lmerTest/pbkrtest in one run.

Run:  python benchmarks/inference.py [--skip-r]

- sleepstudy ``Reaction ~ Days + (Days | Subject)``: parametric bootstrap with
  1000 replicates (``use_u=False``; lme4's ``bootMer``), profile CIs
  (``confint(method="profile")``), warm (best of 3) and first call;
- Kenward-Roger (and Satterthwaite) df on ``y ~ x + (1 | g)`` with N rows and N/10
  groups, for the N of r/bootstrap_profile_lme4.R up to 20,000 (pbkrtest runs until
  a size takes over 120 s).
R runs r/bootstrap_profile_lme4.R in the same run (unless --skip-r, then the
committed reference/lme4_inference_timing.json is shown, marked as such).
Writes benchmarks/results/inference_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from _common import HERE, SHARED, have_r, machine, run_r, timed, write_results

SIZES = [500, 1000, 2000, 4000, 8000, 20000]


def kr_data(N: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ng = N // 10
    g = np.arange(N) % ng
    x = rng.normal(size=N)
    y = 1 + 0.5 * x + rng.normal(size=ng)[g] + rng.normal(size=N)
    return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-r", action="store_true")
    args = ap.parse_args()

    import jaxlmm

    sleep = jaxlmm.load_dataset("sleepstudy")
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)

    t0 = time.perf_counter()
    fit.bootstrap(1000, seed=1)
    boot_first = time.perf_counter() - t0
    boot_best, _, boot = timed(lambda: fit.bootstrap(1000, seed=2), 3)

    t0 = time.perf_counter()
    jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep).confint(method="profile")
    prof_first = time.perf_counter() - t0
    prof_best, _, ci = timed(lambda: jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
                             .confint(method="profile"), 3)

    kr_rows = []
    for N in SIZES:
        data = kr_data(N)
        t0 = time.perf_counter()
        m = jaxlmm.lmer("y ~ x + (1 | g)", data)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        table = m.coef_table("kenward-roger")
        kr_first = time.perf_counter() - t0
        kr_best, _, table = timed(lambda: jaxlmm.lmer("y ~ x + (1 | g)", data).coef_table("kenward-roger"), 2)
        sat_best, _, _ = timed(lambda: jaxlmm.lmer("y ~ x + (1 | g)", data).coef_table("satterthwaite"), 2)
        kr_rows.append({"N": N, "fit_first_s": fit_s, "kr_first_call_s": kr_first,
                        "fit_plus_kr_warm_s": kr_best, "fit_plus_satterthwaite_warm_s": sat_best,
                        "df_x": float(table.loc["x", "df"])})

    r_source = "reference/lme4_inference_timing.json (committed; not run now)"
    r = json.loads((HERE / "reference" / "lme4_inference_timing.json").read_text())
    if not args.skip_r and have_r():
        stdout, _ = run_r("bootstrap_profile_lme4.R", SHARED / "data", timeout=1800)
        r = json.loads(stdout[stdout.index("{"):])
        r_source = "measured in this run"
    rs = r["sleepstudy"]
    r_kr = {row["N"]: row for row in r["kenward_roger"]}

    payload = {
        "machine": machine(), "r_source": r_source, "r": r,
        "jaxlmm": {
            "bootstrap_1000_first_s": boot_first, "bootstrap_1000_warm_s": boot_best,
            "bootstrap_sd": boot.std(ddof=1).to_dict() if hasattr(boot, "std") else None,
            "profile_confint_first_s": prof_first, "profile_confint_warm_s": prof_best,
            "kenward_roger": kr_rows,
        },
    }
    m = payload["machine"]
    lines = [f"# Inference benchmark ({m['date']})", "",
             f"Machine: {m.get('cpu', '?')}, {m['cpus']} CPUs; jax {m['jax']}; R: {r_source}", "",
             "| sleepstudy `Reaction ~ Days + (Days \\| Subject)` | jaxlmm warm | jaxlmm first call | lme4 | ratio |",
             "|---|---|---|---|---|",
             f"| parametric bootstrap, 1000 replicates | {boot_best:.3f} s | {boot_first:.2f} s | "
             f"{rs['bootmer_s']:.2f} s (bootMer) | {rs['bootmer_s'] / boot_best:.0f}x |",
             f"| profile CIs, all parameters | {prof_best:.3f} s | {prof_first:.2f} s | "
             f"{rs['confint_profile_s']:.2f} s (confint) | {rs['confint_profile_s'] / prof_best:.0f}x |", "",
             "Kenward-Roger df, `y ~ x + (1 | g)`, N rows, N/10 groups (jaxlmm: fit + KR table, warm; "
             "pbkrtest: lmerTest `summary(m, ddf = \"Kenward-Roger\")` after the fit)", "",
             "| N | jaxlmm fit + KR | jaxlmm first call (fit, KR) | jaxlmm fit + Satterthwaite | pbkrtest KR | df(x) jaxlmm / pbkrtest (different random draws) |",
             "|---|---|---|---|---|---|"]
    for row in kr_rows:
        rk = r_kr.get(row["N"], {})
        pb = (f"{rk['kr_summary_s']:.2f} s" if "kr_summary_s" in rk and "error" not in rk
              else (f"failed: {rk.get('error', '')[:40]}" if rk else "not run"))
        pdf = f"{rk['df_x']:.1f}" if "df_x" in rk else "-"
        lines.append(f"| {row['N']} | {row['fit_plus_kr_warm_s']:.3f} s | {row['fit_first_s']:.2f} s, "
                     f"{row['kr_first_call_s']:.2f} s | {row['fit_plus_satterthwaite_warm_s']:.3f} s | {pb} | "
                     f"{row['df_x']:.1f} / {pdf} |")
    write_results("inference_cpu", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
