#!/usr/bin/env Rscript
# kinship_lme4.R -- lme4 (modular API) reference fits and timing for the kinship
# workload: y ~ 1 + (1 | id) with the id term transformed by chol(K).
#
# Usage:
#   Rscript kinship_lme4.R [K.csv] [TRAITS.csv] [OUT.csv] [NTRAITS]
# Defaults: /work/shared/bench/kinship_K.csv /work/shared/bench/kinship_traits.csv
#           benchmarks/reference/kinship/lme4_traits.csv (next to this script's ../)  3
#
# Per trait (non-missing rows only; id levels = observed ids, in K's order):
#   lf <- lFormula(y ~ 1 + (1 | id), d, control = lmerControl(check.nobs.vs.nlev =
#          "ignore", check.nobs.vs.rankZ = "ignore", check.nobs.vs.nRE = "ignore"))
#   L  <- t(chol(K[levs, levs]));  lf$reTrms$Zt <- as(t(L) %*% Zt, "CsparseMatrix")
#   devfun <- do.call(mkLmerDevfun, lf); opt <- optimizeLmer(devfun)
#   m <- mkMerMod(environment(devfun), opt, lf$reTrms, fr = lf$fr)
# Columns: trait, nobs, criterion (REML criterion = opt$fval, 17 digits), theta,
#   sigma, beta_intercept, vg = (sigma*theta)^2, ve = sigma^2, h2 = vg/(vg+ve),
#   remle_loglik = -criterion/2, seconds (wall time of lFormula..mkMerMod,
#   including chol(K_sub) and the dense t(L) %*% Zt).
suppressPackageStartupMessages({ library(lme4); library(Matrix) })

args <- commandArgs(trailingOnly = TRUE)
full_args <- commandArgs(trailingOnly = FALSE)
here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", full_args, value = TRUE)[1])))
kfile <- if (length(args) >= 1) args[1] else "/work/shared/bench/kinship_K.csv"
tfile <- if (length(args) >= 2) args[2] else "/work/shared/bench/kinship_traits.csv"
ofile <- if (length(args) >= 3) args[3] else file.path(here, "..", "reference", "kinship", "lme4_traits.csv")
ntr   <- if (length(args) >= 4) as.integer(args[4]) else 3L

K <- as.matrix(read.csv(kfile, row.names = 1, check.names = FALSE))
tr <- read.csv(tfile, check.names = FALSE, na.strings = c("", "NA", "NaN"))
stopifnot(identical(as.character(tr[[1]]), rownames(K)), identical(rownames(K), colnames(K)))
ids <- rownames(K)
traits <- names(tr)[-1][seq_len(ntr)]
ctrl <- lmerControl(check.nobs.vs.nlev = "ignore", check.nobs.vs.rankZ = "ignore",
                    check.nobs.vs.nRE = "ignore")
f17 <- function(v) format(v, digits = 17)

rows <- list()
for (t in traits) {
  d <- data.frame(id = factor(ids, levels = ids), y = tr[[t]])
  d <- d[!is.na(d$y), ]
  t0 <- as.numeric(Sys.time())
  lf <- lFormula(y ~ 1 + (1 | id), data = d, REML = TRUE, control = ctrl)
  levs <- levels(lf$reTrms$flist$id)
  L <- t(chol(K[levs, levs]))
  lf$reTrms$Zt <- as(t(L) %*% lf$reTrms$Zt, "CsparseMatrix")
  lf$reTrms$Ztlist[[1]] <- lf$reTrms$Zt
  devfun <- do.call(mkLmerDevfun, lf)
  opt <- optimizeLmer(devfun)
  m <- mkMerMod(environment(devfun), opt, lf$reTrms, fr = lf$fr)
  secs <- as.numeric(Sys.time()) - t0
  th <- getME(m, "theta")[[1]]; s <- sigma(m)
  vg <- (s * th)^2; ve <- s^2
  rows[[t]] <- data.frame(trait = t, nobs = nobs(m), criterion = f17(opt$fval),
                          theta = f17(th), sigma = f17(s), beta_intercept = f17(fixef(m)[[1]]),
                          vg = f17(vg), ve = f17(ve), h2 = f17(vg / (vg + ve)),
                          remle_loglik = f17(-opt$fval / 2), seconds = f17(secs))
  cat(sprintf("%s n=%d crit=%.10g theta=%.8g sigma=%.8g h2=%.6f  %.2f s\n",
              t, nobs(m), opt$fval, th, s, vg / (vg + ve), secs))
}
out <- do.call(rbind, rows)
dir.create(dirname(ofile), showWarnings = FALSE, recursive = TRUE)
write.csv(out, ofile, row.names = FALSE, quote = 1)
cat(sprintf("mean seconds per trait: %.3f (nproc %s, %s, lme4 %s, Matrix %s)\n",
            mean(as.numeric(out$seconds)), parallel::detectCores(), R.version.string,
            packageVersion("lme4"), packageVersion("Matrix")))
si <- sessionInfo(); cat("BLAS:", si$BLAS, "\nLAPACK:", si$LAPACK, "\n")
