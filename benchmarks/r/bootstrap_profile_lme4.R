#!/usr/bin/env Rscript
# bootstrap_profile_lme4.R -- timing of lme4/lmerTest/pbkrtest inference steps.
#
# Usage:
#   Rscript bootstrap_profile_lme4.R DATA_DIR
#
# On DATA_DIR/sleepstudy.csv, m <- lmer(Reaction ~ Days + (Days | Subject), REML):
#   (a) bootMer(m, fixef, nsim = 1000, use.u = FALSE, seed = 1)   (parametric)
#   (b) confint(m, method = "profile")
# and (c) Kenward-Roger denominator df via lmerTest's
#   summary(m, ddf = "Kenward-Roger")   (pbkrtest underneath)
# on synthetic data y ~ x + (1 | g), N = 500, 1000, 2000, 4000, 8000, 20000 rows,
# g with N/10 levels, x ~ N(0,1), set.seed(1) per size. The KR sweep stops
# after a size errors or exceeds 120 s (elapsed limit via setTimeLimit), and
# the next size is not started when the previous one took > 60 s (cost grows
# faster than linearly in N, so it would be expected to blow the limit).
# Stdout: one JSON object with all timings (seconds) and a few results for
# sanity checks; progress messages go to stderr.
suppressPackageStartupMessages({
  library(lme4); library(lmerTest); library(pbkrtest); library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1) stop("usage: Rscript bootstrap_profile_lme4.R DATA_DIR")
el <- function() as.numeric(Sys.time())

d <- read.csv(file.path(args[1], "sleepstudy.csv"))
d$Subject <- factor(d$Subject)
m <- lme4::lmer(Reaction ~ Days + (Days | Subject), data = d, REML = TRUE)

# (a) parametric bootstrap of the fixed effects
t0 <- el()
b <- suppressMessages(suppressWarnings(
  bootMer(m, fixef, nsim = 1000, use.u = FALSE, seed = 1)))
t_boot <- el() - t0
message(sprintf("bootMer nsim=1000: %.2f s", t_boot))
boot_sd <- apply(b$t, 2, sd, na.rm = TRUE)

# (b) profile confidence intervals
t0 <- el()
ci <- suppressMessages(suppressWarnings(confint(m, method = "profile")))
t_prof <- el() - t0
message(sprintf("confint profile: %.2f s", t_prof))

# (c) Kenward-Roger df on growing synthetic data
kr <- list()
for (N in c(500L, 1000L, 2000L, 4000L, 8000L, 20000L)) {
  set.seed(1)
  ng <- N %/% 10L
  g <- factor(rep(seq_len(ng), length.out = N))
  x <- rnorm(N)
  y <- 1 + 0.5 * x + rnorm(ng)[as.integer(g)] + rnorm(N)
  sd_ <- data.frame(y = y, x = x, g = g)
  res <- list(N = N, n_groups = ng)
  t0 <- el()
  mk <- lmerTest::lmer(y ~ x + (1 | g), data = sd_, REML = TRUE)
  res$fit_s <- el() - t0
  t0 <- el()
  out <- tryCatch({
    setTimeLimit(elapsed = 120, transient = TRUE)
    s <- summary(mk, ddf = "Kenward-Roger")
    setTimeLimit(elapsed = Inf)
    s
  }, error = function(e) { setTimeLimit(elapsed = Inf); e })
  res$kr_summary_s <- el() - t0
  if (inherits(out, "error")) {
    res$error <- conditionMessage(out)
    message(sprintf("KR N=%d: error after %.1f s: %s", N, res$kr_summary_s, res$error))
    kr[[length(kr) + 1]] <- res
    break
  }
  res$df_x <- out$coefficients["x", "df"]
  message(sprintf("KR N=%d: fit %.2f s, summary(ddf='Kenward-Roger') %.2f s, df_x %.2f",
                  N, res$fit_s, res$kr_summary_s, res$df_x))
  kr[[length(kr) + 1]] <- res
  if (res$kr_summary_s > 120) break
  if (res$kr_summary_s > 60) {
    message("previous size took > 60 s; not starting the next size")
    break
  }
}

out <- list(
  r_version = R.version.string,
  lme4_version = as.character(packageVersion("lme4")),
  lmerTest_version = as.character(packageVersion("lmerTest")),
  pbkrtest_version = as.character(packageVersion("pbkrtest")),
  nproc = parallel::detectCores(),
  sleepstudy = list(
    bootmer_nsim = 1000, bootmer_s = t_boot,
    bootmer_failed = sum(!complete.cases(b$t)),
    bootmer_sd = as.list(boot_sd),
    confint_profile_s = t_prof,
    confint_profile = lapply(split(ci, row(ci)), function(r) r),
    confint_profile_names = rownames(ci)),
  kenward_roger = kr)
names(out$sleepstudy$confint_profile) <- rownames(ci)
cat(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "\n")
