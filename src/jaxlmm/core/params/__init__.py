"""core.params: see docs/architecture.md."""
