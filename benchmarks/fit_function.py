"""Cost of differentiating the fit: ``jax.jacfwd`` of theta-hat w.r.t. all 180 observations of sleepstudy
against 180 refits, cold (fresh process, nothing compiled) and warm, next to lme4 in the same run.

Usage:  python benchmarks/fit_function.py [--repeats 5]

jaxlmm runs in a fresh Python process with no persistent compilation cache, so every first call
includes its compilation.  Rows:

1. ``f = jaxlmm.fit_function("Reaction ~ Days + (Days | Subject)", sleepstudy)`` and its first ``f(y)``;
2. ``jax.jit(jax.jacfwd(lambda y: f(y).theta))``: the 3 x 180 Jacobian (implicit differentiation);
3. the same numbers from 180 refits at ``y + h e_i`` (``h = 1e-4 sd(y)``, one-sided differences): as one
   ``jax.vmap(f)`` program, and as 180 ``fit.refit`` calls (lmer's host Newton path);
4. ``fit.influence()`` (two implicit Newton steps per left-out row), ``method="derivative"`` (one jacfwd
   w.r.t. the case weights) and ``method="exact"`` (180 vmapped leave-one-out refits);
5. lme4 (``r/fit_function_lme4.R``): 180 ``refit()`` calls and 180 leave-one-out ``update()`` fits.

Writes ``results/fit_function_cpu.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _common import HERE, have_r, machine, run_r, write_results

FORMULA = "Reaction ~ Days + (Days | Subject)"


def _timed(fn, repeat):
    first_t0 = time.perf_counter()
    value = fn()
    first = time.perf_counter() - first_t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"cold": first, "warm": times[len(times) // 2]}, value


def worker(repeat: int) -> dict:
    import jax
    import numpy as np

    import jaxlmm

    data = jaxlmm.load_dataset("sleepstudy")
    out = {}
    t0 = time.perf_counter()
    f = jaxlmm.fit_function(FORMULA, data)
    out["build"] = time.perf_counter() - t0
    out["f"], state = _timed(lambda: f(f.y), repeat)
    with jax.enable_x64(True):
        y = jax.numpy.asarray(f.y)
        n = f.nobs
        h = 1e-4 * float(np.std(f.y))
        jac = jax.jit(jax.jacfwd(lambda t: f(t).theta), compiler_options=f.compiler_options)
        out["jacfwd"], J = _timed(lambda: np.asarray(jac(y)), repeat)
        refits = jax.jit(jax.vmap(lambda t: f(t).theta), compiler_options=f.compiler_options)
        Y = y[None, :] + h * jax.numpy.eye(n)
        out["vmap_refits"], T = _timed(lambda: np.asarray(refits(Y)), repeat)
    fd = (T - state.theta[None, :]).T / h
    out["fd_vs_jacfwd"] = float(np.max(np.abs(fd - J)) / np.max(np.abs(J)))
    fit = jaxlmm.lmer(FORMULA, data)

    def lmer_refits():
        return np.stack([fit.refit(f.y + h * np.eye(n)[i]).theta for i in range(n)])

    out["lmer_refits"], _ = _timed(lmer_refits, 1)
    for method in ("newton", "derivative", "exact"):
        out[f"influence_{method}"], frame = _timed(lambda: fit.influence(method=method), repeat)
        out[f"influence_{method}_values"] = frame.to_numpy().tolist()
    out["jacobian"] = J.tolist()
    return out


def _fresh_process(repeat: int) -> dict:
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxlmm_ff_cache_")  # empty; nothing enables it
    cmd = [sys.executable, str(HERE / "fit_function.py"), "--worker", "--repeats", str(repeat)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _markdown(info: dict, jx: dict, r: dict | None) -> str:
    import numpy as np

    def s(x):
        return f"{x:.2f} s" if x >= 0.1 else f"{1000 * x:.1f} ms"

    newton, exact, deriv = (np.asarray(jx[f"influence_{m}_values"]) for m in ("newton", "exact", "derivative"))
    err_newton = float(np.max(np.abs(newton - exact) / np.abs(exact)))
    err_deriv = float(np.median(np.abs(deriv - exact) / np.abs(exact)))
    rows = [
        ("`fit_function(...)` (build the design)", s(jx["build"]), "", ""),
        ("first `f(y)` (one fit)", s(jx["f"]["cold"]), s(jx["f"]["warm"]), ""),
        ("`jit(jacfwd(theta-hat))`, 3 x 180 Jacobian", s(jx["jacfwd"]["cold"]), s(jx["jacfwd"]["warm"]), ""),
        ("180 refits at y + h e_i, `jit(vmap(f))`", s(jx["vmap_refits"]["cold"]), s(jx["vmap_refits"]["warm"]), ""),
        ("180 refits at y + h e_i, `fit.refit` loop", "", s(jx["lmer_refits"]["cold"]),
         s(r["refits_s"]) if r else "n/a"),
        ("`fit.influence()` (2 implicit Newton steps per row)", s(jx["influence_newton"]["cold"]),
         s(jx["influence_newton"]["warm"]), ""),
        ("`fit.influence(method=\"derivative\")` (jacfwd in case weights)", s(jx["influence_derivative"]["cold"]),
         s(jx["influence_derivative"]["warm"]), ""),
        ("`fit.influence(method=\"exact\")` (180 leave-one-out refits, vmapped)",
         s(jx["influence_exact"]["cold"]), s(jx["influence_exact"]["warm"]), s(r["loo_s"]) if r else "n/a"),
    ]
    lines = ["# Differentiating the fit: jacfwd of theta-hat against refits (sleepstudy, 180 rows)", "",
             f"Machine: {info.get('cpu', '?')}, {info['cpus']} CPUs (a shared VM, noisy +-20 %); jax {info['jax']}; "
             f"{info.get('R', 'R not available')}; 1-minute load average {jx['load_average'][0]:.1f} before and "
             f"{jx['load_average'][1]:.1f} after the jaxlmm run (other processes share the 2 cores).  `{FORMULA}`, REML.  jaxlmm in a fresh process without a "
             "persistent compilation cache: *first call* includes compilation; *warm* is the median of later calls.",
             "", "| what | jaxlmm first call | jaxlmm warm | lme4 (same run) |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", f"Jacobian from one-sided differences of the 180 vmapped refits against `jacfwd`: max relative "
              f"difference {jx['fd_vs_jacfwd']:.1e} (of the largest entry)."]
    if r:
        jr = np.asarray(r["jac"]).reshape(-1, 3).T
        J = np.asarray(jx["jacobian"])
        lines.append(f"lme4's 180 `refit()` differences at the same h differ from `jacfwd` by up to "
                     f"{np.max(np.abs(jr - J)) / np.max(np.abs(J)):.1e} times its largest entry: at a step this "
                     "small the optimizer's stopping tolerance swamps the change (differences of refits need a "
                     "converged-to-rounding optimizer, or a larger step and its truncation error).")
    lines += [f"Influence on theta and beta against the exact leave-one-out refits: implicit Newton steps max "
              f"relative error {100 * err_newton:.2f} %; the pure derivative median {100 * err_deriv:.0f} % "
              "(it misses the leverage factor 1 / (1 - h_ii))."]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.repeats)))
        return
    load = os.getloadavg()[0]
    jx = _fresh_process(args.repeats)
    jx["load_average"] = [load, os.getloadavg()[0]]
    r = None
    if have_r():
        import jaxlmm

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sleepstudy.csv")
            jaxlmm.load_dataset("sleepstudy").to_csv(path, index=False)
            out, _ = run_r("fit_function_lme4.R", path)
            r = json.loads(out)
    info = machine()
    payload = {"machine": info, "jaxlmm": {k: v for k, v in jx.items() if not k.endswith("_values")}, "lme4": r}
    write_results("fit_function_cpu", payload, _markdown(info, jx, r))


if __name__ == "__main__":
    main()
