#!/usr/bin/env Rscript
# sleepstudy_process.R -- whole-process equivalent of a CLI fit, for timing a
# complete `Rscript` run (start-up, package load, read, fit, print).
#
# Usage:
#   time Rscript sleepstudy_process.R DATA_DIR
#   (DATA_DIR/sleepstudy.csv is read; a path ending in .csv is used as-is)
#
# Fits lme4::lmer(Reaction ~ Days + (Days | Subject)) (REML, Subject as factor)
# and prints summary(m) to stdout.
library(lme4)
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1) stop("usage: Rscript sleepstudy_process.R DATA_DIR")
path <- if (grepl("\\.csv$", args[1])) args[1] else file.path(args[1], "sleepstudy.csv")
d <- read.csv(path)
d$Subject <- factor(d$Subject)
m <- lmer(Reaction ~ Days + (Days | Subject), data = d)
print(summary(m))
