"""core.optim: see docs/architecture.md."""
