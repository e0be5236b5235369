# lme4's criterion on each class of tests/test_population_classes.py (lme4 1.1-31):
# the default fit, a bobyqa refit started at its optimum (rhobeg 2e-3, rhoend 1e-12), and the better of the two.
#     python tests/reference/population_classes/make_data.py OUTDIR && Rscript lme4_classes.R OUTDIR
suppressMessages(library(lme4))
dir <- commandArgs(TRUE)[1]
crit <- function(m) if (isREML(m)) m@devcomp$cmp[["REML"]] else deviance(m)
for (csv in sort(Sys.glob(file.path(dir, "*.csv")))) {
  name <- sub("\\.csv$", "", basename(csv))
  spec <- readLines(file.path(dir, paste0(name, ".txt")))
  d <- read.csv(csv, stringsAsFactors = TRUE)
  m <- suppressWarnings(lmer(as.formula(spec[1]), d, REML = as.logical(spec[2])))
  m2 <- suppressWarnings(update(m, start = getME(m, "theta"), control = lmerControl(
    optimizer = "bobyqa", optCtrl = list(rhobeg = 2e-3, rhoend = 1e-12, maxfun = 1e5))))
  cat(sprintf("%-22s default %.12g  refit %.12g  best %.12g\n", name, crit(m), crit(m2), min(crit(m), crit(m2))))
}
