# Timings of lme4::glmer and glmmTMB for benchmarks/glmm.py (same machine, same run).
# usage: Rscript glmm_lme4.R CONTRACEPTION.csv VERBAGG.csv TRAITS.csv.gz NTRAITS  -> JSON on stdout
suppressPackageStartupMessages({library(lme4); library(glmmTMB); library(jsonlite)})
a <- commandArgs(TRUE)
best <- function(f, k = 3) { t <- numeric(k); for (i in seq_len(k)) t[i] <- system.time(v <- f())[["elapsed"]]; list(best = min(t), median = median(t), value = v) }
ct <- read.csv(a[1]); ct$urban_district <- factor(ct$urban_district); ct$livch <- factor(ct$livch, levels = c("0", "1", "2", "3+")); ct$urban <- factor(ct$urban)
va <- read.csv(a[2]); for (f in c("id", "item", "Gender", "btype", "situ")) va[[f]] <- factor(va[[f]])
va$btype <- factor(va$btype, levels = c("curse", "scold", "shout")); va$Gender <- factor(va$Gender, levels = c("F", "M")); va$situ <- factor(va$situ, levels = c("other", "self"))
fc <- use01 ~ age + I(age^2) + urban + livch + (1 | urban_district)
fv <- r2_01 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)
out <- list()
r <- best(function() glmer(fc, ct, family = binomial)); out$contraception_glmer <- list(seconds = r$best, loglik = as.numeric(logLik(r$value)))
r <- best(function() glmmTMB(fc, ct, family = binomial)); out$contraception_glmmTMB <- list(seconds = r$best, loglik = as.numeric(logLik(r$value)))
r <- best(function() glmer(fv, va, family = binomial), 1); out$verbagg_glmer <- list(seconds = r$best, loglik = as.numeric(logLik(r$value)))
r <- best(function() glmmTMB(fv, va, family = binomial), 1); out$verbagg_glmmTMB <- list(seconds = r$best, loglik = as.numeric(logLik(r$value)))
big <- do.call(rbind, lapply(1:40, function(i) { d <- ct; d$urban_district <- factor(paste(i, d$urban_district)); d }))
r <- best(function() glmmTMB(fc, big, family = binomial), 1); out$contraception40_glmmTMB <- list(seconds = r$best, loglik = as.numeric(logLik(r$value)))
tr <- read.csv(gzfile(a[3])); tr$g <- factor(tr$g); nt <- as.integer(a[4])
ll <- numeric(nt)
t <- system.time(for (j in seq_len(nt)) { d <- data.frame(y = tr[[2 + j]], x = tr$x, g = tr$g); d <- d[!is.na(d$y), ]
  ll[j] <- as.numeric(logLik(glmer(y ~ x + (1 | g), d, family = binomial))) })[["elapsed"]]
out$traits_glmer <- list(seconds_per_trait = t / nt, ntraits = nt, loglik = ll)
cat(toJSON(out, auto_unbox = TRUE, digits = NA))
