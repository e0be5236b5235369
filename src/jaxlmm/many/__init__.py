"""many: see docs/architecture.md."""
