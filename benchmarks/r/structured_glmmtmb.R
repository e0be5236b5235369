#!/usr/bin/env Rscript
# structured_glmmtmb.R -- in-process timing of glmmTMB REML fits with structured covariances.
# Usage: Rscript structured_glmmtmb.R DATA_DIR [REPS]
# Fits repeated_ar1 (ar1 over visits within subject, plus a subject intercept) and field_exp (exponential
# spatial covariance over plot coordinates), one warm-up fit each, then REPS (default 5) timed fits.
# Stdout: one JSON object {"glmmTMB_version", "fits": {name: {"median_s", "min_s", "criterion"}}}.
suppressPackageStartupMessages({ library(glmmTMB); library(jsonlite) })
args <- commandArgs(trailingOnly = TRUE)
data_dir <- args[1]; reps <- if (length(args) >= 2) as.integer(args[2]) else 5L
rd <- function(f, factors) { d <- read.csv(file.path(data_dir, f)); for (v in factors) d[[v]] <- factor(d[[v]]); d }
rep_d <- rd("repeated.csv", c("subject", "arm"))
fld <- rd("fieldtrial.csv", c("variety", "block", "field")); fld$pos <- numFactor(fld$x, fld$y)
cases <- list(
  repeated_ar1 = function() glmmTMB(y ~ visit * arm + (1 | subject) + ar1(0 + factor(visit) | subject), rep_d, REML = TRUE),
  field_exp = function() glmmTMB(yield ~ 0 + variety + (1 | block) + exp(pos + 0 | field), fld, REML = TRUE))
out <- list(glmmTMB_version = as.character(packageVersion("glmmTMB")), fits = list())
for (nm in names(cases)) {
  m <- cases[[nm]]()
  times <- sapply(seq_len(reps), function(i) system.time(cases[[nm]]())[["elapsed"]])
  out$fits[[nm]] <- list(median_s = median(times), min_s = min(times), criterion = -2 * as.numeric(logLik(m)))
}
cat(toJSON(out, auto_unbox = TRUE, digits = NA))
