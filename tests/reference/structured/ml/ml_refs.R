# ML (REML = FALSE) fits with glmmTMB for the structured tests. Usage: Rscript ml_refs.R DATA_DIR OUT_DIR
suppressPackageStartupMessages({ library(glmmTMB); library(jsonlite) })
args <- commandArgs(trailingOnly = TRUE); dd <- args[1]; od <- args[2]
d <- read.csv(file.path(dd, "machines.csv")); d$Worker <- factor(d$Worker); d$Machine <- factor(d$Machine)
m <- glmmTMB(score ~ Machine + cs(0 + Machine | Worker), d, REML = FALSE)
out <- list(case = "machines_cs_ml", data = "machines.csv", formula = "score ~ Machine + cs(0 + Machine | Worker)",
            factors = c("Worker", "Machine"), reml = FALSE, glmmTMB_version = as.character(packageVersion("glmmTMB")),
            criterion = -2 * as.numeric(logLik(m)), beta = as.list(fixef(m)$cond), sigma = sigma(m))
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), file.path(od, "machines_cs_ml.json"))
