#!/usr/bin/env Rscript
# fit_function_lme4.R -- lme4's way to the sensitivity of theta-hat to each observation of sleepstudy:
# 180 refits (refit() with y + h e_i, one-sided differences), and 180 leave-one-out refits.
#
# Usage: Rscript fit_function_lme4.R DATA_CSV
# Stdout: one JSON object {"lme4_version", "refits_s", "loo_s", "n", "jac" (3 x 180, column-major)}.
suppressPackageStartupMessages(library(lme4))
suppressPackageStartupMessages(library(jsonlite))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
d$Subject <- factor(d$Subject)
fit <- lmer(Reaction ~ Days + (Days | Subject), d, REML = TRUE)
y <- d$Reaction
n <- length(y)
h <- 1e-4 * sd(y)
t0 <- proc.time()[["elapsed"]]
jac <- sapply(seq_len(n), function(i) {
  yi <- y; yi[i] <- yi[i] + h
  (getME(refit(fit, yi), "theta") - getME(fit, "theta")) / h
})
refits_s <- proc.time()[["elapsed"]] - t0
t0 <- proc.time()[["elapsed"]]
loo <- sapply(seq_len(n), function(i) getME(update(fit, data = d[-i, ]), "theta"))
loo_s <- proc.time()[["elapsed"]] - t0
cat(toJSON(list(lme4_version = as.character(packageVersion("lme4")), refits_s = refits_s, loo_s = loo_s, n = n,
                jac = as.vector(jac)), digits = NA, auto_unbox = TRUE))
