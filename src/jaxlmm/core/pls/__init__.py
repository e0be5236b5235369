"""core.pls: see docs/architecture.md."""
