"""Optimizers compared: Newton (default), L-BFGS (optax), BFGS (optimistix), Adam (optax).

Usage:  python benchmarks/optimizers.py [--traits 1000] [--repeats 3]   (the committed run: --repeats 2)

On the 15 shared reference fits (every ``shared/reference/*.json`` but InstEval)
and on ``shared/bench/traits_1k.csv`` (``~ x + (1 + x | g)``, one vmapped batch):

- iterations (a batch: mean and max over traits), failures (status not
  ``converged``), the criterion's relative gap to the best of the four (and to
  lme4's reference criterion for the single fits);
- warm wall time (best of ``--repeats`` calls, programs compiled) and cold wall
  time: each optimizer's 15 fits in a fresh Python process with nothing compiled
  and no persistent compilation cache (the first call of each case, which
  compiles that case's programs; programs shared between cases are compiled by
  the first case that needs them), and the traits batch in a fresh process;
- lme4 (``r/optimizers_lme4.R``: bobyqa, lme4's default) timed in the same run
  on the reference fits when Rscript with lme4 is present.

Writes ``results/optimizers_cpu.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from _common import HERE, SHARED, have_r, machine, run_r, write_results

OPTIMIZERS = ["newton", "lbfgs", "bfgs", "adam"]
TRAITS_FORMULA = "~ x + (1 + x | g)"


_MADE: dict = {}


def make_optimizer(name: str):
    """One object per name and process: a new optax object (new closures) compiles its fit program anew."""
    if name not in _MADE:
        _MADE[name] = _new_optimizer(name)
    return _MADE[name]


def _new_optimizer(name: str):
    if name == "newton":
        return None
    if name == "lbfgs":
        import optax

        return optax.lbfgs()
    if name == "bfgs":
        import optimistix as optx

        return optx.BFGS(rtol=1e-10, atol=1e-10)
    if name == "adam":
        import optax

        return optax.adam(2e-2)
    raise ValueError(name)


def reference_cases() -> list[dict]:
    cases = []
    for path in sorted((SHARED / "reference").glob("*.json")):
        if path.stem == "insteval":
            continue
        ref = json.loads(path.read_text())
        ref["case"] = path.stem
        cases.append(ref)
    return cases


def case_frame(ref: dict):
    import jaxlmm

    frame = jaxlmm.load_dataset(ref["data"].removesuffix(".csv"))
    factors = [ref["factors"]] if isinstance(ref["factors"], str) else ref["factors"]
    for col in factors:
        frame[col] = frame[col].astype(str).astype("category")
    return frame


def fit_case(ref: dict, frame, name: str):
    import jaxlmm

    return jaxlmm.lmer(ref["formula"], frame, reml=bool(ref.get("reml", True)), optimizer=make_optimizer(name))


# ----------------------------------------------------------------------------- workers (fresh processes)
def worker_cases(name: str, repeats: int) -> dict:
    """Each reference case: first call (cold) and best of ``repeats`` later calls (warm)."""
    import warnings

    warnings.simplefilter("ignore")
    out = {}
    for ref in reference_cases():
        frame = case_frame(ref)
        t0 = time.perf_counter()
        fit = fit_case(ref, frame, name)
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fit_case(ref, frame, name)
            warm.append(time.perf_counter() - t0)
        out[ref["case"]] = dict(cold=cold, warm=min(warm), criterion=float(fit.criterion), n_iter=fit.n_iter,
                                status=fit.status, theta=[float(t) for t in fit.theta])
    return out


def worker_traits(name: str, repeats: int, n_traits: int) -> dict:
    import warnings

    import pandas as pd

    import jaxlmm

    warnings.simplefilter("ignore")
    data = pd.read_csv(SHARED / "bench" / "traits_1k.csv")
    data["g"] = data["g"].astype(str).astype("category")
    traits = [c for c in data.columns if c.startswith("trait")][:n_traits]

    def run():
        return jaxlmm.lmer(TRAITS_FORMULA, data, responses=traits, optimizer=make_optimizer(name),
                           progress=False)

    t0 = time.perf_counter()
    batch = run()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        warm.append(time.perf_counter() - t0)
    return dict(cold=cold, warm=min(warm), criterion=batch.criterion.to_numpy().tolist(),
                n_iter=batch.n_iter.to_numpy().tolist(), status=batch.status.tolist())


def _fresh(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        subprocess.run([sys.executable, __file__, "--worker", *args, "--out", tmp.name], check=True, env=env)
        return json.loads(open(tmp.name).read())


# ----------------------------------------------------------------------------- report
def _gap(value, best):
    return (value - best) / abs(best)


def report(cases: dict, traits: dict, lme4: dict | None, info: dict, n_traits: int) -> tuple[dict, str]:
    refs = {r["case"]: r for r in reference_cases()}
    rows = []
    for case in refs:
        best = min(cases[o][case]["criterion"] for o in OPTIMIZERS)
        for o in OPTIMIZERS:
            r = cases[o][case]
            rows.append(dict(case=case, optimizer=o, n_iter=r["n_iter"], status=r["status"], cold_s=r["cold"],
                             warm_s=r["warm"], gap_to_best=_gap(r["criterion"], best),
                             gap_to_lme4=_gap(r["criterion"], refs[case]["criterion"]),
                             theta_on_zero=int(sum(t == 0.0 for t in r["theta"]))))
    summary = []
    for o in OPTIMIZERS:
        mine = [r for r in rows if r["optimizer"] == o]
        t = traits[o]
        crit = np.asarray(t["criterion"])
        best = np.nanmin(np.stack([np.asarray(traits[x]["criterion"]) for x in OPTIMIZERS]), axis=0)
        summary.append(dict(
            optimizer=o, cases_failed=sum(r["status"] != 0 for r in mine),
            cases_max_gap=max(r["gap_to_best"] for r in mine),
            cases_iter_total=sum(r["n_iter"] for r in mine),
            cases_cold_s=sum(r["cold_s"] for r in mine), cases_warm_s=sum(r["warm_s"] for r in mine),
            traits_failed=int(sum(s != "converged" for s in t["status"])),
            traits_iter_mean=float(np.mean(t["n_iter"])), traits_iter_max=int(np.max(t["n_iter"])),
            traits_max_gap=float(np.nanmax((crit - best) / np.abs(best))),
            traits_cold_s=t["cold"], traits_warm_s=t["warm"]))
    payload = dict(machine=info, n_traits=n_traits, summary=summary, cases=rows, lme4=lme4)
    return payload, markdown(payload)


NOTES = """## Reading

- Criterion: L-BFGS and BFGS reach the best criterion to ~1e-11 relative on every reference fit and
  ~5e-13 on every trait; singular fits land on theta = 0 exactly (the last column). Adam (a fixed
  learning rate on the exact gradient) needs hundreds of iterations, and on `clusters` (theta ~ 59,
  far from its start at 1) 10000 are not enough.
- Cold: a first-order fit compiles the whole blocked fit program (criterion, optimizer loop,
  estimates; XLA's backend optimizations off on a CPU) for each model shape and optimizer, up to
  ~25 s per reference fit in this run (cases of one shape reuse it: 0.02 s); Newton's small fits
  share the dense programs of their size bucket, so its 15 cold fits cost ~10 s in all.
  A new optax object (new closures) is a new static argument: keep one object per session.
- Warm: a first-order single fit is one jitted call (~10-50 ms here); the default Newton's small fits
  drive their loop from the host (a call per iteration), which costs more per fit at these sizes.
- The committed run (`--repeats 2`) shared the 2 cores with other jobs (load average 6-9): timings
  are several times the figures of a quiet machine; the ratios between optimizers hold better.
- 1000 traits: every trait's loop runs until the slowest trait of the batch stops, so Adam's batch
  costs its slowest trait's 3000+ iterations."""


def markdown(payload: dict) -> str:
    info, n_traits, summary, rows, lme4 = (payload[k] for k in ("machine", "n_traits", "summary", "cases", "lme4"))
    lines = [f"# Optimizers ({info['date']})", "",
             f"Machine: {info.get('cpu', '?')}, {info['cpus']} cores (a shared 2-core Xeon VM: timings +-20%); "
             f"JAX {info['jax']}.  `python benchmarks/optimizers.py` -- see its docstring for the method.", "",
             "Optimizers: `newton` (default projected Newton), `lbfgs` = `optax.lbfgs()`, "
             "`bfgs` = `optimistix.BFGS(rtol=1e-10, atol=1e-10)`, `adam` = `optax.adam(2e-2)`; first-order ones "
             "with jaxlmm's defaults (max_iter 10000, stop at max |projected gradient| <= 1e-7 (1 + |f|)).", "",
             "## Summary", "",
             "| optimizer | 15 fits: failed | max rel. gap to best | iterations (sum) | cold s (sum) | warm s (sum) "
             f"| {n_traits} traits: failed | iter mean / max | max rel. gap | cold s | warm s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['optimizer']} | {s['cases_failed']} | {s['cases_max_gap']:.1e} | {s['cases_iter_total']} "
                     f"| {s['cases_cold_s']:.1f} | {s['cases_warm_s']:.2f} | {s['traits_failed']} | "
                     f"{s['traits_iter_mean']:.0f} / {s['traits_iter_max']} | {s['traits_max_gap']:.1e} | "
                     f"{s['traits_cold_s']:.1f} | {s['traits_warm_s']:.2f} |")
    if lme4:
        lines += ["", f"lme4 {lme4['lme4_version']} (lmer's default optimizer, same run): the 15 fits in "
                  f"{lme4['total_s']:.2f} s warm, {sum(m['cold_s'] for m in lme4['models'].values()):.2f} s cold "
                  f"(first call in one R session), {sum(m['feval'] for m in lme4['models'].values())} "
                  "criterion evaluations."]
    lines += ["", "## Per reference fit", "",
              "| case | optimizer | iterations | status | cold s | warm s | rel. gap to best | rel. gap to lme4 "
              "| theta on 0 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['optimizer']} | {r['n_iter']} | {r['status']} | {r['cold_s']:.2f} | "
                     f"{r['warm_s']:.3f} | {r['gap_to_best']:.1e} | {r['gap_to_lme4']:.1e} | {r['theta_on_zero']} |")
    return "\n".join(lines[:lines.index("## Per reference fit")] + [NOTES, ""] + lines[lines.index("## Per reference fit"):])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=["cases", "traits"])
    ap.add_argument("--optimizer", default="newton")
    ap.add_argument("--out")
    ap.add_argument("--traits", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rewrite", action="store_true", help="rewrite the .md from the .json (no runs)")
    args = ap.parse_args()
    if args.rewrite:
        payload = json.loads((HERE / "results" / "optimizers_cpu.json").read_text())
        write_results("optimizers_cpu", payload, markdown(payload))
        return
    if args.worker:
        result = (worker_cases(args.optimizer, args.repeats) if args.worker == "cases"
                  else worker_traits(args.optimizer, args.repeats, args.traits))
        with open(args.out, "w") as fh:
            json.dump(result, fh)
        return
    common = ["--repeats", str(args.repeats), "--traits", str(args.traits)]
    cases = {o: _fresh(["cases", "--optimizer", o] + common) for o in OPTIMIZERS}
    traits = {o: _fresh(["traits", "--optimizer", o] + common) for o in OPTIMIZERS}
    lme4 = None
    if have_r():
        stdout, _ = run_r("optimizers_lme4.R", HERE.parent / "src" / "jaxlmm" / "datasets", SHARED / "reference")
        lme4 = json.loads(stdout)
    payload, text = report(cases, traits, lme4, machine(), args.traits)
    write_results("optimizers_cpu", payload, text)


if __name__ == "__main__":
    main()
