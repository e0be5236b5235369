"""Cold latency: what a new user waits for, in fresh processes, next to lme4 timed in the same run.

Usage:  python benchmarks/latency.py [--nsim 1000] [--repeats 3]

Each jaxlmm measurement runs in a fresh Python process with nothing compiled
(JAX's in-memory caches empty; no persistent compilation cache unless the row
says so).  Steps, in the order a notebook user takes them:

1. ``import jaxlmm`` (reported apart), first ``lmer`` of sleepstudy
   ``Reaction ~ Days + (Days | Subject)``, then ``(1 | Subject)``;
2. ``confint(method="profile")``, ``coef_table(ddf="kenward-roger")`` and a
   1000-replicate parametric bootstrap of the first fit;
3. the 15 shared reference models (every ``shared/reference/*.json`` but
   InstEval) one after another: cold, and again in a new process after
   ``jaxlmm.enable_compilation_cache`` let a first process fill the cache;
4. ``jaxlmm fit --example sleepstudy`` as a whole process (warm cache) against
   ``Rscript`` fitting and printing the same model;
5. ``jax.jit(jax.hessian(jaxlmm.deviance_function(...)))`` for sleepstudy:
   compile time and the size of its StableHLO.

JAX's own compile events (``jax.monitoring``: tracing, lowering to MLIR, XLA
backend compile) are summed per step.  lme4 runs the same steps in one fresh
``Rscript`` (``r/latency_lme4.R``).  Writes ``results/latency_cpu.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import HERE, SHARED, have_r, machine, run_r, write_results

EVENTS = {
    "/jax/core/compile/tracing_duration": "trace",
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "xla",
}


# ----------------------------------------------------------------------------- workers (fresh processes)
def _listen(totals: dict):
    import jax

    def on_event(event, duration, **_):
        key = EVENTS.get(event)
        if key:
            totals[key] = totals.get(key, 0.0) + duration

    jax.monitoring.register_event_duration_secs_listener(on_event)


def _step(name, fn, out, totals):
    before = dict(totals)
    t0 = time.perf_counter()
    value = fn()
    out[name] = {"seconds": time.perf_counter() - t0,
                 **{k: totals.get(k, 0.0) - before.get(k, 0.0) for k in ("trace", "lower", "xla")}}
    return value


def worker_session(nsim: int) -> dict:
    t0 = time.perf_counter()
    import jaxlmm
    import jaxlmm.fitting.lmer  # jaxlmm imports lazily: load jax, pandas and formulaic here, as library(lme4) does

    out = {"import": {"seconds": time.perf_counter() - t0}}
    totals: dict = {}
    _listen(totals)
    data = jaxlmm.load_dataset("sleepstudy")
    first = _step("first_fit", lambda: jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", data), out, totals)
    _step("second_fit", lambda: jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data), out, totals)
    _step("profile", lambda: first.confint(method="profile"), out, totals)
    _step("kr", lambda: first.coef_table(ddf="kenward-roger"), out, totals)
    _step("bootstrap", lambda: first.bootstrap(nsim=nsim, seed=1), out, totals)
    _step("first_fit_again", lambda: jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", data), out, totals)
    return out


def _reference_cases():
    import pandas as pd

    cases = []
    for path in sorted((SHARED / "reference").glob("*.json")):
        if path.stem == "insteval":
            continue
        ref = json.loads(path.read_text())
        frame = pd.read_csv(SHARED / "data" / ref["data"])
        factors = [ref["factors"]] if isinstance(ref["factors"], str) else ref["factors"]
        for col in factors:
            frame[col] = frame[col].astype(str).astype("category")
        cases.append((path.stem, ref, frame))
    return cases


def worker_models(cache: str | None) -> dict:
    import warnings

    import jaxlmm

    if cache:
        jaxlmm.enable_compilation_cache(cache)
    totals: dict = {}
    _listen(totals)
    out = {}
    for name, ref, frame in _reference_cases():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = _step(name, lambda: jaxlmm.lmer(ref["formula"], frame, reml=ref["reml"]), out, totals)
        out[name]["criterion_gap"] = abs(fit.criterion - ref["criterion"])
    return out


def worker_hessian() -> dict:
    import jax
    import jax.numpy as jnp

    import jaxlmm

    data = jaxlmm.load_dataset("sleepstudy")
    with jax.enable_x64(True):
        f = jaxlmm.deviance_function("Reaction ~ Days + (Days | Subject)", data)
        theta = jnp.asarray([0.97, 0.015, 0.23])
        t0 = time.perf_counter()
        lowered = jax.jit(jax.hessian(f)).lower(theta)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        compiled(theta).block_until_ready()
        return {"lower": t1 - t0, "compile": t2 - t1, "stablehlo_lines": len(lowered.as_text().splitlines())}


def run_worker(mode: str, *args, env=None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- whole processes
def time_process(cmd, env=None, repeats=3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd} failed:\n{proc.stderr[-2000:]}")
        best = min(best, time.perf_counter() - t0)
    return best


def cli_vs_rscript(repeats: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "JAXLMM_CACHE": cache}
        cli = [sys.executable, "-m", "jaxlmm", "fit", "--example", "sleepstudy"]
        out["cli_cold"] = time_process(cli, env, repeats=1)
        out["cli_warm"] = time_process(cli, env, repeats)
    if have_r():
        out["rscript"] = time_process(["Rscript", str(HERE / "r" / "sleepstudy_process.R"), str(SHARED / "data")],
                                      repeats=repeats)
    return out


# ----------------------------------------------------------------------------- report
def _fmt(x):
    return "—" if x is None else f"{x:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nsim", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs="*")
    args = parser.parse_args()
    if args.worker:
        mode, *rest = args.worker
        result = {"session": lambda: worker_session(int(rest[0])),
                  "models": lambda: worker_models(rest[0] if rest else None),
                  "hessian": worker_hessian}[mode]()
        print(json.dumps(result))
        return

    env = {k: v for k, v in os.environ.items() if k != "JAXLMM_CACHE"}
    session = run_worker("session", args.nsim, env=env)
    models_cold = run_worker("models", env=env)
    with tempfile.TemporaryDirectory() as cache:
        run_worker("models", cache, env=env)                    # fills the cache
        models_warm = run_worker("models", cache, env=env)
    hessian = run_worker("hessian", env=env)
    processes = cli_vs_rscript(args.repeats)
    lme4 = None
    if have_r():
        stdout, _ = run_r("latency_lme4.R", SHARED / "data", SHARED / "reference", args.nsim)
        lme4 = json.loads(stdout.strip().splitlines()[-1])
    r = (lme4 or {}).get("steps", {})

    cold_total = sum(v["seconds"] for v in models_cold.values())
    warm_total = sum(v["seconds"] for v in models_warm.values())
    rows = [
        ("first `lmer` of `Reaction ~ Days + (Days | Subject)`", session["first_fit"]["seconds"], r.get("first_fit"),
         "≤ 1.0 s"),
        ("then a second model, `(1 | Subject)`", session["second_fit"]["seconds"], r.get("second_fit"), "≤ 0.5 s"),
        ("then `confint(method=\"profile\")`", session["profile"]["seconds"], r.get("profile"), "≤ 2.0 s"),
        ("then `coef_table(ddf=\"kenward-roger\")`", session["kr"]["seconds"], r.get("kr"), "≤ 0.5 s"),
        (f"then a {args.nsim}-replicate parametric bootstrap", session["bootstrap"]["seconds"], r.get("bootstrap"),
         "≤ 2.0 s"),
        ("the 15 reference models in one process, cold", cold_total, r.get("models_total"), "≤ 8 s"),
        ("the same, after a process filled `enable_compilation_cache`", warm_total, r.get("models_total"), "≤ 2 s"),
        ("`jaxlmm fit --example sleepstudy`, whole process, warm cache", processes["cli_warm"],
         processes.get("rscript"), "≤ Rscript"),
    ]
    lines = [
        "# Cold latency (fresh processes, nothing compiled)", "",
        f"Machine: {machine().get('cpu', '?')}, {os.cpu_count()} CPUs; jax {machine()['jax']}; "
        f"{(lme4 or {}).get('r_version', 'R not found')}, lme4 {(lme4 or {}).get('lme4_version', '—')}. "
        f"`import jaxlmm, jaxlmm.fitting.lmer` (jax, pandas, formulaic): {session['import']['seconds']:.2f} s "
        f"(excluded below); R's "
        f"`library(lme4, lmerTest, pbkrtest)`: {_fmt(r.get('load'))} (excluded too).", "",
        "| what a user does | jaxlmm | lme4 (same run) | target |", "|---|---|---|---|",
    ]
    lines += [f"| {what} | {_fmt(ours)} | {_fmt(theirs)} | {target} |" for what, ours, theirs, target in rows]
    lines += ["", f"Process times: `jaxlmm fit` with an empty cache {processes['cli_cold']:.2f} s; "
              f"Rscript figure is the whole `Rscript r/sleepstudy_process.R` run (start-up, load, fit, print).",
              "", f"`jax.jit(jax.hessian(jaxlmm.deviance_function(...)))` for sleepstudy: "
              f"{hessian['stablehlo_lines']} lines of StableHLO, lowered in {hessian['lower']:.2f} s, "
              f"compiled in {hessian['compile']:.2f} s.", "",
              "## Where the first-session time goes (jax.monitoring, seconds)", "",
              "| step | wall | tracing | lowering | XLA compile |", "|---|---|---|---|---|"]
    for step in ("first_fit", "second_fit", "profile", "kr", "bootstrap", "first_fit_again"):
        v = session[step]
        lines.append(f"| {step} | {v['seconds']:.2f} | {v['trace']:.2f} | {v['lower']:.2f} | {v['xla']:.2f} |")
    lines += ["", "## The 15 reference models (seconds per model)", "",
              "| case | cold | warm cache | lme4 |", "|---|---|---|---|"]
    for name in models_cold:
        lines.append(f"| {name} | {models_cold[name]['seconds']:.2f} | {models_warm[name]['seconds']:.2f} | "
                     f"{_fmt((lme4 or {}).get('models', {}).get(name))} |")
    payload = {"machine": machine(), "session": session, "models_cold": models_cold, "models_warm": models_warm,
               "hessian": hessian, "processes": processes, "lme4": lme4, "nsim": args.nsim}
    write_results("latency_cpu", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
