"""Benchmark: association scan of 20 traits x 5000 markers (1000 related individuals), against GEMMA -lmm 4.

Run:  python benchmarks/scan.py [--gemma-traits 20] [--skip-gemma]
      python benchmarks/scan.py --gpu-workload        (1000 traits x 100k synthetic markers; for a GPU:
                                                       results/scan_large_gpu.{md,json} under gpu.sh)

Measures in one run on this machine (workload ../shared/bench/scan):
- jaxlmm.scan, mode="exact" (lambda refitted per marker, GEMMA's -lmm 4) and mode="null" (EMMAX), each in
  a fresh process: the first call with an empty compilation cache (cold), then a warm call,
  and the process's peak resident memory;
- GEMMA 0.98.5 ``-lmm 4``, one run per trait (``-n i``: GEMMA drops the individuals missing for that trait),
  timed here, on the same PLINK files with K written at full precision;
- accuracy on every trait against those GEMMA runs (|log10 p - log10 p_GEMMA| for Wald, LRT and score,
  |beta - beta_GEMMA| / se, relative se and lambda), and whether each trait's causal markers (re-drawn from
  make_scan_data.py's seed) are found: the rank of the best causal marker's Wald p-value.
Writes benchmarks/results/scan_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from _common import SHARED, machine, write_results

SCAN = SHARED / "bench" / "scan"
FORMULA = "~ 1 + (1 | id)"

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import pandas as pd, jaxlmm
K = pd.read_csv(sys.argv[1], index_col=0)
data = pd.read_csv(sys.argv[2])
traits = [c for c in data.columns if c.startswith("trait")]
mode, out = sys.argv[4], sys.argv[5]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def run():
    return jaxlmm.scan("~ 1 + (1 | id)", data, genotypes=sys.argv[3], relmat={"id": K}, responses=traits,
                       mode=mode, progress=False)
t1 = time.perf_counter(); res = run(); t2 = time.perf_counter()
warm = []
for _ in range(1):
    a = time.perf_counter(); res = run(); warm.append(time.perf_counter() - a)
res.to_parquet(out) if out.endswith(".parquet") else res.to_pickle(out)
print(json.dumps({"read_s": t1 - t0, "cold_s": t2 - t1, "warm_s": min(warm), "warm_all_s": warm,
                  "rss_before_mb": rss0 / 1024, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_jaxlmm(mode: str, out: str) -> dict:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=tempfile.mkdtemp(prefix="jaxlmm_scan_cache_"))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(SHARED / "bench" / "kinship_K.csv"),
                           str(SCAN / "scan_traits.csv"), str(SCAN / "scan"), mode, out],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_gemma(n_traits: int, work: str) -> tuple[list[float], dict[str, pd.DataFrame]]:
    """GEMMA -lmm 4 per trait; wall seconds of each run and its association table."""
    K = pd.read_csv(SHARED / "bench" / "kinship_K.csv", index_col=0)
    fam = pd.read_csv(str(SCAN / "scan.fam"), sep=r"\s+", header=None)
    ids = fam[1].astype(str).tolist()
    np.savetxt(os.path.join(work, "K.txt"), K.loc[ids, ids].to_numpy(), fmt="%.17g", delimiter="\t")
    traits = pd.read_csv(SCAN / "scan_traits.csv").set_index("id").loc[ids]
    names = [c for c in traits.columns if c.startswith("trait")][:n_traits]
    traits[names].to_csv(os.path.join(work, "pheno.txt"), sep="\t", header=False, index=False, na_rep="NA")
    for suffix in (".bed", ".bim", ".fam"):
        shutil.copy(str(SCAN / "scan") + suffix, os.path.join(work, "scan" + suffix))
    times, tables = [], {}
    for i, name in enumerate(names):
        t0 = time.perf_counter()
        subprocess.run(["gemma", "-bfile", "scan", "-p", "pheno.txt", "-k", "K.txt", "-lmm", "4", "-n", str(i + 1),
                        "-outdir", "out", "-o", name, "-silence"], cwd=work, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
        tables[name] = pd.read_csv(os.path.join(work, "out", name + ".assoc.txt"), sep="\t")
    return times, tables


def accuracy(ours: pd.DataFrame, gemma: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for trait, ref in gemma.items():
        m = ref.merge(ours[ours["trait"] == trait], left_on="rs", right_on="snp", suffixes=("_g", ""))
        row = {"trait": trait, "markers": len(m),
               "beta_over_se": float(np.max(np.abs(m["beta_g"] - m["beta"]) / m["se_g"])),
               "se_rel": float(np.max(np.abs(m["se"] / m["se_g"] - 1))),
               "lambda_rel": float(np.max(np.abs(m["lambda"] / m["l_remle"] - 1)))}
        for test in ("wald", "lrt", "score"):
            row[f"log10p_{test}"] = float(np.max(np.abs(np.log10(m[f"p_{test}"]) - np.log10(m[f"p_{test}_g"]))))
        rows.append(row)
    return pd.DataFrame(rows)


def md_table(frame: pd.DataFrame, index: bool = False) -> str:
    """A markdown table (pandas' to_markdown needs tabulate)."""
    frame = frame.reset_index() if index else frame

    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1]]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def causal_markers(n: int = 1000, m: int = 5000, T: int = 20) -> list[np.ndarray]:
    """The causal marker indices of each trait, re-drawn exactly as make_scan_data.py draws them."""
    rng = np.random.default_rng(11)
    out = []
    for _ in range(T):
        out.append(rng.choice(m, 5, replace=False))
        rng.normal(0, 1, 5), rng.normal(size=n), rng.normal(size=n), rng.random(n)
    return out


def causal_ranks(ours: pd.DataFrame) -> pd.DataFrame:
    snps = ours["snp"].drop_duplicates().tolist()
    rows = []
    for t, idx in enumerate(causal_markers()):
        r = ours[ours["trait"] == f"trait{t:02d}"].reset_index(drop=True)
        rank = r["p_wald"].rank(method="min")
        causal = [snps[j] for j in idx]
        best = r[r["snp"].isin(causal)]
        rows.append({"trait": f"trait{t:02d}", "best_causal_rank": int(rank[best.index].min()),
                     "causal_in_top10": int((rank[best.index] <= 10).sum()),
                     "min_p_causal": float(best["p_wald"].min()), "min_p_all": float(r["p_wald"].min())})
    return pd.DataFrame(rows)


def gpu_workload(n_traits: int = 1000, n_snps: int = 100_000, n: int = 1000) -> dict:
    """Synthetic scan on the local devices: time (cold and warm) and the device's peak memory."""
    import jax

    import jaxlmm
    from jaxlmm.model.plink import Genotypes

    rng = np.random.default_rng(3)
    af = rng.uniform(0.05, 0.5, n_snps).astype(np.float32)
    G = rng.binomial(2, af, size=(n, n_snps)).astype(np.float32)
    Z = (G[:, :5000] - G[:, :5000].mean(0)) / (G[:, :5000].std(0) + 1e-6)
    K = Z @ Z.T / Z.shape[1] + 1e-3 * np.eye(n)
    ids = [f"i{i:05d}" for i in range(n)]
    Y = rng.normal(size=(n, n_traits)) + 5.0
    Y[rng.random(Y.shape) < 0.03] = np.nan
    data = pd.DataFrame(Y, columns=[f"t{j:04d}" for j in range(n_traits)]).assign(id=ids)
    snps = pd.DataFrame({"snp": [f"s{j}" for j in range(n_snps)], "chrom": "1", "pos": np.arange(n_snps),
                         "allele1": "A", "allele0": "G"})
    geno = Genotypes(tuple(ids), snps, G)
    Kf = pd.DataFrame(K, index=ids, columns=ids)
    out = {"traits": n_traits, "markers": n_snps, "individuals": n, "devices": [str(d) for d in jax.devices()]}
    for mode in ("null", "exact"):
        t0 = time.perf_counter()
        res = jaxlmm.scan(FORMULA, data, genotypes=geno, relmat={"id": Kf}, responses=list(data.columns[:-1]),
                          mode=mode, progress=False)
        out[f"{mode}_s"] = time.perf_counter() - t0
        out[f"{mode}_converged"] = int((res["status"] == "converged").sum())
        stats = jax.devices()[0].memory_stats() or {}
        out[f"{mode}_peak_device_bytes"] = stats.get("peak_bytes_in_use")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gemma-traits", type=int, default=20)
    ap.add_argument("--skip-gemma", action="store_true")
    ap.add_argument("--gpu-workload", action="store_true", help="the 1000 traits x 100k markers synthetic scan")
    args = ap.parse_args()
    if args.gpu_workload:
        res = gpu_workload()
        write_results("scan_large_cpu", {"machine": machine(), "gpu_workload": res},
                      "# Scan benchmark, synthetic 1000 traits x 100k markers\n\n```\n"
                      + json.dumps(res, indent=2) + "\n```")
        return
    work = tempfile.mkdtemp(prefix="jaxlmm_scan_bench_")
    runs = {}
    for mode in ("exact", "null"):
        runs[mode] = run_jaxlmm(mode, os.path.join(work, f"{mode}.pkl"))
        print(mode, runs[mode], file=sys.stderr)
    exact = pd.read_pickle(os.path.join(work, "exact.pkl"))
    payload = {"machine": machine(), "jaxlmm": runs, "workload": "20 traits x 5000 markers x 1000 individuals"}
    gemma_md, acc_md = "GEMMA not run (--skip-gemma or not installed)", ""
    if not args.skip_gemma and shutil.which("gemma"):
        times, tables = run_gemma(args.gemma_traits, work)
        total = float(np.sum(times)) * 20 / len(times)
        payload["gemma"] = {"per_trait_s": times, "traits_run": len(times), "total_20_traits_s": total}
        acc = accuracy(exact, tables)
        payload["accuracy"] = acc.to_dict(orient="records")
        gemma_md = (f"| GEMMA -lmm 4, one run per trait ({len(times)} run here), 20 traits | {total:.1f} s | "
                    f"{total / runs['exact']['warm_s']:.1f}x slower than exact, "
                    f"{total / runs['null']['warm_s']:.1f}x slower than null |")
        worst = acc.drop(columns=["trait", "markers"]).max()
        acc_md = ("\nAccuracy against GEMMA, worst over all traits and markers (tolerances 1e-3):\n\n"
                  + md_table(worst.to_frame("max"), index=True) + "\n\nPer trait:\n\n" + md_table(acc))
    ranks = causal_ranks(exact)
    payload["causal"] = ranks.to_dict(orient="records")
    md = f"""# Association scan benchmark ({payload['machine']['date']})

Machine: {payload['machine'].get('cpu', '?')}, {payload['machine']['cpus']} CPUs (a shared, noisy VM: +-20%);
jax {payload['machine']['jax']}.  Workload: ../shared/bench/scan, {payload['workload']}, ~3% missing per trait.

| what | time | note |
|---|---|---|
| jaxlmm.scan mode="exact" (GEMMA -lmm 4), 20 traits, warm | {runs['exact']['warm_s']:.2f} s | peak RSS {runs['exact']['peak_rss_mb']:.0f} MB (process) |
| jaxlmm.scan mode="exact", first call, empty compilation cache | {runs['exact']['cold_s']:.2f} s | |
| jaxlmm.scan mode="null" (EMMAX), 20 traits, warm | {runs['null']['warm_s']:.2f} s | peak RSS {runs['null']['peak_rss_mb']:.0f} MB (process) |
| jaxlmm.scan mode="null", first call, empty compilation cache | {runs['null']['cold_s']:.2f} s | |
{gemma_md}

Peak RSS is the whole Python process (jax, pandas, the genotypes read into memory), {runs['exact']['rss_before_mb']:.0f} MB
before the scan.
{acc_md}

Causal markers (5 per trait, re-drawn from make_scan_data.py's seed): rank of the best causal marker's Wald p
among the 5000 (1 = the trait's smallest p):

{md_table(ranks)}
"""
    write_results("scan_cpu", payload, md)


if __name__ == "__main__":
    main()
