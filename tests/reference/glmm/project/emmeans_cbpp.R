# emmeans 1.8 of a glmer fit on both scales, for tests/test_glmm.py (Rscript emmeans_cbpp.R in this folder)
suppressPackageStartupMessages({library(lme4); library(emmeans); library(jsonlite)})
d <- read.csv("cbpp.csv"); d$herd <- factor(d$herd); d$period <- factor(d$period)
tight <- glmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e6), check.conv.grad = "ignore")
m0 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), d, family = binomial)
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), d, family = binomial, control = tight,
           start = list(theta = getME(m0, "theta"), fixef = fixef(m0)))
link <- as.data.frame(emmeans(m, "period"))
resp <- as.data.frame(emmeans(m, "period", type = "response"))
out <- list(loglik = as.numeric(logLik(m)), beta = fixef(m), link = link, response = resp,
            provenance = paste("R", R.version$major, R.version$minor, "lme4", packageVersion("lme4"),
                               "emmeans", packageVersion("emmeans"), ": glmer refitted by bobyqa (rhoend 1e-12)"))
write(toJSON(out, digits = NA, pretty = TRUE, auto_unbox = TRUE), "emmeans_cbpp.json")
# profile likelihood intervals of the same fit (lme4's confint.merMod, method = "profile")
ci <- confint(m, method = "profile", oldNames = FALSE)
prof <- list(names = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]))
write(toJSON(prof, digits = NA, pretty = TRUE, auto_unbox = TRUE), "profile_cbpp.json")
