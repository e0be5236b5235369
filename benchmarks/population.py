"""A population of random models fitted one after another in one process, against lme4 (issue U).

Usage:
    python benchmarks/population.py CASEDIR [--limit N] [--name population_cpu]

``CASEDIR`` holds problems made by ``shared/fuzz/make_cases.py SEED N CASEDIR`` and their lme4
1.1-31 fits made by ``Rscript shared/fuzz/lme4_refs.R CASEDIR`` (``CASEDIR/lme4/case_NNN.json``:
lme4's default fit, a tight bobyqa refit where lme4 warned, and ``best`` of the two).

One fresh Python process (``import jaxlmm`` not counted) fits every case twice, as a long notebook
session would: the first fit of a case is *cold* for its shape (whatever it compiles is compiled
then; nothing is in the persistent cache: ``JAXLMM_CACHE`` is not used), the second is *warm*.
Recorded per case: both times, the criterion against lme4's best (relative difference
``(jaxlmm - lme4) / max(1, |lme4|)``), converged/status/messages, and the process's memory maps
and resident memory after the case.  lme4's time is its default fit's (``time_default``), measured
by ``lme4_refs.R`` on the same machine.

Writes ``results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from _common import machine, write_results

TOL = 1e-6  # relative: jaxlmm's criterion may exceed lme4's best by at most this


def read_case(casedir: Path, spec: dict):
    import pandas as pd

    data = pd.read_csv(casedir / spec["csv"], dtype={f: str for f in spec.get("factors") or []})
    for f in spec.get("factors") or []:
        data[f] = pd.Categorical(data[f], categories=sorted(data[f].dropna().unique()))
    return data


def maps_and_rss() -> tuple[int, float]:
    with open("/proc/self/maps") as fh:
        maps = sum(1 for _ in fh)
    rss = 0.0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = float(line.split()[1]) / 1024
    return maps, rss


def fit_case(jaxlmm, data, spec: dict):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        fit = jaxlmm.lmer(spec["formula"], data, reml=bool(spec["reml"]), weights=spec.get("weights"))
        wall = time.perf_counter() - t0
    return fit, wall, [str(w.message) for w in caught]


def run_population(casedir: Path, limit: int | None) -> list[dict]:
    import jaxlmm

    rows = []
    specs = sorted(casedir.glob("case_*.json"))[:limit]
    for path in specs:
        spec = json.loads(path.read_text())
        ref_path = casedir / "lme4" / path.name
        ref = json.loads(ref_path.read_text()) if ref_path.exists() else {}
        data = read_case(casedir, spec)
        row = {"id": spec["id"], "formula": spec["formula"], "reml": bool(spec["reml"]), "nrows": len(data)}
        try:
            fit, cold, messages = fit_case(jaxlmm, data, spec)
            _, warm, _ = fit_case(jaxlmm, data, spec)
            row.update(cold=cold, warm=warm, criterion=float(fit.criterion), converged=bool(fit.converged),
                       status=int(fit.status), messages=messages, theta=np.asarray(fit.theta).tolist())
        except Exception as exc:  # a population run records failures, it does not stop on them
            row.update(error=f"{type(exc).__name__}: {exc}")
        best = (ref.get("best") or {}).get("criterion")
        if best is not None and "criterion" in row:
            row["lme4"] = best
            row["rel_diff"] = (row["criterion"] - best) / max(1.0, abs(best))
        if ref.get("time_default") is not None:
            row["lme4_time"] = ref["time_default"]
        if ref.get("error"):
            row["lme4_error"] = ref["error"]
        row["maps"], row["rss_mb"] = maps_and_rss()
        rows.append(row)
        print(f"{row['id']} {row.get('cold', float('nan')):7.3f}s {row.get('warm', float('nan')):7.3f}s "
              f"{row.get('rel_diff', float('nan')):+.2e} conv={row.get('converged')} maps={row['maps']} "
              f"{row.get('error', '')}", file=sys.stderr, flush=True)
    return rows


def release_cost() -> dict:
    """What the program budget's release costs (``jaxlmm._program_budget``): a fit of sleepstudy warm,
    and again right after the compiled programs were dropped (compiled anew; no persistent cache)."""
    import jaxlmm
    from jaxlmm import _program_budget

    sleep = jaxlmm.load_dataset("sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    jaxlmm.lmer(formula, sleep)
    warm = []
    for _ in range(5):
        t0 = time.perf_counter()
        jaxlmm.lmer(formula, sleep)
        warm.append(time.perf_counter() - t0)
    _program_budget.release()
    t0 = time.perf_counter()
    jaxlmm.lmer(formula, sleep)
    return {"warm_fit": float(np.median(warm)), "fit_after_release": time.perf_counter() - t0,
            "releases_during_population": _program_budget.releases() - 1}


def summarize(rows: list[dict]) -> dict:
    fitted = [r for r in rows if "criterion" in r]
    compared = [r for r in fitted if "rel_diff" in r]
    d = np.array([r["rel_diff"] for r in compared])
    cold = np.array([r["cold"] for r in fitted])
    warm = np.array([r["warm"] for r in fitted])
    lme4 = np.array([r["lme4_time"] for r in rows if "lme4_time" in r])
    flagged = [r for r in fitted if not r["converged"]]
    return {
        "cases": len(rows), "fitted": len(fitted), "errors": len(rows) - len(fitted), "compared": len(compared),
        "agree_1e-7": int(np.sum(np.abs(d) <= 1e-7)),
        "lower_than_lme4": int(np.sum(d < -TOL)),
        "higher_than_lme4": int(np.sum(d > TOL)),
        "higher_ids": [r["id"] for r in compared if r["rel_diff"] > TOL],
        "not_converged": len(flagged), "not_converged_ids": [r["id"] for r in flagged],
        "cold_median": float(np.median(cold)), "cold_p90": float(np.quantile(cold, 0.9)), "cold_max": float(cold.max()),
        "warm_median": float(np.median(warm)), "warm_p90": float(np.quantile(warm, 0.9)),
        "lme4_median": float(np.median(lme4)) if len(lme4) else None,
        "lme4_max": float(lme4.max()) if len(lme4) else None,
        "peak_maps": max(r["maps"] for r in rows), "peak_rss_mb": max(r["rss_mb"] for r in rows),
    }


def markdown(s: dict, casedir: Path, info: dict) -> str:
    lines = [f"# Random model population against lme4 ({casedir.name}, {s['cases']} cases)", "",
             f"{info.get('cpu', '?')}, {info['cpus']} CPUs; jax {info['jax']}; {info.get('R', 'R not found')}", "",
             "| | result |", "|---|---|",
             f"| criterion agrees with lme4's best (1e-7 relative) | {s['agree_1e-7']} of {s['compared']} |",
             f"| jaxlmm lower than lme4 by > 1e-6 | {s['lower_than_lme4']} |",
             f"| jaxlmm higher than lme4 by > 1e-6 | {s['higher_than_lme4']} {s['higher_ids']} |",
             f"| not converged (flagged) | {s['not_converged']} {s['not_converged_ids']} |",
             f"| errors | {s['errors']} |",
             f"| peak memory maps / resident memory | {s['peak_maps']} / {s['peak_rss_mb']:.0f} MB |",
             f"| first fit per case (compile included): median / p90 / max | {s['cold_median']:.3f} / "
             f"{s['cold_p90']:.3f} / {s['cold_max']:.3f} s |",
             f"| second fit: median / p90 | {s['warm_median']:.4f} / {s['warm_p90']:.4f} s |",
             f"| lme4 default fit: median / max | {s['lme4_median']} / {s['lme4_max']} s |",
             f"| program budget: releases during the population | {s['release']['releases_during_population']} |",
             f"| sleepstudy fit warm / right after a release (compiled anew) | {s['release']['warm_fit']:.4f} / "
             f"{s['release']['fit_after_release']:.3f} s |"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("casedir", type=Path)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--name", default="population_cpu")
    args = ap.parse_args()
    info = machine()
    rows = run_population(args.casedir, args.limit)
    s = summarize(rows)
    s["release"] = release_cost()
    write_results(args.name, {"machine": info, "summary": s, "cases": rows}, markdown(s, args.casedir, info))


if __name__ == "__main__":
    main()
