"""core.dense: see docs/architecture.md."""
