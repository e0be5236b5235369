# glmmTMB fits with a log-linear dispersion model (dispformula with numeric columns), for
# tests/test_structured_safety.py.  glmmTMB models the log of each row's residual variance as
# x_d^T delta (x_d the dispformula's model-matrix row).
# Usage (from the repository root):
#   Rscript tests/reference/structured/dispersion/disp_refs.R tests/reference/structured/data tests/reference/structured/dispersion
suppressPackageStartupMessages({ library(glmmTMB); library(jsonlite) })
args <- commandArgs(trailingOnly = TRUE); dd <- args[1]; od <- args[2]
cases <- list(
  list(name = "sleep_disp_days", data = "sleepstudy.csv", formula = "Reaction ~ Days + (Days | Subject)",
       disp = "~ Days", reml = TRUE, factors = c("Subject")),
  list(name = "sleep_disp_days_intercept", data = "sleepstudy.csv", formula = "Reaction ~ Days + (1 | Subject)",
       disp = "~ Days", reml = TRUE, factors = c("Subject")),
  list(name = "sleep_disp_factor_days_intercept", data = "sleepstudy.csv", formula = "Reaction ~ Days + (1 | Subject)",
       disp = "~ factor(Days)", reml = TRUE, factors = c("Subject")),
  list(name = "sleep_disp_days_ml", data = "sleepstudy.csv", formula = "Reaction ~ Days + (Days | Subject)",
       disp = "~ Days", reml = FALSE, factors = c("Subject")),
  list(name = "chick_disp_diet_by_time", data = "chickweight.csv", formula = "weight ~ Time * Diet + (1 | Chick)",
       disp = "~ Diet * Time", reml = TRUE, factors = c("Chick", "Diet")))
for (cs in cases) {
  d <- read.csv(file.path(dd, cs$data), stringsAsFactors = FALSE)
  for (f in cs$factors) d[[f]] <- factor(d[[f]])
  disp <- as.formula(cs$disp)
  m <- glmmTMB(as.formula(cs$formula), data = d, dispformula = disp, REML = cs$reml,
               control = glmmTMBControl(optCtrl = list(iter.max = 5000, eval.max = 5000)))
  fx <- fixef(m)$cond; V <- as.matrix(vcov(m)$cond)
  fd <- fixef(m)$disp; Vd <- as.matrix(vcov(m)$disp)
  vc <- VarCorr(m)$cond
  terms <- lapply(names(vc), function(g) list(group = g, names = colnames(vc[[g]]), cov = unname(as.matrix(vc[[g]]))))
  Xd <- model.matrix(disp, d)
  row_sd <- sqrt(exp(drop(Xd %*% fd)))
  out <- list(case = cs$name, data = cs$data, formula = cs$formula, dispformula = cs$disp, factors = I(cs$factors),
              reml = cs$reml, glmmTMB_version = as.character(packageVersion("glmmTMB")),
              criterion = -2 * as.numeric(logLik(m)), converged = m$fit$convergence == 0, pdHess = m$sdr$pdHess,
              beta = as.list(fx), se = as.list(setNames(sqrt(diag(V)), names(fx))),
              dispersion = as.list(fd), dispersion_se = as.list(setNames(sqrt(diag(Vd)), names(fd))),
              terms = terms, nobs = nobs(m), row_residual_sd = row_sd,
              predict_disp = unname(predict(m, type = "disp")))
  write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), file.path(od, paste0(cs$name, ".json")))
  cat(sprintf("%-34s crit %.6f conv %s pdHess %s\n", cs$name, out$criterion, out$converged, out$pdHess))
}
