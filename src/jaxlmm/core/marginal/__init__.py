"""core.marginal: see docs/architecture.md."""
