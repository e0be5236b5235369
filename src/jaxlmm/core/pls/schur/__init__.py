"""core.pls.schur: see docs/architecture.md."""
