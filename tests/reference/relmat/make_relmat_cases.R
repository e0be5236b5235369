#!/usr/bin/env Rscript
# make_relmat_cases.R -- simulated relationship-matrix (GBLUP) reference cases,
# fitted with lme4's modular API.
#
# Usage:
#   Rscript make_relmat_cases.R OUTDIR
#
# Model (per kernel term k):  y = X beta + sum_k Z_k u_k + (other terms) + e,
#   u_k ~ N(0, sigma^2 theta_k^2 K_k),  e ~ N(0, sigma^2 I).
# Fitted exactly as
#   lf <- lFormula(formula, data, REML = TRUE,
#                  control = lmerControl(check.nobs.vs.nlev = "ignore",
#                                        check.nobs.vs.rankZ = "ignore",
#                                        check.nobs.vs.nRE = "ignore"))
#   L  <- t(chol(K[levs, levs]))      # levs = levels(lf$reTrms$flist[[grp]])
#   Ztlist[[term]] <- t(L) %*% Ztlist[[term]]   (only the kernel terms)
#   lf$reTrms$Zt <- rbind(Ztlist in lf term order)   (dgCMatrix)
#   devfun <- do.call(mkLmerDevfun, lf); opt <- optimizeLmer(devfun)
#   m <- mkMerMod(environment(devfun), opt, lf$reTrms, fr = lf$fr)
# Genetic values (BLUPs of u_k, in level order) = L %*% ranef(m)[[grp]][, 1].
#
# Writes into OUTDIR:
#   data CSVs  : relmat_<dataset>.csv            (17 significant digits)
#   kernel CSVs: K_<name>.csv  (header "id,<ids>", first column id, %.17g)
#   JSONs      : <case>.json   (jsonlite, digits = NA)
# All simulation uses set.seed(20240611) at the start of each dataset block.
suppressPackageStartupMessages({ library(lme4); library(Matrix); library(jsonlite) })

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1) stop("usage: Rscript make_relmat_cases.R OUTDIR")
outdir <- args[1]
dir.create(outdir, showWarnings = FALSE, recursive = TRUE)

g17 <- function(v) sprintf("%.17g", v)

write_K <- function(K, name) {
  ids <- rownames(K)
  body <- matrix(g17(K), nrow(K))
  lines <- c(paste(c("id", ids), collapse = ","),
             apply(cbind(ids, body), 1, paste, collapse = ","))
  writeLines(lines, file.path(outdir, paste0("K_", name, ".csv")))
  paste0("K_", name, ".csv")
}

write_data <- function(d, name) {
  d2 <- d
  for (nm in names(d2)) if (is.numeric(d2[[nm]])) d2[[nm]] <- ifelse(is.na(d2[[nm]]), "NA", g17(d2[[nm]]))
  fn <- paste0("relmat_", name, ".csv")
  write.csv(d2, file.path(outdir, fn), row.names = FALSE, quote = FALSE)
  fn
}

# ---- marker simulation and kernels ----------------------------------------
sim_markers <- function(n, m, ids) {
  p0 <- runif(m, 0.1, 0.9)
  M <- sapply(p0, function(p) rbinom(n, 2, p))
  # make sure no column is monomorphic
  for (j in seq_len(m)) while (var(M[, j]) == 0) M[, j] <- rbinom(n, 2, p0[j])
  dimnames(M) <- list(ids, sprintf("snp%03d", seq_len(m)))
  M
}
vanraden <- function(M, ridge = 1e-6) {
  p <- colMeans(M) / 2
  Z <- sweep(M, 2, 2 * p)
  K <- tcrossprod(Z) / (2 * sum(p * (1 - p)))
  K <- K + ridge * diag(nrow(K))
  (K + t(K)) / 2
}
dominance <- function(M, ridge = 1e-4) {
  # Vitezica et al. (2013) dominance coding: 2 -> -2q^2, 1 -> 2pq, 0 -> -2p^2
  # (p = frequency of allele counted by M), normalised to mean diagonal 1.
  p <- colMeans(M) / 2; q <- 1 - p
  W <- M * 0
  for (j in seq_len(ncol(M))) {
    W[, j] <- ifelse(M[, j] == 2, -2 * q[j]^2, ifelse(M[, j] == 1, 2 * p[j] * q[j], -2 * p[j]^2))
  }
  K <- tcrossprod(W)
  K <- K / mean(diag(K)) + ridge * diag(nrow(K))
  (K + t(K)) / 2
}

# ---- fitting ----------------------------------------------------------------
# One record per individual means nlevels(id) == nobs, which lFormula() rejects
# by default ("number of levels of each grouping factor must be < number of
# observations"); these checks are switched off (they only guard identifiability
# of the iid model, which the kernel restores).
ctrl <- lmerControl(check.nobs.vs.nlev = "ignore", check.nobs.vs.rankZ = "ignore",
                    check.nobs.vs.nRE = "ignore")
# kernels: named list  grouping-factor-name -> K (rows/cols named by id)
fit_relmat <- function(formula, data, kernels) {
  lf <- lFormula(as.formula(formula), data = data, REML = TRUE, control = ctrl)
  rt <- lf$reTrms
  grp_of_term <- names(rt$cnms)                  # grouping factor of each term, lf order
  stopifnot(length(rt$Ztlist) == length(grp_of_term))
  Ls <- list()
  for (k in seq_along(grp_of_term)) {
    g <- grp_of_term[k]
    if (!is.null(kernels[[g]])) {
      stopifnot(length(rt$cnms[[k]]) == 1)        # intercept-only terms
      levs <- levels(rt$flist[[g]])
      Ks <- kernels[[g]][levs, levs]
      L <- t(chol(Ks))
      Ls[[g]] <- L
      rt$Ztlist[[k]] <- as(t(L) %*% rt$Ztlist[[k]], "CsparseMatrix")
    }
  }
  rt$Zt <- as(do.call(rbind, unname(rt$Ztlist)), "CsparseMatrix")
  stopifnot(identical(dim(rt$Zt), dim(lf$reTrms$Zt)))
  lf$reTrms <- rt
  devfun <- do.call(mkLmerDevfun, lf)
  opt <- optimizeLmer(devfun)
  m <- mkMerMod(environment(devfun), opt, lf$reTrms, fr = lf$fr)
  list(m = m, opt = opt, lf = lf, Ls = Ls, grp_of_term = grp_of_term)
}

num <- function(x) unname(as.numeric(x))
named <- function(x, nm = names(x)) as.list(setNames(num(x), nm))

case_json <- function(case, formula, fit, data_file, kernel_files, extra = list()) {
  m <- fit$m; opt <- fit$opt
  th <- getME(m, "theta"); s <- sigma(m)
  re <- ranef(m)
  terms <- list()
  for (k in seq_along(fit$grp_of_term)) {
    g <- fit$grp_of_term[k]
    b <- re[[g]][, 1]; levs <- rownames(re[[g]])
    stopifnot(identical(levs, levels(fit$lf$reTrms$flist[[g]])))
    tm <- list(term = paste0("(1 | ", g, ")"), group = g,
               kernel_file = if (is.null(kernel_files[[g]])) NULL else kernel_files[[g]],
               theta = num(th[k]), variance = (s * num(th[k]))^2,
               levels = I(levs), ranef_b = named(b, levs))
    if (!is.null(fit$Ls[[g]])) tm$genetic_values <- named(as.vector(fit$Ls[[g]] %*% b), levs)
    terms[[k]] <- tm
  }
  first <- terms[[1]]
  gterm <- terms[[which(!vapply(terms, function(t) is.null(t$genetic_values), TRUE))[1]]]
  vg <- gterm$variance; ve <- s^2
  tot_re <- sum(vapply(terms, function(t) t$variance, 0))
  out <- list(
    case = case, formula = formula, reml = TRUE,
    lme4_version = as.character(packageVersion("lme4")),
    control = "lmerControl(check.nobs.vs.nlev = 'ignore', check.nobs.vs.rankZ = 'ignore', check.nobs.vs.nRE = 'ignore')",
    data = data_file, kernels = kernel_files,
    nobs = nobs(m),
    term_order = I(vapply(terms, function(t) t$term, "")),
    levels = I(gterm$levels),
    theta = I(num(th)), theta_names = I(names(th)),
    sigma = s, beta = named(fixef(m)),
    criterion = opt$fval,
    criterion_devcomp = num(getME(m, "devcomp")$cmp[["REML"]]),
    vg = vg, ve = ve,
    h2 = vg / (tot_re + ve),
    h2_definition = if (length(terms) == 1) "vg/(vg+ve)" else
      paste0("variance of (1 | ", gterm$group, ") / (sum of all random-effect variances + ve)"),
    genetic_values = gterm$genetic_values,
    optimizer = list(feval = opt$feval, conv = opt$conv, message = opt$message))
  if (length(terms) > 1) out$h2_vg_ve <- vg / (vg + ve)
  if (length(terms) > 1)
    out$variance_components <- lapply(terms, function(t) t[c("term", "group", "kernel_file", "theta", "variance")])
  out$terms <- lapply(terms, function(t) t[setdiff(names(t), c("levels"))])
  out <- c(out, extra)
  writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
             file.path(outdir, paste0(case, ".json")))
  cat(sprintf("%-20s n=%3d theta=%s sigma=%.6g crit=%.10g h2=%.4f\n", case, nobs(m),
              paste(sprintf("%.6g", th), collapse = ","), s, opt$fval, out$h2))
  invisible(out)
}

# ---- a/b/e: gblup_simple, gblup_covariate, gblup_missing ---------------------
set.seed(20240611)
n <- 80; ids <- sprintf("ind%03d", seq_len(n))
M <- sim_markers(n, 200, ids)
K1 <- vanraden(M, 1e-6)
kf1 <- write_K(K1, "gblup80")
u <- as.vector(t(chol(K1)) %*% rnorm(n))            # u ~ N(0, K), vg = 1
e <- rnorm(n)                                        # ve = 1 -> h2 ~ 0.5
x <- round(rnorm(n, 2, 1), 3)
d1 <- data.frame(id = ids, y = 10 + u + e, x = x,
                 y_cov = 10 + 0.5 * x + u + rnorm(n))
d1$id <- factor(d1$id)
fn1 <- write_data(d1, "gblup80")

f <- fit_relmat("y ~ 1 + (1 | id)", d1, list(id = K1))
case_json("gblup_simple", "y ~ 1 + (1 | id)", f, fn1, list(id = kf1),
          list(response_column = "y"))

d1c <- d1; d1c$y <- d1c$y_cov
f <- fit_relmat("y ~ x + (1 | id)", d1c, list(id = K1))
case_json("gblup_covariate", "y ~ x + (1 | id)", f, fn1, list(id = kf1),
          list(response_column = "y_cov",
               note = "data column y_cov is used as the response y"))

set.seed(20240612)
miss_ids <- sort(sample(ids, 10))
dm <- d1[, c("id", "y")]
dm$y[dm$id %in% miss_ids] <- NA
fnm <- write_data(dm, "gblup80_missing")
f <- fit_relmat("y ~ 1 + (1 | id)", dm, list(id = K1))
obs <- levels(f$lf$reTrms$flist$id)
stopifnot(length(obs) == 70, !any(miss_ids %in% obs))
# BLUP of the unobserved individuals' genetic values: K_mo K_oo^{-1} u_o
ghat <- as.vector(f$Ls$id %*% ranef(f$m)$id[, 1])
u_mis <- as.vector(K1[miss_ids, obs] %*% solve(K1[obs, obs], ghat))
case_json("gblup_missing", "y ~ 1 + (1 | id)", f, fnm, list(id = kf1),
          list(missing_ids = I(miss_ids),
               genetic_values_unobserved = named(u_mis, miss_ids),
               note = paste("gblup_simple data with y set to NA for the 10 missing_ids; lme4 drops",
                            "the NA rows and the unused id levels, and K (K_gblup80.csv, all 80 ids)",
                            "is restricted to the 70 observed ids (in level order) before chol().",
                            "genetic_values_unobserved = K[mis, obs] %*% solve(K[obs, obs], genetic_values),",
                            "the BLUP of the unobserved individuals under the full-K model.")))

# ---- c: gblup_repeated (+ identity_repeated) --------------------------------
set.seed(20240613)
n <- 60; ids <- sprintf("ind%03d", seq_len(n))
M <- sim_markers(n, 200, ids)
K3 <- vanraden(M, 1e-6)
kf3 <- write_K(K3, "gblup60")
u <- as.vector(t(chol(K3)) %*% rnorm(n, sd = 1))
blk_eff <- rnorm(4, sd = 0.8)
d3 <- data.frame(id = rep(ids, each = 3), block = sample(sprintf("B%d", 1:4), 3 * n, replace = TRUE))
d3$y <- 10 + u[match(d3$id, ids)] + blk_eff[match(d3$block, sprintf("B%d", 1:4))] + rnorm(3 * n)
d3$id <- factor(d3$id); d3$block <- factor(d3$block)
fn3 <- write_data(d3, "gblup60_repeated")
form3 <- "y ~ 1 + (1 | id) + (1 | block)"
f <- fit_relmat(form3, d3, list(id = K3))
case_json("gblup_repeated", form3, f, fn3, list(id = kf3),
          list(note = "only the (1 | id) term is transformed by chol(K); (1 | block) is a plain iid term"))

KI <- diag(n); dimnames(KI) <- list(ids, ids)
f <- fit_relmat(form3, d3, list(id = KI))
plain <- lmer(as.formula(form3), data = d3, REML = TRUE)
case_json("identity_repeated", form3, f, fn3, list(id = "identity"),
          list(note = paste("gblup_repeated data with K = I for the id term (no K file);",
                            "must equal plain lmer(y ~ 1 + (1 | id) + (1 | block))"),
               plain_lmer = list(criterion = num(getME(plain, "devcomp")$cmp[["REML"]]),
                                 theta = I(num(getME(plain, "theta"))), sigma = sigma(plain),
                                 beta = named(fixef(plain)))))

# ---- d: gblup_two_kernels ---------------------------------------------------
set.seed(20240614)
n <- 70; ids <- sprintf("ind%03d", seq_len(n))
M <- sim_markers(n, 200, ids)
KA <- vanraden(M, 1e-6)
KD <- dominance(M, 1e-4)
kfa <- write_K(KA, "gblup70_A"); kfd <- write_K(KD, "gblup70_D")
uA <- as.vector(t(chol(KA)) %*% rnorm(n, sd = 1))
uD <- as.vector(t(chol(KD)) %*% rnorm(n, sd = sqrt(0.5)))
d4 <- data.frame(id = ids, id2 = ids, y = 10 + uA + uD + rnorm(n, sd = sqrt(0.7)))
d4$id <- factor(d4$id); d4$id2 <- factor(d4$id2)
fn4 <- write_data(d4, "gblup70_two_kernels")
form4 <- "y ~ 1 + (1 | id) + (1 | id2)"
f <- fit_relmat(form4, d4, list(id = KA, id2 = KD))
case_json("gblup_two_kernels", form4, f, fn4, list(id = kfa, id2 = kfd),
          list(note = paste("id is transformed by chol(K_A) (VanRaden + 1e-6 I), id2 (a copy of id)",
                            "by chol(K_D) (Vitezica dominance coding, mean diagonal 1, + 1e-4 I);",
                            "vg/genetic_values refer to the additive (id) term; see terms[] for both")))

cat("R:", R.version.string, " lme4", as.character(packageVersion("lme4")),
    " Matrix", as.character(packageVersion("Matrix")), "\n")
