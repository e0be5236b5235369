"""core.glmm: generalized linear mixed models -- families, the conditional mode, the Laplace and
adaptive Gauss-Hermite objectives (see docs/architecture.md)."""
