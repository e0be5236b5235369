"""core.linalg: see docs/architecture.md."""
