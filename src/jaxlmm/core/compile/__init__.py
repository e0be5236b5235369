"""core.compile: see docs/architecture.md."""
