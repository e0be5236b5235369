#!/usr/bin/env Rscript
# single_fit_lme4.R -- in-process timing of single lme4 REML fits.
#
# Usage:
#   Rscript single_fit_lme4.R DATA_DIR [REPS]
#
# Reads DATA_DIR/{sleepstudy,penicillin,pastes}.csv and fits (REML):
#   sleepstudy: Reaction ~ Days + (Days | Subject)          (Subject as factor)
#   penicillin: diameter ~ 1 + (1 | plate) + (1 | sample)
#   pastes:     strength ~ 1 + (1 | batch/cask)
# Each model gets one warm-up fit, then REPS (default 20) timed fits.
# Stdout: exactly one JSON object,
#   {"r_version", "lme4_version", "reps",
#    "fits": {name: {"median_s", "min_s", "criterion"}}}
# (wall-clock seconds per fit) where criterion is the REML criterion of the
# fit, printed with 17 significant digits. Anything else goes to stderr.
suppressPackageStartupMessages(library(lme4))
suppressPackageStartupMessages(library(jsonlite))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 1) stop("usage: Rscript single_fit_lme4.R DATA_DIR [REPS]")
data_dir <- args[1]
reps <- if (length(args) >= 2) as.integer(args[2]) else 20L

rd <- function(name, factors) {
  d <- read.csv(file.path(data_dir, paste0(name, ".csv")))
  for (f in factors) d[[f]] <- factor(d[[f]])
  d
}
cases <- list(
  sleepstudy = list(data = rd("sleepstudy", "Subject"),
                    formula = Reaction ~ Days + (Days | Subject)),
  penicillin = list(data = rd("penicillin", c("plate", "sample")),
                    formula = diameter ~ 1 + (1 | plate) + (1 | sample)),
  pastes = list(data = rd("pastes", c("batch", "cask")),
                formula = strength ~ 1 + (1 | batch/cask)))

el <- function() as.numeric(Sys.time())  # microsecond-resolution wall clock
# full-precision (17 significant digits) number, emitted verbatim in the JSON
num17 <- function(v) structure(sprintf("%.17g", v), class = "json")

fits <- list()
for (nm in names(cases)) {
  cs <- cases[[nm]]
  fit <- function() lmer(cs$formula, data = cs$data, REML = TRUE)
  m <- fit()  # warm-up
  times <- numeric(reps)
  for (i in seq_len(reps)) {
    t0 <- el()
    m <- fit()
    times[i] <- el() - t0
  }
  message(sprintf("%s: median %.4f s, min %.4f s", nm, median(times), min(times)))
  fits[[nm]] <- list(median_s = median(times), min_s = min(times),
                     criterion = num17(getME(m, "devcomp")$cmp[["REML"]]))
}
out <- list(r_version = R.version.string,
            lme4_version = as.character(packageVersion("lme4")),
            reps = reps, fits = fits)
cat(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE,
           json_verbatim = TRUE), "\n")
