"""An old tree against the new one, benchmark by benchmark, in one run on one machine (issue O, item 7).

Usage:  python benchmarks/old_vs_new.py OLD_TREE [--only latency,traits,...]

``OLD_TREE`` is a checkout of an earlier commit (e.g. ``git worktree add /tmp/old <commit>``).  Each
benchmark script runs in a fresh process per tree -- the old one with ``PYTHONPATH=OLD_TREE/src``
from ``OLD_TREE/benchmarks``, the new one from this checkout -- one after the other, with the
external anchors skipped (R, GEMMA, statsmodels: they do not change between trees).  The figures
compared are each script's own (its JSON in ``results/``), cold and warm.  ``structured.py`` runs
glmmTMB and has no switch to skip it; its figures are jaxlmm's.  Writes ``results/old_vs_new_cpu.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _common import HERE, SHARED, machine, write_results

BENCHMARKS = {   # script, its arguments, results file, {label: path in the JSON}
    "latency": (["--repeats", "1"], "latency_cpu", {
        "first lmer (cold)": "session.first_fit.seconds", "second model": "session.second_fit.seconds",
        "first profile (cold)": "session.profile.seconds", "Kenward-Roger (cold)": "session.kr.seconds",
        "first bootstrap 1000 (cold)": "session.bootstrap.seconds"}),
    "traits": (["--skip-r"], "traits_cpu", {
        "traits_1k warm": "jaxlmm.warm_best_s", "traits_1k first call (cold)": "jaxlmm.first_call_cold_cache_s"}),
    "insteval": (["--skip-r", "--repeat", "2"], "insteval_cpu", {
        "InstEval warm": "jaxlmm.warm_best_s", "InstEval first call (cold)": "jaxlmm.first_call_s"}),
    "kinship": (["--skip-external"], "kinship_cpu", {
        "kinship 500 traits warm": "jaxlmm.warm_best_s", "kinship first call (cold)": "jaxlmm.first_call_cold_cache_s"}),
    "scan": (["--skip-gemma"], "scan_cpu", {
        "scan exact warm": "jaxlmm.exact.warm_s", "scan exact cold": "jaxlmm.exact.cold_s"}),
    "structured": ([], "structured_cpu", {
        "repeated_ar1 warm": "jaxlmm.repeated_ar1.warm_s", "repeated_ar1 cold": "jaxlmm.repeated_ar1.cold_s",
        "field_exp warm": "jaxlmm.field_exp.warm_s", "field_exp cold": "jaxlmm.field_exp.cold_s"}),
    "inference": (["--skip-r"], "inference_cpu", {
        "bootstrap 1000 warm": "jaxlmm.bootstrap_1000_warm_s", "bootstrap 1000 first": "jaxlmm.bootstrap_1000_first_s",
        "profile CIs warm": "jaxlmm.profile_confint_warm_s", "profile CIs first": "jaxlmm.profile_confint_first_s"}),
}


def _get(tree: dict, path: str):
    for key in path.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree if isinstance(tree, (int, float)) else None


def run(tree: Path, name: str, args: list[str], results: str, env_extra: dict) -> dict:
    bench = tree / "benchmarks"
    out = bench / "results" / f"{results}.json"
    files = [out, out.with_suffix(".md")]
    keep = {f: f.read_bytes() for f in files if f.exists()}
    env = dict(os.environ, JAXLMM_SHARED=str(SHARED), **env_extra)
    try:
        proc = subprocess.run([sys.executable, str(bench / f"{name}.py"), *args], cwd=bench, env=env,
                              capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            return {"error": proc.stderr[-1500:]}
        return json.loads(out.read_text())
    finally:     # the tree's committed results stay as they were
        for f, data in keep.items():
            f.write_bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old_tree", type=Path)
    ap.add_argument("--only", default=",".join(BENCHMARKS))
    args = ap.parse_args()
    new_tree = HERE.parent
    rows, raw = [], {}
    for name in args.only.split(","):
        script_args, results, metrics = BENCHMARKS[name]
        old = run(args.old_tree.resolve(), name, script_args, results,
                  {"PYTHONPATH": str(args.old_tree.resolve() / "src")})
        new = run(new_tree, name, script_args, results, {"PYTHONPATH": str(new_tree / "src")})
        raw[name] = {"old": old, "new": new}
        for label, path in metrics.items():
            a, b = _get(old, path), _get(new, path)
            rows.append((label, a, b, (b / a) if a and b else None))
        print(name, "done", file=sys.stderr, flush=True)
    info = machine()
    lines = [f"# Old tree against new, one run ({info.get('cpu', '?')}, {info['cpus']} CPUs, jax {info['jax']})", "",
             f"Old: `{args.old_tree}`; new: this checkout. Seconds; ratio new / old (> 1.10: a regression "
             "beyond 10%).", "", "| benchmark | old | new | new / old |", "|---|---|---|---|"]
    for label, a, b, r in rows:
        fmt = (lambda v: "n/a" if v is None else f"{v:.4g}")
        lines.append(f"| {label} | {fmt(a)} | {fmt(b)} | {fmt(r)} |")
    errors = {f"{name}.{side}": r["error"] for name, sides in raw.items() for side, r in sides.items() if "error" in r}
    write_results("old_vs_new_cpu", {"machine": info, "old_tree": str(args.old_tree), "rows": rows, "errors": errors},
                  "\n".join(lines))


if __name__ == "__main__":
    main()
