#!/usr/bin/env bash
# kinship_gemma.sh -- GEMMA null-model REML references and timing for the kinship
# workload (y ~ 1 + u + e, u ~ N(0, vg K), e ~ N(0, ve I), one fit per trait).
#
# Usage:
#   bash kinship_gemma.sh [K.csv] [TRAITS.csv] [OUTDIR] [NTRAITS]
# Defaults: /work/shared/bench/kinship_K.csv /work/shared/bench/kinship_traits.csv
#           benchmarks/reference/kinship (relative to the repo root)  all traits.
#
# Inputs: K.csv has a header "id,<ids>" and the id in column 1; TRAITS.csv has
# "id,trait000,..." with empty fields = missing; both in the same id order
# (checked).
#
# GEMMA has no "null model only" mode for a user-supplied K, so each trait is
# run as
#   gemma -g dummy_geno.txt -p pheno.txt -n <col> -k K.txt -lmm 1 -o tNNN
# with a one-SNP dummy BIMBAM genotype file (random 0/1/2, never missing, so it
# passes the -maf/-miss filters). The null model (intercept only) is fitted
# before any SNP is tested, and its REML estimates are read from the
# .log.txt ("vg/ve/pve estimate in the null model", "REMLE log-likelihood in
# the null model"), which GEMMA prints with 6 significant digits only.
# GEMMA drops individuals whose phenotype in column <col> is NA and subsets K
# to the analysed individuals itself (every trait has its own eigen-
# decomposition of the n_analysed x n_analysed K; -d/-u cannot be reused
# because the missingness pattern differs per trait).
#
# Output (OUTDIR):
#   gemma_traits.csv  trait, n_analyzed, vg, ve, h2 = vg/(vg+ve), pve (GEMMA's,
#                     = tr(K_a)/n_a*vg / (tr(K_a)/n_a*vg + ve)), se_pve,
#                     beta (intercept), se_beta, remle_loglik, mle_loglik,
#                     seconds (wall time of the gemma process, incl. reading K),
#                     lambda = vg/ve, at_lambda_min (1 if lambda sits at GEMMA's
#                     lower bound -lmin 1e-5: a boundary fit, vg ~ 0; lme4 would
#                     give theta ~ 0 there), gemma_cpu_seconds and
#                     eigen_cpu_seconds (GEMMA's own "total computation time" and
#                     "time on eigen-decomposition", converted from minutes; GEMMA
#                     measures these with clock(), i.e. CPU time summed over the
#                     OpenBLAS threads, not wall time).
# Notes (checked against lme4 and a numpy REML):
#   * vg, ve, h2 agree with lme4's modular GBLUP fit to GEMMA's 6 printed digits.
#   * remle_loglik = lme4's -criterion/2 + 0.5*log(det(X'X)) = -crit/2 + 0.5*log(n).
#   * beta/se_beta are NOT lme4's GLS intercept: GEMMA double-centres K on the
#     analysed individuals, so its "beta in the null model" is mean(y) and
#     se_beta = sqrt(ve/n). REML vg/ve are invariant to that centring.
#   * pve uses tr(K_a)/n_a (GEMMA's trace_G); h2 = vg/(vg+ve) does not.
#   gemma_timing.txt  machine/date/GEMMA version, total and per-trait seconds
set -euo pipefail
KCSV=${1:-/work/shared/bench/kinship_K.csv}
TCSV=${2:-/work/shared/bench/kinship_traits.csv}
OUT=${3:-$(cd "$(dirname "$0")/.." && pwd)/reference/kinship}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
cd "$TMP"

# --- inputs for GEMMA -------------------------------------------------------
awk -F, 'NR > 1 { print $1 }' "$KCSV" > ids_K
awk -F, 'NR > 1 { print $1 }' "$TCSV" > ids_T
cmp -s ids_K ids_T || { echo "K and traits ids differ" >&2; exit 1; }
head -1 "$TCSV" | tr ',' '\n' | tail -n +2 > trait_names
NT_ALL=$(wc -l < trait_names)
NT=${4:-$NT_ALL}
awk -F, 'NR > 1 { s = $2; for (i = 3; i <= NF; i++) s = s "\t" $i; print s }' "$KCSV" > K.txt
awk -F, 'NR > 1 { s = ($2 == "" ? "NA" : $2);
                  for (i = 3; i <= NF; i++) s = s "\t" ($i == "" ? "NA" : $i); print s }' "$TCSV" > pheno.txt
awk 'BEGIN { srand(1) } { g[NR] = int(3 * rand()) } END {
       s = "dummy1, A, T"; for (i = 1; i <= NR; i++) s = s ", " g[i]; print s }' ids_K > geno.txt

# --- fits -------------------------------------------------------------------
val() { grep -F "## $1" "$2" | head -1 | sed 's/.*= *//' | tr -d ' '; }
echo "trait,n_analyzed,vg,ve,h2,pve,se_pve,beta,se_beta,remle_loglik,mle_loglik,seconds,lambda,at_lambda_min,gemma_cpu_seconds,eigen_cpu_seconds" > gemma_traits.csv
T0=$(date +%s.%N)
for ((i = 1; i <= NT; i++)); do
  tr=$(sed -n "${i}p" trait_names)
  t0=$(date +%s.%N)
  gemma -g geno.txt -p pheno.txt -n "$i" -k K.txt -lmm 1 -o "t$i" -outdir out > "t$i.stdout" 2>&1 \
    || { cat "t$i.stdout" >&2; exit 1; }
  t1=$(date +%s.%N)
  log="out/t$i.log.txt"
  nobs=$(val "number of analyzed individuals" "$log")
  nexp=$(awk -F'\t' -v c="$i" '$c != "NA"' pheno.txt | wc -l)
  [ "$nobs" = "$nexp" ] || { echo "$tr: analysed $nobs != non-missing $nexp" >&2; exit 1; }
  vg=$(val "vg estimate in the null model" "$log"); ve=$(val "ve estimate in the null model" "$log")
  h2=$(awk -v a="$vg" -v b="$ve" 'BEGIN { printf "%.10g", a / (a + b) }')
  echo "$tr,$nobs,$vg,$ve,$h2,$(val "pve estimate in the null model" "$log"),$(val "se(pve) in the null model" "$log"),$(val "beta estimate in the null model" "$log"),$(val "se(beta)" "$log"),$(val "REMLE log-likelihood in the null model" "$log"),$(val "MLE log-likelihood in the null model" "$log"),$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }'),$(awk -v a="$vg" -v b="$ve" 'BEGIN { l = a / b; printf "%.6g,%d", l, (l < 1.00001e-5) }'),$(awk -v m="$(val "total computation time" "$log" | sed 's/min//')" 'BEGIN { printf "%.4f", 60 * m }'),$(awk -v m="$(grep -F "time on eigen-decomposition" "$log" | sed 's/.*= *//' | sed 's/min//')" 'BEGIN { printf "%.4f", 60 * m }')" >> gemma_traits.csv
  [ "$i" = 1 ] && cp "$log" first.log
  rm -f "out/t$i".*
done
T1=$(date +%s.%N)
cp gemma_traits.csv "$OUT/gemma_traits.csv"

TOTAL=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.3f", b - a }')
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%S+00:00)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
  echo "gemma: $(gemma 2>&1 | head -1)"
  grep -E "OpenBlas|threads" first.log | sed 's/^## *//' || true
  echo "command: bash r/kinship_gemma.sh $KCSV $TCSV $OUT $NT"
  echo "per-trait command: gemma -g dummy_geno.txt -p pheno.txt -n <col> -k K.txt -lmm 1 -o tNNN"
  echo "traits fitted: $NT of $NT_ALL"
  echo "notes: GEMMA prints 6 significant digits; its null beta = mean(y) (K is centred by GEMMA), remle_loglik = lme4 -criterion/2 + 0.5*log(n); see the header of r/kinship_gemma.sh"
  echo "total loop wall: $TOTAL s"
  awk -F, 'NR > 1 && $14 == 1 { b++ } END { printf "traits at GEMMA lambda lower bound 1e-5 (vg ~ 0): %d\n", b }' gemma_traits.csv
  awk -F, 'NR > 1 { e += $16; g += $15; n++ } END { printf "GEMMA-reported CPU time (clock(), summed over threads) per trait: total %.4f s, of which eigendecomposition %.4f s (means)\n", g / n, e / n }' gemma_traits.csv
  awk -F, 'NR > 1 { s += $12; if (min == "" || $12 < min) min = $12; if ($12 > max) max = $12; n++ }
           END { printf "per-trait wall (gemma process, incl. reading 1000x1000 K and eigendecomposition): mean %.4f s, min %.4f s, max %.4f s, sum %.3f s\n", s / n, min, max, s }' gemma_traits.csv
} > "$OUT/gemma_timing.txt"
cat "$OUT/gemma_timing.txt"
