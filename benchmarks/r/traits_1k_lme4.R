#!/usr/bin/env Rscript
# traits_1k_lme4.R -- lme4 reference fits and timing for the traits_1k workload.
#
# Usage:
#   Rscript traits_1k_lme4.R PATH/traits_1k.csv OUT.csv
#
# For every column trait0000..trait0999 of traits_1k.csv (columns g, x, traits;
# NaN/empty = missing) fits, on that trait's non-missing rows (g as factor),
#   lme4::lmer(trait ~ x + (1 + x | g), REML = TRUE)
# and writes one row per trait to OUT.csv with columns
#   trait, nobs, criterion (REML criterion, 17 significant digits),
#   theta1, theta2, theta3 (relative Cholesky factor, lme4 order),
#   beta_intercept, beta_x, sigma, singular (isSingular()),
#   messages (convergence warnings/messages, "; "-joined, empty if none),
#   seconds (wall time of that trait's fit).
# Stdout: total loop wall time and mean ms per trait for the default fit, and
# the total/mean for a second timed loop using
# lmerControl(calc.derivs = FALSE) (refit() is not usable: missingness differs
# per trait, so every trait needs its own model frame).
suppressPackageStartupMessages(library(lme4))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 2) stop("usage: Rscript traits_1k_lme4.R PATH/traits_1k.csv OUT.csv")
dat <- read.csv(args[1], na.strings = c("", "NA", "NaN"))
dat$g <- factor(dat$g)
traits <- grep("^trait", names(dat), value = TRUE)

fit_one <- function(tr, control = lmerControl()) {
  d <- data.frame(y = dat[[tr]], x = dat$x, g = dat$g)
  d <- d[!is.na(d$y), , drop = FALSE]
  msgs <- character(0)
  t0 <- as.numeric(Sys.time())
  m <- withCallingHandlers(
    lmer(y ~ x + (1 + x | g), data = d, REML = TRUE, control = control),
    warning = function(w) { msgs <<- c(msgs, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(m) { msgs <<- c(msgs, trimws(conditionMessage(m))); invokeRestart("muffleMessage") })
  secs <- as.numeric(Sys.time()) - t0
  list(m = m, d = d, msgs = msgs, secs = secs)
}

f17 <- function(v) format(v, digits = 17)

rows <- vector("list", length(traits))
t_start <- as.numeric(Sys.time())
for (i in seq_along(traits)) {
  r <- fit_one(traits[i])
  m <- r$m
  th <- getME(m, "theta"); fe <- fixef(m)
  # lme4 stores optimizer/convergence messages on the fit too
  conv <- m@optinfo$conv$lme4$messages
  msgs <- unique(c(r$msgs, conv))
  rows[[i]] <- data.frame(
    trait = traits[i], nobs = nobs(m),
    criterion = f17(getME(m, "devcomp")$cmp[["REML"]]),
    theta1 = f17(th[[1]]), theta2 = f17(th[[2]]), theta3 = f17(th[[3]]),
    beta_intercept = f17(fe[[1]]), beta_x = f17(fe[[2]]),
    sigma = f17(sigma(m)), singular = isSingular(m),
    messages = paste(gsub("[\r\n]+", " ", msgs), collapse = "; "),
    seconds = f17(r$secs), stringsAsFactors = FALSE)
}
total <- as.numeric(Sys.time()) - t_start
out <- do.call(rbind, rows)
write.csv(out, args[2], row.names = FALSE,
          quote = match(c("trait", "messages"), names(out)))  # numbers unquoted

cat(sprintf("traits fitted: %d\n", length(traits)))
cat(sprintf("default lmerControl(): total loop wall %.3f s, mean %.3f ms/trait (sum of per-fit times %.3f s)\n",
            total, 1000 * total / length(traits), sum(as.numeric(out$seconds))))
conv_warn <- grepl("converge|gradient|Hessian", out$messages)
cat(sprintf("singular fits: %d; fits with any warning/message: %d; with convergence warnings: %d\n",
            sum(out$singular), sum(nzchar(out$messages)), sum(conv_warn)))

t_start <- as.numeric(Sys.time())
for (tr in traits) invisible(fit_one(tr, lmerControl(calc.derivs = FALSE)))
total2 <- as.numeric(Sys.time()) - t_start
cat(sprintf("lmerControl(calc.derivs = FALSE): total loop wall %.3f s, mean %.3f ms/trait\n",
            total2, 1000 * total2 / length(traits)))
