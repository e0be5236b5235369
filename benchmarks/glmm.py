"""GLMM speed (issue P.5, P.6): jaxlmm.glmer against lme4::glmer and glmmTMB timed in the same run.

Workloads: Contraception (``use ~ age + I(age^2) + urban + livch + (1 | urban:district)``, 1934 rows),
VerbAgg (``r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)``, 7584 rows, crossed), Contraception
replicated 40x (77k rows, 4080 districts), and 1000 binary traits ``~ x + (1 | g)`` (2000 rows, 100 groups;
lme4's per-trait loop timed on the first ``--r-traits`` traits).  jaxlmm's first fit of a new model is timed
cold in a fresh process (import, then the fit: no compiled program in any cache); warm fits are the best of
three.  mixedlm 1.3.0 (the Python peer) is timed in its own environment, ``~/.peervenv`` (``peer/glmm_mixedlm.py``),
where it exists.  Writes results/glmm_cpu.{json,md}.

usage: python benchmarks/glmm.py [--r-traits 50] [--traits 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
import sys
import time
import warnings

import numpy as np
import pandas as pd

from _common import HERE, SHARED, have_r, machine, run_r, timed, write_results

REF = HERE.parent / "tests" / "reference" / "glmm"
CONTRACEPTION = "use01 ~ age + I(age^2) + urban + livch + (1 | urban_district)"
VERBAGG = "r2_01 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)"


def contraception(copies: int = 1) -> pd.DataFrame:
    d = pd.read_csv(REF / "shared" / "contraception.csv")
    d["livch"] = pd.Categorical(d["livch"].astype(str), categories=["0", "1", "2", "3+"])
    parts = []
    for i in range(copies):
        c = d.copy()
        c["urban_district"] = c["urban_district"].astype(str) + (f"_{i}" if copies > 1 else "")
        parts.append(c)
    return pd.concat(parts, ignore_index=True)


def verbagg() -> pd.DataFrame:
    d = pd.read_csv(REF / "project" / "verbagg.csv")
    d["btype"] = pd.Categorical(d["btype"], categories=["curse", "scold", "shout"])
    for c in ("id", "item"):
        d[c] = d[c].astype(str)
    return d


COLD = """
import time; t0 = time.perf_counter()
import jaxlmm, pandas as pd, json, sys
sys.path.insert(0, {here!r}); from glmm import contraception, CONTRACEPTION
t1 = time.perf_counter(); d = contraception()
fit = jaxlmm.glmer(CONTRACEPTION, d, family="binomial")
t2 = time.perf_counter(); fit = jaxlmm.glmer(CONTRACEPTION, d, family="binomial"); t3 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "first_fit": t2 - t1, "second_fit": t3 - t2, "loglik": fit.loglik}}))
"""


def cold_first_fit() -> dict:
    out = subprocess.run([sys.executable, "-c", COLD.format(here=str(HERE))], capture_output=True, text=True,
                         timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import jaxlmm

    ap = argparse.ArgumentParser()
    ap.add_argument("--r-traits", type=int, default=50)
    ap.add_argument("--traits", type=int, default=1000, help="traits of the batch (beyond 1000: the 1000 repeated)")
    ap.add_argument("--skip-r", action="store_true", help="jaxlmm only (the GPU run: benchmarks/gpu.sh)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    res: dict = {"machine": machine(), "cold": cold_first_fit(), "args": vars(args)}
    for name, formula, frame, repeat in [("contraception", CONTRACEPTION, contraception(), 3),
                                         ("verbagg", VERBAGG, verbagg(), 3),
                                         ("contraception40", CONTRACEPTION, contraception(40), 2)]:
        t0 = time.perf_counter()
        fit = jaxlmm.glmer(formula, frame, family="binomial")
        first = time.perf_counter() - t0
        best, median, fit = timed(lambda: jaxlmm.glmer(formula, frame, family="binomial"), repeat)
        res[name] = {"first_in_process": first, "warm_best": best, "warm_median": median, "loglik": fit.loglik,
                     "n_iter": fit.n_iter, "status": fit.status_name}
        print(name, res[name], flush=True)
    traits = pd.read_csv(SHARED / "bench" / "glmm" / "binary_traits.csv.gz")
    names = [c for c in traits.columns if c not in ("g", "x")]
    reps = -(-args.traits // len(names))
    Yall = pd.concat([traits[names].add_suffix(f"_{r}") for r in range(reps)], axis=1) if reps > 1 else traits[names]
    names = list(Yall.columns[:args.traits])
    traits = pd.concat([traits[["g", "x"]], Yall[names]], axis=1)
    covariates = traits[["g", "x"]].assign(g=traits["g"].astype(str))
    t0 = time.perf_counter()
    batch = jaxlmm.glmer("~ x + (1 | g)", covariates, family="binomial", responses=traits[names])
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch = jaxlmm.glmer("~ x + (1 | g)", covariates, family="binomial", responses=traits[names])
    warm = time.perf_counter() - t0
    res["traits"] = {"n": len(names), "first_call": first, "warm": warm, "per_trait_ms": 1e3 * warm / len(names),
                     "converged": int(batch.converged.sum()), "loglik": batch.loglik.tolist()}
    print("traits", {k: v for k, v in res["traits"].items() if k != "loglik"}, flush=True)
    if have_r() and not args.skip_r:
        out, _ = run_r("glmm_lme4.R", REF / "shared" / "contraception.csv", REF / "project" / "verbagg.csv",
                       SHARED / "bench" / "glmm" / "binary_traits.csv.gz", args.r_traits, timeout=3600)
        res["R"] = json.loads(out)
    peer = Path.home() / ".peervenv" / "bin" / "python"
    if peer.exists() and not args.skip_r:
        out = subprocess.run([str(peer), str(HERE / "peer" / "glmm_mixedlm.py"), str(REF),
                              str(SHARED / "bench" / "glmm" / "binary_traits.csv.gz"), str(args.r_traits)],
                             capture_output=True, text=True, timeout=3600)
        if out.returncode == 0:
            res["mixedlm"] = json.loads(out.stdout.strip().splitlines()[-1])
    write_results("glmm_cpu", res, markdown(res))


def markdown(res: dict) -> str:
    R = res.get("R", {})
    m = res["machine"]
    lines = [f"# GLMM speed (issue P): jaxlmm.glmer against lme4 and glmmTMB, same run",
             "", f"Machine: {m.get('cpu', '?')}, {m['cpus']} CPUs, jax {m['jax']}, {m.get('R', 'no R')}; "
             f"date {m['date']}.", "",
             "| workload | jaxlmm warm | lme4 glmer | glmmTMB | mixedlm 1.3.0 | vs glmer | vs glmmTMB | vs mixedlm | "
             "logLik jaxlmm − best R |",
             "|---|---|---|---|---|---|---|---|---|"]
    P = res.get("mixedlm", {})
    for name, g, t in [("contraception", "contraception_glmer", "contraception_glmmTMB"),
                       ("verbagg", "verbagg_glmer", "verbagg_glmmTMB"),
                       ("contraception40", None, "contraception40_glmmTMB")]:
        ours = res[name]["warm_best"]
        rg, rt = R.get(g, {}) if g else {}, R.get(t, {})
        best_ll = max([v["loglik"] for v in (rg, rt) if v] or [np.nan])
        pm = P.get(name, {}).get("warm_best", np.nan)
        lines.append(f"| {name} | {ours:.3f} s | {rg.get('seconds', float('nan')):.2f} s | "
                     f"{rt.get('seconds', float('nan')):.2f} s | {pm:.2f} s | {rg.get('seconds', np.nan) / ours:.1f}× | "
                     f"{rt.get('seconds', np.nan) / ours:.1f}× | {pm / ours:.1f}× | {res[name]['loglik'] - best_ll:+.2e} |")
    tr = res["traits"]
    per = R.get("traits_glmer", {}).get("seconds_per_trait", np.nan)
    lines += ["", f"1000 binary traits `~ x + (1 | g)`: jaxlmm {tr['n']} traits first call {tr['first_call']:.1f} s, "
              f"warm {tr['warm']:.1f} s ({tr['per_trait_ms']:.1f} ms/trait, {tr['converged']} converged); "
              f"lme4's loop {1e3 * per:.0f} ms/trait (timed on {R.get('traits_glmer', {}).get('ntraits', 0)} traits): "
              f"{per * 1e3 / tr['per_trait_ms']:.1f}× warm; mixedlm's loop "
              f"{1e3 * P.get('traits', {}).get('seconds_per_trait', np.nan):.0f} ms/trait."]
    if "traits_glmer" in R:
        ll = np.asarray(R["traits_glmer"]["loglik"])
        ours = np.asarray(tr["loglik"])[:len(ll)]
        lines.append(f"Largest amount by which a trait's logLik is below lme4's: {max(0.0, np.max(ll - ours)):.2e}.")
    c = res["cold"]
    lines += ["", f"Cold first fit (fresh process, no compilation cache): import {c['import']:.2f} s, first Contraception "
              f"fit {c['first_fit']:.2f} s, second {c['second_fit']:.3f} s"
              + (f"; mixedlm: import {P['import']:.2f} s, first fit {P['contraception']['first']:.2f} s." if P else ".")]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
