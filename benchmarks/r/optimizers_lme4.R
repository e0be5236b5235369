#!/usr/bin/env Rscript
# optimizers_lme4.R -- lme4's default optimizer on the reference fits of benchmarks/optimizers.py.
#
# Usage:  Rscript optimizers_lme4.R DATA_DIR REFERENCE_DIR
# Every REFERENCE_DIR/*.json but insteval, fitted with lme4::lmer's defaults (bobyqa for
# lmer), each twice in one R session: the first call (cold) and the second (warm).
# Stdout: one JSON object {"lme4_version", "total_s" (warm), "models": {case: {cold_s, warm_s, feval,
# criterion}}}.
suppressPackageStartupMessages(library(lme4))
suppressPackageStartupMessages(library(jsonlite))
args <- commandArgs(trailingOnly = TRUE)
data_dir <- args[1]
ref_dir <- args[2]
el <- function(expr) system.time(expr)[["elapsed"]]
files <- sort(Sys.glob(file.path(ref_dir, "*.json")))
files <- files[!grepl("insteval", files)]
models <- list()
total <- 0
for (f in files) {
  ref <- fromJSON(f)
  d <- read.csv(file.path(data_dir, ref$data))
  for (v in ref$factors) d[[v]] <- factor(d[[v]])
  fit <- function() suppressWarnings(suppressMessages(
    lme4::lmer(as.formula(ref$formula), data = d, REML = isTRUE(ref$reml))))
  cold <- el(m <- fit())
  warm <- el(m <- fit())
  total <- total + warm
  models[[sub("\\.json$", "", basename(f))]] <- list(cold_s = cold, warm_s = warm, feval = m@optinfo$feval,
                                                     criterion = as.numeric(deviance(m, REML = isTRUE(ref$reml))))
}
cat(toJSON(list(lme4_version = as.character(packageVersion("lme4")), total_s = total, models = models),
           auto_unbox = TRUE, digits = NA))
cat("\n")
