#!/usr/bin/env bash
# make_gemma_grm.sh -- GEMMA reference relatedness matrices (-gk 1 centered,
# -gk 2 standardized) for a small simulated BIMBAM marker set.
#
# Usage:  bash make_gemma_grm.sh OUTDIR      (needs Rscript and gemma on PATH)
#
# Writes into OUTDIR:
#   gemma_markers.csv           30 individuals x 100 SNPs, 0/1/2, "NA" = missing
#                               (header "id,rs001,...", first column = individual id)
#   gemma_geno.txt              the same markers in BIMBAM mean-genotype format
#                               (one row per SNP: "rsNNN, A, T, g_1, ..., g_30")
#   gemma_pheno.txt             30 phenotypes (none missing; only needed by GEMMA's reader)
#   grm_gemma_centered.csv      GEMMA -gk 1 output (30x30, no header, 10 significant digits)
#   grm_gemma_standardized.csv  GEMMA -gk 2 output (30x30, no header, 10 significant digits)
set -euo pipefail
OUT=${1:?usage: make_gemma_grm.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

Rscript - "$OUT" <<'EOF'
out <- commandArgs(trailingOnly = TRUE)[1]
set.seed(20240615)
n <- 30; m <- 100
p0 <- runif(m, 0.15, 0.85)
G <- sapply(p0, function(p) rbinom(n, 2, p))
for (j in 1:m) while (var(G[, j]) == 0) G[, j] <- rbinom(n, 2, p0[j])
ids <- sprintf("ind%02d", 1:n); snps <- sprintf("rs%03d", 1:m)
dimnames(G) <- list(ids, snps)
# 60 missing entries (2%), at most one per SNP: GEMMA's default -miss 0.05 would
# drop a SNP with 2/30 = 6.7% missing.
ms <- sort(sample(1:m, 60)); mi <- sample(1:n, 60, replace = TRUE)
G[cbind(mi, ms)] <- NA
stopifnot(sum(is.na(G)) == 60, max(colSums(is.na(G))) == 1)
f <- colMeans(G, na.rm = TRUE) / 2
stopifnot(min(pmin(f, 1 - f)) > 0.05)          # nothing near the -maf 0.01 filter
write.csv(cbind(id = ids, as.data.frame(G)), file.path(out, "gemma_markers.csv"),
          na = "NA", quote = FALSE, row.names = FALSE)
bim <- cbind(snps, "A", "T", t(ifelse(is.na(G), "NA", G)))
write.table(bim, file.path(out, "gemma_geno.txt"), sep = ", ", quote = FALSE,
            row.names = FALSE, col.names = FALSE)
write.table(sprintf("%.6f", rnorm(n)), file.path(out, "gemma_pheno.txt"), quote = FALSE,
            row.names = FALSE, col.names = FALSE)
EOF

cd "$TMP"
gemma -g "$OUT/gemma_geno.txt" -p "$OUT/gemma_pheno.txt" -gk 1 -o grm -outdir "$TMP/out" > gk1.stdout 2>&1
gemma -g "$OUT/gemma_geno.txt" -p "$OUT/gemma_pheno.txt" -gk 2 -o grm -outdir "$TMP/out" > gk2.stdout 2>&1
grep -q "number of analyzed SNPs *= *100" gk1.stdout || { cat gk1.stdout; echo "SNPs were filtered" >&2; exit 1; }
tr '\t' ',' < out/grm.cXX.txt > "$OUT/grm_gemma_centered.csv"
tr '\t' ',' < out/grm.sXX.txt > "$OUT/grm_gemma_standardized.csv"
cat gk1.stdout
