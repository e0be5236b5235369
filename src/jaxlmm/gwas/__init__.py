"""gwas: see docs/architecture.md."""
