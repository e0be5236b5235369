"""GEMMA references of the association-scan tests (tests/test_scan.py), from the shared scan workload.

A small copy of ../shared/bench/scan: the first 250 individuals of kinship_K.csv, the first 300 markers
(PLINK set ``small.bed/.bim/.fam``), K on them (``K_small.csv.gz``, 10 significant digits, exactly the
values GEMMA reads), traits trait00..trait02 with their missing values and a covariate ``x`` (seeded
normal), plus two bad markers appended to the genotypes for the tests (a monomorphic one and one with
every genotype missing; GEMMA drops both).  Then GEMMA 0.98.5 (Debian package ``gemma``):

    gemma -bfile small -k K.txt -lmm 4 -n N           (trait00..02: gemma_traitNN.assoc.txt.gz)
    gemma -bfile small -k K.txt -lmm 4 -n 1 -c cov.txt (trait00 ~ x: gemma_trait00_cov.assoc.txt.gz)

GEMMA drops individuals with a missing phenotype and restricts K to the rest.
usage: python make_reference.py SHARED_DIR   (writes next to this script)
"""
import gzip
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
from bed_reader import open_bed, to_bed

N_IND, N_SNP, TRAITS = 250, 300, ["trait00", "trait01", "trait02"]
shared = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
K = pd.read_csv(os.path.join(shared, "bench", "kinship_K.csv"), index_col=0)
ids = list(K.index[:N_IND])
K = K.loc[ids, ids]
bed = open_bed(os.path.join(shared, "bench", "scan", "scan.bed"))
pos = [bed.iid.tolist().index(i) for i in ids]
G = bed.read(index=np.s_[pos, :N_SNP], dtype="float32")
mono = np.full((N_IND, 1), 2.0, np.float32)
allmiss = np.full((N_IND, 1), np.nan, np.float32)
G = np.concatenate([G, mono, allmiss], axis=1)
sid = list(bed.sid[:N_SNP]) + ["mono", "allmiss"]
to_bed(os.path.join(here, "small.bed"), G, properties={
    "fid": ids, "iid": ids, "sid": sid, "chromosome": list(bed.chromosome[:N_SNP]) + ["1", "1"],
    "bp_position": list(bed.bp_position[:N_SNP]) + [10**7, 10**7 + 1],
    "allele_1": list(bed.allele_1[:N_SNP]) + ["A", "A"], "allele_2": list(bed.allele_2[:N_SNP]) + ["G", "G"]})
Kr = np.array([[float(f"{v:.10g}") for v in row] for row in K.to_numpy()])
pd.DataFrame(Kr, index=ids, columns=ids).rename_axis("id").to_csv(
    os.path.join(here, "K_small.csv.gz"), float_format="%.10g")
traits = pd.read_csv(os.path.join(shared, "bench", "scan", "scan_traits.csv")).set_index("id").loc[ids, TRAITS]
traits["x"] = np.round(np.random.default_rng(5).normal(size=N_IND), 6)
traits.rename_axis("id").reset_index().to_csv(os.path.join(here, "traits_small.csv"), index=False)

work = tempfile.mkdtemp()
for s in (".bed", ".bim", ".fam"):
    shutil.copy(os.path.join(here, "small" + s), os.path.join(work, "small" + s))
np.savetxt(os.path.join(work, "K.txt"), Kr, fmt="%.10g", delimiter="\t")
traits[TRAITS].to_csv(os.path.join(work, "pheno.txt"), sep="\t", header=False, index=False, na_rep="NA")
np.savetxt(os.path.join(work, "cov.txt"), np.column_stack([np.ones(N_IND), traits["x"]]), fmt="%.6f")
runs = [(f"gemma_{t}", ["-n", str(i + 1)]) for i, t in enumerate(TRAITS)]
runs.append(("gemma_trait00_cov", ["-n", "1", "-c", "cov.txt"]))
for name, extra in runs:
    subprocess.run(["gemma", "-bfile", "small", "-p", "pheno.txt", "-k", "K.txt", "-lmm", "4", *extra,
                    "-outdir", "out", "-o", name, "-silence"], cwd=work, check=True)
    with open(os.path.join(work, "out", name + ".assoc.txt"), "rb") as src, \
            open(os.path.join(here, name + ".assoc.txt.gz"), "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as dst:
        dst.write(src.read())
    shutil.copy(os.path.join(work, "out", name + ".log.txt"), os.path.join(here, name + ".log.txt"))
shutil.rmtree(work)
print("wrote", here)
