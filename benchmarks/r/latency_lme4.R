#!/usr/bin/env Rscript
# latency_lme4.R -- what a new R session costs for the steps of benchmarks/latency.py.
#
# Usage:
#   Rscript latency_lme4.R DATA_DIR REFERENCE_DIR [NSIM]
#
# In one fresh R process, each step timed once (wall seconds), as a notebook
# user meets them:
#   load        library(lme4), library(lmerTest), library(pbkrtest)
#   first_fit   lmer(Reaction ~ Days + (Days | Subject), sleepstudy)   (REML)
#   second_fit  lmer(Reaction ~ Days + (1 | Subject), sleepstudy)
#   profile     confint(first, method = "profile")
#   kr          summary(first, ddf = "Kenward-Roger")$coefficients      (lmerTest / pbkrtest)
#   bootstrap   bootMer(first, fixef-and-sigma, nsim = NSIM (default 1000), type = "parametric")
#   models      every REFERENCE_DIR/*.json but insteval, fitted one after another
# Stdout: one JSON object {"r_version", "lme4_version", "steps": {name: seconds},
#                          "models": {case: seconds}}.
t_load <- system.time({
  suppressPackageStartupMessages(library(lme4))
  suppressPackageStartupMessages(library(lmerTest))
  suppressPackageStartupMessages(library(pbkrtest))
  suppressPackageStartupMessages(library(jsonlite))
})[["elapsed"]]

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 2) stop("usage: Rscript latency_lme4.R DATA_DIR REFERENCE_DIR [NSIM]")
data_dir <- args[1]
ref_dir <- args[2]
nsim <- if (length(args) >= 3) as.integer(args[3]) else 1000L

sleep <- read.csv(file.path(data_dir, "sleepstudy.csv"))
sleep$Subject <- factor(sleep$Subject)
el <- function(expr) system.time(expr)[["elapsed"]]
steps <- list(load = t_load)
steps$first_fit <- el(m1 <- lmer(Reaction ~ Days + (Days | Subject), data = sleep))
steps$second_fit <- el(m2 <- lmer(Reaction ~ Days + (1 | Subject), data = sleep))
steps$profile <- el(ci <- suppressWarnings(confint(m1, method = "profile")))
steps$kr <- el(kr <- summary(m1, ddf = "Kenward-Roger")$coefficients)
set.seed(1)
steps$bootstrap <- el(bt <- suppressWarnings(bootMer(m1, function(x) c(fixef(x), sigma(x)), nsim = nsim,
                                                      type = "parametric")))

models <- list()
files <- sort(Sys.glob(file.path(ref_dir, "*.json")))
files <- files[!grepl("insteval", files)]
total <- 0
for (f in files) {
  ref <- fromJSON(f)
  d <- read.csv(file.path(data_dir, ref$data))
  for (v in ref$factors) d[[v]] <- factor(d[[v]])
  t <- el(suppressWarnings(suppressMessages(
    lme4::lmer(as.formula(ref$formula), data = d, REML = isTRUE(ref$reml)))))
  models[[sub("\\.json$", "", basename(f))]] <- t
  total <- total + t
}
steps$models_total <- total
cat(toJSON(list(r_version = R.version.string, lme4_version = as.character(packageVersion("lme4")),
                nsim = nsim, steps = steps, models = models), auto_unbox = TRUE, digits = NA))
cat("\n")
