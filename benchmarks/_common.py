"""Shared helpers of the benchmark scripts: machine description, R runner, result files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARED = Path(os.environ.get("JAXLMM_SHARED", HERE.parent.parent / "shared"))


def machine() -> dict:
    import jax

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }
    try:
        import jaxlmm

        info["jaxlmm"] = jaxlmm.__version__
    except Exception:  # pragma: no cover
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if shutil.which("Rscript"):
        out = subprocess.run(["Rscript", "-e", "cat(R.version.string, as.character(packageVersion('lme4')))"],
                             capture_output=True, text=True)
        info["R"] = out.stdout.strip()
    return info


def have_r() -> bool:
    if not shutil.which("Rscript"):
        return False
    out = subprocess.run(["Rscript", "-e", "library(lme4)"], capture_output=True)
    return out.returncode == 0


def run_r(script: str, *args, timeout: float = 3600) -> tuple[str, float]:
    """Run ``benchmarks/r/<script>`` with Rscript; stdout and wall seconds."""
    t0 = time.perf_counter()
    out = subprocess.run(["Rscript", str(HERE / "r" / script), *map(str, args)], capture_output=True, text=True,
                         timeout=timeout)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{out.stderr[-2000:]}")
    return out.stdout, wall


def write_results(name: str, payload: dict, markdown: str) -> None:
    """Write ``results/<name>.{json,md}``; ``$JAXLMM_BENCH_SUFFIX`` (e.g. ``gpu``, set by gpu.sh) replaces
    the ``_cpu`` suffix so that runs on another device never overwrite the CPU figures."""
    suffix = os.environ.get("JAXLMM_BENCH_SUFFIX")
    if suffix:
        name = name.replace("_cpu", "") + f"_{suffix}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)


def timed(fn, repeat: int = 5):
    """Best and median wall seconds of ``fn()`` over ``repeat`` calls, and its last value."""
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[0], times[len(times) // 2], value
