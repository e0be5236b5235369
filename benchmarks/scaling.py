"""Benchmark: how time and memory grow with the number of levels, and traits x devices.

Run:  python benchmarks/scaling.py

1. Levels: a synthetic crossed design ``y ~ x + (1 | a) + (1 | b)`` with 10k, 30k and
   100k levels of ``a`` (3 rows per level), ``b`` with 200 levels crossed with it.
   Each size runs in a fresh process: first call (compile + fit), warm fit, peak
   resident memory, and jaxlmm's own memory estimate (``fit.plan.bytes_peak``); the
   cross block of a and b is stored sparse (``fit.plan.cross``).
2. Traits x devices: 4000 traits of the traits_1k design (traits repeated) on 1, 2
   and 4 forced host CPU devices (``--xla_force_host_platform_device_count``); on a
   2-core machine more devices cannot run faster, so this shows the overhead of
   sharding rather than a speed-up.  On a GPU machine run it with real devices.
Writes benchmarks/results/scaling_cpu.{json,md}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from _common import SHARED, machine, write_results

LEVELS = [100, 10_000, 30_000, 100_000]  # 100: the process's own memory, for reference
DEVICES = [1, 2, 4]

LEVELS_CHILD = r"""
import json, resource, sys, time
import numpy as np, pandas as pd, jaxlmm
L = int(sys.argv[1])
rng = np.random.default_rng(0)
n = 3 * L
a = np.repeat(np.arange(L), 3); b = rng.integers(0, 200, n); x = rng.normal(size=n)
y = 1 + 0.5 * x + rng.normal(0, 1, L)[a] + rng.normal(0, 0.5, 200)[b] + rng.normal(size=n)
data = pd.DataFrame({"y": y, "x": x, "a": pd.Categorical(a), "b": pd.Categorical(b)})
t0 = time.perf_counter(); fit = jaxlmm.lmer("y ~ x + (1 | a) + (1 | b)", data); first = time.perf_counter() - t0
times = []
for _ in range(3):
    t0 = time.perf_counter(); jaxlmm.lmer("y ~ x + (1 | a) + (1 | b)", data); times.append(time.perf_counter() - t0)
est = fit.plan.bytes_peak
print(json.dumps({"levels": L, "rows": n, "first_s": first, "warm_s": min(times), "converged": bool(fit.converged),
                  "cross_block": fit.plan.cross, "n_iter": int(fit.n_iter),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "estimate_mib": est / 2**20}))
"""

DEVICES_CHILD = r"""
import json, sys, time
import numpy as np, pandas as pd, jax, jaxlmm
data = pd.read_csv(sys.argv[1])
traits = [c for c in data.columns if c.startswith("trait")]
Y = pd.concat([data[traits]] * 4, axis=1)
Y.columns = [f"t{i}" for i in range(Y.shape[1])]
run = lambda: jaxlmm.lmer("~ x + (1 + x | g)", data, responses=Y, progress=False)
t0 = time.perf_counter(); b = run(); first = time.perf_counter() - t0
times = []
for _ in range(2):
    t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
print(json.dumps({"devices": len(jax.devices()), "traits": Y.shape[1], "first_s": first, "warm_s": min(times),
                  "converged": int(b.converged.sum())}))
"""


def child(code: str, *args, env=None) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    levels = [child(LEVELS_CHILD, L) for L in LEVELS]
    devices = []
    for k in DEVICES:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={k} "
                                         "--xla_cpu_multi_thread_eigen=false")
        devices.append(child(DEVICES_CHILD, SHARED / "bench" / "traits_1k.csv", env=env))
    payload = {"machine": machine(), "levels": levels, "devices": devices}
    m = payload["machine"]
    lines = [f"# Scaling benchmark ({m['date']})", "",
             f"Machine: {m.get('cpu', '?')}, {m['cpus']} CPUs; jax {m['jax']}", "",
             "Levels: `y ~ x + (1 | a) + (1 | b)`, 3 rows per level of a, b with 200 levels (fresh process each)", "",
             "| levels of a | rows | cross block | iterations | first call | warm fit | peak RSS | jaxlmm's estimate |",
             "|---|---|---|---|---|---|---|---|"]
    for r in levels:
        lines.append(f"| {r['levels']:,} | {r['rows']:,} | {r['cross_block']} | {r['n_iter']} | {r['first_s']:.2f} s | "
                     f"{r['warm_s']:.3f} s | {r['peak_rss_mib']:.0f} MiB | {r['estimate_mib']:.0f} MiB |")
    lines += ["", "Peak RSS is the whole process (Python, JAX, pandas, formulaic, the data and the design; the "
              "100-level row shows the baseline). jaxlmm's estimate is the fit program's own arrays, what the "
              "memory guard compares with free memory."]
    lines += ["", "Traits x devices: 4000 traits of `~ x + (1 + x | g)` (traits_1k repeated), forced host CPU devices "
              f"on {m['cpus']} cores", "", "| devices | first call | warm | converged |", "|---|---|---|---|"]
    for r in devices:
        lines.append(f"| {r['devices']} | {r['first_s']:.2f} s | {r['warm_s']:.2f} s | {r['converged']} |")
    write_results("scaling_cpu", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
