#!/usr/bin/env Rscript
# insteval_lme4.R -- in-process timing of lme4's InstEval fit.
#
# Usage:
#   Rscript insteval_lme4.R [REPS] [ROWS]
#
# Fits (REML), on lme4's own InstEval data set (73,421 rows),
#   y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)
# REPS (default 3) timed fits after one untimed warm-up fit; ROWS, if given,
# fits only the first ROWS rows (unused factor levels dropped), for a quick check.
# Stdout: exactly one JSON object,
#   {"r_version", "lme4_version", "rows", "reps", "best_s", "median_s", "times_s",
#    "criterion", "theta", "beta", "sigma"}
# (wall-clock seconds per fit; numbers with 17 significant digits).
# Anything else goes to stderr.
suppressPackageStartupMessages(library(lme4))
suppressPackageStartupMessages(library(jsonlite))

args <- commandArgs(trailingOnly = TRUE)
reps <- if (length(args) >= 1) as.integer(args[1]) else 3L
data(InstEval, package = "lme4")
d <- InstEval
if (length(args) >= 2) d <- droplevels(d[seq_len(min(nrow(d), as.integer(args[2]))), ])

el <- function() as.numeric(Sys.time())  # microsecond-resolution wall clock
num17 <- function(v) structure(sprintf("[%s]", paste(sprintf("%.17g", v), collapse = ", ")), class = "json")

fit <- function() lmer(y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service), data = d, REML = TRUE)
m <- fit()  # warm-up
times <- numeric(reps)
for (i in seq_len(reps)) {
  t0 <- el()
  m <- fit()
  times[i] <- el() - t0
  message(sprintf("fit %d: %.2f s", i, times[i]))
}
out <- list(r_version = R.version.string,
            lme4_version = as.character(packageVersion("lme4")),
            rows = nrow(d), reps = reps, best_s = min(times), median_s = median(times), times_s = I(times),
            criterion = num17(getME(m, "devcomp")$cmp[["REML"]]),
            theta = num17(getME(m, "theta")), beta = num17(fixef(m)), sigma = num17(sigma(m)))
cat(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, json_verbatim = TRUE), "\n")
